"""Long-running processes fedscan starts (SuperLink, SuperNodes, their executors): start, watch, stop.

Flower's daemons start processes of their own, some detached (a SuperLink's SuperExec runs in a new
session; each task is one more process), so stopping the process we started is not enough. A
:class:`Daemon` therefore remembers every descendant it has seen (by PID *and* start time, so a
recycled PID is never mistaken for ours) and, when stopped, ends the daemon and then every remembered
descendant still alive: SIGTERM, a bounded wait, SIGKILL, another bounded wait. Only processes this
object started, or their descendants, are ever signalled; nothing is looked up by name.

Descendants are found through ``/proc`` (Linux). Elsewhere only the daemon itself is tracked.
Daemons run in their own session, so a Ctrl-C at the terminal reaches fedscan alone, which then stops
them in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

__all__ = [
    "FLOWER_ENV",
    "Daemon",
    "ProcessRef",
    "flower_environment",
    "free_port",
    "sigterm_as_interrupt",
    "stop_daemons",
    "wait_for_port",
]

#: Set for every Flower process fedscan starts: no telemetry, no update check, no installs at run time.
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def flower_environment(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Flower process: ours, plus :data:`FLOWER_ENV`, a private ``FLWR_HOME``,
    and this interpreter's ``bin`` first on ``PATH`` (Flower starts ``flower-superexec`` and
    ``flwr-*`` by name, and they must be the ones installed next to this fedscan)."""
    env = dict(os.environ)
    env.update(FLOWER_ENV)
    env["FLWR_HOME"] = str(flwr_home)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, *(p for p in env.get("PATH", "").split(os.pathsep) if p)])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def wait_for_port(host: str, port: int, *, timeout: float, daemon: Daemon | None = None) -> None:
    """Wait until something accepts TCP connections on ``host:port``.

    Raises
    ------
    TimeoutError
        After ``timeout`` seconds, or at once if ``daemon`` exits first (with the end of its log).
    """
    deadline = time.monotonic() + timeout
    while True:
        if daemon is not None and not daemon.running:
            raise TimeoutError(
                f"{daemon.name} exited (code {daemon.exit_code}) before listening on {host}:{port}:\n"
                f"{daemon.tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Nothing listens on {host}:{port} after {timeout:.0f} s.")
        time.sleep(0.1)


@dataclass(frozen=True)
class ProcessRef:
    """One process, identified by PID and start time (clock ticks since boot) against PID reuse."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        stat = _read_stat(pid)
        return None if stat is None else cls(pid, stat[2])

    @property
    def alive(self) -> bool:
        """Running (a zombie, or another process that reuses the PID, counts as gone)."""
        stat = _read_stat(self.pid)
        if stat is None:
            return _exists_without_proc(self.pid) if not _HAS_PROC else False
        _ppid, state, start = stat
        return start == self.start_ticks and state not in ("Z", "X")

    def signal(self, signum: int) -> None:
        """Send ``signum`` if this very process still runs."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signum)


_HAS_PROC = Path("/proc/self/stat").exists()


def _exists_without_proc(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_stat(pid: int) -> tuple[int, str, int] | None:
    """(parent PID, state, start time) from ``/proc/PID/stat``; ``None`` if there is no such process."""
    if not _HAS_PROC:
        return (0, "R", 0) if _exists_without_proc(pid) else None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return int(rest[1]), rest[0], int(rest[19])


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    if not _HAS_PROC:
        return children
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
    return children


@dataclass
class Daemon:
    """A long-running command with its log file, its remembered descendants and a bounded stop.

    Parameters
    ----------
    name
        For messages ("SuperLink", "SuperNode site-a", ...).
    argv
        The command.
    log_file
        Receives the command's stdout and stderr (appended).
    env
        Its environment (see :func:`flower_environment`).
    """

    name: str
    argv: Sequence[str]
    log_file: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    #: Linux: the daemon is killed (SIGKILL) the moment the process that started it dies, even by
    #: SIGKILL, so a supervisor that is killed leaves no orphan behind (its daemons' own children
    #: follow: Flower's processes and fedscan's executors watch their parent).
    die_with_parent: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    seen: dict[int, ProcessRef] = field(default_factory=dict, init=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> Daemon:
        """Start the command in a new session; returns ``self``."""
        if self.process is not None:
            raise RuntimeError(f"{self.name} was already started.")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            list(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(self.env) if self.env is not None else None,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with(os.getpid()) if self.die_with_parent else None,  # noqa: PLW1509
        )
        ref = ProcessRef.of(self.process.pid)
        if ref is not None:
            self.seen[ref.pid] = ref
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} has not been started.")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def refresh(self) -> list[ProcessRef]:
        """Remember the daemon's current descendants (call it now and then: orphans leave the tree)."""
        if self.process is None or not _HAS_PROC:
            return list(self.seen.values())
        children = _children_map()
        queue = [self.process.pid]
        while queue:
            pid = queue.pop()
            for child in children.get(pid, ()):
                if child not in self.seen or not self.seen[child].alive:
                    ref = ProcessRef.of(child)
                    if ref is not None:
                        self.seen[child] = ref
                queue.append(child)
        return [ref for ref in self.seen.values() if ref.alive]

    def processes(self) -> list[ProcessRef]:
        """Every process of this daemon seen so far that is still alive (the daemon included)."""
        return [ref for ref in self.refresh() if ref.alive]

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop the daemon, then every remembered descendant still alive; every wait bounded.

        SIGTERM lets Flower shut down cleanly (it deregisters, closes its database); whatever has not
        exited after ``timeout`` seconds gets SIGKILL. Returns the daemon's exit code.
        """
        if self.process is None:
            return None
        self.refresh()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=5)
        _end(self.refresh(), timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.process.poll()

    def tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of the log (for error messages)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:])


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` that asks the kernel to SIGKILL the child when ``parent`` dies (Linux)."""

    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
    except (OSError, AttributeError):
        prctl = None

    def arm() -> None:  # runs in the child between fork and exec: no imports, no allocation to speak of
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return arm


_PR_SET_PDEATHSIG: Final = 1


def _end(refs: Iterable[ProcessRef], timeout: float) -> None:
    alive = [ref for ref in refs if ref.alive]
    for ref in alive:
        ref.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(ref.alive for ref in alive):
        time.sleep(0.05)
    for ref in alive:
        ref.signal(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(ref.alive for ref in alive):
        time.sleep(0.05)


def stop_daemons(daemons: Sequence[Daemon], timeout: float = 15.0) -> None:
    """Stop ``daemons`` in reverse order of start (dependents first), each wait bounded."""
    for daemon in reversed(daemons):
        daemon.stop(timeout)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (a service manager's stop) acts like Ctrl-C.

    Python's default SIGTERM ends the process at once, skipping ``finally`` blocks, which would leave
    our daemons running; as a KeyboardInterrupt it unwinds through them. Main thread only.
    """

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
