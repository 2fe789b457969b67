"""The capped idle waits act on the real Flower modules, and only where they should."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

import pytest

from common.flower_runtime.polling import POLL_MODULES, PollClock, shorten_polls


def test_poll_clock_caps_sleep_and_keeps_the_rest_of_time() -> None:
    clock = PollClock(0.05)
    started = time.monotonic()
    clock.sleep(3)
    assert time.monotonic() - started < 1.0
    assert clock.monotonic() >= started and clock.time() > 0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="max_wait"):
        PollClock(0)


def test_an_idle_supernode_returns_to_flowers_pace() -> None:
    clock = PollClock(0.01, idle_after=0.2, idle_poll=0.3)
    clock.sleep(0.3)  # busy at start: capped
    time.sleep(0.25)  # no short wait for longer than idle_after: idle
    started = time.monotonic()
    clock.sleep(0.3)
    assert time.monotonic() - started >= 0.29
    clock.sleep(0.1)  # a short wait (a reply being awaited) means busy again
    started = time.monotonic()
    clock.sleep(0.3)
    assert time.monotonic() - started < 0.2


def test_a_busy_supernode_looks_for_its_own_replies_more_often_than_it_asks_the_superlink() -> None:
    clock = PollClock(0.2, idle_after=10, idle_poll=3.0, local_wait=0.01)
    started = time.monotonic()
    clock.sleep(0.5)  # Flower's wait for the ClientApp's reply: local
    assert time.monotonic() - started < 0.1
    started = time.monotonic()
    clock.sleep(3)  # Flower's wait before asking the SuperLink again: capped at max_wait only
    assert 0.19 <= time.monotonic() - started < 1.0
    with pytest.raises(ValueError, match="local_wait"):
        PollClock(0.2, local_wait=0.5)


def test_shorten_polls_patches_flowers_waits_in_a_fresh_process(fresh_python: Callable[[str], str]) -> None:
    code = (
        "from common.flower_runtime.polling import shorten_polls\n"
        "changed = shorten_polls('serverapp', 0.1)\n"
        "import flwr.superlink.grid.http_grid as g\n"
        "from flwr.supercore.inflatable import inflatable_utils as u\n"
        "assert type(g.time).__name__ == 'PollClock', g.time\n"
        "assert u.pull_objects.__kwdefaults__['backoff_cap'] == 0.1\n"
        "assert u.pull_objects.__kwdefaults__['max_tries_per_object'] is None\n"
        "assert u.pull_objects.__kwdefaults__['max_time'] == 7200\n"
        "print(sorted(changed))\n"
    )
    out = fresh_python(code)
    assert "flwr.superlink.grid.http_grid" in out
    assert "pull_and_inflate_object_from_tree" in out


def test_modules_exist_in_this_flower() -> None:
    """If Flower moves these, the caps silently stop applying: fail here instead."""
    for modules in POLL_MODULES.values():
        for name in modules:
            assert hasattr(importlib.import_module(name), "time"), name
    with pytest.raises(ValueError, match="role"):
        shorten_polls("superlink", 0.1)
