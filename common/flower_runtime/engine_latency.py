"""Prompt message hand-off inside Flower's simulation engine, where Flower 1.4x polls on a timer.

In the simulation engine the ServerApp and the ClientApp actors share one in-memory SuperLink state,
and two timers sit between them (``flwr.server.superlink.fleet.vce.vce_api`` and
``flwr.superlink.grid.inmemory_grid``; no option changes them):

* the thread that feeds the actors looks for new messages every **0.1 s**, so a message the
  ServerApp pushes waits 0.05 s on average before any actor sees it;
* the ServerApp's in-memory grid looks for the replies every **0.1 s**, so the last reply of an
  exchange waits 0.05 s on average too.

A round is two exchanges (fit, evaluate; five with SecAgg+), and the 10-site benchmark's rounds
take about 1.5 s, so the timers alone were a tenth of the federation's overhead
(``benchmarks/bench_federation.py``). :func:`prompt_message_handoff` wakes the feeding thread as soon
as the ServerApp pushes (no extra polling: it waits on an event instead of sleeping) and lets the grid
look for replies every :data:`REPLY_POLL` seconds (a lookup of a few message ids in memory).

The change is scoped to one run: both names are restored when the block exits. A Flower whose
modules are not where 1.4x keeps them is left alone (the run is as fast as stock Flower, never
broken), and the block yields whether the hand-off was made prompt.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any, Final

__all__ = ["REPLY_POLL", "prompt_message_handoff"]

#: Seconds between the ServerApp's looks for replies (Flower's default: 0.1).
REPLY_POLL: Final = 0.01
_ENGINE_MODULE: Final = "flwr.simulation.run_simulation"
_GRID: Final = "InMemoryGrid"
_FEEDER_MODULE: Final = "flwr.server.superlink.fleet.vce.vce_api"
_FEEDER: Final = "add_messages_to_queue"


class _WakeOnPush:
    """The feeding thread's stop event, whose ``wait`` also returns when the ServerApp pushes."""

    def __init__(self, stop: threading.Event, pushed: threading.Event) -> None:
        self._stop = stop
        self._pushed = pushed

    def is_set(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        # Cleared after waking and before the feeder looks again: a push that lands after the look
        # sets it again, so no message waits for the timer.
        self._pushed.wait(timeout)
        self._pushed.clear()
        return self._stop.is_set()


def _signalling_grid(grid_class: type, pushed: threading.Event) -> type:
    """A subclass of Flower's in-memory grid that polls for replies often and signals its pushes."""

    class PromptInMemoryGrid(grid_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("pull_interval", REPLY_POLL)
            super().__init__(*args, **kwargs)

        def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
            ids = super().push_messages(messages)
            pushed.set()  # after the messages are stored, so the feeder finds them
            return ids

    return PromptInMemoryGrid


def _flower_modules() -> tuple[ModuleType, ModuleType] | None:
    try:
        engine = importlib.import_module(_ENGINE_MODULE)
        feeder = importlib.import_module(_FEEDER_MODULE)
    except ImportError:
        return None
    if not isinstance(getattr(engine, _GRID, None), type) or not callable(getattr(feeder, _FEEDER, None)):
        return None
    return engine, feeder


@contextlib.contextmanager
def prompt_message_handoff() -> Iterator[bool]:
    """Within the block, simulations started in this process hand messages over without timer waits."""
    modules = _flower_modules()
    if modules is None:
        yield False
        return
    engine, feeder = modules
    grid_class, original_feeder = getattr(engine, _GRID), getattr(feeder, _FEEDER)
    pushed = threading.Event()

    @functools.wraps(original_feeder)
    def feed_on_push(state: Any, queue: Any, nodes_mapping: Any, f_stop: threading.Event) -> None:
        original_feeder(state, queue, nodes_mapping, _WakeOnPush(f_stop, pushed))

    setattr(engine, _GRID, _signalling_grid(grid_class, pushed))
    setattr(feeder, _FEEDER, feed_on_push)
    try:
        yield True
    finally:
        setattr(engine, _GRID, grid_class)
        setattr(feeder, _FEEDER, original_feeder)
