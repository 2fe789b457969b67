"""Builds the server side of a run: a checked strategy (FedAvg, FedProx or FedAdam) and its workflow.

Every strategy refuses to be quiet about failures: each update is checked (count, shapes, dtypes,
finite values) before aggregation, a rejected one is logged with its reason and counted as a failure,
and the run fails at the end if any round had one, instead of Flower's default of logging and exiting
0. The checks, the per-round records, the pooled federated metrics and the central evaluation live in
one mixin, :class:`CheckedStrategy`, combined with Flower's own strategies:

* ``fedavg``: FedAvg weighted by each site's number of training examples;
* ``fedprox``: the same aggregation; the sites add ``proximal-mu / 2 * ||w - w_global||^2`` to their
  local loss (Flower's FedProx sends ``proximal_mu`` in the fit instructions);
* ``fedadam``: FedAvg's weighted mean as a pseudo-gradient for a server-side Adam step
  (``server-learning-rate``), whose moments are part of the checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.common import (
    EvaluateRes,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAdam, FedAvg, FedProx

from common.config import RunConfig
from common.errors import TrainingError
from common.metrics import ClassificationCounts, classification_metrics, summarise_counts
from common.models import LabelledArrays, check_compatible, model_from_config
from server.audit_trail import fit_participants
from server.run_records import RunRecorder

__all__ = [
    "CheckedFedAdam",
    "CheckedFedAvg",
    "CheckedFedProx",
    "CheckedStrategy",
    "RoundEndHook",
    "build_strategy",
    "cast_like",
    "weighted_metrics",
]

log = logging.getLogger("fedscan.server")

RoundEndHook = Callable[[int, list[np.ndarray], list[np.ndarray]], None]
"""Called with (round, global arrays, strategy state) when a round has finished (checkpointing)."""


def _weighted(values: list[tuple[int, float]]) -> float | None:
    total = sum(n for n, _ in values)
    return sum(n * v for n, v in values) / total if total else None


def _compute_seconds(replies: Iterable[FitRes | EvaluateRes]) -> float:
    """Sum of the sites' reported local compute time (``compute-seconds``) over replies."""
    return sum(float(r.metrics.get("compute-seconds", 0.0)) for r in replies)  # type: ignore[arg-type]


