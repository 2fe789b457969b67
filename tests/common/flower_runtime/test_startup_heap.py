"""Start-up objects leave the collector's reach; garbage, before and after, is still collected."""

from __future__ import annotations

import json
from collections.abc import Callable

# In a fresh interpreter (freezing is process-wide): a start-up heap with live objects and a garbage
# cycle, frozen; then a cycle made while serving.
_FREEZE = """
import gc, json, weakref
from common.flower_runtime.startup_heap import freeze_startup_heap

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

kept = [Node() for _ in range(50_000)]  # what a server imports and keeps
old_garbage = cycle()
walked_before = len(gc.get_objects(generation=2)) + len(gc.get_objects(generation=1))
frozen = freeze_startup_heap()
walked_after = len(gc.get_objects(generation=2)) + len(gc.get_objects(generation=1))
new_garbage = cycle()
gc.collect()
print(json.dumps({
    "frozen": frozen,
    "walked_before": walked_before,
    "walked_after": walked_after,
    "old_garbage_collected": old_garbage() is None,
    "new_garbage_collected": new_garbage() is None,
    "kept_alive": len(kept),
}))
"""


def test_start_up_objects_are_frozen_and_garbage_still_collected(fresh_python: Callable[[str], str]) -> None:
    result = json.loads(fresh_python(_FREEZE).strip().splitlines()[-1])
    assert result["frozen"] >= 50_000  # the live start-up objects moved to the permanent generation
    assert result["walked_after"] < result["walked_before"] / 10  # a full collection no longer walks them
    assert result["old_garbage_collected"]  # not frozen: collected first
    assert result["new_garbage_collected"]  # objects made later are collected as before
    assert result["kept_alive"] == 50_000
