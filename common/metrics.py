"""Classification metrics that can be computed at a site and pooled at the server without any row.

A site scores its held-out split and sends *counts*: the confusion matrix and, for AUC, a histogram of
the positive-class score per true class (:class:`ClassificationCounts`). Counts add up across sites, so
the server gets the metrics of the union of the test splits (accuracy, balanced accuracy, sensitivity,
specificity, F1, per-class precision/recall) exactly, and AUC to within the histogram's resolution,
without ever seeing a prediction for a single patient. :func:`classification_metrics` is the exact
version for data held in one place (pooled and local baselines, the server's public test set).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SCORE_BINS",
    "SUMMARY_KEYS",
    "ClassificationCounts",
    "classification_metrics",
    "summarise_counts",
]

SCORE_BINS = 200
SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1")


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


@dataclass(frozen=True)
class ClassificationCounts:
    """Additive evaluation counts of one split: what a site may send about its test set.

    Attributes
    ----------
    confusion:
        (C, C) int64, rows are true classes, columns predicted classes.
    score_hist:
        (C, SCORE_BINS) int64: per true class, a histogram of the positive-class score (class 1) in
        [0, 1]. AUC is computed from it, with ties inside a bin counted half, as in the Mann-Whitney U.
    """

    confusion: np.ndarray
    score_hist: np.ndarray

    @classmethod
    def from_predictions(cls, y_true: np.ndarray, scores: np.ndarray) -> ClassificationCounts:
        """Count ``scores`` (N, C) class probabilities (rows sum to 1) against labels ``y_true`` (N,)."""
        scores = np.asarray(scores, dtype=np.float64)
        num_classes = scores.shape[1]
        y = np.asarray(y_true, dtype=np.int64)
        predicted = scores.argmax(axis=1)
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(confusion, (y, predicted), 1)
        positive = np.clip(scores[:, 1 if num_classes > 1 else 0], 0.0, 1.0)
        bins = np.minimum((positive * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
        hist = np.zeros((num_classes, SCORE_BINS), dtype=np.int64)
        np.add.at(hist, (y, bins), 1)
        return cls(confusion=confusion, score_hist=hist)

    def __add__(self, other: ClassificationCounts) -> ClassificationCounts:
        return ClassificationCounts(self.confusion + other.confusion, self.score_hist + other.score_hist)

    @property
    def num_examples(self) -> int:
        return int(self.confusion.sum())

    def to_scalars(self) -> dict[str, int]:
        """Flat ``{"cm-i-j": n, "hist-i-k": n}`` (zero entries left out): Flower metrics are scalars."""
        out: dict[str, int] = {"num-classes": int(self.confusion.shape[0])}
        for (i, j), n in np.ndenumerate(self.confusion):
            if n:
                out[f"cm-{i}-{j}"] = int(n)
        for (i, k), n in np.ndenumerate(self.score_hist):
            if n:
                out[f"hist-{i}-{k}"] = int(n)
        return out

    @classmethod
    def from_scalars(cls, values: Mapping[str, object]) -> ClassificationCounts:
        """Inverse of :meth:`to_scalars`; ignores other keys."""
        num_classes = int(values.get("num-classes", 2))  # type: ignore[call-overload]
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        hist = np.zeros((num_classes, SCORE_BINS), dtype=np.int64)
        for key, value in values.items():
            parts = key.split("-")
            if len(parts) == 3 and parts[0] in ("cm", "hist"):
                i, j = int(parts[1]), int(parts[2])
                (confusion if parts[0] == "cm" else hist)[i, j] = int(value)  # type: ignore[call-overload]
        return cls(confusion=confusion, score_hist=hist)


def _auc_from_histograms(hist: np.ndarray) -> float:
    """Binary AUC (class 1 vs the rest) from score histograms; NaN when a class is absent."""
    positives = hist[1] if len(hist) > 1 else np.zeros(hist.shape[1])
    negatives = hist.sum(axis=0) - positives
    n_pos, n_neg = positives.sum(), negatives.sum()
    if not n_pos or not n_neg:
        return float("nan")
    below = np.cumsum(negatives) - negatives  # negatives strictly below each bin
    wins = float(np.sum(positives * (below + 0.5 * negatives)))
    return wins / float(n_pos * n_neg)


def summarise_counts(counts: ClassificationCounts) -> dict[str, object]:
    """Metrics of pooled counts: the summary keys plus ``per_class`` precision, recall, F1, support.

    Sensitivity and specificity are those of class 1 (the finding); F1 is class 1's for two classes
    and the macro average otherwise. Undefined values (a class with no example) are NaN.
    """
    cm = counts.confusion.astype(np.float64)
    total = cm.sum()
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    diagonal = np.diag(cm)
    recall = [_safe_div(diagonal[i], support[i]) for i in range(len(cm))]
    precision = [_safe_div(diagonal[i], predicted[i]) for i in range(len(cm))]
    f1 = [
        _safe_div(2 * p * r, p + r) if not (np.isnan(p) or np.isnan(r)) else float("nan")
        for p, r in zip(precision, recall, strict=True)
    ]
    present = [r for r, s in zip(recall, support, strict=True) if s > 0]
    out: dict[str, object] = {
        "accuracy": _safe_div(diagonal.sum(), total),
        "balanced_accuracy": float(np.mean(present)) if present else float("nan"),
        "auc": _auc_from_histograms(counts.score_hist),
        "num_examples": int(total),
    }
    if len(cm) == 2:
        out["sensitivity"] = recall[1]
        out["specificity"] = recall[0]
        out["f1"] = f1[1]
    else:
        out["sensitivity"] = float(np.nanmean(recall)) if present else float("nan")
        out["specificity"] = float("nan")
        out["f1"] = float(np.nanmean(f1)) if present else float("nan")
    out["per_class"] = {
        str(i): {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": int(support[i])}
        for i in range(len(cm))
    }
    return out


def classification_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, object]:
    """Exact metrics of data held in one place; same keys as :func:`summarise_counts`.

    AUC here is the exact Mann-Whitney statistic (scikit-learn's ``roc_auc_score``), not the
    histogram approximation the federated path uses.
    """
    from sklearn.metrics import roc_auc_score

    out = summarise_counts(ClassificationCounts.from_predictions(y_true, scores))
    y = np.asarray(y_true, dtype=np.int64)
    if scores.shape[1] == 2 and len(np.unique(y)) == 2:
        out["auc"] = float(roc_auc_score(y, np.asarray(scores)[:, 1]))
    return out