def cast_like(template: list[np.ndarray], arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Aggregated arrays in the dtypes of the model (FedAdam yields float64; BN counters must stay int)."""
    return [
        np.rint(a).astype(t.dtype) if t.dtype.kind in "iu" else np.asarray(a, dtype=t.dtype)
        for t, a in zip(template, arrays, strict=True)
    ]


def _metric_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None  # type: ignore[arg-type]


class CheckedStrategy:
    """Mixin for a ``flwr.server.strategy`` strategy: validate updates, record rounds, checkpoint.

    Parameters
    ----------
    initial_arrays:
        The global model to start from (a fresh seeded model, or a checkpoint when resuming); also the
        template every update is checked against.
    recorder:
        Receives one :class:`server.run_records.RoundRecord` per round.
    central_test:
        A public test set the server may score the global model on after every round (optional).
    on_round_end:
        Called at the end of every round with the global model and the strategy state.
    frozen:
        Indices of arrays local training never changes (the model's ``frozen_arrays``): an update that
        changes one is rejected, and the aggregate keeps the server's exact values.
    """

    def __init__(  # type: ignore[no-untyped-def]
        self,
        *,
        initial_arrays: list[np.ndarray],
        recorder: RunRecorder,
        config: RunConfig,
        central_test: LabelledArrays | None = None,
        on_round_end: RoundEndHook | None = None,
        frozen: tuple[int, ...] = (),
        **kwargs,
    ) -> None:
        super().__init__(initial_parameters=ndarrays_to_parameters(initial_arrays), **kwargs)  # type: ignore[call-arg]
        self.template = [np.asarray(a) for a in initial_arrays]
        self.latest_arrays = [a.copy() for a in self.template]
        self.recorder = recorder
        self.config = config
        self.central_test = central_test
        self.on_round_end = on_round_end
        self.frozen = frozen
        self._round_started: dict[int, float] = {}

    # -- state for checkpoints ---------------------------------------------------------------------
    def state_arrays(self) -> list[np.ndarray]:
        """Server-side optimiser state to checkpoint (none for FedAvg and FedProx)."""
        return []

    def restore_state(self, arrays: list[np.ndarray]) -> None:
        """Inverse of :meth:`state_arrays` (resume)."""
        if arrays:
            raise TrainingError(
                f"{type(self).__name__} has no state, but the checkpoint holds {len(arrays)}."
            )

    # -- fit ---------------------------------------------------------------------------------------
    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        self._round_started[server_round] = time.time()
        return super().configure_fit(server_round, parameters, client_manager)  # type: ignore[misc]

    def check_update(self, fit_res: FitRes) -> NDArrays:
        """The update's arrays if they match the model (count, shapes, dtypes, finite); else TrainingError."""
        arrays = parameters_to_ndarrays(fit_res.parameters)
        if self.config.secure_aggregation and len(arrays) == len(self.template):
            # Under SecAgg+ this is already the unmasked aggregate, dequantised to float64 by Flower: the
            # sites' own dtypes cannot be seen any more, so check it in the model's dtypes.
            arrays = cast_like(self.template, arrays)
        check_compatible(self.template, arrays, source="site update")
        if not self.config.secure_aggregation:
            for index in self.frozen:
                if not np.array_equal(arrays[index], self.template[index]):
                    raise TrainingError(
                        f"site update: changed array {index}, which local training never changes."
                    )
        if fit_res.num_examples <= 0:
            raise TrainingError(f"site update: claims {fit_res.num_examples} training examples.")
        return arrays

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        accepted: list[tuple[ClientProxy, FitRes]] = []
        record = self.recorder.round(server_round)
        record.started_at = self._round_started.get(server_round, time.time())
        for proxy, fit_res in results:
            try:
                self.check_update(fit_res)
                accepted.append((proxy, fit_res))
            except TrainingError as error:
                record.rejected.append(str(error))
                log.error("Round %d: rejected an update: %s", server_round, error)
        for failure in failures:
            reason = failure if isinstance(failure, BaseException) else failure[1].status.message
            log.error("Round %d: a site failed to train: %s", server_round, reason)
        record.site_compute_seconds += _compute_seconds(res for _, res in results)
        record.sites_fit = len(accepted)
        record.participants = fit_participants(accepted)
        record.failures = len(failures) + len(record.rejected)
        record.train_loss = _weighted(
            [
                (r.num_examples, float(r.metrics["train_loss"]))
                for _, r in accepted
                if "train_loss" in r.metrics
            ]  # type: ignore[arg-type]
        )
        if record.failures:
            log.error("Round %d: %d site(s) failed or sent an invalid update.", server_round, record.failures)
        if not accepted:
            raise TrainingError(f"Round {server_round}: no valid update was received from any site.")
        parameters, metrics = super().aggregate_fit(server_round, accepted, [])  # type: ignore[misc]
        if parameters is not None:
            arrays = cast_like(self.template, parameters_to_ndarrays(parameters))
            # Frozen arrays are the server's own (e.g. the standardiser it installed): keep them exact,
            # whatever SecAgg+'s clipping and quantisation did to them.
            for index in self.frozen:
                arrays[index] = self.template[index].copy()
            check_compatible(self.template, arrays, source=f"aggregate of round {server_round}")
            self.latest_arrays = arrays
            self._after_aggregate(arrays)
            parameters = ndarrays_to_parameters(arrays)
        record.fit_seconds = time.time() - record.started_at
        return parameters, metrics

    def _after_aggregate(self, arrays: list[np.ndarray]) -> None:
        """Hook for strategies that keep their own copy of the global model (FedAdam)."""

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        """Central evaluation on the server's public test set, when it has one (not at round 0)."""
        if self.central_test is None or server_round == 0:
            return None
        model = model_from_config(self.config)
        model.set_arrays(cast_like(self.template, parameters_to_ndarrays(parameters)))
        result = model.evaluate(self.central_test)
        metrics = classification_metrics(self.central_test.y, model.predict_scores(self.central_test.x))
        metrics["loss"] = result.loss
        self.recorder.round(server_round).central = metrics
        flat = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        return result.loss, flat  # type: ignore[return-value]

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        loss, metrics = super().aggregate_evaluate(server_round, results, failures)  # type: ignore[misc]
        record = self.recorder.round(server_round)
        record.sites_evaluated = len(results)
        record.failures += len(failures)
        record.eval_loss = loss
        record.examples_evaluated = sum(r.num_examples for _, r in results)
        record.site_compute_seconds += _compute_seconds(res for _, res in results)
        pooled: ClassificationCounts | None = None
        for _, res in results:
            counts = ClassificationCounts.from_scalars(res.metrics)
            pooled = counts if pooled is None else pooled + counts
            site = str(res.metrics.get("site-id", f"site-{len(record.per_site) + 1}"))
            record.per_site[site] = {
                "accuracy": _metric_or_none(res.metrics.get("accuracy")),
                "n": res.num_examples,
            }
        if pooled is not None and pooled.num_examples:
            summary = summarise_counts(pooled)
            record.accuracy = _metric_or_none(summary["accuracy"])
            record.balanced_accuracy = _metric_or_none(summary["balanced_accuracy"])
            record.auc = _metric_or_none(summary["auc"])
            record.sensitivity = _metric_or_none(summary["sensitivity"])
            record.specificity = _metric_or_none(summary["specificity"])
            record.f1 = _metric_or_none(summary["f1"])
            record.per_class = summary["per_class"]  # type: ignore[assignment]
        if record.started_at is not None:
            record.round_seconds = time.time() - record.started_at
        if failures:
            log.error("Round %d: %d site(s) failed to evaluate.", server_round, len(failures))
        self.recorder.finish_round(server_round)
        if self.on_round_end is not None:
            self.on_round_end(server_round, self.latest_arrays, self.state_arrays())
        return loss, metrics


class CheckedFedAvg(CheckedStrategy, FedAvg):
    """FedAvg (weighted by examples) with checked updates and per-round records."""


class CheckedFedProx(CheckedStrategy, FedProx):
    """FedProx: FedAvg's aggregation; the sites add the proximal term (``proximal_mu`` is sent to them)."""


class CheckedFedAdam(CheckedStrategy, FedAdam):
    """FedAdam (Reddi et al., 2021): a server-side Adam step on the weighted mean of the updates."""

    def _after_aggregate(self, arrays: list[np.ndarray]) -> None:
        # Continue from exactly the (cast) model the sites receive, so a resumed run is the same run.
        self.current_weights = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays]

    def state_arrays(self) -> list[np.ndarray]:
        if self.m_t is None or self.v_t is None:
            return []
        return [np.asarray(a) for a in self.m_t] + [np.asarray(a) for a in self.v_t]

    def restore_state(self, arrays: list[np.ndarray]) -> None:
        if not arrays:
            return
        half = len(arrays) // 2
        if 2 * half != len(arrays) or half != len(self.template):
            raise TrainingError(
                f"FedAdam state in the checkpoint has {len(arrays)} arrays; "
                f"expected {2 * len(self.template)}."
            )
        self.m_t, self.v_t = list(arrays[:half]), list(arrays[half:])


def weighted_metrics(results: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    """Average every numeric metric over sites, weighted by their number of examples.

    Count keys (``cm-*``, ``hist-*``) are pooled by :class:`CheckedStrategy` instead and left out here.
    """
    keys = {
        k
        for _, m in results
        for k, v in m.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and not k.startswith(("cm-", "hist-", "num-", "compute-"))
    }
    out: dict[str, Scalar] = {}
    for key in sorted(keys):
        value = _weighted([(n, float(m[key])) for n, m in results if key in m])  # type: ignore[arg-type]
        if value is not None:
            out[key] = value
    return out


_STRATEGIES: dict[str, type[CheckedStrategy]] = {
    "fedavg": CheckedFedAvg,
    "fedprox": CheckedFedProx,
    "fedadam": CheckedFedAdam,
}


def build_strategy(
    config: RunConfig,
    initial_arrays: list[np.ndarray],
    recorder: RunRecorder,
    *,
    central_test: LabelledArrays | None = None,
    on_round_end: RoundEndHook | None = None,
) -> CheckedStrategy:
    """The configured strategy, weighted by examples, with the round number sent to every site."""
    extra: dict[str, Any] = {}
    if config.strategy == "fedprox":
        extra["proximal_mu"] = config.proximal_mu
    elif config.strategy == "fedadam":
        # tau bounds the per-coordinate step (eta / tau for tiny second moments); 1e-3 as in Reddi et al.
        extra.update(
            eta=config.server_learning_rate, eta_l=config.learning_rate, beta_1=0.9, beta_2=0.99, tau=1e-3
        )
    return _STRATEGIES[config.strategy](
        initial_arrays=initial_arrays,
        recorder=recorder,
        config=config,
        central_test=central_test,
        on_round_end=on_round_end,
        frozen=model_from_config(config).frozen_arrays,
        fraction_fit=config.fraction_fit,
        fraction_evaluate=1.0,
        min_fit_clients=config.min_fit_sites,
        min_evaluate_clients=config.min_fit_sites,
        min_available_clients=config.min_fit_sites,
        on_fit_config_fn=lambda r: {"server-round": r},
        on_evaluate_config_fn=lambda r: {"server-round": r},
        accept_failures=True,
        fit_metrics_aggregation_fn=weighted_metrics,
        evaluate_metrics_aggregation_fn=weighted_metrics,
        **extra,
    )
