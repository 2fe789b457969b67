"""Test-session settings that every test relies on.

Flower reads its telemetry and update-check switches when it is imported, so they are set here,
before any test module imports ``flwr``: no test ever phones home or installs anything at run time.
"""

from __future__ import annotations

import os

_FLOWER_OFF = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def pytest_configure() -> None:
    os.environ.update(_FLOWER_OFF)
