"""The warm executor's spare task process: forked ahead, runs exactly the task it is handed, else nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# In a fresh interpreter (no threads before fork): a real WarmExecutor whose task runner only writes
# the token it was given to a file, so the spare's life cycle is observable without a SuperNode.
_LIFE_CYCLE = """
import json, os, sys, time
from pathlib import Path
from common.flower_runtime.warm_exec import WarmExecutor

out = Path(sys.argv[1])
executor = WarmExecutor("127.0.0.1:9", "flwr-clientapp", insecure=True)

def run_task(token):
    (out / f"{os.getpid()}.token").write_text(token)
    return 3

executor._run_task = run_task
executor._keep_spare()
first = executor._spare[0]
executor._keep_spare()  # a spare exists: no second one
same = executor._spare[0]
time.sleep(0.3)
waited_without_token = not any(out.iterdir())
executor._start_task("token-1")
deadline = time.monotonic() + 20
while executor.children and time.monotonic() < deadline:
    time.sleep(0.02)
    executor._reap()
ran = (out / f"{first}.token").read_text()
executor._keep_spare()
second = executor._spare[0]
executor._stop_children()
print(json.dumps({"first": first, "same": same, "second": second, "waited": waited_without_token,
                  "ran": ran, "left": len(executor.children), "spare": executor._spare,
                  "files": sorted(p.name for p in out.iterdir())}))
"""


def test_a_spare_waits_runs_only_the_task_it_is_handed_and_leaves_when_released(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LIFE_CYCLE, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same"] == result["first"] and result["second"] != result["first"]
    assert result["waited"]  # forked ahead, it ran nothing before it had a token
    assert result["ran"] == "token-1"
    assert f"task process {result['first']} exited with code 3" in done.stderr
    assert result["left"] == 0 and result["spare"] is None
    assert result["files"] == [f"{result['first']}.token"]  # the released spare ran nothing


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # exited, not reaped by its new parent yet


# An executor that forks its spare and ends as if killed: no stop, no release of the spare.
_DIES_UNCLEANLY = """
import os
from common.flower_runtime.warm_exec import WarmExecutor
executor = WarmExecutor("127.0.0.1:9", "flwr-clientapp", insecure=True)
executor._keep_spare()
print(executor._spare[0], flush=True)
os._exit(0)
"""


def test_a_spare_exits_when_its_executor_dies_without_cleaning_up(fresh_python: Callable[[str], str]) -> None:
    spare = int(fresh_python(_DIES_UNCLEANLY).strip().splitlines()[-1])
    deadline = time.monotonic() + 10
    while not _gone(spare) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(spare), f"spare task process {spare} outlived its executor"


# What a task imports while it prepares, after the executor imported its task preparation (as its main
# does before forking); with max_wait set, so every patch a task applies is applied.
_PREPARATION_IMPORTS = """
import sys
from common.flower_runtime.warm_exec import WarmExecutor, import_task_preparation

import_task_preparation("flwr-clientapp")
before = set(sys.modules)
WarmExecutor("127.0.0.1:9", "flwr-clientapp", insecure=True, max_wait=0.2)._prepare_task()
print(sorted(set(sys.modules) - before))
"""


def test_a_task_imports_nothing_to_prepare_once_the_executor_has(fresh_python: Callable[[str], str]) -> None:
    assert fresh_python(_PREPARATION_IMPORTS).strip().splitlines()[-1] == "[]"
