"""The server side of privacy: the fit workflow with derived SecAgg+, client-level DP, and accounting.

:func:`build_private_fit_workflow` returns the callable the ServerApp runs for every fit round. Around
the strategy's own ``aggregate_fit`` it

* runs SecAgg+ (:class:`PrivateSecAggPlusWorkflow`) with parameters derived each round
  (:mod:`common.privacy.secagg_parameters`): shares and threshold from the number of sites and
  ``secagg-dropout-fraction``, the clipping range from the current global model, ``max_weight`` from
  the largest site (one ``training-size`` query before the first round; 1 under client-level DP);
* tells dropouts from refusals and from faults: a site that vanishes mid-round is a *dropout*, which the
  round survives while at least ``threshold`` sites remain (recorded, logged); a refusal carries its
  site-policy code; anything marked ``fedscan-error`` is a fault and fails the run as before;
* in ``client-dp = "central"`` mode adds Gaussian noise of standard deviation
  ``client-dp-noise * client-dp-clip / n`` to the unmasked mean of the ``n`` sites' clipped updates,
  *before* the strategy's step (so FedAdam's step is post-processing of a noised mean);
* records the epsilon of the round in the round record and the round's fit metrics: client level from
  the server's RDP accountant at ``q = 1`` (the coordinator knows which sites it sampled, so sampling
  buys a site nothing against it), the largest patient-level epsilon any site's ledger reports, and the
  headline ``epsilon``, never lower than a site's ledger, with a note saying why the figures differ.
  When fewer than all sites are sampled, a figure *amplified by site sampling* is added, labelled as a
  guarantee for users of the released model only, resting on the coordinator sampling at random and
  keeping it secret.

A round that cannot complete is a :class:`common.errors.TrainingError` naming the reason (refusal codes,
too few sites for the threshold), never Flower's silent "Secure aggregation halted".
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Grid, LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
from flwr.server.workflow.default_workflows import default_fit_workflow

from common.config import RunConfig
from common.errors import TrainingError
from common.models import model_from_config
from common.privacy.accounting import SampledGaussian, epsilon_of
from common.privacy.refusals import ERROR_PREFIX, parse_refusal
from common.privacy.site_sampling import check_fraction_fit, sites_per_round
from server.secagg_workflow import PrivateSecAggPlusWorkflow

__all__ = [
    "PrivateFitWorkflow",
    "amplified_sampling_rate",
    "build_private_fit_workflow",
    "client_level_epsilon",
]

log = logging.getLogger("fedscan.server")


def client_level_epsilon(config: RunConfig, rounds: int, sampling_rate: float = 1.0) -> float:
    """Client-level epsilon at ``dp-delta`` after ``rounds`` rounds of client-level DP (inf without).

    Each round is one Gaussian mechanism on the sum of clipped site updates with noise multiplier
    ``client-dp-noise``, at ``q = 1``: against the coordinator, who knows which sites it contacted,
    sampling sites amplifies nothing. ``sampling_rate`` < 1 gives the figure amplified by site sampling,
    for users of the released model only (:func:`amplified_sampling_rate`).
    """
    if config.client_dp == "none":
        return math.inf
    return epsilon_of([SampledGaussian(sampling_rate, config.client_dp_noise, rounds)], config.dp_delta)


def amplified_sampling_rate(config: RunConfig, available: int) -> float:
    """The fraction of sites Flower samples per round out of ``available`` (``fraction-fit`` as it
    happens, :func:`common.privacy.site_sampling.sites_per_round`)."""
    if available < 1:
        return 1.0
    return sites_per_round(available, config.fraction_fit, config.min_fit_sites) / available


def _headline(privacy: dict[str, Any], config: RunConfig) -> tuple[float | None, str]:
    """The round's reported epsilon: never lower than a site's ledger; and why the figures differ."""
    client = privacy["epsilon_client"]
    sites = privacy["sites_epsilon_max"]
    if sites is None and client is None:
        return None, "no site reported an epsilon and the server adds no noise of its own"
    if sites is None:
        return client, "the server's client-level accountant (no site reported a ledger epsilon)"
    if math.isinf(sites):
        note = "a site's ledger books this run as unbounded: it added no noise it can vouch for"
        if config.client_dp == "central" and client is not None:
            note += (
                f"; the server's central noise gives client-level epsilon {client:.4g} against users of the "
                "model, which the sites cannot verify"
            )
        return math.inf, note
    if client is None:
        return sites, "the largest patient-level epsilon the sites' ledgers report"
    if client >= sites:
        return client, (
            f"the server's client-level epsilon ({client:.4g}); the sites' ledgers report at most "
            f"{sites:.4g} (a site's booking costs a patient its tightest mechanism)"
        )
    return sites, (
        f"the sites' ledgers report up to {sites:.4g}, more than the server's client-level {client:.4g}: "
        "each site books only the noise it can rely on with the honest sites it assumes "
        "(min_honest_sites) and its own DP-SGD; the larger is reported"
    )


@dataclass
class _RoundView:
    """What the privacy layer saw of one round's fit."""

    aggregated: bool = False
    refusals: Counter = field(default_factory=Counter)
    dropouts: int = 0
    errors: list[str] = field(default_factory=list)


