"""A WAN on one machine: each site in its own network namespace, behind a rate-limited, delayed link.

For every site: a network namespace ``fsw<tag><n>``, a veth pair to this namespace (addresses
``10.214.<n>.1`` here and ``10.214.<n>.2`` there), ``tc tbf`` on both ends (``rate_mbit``, the link's
bandwidth each way), and a delaying TCP proxy (:mod:`benchmarks.delay_proxy`, ``delay_ms`` each way:
this kernel has no ``netem``) listening on ``10.214.<n>.1:<proxy port>`` and forwarding to the
SuperLink's port on that same address, so the SuperLink sees a peer that is not loopback (its
control-plane gate is in play) and every byte crosses the slow link. Everything is set up and torn
down by :func:`wan_sites` (needs root and iproute2); only processes started here are stopped, by PID.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WanSite", "wan_sites"]

_PROXY = Path(__file__).with_name("delay_proxy.py")


@dataclass(frozen=True)
class WanSite:
    """One site's end of the WAN: its namespace, the address it dials, and how to run a command in it."""

    namespace: str
    host_ip: str  # this namespace's end of the veth pair; the SuperLink's certificate must name it
    site_ip: str
    superlink: str  # HOST:PORT the site dials: the delaying proxy

    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespace)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _tbf(namespace: str | None, device: str, rate_mbit: float) -> None:
    command = ["tc", "qdisc", "add", "dev", device, "root", "tbf", "rate", f"{rate_mbit}mbit"]
    command += ["burst", "64kb", "latency", "400ms"]
    if namespace:
        command = ["ip", "netns", "exec", namespace, *command]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)


def _wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the delay proxy on {host}:{port} did not start")


@contextlib.contextmanager
def wan_sites(
    count: int, superlink_port: int, *, proxy_port: int, rate_mbit: float = 100.0, delay_ms: float = 25.0
) -> Iterator[list[WanSite]]:
    """Set up ``count`` WAN sites for a SuperLink listening on every interface at ``superlink_port``."""
    if os.geteuid() != 0:
        raise RuntimeError("the WAN setting needs root (network namespaces, veth pairs, tc)")
    tag = os.getpid() % 1000
    made: list[tuple[str, str]] = []
    proxies: list[subprocess.Popen[bytes]] = []
    sites: list[WanSite] = []
    try:
        for n in range(count):
            namespace, host_if, site_if = f"fsw{tag}s{n}", f"fwh{tag}s{n}", f"fwp{tag}s{n}"
            host_ip, site_ip = f"10.214.{n + 1}.1", f"10.214.{n + 1}.2"
            _ip("netns", "add", namespace)
            made.append((namespace, host_if))
            _ip("link", "add", host_if, "type", "veth", "peer", "name", site_if)
            _ip("link", "set", site_if, "netns", namespace)
            _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("netns", "exec", namespace, "ip", "addr", "add", f"{site_ip}/30", "dev", site_if)
            _ip("netns", "exec", namespace, "ip", "link", "set", site_if, "up")
            _ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
            _tbf(None, host_if, rate_mbit)
            _tbf(namespace, site_if, rate_mbit)
            proxies.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(_PROXY),
                        "--listen",
                        f"{host_ip}:{proxy_port}",
                        "--to",
                        f"{host_ip}:{superlink_port}",
                        "--delay",
                        str(delay_ms / 1000),
                    ],
                )  # fmt: skip
            )
            _wait_listening(host_ip, proxy_port)
            sites.append(WanSite(namespace, host_ip, site_ip, f"{host_ip}:{proxy_port}"))
        yield sites
    finally:
        for proxy in proxies:
            proxy.terminate()
        for proxy in proxies:
            try:
                proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait(timeout=10)
        for namespace, host_if in made:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
            subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
