"""Rényi-DP accounting for the Gaussian mechanisms fedscan runs: pure functions, no state, no I/O.

Every differentially private step fedscan takes is a *sampled Gaussian mechanism* (SGM): each record
(sample-level DP-SGD) or each site (client-level DP) is included with probability ``q``, the sum of the
included contributions, each clipped to L2 norm ``C``, gets Gaussian noise of standard deviation
``sigma * C``. Its Rényi-DP at order ``alpha`` (Mironov, Talwar and Zhang, 2019, "Rényi Differential
Privacy of the Sampled Gaussian Mechanism") is ``log(A_alpha) / (alpha - 1)`` with

    A_alpha = E_{z ~ N(0, sigma^2)} [ ((1 - q) + q * exp((2z - 1) / (2 sigma^2)))^alpha ].

RDP composes by addition, so a whole history (rounds, runs) is the sum of its steps' RDP curves; the
curve is turned into an (epsilon, delta) guarantee with the conversion of Balle et al. (2020,
"Hypothesis testing interpretations and Rényi differential privacy", Theorem 21), minimised over the
orders. This module computes ``A_alpha`` itself, in log space: exactly by the binomial expansion for
integer orders, and by numerical integration of the defining expectation for fractional orders. It is
checked against Opacus's accountant (a separate implementation of the same mathematics) in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = [
    "DEFAULT_ORDERS",
    "SampledGaussian",
    "calibrate_noise",
    "epsilon_from_rdp",
    "epsilon_of",
    "group_mechanism",
    "rdp_curve",
    "sampled_gaussian_rdp",
]

#: Orders searched for the best conversion: dense near 1 (large epsilons), integers up to 256.
DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1.0 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [80, 96, 128, 192, 256]
)


@dataclass(frozen=True)
class SampledGaussian:
    """``steps`` applications of a sampled Gaussian mechanism.

    Attributes
    ----------
    sampling_rate:
        ``q``, the probability that a record (or a site) takes part in one step; 1 = always.
    noise_multiplier:
        ``sigma``: noise standard deviation divided by the clipping norm (the L2 sensitivity).
    steps:
        How many times the mechanism is applied.
    """

    sampling_rate: float
    noise_multiplier: float
    steps: int

    def __post_init__(self) -> None:
        if not 0 <= self.sampling_rate <= 1:
            raise ValueError(f"The sampling rate must be in [0, 1], not {self.sampling_rate}.")
        if self.noise_multiplier < 0:
            raise ValueError(f"The noise multiplier must not be negative, not {self.noise_multiplier}.")
        if self.steps < 0:
            raise ValueError(f"The number of steps must not be negative, not {self.steps}.")


def group_mechanism(mechanism: SampledGaussian, group_size: int) -> SampledGaussian:
    """A sampled Gaussian mechanism on *records*, seen by a *group* of up to ``group_size`` of them
    (a patient's records): the mechanism the group is protected by, for group-level accounting.

    Each step includes every record independently with probability ``q``; a group is touched when any
    of its ``k`` records is, with probability ``q_k = 1 - (1 - q)^k``, and then changes the noised sum by
    at most ``k C`` (each record clipped to ``C``), i.e. a noise multiplier of ``sigma / k``. The
    group's contribution is a mixture over which of its records were drawn; both directions of the
    Rényi divergence are convex in that mixture, so one step costs the group at most what one step of
    the sampled Gaussian mechanism ``(q_k, sigma / k)`` costs one record. For ``k = 1`` this is the
    mechanism itself. The bound is valid but loose for large groups: sampling whole patients (with
    per-patient clipping) is how to make a patient's epsilon small.
    """
    if group_size < 1:
        raise ValueError(f"A group has at least one record, not {group_size}.")
    if group_size == 1:
        return mechanism
    q = mechanism.sampling_rate
    rate = 1.0 if q >= 1 else -math.expm1(group_size * math.log1p(-q))
    return SampledGaussian(min(1.0, rate), mechanism.noise_multiplier / group_size, mechanism.steps)


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    """``log A_alpha`` by the binomial expansion (exact for integer orders)."""
    k = np.arange(alpha + 1, dtype=np.float64)
    log_binom = special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(alpha - k + 1)
    terms = log_binom + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2 * sigma**2)
    return float(special.logsumexp(terms))


def _log_a_fractional(q: float, sigma: float, alphas: np.ndarray, points: int = 4_001) -> np.ndarray:
    """``log A_alpha`` for several orders at once, integrating the defining expectation in log space.

    The integrand is ``phi(z) * ((1 - q) + q * exp((2z - 1) / (2 sigma^2)))^alpha`` with ``phi`` the
    N(0, sigma^2) density. Its mass sits within a few sigma of 0 and of the tilted centre ``alpha``
    (where the exponential term takes over), so the grid spans both with a generous margin.
    """
    low = -12.0 * sigma - 1.0
    high = max(float(np.max(alphas)), 1.0) + 12.0 * sigma + 1.0
    z = np.linspace(low, high, points)
    log_phi = -(z * z) / (2 * sigma**2) - math.log(sigma * math.sqrt(2 * math.pi))
    log_mix = np.logaddexp(math.log1p(-q), math.log(q) + (2 * z - 1) / (2 * sigma**2))
    log_integrand = log_phi[None, :] + np.asarray(alphas, dtype=np.float64)[:, None] * log_mix[None, :]
    # Trapezoid rule in log space: log(sum of (f_i + f_{i+1}) / 2 * dz).
    log_pairs = np.logaddexp(log_integrand[:, :-1], log_integrand[:, 1:]) - math.log(2)
    return special.logsumexp(log_pairs, axis=1) + math.log(z[1] - z[0])


def _rdp_at_orders(q: float, sigma: float, orders: Sequence[float]) -> np.ndarray:
    """RDP of one SGM step at every order (fractional orders integrated together)."""
    alphas = np.asarray(orders, dtype=np.float64)
    if np.any(alphas <= 1):
        raise ValueError("RDP orders must exceed 1.")
    if q == 0:
        return np.zeros_like(alphas)
    if sigma == 0:
        return np.full_like(alphas, np.inf)
    if q == 1:
        return alphas / (2 * sigma**2)
    log_a = np.empty_like(alphas)
    integer = np.array([float(a).is_integer() for a in alphas])
    for index in np.flatnonzero(integer):
        log_a[index] = _log_a_integer(q, sigma, int(alphas[index]))
    if np.any(~integer):
        log_a[~integer] = _log_a_fractional(q, sigma, alphas[~integer])
    return np.maximum(log_a, 0.0) / (alphas - 1)


def sampled_gaussian_rdp(q: float, sigma: float, alpha: float) -> float:
    """RDP of *one* application of the sampled Gaussian mechanism at order ``alpha`` (> 1)."""
    return float(_rdp_at_orders(q, sigma, [alpha])[0])


def rdp_curve(mechanisms: Iterable[SampledGaussian], orders: Sequence[float] = DEFAULT_ORDERS) -> np.ndarray:
    """RDP of the composition of ``mechanisms`` at every order (RDP adds up under composition)."""
    total = np.zeros(len(orders), dtype=np.float64)
    for mechanism in mechanisms:
        if mechanism.steps == 0 or mechanism.sampling_rate == 0:
            continue
        total += mechanism.steps * _rdp_at_orders(mechanism.sampling_rate, mechanism.noise_multiplier, orders)
    return total


def epsilon_from_rdp(rdp: np.ndarray, delta: float, orders: Sequence[float] = DEFAULT_ORDERS) -> float:
    """The smallest epsilon such that the RDP curve implies (epsilon, delta)-DP (Balle et al., 2020)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), not {delta}.")
    alphas = np.asarray(orders, dtype=np.float64)
    rdp = np.asarray(rdp, dtype=np.float64)
    if not np.any(np.isfinite(rdp)):
        return math.inf
    with np.errstate(invalid="ignore"):
        eps = rdp - (math.log(delta) + np.log(alphas)) / (alphas - 1) + np.log((alphas - 1) / alphas)
    eps = np.where(np.isfinite(rdp), eps, np.inf)
    return float(max(np.min(eps), 0.0))


