"""Reconciliation: each party's own signed account of every round, compared both ways."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.audit import AuditLog, VerifiedLog, read_verified_log, reconcile
from common.crypto import generate_signing_key
from common.errors import AuditError

SITES = ("site-a", "site-b", "site-c")
MODELS = {r: f"{r:02d}" * 32 for r in range(1, 4)}


def _federation(
    root: Path,
    *,
    server_lists: dict[int, tuple[str, ...]] | None = None,
    site_takes: dict[str, tuple[int, ...]] | None = None,
    site_refuses: dict[str, tuple[int, ...]] | None = None,
    site_model: dict[tuple[str, int], str] | None = None,
) -> tuple[list[Path], Path]:
    """Three rounds, all three sites in each unless told otherwise."""
    server_lists = server_lists or {r: SITES for r in MODELS}
    site_takes = site_takes or {s: tuple(MODELS) for s in SITES}
    site_paths = []
    for site in SITES:
        path = root / site / "audit.jsonl"
        with AuditLog.open(path, site, generate_signing_key(), role="site") as log:
            for r in site_takes.get(site, ()):
                model = (site_model or {}).get((site, r), MODELS[r])
                log.append(
                    "round.taken", run_id="run-1", round=r, model_sha256=model, examples=50, epsilon=0.4 * r
                )
            for r in (site_refuses or {}).get(site, ()):
                log.append("round.refused", run_id="run-1", round=r, reason="budget_exhausted")
        site_paths.append(path)
    server = root / "server" / "audit.jsonl"
    with AuditLog.open(server, "server", generate_signing_key(), role="server") as log:
        log.append("run.start", run_id="run-1", config_sha256="cc" * 32, sites=list(SITES))
        for r, participants in server_lists.items():
            log.append(
                "round.aggregated",
                run_id="run-1",
                round=r,
                model_sha256=MODELS[r],
                participants=list(participants),
            )
    return site_paths, server


def _read(paths: list[Path]) -> list[VerifiedLog]:
    return [read_verified_log(p) for p in paths]


def test_agreeing_logs_reconcile(tmp_path: Path) -> None:
    sites, server = _federation(tmp_path)
    result = reconcile(_read(sites), read_verified_log(server))
    assert result.ok and result.findings == ()
    assert (result.rounds_checked, result.participations_checked, result.sites) == (3, 9, SITES)


def test_a_site_claiming_a_round_it_was_not_in_is_flagged(tmp_path: Path) -> None:
    sites, server = _federation(tmp_path, server_lists={1: SITES, 2: ("site-a", "site-b"), 3: SITES})
    result = reconcile(_read(sites), read_verified_log(server))
    (finding,) = result.findings
    assert (finding.kind, finding.site, finding.run_id, finding.round) == (
        "unlisted-participation",
        "site-c",
        "run-1",
        2,
    )
    assert finding.site_ref is not None and "site-c/audit.jsonl:3 (seq 2)" in finding.site_ref
    assert finding.server_ref is not None and "server/audit.jsonl:4 (seq 3)" in finding.server_ref


def test_the_server_listing_a_site_that_never_sent_an_update_is_flagged(tmp_path: Path) -> None:
    sites, server = _federation(
        tmp_path, site_takes={"site-a": (1, 2, 3), "site-b": (1, 3), "site-c": (1, 2, 3)}
    )
    result = reconcile(_read(sites), read_verified_log(server))
    (finding,) = result.findings
    assert (finding.kind, finding.site, finding.round) == ("absent-participant", "site-b", 2)
    assert finding.site_ref is None and finding.server_ref is not None


def test_model_mismatch_refusal_and_unknown_rounds_are_flagged(tmp_path: Path) -> None:
    sites, server = _federation(
        tmp_path,
        server_lists={1: SITES, 2: SITES},
        site_takes={"site-a": (1, 2, 3), "site-b": (1, 2), "site-c": (1,)},
        site_refuses={"site-c": (2,)},
        site_model={("site-b", 2): "ee" * 32},
    )
    result = reconcile(_read(sites), read_verified_log(server))
    got = {(f.kind, f.site, f.round) for f in result.findings}
    assert got == {
        ("model-mismatch", "site-b", 2),
        ("refused-but-listed", "site-c", 2),
        ("unlisted-participation", "site-a", 3),  # the server's log has no round 3 at all
    }
    assert not result.ok


def test_sites_without_a_log_are_unchecked_not_different(tmp_path: Path) -> None:
    sites, server = _federation(tmp_path)
    result = reconcile(_read(sites[:1]), read_verified_log(server))
    assert result.ok and result.unchecked_sites == ("site-b", "site-c")


def test_a_log_failing_verification_is_reported_and_only_its_verified_part_used(tmp_path: Path) -> None:
    sites, server = _federation(tmp_path)
    lines = sites[0].read_bytes().split(b"\n")
    sites[0].write_bytes(b"\n".join(lines[:2] + lines[3:]))  # delete site-a's round 2 entry
    result = reconcile(_read(sites), read_verified_log(server))
    kinds = sorted((f.kind, f.site, f.round) for f in result.findings)
    assert kinds == [
        ("absent-participant", "site-a", 2),
        ("absent-participant", "site-a", 3),
        ("unverified-log", "site-a", None),
    ]


def test_roles_are_checked(tmp_path: Path) -> None:
    sites, server = _federation(tmp_path)
    with pytest.raises(AuditError, match="not the server's"):
        reconcile(_read(sites[1:]), read_verified_log(sites[0]))
    with pytest.raises(AuditError, match="not a site's"):
        reconcile(_read([server]), read_verified_log(server))
    with pytest.raises(AuditError, match="Two site logs"):
        reconcile(_read([sites[0], sites[0]]), read_verified_log(server))


def test_runs_the_server_log_never_mentions_are_unchecked_not_different(tmp_path: Path) -> None:
    """A site keeps one log for life, the server one per run directory: other runs are not differences,
    but a claimed round in a run the server's log does know still is."""
    key = generate_signing_key()
    site = tmp_path / "site-a" / "audit.jsonl"
    with AuditLog.open(site, "site-a", key, role="site") as log:
        log.append("round.taken", run_id="run-0", round=1, model_sha256="dd" * 32)  # an earlier run
        log.append("round.taken", run_id="run-1", round=1, model_sha256=MODELS[1])
    server = tmp_path / "server" / "audit.jsonl"
    with AuditLog.open(server, "server", generate_signing_key(), role="server") as log:
        log.append("run.start", run_id="run-1", config_sha256="cc" * 32)
        log.append(
            "round.aggregated", run_id="run-1", round=1, model_sha256=MODELS[1], participants=["site-a"]
        )
    result = reconcile(_read([site]), read_verified_log(server))
    assert result.ok and result.unchecked_runs == ("run-0",) and result.participations_checked == 1
    with AuditLog.open(site, "site-a", key, role="site") as log:
        log.append("round.taken", run_id="run-1", round=2, model_sha256=MODELS[2])
    result = reconcile(_read([site]), read_verified_log(server))
    assert [(f.kind, f.run_id, f.round) for f in result.findings] == [("unlisted-participation", "run-1", 2)]
