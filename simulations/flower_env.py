"""Environment for every Flower process fedscan starts: no telemetry, no update check, no installs.

Must be applied before ``flwr`` is imported (Flower reads some of these at import time).
"""

from __future__ import annotations

import os

__all__ = ["FLOWER_ENV", "quiet_flower"]

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}


def quiet_flower() -> None:
    """Set :data:`FLOWER_ENV` in this process (and so in every child it starts)."""
    os.environ.update(FLOWER_ENV)
