"""Let Fleet and Runtime requests past the SuperLink's Control-API middleware, which does nothing for them.

Flower 1.42's SuperLink serves its Fleet API (the sites), Runtime API (the ServerApp) and Control API
(``flwr`` commands) from one FastAPI app, and every request crosses all eight of its middleware
layers, each a Starlette ``BaseHTTPMiddleware`` (a task group and a streamed copy of the response per
layer and request). Profiled in a deployed SecAgg+ round, the SuperLink, which serves every request of
the federation one at a time, spent most of its CPU in that machinery and little in Flower's handlers;
the requests queued behind each other and the round waited for them (``docs/performance.md``).

Six of the eight layers act on one API only and hand every other request straight to the next layer
(``call_next`` and nothing else, in Flower's own code): the four Control ones (no-cache headers on
sensitive routes, account authentication, licence check, Control event log) act only on
``/v1/control/`` paths, and node authentication and the Fleet event log only on ``/v1/fleet/`` paths.
:func:`skip_idle_middleware` wraps those six so that a request outside their API goes directly to the
layer inside: the same layers run, in the same order, on every request for which any of them does
anything; the path is read exactly as they read it (Starlette's ``Request.url.path``). The two event
log layers also hand every request on while no event-log plugin is configured (Flower's default), so
then they are skipped on their own API too. Error translation and protobuf translation still run on
every request, and the Fleet API's node authentication on every Fleet request.
The layers that run on a Fleet or Runtime request then run in-task, without Starlette's streaming
plumbing (:mod:`common.flower_runtime.unary_dispatch`: those routes answer with one message).

Patched in the process that calls it (fedscan's launcher, :mod:`common.flower_runtime.polling`), before the
SuperLink builds its app, and only on Flower 1.42 (whose code was read for what each layer does: one
of them is node authentication, so a newer Flower is not assumed to behave the same); another Flower
is left alone and the caller told, so the worst case is Flower's own speed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Final

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from common.flower_runtime import is_supported
from common.flower_runtime.unary_dispatch import buffered, buffered_factory, request_path

__all__ = [
    "API_OF_MIDDLEWARE",
    "PLUGIN_OF_MIDDLEWARE",
    "OneApiMiddleware",
    "skip_idle_middleware",
]

_APP_MODULE: Final = "flwr.superlink.main"
#: Flower 1.42's SuperLink middleware that acts on one API only, by class name: that API's path prefix.
API_OF_MIDDLEWARE: Final[dict[str, str]] = {
    "ControlSensitiveResponseMiddleware": "/v1/control/",
    "ControlAuthenticationMiddleware": "/v1/control/",
    "ControlLicenseMiddleware": "/v1/control/",
    "ControlEventLogMiddleware": "/v1/control/",
    "NodeAuthMiddleware": "/v1/fleet/",
    "FleetEventLogMiddleware": "/v1/fleet/",
}
#: Of those, the ones that act only with an event-log plugin configured: the ``app.state`` attribute
#: that holds it (Flower 1.42 sets it to ``None`` unless ``FLWR_ENABLE_EVENT_LOG=1``).
PLUGIN_OF_MIDDLEWARE: Final[dict[str, str]] = {
    "ControlEventLogMiddleware": "control_event_log_plugin",
    "FleetEventLogMiddleware": "fleet_event_log_plugin",
}


class OneApiMiddleware:
    """Runs ``middleware`` on HTTP requests under ``prefix``; every other request goes to ``app`` directly.

    ``middleware`` must hand requests outside ``prefix`` to ``call_next`` unchanged (what each class in
    :data:`API_OF_MIDDLEWARE` does in Flower 1.42); then this wrapper changes no request's outcome.
    With ``plugin``, requests also go to ``app`` directly while the app's ``state.<plugin>`` is
    ``None``: for middleware that then hands every request on unchanged (:data:`PLUGIN_OF_MIDDLEWARE`).
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        middleware: Callable[..., ASGIApp],
        prefix: str,
        plugin: str | None = None,
        **options: Any,
    ) -> None:
        self.inner = app
        self.wrapped: ASGIApp = middleware(app, **options)
        self.prefix = prefix
        self.plugin = plugin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (not request_path(scope).startswith(self.prefix) or self._idle(scope)):
            await self.inner(scope, receive, send)
        else:
            await self.wrapped(scope, receive, send)

    def _idle(self, scope: Scope) -> bool:
        """Whether the wrapped middleware has no plugin to act with (read per request, as it does)."""
        if self.plugin is None:
            return False
        state = getattr(scope.get("app"), "state", None)
        return state is not None and getattr(state, self.plugin, None) is None


def _wrapped(entry: Middleware) -> Middleware:
    name = getattr(entry.cls, "__name__", "")
    prefix = API_OF_MIDDLEWARE.get(name)
    if prefix is None:
        return buffered(entry)
    return Middleware(
        OneApiMiddleware,
        *entry.args,
        middleware=buffered_factory(entry.cls),
        prefix=prefix,
        plugin=PLUGIN_OF_MIDDLEWARE.get(name),
        **entry.kwargs,
    )


def skip_idle_middleware() -> list[str]:
    """Make the SuperLink built in this process skip one-API middleware outside its API.

    The middleware that still runs on a Fleet or Runtime request runs in-task on it
    (:class:`common.flower_runtime.unary_dispatch.UnaryDispatchMiddleware`).

    Returns the names of the middleware classes wrapped (empty if Flower is not laid out as 1.42 is).
    Idempotent.
    """
    if not is_supported():
        return []  # what a middleware does is read from Flower's code, version by version
    try:
        module = importlib.import_module(_APP_MODULE)
    except ImportError:
        return []
    build: Callable[[], list[Middleware]] | None = getattr(module, "_get_middleware", None)
    if build is None:
        return []
    original: Callable[[], list[Middleware]] = getattr(build, "__wrapped__", build)
    found = [getattr(entry.cls, "__name__", "") for entry in original()]
    if not set(API_OF_MIDDLEWARE) <= set(found):
        return []

    def lean_middleware() -> list[Middleware]:
        return [_wrapped(entry) for entry in original()]

    lean_middleware.__wrapped__ = original  # type: ignore[attr-defined]
    module._get_middleware = lean_middleware  # type: ignore[attr-defined]
    return [f"{_APP_MODULE}.{name}" for name in found if name in API_OF_MIDDLEWARE]
