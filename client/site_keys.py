"""A site's keys over their life: where the site key comes from, rotation, and crypto-shredding.

The site key wraps the data key of every sealed object under the site directory. It comes from one of:

- ``file`` (default): ``keys/site.key``, owned by the user, mode 0600 (refused otherwise);
- ``env``: the environment variable named in site.toml (base64 or hex of 32 bytes), for sites whose
  secrets manager injects it;
- ``passphrase``: scrypt over the passphrase in ``FEDSCAN_SITE_PASSPHRASE`` with the salt in
  ``keys/site.salt``;
- ``keyring``: the operating system's keyring (``client.os_keyring``).

Rotation (file source) writes the next key to ``keys/site.key.next``, re-wraps every sealed object's
data key (payloads are not re-encrypted: cost grows with the number of objects, not their size), then
replaces ``site.key`` with the new key and deletes the old one. A crash at any point leaves every object
readable by the old or the new key, and running ``rotate`` again finishes the job.

Shredding deletes the key material, which makes every sealed object unrecoverable (crypto-shredding for
data-erasure requests). It cannot reach copies of the key made elsewhere (backups), and on SSDs the
overwritten blocks may survive in the flash translation layer: shred keys, not disks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from client.site import SiteDir
from client.site_config import SiteConfig
from common.crypto import (
    Keyring,
    SiteKey,
    derive_key_from_passphrase,
    generate_key,
    key_from_env,
    load_key_file,
    open_file,
    read_header,
    rewrap_file,
    write_key_file,
)
from common.errors import ConfigError, IntegrityError, KeyMaterialError, StoreError
from common.fsio import fsync_dir, write_private_atomic

__all__ = [
    "PASSPHRASE_ENV",
    "RotationReport",
    "destroy_file",
    "load_site_key",
    "load_site_keyring",
    "passphrase_key",
    "rotate_site_key",
    "sealed_objects",
    "verify_sealed_objects",
    "shred_site_keys",
]

PASSPHRASE_ENV = "FEDSCAN_SITE_PASSPHRASE"
SEALED_SUFFIX = ".fseal"
SHREDDED_MARKER = "SHREDDED"


@dataclass(frozen=True)
class RotationReport:
    """What a rotation did: how many objects were re-wrapped, how long it took, the key ids."""

    objects: int
    seconds: float
    old_key_id: str
    new_key_id: str


def _next_key_file(site: SiteDir) -> Path:
    return site.site_key_file.with_name(site.site_key_file.name + ".next")


def _retired_key_file(site: SiteDir) -> Path:
    return site.site_key_file.with_name(site.site_key_file.name + ".retired")


def _check_not_shredded(site: SiteDir) -> None:
    marker = site.keys_dir / SHREDDED_MARKER
    if marker.exists():
        raise KeyMaterialError(
            f"The keys of site {site.root} were shredded ({marker.read_text().strip()}); "
            "its sealed data is unrecoverable by design."
        )


def passphrase_key(site: SiteDir) -> SiteKey:
    """The key derived from ``FEDSCAN_SITE_PASSPHRASE`` and the site's salt file."""
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if not passphrase:
        raise KeyMaterialError(f"Site {site.root} derives its key from a passphrase: set {PASSPHRASE_ENV}.")
    try:
        salt = site.salt_file.read_bytes()
    except FileNotFoundError:
        raise KeyMaterialError(
            f"{site.salt_file} is missing: the passphrase key cannot be derived."
        ) from None
    return derive_key_from_passphrase(passphrase, salt)


def _source_key(site: SiteDir) -> SiteKey:
    config = SiteConfig.load(site.config_file)
    if config.key_source == "env":
        return key_from_env(config.key_env)
    if config.key_source == "passphrase":
        return passphrase_key(site)
    if config.key_source == "keyring":
        from client.os_keyring import key_from_keyring

        return key_from_keyring(config.keyring_service, config.site_id)
    return load_key_file(site.site_key_file)


def load_site_keyring(site: SiteDir) -> Keyring:
    """Every key that may open this site's objects: the current one, plus the next during a rotation."""
    _check_not_shredded(site)
    keys = [_source_key(site)]
    if _next_key_file(site).exists():
        keys.append(load_key_file(_next_key_file(site)))
    return Keyring(keys)


def load_site_key(site: SiteDir) -> SiteKey:
    """The key new objects are sealed under; refuses while a rotation is unfinished."""
    _check_not_shredded(site)
    if _next_key_file(site).exists():
        raise KeyMaterialError(
            f"A key rotation of site {site.root} was interrupted: "
            "run `fedscan site keys rotate` to finish it."
        )
    return _source_key(site)