def _failure_text(failure: object) -> str:
    if isinstance(failure, BaseException):
        return str(failure)
    if isinstance(failure, tuple) and len(failure) == 2:
        return str(getattr(getattr(failure[1], "status", None), "message", failure[1]))
    return str(failure)


def _distinct(failures: list) -> list:
    """Flower's SecAgg+ workflow records a failed collect stage twice (two loops over the same replies):
    one failure per underlying error object."""
    seen: set[int] = set()
    out = []
    for failure in failures:
        key = id(failure.args[0]) if isinstance(failure, BaseException) and failure.args else id(failure)
        if key not in seen:
            seen.add(key)
            out.append(failure)
    return out


def _refusal_summary(refusals: Counter) -> str:
    return ", ".join(f"{count} x {code}" for code, count in sorted(refusals.items()))


class PrivateFitWorkflow:
    """One fit round with the privacy layer around the strategy's ``aggregate_fit`` (module docstring)."""

    def __init__(self, config: RunConfig, num_sites: int) -> None:
        self.config = config
        self.num_sites = num_sites
        self.secagg = PrivateSecAggPlusWorkflow(config, num_sites) if config.secure_aggregation else None
        self.dropouts: dict[int, int] = {}
        self.available = num_sites

    def __call__(self, grid: Grid, context: Context) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but got {type(context).__name__}.")
        server_round = int(cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND]))
        strategy = context.strategy
        view = _RoundView()
        self.available = len(list(grid.get_node_ids()))
        # Every entry point checked this already with the sites it knew of; the sites connected now decide.
        check_fraction_fit(self.config.fraction_fit, self.config.min_fit_sites, max(1, self.available))
        original = strategy.aggregate_fit
        parameters = self.secagg.prepare_round(grid, context) if self.secagg is not None else None

        def aggregate_fit(rnd, results, failures):  # type: ignore[no-untyped-def]
            view.aggregated = True
            kept = []
            for failure in _distinct(list(failures)):
                text = _failure_text(failure)
                code = parse_refusal(text)
                if code is not None:
                    view.refusals[code] += 1
                elif self.secagg is not None and ERROR_PREFIX not in text:
                    view.dropouts += 1  # a site that vanished mid-round: SecAgg+ recovered its masks
                else:
                    view.errors.append(text)
                    kept.append(failure)
            if view.refusals:
                log.warning("Round %d: sites refused: %s.", rnd, _refusal_summary(view.refusals))
            if view.dropouts:
                log.warning(
                    "Round %d: %d site(s) dropped out; the round went on without them.", rnd, view.dropouts
                )
            if not results and view.refusals:
                raise TrainingError(
                    f"Round {rnd}: no site trained; sites refused under their policy: "
                    f"{_refusal_summary(view.refusals)}."
                    + (
                        " The server runs without secure aggregation and the sites require it."
                        if {"no-secure-aggregation", "secure-aggregation-mismatch"} & set(view.refusals)
                        else ""
                    )
                )
            if results and self.config.client_dp == "central":
                results = self._add_central_noise(results)
            aggregated, metrics = original(rnd, results, kept)
            self._record(strategy, rnd, results, view, parameters, metrics)
            return aggregated, metrics

        strategy.aggregate_fit = aggregate_fit  # type: ignore[method-assign]
        self._tolerate_dropouts_in_evaluation(strategy)
        try:
            if self.secagg is not None:
                self.secagg(grid, context)
            else:
                default_fit_workflow(grid, context)
        finally:
            del strategy.aggregate_fit
        if not view.aggregated:
            raise TrainingError(self._halt_reason(server_round))
        self.dropouts[server_round] = view.dropouts

    def _tolerate_dropouts_in_evaluation(self, strategy: Any) -> None:
        """A site that dropped out of a round's fit also fails that round's evaluation: do not count that
        as a failure too (up to the round's dropouts, and never a ``fedscan-error``)."""
        if getattr(strategy, "_fedscan_tolerates_dropouts", False):
            return
        original = strategy.aggregate_evaluate

        def aggregate_evaluate(rnd, results, failures):  # type: ignore[no-untyped-def]
            allowance = self.dropouts.get(rnd, 0)
            kept = []
            for failure in failures:
                if allowance and ERROR_PREFIX not in _failure_text(failure):
                    allowance -= 1
                else:
                    kept.append(failure)
            excused = len(failures) - len(kept)
            recorder = getattr(strategy, "recorder", None)
            if excused and recorder is not None:
                recorder.round(rnd).privacy["evaluate_dropouts"] = excused
            return original(rnd, results, kept)

        strategy.aggregate_evaluate = aggregate_evaluate
        strategy._fedscan_tolerates_dropouts = True

    def _halt_reason(self, server_round: int) -> str:
        params = self.secagg.parameters if self.secagg is not None else None
        state = self.secagg.last_state if self.secagg is not None else None
        refusals: Counter = Counter()
        others = 0
        for failure in _distinct(list(getattr(state, "failures", []))):
            code = parse_refusal(str(failure))
            if code is None:
                others += 1
            else:
                refusals[code] += 1
        active = len(getattr(state, "active_node_ids", ()) or ())
        sampled = len(getattr(state, "sampled_node_ids", ()) or ())
        detail = f"{active} of {sampled} sites still active" if sampled else "no site was sampled"
        if params is not None:
            detail += (
                f"; SecAgg+ needs {params.reconstruction_threshold} of {params.num_sites} "
                f"(tolerates {params.tolerated_dropouts} dropout(s))"
            )
        if refusals:
            detail += f"; sites refused under their policy: {_refusal_summary(refusals)}"
        if others:
            detail += f"; failures: {others} site(s) failed or vanished"
        return f"Round {server_round}: secure aggregation halted ({detail})."

    def _add_central_noise(self, results):  # type: ignore[no-untyped-def]
        """Noise N(0, (noise * clip / n)^2) on the mean of the n clipped updates (all frozen arrays kept)."""
        arrays = parameters_to_ndarrays(results[0][1].parameters)
        std = self.config.client_dp_noise * self.config.client_dp_clip / len(results)
        frozen = model_from_config(self.config).frozen_arrays
        rng = np.random.default_rng(secrets.randbits(128))
        noised = [
            a if i in frozen or a.dtype.kind != "f" else a + rng.normal(0.0, std, a.shape)
            for i, a in enumerate(arrays)
        ]
        if self.secagg is None:  # never reached: client-dp requires secure aggregation (RunConfig)
            raise TrainingError("Central client-level DP needs the SecAgg+ aggregate.")
        parameters = ndarrays_to_parameters(noised)
        for _, fitres in results:
            fitres.parameters = parameters
        return results

    def _record(self, strategy, rnd, results, view, parameters, metrics) -> None:  # type: ignore[no-untyped-def]
        sample = [
            float(r.metrics["sample-epsilon"])
            for _, r in results
            if isinstance(r.metrics.get("sample-epsilon"), int | float)
        ]
        sites_max = (math.inf if min(sample) < 0 else max(sample)) if sample else None
        client = client_level_epsilon(self.config, rnd)
        privacy: dict[str, Any] = {
            "delta": self.config.dp_delta,
            "unit": "patient (site ledgers); site (client level)",
            "client_dp": self.config.client_dp,
            "epsilon_client": client if math.isfinite(client) else None,
            "sites_epsilon_max": sites_max,
            "dropouts": view.dropouts,
            "refusals": dict(view.refusals),
        }
        headline, note = _headline(privacy, self.config)
        privacy["sites_epsilon_max"] = sites_max if sites_max is None or math.isfinite(sites_max) else "inf"
        privacy["epsilon_sample_max"] = privacy["sites_epsilon_max"]  # the name earlier records used
        privacy["epsilon"] = headline if headline is None or math.isfinite(headline) else "inf"
        privacy["epsilon_note"] = note
        rate = amplified_sampling_rate(self.config, self.available)
        if self.config.client_dp != "none" and rate < 1:
            amplified = client_level_epsilon(self.config, rnd, rate)
            privacy["epsilon_client_amplified"] = {
                "epsilon": amplified,
                "sampling_rate": rate,
                "label": (
                    "for users of the released model only: assumes the coordinator sampled sites at random "
                    "and kept it secret; no site's guarantee (they book q = 1)"
                ),
            }
        if parameters is not None:
            privacy["secagg"] = {
                "num_shares": parameters.num_shares,
                "threshold": parameters.reconstruction_threshold,
                "tolerated_dropouts": parameters.tolerated_dropouts,
                "clipping_range": parameters.clipping_range,
                "quantization_range": parameters.quantization_range,
                "max_weight": parameters.max_weight,
            }
            if self.secagg is not None:  # stages up to collection; unmasking is still running here
                privacy["secagg"]["stage_seconds"] = self.secagg.stage_seconds
        recorder = getattr(strategy, "recorder", None)
        if recorder is not None:
            recorder.round(rnd).privacy = privacy
        if privacy["epsilon_client"] is not None:
            metrics["epsilon-client"] = privacy["epsilon_client"]
        if isinstance(privacy["sites_epsilon_max"], float):
            metrics["epsilon-sample-max"] = privacy["sites_epsilon_max"]
        if isinstance(privacy["epsilon"], float):
            metrics["epsilon"] = privacy["epsilon"]


def build_private_fit_workflow(config: RunConfig, num_sites: int) -> PrivateFitWorkflow:
    """The fit workflow of a run: SecAgg+ when ``secure-aggregation`` is on, client DP, accounting."""
    return PrivateFitWorkflow(config, num_sites)
