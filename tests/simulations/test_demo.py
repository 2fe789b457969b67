"""`fedscan demo` end to end, as a user runs it: learns, leaves no process and no plaintext behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from client.site import SiteDir
from client.site_init import load_site_key
from client.store import load_split
from simulations.cohort import generate_cohort
from simulations.demo import demo_cohort_spec

pytestmark = pytest.mark.slow

STRAY = ("raylet", "gcs_server", "ray::", "flower-superlink", "flower-supernode", "flwr-simulation")


def _processes_tagged(tag: str) -> set[tuple[int, str]]:
    """Flower/Ray processes whose environment carries ``tag``: the ones this test's demo started.

    Other runs on the same machine (a developer's benchmark, another test session) have other
    environments, so they are neither counted here nor touched.
    """
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if tag.encode() in environ and any(marker in args for marker in STRAY):
            found.add((int(proc.name), args[:80]))
    return found


def _files_under(root: Path, exclude: Path | None = None) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and (exclude is None or exclude not in p.parents)
    ]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    workdir = tmp_path_factory.mktemp("demo") / "work"
    # The demo gets a temp folder of its own, so every temporary file it, Flower or Ray writes can be
    # searched without confusing it with other tests' files (short: Ray puts sockets under it).
    temp_root = Path(tempfile.mkdtemp(prefix="fsd-"))
    tag = f"FEDSCAN_TEST_RUN={uuid.uuid4().hex}"
    started = time.time()
    env = dict(os.environ)
    env["FEDSCAN_TEST_RUN"] = tag.split("=", 1)[1]
    env["TMPDIR"] = str(temp_root)
    for key in ("FLWR_TELEMETRY_ENABLED", "FLWR_DISABLE_UPDATE_CHECK"):
        env.pop(key, None)  # the demo must switch these off itself
    result = subprocess.run(
        [sys.executable, "-m", "common.cli", "demo", "--workdir", str(workdir), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    yield {
        "workdir": workdir,
        "summary": json.loads(result.stdout),
        "stderr": result.stderr,
        "tag": tag,
        "started": started,
        "temp_root": temp_root,
    }
    shutil.rmtree(temp_root, ignore_errors=True)


def test_demo_learns_above_chance(demo_run: dict) -> None:
    summary = demo_run["summary"]
    assert len(summary["rounds"]) == 3
    assert all(r["failures"] == 0 for r in summary["rounds"])
    assert summary["final_accuracy"] >= summary["chance_accuracy"] + 0.1, summary


def test_demo_leaves_no_process_behind(demo_run: dict) -> None:
    deadline = time.time() + 20
    while True:
        new = _processes_tagged(demo_run["tag"])
        if not new or time.time() > deadline:
            break
        time.sleep(1)
    assert not new, f"processes left running after the demo: {new}"


def test_demo_writes_no_plaintext_pixels_or_phi(demo_run: dict) -> None:
    workdir: Path = demo_run["workdir"]
    exports = workdir / "pacs-exports"  # the synthetic PACS export: plaintext by definition
    # Needles: byte windows of every decrypted record (what the store protects) ...
    needles: list[bytes] = []
    for site_root in sorted((workdir / "sites").iterdir()):
        site = SiteDir(site_root)
        for split in ("train", "test"):
            data = load_split(site.store_dir, load_site_key(site), split)
            for image in data.x[:: max(1, len(data.x) // 20)]:
                row = np.ascontiguousarray(image[image.shape[0] // 2], dtype=np.float32).tobytes()
                needles.append(row[32:96])
    assert needles
    # ... and the PHI planted in the synthetic headers.
    regenerated = generate_cohort(workdir.parent / "phi-reference", demo_cohort_spec())
    # Sites write UTF-8 or Latin-1 (ISO_IR 192 / ISO_IR 100): look for both spellings of each value.
    values = {v for c in regenerated for v in c.phi_values if len(v) >= 6}
    phi = sorted({v.encode(enc, "ignore") for v in values for enc in ("utf-8", "latin-1")})
    assert phi
    files = _files_under(workdir, exclude=exports)
    # Everything written to the demo's temp folder (Ray and Flower scratch, app manifests, spills) ...
    scratch = _files_under(demo_run["temp_root"])
    assert scratch, "the demo wrote nothing to its temp folder: did Ray ignore TMPDIR?"
    files += scratch
    # ... and Ray's default folder, should anything ignore TMPDIR.
    default_ray = Path("/tmp/ray")
    if default_ray.exists():
        files += [p for p in _files_under(default_ray) if p.stat().st_mtime >= demo_run["started"]]
    leaks = []
    for path in files:
        if path.stat().st_size > 64 * 1024 * 1024:
            continue
        blob = path.read_bytes()
        leaks += [f"{path}: record bytes" for n in needles if n in blob][:1]
        leaks += [f"{path}: PHI {v[:4]!r}..." for v in phi if v in blob][:1]
    assert not leaks, "\n".join(leaks[:20])


# -- the audit evidence the demo leaves (issue #9) -----------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "common.cli", *args], capture_output=True, text=True, timeout=120
    )


def _log_entries(path: Path) -> list:  # type: ignore[type-arg]
    from common.audit import read_verified_log

    verified = read_verified_log(path)
    assert verified.verification.ok, verified.verification.summary()
    return list(verified.entries)


def test_demo_audit_logs_verify_reconcile_and_back_the_model_card(demo_run: dict, tmp_path: Path) -> None:
    from common.audit import read_verified_log
    from common.crypto import load_verify_key
    from common.model_card import check_card_against_log, load_model_card, model_sha256

    audit = demo_run["summary"]["audit"]
    assert audit["logs_verified"] and audit["reconciled"] and audit["card_problems"] == []
    site_logs = [Path(p) for p in audit["site_logs"]]
    server_log = Path(audit["server_log"])
    actors = [p.parent.parent.name for p in site_logs] + ["server"]
    pubkeys = [f"{a}={p.parent / 'audit.pub'}" for a, p in zip(actors, (*site_logs, server_log), strict=True)]
    pins = [arg for key in pubkeys for arg in ("--pubkey", key)]
    verify = _cli("audit", "verify", *map(str, site_logs), str(server_log), *pins, "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert all(log["key_pinned"] for log in json.loads(verify.stdout)["logs"])
    reconcile = _cli("audit", "reconcile", *map(str, site_logs), str(server_log), *pins)
    assert reconcile.returncode == 0 and "9 participation(s)" in reconcile.stdout, reconcile.stdout

    # The server's account matches the run's own records: three rounds, every site, the final model.
    server = _log_entries(server_log)
    rounds = [e.details for e in server if e.event == "round.aggregated"]
    site_ids = sorted(p.parent.parent.name for p in site_logs)
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["participants"] == site_ids and r["secagg"] for r in rounds)
    run_dir = Path(demo_run["summary"]["workdir"]) / "run"
    with np.load(run_dir / "final_model.npz") as npz:
        final = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    assert rounds[-1]["new_model_sha256"] == model_sha256(final)
    card = load_model_card(Path(audit["model_card"]), [load_verify_key(server_log.parent / "audit.pub")])
    assert card.model_sha256 == model_sha256(final) and card.secure_aggregation and card.rounds == 3
    assert check_card_against_log(card, read_verified_log(server_log)) == []
    # Each site's own account: its ingest's manifest is what the card lists; every round under SecAgg+
    # with the hash of its plain update (taken inside the SecAgg+ mod, before masking).
    manifests = {s.site_id: s.manifest_sha256 for s in card.sites}
    for log in site_logs:
        entries = _log_entries(log)
        actor = entries[0].actor
        ingest = next(e.details for e in entries if e.event == "ingest.run")
        assert manifests[actor] == ingest["manifest_sha256"]
        taken = [e.details for e in entries if e.event == "round.taken"]
        assert [t["round"] for t in taken] == [1, 2, 3]
        assert all(t["secagg"] and len(t["update_sha256"]) == 64 and t["examples"] > 0 for t in taken)
        assert [t["model_sha256"] for t in taken] == [r["model_sha256"] for r in rounds]

    # An edited copy of one site's log: the verifier names the entry, reconciliation the missing round.
    edited = tmp_path / site_logs[1].parent.parent.name / "audit.jsonl"
    edited.parent.mkdir()
    lines = site_logs[1].read_bytes().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if b'"round":2' in line and b"round.taken" in line)
    edited.write_bytes(b"".join(lines[:cut] + lines[cut + 1 :]))
    bad = _cli("audit", "verify", str(edited), "--allow-unpinned")
    assert bad.returncode == 9 and f"audit.jsonl:{cut + 1}: entry seq {cut + 1}: sequence-gap" in bad.stdout
    others = [str(p) for p in site_logs if p != site_logs[1]]
    flagged = _cli("audit", "reconcile", *others, str(edited), str(server_log), "--allow-unpinned")
    assert flagged.returncode == 9
    assert f"absent-participant: site {site_ids[1]}" in flagged.stdout and "round 2" in flagged.stdout


@pytest.fixture(scope="module")
def planted_phi(demo_run: dict) -> list[str]:
    """The fake PHI the demo's synthetic hospitals planted in their DICOM headers (regenerated)."""
    cohorts = generate_cohort(demo_run["workdir"].parent / "phi-planted", demo_cohort_spec())
    return sorted({v for c in cohorts for v in c.phi_values if len(v) >= 4})


def test_demo_audit_logs_card_and_report_hold_no_phi(demo_run: dict, planted_phi: list[str]) -> None:
    import html
    import re

    audit = demo_run["summary"]["audit"]
    paths = [
        Path(p) for p in (*audit["site_logs"], audit["server_log"], audit["model_card"], audit["report"])
    ]
    assert planted_phi
    leaks = []
    for path in paths:
        raw = path.read_text(encoding="utf-8")
        # Decoded forms too: JSON escapes, HTML entities; embedded PNGs are left out of the text search.
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", raw)
        text = html.unescape(text.encode().decode("unicode_escape", "ignore"))
        lowered = text.lower()
        leaks += [f"{path.name}: {v[:4]!r}..." for v in planted_phi if v in raw or v.lower() in lowered]
    assert leaks == []


def test_demo_report_opens_in_chromium_with_its_figures(
    demo_run: dict, headless_chromium, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from matplotlib.image import imread

    url = Path(demo_run["summary"]["audit"]["report"]).as_uri()
    dom = headless_chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "every log verified and reconciled" in dom.stdout
    # Timeline, participation, metrics (the demo runs without DP: no epsilon curve to draw).
    assert dom.stdout.count('src="data:image/png;base64,') >= 3
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Refused to" in line]
    assert console == [], console
    shot = tmp_path / "report.png"
    result = headless_chromium("--window-size=1280,3600", f"--screenshot={shot}", url)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = imread(shot)[..., :3] * 255
    agree = (np.abs(image - np.array([46, 139, 87])).max(axis=-1) <= 12).mean()  # participation cells
    line = (np.abs(image - np.array([31, 119, 180])).max(axis=-1) <= 12).mean()  # metrics curves
    assert agree > 0.01 and line > 0.0001, (agree, line)


def test_verify_model_checks_signature_model_hash_and_log(demo_run: dict, tmp_path: Path) -> None:
    import shutil

    from common.crypto import generate_signing_key
    from common.model_card import load_model_card, write_model_card

    run_dir = Path(demo_run["summary"]["workdir"]) / "run"
    server_key = str(run_dir / "audit" / "audit.pub")
    ok = _cli("audit", "verify-model", str(run_dir), "--pubkey", server_key, "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    body = json.loads(ok.stdout)
    assert body["ok"] and len(body["model_sha256"]) == 64 and body["model_sha256"] != body["file_sha256"]
    # A copy of the run whose model changed by one value: the card no longer names it.
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    with np.load(copy / "final_model.npz") as npz:
        arrays = [npz[f"arr_{i}"].copy() for i in range(len(npz.files))]
    arrays[0].flat[0] += 1.0
    np.savez(copy / "final_model.npz", *arrays)
    changed = _cli("audit", "verify-model", str(copy), "--pubkey", server_key, "--json")
    assert changed.returncode == 9 and "the card names" in " ".join(json.loads(changed.stdout)["problems"])
    # The card re-signed with another key (the model file restored): refused for its signer.
    shutil.copy(run_dir / "final_model.npz", copy / "final_model.npz")
    card = load_model_card(copy / "model_card.json")
    write_model_card(copy / "model_card.json", card, generate_signing_key(), signer="server")
    forged = _cli("audit", "verify-model", str(copy), "--pubkey", server_key)
    assert forged.returncode == 9 and "not a pinned key" in forged.stdout
