"""Crash and resume: kill a running `fedscan sim run` after round 2, then `--resume` to the end.

The run is a real CLI process (Flower simulation engine, Ray, sealed stores) in its own session; it is
SIGKILLed as a process group, like a power cut for the whole server side. The resumed run must continue
from the last sealed checkpoint with the right round numbers and end with the planned round count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from client.policy import SitePolicy
from client.site_init import init_site, load_site_key
from client.store import Record, StoreWriter
from server.checkpoints import CheckpointStore
from server.run_records import MODEL_FILE, read_round_records

pytestmark = pytest.mark.slow

ROUNDS = 12


def _make_site(root: Path, name: str, seed: int, size: int = 16, n: int = 200) -> Path:
    site = init_site(root / name, name, policy=SitePolicy(min_sites=2))  # two-site runs
    rng = np.random.default_rng(seed)
    writer = StoreWriter(
        site.store_dir, load_site_key(site), image_size=size, split_fractions=(0.7, 0.0, 0.3)
    )
    for i in range(n):
        label = int(rng.integers(0, 2))
        pixels = rng.normal(0.4, 0.05, (size, size)).astype(np.float32)
        if label:
            pixels[6:10, 6:10] += 0.3
        writer.add(Record(pixels=np.clip(pixels, 0, 1), label=label, patient=f"p{i}", study=f"s{i}"))
    writer.commit()
    return site.root


def _session_processes(sid: int) -> list[int]:
    """PIDs still alive in the session the killed run was started in (its Ray processes included)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True, check=True).stdout
    return [int(pid) for pid, s in (line.split() for line in out.splitlines()) if int(s) == sid]


def test_killed_after_round_two_resumes_to_completion(tmp_path: Path) -> None:
    sites = [_make_site(tmp_path, f"site-{i}", seed=i) for i in range(2)]
    out = tmp_path / "run"
    command = [sys.executable, "-m", "common.cli", "sim", "run", "--model", "svm", "--strategy", "fedadam"]
    command += ["--rounds", str(ROUNDS), "--learning-rate", "0.01", "--out-dir", str(out), "--json"]
    command += ["--set", "server-learning-rate=0.05", "--set", "local-epochs=3"]
    for site in sites:
        command += ["--site-dir", str(site)]
    checkpoints = out / "checkpoints"

    victim = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.time() + 240
        while not (checkpoints / "round-0002.fseal").exists():
            assert victim.poll() is None, victim.stderr.read().decode()[-3000:] if victim.stderr else ""
            assert time.time() < deadline, "round 2 never finished"
            time.sleep(0.02)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)  # the run and every process of its session group
        victim.wait(timeout=30)
    assert not (out / MODEL_FILE).exists(), "the run finished before it could be killed"
    killed_at = max(CheckpointStore(checkpoints, key=None).rounds())  # type: ignore[arg-type]
    assert 2 <= killed_at < ROUNDS
    deadline = time.time() + 30
    while _session_processes(victim.pid) and time.time() < deadline:
        time.sleep(0.5)
    leftover = _session_processes(victim.pid)
    for pid in leftover:  # only processes of the session this test started
        os.kill(pid, signal.SIGKILL)
    assert not leftover, f"processes of the killed run survived: {leftover}"

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    rounds = read_round_records(out)
    assert [r.round for r in rounds] == list(range(1, ROUNDS + 1))  # no gap, no duplicate
    assert all(r.failures == 0 and r.sites_fit == 2 for r in rounds)
    assert summary["final"]["round"] == ROUNDS
    assert json.loads((out / "final_model.json").read_text())["rounds"] == ROUNDS
    assert CheckpointStore.for_run(out).rounds() == list(range(1, ROUNDS + 1))
    latest = CheckpointStore.for_run(out).latest(_training_digest(summary))
    assert latest is not None and latest.round == ROUNDS and latest.strategy_state  # FedAdam's moments
    assert rounds[-1].accuracy is not None and rounds[-1].accuracy > 0.8


def _training_digest(summary: dict) -> str:
    from common.config import RunConfig

    return RunConfig.from_flower(summary["config"]).training_digest()
