"""Answer Flower's polls when there is something to answer, not on the poller's next timer.

In Flower 1.42's deployment engine every hand-over is a poll: a SuperNode asks the SuperLink for a
message, the executor asks its SuperNode for a task, the ServerApp asks the SuperLink for the sites'
replies, and whoever pulls a message's objects asks again until each one is uploaded. An empty answer
sends the poller to sleep (capped by :mod:`common.flower_runtime.polling`), so each hand-over waits half a
polling interval on average, several times per exchange, and every empty answer is an authenticated
HTTPS request that the SuperLink and the sites pay for on the same cores as the training.

:func:`hold_empty_answers` makes the server side of those polls *hold* an empty answer for up to
``hold`` seconds and answer as soon as the state it reads changes (a message, reply, task or object
stored in this process: the same state the handler reads, so a wake-up is never missed: the change
counter is read before the handler looks). A held poll wakes for its own news only: the pull of an
object when that object is stored, a SuperNode's poll when a message for that node is, the
ServerApp's when a reply is, an executor's when a task is (a state change about something else does
not make it look again). The answer is then exactly the one Flower would have
given on the next poll, only sooner; the handler is called again, unchanged, to produce it. A holding
server is told apart by the poller from the time an empty answer took
(:class:`~common.flower_runtime.polling.PollClock` ``held_after``), so a site polling a stock SuperLink keeps
its timer.

Patched in the process that calls it, and only where Flower 1.42 keeps these functions; another
Flower leaves them alone and the caller is told, so the worst case is Flower's own latency.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["HOLD_SECONDS", "ROLES", "StateChanges", "Watch", "changes", "hold_empty_answers"]

#: Longest hold of an empty answer: well under Flower's 30 s HTTP read timeout, and short enough that
#: a stopping run or a SuperNode going idle is noticed within it.
HOLD_SECONDS: Final = 1.0

_MARK: Final = "__fedscan_wakeup__"


#: What a change is about: an object id, a node's inbox, the replies, the tasks (``None``: anything).
Topic = Hashable
#: From a state method's or a handler's call (positional, keyword arguments): its topics / its topic.
TopicsOf = Callable[[tuple[Any, ...], dict[str, Any]], tuple[Topic, ...]]
TopicOf = Callable[[tuple[Any, ...], dict[str, Any]], Topic]


class StateChanges:
    """Change counters with conditions: wait for the next change after a given count, of one topic.

    Every change moves the overall count (what a SuperNode's wait for its ClientApp's reply watches);
    a change about a topic also moves that topic's count, kept only while someone watches it, so a
    held poll wakes for its own news only (one object uploaded wakes the pulls of that object, not
    every held request in the server).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._count = 0
        self._topics: dict[Topic, _Watched] = {}

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def bump(self, *topics: Topic) -> None:
        """Record one change (about ``topics``, if any) and wake whoever waits for it."""
        with self._lock:
            self._count += 1
            self._condition.notify_all()
            for topic in topics:
                watched = self._topics.get(topic)
                if watched is not None:
                    watched.count += 1
                    watched.condition.notify_all()

    def wait_after(self, count: int, timeout: float) -> bool:
        """Wait until the overall count has moved past ``count`` (at most ``timeout`` s); whether it has."""
        with self._lock:
            return self._condition.wait_for(lambda: self._count != count, timeout=max(0.0, timeout))

    @contextlib.contextmanager
    def watching(self, topic: Topic) -> Iterator[Watch]:
        """Watch ``topic`` (``None``: any change) for the duration of the block."""
        if topic is None:
            yield Watch(self, None)
            return
        with self._lock:
            watched = self._topics.setdefault(topic, _Watched(threading.Condition(self._lock)))
            watched.watchers += 1
        try:
            yield Watch(self, watched)
        finally:
            with self._lock:
                watched.watchers -= 1
                if not watched.watchers:
                    del self._topics[topic]


@dataclass
class _Watched:
    condition: threading.Condition
    count: int = 0
    watchers: int = 0


@dataclass(frozen=True)
class Watch:
    """One watcher's view of a topic's count (or the overall count)."""

    changes: StateChanges
    watched: _Watched | None

    @property
    def count(self) -> int:
        if self.watched is None:
            return self.changes.count
        with self.changes._lock:
            return self.watched.count

    def wait_after(self, count: int, timeout: float) -> bool:
        """Wait until the watched count has moved past ``count`` (at most ``timeout`` s); whether it has."""
        if self.watched is None:
            return self.changes.wait_after(count, timeout)
        watched = self.watched
        with self.changes._lock:
            return watched.condition.wait_for(lambda: watched.count != count, timeout=max(0.0, timeout))


_CHANGES = StateChanges()


def changes() -> StateChanges:
    """This process's change counters (bumped by the patched state methods)."""
    return _CHANGES


def _request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return kwargs["request"] if "request" in kwargs else args[0]


