"""Server-side privacy: the federation-level epsilon and how failures are told apart."""

from __future__ import annotations

import math

from flwr.app import Error
from opacus.accountants import RDPAccountant

from common.config import RunConfig
from common.privacy.refusals import parse_refusal
from server.privacy import _distinct, client_level_epsilon


def test_client_level_epsilon_agrees_with_opacus_each_round() -> None:
    config = RunConfig(client_dp="distributed", client_dp_noise=1.3, dp_delta=1e-6)
    for rounds in (1, 5, 20):
        accountant = RDPAccountant()
        accountant.history = [(1.3, 1.0, rounds)]
        reference = accountant.get_epsilon(1e-6)
        assert abs(client_level_epsilon(config, rounds) - reference) <= 0.01 * reference
    assert client_level_epsilon(RunConfig(), 3) == math.inf  # no client-level DP: no guarantee


def test_a_refusal_survives_flowers_error_wrapping() -> None:
    failure = Exception(Error(code=6, reason="fedscan-refusal:too-few-sites"))
    assert parse_refusal(str(failure)) == "too-few-sites"
    assert parse_refusal(str(Exception(Error(code=2, reason="ValueError: too-few-sites")))) is None


def test_a_failure_recorded_twice_by_secagg_counts_once() -> None:
    error = Error(code=2, reason="boom")
    twice = [Exception(error), Exception(error)]  # what Flower's collect stage appends for one reply
    other = Exception(Error(code=2, reason="boom"))
    assert len(_distinct([*twice, other])) == 2
