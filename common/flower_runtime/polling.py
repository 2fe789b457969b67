"""Shorter idle waits in Flower's deployment engine, where Flower 1.42 fixes them in code.

A deployed round is a few message exchanges (2 plain, 5 with SecAgg+), and each exchange meets waits
that no option or variable changes in Flower 1.42:

* a SuperNode that finds no message for it sleeps **3 s** before asking the SuperLink again
  (``flwr.supernode.start_client_internal``), and 0.5 s between looks for its ClientApp's reply (in
  its own memory; capped at ``SUPERNODE_LOCAL_WAIT``, since looking costs no request);
* the ServerApp's grid sleeps **3 s** between pulls for the sites' replies
  (``flwr.superlink.grid.http_grid``);
* whoever pulls a message's objects (a SuperNode from the SuperLink, a ClientApp from its SuperNode,
  the ServerApp from the SuperLink) and finds one not uploaded yet backs off **1 s, 2 s, 4 s ... 10 s**
  (``flwr.supercore.inflatable.inflatable_utils``); a warm ClientApp asks early and met this every time.

:func:`shorten_polls` caps them: the sleeping modules get a clock whose ``sleep`` never waits longer
than ``max_wait`` (every other clock function is the real one), and the object pulls back off from
``max_wait / 4`` to at most ``max_wait``, still within Flower's overall pull deadline (2 h; the
per-object try limit, calibrated for the long back-off, is lifted). Nothing else changes: same
requests, same TLS and authentication, only more often while waiting (a SuperNode at
``max_wait=0.2`` sends 5 small authenticated requests a second; ``docs/performance.md`` sizes this
for large federations). A module not where Flower 1.42 keeps it (another Flower version) is left
alone and the caller told, so the worst case is Flower's own latency, never a failure.

fedscan's launcher (:mod:`common.flower_runtime.launcher`) applies this to the SuperNodes it starts;
fedscan's warm executor applies it to each task.
"""

from __future__ import annotations

import importlib
import time
import types

from common.flower_runtime import wakeups as flower_wakeups

__all__ = [
    "POLL_MODULES",
    "SUPERNODE_IDLE_AFTER",
    "SUPERNODE_LOCAL_WAIT",
    "PollClock",
    "shorten_polls",
]

#: Modules of Flower 1.42 that sleep between polls, by the process they run in.
POLL_MODULES: dict[str, tuple[str, ...]] = {
    "supernode": ("flwr.supernode.start_client_internal",),
    "serverapp": ("flwr.superlink.grid.http_grid",),
    "clientapp": (),
}
#: Flower 1.42's object-pull functions, whose keyword defaults set the back-off.
PULL_MODULE = "flwr.supercore.inflatable.inflatable_utils"
PULL_FUNCTIONS = ("pull_objects", "pull_and_inflate_object_from_tree")


class PollClock:
    """Stands in for the ``time`` module inside one Flower module: ``sleep`` is capped, the rest real.

    With ``idle_after`` set, the cap holds only while the process is busy: Flower's long idle poll
    (3 s) is kept once ``idle_after`` seconds have passed since the last short wait, which Flower asks
    for only while a message is being handled (a SuperNode waiting for its ClientApp's reply). So a
    SuperNode polls fast during a run and at Flower's pace between runs, and an idle federation costs
    the SuperLink no more than with stock Flower; the first message of a run may wait up to 3 s.
    """

    def __init__(
        self,
        max_wait: float,
        *,
        idle_after: float | None = None,
        idle_poll: float = 3.0,
        local_wait: float | None = None,
        held_after: float | None = None,
    ) -> None:
        if not 0 < max_wait <= 3:
            raise ValueError(f"max_wait must be in (0, 3] seconds, got {max_wait}.")
        if local_wait is not None and not 0 < local_wait <= max_wait:
            raise ValueError(f"local_wait must be in (0, max_wait] seconds, got {local_wait}.")
        self.max_wait = max_wait
        self.idle_after = idle_after
        self.idle_poll = idle_poll
        self.local_wait = local_wait
        self.held_after = held_after
        self._busy_until = time.monotonic() + (idle_after or 0.0)
        self._last_wake = time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``: at most ``local_wait`` for a short wait, ``max_wait`` for a poll while busy.

        With ``held_after``, a poll that itself took that long was held by the server until it had
        news or its hold ran out (:mod:`common.flower_runtime.wakeups`), so the next poll goes at once.
        """
        now = time.monotonic()
        try:
            if self.idle_after is None:
                self._wait(min(seconds, self.max_wait), now)
            elif seconds < self.idle_poll:
                self._busy_until = now + self.idle_after
                # A local wait (a SuperNode waiting for its own ClientApp's reply) ends early when
                # this process's state changes (flower_wakeups signals it; otherwise a plain sleep).
                changes = flower_wakeups.changes()
                changes.wait_after(changes.count, min(seconds, self.local_wait or self.max_wait))
            elif now < self._busy_until:
                self._wait(min(seconds, self.max_wait), now)
            else:
                time.sleep(seconds)
        finally:
            self._last_wake = time.monotonic()

    def _wait(self, seconds: float, now: float) -> None:
        if self.held_after is not None and now - self._last_wake >= self.held_after:
            return
        time.sleep(seconds)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


#: A SuperNode goes back to Flower's idle pace after this long without a message.
SUPERNODE_IDLE_AFTER = 60.0
#: How often a SuperNode looks for its own ClientApp's reply (in its own memory).
SUPERNODE_LOCAL_WAIT = 0.02


def shorten_polls(role: str, max_wait: float, *, held_after: float | None = None) -> list[str]:
    """Cap the idle waits of Flower's ``role`` process (``supernode``, ``serverapp``, ``clientapp``).

    Applies to this process. Returns what it changed; what this Flower version lacks is skipped. A
    SuperNode caps its waits only while busy (:class:`PollClock`); a ServerApp or ClientApp task
    exists only while there is work, so its waits are always capped. ``held_after``: see
    :class:`PollClock` (for a SuperNode whose SuperLink may hold empty answers).
    """
    if role not in POLL_MODULES:
        raise ValueError(f"role must be one of {', '.join(POLL_MODULES)}, not {role!r}.")
    if role == "supernode":
        # Its short waits (0.5 s) are for its own ClientApp's reply and objects, which the SuperNode
        # serves itself: looking again costs a lock and a dict lookup, not a request to the SuperLink.
        local = min(SUPERNODE_LOCAL_WAIT, max_wait)
        clock = PollClock(max_wait, idle_after=SUPERNODE_IDLE_AFTER, local_wait=local, held_after=held_after)
    else:
        clock = PollClock(max_wait, held_after=held_after)
    changed = []
    for name in POLL_MODULES[role]:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if isinstance(getattr(module, "time", None), types.ModuleType | PollClock):
            module.time = clock  # type: ignore[attr-defined]
            changed.append(name)
    try:
        pulls = importlib.import_module(PULL_MODULE)
    except ImportError:
        return changed
    for function_name in PULL_FUNCTIONS:
        defaults = getattr(getattr(pulls, function_name, None), "__kwdefaults__", None)
        if isinstance(defaults, dict) and {"initial_backoff", "backoff_cap"} <= defaults.keys():
            defaults.update(initial_backoff=max_wait / 4, backoff_cap=max_wait, max_tries_per_object=None)
            changed.append(f"{PULL_MODULE}.{function_name}")
    return changed
