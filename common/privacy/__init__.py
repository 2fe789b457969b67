"""Privacy mathematics shared by sites and server: RDP accounting and SecAgg+ parameters (no Flower)."""

from __future__ import annotations

from common.privacy.accounting import (
    DEFAULT_ORDERS,
    SampledGaussian,
    calibrate_noise,
    epsilon_from_rdp,
    epsilon_of,
    rdp_curve,
    sampled_gaussian_rdp,
)
from common.privacy.secagg_parameters import SecAggParameters, derive_secagg_parameters

__all__ = [
    "DEFAULT_ORDERS",
    "SampledGaussian",
    "SecAggParameters",
    "calibrate_noise",
    "derive_secagg_parameters",
    "epsilon_from_rdp",
    "epsilon_of",
    "rdp_curve",
    "sampled_gaussian_rdp",
]
