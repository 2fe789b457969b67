"""The one model protocol both sides speak, and the small value types around it.

A model is "a list of NumPy arrays plus local fit/evaluate": exactly what crosses the site boundary
(the arrays) and what stays at the site (the data). Flower, torch and scikit-learn stay behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from common.errors import TrainingError
from common.metrics import ClassificationCounts

__all__ = [
    "EvalResult",
    "FitResult",
    "LabelledArrays",
    "Model",
    "TrainingPlan",
    "check_compatible",
    "class_weights",
]


@dataclass(frozen=True)
class LabelledArrays:
    """Examples held in memory: ``x`` is (N, H, W) float32 images or (N, F) features, ``y`` (N,) int64.

    ``groups`` (optional, (N,) int64) numbers the patient each record belongs to (0, 1, ...; the store's
    pseudonyms stay in its manifest): patient-level DP-SGD samples and clips by it. ``None`` means every
    record is its own patient.
    """

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} examples but y has {len(self.y)} labels.")
        if self.groups is not None and len(self.groups) != len(self.y):
            raise ValueError(f"groups has {len(self.groups)} entries for {len(self.y)} examples.")

    def __len__(self) -> int:
        return len(self.y)

    @staticmethod
    def concat(parts: list[LabelledArrays]) -> LabelledArrays:
        """Stack several datasets (e.g. every site's training split, for a pooled baseline); patients of
        different parts stay different."""
        groups = None
        if parts and all(p.groups is not None for p in parts):
            sizes = [int(np.max(np.asarray(p.groups), initial=-1)) + 1 for p in parts[:-1]]
            offsets = np.cumsum([0, *sizes])
            groups = np.concatenate([np.asarray(p.groups) + o for p, o in zip(parts, offsets, strict=True)])
        return LabelledArrays(
            np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]), groups
        )


@dataclass(frozen=True)
class TrainingPlan:
    """How one round of local training runs; the same plan gives the same parameters (``seed``).

    Attributes
    ----------
    epochs, steps:
        Passes over the local data, or (``steps`` > 0) exactly this many mini-batch steps, which gives
        every site the same amount of work whatever its size.
    optimizer:
        ``"sgd"`` (with ``momentum``) or ``"adam"``; the SVM always uses SGD.
    proximal_mu:
        FedProx: adds ``mu / 2 * ||w - w_global||^2`` to the local loss (0 = plain local training).
    class_weights:
        Per-class loss weights (see :func:`class_weights`), or ``None`` for an unweighted loss.
    augment:
        Random flips and small affine jitter of images (torchvision), applied per example.
    """

    epochs: int = 1
    steps: int = 0
    learning_rate: float = 0.05
    batch_size: int = 32
    optimizer: str = "sgd"
    momentum: float = 0.9
    proximal_mu: float = 0.0
    class_weights: tuple[float, ...] | None = None
    augment: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.steps < 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(
                "A training plan needs epochs >= 1, steps >= 0, batch_size >= 1 and a positive learning rate."
            )
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; choose sgd or adam.")


@dataclass(frozen=True)
class FitResult:
    """What local training reports: mean training loss (last epoch, or all steps) and examples held."""

    loss: float
    num_examples: int
    steps: int = 0


@dataclass(frozen=True)
class EvalResult:
    """Mean loss on one split and the additive counts behind every classification metric."""

    loss: float
    num_examples: int
    counts: ClassificationCounts

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.counts.confusion)) / self.num_examples if self.num_examples else 0.0


@runtime_checkable
class Model(Protocol):
    """A trainable model whose whole state is a list of arrays (what a site sends)."""

    kind: str
    num_classes: int
    frozen_arrays: tuple[int, ...]
    """Indices of arrays that local training never changes (e.g. the SVM's feature standardiser)."""

    def get_arrays(self) -> list[np.ndarray]:
        """Copies of every parameter, in a fixed order."""
        ...

    def set_arrays(self, arrays: list[np.ndarray]) -> None:
        """Replace every parameter; raises TrainingError on a count, shape, dtype or finiteness problem."""
        ...

    def fit(self, data: LabelledArrays, plan: TrainingPlan) -> FitResult:
        """Train locally from the current parameters, as ``plan`` says."""
        ...

    def predict_scores(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, num_classes) for inputs ``x`` (N, H, W) or (N, F)."""
        ...

    def evaluate(self, data: LabelledArrays) -> EvalResult:
        """Score the current parameters on ``data``."""
        ...


def class_weights(labels: np.ndarray, num_classes: int) -> tuple[float, ...]:
    """Inverse-frequency weights ``n / (k * n_c)`` over the k classes present, 0 for an absent class.

    scikit-learn's "balanced" weighting: a site where one class is rare weights it up in its own loss,
    and the weights average 1 per example. A class the site does not have at all gets weight 0 (there
    is nothing to weight) rather than a division by zero.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    total, present = counts.sum(), int(np.count_nonzero(counts))
    return tuple(float(total / (present * c)) if c else 0.0 for c in counts)


def check_compatible(expected: list[np.ndarray], received: list[np.ndarray], *, source: str) -> None:
    """Raise TrainingError unless ``received`` has the count, shapes, dtypes and finiteness of ``expected``.

    Used before accepting any parameters from elsewhere, so a bad update fails with a sentence that
    says what was wrong instead of a broadcasting error deep inside torch or NumPy.
    """
    if len(expected) != len(received):
        raise TrainingError(f"{source}: expected {len(expected)} arrays, got {len(received)}.")
    for index, (want, got) in enumerate(zip(expected, received, strict=True)):
        got = np.asarray(got)
        if want.shape != got.shape:
            raise TrainingError(f"{source}: array {index} has shape {got.shape}, expected {want.shape}.")
        if want.dtype != got.dtype:
            raise TrainingError(f"{source}: array {index} has dtype {got.dtype}, expected {want.dtype}.")
        if got.dtype.kind == "f" and not np.all(np.isfinite(got)):
            raise TrainingError(f"{source}: array {index} contains NaN or infinite values.")
