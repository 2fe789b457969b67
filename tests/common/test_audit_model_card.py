"""The model card: model hashing, building from the server's log, signing, tamper detection."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from common.audit import AuditLog, read_verified_log
from common.crypto import generate_signing_key
from common.errors import AuditError
from common.model_card import (
    ModelCard,
    SiteProvenance,
    card_from_server_log,
    check_card_against_log,
    load_model_card,
    model_sha256,
    sign_model_card,
    verify_model_card,
    write_model_card,
)

KEY = generate_signing_key()


def _h(n: int) -> str:
    return f"{n:02x}" * 32


def test_model_hash_depends_on_values_dtype_shape_and_order_only() -> None:
    a = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, dtype=np.float32)]
    base = model_sha256(a)
    assert model_sha256([x.copy() for x in a]) == base
    assert model_sha256([np.asfortranarray(a[0]), a[1]]) == base  # memory layout does not matter
    assert model_sha256([a[0].astype(">f4"), a[1]]) == base  # nor byte order
    assert model_sha256([a[0].reshape(3, 2), a[1]]) != base
    assert model_sha256([a[0].astype(np.float64), a[1]]) != base
    assert model_sha256(a[::-1]) != base
    b = [x.copy() for x in a]
    b[1][2] = np.nextafter(np.float32(1), np.float32(2))
    assert model_sha256(b) != base


def _server_log(path: Path) -> Path:
    with AuditLog.open(path, "server", KEY, role="server") as log:
        log.append(
            "run.start",
            run_id="run-1",
            config_sha256=_h(0xCC),
            config={"model": "svm", "num-server-rounds": 2},
            app_sha256=_h(0xAA),
            secagg=True,
            dp=True,
            initial_model_sha256=_h(0),
        )
        for r in (1, 2):
            log.append(
                "round.aggregated",
                run_id="run-1",
                round=r,
                model_sha256=_h(r - 1),
                new_model_sha256=_h(r),
                participants=["site-a", "site-b"],
                epsilon=0.7 * r,
                epsilons={"site-a": 0.5 * r, "site-b": 0.6 * r},
                metrics={"accuracy": 0.9 + 0.01 * r},
            )
            log.append("checkpoint.saved", run_id="run-1", round=r, model_sha256=_h(r))
        log.append("model.final", run_id="run-1", model_sha256=_h(2), rounds=2)
    return path


def test_card_from_the_server_log_round_trips_signed(tmp_path: Path) -> None:
    log = read_verified_log(_server_log(tmp_path / "server.jsonl"))
    card = card_from_server_log(log, "run-1", manifests={"site-a": _h(0x11)})
    assert card.checkpoints == ((0, _h(0)), (1, _h(1)), (2, _h(2)))
    assert card.rounds == 2 and card.secure_aggregation and card.dp and card.epsilon == pytest.approx(1.4)
    assert card.sites == (
        SiteProvenance("site-a", manifest_sha256=_h(0x11), epsilon=1.0, rounds=2),
        SiteProvenance("site-b", epsilon=1.2, rounds=2),
    )
    assert card.metrics == {"accuracy": pytest.approx(0.92)}
    assert check_card_against_log(card, log) == []
    path = tmp_path / "model_card.json"
    document = write_model_card(path, card, KEY, signer="server")
    assert load_model_card(path, [KEY.verify_key]) == card
    assert verify_model_card(json.loads(path.read_text())) == card
    body = document["card"]
    assert body["privacy"]["epsilon_per_site"] == {"site-a": 1.0, "site-b": 1.2}
    assert body["initial_model_sha256"] == _h(0) and body["model_sha256"] == _h(2)


def test_tampered_or_foreign_cards_are_refused(tmp_path: Path) -> None:
    card = card_from_server_log(read_verified_log(_server_log(tmp_path / "s.jsonl")), "run-1")
    document = sign_model_card(card, KEY, signer="server")
    edited = copy.deepcopy(document)
    edited["card"]["privacy"]["epsilon_federation"] = 0.1
    with pytest.raises(AuditError, match="altered"):
        verify_model_card(edited)
    rehashed = sign_model_card(ModelCard.from_dict(edited["card"]), KEY, signer="server")
    rehashed["signature"]["sig"] = document["signature"]["sig"]
    with pytest.raises(AuditError, match="signature does not verify"):
        verify_model_card(rehashed)
    other = sign_model_card(card, generate_signing_key(), signer="server")
    assert verify_model_card(other) == card  # self-consistent...
    with pytest.raises(AuditError, match="not a pinned key"):
        verify_model_card(other, [KEY.verify_key])  # ...but not by the server's key
    with pytest.raises(AuditError, match="malformed"):
        verify_model_card({"card": document["card"]})


def test_card_disagreeing_with_the_log_is_reported(tmp_path: Path) -> None:
    log = read_verified_log(_server_log(tmp_path / "s.jsonl"))
    card = card_from_server_log(log, "run-1")
    forged = ModelCard.from_dict(
        {
            **card.to_dict(),
            "checkpoints": [
                {"round": 0, "sha256": _h(0)},
                {"round": 1, "sha256": _h(9)},
                {"round": 2, "sha256": _h(2)},
            ],
        }
    )
    assert check_card_against_log(forged, log) == [
        "checkpoint of round 1 differs from the log (or was not logged)"
    ]
    fewer = ModelCard.from_dict({**card.to_dict(), "sites": [{"site_id": "site-a"}]})
    assert check_card_against_log(fewer, log) == ["the card's sites differ from the participants in the log"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"checkpoints": ((0, _h(0)), (1, _h(5)))}, "must end with the final model"),
        ({"checkpoints": ((1, _h(0)), (2, _h(2)))}, "start at round 0"),
        ({"run_id": "Run of DOE^JOHN"}, "run_id must be a pseudonymous token"),
        ({"config": {"note": "Patient John Doe"}}, "config must be"),
        ({"sites": (SiteProvenance("site-a"), SiteProvenance("site-a"))}, "twice"),
    ],
)
def test_card_fields_are_validated(change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "run_id": "run-1",
        "model_sha256": _h(2),
        "checkpoints": ((0, _h(0)), (2, _h(2))),
        "sites": (SiteProvenance("site-a"),),
        "config_sha256": _h(0xCC),
        "secure_aggregation": False,
        "dp": False,
    }
    with pytest.raises(AuditError, match=message):
        ModelCard(**{**fields, **change})  # type: ignore[arg-type]


def test_a_card_written_before_model_final_carries_the_final_hash(tmp_path: Path) -> None:
    """The server writes the card first, then model.final with the card's hash: both must agree."""
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, "server", KEY, role="server") as log:
        log.append("run.start", run_id="run-1", config_sha256=_h(0xCC), dp=True, initial_model_sha256=_h(0))
        log.append("round.aggregated", run_id="run-1", round=1, model_sha256=_h(0), participants=["site-a"])
    verified = read_verified_log(path)
    with pytest.raises(AuditError, match="no complete run"):
        card_from_server_log(verified, "run-1")
    card = card_from_server_log(verified, "run-1", final_model_sha256=_h(9), rounds=1, delta=1e-5)
    assert card.checkpoints == ((0, _h(0)), (1, _h(9))) and card.delta == 1e-5
    document = write_model_card(tmp_path / "card.json", card, KEY, signer="server")
    with AuditLog.open(path, "server", KEY, role="server") as log:
        log.append(
            "model.final",
            run_id="run-1",
            model_sha256=_h(9),
            card_sha256=document["signature"]["card_sha256"],
        )
    assert (
        check_card_against_log(
            load_model_card(tmp_path / "card.json", [KEY.verify_key]), read_verified_log(path)
        )
        == []
    )