def epsilon_of(
    mechanisms: Iterable[SampledGaussian], delta: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> float:
    """Epsilon at ``delta`` of a whole history of sampled Gaussian mechanisms (0 for no history)."""
    mechanisms = list(mechanisms)
    if not any(m.steps and m.sampling_rate for m in mechanisms):
        return 0.0
    return epsilon_from_rdp(rdp_curve(mechanisms, orders), delta, orders)


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    *,
    sampling_rate: float,
    steps: int,
    precision: float = 0.005,
    max_noise: float = 1000.0,
    group_size: int = 1,
) -> float:
    """The smallest noise multiplier (to ``precision``) with which ``steps`` SGM steps spend at most
    ``target_epsilon`` at ``delta``: how a site turns a privacy budget into DP-SGD noise.

    With ``group_size`` > 1 the target is the epsilon of a group of that many records
    (:func:`group_mechanism`): record-level DP-SGD calibrated for patients of up to ``group_size`` records.
    Raises ValueError if even ``max_noise`` cannot meet the target.
    """
    if target_epsilon <= 0:
        raise ValueError(f"The target epsilon must be positive, not {target_epsilon}.")

    def spent(sigma: float) -> float:
        return epsilon_of([group_mechanism(SampledGaussian(sampling_rate, sigma, steps), group_size)], delta)

    if spent(max_noise) > target_epsilon:
        raise ValueError(
            f"No noise multiplier up to {max_noise} spends at most epsilon {target_epsilon} in {steps} steps."
        )
    low, high = 0.0, 1.0
    while spent(high) > target_epsilon:  # bounded: spent(max_noise) <= target was checked above
        low, high = high, min(2 * high, max_noise)
    while high - low > precision * max(high, 1e-3):
        middle = (low + high) / 2
        if spent(middle) > target_epsilon:
            low = middle
        else:
            high = middle
    return high