def sealed_objects(site: SiteDir) -> Iterator[tuple[Path, str]]:
    """Every sealed object under the site directory, with its object id (relative path sans suffix)."""
    for path in sorted(site.root.rglob(f"*{SEALED_SUFFIX}")):
        if path.name.startswith("."):
            continue  # temporary files of an interrupted write, or rotation journals
        relative = path.relative_to(site.root).as_posix()
        yield path, relative[: -len(SEALED_SUFFIX)]


def verify_sealed_objects(site: SiteDir, on_object: Callable[[Path], None] = lambda _: None) -> int:
    """Open every sealed object of the site (authenticating every chunk, in memory); how many opened.

    Raises
    ------
    StoreError
        At the first object that does not open, naming it and why (altered, truncated, another key).
    """
    keyring = load_site_keyring(site)
    count = 0
    for path, object_id in sealed_objects(site):
        try:
            open_file(keyring, path, object_id=object_id)  # every chunk authenticated, in memory only
        except (IntegrityError, KeyMaterialError, OSError) as error:
            raise StoreError(f"{path} does not open under the site key: {error}") from None
        count += 1
        on_object(path)
    return count


def rotate_site_key(site: SiteDir) -> RotationReport:
    """Introduce a new site key and re-wrap every object's data key under it (resumable)."""
    _check_not_shredded(site)
    config = SiteConfig.load(site.config_file)
    if _retired_key_file(site).exists():  # a rotation stopped after promoting its new key
        destroy_file(_retired_key_file(site))
    if config.key_source != "file":
        raise ConfigError(
            f"Site {site.root} takes its key from '{config.key_source}': rotate it in that secret store, "
            "then re-seal with a file key. Only file keys are rotated by fedscan."
        )
    started = time.perf_counter()
    old = load_key_file(site.site_key_file)
    next_file = _next_key_file(site)
    if not next_file.exists():
        write_key_file(next_file, generate_key())
    new = load_key_file(next_file)
    keyring = Keyring([old, new])
    count = 0
    for path, object_id in sealed_objects(site):
        if read_header(path).key_id != new.key_id:
            rewrap_file(path, keyring, new, object_id=object_id)
        count += 1
    # Every object now opens under the new key: promote it, then destroy the old one the way shredding
    # does (overwritten, then unlinked), not by leaving its bytes in a freed inode: a second link keeps
    # the old key's inode reachable across the rename, and a rotation interrupted after the rename
    # destroys it when run again.
    retired = _retired_key_file(site)
    if retired.exists():
        destroy_file(retired)
    os.link(site.site_key_file, retired)
    os.replace(next_file, site.site_key_file)
    fsync_dir(site.keys_dir)
    destroy_file(retired)
    fsync_dir(site.keys_dir)
    report = RotationReport(count, time.perf_counter() - started, old.key_id, new.key_id)
    from client.site_audit import record_key_rotation  # imports this module

    record_key_rotation(site, report)
    return report


def destroy_file(path: Path) -> None:
    """Overwrite a key file with random bytes, fsync it, then unlink it (what shredding does to keys).

    On a copy-on-write or journalling file system an old block may survive the overwrite; the key is
    still gone from the file system's view, and crypto-shredding rests on the keys, not on this.
    """
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.write(os.urandom(max(size, 1)))
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()


def shred_site_keys(site: SiteDir) -> list[str]:
    """Destroy the site key and the de-identification secret; every sealed object becomes unrecoverable.

    Returns what was destroyed (key files, and the keyring entry of a keyring site). A key injected
    through an environment variable lives in the secret store that injects it: fedscan cannot reach
    it, so for an ``env`` site only the local secrets are destroyed and the caller must say so.
    """
    _check_not_shredded(site)
    config = SiteConfig.load(site.config_file)
    from client.site_audit import record_key_shred, shred_evidence  # imports this module

    evidence = shred_evidence(site)  # what the audit entry records, read while the keys still exist
    destroyed: list[str] = []
    if config.key_source == "keyring":
        from client.os_keyring import delete_key_from_keyring

        destroyed.append(delete_key_from_keyring(config.keyring_service, config.site_id))
    targets = [
        p
        for p in (
            site.site_key_file,
            _next_key_file(site),
            _retired_key_file(site),
            site.deid_secret_file,
            site.salt_file,
        )
        if p.exists()
    ]
    for path in targets:
        destroy_file(path)
    destroyed += [str(path) for path in targets]
    write_private_atomic(
        site.keys_dir / SHREDDED_MARKER,
        f"shredded at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode(),
    )
    fsync_dir(site.keys_dir)
    record_key_shred(site, evidence)
    return destroyed
