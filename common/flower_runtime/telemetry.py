"""Do not build the telemetry events that Flower, with telemetry off, would not send.

fedscan runs Flower with ``FLWR_TELEMETRY_ENABLED=0``. Flower 1.42 still builds every event's payload
before deciding not to send it (``flwr.supercore.telemetry.create_event``), and building it runs
``platform.architecture()``, which starts the ``file`` command on the Python interpreter: a process
and ~5 ms of CPU, twice per task (its start and its exit), on every message of every site. With
telemetry off (and Flower's telemetry logging off), :func:`skip_unsent_telemetry` makes that step
return what Flower returns when it does not send, ``"disabled"``, without building anything. With
telemetry on, Flower is left as it is.

Patched only where Flower keeps ``create_event`` and its two settings; another Flower is left alone
and the caller told (an empty list).
"""

from __future__ import annotations

import importlib
from typing import Any, Final

__all__ = ["skip_unsent_telemetry"]

_MODULE: Final = "flwr.supercore.telemetry"
#: What Flower 1.42's ``create_event`` returns when telemetry is disabled.
_NOT_SENT: Final = "disabled"


def skip_unsent_telemetry() -> list[str]:
    """In this process (and any it forks), skip building telemetry events that are not sent.

    Returns what was changed: nothing when telemetry or its logging is on, or Flower differs.
    """
    try:
        module = importlib.import_module(_MODULE)
    except ImportError:
        return []
    if not callable(getattr(module, "create_event", None)):
        return []
    settings = [getattr(module, name, "1") for name in ("FLWR_TELEMETRY_ENABLED", "FLWR_TELEMETRY_LOGGING")]
    if settings != ["0", "0"]:
        return []  # sent or logged: Flower builds it

    def create_event(event_type: Any, event_details: dict[str, Any] | None) -> str:
        """Telemetry is off: nothing is built, nothing is sent."""
        return _NOT_SENT

    module.create_event = create_event  # type: ignore[attr-defined]
    return [f"{_MODULE}.create_event"]
