"""The control-plane gate on Flower's own SuperLink app: what a peer off loopback may reach, and what not.

Requests go through Flower's real app (built by the gated ``create_app``) over an ASGI transport whose
client address is set per request, so the peer address is the one the gate sees in a deployment.
The real-process version, from another network namespace, is tests/test_control_plane.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from common.flower_runtime.control_gate import SELF_REGISTRATION_ROUTES, is_loopback_peer


@pytest.mark.parametrize(
    ("client", "loopback"),
    [
        (("127.0.0.1", 5), True),
        (("127.8.9.1", 5), True),
        (("::1", 5), True),
        (("::ffff:127.0.0.1", 5), True),
        (("10.0.0.1", 5), False),
        (("::ffff:10.0.0.1", 5), False),
        (("192.0.2.2", 5), False),
        (("fe80::1%eth0", 5), False),
        (("localhost", 5), False),  # a name is not an address: not trusted
        (None, False),
        ((), False),
    ],
)
def test_only_loopback_addresses_are_loopback(client: tuple | None, loopback: bool) -> None:  # type: ignore[type-arg]
    assert is_loopback_peer(client) is loopback


_THROUGH_FLOWERS_APP = """
import asyncio, json
import httpx
from common.flower_runtime.control_gate import install_control_gate, FleetOnlyGate
print(install_control_gate(), install_control_gate())  # idempotent
import flwr.superlink.main as main
app = main.create_app()
assert app.user_middleware[0].cls is FleetOnlyGate
paths = [
    ("POST", "/v1/control/start-run"), ("POST", "/v1/control/register-node"),
    ("POST", "/v1/control/list-nodes"),
    ("POST", "/v1/runtime/acquire-task"), ("POST", "/v1/runtime/pull-task-input"),
    ("POST", "/v1/fleet/register-node"), ("POST", "/v1/fleet/unregister-node"),
    ("POST", "/v1/fleet/get-run"), ("POST", "/v1/fleet/pull-messages"), ("GET", "/v1/fleet/get-run"),
    ("GET", "/health"), ("GET", "/docs"), ("GET", "/openapi.json"),
    ("POST", "/v1/control/start-run/"), ("POST", "//v1/control/start-run"),
    ("POST", "/v1/fleet/../control/start-run"),
    ("POST", "/v1/control%2Fstart-run"), ("POST", "/v1/fleet/get-run?x=/v1/control/start-run"),
]
async def ask(peer):
    transport = httpx.ASGITransport(app=app, client=(peer, 4711))
    async with httpx.AsyncClient(transport=transport, base_url="https://hub") as client:
        out = {}
        for method, path in paths:
            headers = {"content-type": "application/protobuf"}
            r = await client.request(method, path, content=b"", headers=headers)
            out[f"{method} {path}"] = r.status_code
        return out
print(json.dumps({"remote": asyncio.run(ask("10.1.2.3")), "loopback": asyncio.run(ask("127.0.0.1"))}))
"""


def test_a_remote_peer_reaches_only_the_supernodes_fleet_routes(fresh_python: Callable[[str], str]) -> None:
    result = json.loads(fresh_python(_THROUGH_FLOWERS_APP).strip().splitlines()[-1])
    remote, loopback = result["remote"], result["loopback"]
    # A Fleet route with a query string is still that Fleet route (Flower routes on the path).
    allowed = {
        "POST /v1/fleet/get-run",
        "POST /v1/fleet/pull-messages",
        "POST /v1/fleet/get-run?x=/v1/control/start-run",
    }
    for request, status in remote.items():
        if request in allowed:
            assert status != 403, request  # Flower itself answers (here: refusing an empty request)
        else:
            assert status == 403, request
    assert {f"POST {r}" for r in SELF_REGISTRATION_ROUTES} <= {r for r, s in remote.items() if s == 403}
    # Positive control: the same requests from loopback reach Flower (no 403 from the gate).
    assert loopback["POST /v1/control/list-nodes"] != 403 and loopback["GET /health"] == 200
    assert loopback["POST /v1/runtime/acquire-task"] != 403


_BODY_CAP = """
import asyncio, json
import httpx
from common.flower_runtime.control_gate import MAX_REMOTE_BODY, install_control_gate
install_control_gate()
import flwr.superlink.main as main
app = main.create_app()

async def chunks(total):
    sent = 0
    while sent < total:
        size = min(1 << 20, total - sent)
        sent += size
        yield b"x" * size

async def ask(peer):
    transport = httpx.ASGITransport(app=app, client=(peer, 4711))
    async with httpx.AsyncClient(transport=transport, base_url="https://hub") as client:
        headers = {"content-type": "application/protobuf"}
        url = "/v1/fleet/push-object"
        declared = await client.post(url, content=b"x" * (MAX_REMOTE_BODY + 1), headers=headers)
        streamed = await client.post(url, content=chunks(MAX_REMOTE_BODY + (1 << 20)), headers=headers)
        small = await client.post("/v1/fleet/push-object", content=b"x" * 1000, headers=headers)
        return [declared.status_code, streamed.status_code, small.status_code]

print(json.dumps({"remote": asyncio.run(ask("10.1.2.3")), "loopback": asyncio.run(ask("127.0.0.1"))}))
"""


def test_a_remote_peer_cannot_send_a_body_larger_than_the_cap(fresh_python: Callable[[str], str]) -> None:
    result = json.loads(fresh_python(_BODY_CAP).strip().splitlines()[-1])
    declared, streamed, small = result["remote"]
    assert declared == 413  # refused before a byte of it is read
    assert streamed != 200 and small not in (403, 413)  # the small one reaches Flower (node auth: 401)
    assert 413 not in result["loopback"]  # the coordinator's own tools are not capped