def _object_topic(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Topic:
    return ("object", str(_request(args, kwargs).object_id))


def _inbox_topic(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Topic:
    return ("inbox", int(_request(args, kwargs).node.node_id))


_REPLIES: Final = ("replies",)
_TASKS: Final = ("tasks",)


def _fixed(value: Any) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """A topic (or topics) that does not depend on the call."""
    return lambda _args, _kwargs: value


def _put_topics(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Topic, ...]:
    object_id = kwargs["object_id"] if "object_id" in kwargs else args[1]  # put(self, object_id, content)
    return (("object", str(object_id)),)


def _ins_topics(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Topic, ...]:
    message = kwargs["message"] if "message" in kwargs else args[1]  # store_message_ins(self, message)
    return (("inbox", int(message.metadata.dst_node_id)),)


_IN_MEMORY_LINK: Final = "flwr.server.superlink.linkstate.in_memory_linkstate"
_SQL_LINK: Final = "flwr.server.superlink.linkstate.sql_linkstate"
_NODE_STATE: Final = "flwr.supernode.nodestate.in_memory_nodestate"

#: State methods whose success may give a waiting poller its answer: (module, class, method, topics).
_SIGNALS: Final[tuple[tuple[str, str, str, TopicsOf], ...]] = (
    ("flwr.supercore.corestate.in_memory_corestate", "InMemoryCoreState", "create_task", _fixed((_TASKS,))),
    ("flwr.supercore.corestate.sql_corestate", "SqlCoreState", "create_task", _fixed((_TASKS,))),
    (_IN_MEMORY_LINK, "InMemoryLinkState", "store_message_ins", _ins_topics),
    (_IN_MEMORY_LINK, "InMemoryLinkState", "store_message_res", _fixed((_REPLIES,))),
    (_SQL_LINK, "SqlLinkState", "store_message_ins", _ins_topics),
    (_SQL_LINK, "SqlLinkState", "store_message_res", _fixed((_REPLIES,))),
    (_NODE_STATE, "InMemoryNodeState", "store_message", _fixed(())),
    (_NODE_STATE, "InMemoryNodeState", "store_message_and_object_tree", _fixed(())),
    ("flwr.supercore.object_store.in_memory_object_store", "InMemoryObjectStore", "put", _put_topics),
    ("flwr.supercore.object_store.sql_object_store", "SqlObjectStore", "put", _put_topics),
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

#: Handlers that may hold an empty answer, by process: (module, function, "is the answer empty",
#: the topic whose change may fill it).
ROLES: Final[dict[str, tuple[tuple[str, str, Callable[[Any], bool], TopicOf], ...]]] = {
    "superlink": (
        (_SUPERLINK_FLEET, "pull_messages", _no_messages, _inbox_topic),  # a SuperNode waiting for work
        (_SUPERLINK_FLEET, "pull_object", _object_not_uploaded_yet, _object_topic),
        (_SUPERLINK_RUNTIME, "pull_messages", _no_messages, _fixed(_REPLIES)),  # the ServerApp's replies
        (_SUPERLINK_RUNTIME, "pull_object", _object_not_uploaded_yet, _object_topic),
        (
            _SUPERLINK_RUNTIME,
            "acquire_task",
            _no_task,
            _fixed(_TASKS),
        ),  # the executor waiting for a ServerApp
    ),
    "supernode": (
        (_SUPERNODE_RUNTIME, "acquire_task", _no_task, _fixed(_TASKS)),  # the executor waiting for a task
        (_SUPERNODE_RUNTIME, "pull_object", _object_not_uploaded_yet, _object_topic),
    ),
}


def _signalling(method: Callable[..., Any], topics_of: TopicsOf) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        try:
            topics = topics_of(args, kwargs)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            topics = ()  # not the call Flower 1.42 makes: wake the pollers that watch anything
        _CHANGES.bump(*topics)
        return result

    setattr(wrapper, _MARK, True)
    return wrapper


def _holding(
    handler: Callable[..., Any],
    is_empty: Callable[[Any], bool],
    hold: float,
    topic_of: TopicOf = lambda _args, _kwargs: None,
) -> Callable[..., Any]:
    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + hold
        try:
            topic = topic_of(args, kwargs)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            topic = None  # not the request Flower 1.42 sends: wake on any change
        with _CHANGES.watching(topic) as watch:
            while True:
                seen = watch.count  # before looking, so a change during the look is not missed
                response = handler(*args, **kwargs)
                left = deadline - time.monotonic()
                if left <= 0 or not is_empty(response):
                    return response
                watch.wait_after(seen, left)

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
    for module_name, class_name, method_name, topics_of in _SIGNALS:
        owner = getattr(_import(module_name), class_name, None)
        method = owner.__dict__.get(method_name) if isinstance(owner, type) else None
        if callable(method) and not getattr(method, _MARK, False):
            setattr(owner, method_name, _signalling(method, topics_of))
            changed.append(f"{class_name}.{method_name}")
    for module_name, function_name, is_empty, topic_of in ROLES[role]:
        module = _import(module_name)
        handler = getattr(module, function_name, None)
        if callable(handler) and not getattr(handler, _MARK, False):
            setattr(module, function_name, _holding(handler, is_empty, hold, topic_of))
            changed.append(f"{module_name}.{function_name}")
    return changed
