"""Flower's quick request steps run on the event loop, with the same answers (real apps)."""

from __future__ import annotations

import json
from collections.abc import Callable

# Flower's own SuperNode app, stock and with its quick steps in place, sent the same requests: a task
# is created in the SuperNode's state, acquired by an executor (a handler that may hold a poll) and
# pushes an object with its token (one that never waits). The state factory and the handlers note
# the thread they are called on.
_SUPERNODE = """
import asyncio, json, threading
import httpx
from fastapi import Depends, FastAPI
from flwr.proto.message_pb2 import PushObjectRequest
from flwr.proto.runtime_pb2 import AcquireTaskRequest, AcquireTaskResponse
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supernode import main as supernode_main
from flwr.supernode.nodestate import NodeStateFactory

from common.inline_calls import inline_flower_dependencies, inline_quick_handlers

THREADS = {}

def note(what):
    THREADS.setdefault(what, set()).add(threading.current_thread().name)

class NotingFactory(NodeStateFactory):
    def state(self):
        note("state dependency")
        return super().state()

class NotingHandlers:
    def __init__(self, handlers):
        self.handlers = handlers
    def __getattr__(self, name):
        def call(*args, **kwargs):
            note(name)
            return getattr(self.handlers, name)(*args, **kwargs)
        return call

def own_dependency():  # not Flower's: stays in the thread pool
    note("own dependency")

own = FastAPI()
@own.get("/own")
async def own_route(_: None = Depends(own_dependency)):
    return {}

PB = {"content-type": "application/protobuf"}
ACQUIRE = AcquireTaskRequest(supported_task_types=["clientapp"]).SerializeToString()
OBJECT = PushObjectRequest(object_id="ab" * 32, object_content=b"x").SerializeToString()

async def exchange(app, signed):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://supernode") as c:
        async def ask(path, body, **headers):
            r = await c.post(path, content=body, headers={**PB, **headers})
            return [r.status_code, sorted(r.headers.items()), r.content]
        got = {"unsigned acquire task": await ask("/v1/runtime/acquire-task", ACQUIRE)} if signed else {}
        if not signed:
            acquired = await ask("/v1/runtime/acquire-task", ACQUIRE)
            token = AcquireTaskResponse.FromString(acquired[2]).token
            acquired[2] = bool(token)  # a fresh random token and task id (so length) each time
            acquired[1] = [header for header in acquired[1] if header[0] != "content-length"]
            got["acquire task"] = acquired
            push = "/v1/runtime/push-object"
            got["push object"] = await ask(push, OBJECT, **{"flwr-task-token": token})
            got["push object, wrong token"] = await ask(push, OBJECT, **{"flwr-task-token": "x"})
            got["incompatible version"] = await ask("/v1/runtime/acquire-task", ACQUIRE,
                                                    **{"flwr-component-name": "SuperExec",
                                                       "flwr-package-version": "0.1.0"})
        await httpx.AsyncClient(transport=httpx.ASGITransport(app=own), base_url="http://own").get("/own")
        return {label: [status, headers, body if isinstance(body, bool) else body.hex()]
                for label, (status, headers, body) in got.items()}

def answers():
    apps = {}
    for signed in (False, True):
        factory = NotingFactory(ObjectStoreFactory())
        factory.state().create_task("clientapp", run_id=1)
        secret = b"s" * 32 if signed else None
        apps[signed] = supernode_main.create_app(state_factory=factory, superexec_auth_secret=secret)
        apps[signed].state.runtime_handlers = NotingHandlers(apps[signed].state.runtime_handlers)
    THREADS.clear()  # the requests' threads only
    got = {}
    for signed, app in apps.items():
        got.update(asyncio.run(exchange(app, signed)))
    return got, {what: sorted(names) for what, names in THREADS.items()}

stock = answers()
inlined = inline_flower_dependencies() + inline_quick_handlers()
again = inline_flower_dependencies() + inline_quick_handlers()
in_place = answers()
print(json.dumps({"inlined": inlined, "again": again, "stock": stock, "in_place": in_place,
                  "loop": threading.current_thread().name}))
"""


def test_flower_quick_steps_run_on_the_event_loop_with_the_same_answers(
    fresh_python: Callable[[str], str],
) -> None:
    result = json.loads(fresh_python(_SUPERNODE).strip().splitlines()[-1])
    assert result["inlined"] and result["again"] == result["inlined"]  # idempotent
    (stock_answers, stock_threads), (answers, threads) = result["stock"], result["in_place"]
    for label, answer in answers.items():
        assert answer == stock_answers[label], label
    assert answers["acquire task"][0] == 200 and answers["acquire task"][2] is True  # a task and its token
    assert answers["push object"][0] == 200
    assert answers["unsigned acquire task"][0] == 401  # the executor's signature is still checked
    assert answers["push object, wrong token"][0] == 401  # and the task token
    assert answers["incompatible version"][0] == 412  # and the peer's version
    loop = [result["loop"]]
    # Before: every step in a worker thread. Now the state look-up and the object's push run on the
    # event loop; acquiring a task (which may hold a poll) and a dependency not Flower's stay in the pool.
    assert all(result["loop"] not in names for names in stock_threads.values())
    assert threads["state dependency"] == loop
    assert threads["push_object"] == loop
    assert loop != threads["acquire_task"]
    assert loop != threads["own dependency"]


_OTHER_RELEASE = """
import flwr.supercore.version as version
version.package_version = "1.43.0"
import fastapi.dependencies.utils as dependencies
import flwr.supercore.protobuf.routing as routing
from common.inline_calls import inline_flower_dependencies, inline_quick_handlers
print(inline_flower_dependencies(), inline_quick_handlers(),
      dependencies.run_in_threadpool.__module__, routing.run_in_threadpool.__module__)
"""


def test_another_flower_release_is_left_alone(fresh_python: Callable[[str], str]) -> None:
    last = fresh_python(_OTHER_RELEASE).strip().splitlines()[-1]
    assert last == "[] [] starlette.concurrency starlette.concurrency"
