"""Daemons end with everything they started, by PID, every wait bounded; ports and environment."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from common.flower_runtime.daemons import (
    FLOWER_ENV,
    Daemon,
    ProcessRef,
    flower_environment,
    free_port,
    wait_for_port,
)

# A parent that starts a child in its own session (as a SuperLink starts its SuperExec) and a plain
# grandchild, then ignores SIGTERM: everything must still end.
TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print("ready", flush=True)
time.sleep(300)
"""


def test_stop_ends_the_daemon_and_every_descendant_even_detached_ones(tmp_path: Path) -> None:
    daemon = Daemon("tree", [sys.executable, "-c", TREE], tmp_path / "tree.log").start()
    deadline = time.monotonic() + 30
    while "ready" not in daemon.tail() or len(daemon.processes()) < 3:
        assert time.monotonic() < deadline, daemon.tail()
        time.sleep(0.1)
    refs = daemon.processes()
    assert len(refs) == 3 and refs[0].pid == daemon.pid
    started = time.monotonic()
    daemon.stop(timeout=2)
    assert time.monotonic() - started < 15  # SIGTERM ignored: SIGKILL after the bounded wait
    assert not any(ref.alive for ref in refs)
    assert daemon.exit_code == -signal.SIGKILL


def test_a_recycled_pid_is_not_mistaken_for_ours() -> None:
    ref = ProcessRef.of(os.getpid())
    assert ref is not None and ref.alive
    assert not ProcessRef(ref.pid, ref.start_ticks + 1).alive  # same PID, another start time


def test_flower_environment_switches_flower_off_and_finds_our_commands(tmp_path: Path) -> None:
    env = flower_environment(tmp_path / "home", {"EXTRA": "1"})
    for key, value in FLOWER_ENV.items():
        assert env[key] == value
    assert env["FLWR_HOME"] == str(tmp_path / "home") and env["EXTRA"] == "1"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_wait_for_port_times_out_and_reports_an_early_exit(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(TimeoutError, match="Nothing listens"):
        wait_for_port("127.0.0.1", port, timeout=0.5)
    quitter = Daemon("quitter", [sys.executable, "-c", "print('bye')"], tmp_path / "q.log").start()
    with pytest.raises(TimeoutError, match="exited .* before listening"):
        wait_for_port("127.0.0.1", port, timeout=30, daemon=quitter)
    quitter.stop()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        wait_for_port("127.0.0.1", port, timeout=5)
