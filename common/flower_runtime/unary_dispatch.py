"""Run Flower's HTTP middleware on its one-message routes without Starlette's streaming plumbing.

Flower 1.42's SuperLink and SuperNode are FastAPI apps whose middleware are Starlette
``BaseHTTPMiddleware`` layers: every request crossing one gets its own task group, a memory stream
for the response and a cancel-scope watch for disconnects, so that a layer can pass a streamed
response on while it is still being produced. That plumbing costs about 0.6-0.9 ms of CPU per layer
and request here (a no-op layer measured on Starlette alone), and every request of a federation
crosses two or three such layers (error translation, protobuf translation and, at the SuperLink,
node authentication): about 650 requests per SecAgg+ round on the same two cores as the training.

The Fleet and Runtime APIs' protobuf routes answer each request with one protobuf message (every
route in Flower 1.42's ``PROTOBUF_REQUEST_TYPES`` under those prefixes returns a ``Message``; only
Control routes stream). For those requests :class:`UnaryDispatchMiddleware` calls the layer's own
``dispatch`` function with a ``call_next`` that runs the rest of the app in the same task and hands
back its whole response; every other request (Control, health, the streamed Responses API) goes
through Starlette's stock layer. So each layer's code runs as written, in the same order, on the same
request (its body replayed to the app behind it, as Starlette does), and sees the same response:
status, headers and body; an exception behind a layer reaches it as it does through Starlette.

Patched only on Flower 1.42, whose routes were read for this, in the processes fedscan starts
(:mod:`common.flower_runtime.polling`): the SuperNode's app through :func:`buffer_supernode_app`, the
SuperLink's through :mod:`common.flower_runtime.superlink_middleware`. Another Flower is left alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection
from functools import cache, partial
from typing import Any, Final, cast

from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.flower_runtime import is_supported

__all__ = [
    "UNARY_PREFIXES",
    "UnaryDispatchMiddleware",
    "buffer_supernode_app",
    "buffered",
    "buffered_factory",
    "flower_checked",
    "is_unary_request",
    "request_path",
]

#: The Flower release whose routes were read (every Fleet and Runtime protobuf route is unary).
UNARY_PREFIXES: Final = ("/v1/fleet/", "/v1/runtime/")
_PATH_KEY: Final = "fedscan.url_path"
_SUPERNODE_APP_MODULE: Final = "flwr.supernode.main"


def request_path(scope: Scope) -> str:
    """The path as Flower's middleware reads it (``Request.url.path``), worked out once per request.

    Several layers ask for it; building Starlette's URL each time showed in the SuperLink's profile.
    Kept in the scope with the raw path it came from, so a rewritten path is read afresh.
    """
    cached = scope.get(_PATH_KEY)
    if cached is not None and cached[0] == scope["path"]:
        return str(cached[1])
    path = Request(scope).url.path
    scope[_PATH_KEY] = (scope["path"], path)
    return path


def is_unary_request(scope: Scope) -> bool:
    """Whether ``scope`` is an HTTP request for a Fleet or Runtime protobuf route (one message back)."""
    if scope["type"] != "http":
        return False
    path = request_path(scope)
    return path.startswith(UNARY_PREFIXES) and (scope.get("method"), path) in _protobuf_routes()


@cache
def _protobuf_routes() -> Collection[tuple[str, str]]:
    """Flower's protobuf routes (asked by every layer on every request: looked up once)."""
    from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES

    return frozenset(PROTOBUF_REQUEST_TYPES)


class _ReplayedRequest(Request):
    """A request whose body, once read by a layer, is handed again to the app behind it."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        super().__init__(scope, receive)
        self._replayed = False

    async def receive_for_app(self) -> Message:
        """What the app behind the layer receives: the body the layer read, then the client's messages."""
        if not self._replayed:
            body = getattr(self, "_body", None)
            if body is not None:
                self._replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            if self._stream_consumed:
                self._replayed = True
                return {"type": "http.request", "body": b"", "more_body": False}
        return await self.receive()


class UnaryDispatchMiddleware:
    """Runs a ``BaseHTTPMiddleware`` layer's ``dispatch`` in-task, with a buffered response, on unary routes.

    ``middleware`` is the layer's class (options as for it); requests for which ``is_unary_request``
    is false go through the stock layer.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        middleware: Callable[..., BaseHTTPMiddleware],
        **options: Any,
    ) -> None:
        self.app = app
        self.stock = middleware(app, **options)
        self.dispatch = self.stock.dispatch_func

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_unary_request(scope):
            await self.stock(scope, receive, send)
            return
        request = _ReplayedRequest(scope, receive)

        async def call_next(_: Request) -> Response:
            return await self._whole_response(scope, request.receive_for_app)

        response = await self.dispatch(request, call_next)
        await response(scope, receive, send)

    async def _whole_response(self, scope: Scope, receive: Receive) -> Response:
        start: Message | None = None
        body: list[bytes] = []

        async def keep(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(scope, receive, keep)
        if start is None:
            raise RuntimeError("No response returned.")
        response = Response(b"".join(body), status_code=start["status"])
        response.raw_headers = list(start.get("headers", []))
        return response


def buffered(entry: Middleware) -> Middleware:
    """``entry`` run by :class:`UnaryDispatchMiddleware` if it is a ``BaseHTTPMiddleware`` layer."""
    if not (isinstance(entry.cls, type) and issubclass(entry.cls, BaseHTTPMiddleware)):
        return entry
    return Middleware(UnaryDispatchMiddleware, *entry.args, middleware=entry.cls, **entry.kwargs)


def buffered_factory(cls: Callable[..., ASGIApp]) -> Callable[..., ASGIApp]:
    """``cls`` as a layer factory run by :class:`UnaryDispatchMiddleware` if it is ``BaseHTTPMiddleware``."""
    if isinstance(cls, type) and issubclass(cls, BaseHTTPMiddleware):
        return partial(UnaryDispatchMiddleware, middleware=cls)
    return cast(Callable[..., ASGIApp], cls)


def flower_checked() -> bool:
    """Whether the installed Flower is the release whose routes were read (the package's one gate)."""
    return is_supported()


def buffer_supernode_app() -> list[str]:
    """Make the SuperNode app built in this process run its middleware buffered on unary routes.

    Returns what was patched (empty if Flower is not 1.42 or not laid out as it). Idempotent.
    """
    if not flower_checked():
        return []
    try:
        module = importlib.import_module(_SUPERNODE_APP_MODULE)
    except ImportError:
        return []
    create_app: Callable[..., Any] | None = getattr(module, "create_app", None)
    if create_app is None:
        return []
    original: Callable[..., Any] = getattr(create_app, "__wrapped__", create_app)

    def create_buffered_app(*args: Any, **kwargs: Any) -> Any:
        app = original(*args, **kwargs)
        app.user_middleware[:] = [buffered(entry) for entry in app.user_middleware]
        return app

    create_buffered_app.__wrapped__ = original  # type: ignore[attr-defined]
    module.create_app = create_buffered_app  # type: ignore[attr-defined]
    return [f"{_SUPERNODE_APP_MODULE}.create_app"]
