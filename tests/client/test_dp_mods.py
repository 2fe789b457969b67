"""The privacy mods around local training: SecAgg+'s range guard and client-level clipping and noise."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.task_identity import TaskIdentity

from client.dp_mods import client_dp_mod, secagg_range_guard
from client.ledger_mod import LEDGER_STATE_KEY
from common.config import RunConfig
from common.errors import TrainingError
from common.models import model_from_config

SVM = RunConfig(model="svm", image_size=4)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _context(config: RunConfig, state: dict | None = None, booking: dict | None = None) -> Context:
    records = RecordDict()
    if state is not None:
        records.config_records[RECORD_KEY_STATE] = ConfigRecord(state)
    if booking is not None:
        records.config_records[LEDGER_STATE_KEY] = ConfigRecord(booking)
    return Context(run_id=7, node_id=1, node_config={}, state=records, run_config=config.to_flower())  # type: ignore[arg-type]


def _fit_message(arrays: list[np.ndarray]) -> Message:
    content = compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters(arrays), {"server-round": 1}), True)
    return Message(content=content, dst_node_id=1, message_type="train")


def _replying(arrays: list[np.ndarray], num_examples: int):  # type: ignore[no-untyped-def]
    def client(msg: Message, context: Context) -> Message:
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), num_examples, {})
        return Message(compat.fitres_to_recorddict(res, False), reply_to=msg)

    return client


def test_the_range_guard_refuses_what_secagg_would_clip_but_ignores_frozen_arrays() -> None:
    start = model_from_config(SVM).get_arrays()
    state = {"clipping_range": 8.0, "max_weight": 100.0, "threshold": 2}
    fits = [np.full((1, 16), 6.0), np.zeros(1), np.full(16, 650.0), np.ones(16)]  # mean 650: frozen
    reply = secagg_range_guard(_fit_message(start), _context(SVM, state), _replying(fits, 100))
    assert not reply.has_error()
    too_large = [np.full((1, 16), 10.0), *fits[1:]]
    with pytest.raises(TrainingError, match="fedscan-error: .* exceeds the SecAgg\\+ clipping range"):
        secagg_range_guard(_fit_message(start), _context(SVM, state), _replying(too_large, 100))
    with pytest.raises(TrainingError, match="max_weight"):
        secagg_range_guard(_fit_message(start), _context(SVM, state), _replying(fits, 101))


@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_client_dp_clips_the_update_weighs_one_and_adds_noise_only_when_distributed(mode: str) -> None:
    config = RunConfig(model="svm", image_size=4, client_dp=mode, client_dp_clip=0.5, client_dp_noise=2.0)
    start = model_from_config(config).get_arrays()
    trained = [a.copy() for a in start]
    trained[0] = trained[0] + 3.0  # update norm 12, far above the clip
    # The server's SecAgg+ threshold says 100; the site's own assumption (booked by the ledger mod) is 4.
    context = _context(config, {"threshold": 100}, {"honest-sites": 4})
    reply = client_dp_mod(_fit_message(start), context, _replying(trained, 57))
    fitres = compat.recorddict_to_fitres(reply.content, False)
    sent = parameters_to_ndarrays(fitres.parameters)
    assert fitres.num_examples == 1
    update = np.concatenate([(s - a).ravel() for s, a in zip(sent[:2], start[:2], strict=True)])
    np.testing.assert_array_equal(sent[2], start[2])  # frozen arrays: no noise, no change
    np.testing.assert_array_equal(sent[3], start[3])
    if mode == "central":
        assert np.linalg.norm(update) == pytest.approx(0.5)  # clipped, nothing added (the server adds noise)
    else:
        # each of 17 coordinates gets N(0, (2.0 * 0.5 / sqrt(4))^2), not the server's sqrt(100)
        assert np.linalg.norm(update) > 0.5 and np.std(update) == pytest.approx(0.5, rel=0.6)
