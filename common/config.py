"""The run configuration: one frozen, validated object built once from Flower's run config.

Flower hands both apps a flat mapping with kebab-case keys (``[tool.flwr.app.config]`` in
pyproject.toml, overridden with ``--run-config``). Everything downstream takes a :class:`RunConfig`,
never the raw mapping, so a typo or a bad value fails once, at the start, with a sentence naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigError

__all__ = [
    "CLIENT_DP_MODES",
    "CNN_NORMS",
    "FEATURE_SCALINGS",
    "MODEL_KINDS",
    "OPTIMIZERS",
    "SAMPLE_DP_UNITS",
    "STRATEGIES",
    "RunConfig",
]

MODEL_KINDS = ("cnn", "resnet18", "svm", "rff-svm")
STRATEGIES = ("fedavg", "fedprox", "fedadam")
OPTIMIZERS = ("sgd", "adam")
FEATURE_SCALINGS = ("none", "federated")
CLIENT_DP_MODES = ("none", "central", "distributed")
#: What DP-SGD samples and clips: whole patients (every record of one as one unit) or single records.
SAMPLE_DP_UNITS = ("patient", "record")
CNN_NORMS = ("none", "group")
IMAGE_MODELS = ("cnn", "resnet18")
# Keys that do not change what a run computes: a checkpoint written under one value resumes under another.
_RESUME_NEUTRAL = ("resume", "num_server_rounds")

Scalar = bool | int | float | str


@dataclass(frozen=True)
class RunConfig:
    """Settings of one federated run, shared by the ServerApp and every ClientApp.

    Attributes mirror the kebab-case keys of ``[tool.flwr.app.config]`` (``num-server-rounds`` is
    ``num_server_rounds``). ``site_dirs`` is for simulations only: virtual SuperNode *i* opens
    ``site_dirs[i]``; in a deployment each SuperNode names its own site directory in its node config.

    Groups of keys (the full list with their meaning is in ``docs/training.md``):

    * model: ``model``, ``image-size``, ``cnn-widths``, ``cnn-norm``, ``num-features`` (tabular records
      packed in square store records), ``svm-alpha``, ``rff-components``, ``rff-gamma``, ``feature-scaling``;
    * local training: ``local-epochs`` or ``local-steps``, ``optimizer``, ``learning-rate``, ``momentum``,
      ``batch-size``, ``class-weighting``, ``augment``, ``threads``;
    * aggregation: ``strategy`` (fedavg, fedprox, fedadam), ``proximal-mu``, ``server-learning-rate``;
    * run: ``num-server-rounds``, ``seed``, ``out-dir``, ``checkpoints``, ``resume``,
      ``central-test-set`` (a public ``.npz`` with ``x`` and ``y`` the server may score every round);
    * privacy (``docs/privacy.md``): ``secure-aggregation`` (SecAgg+, on by default),
      ``secagg-dropout-fraction``, ``secagg-timeout``; client-level DP ``client-dp`` (none, central,
      distributed), ``client-dp-clip``, ``client-dp-noise``; sample-level DP-SGD ``sample-dp``,
      ``sample-dp-noise`` or ``sample-dp-epsilon``, ``sample-dp-clip``, ``sample-dp-unit`` (patient, the
      default, or record), ``sample-dp-patient-records``, ``sample-dp-augmentations``; ``dp-delta``.
    """

    num_server_rounds: int = 3
    model: str = "cnn"
    image_size: int = 64
    local_epochs: int = 1
    learning_rate: float = 0.05
    batch_size: int = 32
    secure_aggregation: bool = True
    fraction_fit: float = 1.0
    min_fit_sites: int = 2
    seed: int = 0
    site_dirs: tuple[str, ...] = field(default=())
    out_dir: str = ""
    # Model details.
    cnn_widths: str = "16,32,64"
    cnn_norm: str = "none"
    num_features: int = 0
    svm_alpha: float = 0.0001
    rff_components: int = 512
    rff_gamma: float = 0.0
    feature_scaling: str = "none"
    # Local training.
    local_steps: int = 0
    optimizer: str = "sgd"
    momentum: float = 0.9
    class_weighting: bool = False
    augment: bool = False
    threads: int = 1
    # Aggregation.
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    server_learning_rate: float = 0.01
    # Run records.
    checkpoints: bool = True
    resume: bool = False
    central_test_set: str = ""
    # Privacy (docs/privacy.md).
    secagg_dropout_fraction: float = 0.2
    secagg_timeout: float = 300.0
    client_dp: str = "none"
    client_dp_clip: float = 1.0
    client_dp_noise: float = 1.0
    sample_dp: bool = False
    sample_dp_noise: float = 1.0
    sample_dp_epsilon: float = 0.0
    sample_dp_clip: float = 1.0
    sample_dp_unit: str = "patient"
    sample_dp_patient_records: int = 16
    sample_dp_augmentations: int = 1
    dp_delta: float = 1e-5

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.num_server_rounds >= 1, "num-server-rounds must be at least 1"),
            (self.model in MODEL_KINDS, f"model must be one of {', '.join(MODEL_KINDS)}, not {self.model!r}"),
            (1 <= self.image_size <= 512, "image-size must be between 1 and 512 pixels"),
            (
                self.model not in IMAGE_MODELS or self.image_size >= 16,
                f"image-size must be at least 16 pixels for the {self.model} model",
            ),
            (self.num_features >= 0, "num-features must be 0 (whole records) or positive"),
            (
                self.num_features <= self.image_size**2,
                "num-features cannot exceed image-size squared (the record it is packed in)",
            ),
            (_widths_ok(self.cnn_widths), "cnn-widths must be 1 to 6 positive integers, e.g. '16,32,64'"),
            (self.cnn_norm in CNN_NORMS, f"cnn-norm must be one of {', '.join(CNN_NORMS)}"),
            (self.svm_alpha > 0, "svm-alpha must be positive"),
            (self.rff_components >= 1, "rff-components must be at least 1"),
            (self.rff_gamma >= 0, "rff-gamma must be 0 (1 / number of features) or positive"),
            (
                self.feature_scaling in FEATURE_SCALINGS,
                f"feature-scaling must be one of {', '.join(FEATURE_SCALINGS)}",
            ),
            (self.local_steps >= 0, "local-steps must be 0 (use local-epochs) or positive"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.threads >= 1, "threads must be at least 1"),
            (self.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)}"),
            (self.proximal_mu >= 0, "proximal-mu must not be negative"),
            (self.server_learning_rate > 0, "server-learning-rate must be positive"),
            (self.local_epochs >= 1, "local-epochs must be at least 1"),
            (self.learning_rate > 0, "learning-rate must be positive"),
            (self.batch_size >= 1, "batch-size must be at least 1"),
            (0 < self.fraction_fit <= 1, "fraction-fit must be in (0, 1]"),
            (self.min_fit_sites >= 1, "min-fit-sites must be at least 1"),
            *self._privacy_checks(),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"Invalid run config: {message}.")

    def _privacy_checks(self) -> list[tuple[bool, str]]:
        dp_on = self.client_dp != "none"
        return [
            (0 <= self.secagg_dropout_fraction < 1, "secagg-dropout-fraction must be in [0, 1)"),
            (self.secagg_timeout > 0, "secagg-timeout must be positive (seconds)"),
            (self.client_dp in CLIENT_DP_MODES, f"client-dp must be one of {', '.join(CLIENT_DP_MODES)}"),
            (
                not dp_on or self.secure_aggregation,
                "client-dp needs secure-aggregation = true (without it the server sees every site's update)",
            ),
            (not dp_on or self.model != "resnet18", "client-dp cannot clip resnet18's batch-norm counters"),
            (self.client_dp_clip > 0, "client-dp-clip must be positive"),
            (not dp_on or self.client_dp_noise > 0, "client-dp-noise must be positive when client-dp is on"),
            (self.sample_dp_clip > 0, "sample-dp-clip must be positive"),
            (self.sample_dp_noise > 0, "sample-dp-noise must be positive"),
            (self.sample_dp_epsilon >= 0, "sample-dp-epsilon must be 0 (use sample-dp-noise) or positive"),
            (
                not self.sample_dp or self.model in ("cnn", "svm", "rff-svm"),
                f"sample-dp is available for the cnn and SVM models, not {self.model}",
            ),
            (
                not self.sample_dp or self.strategy != "fedprox",
                "sample-dp does not apply FedProx's proximal term; use fedavg or fedadam",
            ),
            (
                not self.sample_dp or not self.augment,
                "sample-dp does not use augment; set sample-dp-augmentations (augmentation multiplicity)",
            ),
            (
                self.sample_dp_unit in SAMPLE_DP_UNITS,
                f"sample-dp-unit must be one of {', '.join(SAMPLE_DP_UNITS)}",
            ),
            (self.sample_dp_patient_records >= 1, "sample-dp-patient-records must be at least 1"),
            (self.sample_dp_augmentations >= 1, "sample-dp-augmentations must be at least 1"),
            (
                self.sample_dp_augmentations == 1 or self.model in IMAGE_MODELS,
                "sample-dp-augmentations applies to image models",
            ),
            (0 < self.dp_delta < 1, "dp-delta must be in (0, 1)"),
        ]

    @classmethod
    def from_flower(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Build from Flower's flat kebab-case mapping; unknown keys and wrong types are errors."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in run_config.items():
            name = key.replace("-", "_")
            if name not in fields:
                known = ", ".join(sorted(n.replace("_", "-") for n in fields))
                raise ConfigError(f"Unknown run config key {key!r}; known keys: {known}.")
            values[name] = _coerce(key, raw, fields[name].default)
        return cls(**values)

    def to_flower(self) -> dict[str, Scalar]:
        """The flat kebab-case mapping Flower carries (tuples joined with the OS path separator)."""
        out: dict[str, Scalar] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name.replace("_", "-")] = os.pathsep.join(value) if isinstance(value, tuple) else value
        return out

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form: names this exact configuration in records and audits."""
        canonical = json.dumps(self.to_flower(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def training_digest(self) -> str:
        """SHA-256 of the configuration minus the keys that do not change what a round computes.

        Checkpoints carry this digest: a run resumes only under the same training configuration, but
        it may be resumed (``resume``) and extended (``num-server-rounds``).
        """
        neutral = dataclasses.replace(self, **{name: getattr(RunConfig, name) for name in _RESUME_NEUTRAL})
        return neutral.digest()

    @property
    def widths(self) -> tuple[int, ...]:
        """``cnn-widths`` as integers: one convolution block per entry."""
        return tuple(int(part) for part in self.cnn_widths.split(","))

    @property
    def proximal_weight(self) -> float:
        """The FedProx proximal weight the sites apply: ``proximal-mu`` under fedprox, else 0."""
        return self.proximal_mu if self.strategy == "fedprox" else 0.0


def _widths_ok(text: str) -> bool:
    parts = [p.strip() for p in text.split(",")]
    return 1 <= len(parts) <= 6 and all(p.isdigit() and int(p) > 0 for p in parts)


def _coerce(key: str, raw: Any, default: Any) -> Any:
    """Convert one run-config value to the type of its default, refusing lossy conversions."""
    if isinstance(default, tuple):
        if isinstance(raw, str):
            return tuple(part for part in raw.split(os.pathsep) if part)
        if isinstance(raw, list | tuple):
            return tuple(str(part) for part in raw)
    elif isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in {"true", "false"}:
            return raw.lower() == "true"
    elif isinstance(default, int):
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
    elif isinstance(default, float):
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
    elif isinstance(default, str) and isinstance(raw, str):
        return raw
    raise ConfigError(f"Invalid run config: {key} must be a {type(default).__name__}, got {raw!r}.")
