"""No PHI in the audit trail: the registry refuses PHI-shaped values, and a scan of logs, report and model
card built from a cohort-like fixture finds none of the planted identifiers.

The planted values are what a PACS export carries (compare simulations' synthetic cohorts): names in
DICOM PN form, IDs, record and accession numbers, dates, UIDs, paths, institutions, free text.
"""

from __future__ import annotations

import base64
import re
import zlib
from pathlib import Path
from typing import Any

import pytest

from common.audit import EVENTS, AuditLog, check_details, read_verified_log, reconcile
from common.audit.events import LIBRARY_EVENTS
from common.crypto import generate_signing_key
from common.errors import AuditError
from common.model_card import card_from_server_log, sign_model_card

PLANTED_PHI = [
    "DOE^JOHN",
    "Smith^Anna^Marie",
    "John Doe",
    "4481234",
    "MRN-00448123",
    "mrn0044812",
    "acc1234567",
    "19710203",
    "1971-02-03",
    "20240117113045",
    "1.2.840.113619.2.55.3.604688119.969.1234567890.123",
    "/data/pacs/DOE_JOHN/IM0001.dcm",
    "St Mary's Hospital",
    "555-0134-2234",
    "john.doe@example.org",
    "054Y",
    "Patient complains of chest pain; lesion left lower lobe",
]
H = "ab" * 32


def _user_events() -> list[str]:
    return sorted(set(EVENTS) - LIBRARY_EVENTS)


def _valid_details(event: str) -> dict[str, Any]:
    samples = {
        "count": 3,
        "number": 0.5,
        "epsilon": 1.0,
        "flag": True,
        "sha256": H,
        "key_id": "0123456789abcdef",
        "token": "site-a",
        "tokens": ["site-a"],
        "counts": {"ok": 1},
        "metrics": {"accuracy": 0.9},
        "epsilons": {"site-a": 1.0},
        "config": {"model": "cnn"},
        "role": "site",
        "refusal_reason": "other",
        "bundle_refusal": "unsigned",
        "public_key": "g4Cgnc3aW3KfjO+4AVBsPzFDKRVNBVAQXzCEGW7P+XA=",
        "sha256s": {"site-a": H},
        "run_status": "completed",
    }
    return {key: samples[kind] for key, kind in EVENTS[event].required.items()}


@pytest.mark.parametrize("event", _user_events())
def test_every_detail_refuses_every_planted_value(event: str) -> None:
    spec = EVENTS[event]
    check_details(event, _valid_details(event))
    for key in {**spec.required, **spec.optional}:
        for phi in PLANTED_PHI:
            shapes: list[Any] = [phi, [phi], {phi: 1}, {"k": phi}]
            for value in shapes:
                details = {**_valid_details(event), key: value}
                with pytest.raises(AuditError) as refused:
                    check_details(event, details)
                assert phi not in str(refused.value), "an error message repeated the refused value"


@pytest.mark.parametrize("phi", PLANTED_PHI)
def test_unknown_detail_keys_are_refused(phi: str) -> None:
    base = {"records": 1, "rejected": 0, "manifest_sha256": H}
    with pytest.raises(AuditError, match="does not allow a detail named 'patient_name'"):
        check_details("ingest.run", {**base, "patient_name": phi})
    with pytest.raises(AuditError, match=r"does not allow a detail named \(name not shown\)") as refused:
        check_details("ingest.run", {**base, phi: 1})  # PHI smuggled in as a key name
    assert phi not in str(refused.value)


def _fixture_logs(root: Path) -> tuple[list[Path], Path]:
    """A small federation whose sites ingested a cohort full of PHI, logging only what the registry allows."""
    sites = []
    for n, site in enumerate(("site-a", "site-b")):
        path = root / site / "audit.jsonl"
        with AuditLog.open(path, site, generate_signing_key(), role="site") as log:
            log.append("site.init", site_id=site, policy_sha256=H)
            log.append(
                "deid.run",
                files_in=40,
                files_out=38,
                files_rejected=2,
                profile="basic",
                options=["retain-safe-private", "clean-descriptors"],
                rejected={"not_dicom": 1, "burned_in_text": 1},
                burned_in_flagged=3,
            )
            for phi in PLANTED_PHI:  # a careless caller tries to log identifiers: every attempt refused
                with pytest.raises(AuditError):
                    log.append(
                        "ingest.run", records=38, rejected=0, manifest_sha256=H, rejected_reasons={phi: 1}
                    )
            log.append("ingest.run", records=38, rejected=2, manifest_sha256=H, labels={"0": 20, "1": 18})
            for r in (1, 2, 3):
                log.append(
                    "round.taken",
                    run_id="run-1",
                    round=r,
                    model_sha256=f"{r:02d}" * 32,
                    examples=38,
                    epsilon=0.3 * r + n,
                )
        sites.append(path)
    server = root / "server" / "audit.jsonl"
    with AuditLog.open(server, "server", generate_signing_key(), role="server") as log:
        log.append(
            "run.start",
            run_id="run-1",
            config_sha256=H,
            config={"model": "cnn", "num-server-rounds": 3, "site-dirs": ""},
            secagg=True,
            dp=True,
            initial_model_sha256="00" * 32,
        )
        for r in (1, 2, 3):
            log.append(
                "round.aggregated",
                run_id="run-1",
                round=r,
                model_sha256=f"{r:02d}" * 32,
                new_model_sha256=f"{r + 1:02d}" * 32,
                participants=["site-a", "site-b"],
                epsilon=0.5 * r,
                epsilons={"site-a": 0.3 * r, "site-b": 0.3 * r + 1},
                metrics={"accuracy": 0.5 + 0.1 * r},
            )
            log.append("checkpoint.saved", run_id="run-1", round=r, model_sha256=f"{r + 1:02d}" * 32)
        log.append("model.final", run_id="run-1", model_sha256="04" * 32, rounds=3)
    return sites, server


def _scan(text: str) -> list[str]:
    lowered = text.lower()
    return [phi for phi in PLANTED_PHI if phi.lower() in lowered]


def _png_text_chunks(png: bytes) -> str:
    """The text metadata of a PNG (tEXt, zTXt, iTXt): the only place a PNG carries readable strings."""
    out, offset = [], 8
    while offset < len(png):
        length = int.from_bytes(png[offset : offset + 4], "big")
        kind, data = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        if kind == b"tEXt":
            out.append(data.decode("latin-1"))
        elif kind == b"zTXt":
            out.append(zlib.decompress(data[data.index(b"\0") + 2 :]).decode("latin-1"))
        elif kind == b"iTXt":
            out.append(data.decode("utf-8", "replace"))
        offset += 12 + length
    return "\n".join(out)


def test_logs_report_and_model_card_hold_none_of_the_planted_phi(tmp_path: Path) -> None:
    from common.audit.report import render_report

    sites, server = _fixture_logs(tmp_path)
    logs = [read_verified_log(p) for p in [*sites, server]]
    assert all(log.verification.ok for log in logs)
    for path in tmp_path.rglob("*.jsonl"):
        assert _scan(path.read_text()) == [], path
    html = render_report(logs, reconciliation=reconcile(logs[:2], logs[2]))
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) == 4
    assert _scan(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)) == []
    for image in images:
        assert _scan(_png_text_chunks(base64.b64decode(image))) == []
    card = sign_model_card(card_from_server_log(logs[2], "run-1"), generate_signing_key(), signer="server")
    assert _scan(str(card)) == []
