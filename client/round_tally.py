"""The site's own count of the training rounds it has taken, per run and per UTC day.

The site policy caps rounds per run and per day (``max_rounds_per_run``, ``max_rounds_per_day``); the
count behind those caps is the site's, never a number from the server. One small JSON file,
``privacy/rounds.json`` (0600): counts and run ids only. Updated under an exclusive lock, because every
message of a deployment runs in its own process; days older than a month are dropped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from client.site import SiteDir
from common.errors import PolicyError
from common.fsio import write_private_atomic

__all__ = ["RoundTally", "count_round", "read_tally", "tally_file", "utc_day"]

_KEEP_DAYS = 31
_KEEP_RUNS = 1000


@dataclass(frozen=True)
class RoundTally:
    """Training rounds taken: by run id, and by UTC day (``YYYY-MM-DD``)."""

    runs: dict[str, int] = field(default_factory=dict)
    days: dict[str, int] = field(default_factory=dict)

    def in_run(self, run: str) -> int:
        return self.runs.get(run, 0)

    def on_day(self, day: str) -> int:
        return self.days.get(day, 0)


def tally_file(site: SiteDir) -> Path:
    return site.root / "privacy" / "rounds.json"


def utc_day(now: dt.datetime | None = None) -> str:
    """Today's UTC date, the key of the per-day count."""
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d")


def read_tally(site: SiteDir) -> RoundTally:
    """The current counts (empty for a site that never trained)."""
    try:
        raw = json.loads(tally_file(site).read_text())
        runs = {str(k): int(v) for k, v in raw["runs"].items()}
        return RoundTally(runs, {str(k): int(v) for k, v in raw["days"].items()})
    except FileNotFoundError:
        return RoundTally()
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PolicyError(
            f"{tally_file(site)} is damaged: the site cannot count its rounds, so it takes none. Restore it "
            "or remove it deliberately (the caps then count from zero)."
        ) from None


@contextlib.contextmanager
def _locked(site: SiteDir) -> Iterator[None]:
    path = tally_file(site)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def count_round(site: SiteDir, run: str, day: str | None = None) -> RoundTally:
    """Add one round of ``run`` on ``day`` (default today, UTC); returns the counts after it."""
    day = day or utc_day()
    with _locked(site):
        tally = read_tally(site)
        runs = {**tally.runs, run: tally.in_run(run) + 1}
        days = {**tally.days, day: tally.on_day(day) + 1}
        days = dict(sorted(days.items())[-_KEEP_DAYS:])
        runs = dict(list(runs.items())[-_KEEP_RUNS:])
        body = json.dumps({"runs": runs, "days": days}, sort_keys=True)
        write_private_atomic(tally_file(site), body.encode())
        return RoundTally(runs, days)
