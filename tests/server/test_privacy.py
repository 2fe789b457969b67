"""Server-side privacy: the federation-level epsilon and how failures are told apart."""

from __future__ import annotations

import math

from flwr.app import Error
from opacus.accountants import RDPAccountant

from common.config import RunConfig
from common.privacy.refusals import parse_refusal
from server.privacy import _distinct, _headline, amplified_sampling_rate, client_level_epsilon


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


def test_the_headline_epsilon_is_never_below_a_sites_ledger_and_says_why() -> None:
    distributed = RunConfig(client_dp="distributed", client_dp_noise=1.0)
    below = {"epsilon_client": 4.7, "sites_epsilon_max": 9.0}  # a site trusting fewer honest sites
    epsilon, note = _headline(below, distributed)
    assert epsilon == 9.0 and "min_honest_sites" in note
    above = {"epsilon_client": 4.7, "sites_epsilon_max": 2.0}  # the sites' own DP-SGD is tighter
    assert _headline(above, distributed)[0] == 4.7
    central = RunConfig(client_dp="central")
    epsilon, note = _headline({"epsilon_client": 4.7, "sites_epsilon_max": math.inf}, central)
    assert epsilon == math.inf and "cannot verify" in note  # central noise: the sites' ledgers say inf


def test_sampling_amplifies_only_the_labelled_figure_for_model_users() -> None:
    config = RunConfig(client_dp="distributed", fraction_fit=0.5, min_fit_sites=2)
    rate = amplified_sampling_rate(config, 10)
    assert rate == 0.5
    assert client_level_epsilon(config, 10, rate) < client_level_epsilon(config, 10)  # q = 1 for the sites
    assert amplified_sampling_rate(RunConfig(fraction_fit=0.05, min_fit_sites=3), 3) == 1.0
