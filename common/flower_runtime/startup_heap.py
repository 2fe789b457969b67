"""Keep Python's garbage collector off what a long-lived process built at start-up.

The SuperLink, the SuperNodes and the warm executors import Flower, FastAPI, torch and fedscan once
and then serve for hours; those hundreds of thousands of objects never become garbage, yet CPython's
cyclic collector walks all of them in each full collection. Traced over three deployed SecAgg+ rounds,
the SuperLink's two full collections took 108 ms each (the whole federation's traffic waits meanwhile),
and every task forked from a warm executor started with the parent's young generations nearly full, so
its first collection walked the parent's recent objects: ~5 ms per message, with copy-on-write faults
on every object it touched. :func:`freeze_startup_heap`, called once start-up is done, collects what is
garbage already and moves everything alive into the collector's permanent generation (``gc.freeze``,
meant for exactly this: long-lived servers and processes that fork). Objects made later are collected
as before; the frozen ones are kept as long as the process, as they were in practice anyway.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap"]


def freeze_startup_heap() -> int:
    """Collect garbage, then take every object alive now out of future collections; how many were."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
