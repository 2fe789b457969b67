"""Checked strategies: a bad update is rejected and logged, a round with failures is recorded loudly.

Real Flower strategies and real ``FitRes``/``EvaluateRes`` messages; the client proxies are opaque to
aggregation, so none is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from flwr.common import Code, EvaluateRes, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from common.config import RunConfig
from common.errors import TrainingError
from common.metrics import ClassificationCounts
from server.run_records import RunRecorder, read_round_records
from server.strategy import CheckedFedAdam, CheckedFedAvg, CheckedFedProx, build_strategy, cast_like

TEMPLATE = [np.zeros((2, 3), dtype=np.float32), np.zeros(3, dtype=np.float32), np.zeros((), dtype=np.int64)]
OK = Status(code=Code.OK, message="")


def _fit(arrays: list[np.ndarray], n: int = 10) -> tuple[None, FitRes]:
    return None, FitRes(
        status=OK, parameters=ndarrays_to_parameters(arrays), num_examples=n, metrics={"train_loss": 1.0}
    )


def _strategy(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    # Plain aggregation: these updates are per site (under SecAgg+, the default, the server sees sums).
    config = RunConfig(**{"min_fit_sites": 1, "secure_aggregation": False, **overrides})  # type: ignore[arg-type]
    recorder = RunRecorder(tmp_path)
    return build_strategy(config, [a.copy() for a in TEMPLATE], recorder), recorder


def _good(value: float) -> list[np.ndarray]:
    return [np.full((2, 3), value, np.float32), np.full(3, value, np.float32), np.array(4, dtype=np.int64)]


def test_wrong_shape_nan_and_dtype_updates_are_rejected_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    strategy, recorder = _strategy(tmp_path)
    wrong_shape = [np.zeros((3, 2), np.float32), *_good(0)[1:]]
    with_nan = _good(1.0)
    with_nan[1][0] = np.nan
    wrong_dtype = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in _good(1.0)]
    too_few = _good(1.0)[:2]
    with caplog.at_level(logging.ERROR, logger="fedscan.server"):
        parameters, _ = strategy.aggregate_fit(
            1,
            [
                _fit(_good(1.0), n=10),
                _fit(_good(4.0), n=30),
                _fit(wrong_shape),
                _fit(with_nan),
                _fit(wrong_dtype),
                _fit(too_few),
            ],
            [],
        )
    aggregated = parameters_to_ndarrays(parameters)
    np.testing.assert_allclose(aggregated[0], 3.25)  # (10 * 1 + 30 * 4) / 40: only the two valid updates
    assert [a.dtype for a in aggregated] == [a.dtype for a in TEMPLATE]
    record = recorder.round(1)
    assert (record.sites_fit, record.failures) == (2, 4)
    assert any("shape" in r for r in record.rejected) and any("NaN" in r for r in record.rejected)
    assert any("dtype" in r for r in record.rejected) and any(
        "expected 3 arrays" in r for r in record.rejected
    )
    assert "rejected an update" in caplog.text


def test_a_round_with_no_valid_update_fails_loudly(tmp_path: Path) -> None:
    strategy, _ = _strategy(tmp_path)
    poisoned = _good(1.0)
    poisoned[0][0, 0] = np.inf
    with pytest.raises(TrainingError, match="no valid update"):
        strategy.aggregate_fit(1, [_fit(poisoned)], [RuntimeError("site crashed")])


def test_evaluation_pools_counts_and_ends_the_round(tmp_path: Path) -> None:
    ends: list[int] = []
    config = RunConfig(min_fit_sites=1)
    strategy = build_strategy(
        config, TEMPLATE, RunRecorder(tmp_path), on_round_end=lambda r, a, s: ends.append(r)
    )
    y_a, y_b = np.array([0, 0, 1, 1]), np.array([0, 0, 0])  # site b has no positive case at all
    scores_a = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    scores_b = np.array([[0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    results = [
        (
            None,
            EvaluateRes(
                OK,
                0.5,
                4,
                {"site-id": "a", **ClassificationCounts.from_predictions(y_a, scores_a).to_scalars()},
            ),
        ),
        (
            None,
            EvaluateRes(
                OK,
                0.2,
                3,
                {"site-id": "b", **ClassificationCounts.from_predictions(y_b, scores_b).to_scalars()},
            ),
        ),
    ]
    strategy.aggregate_evaluate(1, results, [])
    (record,) = read_round_records(tmp_path)
    assert record.accuracy == pytest.approx(6 / 7)
    assert record.sensitivity == 1.0 and record.specificity == pytest.approx(4 / 5)
    assert record.auc == pytest.approx(1.0) and set(record.per_site) == {"a", "b"}
    assert ends == [1]


def test_fedprox_sends_mu_and_fedadam_state_round_trips(tmp_path: Path) -> None:
    prox, _ = _strategy(tmp_path, strategy="fedprox", proximal_mu=0.3)
    assert isinstance(prox, CheckedFedProx) and prox.proximal_mu == 0.3
    adam, _ = _strategy(tmp_path, strategy="fedadam", server_learning_rate=0.1)
    assert isinstance(adam, CheckedFedAdam)
    parameters, _ = adam.aggregate_fit(1, [_fit(_good(1.0))], [])
    moved = parameters_to_ndarrays(parameters)
    assert 0 < float(moved[0][0, 0]) <= 0.1 + 1e-6  # one Adam step of size about eta towards the mean
    assert moved[0].dtype == np.float32 and moved[2].dtype == np.int64
    state = adam.state_arrays()
    assert len(state) == 2 * len(TEMPLATE)
    fresh, _ = _strategy(tmp_path, strategy="fedadam", server_learning_rate=0.1)
    fresh.restore_state(state)
    assert all(np.array_equal(a, b) for a, b in zip(fresh.state_arrays(), state, strict=True))


def test_cast_like_restores_model_dtypes() -> None:
    cast = cast_like(TEMPLATE, [np.ones((2, 3)), np.ones(3), np.array(2.6)])
    assert [a.dtype for a in cast] == [np.float32, np.float32, np.int64] and int(cast[2]) == 3


@pytest.mark.parametrize("secure", [False, True])
def test_frozen_arrays_are_checked_and_kept_exact(tmp_path: Path, secure: bool) -> None:
    """The SVM's standardiser is the server's: a site may not change it, and SecAgg+ may not clip it."""
    template = [np.zeros((1, 2)), np.zeros(1), np.array([650.0, 3.5]), np.array([350.0, 0.5])]
    strategy = CheckedFedAvg(
        initial_arrays=template,
        recorder=RunRecorder(tmp_path),
        config=RunConfig(min_fit_sites=1, secure_aggregation=secure),
        frozen=(2, 3),
        min_fit_clients=1,
        min_available_clients=1,
    )
    trained = [np.ones((1, 2)), np.ones(1), template[2].copy(), template[3].copy()]
    tampered = [np.ones((1, 2)), np.ones(1), np.array([8.0, 3.5]), template[3].copy()]  # clipped at 8
    parameters, _ = strategy.aggregate_fit(1, [_fit(trained), _fit(tampered)], [])
    aggregated = parameters_to_ndarrays(parameters)
    np.testing.assert_array_equal(aggregated[2], template[2])
    np.testing.assert_array_equal(aggregated[0], 1.0)
    record = strategy.recorder.round(1)
    # Without SecAgg+ each update is seen: the tampered one is rejected. With it, only the aggregate is.
    assert record.failures == (0 if secure else 1)
