"""The simulation engine's hand-off: woken by pushes, replies looked for often, Flower restored after."""

from __future__ import annotations

import importlib
import threading
import time
from types import SimpleNamespace

from common.flower_runtime.engine_latency import REPLY_POLL, _WakeOnPush, prompt_message_handoff

ENGINE = "flwr.simulation.run_simulation"
FEEDER = "flwr.server.superlink.fleet.vce.vce_api"


def test_the_block_swaps_flowers_grid_and_feeder_and_restores_them() -> None:
    engine, feeder = importlib.import_module(ENGINE), importlib.import_module(FEEDER)
    grid_class, feed = engine.InMemoryGrid, feeder.add_messages_to_queue
    with prompt_message_handoff() as prompt:
        assert prompt  # Flower 1.4x keeps both where the module looks
        assert issubclass(engine.InMemoryGrid, grid_class) and engine.InMemoryGrid is not grid_class
        assert feeder.add_messages_to_queue is not feed
        grid = engine.InMemoryGrid(state_factory=SimpleNamespace(state=lambda: None))
        assert grid.pull_interval == REPLY_POLL
    assert engine.InMemoryGrid is grid_class
    assert feeder.add_messages_to_queue is feed


def test_the_feeders_wait_ends_on_a_push_not_on_its_timer() -> None:
    stop, pushed = threading.Event(), threading.Event()
    wake = _WakeOnPush(stop, pushed)
    returned: list[bool] = []
    waiter = threading.Thread(target=lambda: returned.append(wake.wait(timeout=60.0)))
    waiter.start()
    time.sleep(0.05)
    pushed.set()
    waiter.join(timeout=10.0)  # the timer alone would hold it for a minute
    assert not waiter.is_alive() and returned == [False]
    assert not pushed.is_set()  # cleared for the next look


def test_the_feeder_still_sees_the_stop_event() -> None:
    stop, pushed = threading.Event(), threading.Event()
    wake = _WakeOnPush(stop, pushed)
    assert not wake.is_set()
    stop.set()
    assert wake.is_set()
    assert wake.wait(timeout=0.01) is True  # timer expires, the stop is reported
