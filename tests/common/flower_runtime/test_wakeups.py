"""Held poll answers: early on news, after the hold without it, on the real Flower handlers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from common.flower_runtime.polling import PollClock
from common.flower_runtime.wakeups import (
    ROLES,
    StateChanges,
    _holding,
    _object_topic,
    changes,
    hold_empty_answers,
)


def _answer(messages: list[str]) -> SimpleNamespace:
    return SimpleNamespace(messages_list=list(messages))


def test_a_held_poll_answers_as_soon_as_the_state_changes() -> None:
    inbox: list[str] = []

    def store_later() -> None:
        time.sleep(0.2)
        inbox.append("message for node 7")
        changes().bump()

    held = _holding(lambda: _answer(inbox), lambda r: not r.messages_list, hold=8.0)
    threading.Thread(target=store_later).start()
    started = time.monotonic()
    answer = held()
    assert answer.messages_list == ["message for node 7"]
    assert time.monotonic() - started < 6.0  # woken by the change, not by the 8 s hold


def test_a_held_poll_without_news_gives_the_empty_answer_after_the_hold() -> None:
    looks: list[float] = []

    def look() -> SimpleNamespace:
        looks.append(time.monotonic())
        return _answer([])

    started = time.monotonic()
    answer = _holding(look, lambda r: not r.messages_list, hold=0.3)()
    assert answer.messages_list == []
    assert time.monotonic() - started >= 0.3
    # Nothing changed: no busy polling, at most one last look once the hold ran out.
    assert len(looks) <= 2 and all(t - started >= 0.29 for t in looks[1:])


def test_a_change_between_looking_and_waiting_is_not_lost() -> None:
    inbox: list[str] = []

    def look_then_store() -> SimpleNamespace:
        answer = _answer(inbox)
        if not inbox:  # the message lands right after the handler looked, before the wait starts
            inbox.append("late")
            changes().bump()
        return answer

    started = time.monotonic()
    answer = _holding(look_then_store, lambda r: not r.messages_list, hold=8.0)()
    assert answer.messages_list == ["late"]
    assert time.monotonic() - started < 6.0


def test_a_held_poll_wakes_for_its_own_topic_only() -> None:
    uploaded: set[str] = set()
    looks: list[str] = []

    def pull(request: SimpleNamespace) -> SimpleNamespace:
        looks.append(request.object_id)
        return SimpleNamespace(object_found=True, object_available=request.object_id in uploaded)

    def upload_others_then_mine() -> None:
        for object_id in ("other-1", "other-2", "other-3"):
            time.sleep(0.05)
            uploaded.add(object_id)
            changes().bump(("object", object_id))
        time.sleep(0.05)
        uploaded.add("mine")
        changes().bump(("object", "mine"))

    held = _holding(pull, lambda r: not r.object_available, hold=8.0, topic_of=_object_topic)
    threading.Thread(target=upload_others_then_mine).start()
    started = time.monotonic()
    answer = held(request=SimpleNamespace(object_id="mine"))
    assert answer.object_available and time.monotonic() - started < 6.0
    assert looks == ["mine", "mine"]  # the other uploads did not wake it to look again


def test_state_changes_wait_for_the_next_change_only() -> None:
    counter = StateChanges()
    seen = counter.count
    assert not counter.wait_after(seen, 0.05)
    counter.bump()
    assert counter.wait_after(seen, 0.0)  # already moved on: no wait


def test_a_poller_asks_again_at_once_after_a_held_answer_and_waits_after_a_quick_one() -> None:
    clock = PollClock(0.3, held_after=0.1)
    time.sleep(0.15)  # the poll before this sleep took long: the server held it
    started = time.monotonic()
    clock.sleep(3)
    assert time.monotonic() - started < 0.1
    started = time.monotonic()
    clock.sleep(3)  # came straight back: a server that does not hold, keep the capped timer
    assert time.monotonic() - started >= 0.29


def test_a_supernode_waiting_for_its_clientapps_reply_wakes_when_it_is_stored() -> None:
    clock = PollClock(0.2, idle_after=10, idle_poll=3.0, local_wait=0.2)
    threading.Timer(0.02, changes().bump).start()
    started = time.monotonic()
    clock.sleep(0.5)
    assert time.monotonic() - started < 0.15


def test_hold_empty_answers_wraps_flowers_handlers_once_in_a_fresh_process(
    fresh_python: Callable[[str], str],
) -> None:
    code = (
        "from common.flower_runtime.wakeups import hold_empty_answers\n"
        "first = hold_empty_answers('superlink', 0.5)\n"
        "again = hold_empty_answers('superlink', 0.5)\n"
        "node = hold_empty_answers('supernode', 0.5)\n"
        "from flwr.superlink.servicer.fleet import fleet_handlers\n"
        "from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState\n"
        "assert fleet_handlers.pull_messages.__wrapped__.__name__ == 'pull_messages'\n"
        "assert InMemoryLinkState.store_message_res.__wrapped__.__name__ == 'store_message_res'\n"
        "print(len(first), len(again), len(node))\n"
        "print('\\n'.join(first + node))\n"
    )
    counts, *changed = fresh_python(code).splitlines()
    expected = {f"{module}.{name}" for role in ROLES.values() for module, name, _, _ in role}
    assert expected <= set(changed), "Flower moved a polled handler: the hold would silently not apply"
    assert "InMemoryLinkState.store_message_ins" in changed
    assert "InMemoryNodeState.store_message" in changed
    first, again, _node = (int(n) for n in counts.split())
    assert first > 0 and again == 0  # idempotent


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="role"):
        hold_empty_answers("serverapp")
    with pytest.raises(ValueError, match="hold"):
        hold_empty_answers("superlink", 0)


def test_topics_are_read_from_flowers_own_requests_and_state_calls() -> None:
    import inspect

    from flwr.proto.fleet_pb2 import PullMessagesRequest
    from flwr.proto.message_pb2 import PullObjectRequest
    from flwr.proto.node_pb2 import Node
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore

    from common.flower_runtime.wakeups import _inbox_topic, _ins_topics, _put_topics

    assert _object_topic((PullObjectRequest(object_id="abc"),), {}) == ("object", "abc")
    assert _inbox_topic((), {"request": PullMessagesRequest(node=Node(node_id=42))}) == ("inbox", 42)
    # The state methods are called as Flower 1.42 declares them: put(self, object_id, ...) and
    # store_message_ins(self, message); the wake-up reads the same arguments.
    assert list(inspect.signature(InMemoryObjectStore.put).parameters)[:2] == ["self", "object_id"]
    assert list(inspect.signature(InMemoryLinkState.store_message_ins).parameters)[:2] == ["self", "message"]
    assert _put_topics((None, "abc", b""), {}) == (("object", "abc"),)
    message = SimpleNamespace(metadata=SimpleNamespace(dst_node_id=42))
    assert _ins_topics((None,), {"message": message}) == (("inbox", 42),)
