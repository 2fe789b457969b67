"""`fedscan demo --deployment`: the demo as a real local federation, end to end, through the CLI.

Real processes (server start, one site run per site, their SuperNodes and executors) on 127.0.0.1 with
TLS and node authentication; the demo stops what it started, and this test checks from outside that no
process of it and no listener is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def test_demo_deployment_runs_verifies_and_leaves_nothing_behind(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "common.cli", "demo", "--deployment",
         "--workdir", str(tmp_path / "demo"), "--json"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    body = json.loads(done.stdout)
    assert body["ok"] and body["status"] == "finished:completed"
    assert body["logs_verified"] and body["reconciled"] and body["model"]["ok"]
    assert body["processes_left"] == [] and body["port_closed"]
    assert body["rounds"][-1]["accuracy"] > 0.7  # it learns: the demo's recipe, deployed
    # From outside: the demo's own process has exited, so anything it left would now be an orphan of ours.
    assert _children_of(os.getpid()) == []
    federation = Path(body["federation"])
    assert not any(p.name == "node.key" for p in federation.rglob("*"))  # keys stayed at the sites
