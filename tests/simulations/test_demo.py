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
