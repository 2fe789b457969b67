"""Operations with real processes: `fedscan site run` is a supervisor that stays up, alone, and takes its
processes with it.

TLS and node authentication on 127.0.0.1; every process a test starts is ended by PID; none is left.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.ingest import ingest_folder
from client.site import SiteDir
from client.site_init import init_site
from common.flower_runtime.daemons import Daemon, ProcessRef, free_port
from server.provision import Federation
from simulations.cohort import CohortSpec, generate_cohort
from simulations.local_federation import provision_local_federation

pytestmark = pytest.mark.slow

RUN = {"num-server-rounds": 1, "cnn-widths": "8,16", "batch-size": 16, "seed": 4}


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _site_run(site: SiteDir, fed: Federation, log: Path) -> Daemon:
    kit = fed.site_kit(site.root.name)
    argv = [
        sys.executable,
        "-m",
        "common.cli",
        "site",
        "run",
        "--site-dir",
        str(site.root),
        "--kit",
        str(kit),
    ]
    return Daemon(f"site run {site.root.name}", argv, log).start()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, list[SiteDir]]]:
    root = tmp_path_factory.mktemp("ops")
    spec = CohortSpec(n_sites=3, slices_per_site=24, seed=13, lesion_contrast_hu=250.0)
    sites = []
    for cohort in generate_cohort(root / "pacs", spec):
        site = init_site(root / "sites" / cohort.site_id, cohort.site_id)
        assert ingest_folder(site, cohort.dicom_dir, cohort.labels_csv, workers=1).records_added > 0
        sites.append(site)
    fed = provision_local_federation(sites, root / "fed", f"127.0.0.1:{free_port()}", federation="ops")
    yield fed, sites


def test_a_second_site_run_is_refused_and_a_killed_one_leaves_nothing(  # type: ignore[no-untyped-def]
    federation, tmp_path: Path
) -> None:
    fed, sites = federation
    first = _site_run(sites[0], fed, tmp_path / "first.log")
    seen: list[ProcessRef] = []
    try:
        _wait_for(
            lambda: "SuperNode started" in first.tail(40) or not first.running, 120, "the first site run"
        )
        assert first.running, first.tail()
        second = _site_run(sites[0], fed, tmp_path / "second.log")
        _wait_for(lambda: not second.running, 60, "the second site run to be refused")
        assert second.exit_code == 2 and "Another `fedscan site run` (pid" in second.tail(), second.tail()
        assert first.running  # the first is untouched
        _wait_for(lambda: len(first.processes()) >= 3, 60, "the SuperNode and its executor")  # CLI + 2
        seen = first.processes()
        assert len(seen) >= 3
        first.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        started = time.monotonic()
        _wait_for(lambda: not any(r.alive for r in seen), 10, "every process of the killed site run")
        assert time.monotonic() - started < 10
    finally:
        first.stop(timeout=10)
        seen.extend(first.processes())
    assert not any(r.alive for r in seen)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "common.cli", *args]


def _status(fed: Federation) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(
        _cli("server", "status", "--kit", str(fed.server_dir), "--json"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _submit(fed: Federation, out: Path) -> subprocess.CompletedProcess[str]:
    sets = [a for key, value in RUN.items() for a in ("--set", f"{key}={value}")]
    return subprocess.run(
        _cli("server", "submit", "--kit", str(fed.server_dir), *sets, "--out-dir", str(out),
             "--wait-for-sites", "240", "--timeout", "600", "--json"),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def test_a_coordinator_that_stays_up_and_sites_that_reconnect_after_it_restarts(  # type: ignore[no-untyped-def]
    federation, tmp_path: Path
) -> None:
    fed, sites = federation
    start = _cli("server", "start", "--kit", str(fed.server_dir), "--listen", "127.0.0.1")
    coordinator = Daemon("server start", start, tmp_path / "coordinator.log").start()
    runs: list[Daemon] = []
    seen: list[ProcessRef] = []
    try:
        _wait_for(lambda: _status(fed)["running"] or not coordinator.running, 120, "the coordinator")
        runs = [_site_run(site, fed, tmp_path / f"{site.root.name}.log") for site in sites]
        _wait_for(lambda: len(_status(fed)["sites_online"]) == 3, 240, "three sites online", interval=2)
        first = _submit(fed, tmp_path / "run-1")
        assert first.returncode == 0, first.stdout + first.stderr
        assert json.loads(first.stdout)["status"] == "finished:completed"
        # The coordinator restarts (a deployment, a crash): its state is in its database.
        seen.extend(coordinator.processes())
        coordinator.stop(timeout=30)
        assert not _status(fed)["running"]
        coordinator = Daemon("server start", start, tmp_path / "coordinator-2.log").start()
        _wait_for(lambda: len(_status(fed)["sites_online"]) == 3, 300, "the sites to reconnect", interval=2)
        assert all(run.running for run in runs)  # no site was restarted by hand
        second = _submit(fed, tmp_path / "run-2")
        assert second.returncode == 0, second.stdout + second.stderr
        status = _status(fed)
        assert len(status["runs"]) >= 2  # run history kept across the restart
        assert status["defaults"]["min-fit-sites"] >= 3
    finally:
        for daemon in (*runs, coordinator):
            seen.extend(daemon.processes())
            daemon.stop(timeout=30)
    _wait_for(lambda: not any(r.alive for r in seen), 30, "every started process to exit")
