"""An ingest killed (SIGKILL) or interrupted (Ctrl-C) midway leaves a consistent store; a re-run completes it.

The ingest runs in a subprocess through the real code path (a process pool of two workers, commits
every 0.1 s). Its progress callback prints each file and paces the run (20 ms per file) so that the
signal lands in the middle rather than after the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from client.ingest import ingest_folder
from client.ingest_report import latest_sealed_report
from client.site import SiteDir
from client.site_init import init_site
from client.site_keys import load_site_key
from client.store import load_split, read_manifest
from simulations.cohort import CohortSpec, SiteCohort, generate_cohort

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys, time
    from pathlib import Path
    from client.ingest import ingest_folder
    from client.site import SiteDir

    announced = False

    def progress(done, total):
        global announced
        if not announced:
            pids = " ".join(str(p.pid) for p in multiprocessing.active_children())
            print("workers", pids, flush=True)
            announced = True
        print("done", done, total, flush=True)
        time.sleep(0.02)

    try:
        ingest_folder(
            SiteDir(Path(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3]),
            workers=2, commit_seconds=0.1, progress=progress,
        )
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    print("finished", flush=True)
    """
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SiteCohort:
    (cohort,) = generate_cohort(
        tmp_path_factory.mktemp("export"), CohortSpec(n_sites=1, slices_per_site=150, image_size=64, seed=8)
    )
    return cohort


def _start(site: SiteDir, cohort: SiteCohort) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(site.root), str(cohort.dicom_dir), str(cohort.labels_csv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _run_until(child: subprocess.Popen[str], fraction: float) -> tuple[list[int], int]:
    """Read the child's progress until ``fraction`` of the files are done; its worker pids and count."""
    assert child.stdout is not None
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        assert line, "the ingest ended before it could be interrupted"
        words = line.split()
        if words[0] == "workers":
            workers = [int(w) for w in words[1:]]
        elif words[0] == "done" and int(words[1]) >= fraction * int(words[2]):
            return workers, int(words[1])
    raise AssertionError("the ingest made no progress")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # zombie: exited, unreaped
    except FileNotFoundError:
        return True


def _check_consistent(site: SiteDir) -> int:
    """The store opens, every referenced shard opens, no instance twice; returns the record count."""
    key = load_site_key(site)
    manifest = read_manifest(site.store_dir, key)
    assert sum(len(load_split(site.store_dir, key, split)) for split in ("train", "val", "test")) == len(
        manifest.records
    )
    sops = [e.sop for e in manifest.records]
    assert len(sops) == len(set(sops))
    return len(manifest.records)


def _check_rerun_completes(site: SiteDir, cohort: SiteCohort, before: int) -> None:
    report = ingest_folder(site, cohort.dicom_dir, cohort.labels_csv, workers=2)
    assert report.already_stored == before
    assert report.records_added == cohort.n_files - before
    assert _check_consistent(site) == cohort.n_files
    shards = {p.stem for p in (site.store_dir / "shards").iterdir()}
    referenced = {e.shard for e in read_manifest(site.store_dir, load_site_key(site)).records}
    assert shards == referenced, "temporary or unreferenced shard files were left behind"
    assert not list(site.store_dir.glob(".*.tmp"))


def test_sigkill_midway_leaves_a_consistent_store_that_a_rerun_completes(
    tmp_path: Path, cohort: SiteCohort
) -> None:
    site = init_site(tmp_path / "site", "site")
    child = _start(site, cohort)
    try:
        workers, done = _run_until(child, 0.4)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert workers, "the ingest ran without worker processes"
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in workers), "worker processes outlived the killed ingest"

    before = _check_consistent(site)
    assert 0 < before < cohort.n_files, f"killed after {done} files with {before} records committed"
    _check_rerun_completes(site, cohort, before)


def test_ctrl_c_commits_what_was_received_and_a_rerun_completes(tmp_path: Path, cohort: SiteCohort) -> None:
    site = init_site(tmp_path / "site", "site")
    child = _start(site, cohort)
    try:
        _run_until(child, 0.3)
        os.kill(child.pid, signal.SIGINT)
        out, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == 130 and "interrupted" in out
    before = _check_consistent(site)
    report = latest_sealed_report(site, load_site_key(site))
    assert report is not None and report.interrupted
    assert report.records_added == report.total_records == before  # everything received was committed
    assert 0 < before < cohort.n_files
    _check_rerun_completes(site, cohort, before)
