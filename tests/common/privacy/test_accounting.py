"""The RDP accountant agrees with an independent implementation (Opacus's) to within 1%."""

from __future__ import annotations

import math

import pytest
from opacus.accountants import RDPAccountant

from common.privacy.accounting import SampledGaussian, calibrate_noise, epsilon_of, sampled_gaussian_rdp

CASES = [
    # (sampling rate, noise multiplier, steps, delta): DP-SGD-like, client-level (q = 1), extremes
    (0.01, 1.1, 1000, 1e-5),
    (0.1, 1.0, 100, 1e-5),
    (0.25, 0.8, 30, 1e-5),
    (1.0, 2.0, 10, 1e-5),
    (1.0, 0.5, 3, 1e-6),
    (0.05, 3.0, 500, 1e-6),
    (0.3, 0.6, 10, 1e-5),
    (0.5, 5.0, 200, 1e-5),
    (0.02, 0.7, 2000, 1e-5),
]


def _opacus(history: list[tuple[float, float, int]], delta: float) -> float:
    accountant = RDPAccountant()
    accountant.history = list(history)  # (noise multiplier, sample rate, steps)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), CASES)
def test_epsilon_matches_opacus_within_one_percent(q: float, sigma: float, steps: int, delta: float) -> None:
    ours = epsilon_of([SampledGaussian(q, sigma, steps)], delta)
    reference = _opacus([(sigma, q, steps)], delta)
    assert math.isfinite(ours) and ours > 0
    assert abs(ours - reference) <= 0.01 * reference, (ours, reference)


def test_composition_of_different_mechanisms_matches_opacus() -> None:
    history = [SampledGaussian(0.1, 1.2, 40), SampledGaussian(1.0, 3.0, 5), SampledGaussian(0.02, 0.9, 300)]
    ours = epsilon_of(history, 1e-5)
    reference = _opacus([(m.noise_multiplier, m.sampling_rate, m.steps) for m in history], 1e-5)
    assert abs(ours - reference) <= 0.01 * reference


def test_fractional_orders_are_integrated_accurately() -> None:
    """The quadrature for fractional orders sits between its integer neighbours (RDP is monotone)."""
    low, mid, high = (sampled_gaussian_rdp(0.2, 1.0, a) for a in (3.0, 3.5, 4.0))
    assert low < mid < high


def test_no_noise_is_infinite_and_no_release_is_free() -> None:
    assert epsilon_of([SampledGaussian(0.5, 0.0, 1)], 1e-5) == math.inf
    assert epsilon_of([], 1e-5) == 0.0
    assert epsilon_of([SampledGaussian(0.0, 1.0, 100)], 1e-5) == 0.0


def test_calibrated_noise_spends_at_most_the_target_and_not_much_less() -> None:
    sigma = calibrate_noise(3.0, 1e-5, sampling_rate=0.25, steps=40)
    assert epsilon_of([SampledGaussian(0.25, sigma, 40)], 1e-5) <= 3.0
    assert epsilon_of([SampledGaussian(0.25, sigma * 0.98, 40)], 1e-5) > 3.0
    with pytest.raises(ValueError):
        calibrate_noise(1e-6, 1e-5, sampling_rate=1.0, steps=10_000, max_noise=2.0)
