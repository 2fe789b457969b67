"""``fedscan site run`` as a supervisor: the site's SuperNode stays connected across runs and restarts.

A SuperNode exits when something goes wrong that it does not retry itself: the coordinator restarted
and no longer knows its node id (``401 Unauthorized`` on a heartbeat), a refused activation while the
coordinator re-registers its sites, a crash. :func:`supervise_site` then restarts it, re-checking the
site and its kit first, with a capped exponential back-off (1, 2, 4 ... 60 s; back to 1 s after a
SuperNode that stayed up 5 minutes), forever unless ``max_downtime`` is given. It stops, with one line
saying why and a non-zero exit code, only for what a restart cannot fix:

* the kit's manifest revokes this site, or no longer lists it with this node key (``PolicyError``,
  ``KeyMaterialError`` from :func:`client.supernode.check_site`);
* the coordinator's TLS certificate no longer verifies against the kit's CA (``InputError``);
* a bad kit, an unsafe key, a policy that does not load, an empty store (the same checks).

Its children die with it (:attr:`common.flower_runtime.daemons.Daemon.die_with_parent`: even a
``kill -9`` of the supervisor leaves no SuperNode or executor behind, and their task processes follow
their parents), and there is one supervisor per site directory: a second ``site run`` on the same site
is refused (an exclusive lock on ``flower/site-run.lock``), so two SuperNodes never share a node key.
The console gets the SuperNode's real error in one line, not ``exited (code 0)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from client.site import SiteDir
from client.supernode import ReadySite, SiteKit, SiteNode, check_site
from common.errors import ConfigError, InputError, TrainingError
from common.flower_runtime.wakeups import HOLD_SECONDS

__all__ = ["BACKOFF_CAP", "site_run_lock", "supernode_failure", "supervise_site"]

#: Longest wait between two SuperNode starts, in seconds.
BACKOFF_CAP = 60.0
#: A SuperNode that stayed up this long resets the back-off.
_STABLE = 300.0
_TELLING = re.compile(
    r"CERTIFICATE_VERIFY_FAILED|Unauthorized|\b40[13]\b|\b412\b|Failed to activate|ERROR|Exit Code|"
    r"refused|Connection|Error:",
    re.IGNORECASE,
)


@contextlib.contextmanager
def site_run_lock(site: SiteDir) -> Iterator[None]:
    """Hold the site's supervisor lock for the block; ConfigError naming the holder if it is taken."""
    path = site.root / "flower" / "site-run.lock"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(
                f"Another `fedscan site run` (pid {holder}) is running for {site.root}: one SuperNode per "
                "site, so that two never share its node key. Stop that one first."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def supernode_failure(log_tail: str) -> str:
    """The most telling line of a SuperNode's log tail (its real error), in one line."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    telling = [line for line in lines if _TELLING.search(line) and "Shutting down" not in line]
    picked = telling[-1] if telling else (lines[-1] if lines else "no log output")
    picked = re.sub(r"\x1b\[[0-9;]*m", "", picked)
    return picked[:300]


def _fatal(reason: str) -> InputError | None:
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        return InputError(
            "The SuperLink's TLS certificate does not verify against the kit's CA: the coordinator's "
            f"identity no longer matches this kit ({reason}). Ask the coordinator for the current kit."
        )
    return None


def supervise_site(
    site: SiteDir,
    kit: SiteKit,
    *,
    superlink: str | None = None,
    isolation: str = "warm",
    max_wait: float | None = 0.2,
    hold: float | None = HOLD_SECONDS,
    max_downtime: float | None = None,
    on_progress: Callable[[str], None] = lambda _: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Keep the site's SuperNode running until ``should_stop`` (or Ctrl-C); see the module docstring.

    Raises
    ------
    FedscanError
        For what a restart cannot fix (revoked, wrong key or CA, bad kit or policy, empty store), or a
        SuperNode down for longer than ``max_downtime`` seconds.
    """
    with site_run_lock(site):
        ready = _ready(site, kit, on_progress)
        backoff = 1.0
        down_since: float | None = None
        while not should_stop():
            node = SiteNode(
                site, kit, superlink=superlink, isolation=isolation, max_wait=max_wait, hold=hold,
                die_with_parent=True,
            )  # fmt: skip
            started = time.monotonic()
            try:
                node.start()
                on_progress(
                    f"site {ready.config.site_id}: SuperNode started, connecting out to "
                    f"{superlink or kit.superlink} (TLS with {kit.ca_certificate.name}, node key "
                    f"{ready.node_fingerprint}, {node.isolation}); logs in {node.home / 'logs'}. "
                    "Ctrl-C stops it."
                )
                while node.running and not should_stop():
                    for daemon in node.daemons:
                        daemon.refresh()
                    time.sleep(0.5)
                if should_stop():
                    return
                gone = next(d for d in node.daemons if not d.running)
                reason = supernode_failure(gone.tail(60))
            finally:
                node.stop()
            fatal = _fatal(reason)
            if fatal is not None:
                raise fatal
            now = time.monotonic()
            if now - started >= _STABLE:
                backoff, down_since = 1.0, None
            down_since = down_since if down_since is not None else now
            if max_downtime is not None and now - down_since > max_downtime:
                raise TrainingError(
                    f"The SuperNode of site {ready.config.site_id} kept failing for "
                    f"{now - down_since:.0f} s; last: {reason}"
                )
            on_progress(
                f"site {ready.config.site_id}: {gone.name} exited (code {gone.exit_code}): {reason}; "
                f"reconnecting in {backoff:.0f} s"
            )
            deadline = time.monotonic() + backoff
            while time.monotonic() < deadline and not should_stop():
                time.sleep(0.2)
            backoff = min(BACKOFF_CAP, backoff * 2)
            if not should_stop():
                ready = _ready(site, kit, on_progress)  # revoked since? a new kit? (fatal if so)


def _ready(site: SiteDir, kit: SiteKit, on_progress: Callable[[str], None]) -> ReadySite:
    ready = check_site(SiteDir(Path(site.root)), SiteKit.load(kit.root))
    if ready.adopted_publisher:
        on_progress(
            f"site {ready.config.site_id}: now trusts publisher key {kit.publisher_key_id} from {kit.root} "
            "(first use; recorded in site.toml and the audit log)"
        )
    return ready
