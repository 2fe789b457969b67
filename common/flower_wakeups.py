"""Answer Flower's polls when there is something to answer, not on the poller's next timer.

In Flower 1.42's deployment engine every hand-over is a poll: a SuperNode asks the SuperLink for a
message, the executor asks its SuperNode for a task, the ServerApp asks the SuperLink for the sites'
replies, and whoever pulls a message's objects asks again until each one is uploaded. An empty answer
sends the poller to sleep (capped by :mod:`common.flower_polling`), so each hand-over waits half a
polling interval on average, several times per exchange, and every empty answer is an authenticated
HTTPS request that the SuperLink and the sites pay for on the same cores as the training.

:func:`hold_empty_answers` makes the server side of those polls *hold* an empty answer for up to
``hold`` seconds and answer as soon as the state it reads changes (a message, reply, task or object
stored in this process: the same state the handler reads, so a wake-up is never missed: the change
counter is read before the handler looks). The answer is then exactly the one Flower would have
given on the next poll, only sooner; the handler is called again, unchanged, to produce it. A holding
server is told apart by the poller from the time an empty answer took
(:class:`~common.flower_polling.PollClock` ``held_after``), so a site polling a stock SuperLink keeps
its timer.

Patched in the process that calls it, and only where Flower 1.42 keeps these functions; another
Flower leaves them alone and the caller is told, so the worst case is Flower's own latency.
"""

from __future__ import annotations

import functools
import importlib
import threading
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["HOLD_SECONDS", "ROLES", "StateChanges", "changes", "hold_empty_answers"]

#: Longest hold of an empty answer: well under Flower's 30 s HTTP read timeout, and short enough that
#: a stopping run or a SuperNode going idle is noticed within it.
HOLD_SECONDS: Final = 1.0

_MARK: Final = "__fedscan_wakeup__"


class StateChanges:
    """A change counter with a condition: wait for the next change after a given count."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._count = 0

    @property
    def count(self) -> int:
        with self._condition:
            return self._count

    def bump(self) -> None:
        """Record one change and wake every waiter."""
        with self._condition:
            self._count += 1
            self._condition.notify_all()

    def wait_after(self, count: int, timeout: float) -> bool:
        """Wait until the counter has moved past ``count`` (at most ``timeout`` s); whether it has."""
        with self._condition:
            return self._condition.wait_for(lambda: self._count != count, timeout=max(0.0, timeout))


_CHANGES = StateChanges()


def changes() -> StateChanges:
    """This process's change counter (bumped by the patched state methods)."""
    return _CHANGES


#: State methods whose success may give a waiting poller its answer: (module, class, method).
_SIGNALS: Final = (
    ("flwr.supercore.corestate.in_memory_corestate", "InMemoryCoreState", "create_task"),
    ("flwr.supercore.corestate.sql_corestate", "SqlCoreState", "create_task"),
    ("flwr.server.superlink.linkstate.in_memory_linkstate", "InMemoryLinkState", "store_message_ins"),
    ("flwr.server.superlink.linkstate.in_memory_linkstate", "InMemoryLinkState", "store_message_res"),
    ("flwr.server.superlink.linkstate.sql_linkstate", "SqlLinkState", "store_message_ins"),
    ("flwr.server.superlink.linkstate.sql_linkstate", "SqlLinkState", "store_message_res"),
    ("flwr.supernode.nodestate.in_memory_nodestate", "InMemoryNodeState", "store_message"),
    ("flwr.supernode.nodestate.in_memory_nodestate", "InMemoryNodeState", "store_message_and_object_tree"),
    ("flwr.supercore.object_store.in_memory_object_store", "InMemoryObjectStore", "put"),
    ("flwr.supercore.object_store.sql_object_store", "SqlObjectStore", "put"),
)


def _no_messages(response: Any) -> bool:
    return len(response.messages_list) == 0


def _object_not_uploaded_yet(response: Any) -> bool:
    return bool(response.object_found) and not response.object_available


def _no_task(response: Any) -> bool:
    return not response.HasField("task")


_SUPERLINK_FLEET: Final = "flwr.superlink.servicer.fleet.fleet_handlers"
_SUPERLINK_RUNTIME: Final = "flwr.superlink.servicer.runtime.runtime_handlers"
_SUPERNODE_RUNTIME: Final = "flwr.supernode.servicer.runtime.runtime_handlers"

#: Handlers that may hold an empty answer, by process: (module, function, "is the answer empty").
ROLES: Final[dict[str, tuple[tuple[str, str, Callable[[Any], bool]], ...]]] = {
    "superlink": (
        (_SUPERLINK_FLEET, "pull_messages", _no_messages),  # a SuperNode waiting for work
        (_SUPERLINK_FLEET, "pull_object", _object_not_uploaded_yet),
        (_SUPERLINK_RUNTIME, "pull_messages", _no_messages),  # the ServerApp waiting for replies
        (_SUPERLINK_RUNTIME, "pull_object", _object_not_uploaded_yet),
        (_SUPERLINK_RUNTIME, "acquire_task", _no_task),  # the executor waiting for a ServerApp task
    ),
    "supernode": (
        (_SUPERNODE_RUNTIME, "acquire_task", _no_task),  # the executor waiting for a ClientApp task
        (_SUPERNODE_RUNTIME, "pull_object", _object_not_uploaded_yet),
    ),
}


def _signalling(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        _CHANGES.bump()
        return result

    setattr(wrapper, _MARK, True)
    return wrapper


def _holding(handler: Callable[..., Any], is_empty: Callable[[Any], bool], hold: float) -> Callable[..., Any]:
    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + hold
        while True:
            seen = _CHANGES.count  # before looking, so a change during the look is not missed
            response = handler(*args, **kwargs)
            left = deadline - time.monotonic()
            if left <= 0 or not is_empty(response):
                return response
            _CHANGES.wait_after(seen, left)

    setattr(wrapper, _MARK, True)
    return wrapper


def _import(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def hold_empty_answers(role: str, hold: float = HOLD_SECONDS) -> list[str]:
    """Make this process (``superlink`` or ``supernode``) hold empty poll answers; return what changed.

    Idempotent. Skips what this Flower version lacks.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}.")
    if not 0 < hold <= 10:
        raise ValueError(f"hold must be in (0, 10] seconds, got {hold}.")
    changed: list[str] = []
    for module_name, class_name, method_name in _SIGNALS:
        owner = getattr(_import(module_name), class_name, None)
        method = owner.__dict__.get(method_name) if isinstance(owner, type) else None
        if callable(method) and not getattr(method, _MARK, False):
            setattr(owner, method_name, _signalling(method))
            changed.append(f"{class_name}.{method_name}")
    for module_name, function_name, is_empty in ROLES[role]:
        module = _import(module_name)
        handler = getattr(module, function_name, None)
        if callable(handler) and not getattr(handler, _MARK, False):
            setattr(module, function_name, _holding(handler, is_empty, hold))
            changed.append(f"{module_name}.{function_name}")
    return changed
