"""A dishonest coordinator against the epsilon ledger, through the real ClientApp (all its mods).

Each attack drives ``client.client_app.app`` in this process with training messages built the way the
ServerApp builds them (message id set as the SuperLink sets it), on a real sealed store:

* round-number replay: the server sends ``server-round = 1`` every time (the ledger used to merge those
  entries: 40 rounds trained on a budget that honest numbering exhausted after 4);
* exact re-delivery: the same message again gets the same reply, never a second training;
* an older ledger restored from a backup: the site stops; a site made to go on is caught by
  ``reconcile``.

The spend is checked against Google's dp-accounting, computed from what actually happened (the rounds
that trained, and the mechanism derived here from the fixture's own patients), never the ledger's code.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.task_identity import TaskIdentity

import client.site_audit
from client.epsilon_ledger import REPLIES_KEPT, EpsilonLedger
from client.policy import SitePolicy, refusals_file
from client.site import SiteDir
from client.site_audit import audit_log_file
from client.site_init import init_site, load_site_key
from client.store import Record, StoreWriter
from common.audit import AuditLog, read_verified_log, reconcile
from common.audit.federation import run_token, site_actor
from common.config import RunConfig
from common.crypto import generate_signing_key
from common.errors import TrainingError
from common.model_card import model_sha256
from common.models import model_from_config

Reference = Callable[[list[tuple[float, float, int]], float], float]
PATIENTS = 30
BATCH = 8  # patients per step: q = 1 / ceil(30 / 8) = 1/4, four steps a round
POLICY = SitePolicy(require_secure_aggregation=False, max_epsilon=5.0)
CONFIG = RunConfig(
    model="svm",
    image_size=8,
    secure_aggregation=False,
    min_fit_sites=3,
    sample_dp=True,
    sample_dp_noise=2.0,
    batch_size=BATCH,
    learning_rate=0.01,
)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages outside a Flower process need the task identity Flower sets in its own processes."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _site(root: Path, policy: SitePolicy = POLICY) -> SiteDir:
    """30 patients with 1 to 3 records each (a patient's records share their label)."""
    site = init_site(root, root.name, policy=policy)
    rng = np.random.default_rng(0)
    writer = StoreWriter(site.store_dir, load_site_key(site), image_size=8, split_fractions=(1.0, 0.0, 0.0))
    for patient in range(PATIENTS):
        label = patient % 2
        for slice_index in range(1 + patient % 3):
            pixels = rng.normal(0.4 + 0.2 * label, 0.1, (8, 8)).astype(np.float32)
            writer.add(
                Record(pixels=pixels, label=label, patient=f"p{patient}", study=f"s{patient}-{slice_index}")
            )
    writer.commit()
    return site


def _context(site: SiteDir, config: RunConfig = CONFIG) -> Context:
    """One node's context, kept across messages as Flower keeps it for a run."""
    return Context(
        run_id=7,
        node_id=1,
        node_config={"site-dir": str(site.root)},
        state=RecordDict(),
        run_config=config.to_flower(),  # type: ignore[arg-type]
    )


def _fit(server_round: int, config: RunConfig = CONFIG) -> Message:
    parameters = ndarrays_to_parameters(model_from_config(config).get_arrays())
    content = compat.fitins_to_recorddict(FitIns(parameters, {"server-round": server_round}), True)
    message = Message(content=content, dst_node_id=1, message_type="train")
    message.metadata.__dict__["_message_id"] = message.object_id  # as the SuperLink sets it
    return message


def _deliver(site: SiteDir, context: Context, message: Message) -> Message:
    from client.client_app import app

    return app(message, context)


def _train_until_refused(site: SiteDir, round_number: Callable[[int], int], limit: int = 40) -> int:
    """Send training messages until the site refuses; the number it trained."""
    context = _context(site)
    for index in range(limit):
        reply = _deliver(site, context, _fit(round_number(index)))
        if reply.has_error():
            assert reply.error.reason == "fedscan-refusal:budget-exhausted"
            return index
    return limit


def test_round_number_replay_spends_no_more_than_honest_numbering(
    tmp_path: Path, reference_epsilon: Reference
) -> None:
    honest = _site(tmp_path / "honest")
    replayed = _site(tmp_path / "replayed")
    trained_honest = _train_until_refused(honest, lambda i: i + 1)
    trained_replayed = _train_until_refused(replayed, lambda i: 1)  # server-round = 1, forever
    assert trained_honest == trained_replayed and 1 <= trained_honest < 40

    # What happened, accounted independently: q and steps from the fixture's 30 patients.
    batches = math.ceil(PATIENTS / BATCH)
    spent = reference_epsilon([(1 / batches, 2.0, batches * trained_replayed)], 1e-5)
    one_more = reference_epsilon([(1 / batches, 2.0, batches * (trained_replayed + 1))], 1e-5)
    assert spent <= POLICY.max_epsilon < one_more  # refused exactly when the next round would overspend
    for site in (honest, replayed):
        ledger = EpsilonLedger(site).spent(load_site_key(site), 1e-5)
        assert abs(ledger - spent) <= 0.01 * spent, (ledger, spent)
    entries = EpsilonLedger(replayed).entries(load_site_key(replayed))
    assert [e.server_round for e in entries] == [1] * trained_replayed  # recorded, keyed by nothing
    assert [e.seq for e in entries] == list(range(1, trained_replayed + 1))
    refusal = json.loads(refusals_file(replayed).read_text().splitlines()[-1])
    assert refusal["code"] == "budget-exhausted" and "patient-level" in refusal["reason"]


def test_an_exact_redelivery_gets_the_same_reply_and_is_never_trained_twice(tmp_path: Path) -> None:
    site = _site(tmp_path / "hospital", SitePolicy(require_secure_aggregation=False))
    context = _context(site)
    message = _fit(1)
    first = _deliver(site, context, message)
    again = _deliver(site, context, message)
    sent = [
        parameters_to_ndarrays(compat.recorddict_to_fitres(r.content, False).parameters)
        for r in (first, again)
    ]
    # DP-SGD draws its noise from the OS: a second training could not give the same arrays.
    assert all(np.array_equal(a, b) for a, b in zip(*sent, strict=True))
    fresh = _deliver(site, context, _fit(1))  # the same round number, a new message: a new training
    new = parameters_to_ndarrays(compat.recorddict_to_fitres(fresh.content, False).parameters)
    assert not np.array_equal(new[0], sent[0][0])
    entries = EpsilonLedger(site).entries(load_site_key(site))
    assert [(e.seq, e.state) for e in entries] == [(1, "sent"), (2, "sent")]
    taken = [line for line in audit_log_file(site).read_text().splitlines() if '"round.taken"' in line]
    assert len(taken) == 2  # the re-delivery is not a round taken

    for index in range(REPLIES_KEPT):  # the first reply ages out of the kept window
        assert not _deliver(site, context, _fit(2 + index)).has_error()
    late = _deliver(site, context, message)
    assert late.error.reason == "fedscan-refusal:replayed-message"
    assert len(EpsilonLedger(site).entries(load_site_key(site))) == 2 + REPLIES_KEPT


def test_an_older_ledger_stops_the_site_and_reconcile_reports_one_that_went_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path / "hospital", SitePolicy(require_secure_aggregation=False))
    context = _context(site)
    ledger = EpsilonLedger(site)
    model = model_sha256(model_from_config(CONFIG).get_arrays())
    assert not _deliver(site, context, _fit(1)).has_error()
    backup = tmp_path / "ledger-backup.fseal"
    shutil.copy(ledger.path, backup)
    for server_round in (2, 3):
        assert not _deliver(site, context, _fit(server_round)).has_error()

    def server_log(rounds: int) -> Path:
        path = tmp_path / f"server-{rounds}" / "audit.jsonl"
        with AuditLog.open(path, "server", generate_signing_key(), role="server") as log:
            log.append(
                "run.start", run_id=run_token(7), config_sha256="cc" * 32, sites=[site_actor("hospital")]
            )
            for r in range(1, rounds + 1):
                log.append(
                    "round.aggregated",
                    run_id=run_token(7),
                    round=r,
                    model_sha256=model,
                    participants=[site_actor("hospital")],
                )
        return path

    honest = reconcile([read_verified_log(audit_log_file(site))], read_verified_log(server_log(3)))
    assert honest.ok  # positive control: three rounds, counters 1, 2, 3

    shutil.copy(backup, ledger.path)  # the ledger of after round 1 comes back from a backup
    with pytest.raises(TrainingError, match="older copy"):
        _deliver(site, context, _fit(4))
    assert ledger.head(load_site_key(site))[0] == 1  # nothing booked on the old ledger

    # A site whose own check is defeated (say its live log was just rotated) trains on the old ledger:
    monkeypatch.setattr(client.site_audit, "last_ledger_seq", lambda _site: 0)
    assert not _deliver(site, context, _fit(4)).has_error()
    result = reconcile([read_verified_log(audit_log_file(site))], read_verified_log(server_log(4)))
    (finding,) = result.findings
    assert (finding.kind, finding.round) == ("ledger-rollback", 4)
    assert "from 3" in finding.detail and "back to 2" in finding.detail
