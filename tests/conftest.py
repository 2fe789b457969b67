"""Test-session settings that every test relies on, and fixtures shared across packages.

Flower reads its telemetry and update-check switches when it is imported, so they are set here,
before any test module imports ``flwr``: no test ever phones home or installs anything at run time.

``chromium`` / ``headless_chromium``: Debian's ``chromium`` for the tests that open the audit report
in a real browser (tests/server/test_report_browser.py, tests/simulations/test_demo.py). If it is missing
and we run as root it is installed with apt-get, otherwise those tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable

import pytest

_FLOWER_OFF = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def pytest_configure() -> None:
    os.environ.update(_FLOWER_OFF)


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _apt_install_chromium() -> str:
    """Install Debian's chromium (``apt-get update`` only if the first try fails); return the last error."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    last = ""
    for command in (["install", "-y", "chromium"], ["update"], ["install", "-y", "chromium"]):
        result = subprocess.run(["apt-get", *command], capture_output=True, text=True, timeout=900, env=env)
        if command[0] == "install" and result.returncode == 0:
            return ""
        last = ((result.stderr or result.stdout).strip().splitlines() or ["no output"])[-1]
    return last


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a headless-capable Chromium (installed with apt-get if missing and we are root)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "Chromium is not installed and cannot be installed here (needs root and apt-get); "
            "install Debian's chromium package to run this test"
        )
    problem = _apt_install_chromium()
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"Chromium is not installed and `apt-get install -y chromium` failed: {problem}")
    return found


@pytest.fixture(scope="session")
def headless_chromium(chromium: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run headless Chromium with a throw-away profile and console logging on stderr."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory() as profile:
            return subprocess.run(
                [
                    chromium,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={profile}",
                    "--enable-logging=stderr",
                    "--v=0",
                    *args,
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )

    return run


@pytest.fixture(scope="session")
def fresh_python() -> Callable[[str], str]:
    """Run Python ``code`` in a new interpreter (for process-wide patches); return its stdout.

    Fails the test with the child's stderr if the code raises.
    """
    import sys
    import textwrap

    def run(code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


@pytest.fixture(scope="session")
def optional_import() -> Callable[[str, str], object]:
    """Import an optional component, or skip - except under CI (``CI=true``), where missing it fails.

    CI installs every extra (``.ci/run``); a skip there would hide a broken install.
    """
    import importlib

    def load(module: str, extra: str) -> object:
        try:
            return importlib.import_module(module)
        except ImportError as error:
            message = f"{module} is missing: install fedscan[{extra}] ({error})"
            if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
                pytest.fail(f"under CI every optional component must be installed; {message}")
            pytest.skip(message)

    return load
