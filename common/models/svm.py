"""Linear SVMs trained with SGD, and a kernel SVM through random Fourier features.

Hinge loss (``SGDClassifier``), warm-started from the global model every round. Classes are fixed up
front, so a site that lacks one class still trains and still sends arrays of the agreed shape. One dtype
(float64) in every call: scikit-learn's ``partial_fit`` refuses to switch dtype between calls.

**Exchanged arrays**: ``coef_`` (1, D), ``intercept_`` (1,), and the feature standardiser ``mean`` (F,)
and ``scale`` (F,). The standardiser is part of the model so that a checkpoint or the final model is
usable on its own; sites never change it (FedAvg of identical arrays is the same array, and FedAdam's
update of an unchanged array is 0). The server sets it once, from the federated feature moments
(:func:`feature_moments`, :func:`standardiser_from_moments`), when ``feature-scaling = "federated"``.

**Kernel SVM without support vectors** (``rff_components`` > 0): a kernel SVM's model *is* a set of
training examples (the support vectors), which would be patients' data leaving the site. Instead every
site maps its standardised features through the same random Fourier features (Rahimi and Recht, 2007;
``RBFSampler``), drawn from the run's seed, which every site and the server know: ``z(x)`` approximates
an RBF kernel, ``z(x) . z(x') ~ exp(-gamma ||x - x'||^2)``, and a *linear* SVM on ``z(x)`` approximates
the kernel SVM. Only its weights (one per random feature) are exchanged; the random projection is
regenerated from the seed, never sent, and holds nothing about any patient.
"""

from __future__ import annotations

import numpy as np

from common.errors import TrainingError
from common.metrics import ClassificationCounts
from common.models.base import EvalResult, FitResult, LabelledArrays, TrainingPlan, check_compatible

__all__ = [
    "CLASSES",
    "FEATURE_MOMENTS_TASK",
    "LinearSvmModel",
    "feature_moments",
    "standardiser_from_moments",
]

CLASSES = np.array([0, 1])
# The ServerApp's query (Flower get_properties) for the sites' feature moments.
FEATURE_MOMENTS_TASK = "feature-moments"


def feature_moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """``(n, sum, sum of squares)`` per feature: the aggregates a site shares for standardisation."""
    x = np.asarray(x, dtype=np.float64)
    return len(x), x.sum(axis=0), (x * x).sum(axis=0)


def standardiser_from_moments(
    moments: list[tuple[int, np.ndarray, np.ndarray]], *, min_scale: float = 1e-8
) -> tuple[np.ndarray, np.ndarray]:
    """Global mean and standard deviation from every site's :func:`feature_moments`.

    The sum of the sites' sums is the pooled sum, so the result equals what pooling the data would
    give; a constant feature gets scale 1 instead of a division by zero.
    """
    n = sum(m[0] for m in moments)
    if n == 0:
        raise TrainingError("Cannot standardise features: no site reported any example.")
    total = np.sum([m[1] for m in moments], axis=0)
    total_sq = np.sum([m[2] for m in moments], axis=0)
    mean = total / n
    variance = np.maximum(total_sq / n - mean * mean, 0.0)
    scale = np.sqrt(variance)
    return mean, np.where(scale > min_scale, scale, 1.0)


