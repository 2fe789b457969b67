"""The SuperLink's control-plane gate: peers off the coordinator's loopback reach only the Fleet routes.

Flower 1.42 serves its Fleet API (the sites' SuperNodes), Control API (``flwr`` commands: register and
unregister nodes, start and stop runs) and Runtime API (the ServerApp's executor) from one HTTP listener,
and the open-source Control API has no authentication: anyone who can reach the port and holds the
federation's CA certificate (every site kit has it) could register a rogue node, unregister a site or run
any app bundle on the coordinator. fedscan keeps the one listener (sites on other machines must reach
the Fleet API) and puts :class:`FleetOnlyGate` in front of Flower's whole application, outside every
Flower middleware layer:

* a request from a loopback peer (``127.0.0.0/8``, ``::1``, IPv4-mapped loopback) passes unchanged: the
  coordinator's own ``flwr`` CLI, executor and ServerApp run on the coordinator;
* any other peer may send exactly ``POST`` to one of the Fleet routes a SuperNode uses (the app's own
  ``/v1/fleet/...`` routes minus node self-registration, which node authentication refuses anyway);
  everything else (Control, Runtime, health, the OpenAPI pages, websockets) is answered ``403`` before
  Flower sees it;
* and its request body may be at most :data:`MAX_REMOTE_BODY` bytes: Flower reads a whole body before
  its node authentication runs, so an unauthenticated peer could otherwise make the SuperLink hold any
  amount of memory (a 600 MiB push raised its resident memory by 580 MB). A SuperNode's largest request
  carries one object chunk (Flower's 5 MiB) and its framing; a larger declared body is answered ``413``,
  and a body that grows past the limit while streaming is cut off as a disconnect.

The match is on the exact request path, before any of Flower's layers could interpret it, so no
encoding or prefix trick turns an allowed path into a Control route. A reverse proxy on the coordinator
host would make every peer look like loopback: fedscan does not support one in front of the SuperLink
(``docs/deployment.md``). Remote control needs its own credentials and is not offered: an operator
controls the coordinator from a shell on it (or through an SSH tunnel, whose keys sites never hold).

Installed in the SuperLink process by :func:`install_control_gate` (fedscan's launcher), which wraps
``flwr.superlink.main.create_app`` so that every app it builds carries the gate as its outermost layer,
and refuses to go on if it cannot (another Flower layout): this gate never falls back.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
from collections.abc import Callable, Iterable
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import ConfigError
from common.flower_runtime import require_supported

__all__ = [
    "GATE_MARK",
    "MAX_REMOTE_BODY",
    "SELF_REGISTRATION_ROUTES",
    "FleetOnlyGate",
    "fleet_routes",
    "install_control_gate",
    "is_loopback_peer",
]

_APP_MODULE: Final = "flwr.superlink.main"
_FLEET_PREFIX: Final = "/v1/fleet/"
#: Fleet routes a SuperNode with an authenticated node key never calls (it is registered by the
#: coordinator through the Control API); Flower refuses them under node authentication as well.
SELF_REGISTRATION_ROUTES: Final = frozenset({"/v1/fleet/register-node", "/v1/fleet/unregister-node"})
#: The routes a SuperNode needs; if the app lacks one, this is not the Flower the gate was written for.
_SUPERNODE_ROUTES: Final = frozenset(
    {
        "/v1/fleet/activate-node",
        "/v1/fleet/send-node-heartbeat",
        "/v1/fleet/pull-messages",
        "/v1/fleet/push-messages",
        "/v1/fleet/get-run",
        "/v1/fleet/get-fab",
        "/v1/fleet/pull-object",
        "/v1/fleet/push-object",
        "/v1/fleet/confirm-message-received",
    }
)
#: Largest request body a peer off loopback may send: three of Flower's 5 MiB object chunks.
MAX_REMOTE_BODY: Final = 16 * 1024 * 1024
#: Attribute set on a wrapped ``create_app``, so that installing twice changes nothing.
GATE_MARK: Final = "__fedscan_control_gate__"
_REFUSAL: Final = json.dumps(
    {"detail": "fedscan: only the Fleet API is served to peers outside the coordinator's loopback."}
).encode()
_TOO_LARGE: Final = json.dumps({"detail": "fedscan: request body too large."}).encode()


def is_loopback_peer(client: Iterable[Any] | None) -> bool:
    """Whether an ASGI ``scope["client"]`` (``(host, port)``) is a loopback address.

    An unknown peer (``None``, a Unix socket, a name that is not an IP address) is *not* loopback.
    """
    if not client:
        return False
    host = str(next(iter(client), ""))
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class FleetOnlyGate:
    """ASGI middleware: loopback peers pass; other peers may only ``POST`` to ``remote_paths``.

    Parameters
    ----------
    app
        The application behind the gate (Flower's whole SuperLink app, middleware included).
    remote_paths
        Exact request paths a non-loopback peer may ``POST`` to.
    """

    def __init__(
        self, app: ASGIApp, *, remote_paths: frozenset[str], max_body: int = MAX_REMOTE_BODY
    ) -> None:
        if not remote_paths:
            raise ValueError("FleetOnlyGate needs at least one path that remote peers may reach.")
        self.app = app
        self.remote_paths = remote_paths
        self.max_body = max_body
        self.refused = 0  # requests turned away, for tests and logs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket") and not is_loopback_peer(scope.get("client")):
            allowed = (
                kind == "http" and scope.get("method") == "POST" and scope.get("path") in self.remote_paths
            )
            if not allowed:
                self.refused += 1
                await self._refuse(scope, send, 403, _REFUSAL)
                return
            declared = dict(scope.get("headers", ())).get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                self.refused += 1
                await self._refuse(scope, send, 413, _TOO_LARGE)
                return
            receive = self._bounded(receive)
        await self.app(scope, receive, send)

    def _bounded(self, receive: Receive) -> Receive:
        """``receive``, turning a body that grows past :attr:`max_body` into a client disconnect."""
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    self.refused += 1
                    return {"type": "http.disconnect"}
            return message

        return bounded

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, body: bytes) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def fleet_routes(app: Any) -> frozenset[str]:
    """The ``POST`` Fleet routes of a built SuperLink ``app`` that a remote SuperNode may use.

    Raises
    ------
    ConfigError
        If the app lacks a route a SuperNode needs (a Flower laid out differently from the supported one).
    """
    from fastapi.routing import iter_route_contexts

    paths = set()
    for context in iter_route_contexts(app.routes):
        path = getattr(context, "path", None) or getattr(context.route, "path", "")
        methods = getattr(context.route, "methods", None) or set()
        if str(path).startswith(_FLEET_PREFIX) and "POST" in methods:
            paths.add(str(path))
    paths -= SELF_REGISTRATION_ROUTES
    missing = _SUPERNODE_ROUTES - paths
    if missing:
        raise ConfigError(
            "The SuperLink's Fleet API lacks routes the control-plane gate expects "
            f"({', '.join(sorted(missing))}); refusing to start an ungated SuperLink."
        )
    return frozenset(paths)


def install_control_gate() -> str:
    """Make every SuperLink app built in this process carry :class:`FleetOnlyGate` outermost.

    Idempotent. Returns a one-line description of what was changed.

    Raises
    ------
    ConfigError
        On a Flower release other than the supported one, or if ``create_app`` is not where Flower
        1.42 keeps it: the SuperLink must not start without the gate.
    """
    require_supported("The SuperLink's control-plane gate")
    try:
        module = importlib.import_module(_APP_MODULE)
    except ImportError as error:
        raise ConfigError(f"Cannot gate the SuperLink: {_APP_MODULE} does not import ({error}).") from None
    create_app: Callable[..., Any] | None = getattr(module, "create_app", None)
    if create_app is None:
        raise ConfigError(f"Cannot gate the SuperLink: {_APP_MODULE}.create_app is missing.")
    if getattr(create_app, GATE_MARK, False):
        return f"{_APP_MODULE}.create_app (already gated)"

    def gated_create_app(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.add_middleware(FleetOnlyGate, remote_paths=fleet_routes(app))
        if getattr(app.user_middleware[0], "cls", None) is not FleetOnlyGate:
            raise ConfigError("The control-plane gate is not the SuperLink app's outermost layer; refusing.")
        return app

    setattr(gated_create_app, GATE_MARK, True)
    gated_create_app.__doc__ = create_app.__doc__
    module.create_app = gated_create_app  # type: ignore[attr-defined]
    return f"{_APP_MODULE}.create_app (Fleet routes only for non-loopback peers)"
