"""``site.toml``: a site's identity and local settings, validated once with a clear error per field.

The policy fields (secure aggregation, minimum sites, epsilon budget, approved app hashes, the honest
sites assumed for distributed noise) are enforced by the site itself, never trusted from the server.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.policy import SitePolicy
from common.errors import ConfigError

__all__ = ["SiteConfig", "parse_policy"]

_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_SOURCES = ("file", "env", "passphrase", "keyring")


@dataclass(frozen=True)
class SiteConfig:
    """Validated contents of ``site.toml``."""

    site_id: str
    image_size: int = 64
    ct_window: str = "soft-tissue"
    multiframe: str = "middle"
    denoise: bool = False
    clahe: bool = False
    split_seed: int = 0
    deid_options: tuple[str, ...] = field(default=("retain-modified-dates", "retain-patient-characteristics"))
    key_source: str = "file"
    key_env: str = "FEDSCAN_SITE_KEY"
    keyring_service: str = "fedscan"
    policy: SitePolicy = field(default_factory=SitePolicy)

    def __post_init__(self) -> None:
        if not _SITE_ID.match(self.site_id):
            raise ConfigError(
                f"site.id {self.site_id!r} is invalid: use 1-64 letters, digits, '.', '_' or '-'."
            )
        if not 16 <= self.image_size <= 512:
            raise ConfigError("pixels.image_size must be between 16 and 512.")
        if self.key_source not in KEY_SOURCES:
            raise ConfigError(
                f"keys.source must be one of {', '.join(KEY_SOURCES)}, not {self.key_source!r}."
            )

    @classmethod
    def load(cls, path: Path) -> SiteConfig:
        """Read and validate ``site.toml``; every problem names the file and the field."""
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path} not found: run `fedscan site init` first.") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}.") from None
        site = _table(raw, "site", path)
        pixels = _table(raw, "pixels", path)
        deid = _table(raw, "deid", path)
        keys = _table(raw, "keys", path)
        policy = parse_policy(_table(raw, "policy", path), path)
        try:
            return cls(
                site_id=str(site["id"]),
                image_size=int(pixels.get("image_size", 64)),
                ct_window=str(pixels.get("ct_window", "soft-tissue")),
                multiframe=str(pixels.get("multiframe", "middle")),
                denoise=_flag(pixels, "denoise"),
                clahe=_flag(pixels, "clahe"),
                split_seed=int(site.get("split_seed", 0)),
                key_source=str(keys.get("source", "file")),
                key_env=str(keys.get("env", "FEDSCAN_SITE_KEY")),
                keyring_service=str(keys.get("keyring_service", "fedscan")),
                deid_options=tuple(
                    str(o) for o in deid.get("options", cls.__dataclass_fields__["deid_options"].default)
                ),
                policy=policy,
            )
        except KeyError as missing:
            raise ConfigError(f"{path}: missing required field {missing.args[0]!r} in [site].") from None
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None

    def to_toml(self) -> str:
        """The file ``fedscan site init`` writes: every setting spelled out, with comments."""
        options = ", ".join(f'"{o}"' for o in self.deid_options)
        return (
            "# fedscan site configuration. Enforced at this site; never taken from the server.\n"
            "[site]\n"
            f'id = "{self.site_id}"\n'
            "# Seed of the patient-level train/val/test split (same seed, same split).\n"
            f"split_seed = {self.split_seed}\n\n"
            "[pixels]\n"
            f"image_size = {self.image_size}\n"
            "# CT window preset: soft-tissue, mediastinum, liver, lung, brain, subdural, stroke, bone,\n"
            "# or dicom (use the file's own VOI LUT / window).\n"
            f'ct_window = "{self.ct_window}"\n'
            "# Multi-frame objects: middle (the middle frame), split (every frame a record) or max\n"
            "# (maximum-intensity projection of all frames).\n"
            f'multiframe = "{self.multiframe}"\n'
            "# Non-local-means denoising (about 0.2-0.5 s per 512x512 slice) and CLAHE contrast.\n"
            f"denoise = {str(self.denoise).lower()}\n"
            f"clahe = {str(self.clahe).lower()}\n\n"
            "[keys]\n"
            "# Where the site key comes from: file (keys/site.key, 0600), env (the variable below),\n"
            "# passphrase (scrypt over FEDSCAN_SITE_PASSPHRASE with keys/site.salt), or keyring (the\n"
            "# OS keyring entry keyring_service/<site id>; needs the keyring extra).\n"
            f'source = "{self.key_source}"\n'
            f'env = "{self.key_env}"\n'
            f'keyring_service = "{self.keyring_service}"\n\n'
            "[deid]\n"
            "# DICOM PS3.15 Annex E basic profile plus these options.\n"
            f"options = [{options}]\n\n" + self.policy.to_toml()
        )


def _flag(table: dict[str, Any], name: str) -> bool:
    value = table.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"[pixels] {name} must be true or false, not {value!r}.")
    return value


def _table(raw: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table.")
    return table


_POLICY_FIELDS = {
    "require_secure_aggregation": "a boolean",
    "min_sites": "an integer",
    "allowed_models": "a list of model kinds",
    "max_epsilon": "a positive number (inf for no budget)",
    "max_delta": "a number in (0, 1)",
    "approved_app_hashes": "a list of SHA-256 hex digests",
    "trusted_publishers": "a list of Ed25519 public keys (OpenSSH lines or base64)",
    "pinned_bundles": "a list of SHA-256 hex digests",
    "max_local_epochs": "a positive integer",
    "max_local_steps": "a positive integer",
    "max_batch_size": "a positive integer",
    "max_threads": "a positive integer",
    "max_rounds_per_run": "a positive integer",
    "max_rounds_per_day": "a positive integer",
    "max_message_mb": "a positive number",
    "min_honest_sites": "an integer (1 = trust no other site)",
}


def parse_policy(table: dict[str, Any], path: Path) -> SitePolicy:
    """``[policy]`` as a :class:`SitePolicy`: an absent field keeps its safe default, and each bad field
    fails with the file, the field, what it must be and what it was."""

    def bad(name: str, value: object) -> ConfigError:
        return ConfigError(f"{path}: policy.{name} must be {_POLICY_FIELDS[name]}, not {value!r}.")

    unknown = sorted(set(table) - set(_POLICY_FIELDS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown field(s) in [policy]: {', '.join(unknown)}; known: {', '.join(_POLICY_FIELDS)}."
        )
    values: dict[str, Any] = {}
    for name, value in table.items():
        if name == "require_secure_aggregation" and not isinstance(value, bool):
            raise bad(name, value)
        integers = (
            "min_sites",
            "min_honest_sites",
            "max_local_epochs",
            "max_local_steps",
            "max_batch_size",
            "max_threads",
            "max_rounds_per_run",
            "max_rounds_per_day",
        )
        if name in integers and (isinstance(value, bool) or not isinstance(value, int)):
            raise bad(name, value)
        if name == "max_message_mb":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad(name, value)
            value = float(value)
        if name in ("max_epsilon", "max_delta"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad(name, value)
            value = float(value)
        if name in ("allowed_models", "approved_app_hashes", "trusted_publishers", "pinned_bundles"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad(name, value)
            value = tuple(value)
        values[name] = value
    try:
        return SitePolicy(**values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
