"""The SuperLink's app answers every request as before once idle middleware is skipped (real app)."""

from __future__ import annotations

import json
from collections.abc import Callable

from common.flower_runtime.superlink_middleware import API_OF_MIDDLEWARE

# Builds Flower's own SuperLink app twice in one interpreter, stock and with the one-API middleware
# skipped outside its API, and sends both the same requests through httpx's ASGI transport.
_COMPARE = """
import asyncio, json
import httpx
from flwr.proto.fleet_pb2 import PullMessagesRequest
from flwr.proto.node_pb2 import Node
from flwr.superlink import main as superlink_main

from common.flower_runtime.superlink_middleware import skip_idle_middleware

stock = superlink_main.create_app()
wrapped = skip_idle_middleware()
again = skip_idle_middleware()
lean = superlink_main.create_app()
for app in (stock, lean):
    app.state.enable_supernode_auth = True  # as `flower-superlink --enable-supernode-auth`

PB = {"content-type": "application/protobuf"}
UNSIGNED = PullMessagesRequest(node=Node(node_id=7)).SerializeToString()
REQUESTS = {
    "unsigned fleet": ("POST", "/v1/fleet/pull-messages", UNSIGNED, PB),
    "malformed fleet": ("POST", "/v1/fleet/pull-messages", b"\\xff\\xff", PB),
    "runtime without token": ("POST", "/v1/runtime/get-nodes", b"", PB),
    "sensitive control": ("POST", "/v1/control/get-login-details", b"", PB),
    "control": ("POST", "/v1/control/list-runs", b"", PB),
    "health": ("GET", "/health", None, {}),
}

async def ask(app, method, path, body, headers):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://superlink") as c:
        r = await c.request(method, path, content=body, headers=headers)
        kept = {k: v for k, v in r.headers.items() if k in ("cache-control", "pragma", "content-type")}
        return [r.status_code, kept, r.content.hex()]

answers = {label: [asyncio.run(ask(stock, *request)), asyncio.run(ask(lean, *request))]
           for label, request in REQUESTS.items()}
print(json.dumps({"wrapped": wrapped, "again": again, "answers": answers}))
"""


def test_every_request_gets_the_same_answer_with_idle_middleware_skipped(
    fresh_python: Callable[[str], str],
) -> None:
    result = json.loads(fresh_python(_COMPARE).strip().splitlines()[-1])
    names = {entry.rsplit(".", 1)[-1] for entry in result["wrapped"]}
    assert names == set(API_OF_MIDDLEWARE), "Flower's SuperLink middleware changed: nothing would be skipped"
    assert result["again"] == result["wrapped"]  # idempotent
    answers = result["answers"]
    for label, (stock, lean) in answers.items():
        assert stock[:2] == lean[:2], label  # status, content type and cache headers
        if label != "control":  # the list of runs carries the current time
            assert stock[2] == lean[2], label
    # Node authentication still guards the Fleet API, the task token the Runtime API, and the
    # Control API's sensitive routes still get their no-cache headers.
    assert answers["unsigned fleet"][1][0] == 401
    assert answers["runtime without token"][1][0] == 401
    assert answers["sensitive control"][1][1].get("cache-control") == "no-store"


# A Flower release whose middleware nobody has read: the SuperLink's middleware stays Flower's.
_OTHER_RELEASE = """
import flwr.supercore.version as version
version.package_version = "1.43.0"
from flwr.superlink import main as superlink_main
from common.flower_runtime.superlink_middleware import skip_idle_middleware
print(skip_idle_middleware(), superlink_main._get_middleware.__name__)
"""


def test_another_flower_release_is_left_alone(fresh_python: Callable[[str], str]) -> None:
    assert fresh_python(_OTHER_RELEASE).strip().splitlines()[-1] == "[] _get_middleware"


# With an event-log plugin configured, the lean app writes the same events as the stock one (Control
# API: a Fleet request would need a registered node's signature to reach its event-log layer; both
# layers are skipped and kept by the same rule).
_EVENT_LOG = """
import asyncio, json
import httpx
from flwr.superlink import main as superlink_main

from common.flower_runtime.superlink_middleware import skip_idle_middleware

class Recorder:
    def __init__(self):
        self.events = []
    def compose_log_before_event(self, request, context, account_info, method_name):
        return ("before", method_name)
    def compose_log_after_event(self, request, context, account_info, method_name, response):
        return ("after", method_name)
    def write_log(self, log_entry):
        self.events.append(list(log_entry))

stock = superlink_main.create_app()
skip_idle_middleware()
lean = superlink_main.create_app()

async def events(app):
    app.state.control_event_log_plugin = Recorder()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://superlink") as c:
        await c.post("/v1/control/list-runs", content=b"", headers={"content-type": "application/protobuf"})
    return app.state.control_event_log_plugin.events

print(json.dumps([asyncio.run(events(stock)), asyncio.run(events(lean))]))
"""


def test_events_are_written_as_before_when_an_event_log_is_configured(
    fresh_python: Callable[[str], str],
) -> None:
    stock, lean = json.loads(fresh_python(_EVENT_LOG).strip().splitlines()[-1])
    assert stock == [["before", "/v1/control/list-runs"], ["after", "/v1/control/list-runs"]]
    assert lean == stock
