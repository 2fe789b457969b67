"""Middleware run in-task on unary routes answers every request as Starlette's stock layer does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from common.flower_runtime.unary_dispatch import UnaryDispatchMiddleware, buffered, is_unary_request

UNARY = "/v1/runtime/pull-task-input"  # a Flower 1.42 Runtime protobuf route
FAILING = "/v1/runtime/push-task-output"
STREAMED = "/v1/control/stream-logs"  # a Control route: streamed, so left to Starlette


class Refused(Exception):
    """Raised by the app behind the layer, translated by the layer."""


async def inspecting_layer(request: Request, call_next: RequestResponseEndpoint) -> Response:
    """Reads the body, leaves state for the app, translates its error and edits its response."""
    request.state.seen = len(await request.body())
    try:
        response = await call_next(request)
    except Refused as error:
        return JSONResponse({"refused": str(error)}, status_code=409)
    response.headers["x-layer"] = f"{response.status_code}:{response.headers.get('content-length')}"
    return response


async def echo(request: Request) -> Response:
    body = await request.body()  # the layer read it first: the app still gets all of it
    return Response(body[::-1] + str(request.state.seen).encode(), media_type="application/protobuf")


async def refuse(request: Request) -> Response:
    raise Refused(f"{len(await request.body())} bytes")


async def stream(_: Request) -> Response:
    return StreamingResponse(iter([b"one,", b"two"]), media_type="text/plain")


def _app(middleware: Middleware) -> Starlette:
    routes = [
        Route(UNARY, echo, methods=["POST"]),
        Route(FAILING, refuse, methods=["POST"]),
        Route(STREAMED, stream, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[middleware])


async def _answers(app: Starlette) -> list[list[object]]:
    answers: list[list[object]] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
        for path in (UNARY, FAILING, STREAMED, "/v1/runtime/nowhere"):
            reply = await client.post(path, content=b"message body " * 1000)
            answers.append([reply.status_code, sorted(reply.headers.items()), reply.content])
    return answers


def test_a_layer_sees_and_answers_the_same_in_task_as_through_starlette() -> None:
    stock_entry = Middleware(BaseHTTPMiddleware, dispatch=inspecting_layer)
    buffered_entry = buffered(stock_entry)
    assert buffered_entry.cls is UnaryDispatchMiddleware

    stock = asyncio.run(_answers(_app(stock_entry)))
    in_task = asyncio.run(_answers(_app(buffered_entry)))

    assert in_task == stock
    echoed, refused, streamed, missing = in_task
    assert echoed[0] == 200 and echoed[2] == (b"message body " * 1000)[::-1] + b"13000"
    assert ("x-layer", "200:13005") in echoed[1]
    assert refused[0] == 409 and json.loads(refused[2]) == {"refused": "13000 bytes"}
    assert streamed[2] == b"one,two"
    assert missing[0] == 404


def test_only_fleet_and_runtime_protobuf_routes_are_run_in_task() -> None:
    def scope(method: str, path: str, kind: str = "http") -> dict[str, object]:
        return {"type": kind, "method": method, "path": path, "root_path": "", "headers": []}

    assert is_unary_request(scope("POST", "/v1/fleet/pull-messages"))
    assert is_unary_request(scope("POST", "/v1/runtime/pull-task-input"))
    assert not is_unary_request(scope("GET", "/v1/runtime/pull-task-input"))
    assert not is_unary_request(scope("POST", "/v1/control/stream-logs"))  # streamed
    assert not is_unary_request(scope("POST", "/v1/control/list-runs"))  # Control: left to Starlette
    assert not is_unary_request(scope("POST", "/v1/runtime/responses"))  # may stream
    assert not is_unary_request(scope("GET", "/health"))
    assert not is_unary_request(scope("POST", "/v1/runtime/pull-task-input", kind="websocket"))


# Flower's own SuperNode app, stock and with its middleware run in-task, sent the same requests.
_SUPERNODE = """
import asyncio, json
import httpx
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supernode import main as supernode_main
from flwr.supernode.nodestate import NodeStateFactory

from common.flower_runtime.unary_dispatch import buffer_supernode_app

stock = supernode_main.create_app(state_factory=NodeStateFactory(ObjectStoreFactory()))
patched = buffer_supernode_app()
again = buffer_supernode_app()
in_task = supernode_main.create_app(state_factory=NodeStateFactory(ObjectStoreFactory()))

PB = {"content-type": "application/protobuf"}
REQUESTS = {
    "acquire task": ("POST", "/v1/runtime/acquire-task", AcquireTaskRequest().SerializeToString(), PB),
    "malformed": ("POST", "/v1/runtime/acquire-task", b"\\xff\\xff", PB),
    "wrong media type": ("POST", "/v1/runtime/acquire-task", b"", {"content-type": "text/plain"}),
    "task input without token": ("POST", "/v1/runtime/pull-task-input", b"", PB),
    "health": ("GET", "/health", None, {}),
}

async def ask(app, method, path, body, headers):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://supernode") as c:
        r = await c.request(method, path, content=body, headers=headers)
        return [r.status_code, sorted(r.headers.items()), r.content.hex()]

answers = {label: [asyncio.run(ask(stock, *request)), asyncio.run(ask(in_task, *request))]
           for label, request in REQUESTS.items()}
layers = [entry.cls.__name__ for entry in in_task.user_middleware]
print(json.dumps({"patched": patched, "again": again, "layers": layers, "answers": answers}))
"""


def test_the_supernode_answers_as_before_with_its_middleware_in_task(
    fresh_python: Callable[[str], str],
) -> None:
    result = json.loads(fresh_python(_SUPERNODE).strip().splitlines()[-1])
    assert result["patched"] == ["flwr.supernode.main.create_app"]
    assert result["again"] == result["patched"]  # idempotent
    assert result["layers"] == ["UnaryDispatchMiddleware", "UnaryDispatchMiddleware"]
    for label, (stock, in_task) in result["answers"].items():
        assert in_task == stock, label
    answers = result["answers"]
    assert answers["acquire task"][1][0] == 200
    assert answers["malformed"][1][0] == 400
    assert answers["task input without token"][1][0] == 401


_OTHER_RELEASE = """
import flwr.supercore.version as version
version.package_version = "1.43.0"
from flwr.supernode import main as supernode_main
from common.flower_runtime.unary_dispatch import buffer_supernode_app
print(buffer_supernode_app(), supernode_main.create_app.__name__)
"""


def test_another_flower_release_is_left_alone(fresh_python: Callable[[str], str]) -> None:
    assert fresh_python(_OTHER_RELEASE).strip().splitlines()[-1] == "[] create_app"
