"""Flower's quick request look-ups run on the event loop, with the same answers (real apps)."""

from __future__ import annotations

import json
from collections.abc import Callable

# Flower's own SuperNode app, stock and with its look-ups in place, sent the same requests; the
# SuperNode's state factory notes the thread its state is asked from (the state dependency).
_SUPERNODE = """
import asyncio, json, threading
import httpx
from fastapi import Depends, FastAPI
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supernode import main as supernode_main
from flwr.supernode.nodestate import NodeStateFactory

from common.flower_runtime.inline_dependencies import inline_flower_dependencies

class NotingFactory(NodeStateFactory):
    threads = []
    def state(self):
        NotingFactory.threads.append(threading.current_thread().name)
        return super().state()

def own_dependency():  # not Flower's: stays in the thread pool
    return threading.current_thread().name

own = FastAPI()
@own.get("/thread")
async def thread(name: str = Depends(own_dependency)):
    return {"thread": name}

PB = {"content-type": "application/protobuf"}
ACQUIRE = AcquireTaskRequest().SerializeToString()
REQUESTS = {
    "acquire task": ("POST", "/v1/runtime/acquire-task", ACQUIRE, PB),
    "unsigned acquire task": ("POST", "/v1/runtime/acquire-task", ACQUIRE, PB),
    "task input without token": ("POST", "/v1/runtime/pull-task-input", b"", PB),
    "incompatible version": ("POST", "/v1/runtime/acquire-task", b"",
                             {**PB, "flwr-component-name": "SuperExec", "flwr-package-version": "0.1.0"}),
}

async def ask(app, method, path, body, headers):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://supernode") as c:
        r = await c.request(method, path, content=body, headers=headers)
        return [r.status_code, sorted(r.headers.items()), r.content.hex()]

def answers():
    NotingFactory.threads.clear()
    plain = supernode_main.create_app(state_factory=NotingFactory(ObjectStoreFactory()))
    signed = supernode_main.create_app(state_factory=NotingFactory(ObjectStoreFactory()),
                                       superexec_auth_secret=b"s" * 32)
    got = {label: asyncio.run(ask(signed if label.startswith("unsigned") else plain, *request))
           for label, request in REQUESTS.items()}
    own_thread = asyncio.run(ask(own, "GET", "/thread", None, {}))[2]
    return got, sorted(set(NotingFactory.threads)), bytes.fromhex(own_thread).decode()

stock = answers()
inlined = inline_flower_dependencies()
again = inline_flower_dependencies()
in_place = answers()
print(json.dumps({"inlined": inlined, "again": again, "stock": stock, "in_place": in_place,
                  "loop": threading.current_thread().name}))
"""


def test_flower_lookups_run_on_the_event_loop_with_the_same_answers(
    fresh_python: Callable[[str], str],
) -> None:
    result = json.loads(fresh_python(_SUPERNODE).strip().splitlines()[-1])
    assert result["inlined"] and result["again"] == result["inlined"]  # idempotent
    (stock_answers, stock_threads, stock_own), (answers, threads, own) = result["stock"], result["in_place"]
    for label, answer in answers.items():
        assert answer == stock_answers[label], label
    assert answers["acquire task"][0] == 200
    assert answers["unsigned acquire task"][0] == 401  # the executor's signature is still checked
    assert answers["task input without token"][0] == 401  # and the task token
    assert answers["incompatible version"][0] != 200  # and the peer's version
    # The state is looked up on the event loop's thread now, in a worker thread before; a dependency
    # that is not Flower's still runs in the pool.
    assert result["loop"] in threads and len(threads) == 1
    assert result["loop"] not in stock_threads
    assert result["loop"] not in own and result["loop"] not in stock_own


_OTHER_RELEASE = """
import flwr.supercore.version as version
version.package_version = "1.43.0"
import fastapi.dependencies.utils as utils
from common.flower_runtime.inline_dependencies import inline_flower_dependencies
print(inline_flower_dependencies(), utils.run_in_threadpool.__module__)
"""


def test_another_flower_release_is_left_alone(fresh_python: Callable[[str], str]) -> None:
    assert fresh_python(_OTHER_RELEASE).strip().splitlines()[-1] == "[] starlette.concurrency"
