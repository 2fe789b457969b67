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
from collections.abc import Callable, Iterator

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


class NetNamespace:
    """A network namespace joined to this one by a veth pair: a host that is really *not* loopback.

    ``host_ip`` is this namespace's end of the pair, ``peer_ip`` the other namespace's; a process started
    with :meth:`command` runs inside the other namespace and reaches this one only at ``host_ip``.
    """

    def __init__(self, name: str, host_ip: str, peer_ip: str) -> None:
        self.name, self.host_ip, self.peer_ip = name, host_ip, peer_ip

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="session")
def netns() -> Iterator[NetNamespace]:
    """A network namespace of this test session's own, joined by a veth pair (needs root and iproute2).

    Without them the test skips, except under CI, where a missing piece fails the run: the control-plane
    tests exist to prove what an outside host cannot do, and loopback cannot stand in for one.
    """
    if os.geteuid() != 0 or shutil.which("ip") is None:
        why = "network-namespace tests need root and iproute2 (ip)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    tag = f"{os.getpid() % 100000}"
    name, host_if, peer_if = f"fsns{tag}", f"fsh{tag}", f"fsp{tag}"
    octet = 1 + os.getpid() % 250
    host_ip, peer_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{peer_ip}/30", "dev", peer_if)
        _ip("netns", "exec", name, "ip", "link", "set", peer_if, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield NetNamespace(name, host_ip, peer_ip)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def reference_epsilon() -> Callable[[list[tuple[float, float, int]], float], float]:
    """Epsilon from Google's ``dp-accounting`` RDP accountant (its own orders and conversion): the
    independent reference for fedscan's ledgers, given ``(q, sigma, steps)`` mechanisms and a delta."""
    import logging

    import dp_accounting
    from dp_accounting import rdp

    logging.getLogger("absl").setLevel(logging.ERROR)  # it notes the fractional orders it skips

    def epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
        accountant = rdp.RdpAccountant()
        for q, sigma, steps in history:
            event = dp_accounting.GaussianDpEvent(sigma)
            if q < 1:
                event = dp_accounting.PoissonSampledDpEvent(q, event)
            accountant.compose(event, steps)
        return float(accountant.get_epsilon(delta))

    return epsilon


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
