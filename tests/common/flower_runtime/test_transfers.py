"""A message's objects move over more connections at once, through Flower's own transfer functions."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from common.flower_runtime.transfers import TRANSFER_WORKERS, widen_object_transfers

# Flower's pull_objects and push_object_contents_from_iterable with a transfer that takes 0.1 s and
# records how many run at once (the network is the only thing stood in for), before and after.
_CONCURRENCY = """
import json, threading, time
from flwr.supercore.inflatable import inflatable_utils as transfers
from common.flower_runtime.transfers import widen_object_transfers

def most_at_once(move):
    lock, now, peak = threading.Lock(), [0], [0]
    def one(*_args):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.1)
        with lock:
            now[0] -= 1
        return b"content"
    move(one)
    return peak[0]

ids = [f"object-{i}" for i in range(6)]
pull = lambda fn: transfers.pull_objects(ids, fn)
push = lambda fn: transfers.push_object_contents_from_iterable(((i, b"x") for i in ids), fn)
before = [most_at_once(pull), most_at_once(push)]
changed = widen_object_transfers()
after = [most_at_once(pull), most_at_once(push)]
print(json.dumps({"before": before, "after": after, "changed": changed}))
"""


def test_object_transfers_run_as_many_at_once_as_there_are_objects(
    fresh_python: Callable[[str], str],
) -> None:
    result = json.loads(fresh_python(_CONCURRENCY).strip().splitlines()[-1])
    assert result["changed"] == ["flwr.supercore.inflatable.inflatable_utils.get_num_workers"]
    assert max(result["before"]) <= 2  # Flower 1.42: two at a time on this machine
    assert result["after"] == [6, 6]  # six objects, all at once (TRANSFER_WORKERS allows 8)


def test_the_bound_is_checked() -> None:
    assert TRANSFER_WORKERS >= 3  # a SecAgg+ stage message is three objects
    with pytest.raises(ValueError, match="workers"):
        widen_object_transfers(0)