class LinearSvmModel:
    """:class:`common.models.base.Model` over ``SGDClassifier(loss="hinge")`` for binary labels.

    Parameters
    ----------
    num_features:
        F, the features used per example: the first F values of each (flattened) record.
    alpha:
        L2 regularisation of the SVM (``SGDClassifier``'s ``alpha``).
    rff_components:
        0 for a linear SVM; D > 0 for a kernel (RBF) SVM through D random Fourier features.
    rff_gamma:
        RBF width; 0 means 1 / F (for standardised features).
    seed:
        Seeds the random Fourier features: every site and the server must use the same one.
    """

    num_classes = 2
    frozen_arrays: tuple[int, ...] = (2, 3)  # mean and scale: set by the server, never by local training

    def __init__(
        self,
        *,
        num_features: int,
        alpha: float = 1e-4,
        rff_components: int = 0,
        rff_gamma: float = 0.0,
        seed: int = 0,
    ) -> None:
        if num_features < 1:
            raise TrainingError("A linear SVM needs at least one feature.")
        self.kind = "rff-svm" if rff_components else "svm"
        self.num_features = num_features
        self.alpha = alpha
        self.seed = seed
        self._sampler = None
        width = num_features
        if rff_components:
            from sklearn.kernel_approximation import RBFSampler

            gamma = rff_gamma or 1.0 / num_features
            self._sampler = RBFSampler(gamma=gamma, n_components=rff_components, random_state=seed)
            self._sampler.fit(np.zeros((1, num_features)))  # draws the projection from the seed only
            width = rff_components
        self.coef = np.zeros((1, width), dtype=np.float64)
        self.intercept = np.zeros(1, dtype=np.float64)
        self.mean = np.zeros(num_features, dtype=np.float64)
        self.scale = np.ones(num_features, dtype=np.float64)

    def get_arrays(self) -> list[np.ndarray]:
        return [self.coef.copy(), self.intercept.copy(), self.mean.copy(), self.scale.copy()]

    def set_arrays(self, arrays: list[np.ndarray]) -> None:
        check_compatible(self.get_arrays(), arrays, source=f"{self.kind} parameters")
        if np.any(np.asarray(arrays[3]) <= 0):
            raise TrainingError(f"{self.kind} parameters: the feature scale must be positive.")
        self.coef, self.intercept, self.mean, self.scale = (np.array(a, dtype=np.float64) for a in arrays)

    def set_standardiser(self, mean: np.ndarray, scale: np.ndarray) -> None:
        """Install the feature standardiser (the server does this once, from federated moments)."""
        arrays = self.get_arrays()
        self.set_arrays([arrays[0], arrays[1], np.asarray(mean, np.float64), np.asarray(scale, np.float64)])

    def raw_features(self, x: np.ndarray) -> np.ndarray:
        """The first ``num_features`` values of each flattened record, as float64."""
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if flat.shape[1] < self.num_features:
            raise TrainingError(f"Expected {self.num_features} features per example, got {flat.shape[1]}.")
        return flat[:, : self.num_features]

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        z = (self.raw_features(x) - self.mean) / self.scale
        return z if self._sampler is None else self._sampler.transform(z)

    def _decision(self, z: np.ndarray) -> np.ndarray:
        return z @ self.coef[0] + self.intercept[0]

    def fit(self, data: LabelledArrays, plan: TrainingPlan) -> FitResult:
        from sklearn.linear_model import SGDClassifier

        if len(data) == 0:
            raise TrainingError("Cannot train on an empty training split.")
        z, y = self._inputs(data.x), np.asarray(data.y, dtype=np.int64)
        weights = (
            np.asarray(plan.class_weights, dtype=np.float64)[y] if plan.class_weights is not None else None
        )
        clf = SGDClassifier(
            loss="hinge",
            alpha=self.alpha,
            learning_rate="constant",
            eta0=plan.learning_rate,
            shuffle=False,  # we permute, from the plan's seed
            random_state=plan.seed,
        )
        # Warm start from the global model: partial_fit keeps coef_/intercept_ that are already set.
        clf.coef_, clf.intercept_ = self.coef.copy(), self.intercept.copy()
        anchor_coef, anchor_intercept = self.coef.copy(), self.intercept.copy()
        rng = np.random.default_rng(plan.seed)
        budget = plan.steps * plan.batch_size if plan.steps else plan.epochs * len(y)
        done = 0
        while done < budget:
            order = rng.permutation(len(y))[: budget - done]
            for start in range(0, len(order), plan.batch_size if plan.steps else len(order)):
                idx = order[start : start + (plan.batch_size if plan.steps else len(order))]
                clf.partial_fit(
                    z[idx], y[idx], classes=CLASSES, sample_weight=None if weights is None else weights[idx]
                )
                if plan.proximal_mu > 0:
                    # FedProx by operator splitting: each per-example step also pulls towards the global
                    # model, w <- w - lr * mu * (w - w_global), applied for the len(idx) steps just taken.
                    shrink = (1.0 - plan.learning_rate * plan.proximal_mu) ** len(idx)
                    clf.coef_ = anchor_coef + (clf.coef_ - anchor_coef) * shrink
                    clf.intercept_ = anchor_intercept + (clf.intercept_ - anchor_intercept) * shrink
            done += len(order)
        coef, intercept = np.asarray(clf.coef_, np.float64), np.asarray(clf.intercept_, np.float64)
        if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))):
            raise TrainingError("Local SVM training diverged; lower the learning rate.")
        self.coef, self.intercept = coef.reshape(1, -1).copy(), intercept.reshape(1).copy()
        return FitResult(loss=self._hinge(z, y), num_examples=len(y), steps=plan.steps or plan.epochs)

    def _hinge(self, z: np.ndarray, y: np.ndarray) -> float:
        margin = (2 * y - 1) * self._decision(z)
        return float(np.mean(np.maximum(0.0, 1.0 - margin))) if len(y) else 0.0

    def predict_scores(self, x: np.ndarray) -> np.ndarray:
        """(N, 2) pseudo-probabilities ``sigmoid(decision)``: monotone in the margin (for AUC)."""
        decision = self._decision(self._inputs(x)) if len(x) else np.zeros(0)
        positive = 1.0 / (1.0 + np.exp(-np.clip(decision, -50, 50)))
        return np.stack([1.0 - positive, positive], axis=1)

    def evaluate(self, data: LabelledArrays) -> EvalResult:
        y = np.asarray(data.y, dtype=np.int64)
        if len(y) == 0:
            return EvalResult(0.0, 0, ClassificationCounts.from_predictions(y, np.zeros((0, 2))))
        z = self._inputs(data.x)
        scores = self.predict_scores(data.x)
        return EvalResult(
            loss=self._hinge(z, y),
            num_examples=len(y),
            counts=ClassificationCounts.from_predictions(y, scores),
        )
