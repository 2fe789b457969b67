"""With telemetry off, Flower's events are not built (no ``file`` process per task); with it on, untouched."""

from __future__ import annotations

import json
from collections.abc import Callable

# Flower's own event(): how many times building it ran `file` (through platform.architecture), and
# what it returned, before and after.
_EVENTS = """
import os
os.environ.update(FLWR_TELEMETRY_ENABLED="{enabled}", FLWR_TELEMETRY_LOGGING="0")  # read at Flower's import
import json, platform
from flwr.supercore import telemetry
from common.flower_runtime.telemetry import skip_unsent_telemetry

runs = [0]
architecture = platform.architecture
def counted(*args, **kwargs):
    runs[0] += 1
    return architecture(*args, **kwargs)
platform.architecture = counted

def one_event():
    before = runs[0]
    answer = telemetry.event(telemetry.EventType.FLWR_CLIENTAPP_RUN_ENTER).result(timeout=30)
    return answer, runs[0] - before

original = telemetry.create_event
before = one_event()
changed = skip_unsent_telemetry()
after = one_event()
print(json.dumps({"before": before, "after": after, "changed": changed,
                  "untouched": telemetry.create_event is original}))
"""


def _run(fresh_python: Callable[[str], str], enabled: str) -> dict[str, object]:
    code = _EVENTS.replace("{enabled}", enabled)
    if enabled == "1":  # never send one from a test: only check that nothing is changed
        for call in ("before = one_event()", "after = one_event()"):
            code = code.replace(call, call.replace("one_event()", "None"))
    result: dict[str, object] = json.loads(fresh_python(code).strip().splitlines()[-1])
    return result


def test_with_telemetry_off_an_event_is_not_built(fresh_python: Callable[[str], str]) -> None:
    result = _run(fresh_python, "0")
    assert result["before"] == ["disabled", 1]  # Flower builds it, running `file`, then does not send
    assert result["after"] == ["disabled", 0]  # same answer, nothing built
    assert result["changed"] == ["flwr.supercore.telemetry.create_event"]


def test_with_telemetry_on_flower_is_left_as_it_is(fresh_python: Callable[[str], str]) -> None:
    result = _run(fresh_python, "1")
    assert result["changed"] == [] and result["untouched"] is True
