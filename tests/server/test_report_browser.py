"""The audit report opens in headless Chromium: no console errors, and the figures are really drawn.

Chromium comes from Debian's ``chromium`` package (the ``chromium`` fixtures in tests/conftest.py install
it with apt-get if it is missing and we run as root; otherwise the test skips and says why). The page's
own Content-Security-Policy forbids everything but inline styles and ``data:`` images, so any external
resource would show up as a console error here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from common.audit import AuditLog
from common.crypto import generate_signing_key
from common.model_card import model_sha256

SITES = ("site-a", "site-b", "site-c")


def _federation(root: Path) -> list[Path]:
    """Three sites, a server, ten rounds: one refusal and one unlisted claim to colour the figures."""
    models = [model_sha256([np.full(4, r, dtype=np.float32)]) for r in range(12)]
    paths = []
    for n, site in enumerate(SITES):
        path = root / site / "audit.jsonl"
        with AuditLog.open(path, site, generate_signing_key(), role="site") as log:
            log.append(
                "deid.run",
                files_in=40,
                files_out=38,
                files_rejected=2,
                profile="basic",
                rejected={"not_dicom": 2},
            )
            log.append("ingest.run", records=38, rejected=0, manifest_sha256=models[0])
            for r in range(1, 11):
                if (site, r) == ("site-c", 4):
                    log.append("round.refused", run_id="run-1", round=r, reason="budget_exhausted")
                else:
                    log.append(
                        "round.taken",
                        run_id="run-1",
                        round=r,
                        model_sha256=models[r],
                        epsilon=0.3 * r + 0.2 * n,
                    )
        paths.append(path)
    server = root / "server" / "audit.jsonl"
    with AuditLog.open(server, "server", generate_signing_key(), role="server") as log:
        log.append("run.start", run_id="run-1", config_sha256=models[0], initial_model_sha256=models[1])
        for r in range(1, 11):
            participants = [s for s in SITES if (s, r) not in {("site-c", 4), ("site-c", 7)}]
            log.append(
                "round.aggregated",
                run_id="run-1",
                round=r,
                model_sha256=models[r],
                participants=participants,
                epsilon=0.35 * r,
            )
    run = root / "run"
    run.mkdir()
    rows = [
        {"round": r, "train_loss": 1 / r, "eval_loss": 1.2 / r, "accuracy": 0.5 + 0.04 * r}
        for r in range(1, 11)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return [*paths, server]


def _share(image: np.ndarray, rgb: tuple[int, int, int]) -> float:
    """Fraction of pixels within a small distance of colour ``rgb``."""
    pixels = image[..., :3].astype(float) * (255 if image.dtype.kind == "f" else 1)
    return float((np.abs(pixels - np.array(rgb)).max(axis=-1) <= 12).mean())


def test_report_opens_in_chromium_with_its_figures(
    headless_chromium: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    logs = _federation(tmp_path)
    report = tmp_path / "report.html"
    _render(logs, report, tmp_path / "run")
    url = report.as_uri()

    dom = headless_chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<h1>fedscan audit report</h1>" in dom.stdout
    assert dom.stdout.count('src="data:image/png;base64,') == 4
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Refused to" in line]
    assert console == [], console

    shot = tmp_path / "report.png"
    result = headless_chromium("--window-size=1280,4200", f"--screenshot={shot}", url)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = imread(shot)
    assert image.shape[1] == 1280
    # Colours that only the figures contain (the page's CSS uses none of them):
    assert _share(image, (46, 139, 87)) > 0.01  # participation: "server and site agree" cells
    assert _share(image, (255, 127, 14)) > 0.0005  # participation's unlisted claim, and orange lines
    assert (
        _share(image, (31, 119, 180)) > 0.0005
    )  # matplotlib's first line colour: epsilon, metrics, timeline


def _render(logs: list[Path], out: Path, run_dir: Path) -> None:
    command = [sys.executable, "-m", "common.cli", "audit", "report", "--out", str(out), *map(str, logs)]
    subprocess.run([*command, "--run-dir", str(run_dir)], check=True, capture_output=True, timeout=120)
