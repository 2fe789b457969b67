"""The ServerApp's audit trail: round, checkpoint and final entries, and the model card they back.

The end-to-end path (a real Flower run writing this log, reconciled with the sites' logs) is covered by
tests/simulations/test_demo.py; here the trail is driven round by round with real checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

from common.audit import read_verified_log
from common.audit.federation import MANIFEST_METRIC, SITE_ID_METRIC
from common.config import RunConfig
from common.crypto import load_verify_key
from common.model_card import check_card_against_log, load_model_card, model_sha256
from server.audit_trail import (
    AUDIT_LOG,
    AUDIT_PUBKEY,
    MODEL_CARD,
    ServerAuditTrail,
    fit_participants,
    load_or_create_audit_key,
    run_config_map,
)
from server.checkpoints import CheckpointStore
from server.run_records import RoundRecord

H = "ab" * 32


def _fitres(n: int, metrics: dict) -> FitRes:
    return FitRes(Status(Code.OK, "OK"), ndarrays_to_parameters([np.zeros(2)]), n, metrics)


def test_participants_are_the_ids_the_sites_replies_carry() -> None:
    results = [
        (
            SimpleNamespace(cid="11"),
            _fitres(40, {SITE_ID_METRIC: "site-b", "sample-epsilon": 0.7, MANIFEST_METRIC: H}),
        ),
        (SimpleNamespace(cid="12"), _fitres(30, {SITE_ID_METRIC: "site-a", "sample-epsilon": -1.0})),
        (SimpleNamespace(cid="13"), _fitres(20, {SITE_ID_METRIC: "1.2.840.99.1"})),  # not an id: not logged
    ]
    sites = fit_participants(results)
    assert list(sites)[:2] == ["site-a", "site-b"]
    assert sites["site-b"] == {"examples": 40, "epsilon": 0.7, "manifest_sha256": H}
    assert sites["site-a"] == {"examples": 30}  # -1: no DP, no finite epsilon
    (unknown,) = [s for s in sites if s.startswith("unidentified-")]
    assert "840" not in unknown


def test_the_config_in_the_log_leaves_out_paths(tmp_path: Path) -> None:
    config = RunConfig(site_dirs=(str(tmp_path / "MRN0044812"),), out_dir=str(tmp_path), model="svm")
    listed = run_config_map(config)
    assert listed["model"] == "svm" and listed["num-server-rounds"] == 3
    assert not {"site-dirs", "out-dir", "central-test-set"} & set(listed)
    assert all("/" not in str(v) for v in listed.values())


def test_rounds_checkpoints_and_the_card_chain_from_the_initial_to_the_final_model(tmp_path: Path) -> None:
    config = RunConfig(model="svm", image_size=16, num_server_rounds=3, out_dir=str(tmp_path))
    key = load_or_create_audit_key(tmp_path)
    assert load_or_create_audit_key(tmp_path) == key  # created once, then loaded
    models = [[np.full(3, float(r), dtype=np.float32)] for r in range(4)]
    trail = ServerAuditTrail(tmp_path, key, config, "flwr-run-9", model_sha256(models[0]))
    trail._append(
        "run.start", run_id="flwr-run-9", config_sha256=config.digest(), initial_model_sha256=trail.current
    )
    store = CheckpointStore.for_run(tmp_path)
    for r in (1, 2, 3):
        store.save(r, models[r], [], config_digest=config.training_digest())
        record = RoundRecord(round=r, accuracy=0.5 + r / 10, train_loss=1 / r)
        record.participants = {"site-a": {"examples": 10, "manifest_sha256": H}, "site-b": {"examples": 12}}
        trail.round_finished(r, models[r], record, store)
    card_path = trail.finish(models[3])
    assert card_path == tmp_path / MODEL_CARD

    verified = read_verified_log(tmp_path / AUDIT_LOG, pubkeys=[load_verify_key(tmp_path / AUDIT_PUBKEY)])
    assert verified.verification.ok and verified.verification.key_pinned
    events = [e.event for e in verified.entries]
    assert events == ["log.genesis", "run.start"] + ["round.aggregated", "checkpoint.saved"] * 3 + [
        "model.final",
        "run.end",
    ]
    rounds = [e.details for e in verified.entries if e.event == "round.aggregated"]
    # Each round starts from the model the previous one produced.
    assert [d["model_sha256"] for d in rounds] == [model_sha256(m) for m in models[:3]]
    assert [d["new_model_sha256"] for d in rounds] == [model_sha256(m) for m in models[1:]]
    assert rounds[0]["participants"] == ["site-a", "site-b"] and rounds[0]["examples"] == 22
    assert rounds[2]["metrics"]["accuracy"] == 0.8
    card = load_model_card(card_path, [key.verify_key])
    assert card.checkpoints == tuple((r, model_sha256(models[r])) for r in range(4))
    assert {s.site_id: s.manifest_sha256 for s in card.sites} == {"site-a": H, "site-b": None}
    assert {s.site_id: s.rounds for s in card.sites} == {"site-a": 3, "site-b": 3}
    final = verified.entries[-2].details
    assert final["card_sha256"] != H and final["model_sha256"] == card.model_sha256
    assert check_card_against_log(card, verified) == []


def test_a_failed_run_ends_failed_without_a_model_card(tmp_path: Path) -> None:
    config = RunConfig(model="svm", image_size=16, out_dir=str(tmp_path))
    trail = ServerAuditTrail(tmp_path, load_or_create_audit_key(tmp_path), config, "flwr-run-9", H)
    trail.round_finished(1, [np.zeros(3, dtype=np.float32)], RoundRecord(round=1, failures=1))
    trail.failed()
    entries = read_verified_log(tmp_path / AUDIT_LOG).entries
    assert [e.event for e in entries] == ["log.genesis", "round.aggregated", "run.end"]
    assert entries[1].details["failures"] == 1 and entries[1].details["participants"] == []
    assert entries[2].details == {"run_id": "flwr-run-9", "status": "failed", "rounds": 1}
    assert not (tmp_path / MODEL_CARD).exists()
