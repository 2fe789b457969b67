"""Classification metrics: exact on one site, and the same when pooled from counts across sites."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from common.metrics import ClassificationCounts, classification_metrics, summarise_counts


def _predictions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 0.25, n), 0, 1)
    return y, np.stack([1 - p, p], axis=1)


def test_metrics_match_scikit_learn() -> None:
    y, scores = _predictions(300, seed=0)
    predicted = scores.argmax(axis=1)
    m = classification_metrics(y, scores)
    assert m["accuracy"] == pytest.approx(np.mean(predicted == y))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, predicted))
    assert m["sensitivity"] == pytest.approx(recall_score(y, predicted))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - predicted))
    assert m["f1"] == pytest.approx(f1_score(y, predicted))
    assert m["auc"] == pytest.approx(roc_auc_score(y, scores[:, 1]))
    per_class = m["per_class"]
    assert isinstance(per_class, dict) and per_class["1"]["support"] == int(y.sum())


def test_counts_pooled_across_sites_give_the_metrics_of_the_union() -> None:
    sites = [_predictions(n, seed) for n, seed in ((40, 1), (200, 2), (75, 3))]
    pooled = ClassificationCounts.from_predictions(sites[0][0], sites[0][1])
    for y, scores in sites[1:]:
        pooled = pooled + ClassificationCounts.from_scalars(
            ClassificationCounts.from_predictions(y, scores).to_scalars()
        )
    union_y = np.concatenate([y for y, _ in sites])
    union_scores = np.concatenate([s for _, s in sites])
    exact = classification_metrics(union_y, union_scores)
    summary = summarise_counts(pooled)
    for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1"):
        assert summary[key] == pytest.approx(exact[key])
    assert summary["auc"] == pytest.approx(exact["auc"], abs=0.01)  # histogram resolution


def test_a_site_without_positives_has_undefined_sensitivity_not_a_crash() -> None:
    y = np.zeros(10, dtype=np.int64)
    scores = np.tile([0.8, 0.2], (10, 1))
    m = summarise_counts(ClassificationCounts.from_predictions(y, scores))
    assert m["accuracy"] == 1.0 and m["specificity"] == 1.0
    assert math.isnan(m["sensitivity"]) and math.isnan(m["auc"])  # type: ignore[arg-type]
    assert m["balanced_accuracy"] == 1.0  # over the classes present
