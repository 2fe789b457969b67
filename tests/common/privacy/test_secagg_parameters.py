"""Derived SecAgg+ parameters: safe thresholds, no overflow, and model values that survive quantisation.

The quantisation test runs Flower's own SecAgg+ arithmetic (the client's weighting, clipping,
stochastic quantisation and factor; the server's sum modulo 2**32, factor extraction, dequantisation
and offset), with the pairwise masks left out because they cancel exactly modulo 2**32.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    factor_extract,
    parameters_addition,
    parameters_mod,
    parameters_multiply,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize

from common.models import LabelledArrays, TrainingPlan, build_model
from common.privacy.secagg_parameters import (
    MODULUS_RANGE,
    derive_secagg_parameters,
    neighbourhood_size,
    tolerated_dropouts,
)


@pytest.mark.parametrize("sites", [2, 3, 4, 5, 10, 20, 40])
def test_threshold_keeps_a_majority_and_tolerates_dropouts(sites: int) -> None:
    p = derive_secagg_parameters(sites, dropout_fraction=0.2)
    k = sites if sites <= 10 else p.num_shares  # full graph up to 10 sites, then ~3 log2(n) neighbours
    assert p.reconstruction_threshold > k / 2  # the server never gets both masks of one site
    assert p.reconstruction_threshold == k - p.tolerated_dropouts
    if sites >= 3:
        assert p.tolerated_dropouts >= 1 and p.num_shares == k
        assert k == sites or k % 2 == 1  # a sparse neighbourhood is odd: the site and k // 2 each side
    if sites > 10:
        assert p.num_shares < sites and p.num_shares >= 3 * np.log2(sites)
    assert sites * p.quantization_range < MODULUS_RANGE  # the masked sum cannot wrap around
    assert p.quantization_range <= 2**30


def test_dropout_tolerance_follows_the_fraction_within_the_majority_bound() -> None:
    assert [tolerated_dropouts(10, f) for f in (0.0, 0.1, 0.2, 0.4, 0.6)] == [1, 1, 2, 4, 4]
    assert (neighbourhood_size(20), tolerated_dropouts(20, 0.2)) == (13, 4)  # threshold 9 of 13 shares
    with pytest.raises(ValueError):
        tolerated_dropouts(1, 0.2)


def _secagg_mean(
    updates: list[tuple[int, list[np.ndarray]]], clipping: float, q_range: int, max_weight: float
):
    """Flower's SecAgg+ weighted mean of ``(num_examples, arrays)`` pairs, masks omitted."""
    total = None
    for num_examples, arrays in updates:
        q_ratio = round(num_examples / max_weight * q_range)
        weighted = parameters_multiply(arrays, q_ratio / q_range)
        vector = factor_combine(q_ratio, quantize(weighted, clipping, q_range))
        vector = [np.asarray(v, dtype=np.int64) for v in vector]
        total = vector if total is None else parameters_addition(total, vector)
    assert total is not None
    q_total, summed = factor_extract(parameters_mod(total, MODULUS_RANGE))
    values = dequantize(summed, clipping, q_range)
    offset = -(len(updates) - 1) * clipping
    return [(v + offset) * (q_range / q_total) for v in values]


def _exact_mean(updates: list[tuple[int, list[np.ndarray]]]) -> list[np.ndarray]:
    total = sum(n for n, _ in updates)
    return [sum(n * a[i].astype(np.float64) for n, a in updates) / total for i in range(len(updates[0][1]))]


def _svm_updates(seed: int = 0) -> list[tuple[int, list[np.ndarray]]]:
    """Five sites' SVM coefficients trained on raw, unscaled features: values far beyond +-8."""
    rng = np.random.default_rng(seed)
    updates = []
    for site in range(5):
        model = build_model("svm", image_size=6, num_features=30, seed=0)
        n = 40 + 20 * site
        y = rng.integers(0, 2, n)
        x = rng.normal(0, 1, (n, 36)) * 30 + y[:, None] * 20
        model.fit(LabelledArrays(x.reshape(n, 6, 6), y), TrainingPlan(learning_rate=0.05, seed=site))
        updates.append((n, model.get_arrays()[:2]))
    return updates


def test_svm_coefficients_survive_derived_parameters_and_not_flower_defaults() -> None:
    updates = _svm_updates()
    largest = max(float(np.abs(a).max()) for _, arrays in updates for a in arrays)
    assert largest > 8.0  # the point: Flower's default range would clip these
    exact = _exact_mean(updates)
    p = derive_secagg_parameters(5, parameter_scale=largest / 4, max_weight=max(n for n, _ in updates))
    ours = _secagg_mean(updates, p.clipping_range, p.quantization_range, p.max_weight)
    for got, want in zip(ours, exact, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    # Flower's default range (+-8), with the same max_weight: the large coefficients come back clipped.
    default = _secagg_mean(updates, 8.0, 2**22, p.max_weight)
    assert max(float(np.abs(g - w).max()) for g, w in zip(default, exact, strict=True)) > 1.0


def test_cnn_weights_survive_derived_parameters() -> None:
    updates = []
    for site in range(5):
        model = build_model("cnn", image_size=32, seed=site)  # five different weight sets
        updates.append((30 + 7 * site, [a.astype(np.float64) for a in model.get_arrays()]))
    scale = max(float(np.abs(a).max()) for _, arrays in updates for a in arrays)
    p = derive_secagg_parameters(5, parameter_scale=scale, max_weight=max(n for n, _ in updates))
    ours = _secagg_mean(updates, p.clipping_range, p.quantization_range, p.max_weight)
    worst = max(float(np.abs(g - w).max()) for g, w in zip(ours, _exact_mean(updates), strict=True))
    assert worst < 1e-6  # float32 weights keep about 7 digits: quantisation is below their resolution
