"""The site's epsilon ledger: every privacy release of its data, per run and round, sealed at the site.

Each training round a site takes part in is one entry per mechanism that protected it: ``sample``
(DP-SGD at the site: sampling rate, noise multiplier, steps), ``client`` (client-level noise the sites
add themselves, distributed mode: one step at the run's noise multiplier), or ``none`` (the round had
no differential privacy the site can vouch for: infinite epsilon, recorded honestly). Entries are
mechanisms, not epsilons, so the totals are recomputed exactly by Rényi-DP composition
(:mod:`common.privacy.accounting`) at whatever delta is asked, across runs.

What one round costs a *record*: both mechanisms bound it (a site's clipped, noised update contains
the record), so a round's RDP curve is the smaller of its mechanisms' curves, order by order; rounds and
runs add up. The file is ``privacy/epsilon-ledger.fseal``, sealed under the site key (object id
``privacy/epsilon-ledger``, so key rotation re-wraps it with the store), written atomically under an
exclusive lock, so concurrent ClientApps of one site never lose an entry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from client.site import SiteDir
from common.crypto import Keyring, SiteKey, open_file, seal_file
from common.errors import IntegrityError
from common.privacy.accounting import DEFAULT_ORDERS, SampledGaussian, epsilon_from_rdp, rdp_curve

__all__ = ["LEDGER_KINDS", "EpsilonLedger", "LedgerEntry", "record_level_epsilon"]

LEDGER_KINDS = ("sample", "client", "none")
LEDGER_OBJECT_ID = "privacy/epsilon-ledger"
_FORMAT = 1


@dataclass(frozen=True)
class LedgerEntry:
    """One mechanism that released (a function of) the site's data in one round of one run."""

    run: str
    round: int
    kind: str
    sampling_rate: float
    noise_multiplier: float
    steps: int
    delta: float
    recorded_at: str = ""

    def __post_init__(self) -> None:
        if self.kind not in LEDGER_KINDS:
            raise ValueError(
                f"Unknown ledger entry kind {self.kind!r}; use one of {', '.join(LEDGER_KINDS)}."
            )

    @property
    def mechanism(self) -> SampledGaussian:
        if self.kind == "none":
            return SampledGaussian(1.0, 0.0, 1)  # no noise: infinite epsilon
        return SampledGaussian(self.sampling_rate, self.noise_multiplier, self.steps)


def record_level_epsilon(
    entries: Sequence[LedgerEntry], delta: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> float:
    """Epsilon at ``delta`` for one record over ``entries``: per round the tighter mechanism, composed."""
    if not entries:
        return 0.0
    rounds: dict[tuple[str, int], np.ndarray] = {}
    for entry in entries:
        curve = rdp_curve([entry.mechanism], orders)
        key = (entry.run, entry.round)
        rounds[key] = np.minimum(rounds[key], curve) if key in rounds else curve
    total = np.sum(list(rounds.values()), axis=0)
    return epsilon_from_rdp(total, delta, orders)


class EpsilonLedger:
    """The sealed ledger of one site (``SITE_DIR/privacy/epsilon-ledger.fseal``)."""

    def __init__(self, site: SiteDir) -> None:
        self.site = site
        self.path = site.root / "privacy" / "epsilon-ledger.fseal"
        self._lock_path = site.root / "privacy" / ".epsilon-ledger.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self, keys: SiteKey | Keyring) -> list[LedgerEntry]:
        if not self.path.exists():
            return []
        body = json.loads(open_file(keys, self.path, object_id=LEDGER_OBJECT_ID))
        if body.get("format") != _FORMAT:
            raise IntegrityError(f"{self.path}: unknown epsilon ledger format {body.get('format')!r}.")
        return [LedgerEntry(**entry) for entry in body["entries"]]

    def entries(self, keys: SiteKey | Keyring) -> list[LedgerEntry]:
        """Every entry, oldest first."""
        with self._locked():
            return self._read(keys)

    def append(self, key: SiteKey, new: Sequence[LedgerEntry]) -> list[LedgerEntry]:
        """Add ``new`` entries (stamped with the time) and return the whole ledger after the write."""
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        stamped = [LedgerEntry(**{**asdict(e), "recorded_at": e.recorded_at or now}) for e in new]
        with self._locked():
            entries = self._read(key) + stamped
            body = {"format": _FORMAT, "entries": [asdict(e) for e in entries]}
            seal_file(key, json.dumps(body, sort_keys=True).encode(), self.path, object_id=LEDGER_OBJECT_ID)
        return entries

    def spent(self, keys: SiteKey | Keyring, delta: float) -> float:
        """Record-level epsilon at ``delta`` over every run this site ever took part in."""
        return record_level_epsilon(self.entries(keys), delta)

    def report(self, keys: SiteKey | Keyring, delta: float) -> dict[str, object]:
        """Per run: rounds, record-level epsilon at ``delta`` and per mechanism; and the total."""
        entries = self.entries(keys)
        runs: dict[str, object] = {}
        for run in dict.fromkeys(e.run for e in entries):
            mine = [e for e in entries if e.run == run]
            runs[run] = {
                "rounds": len({e.round for e in mine}),
                "epsilon": record_level_epsilon(mine, delta),
                **{
                    f"epsilon_{kind}": record_level_epsilon([e for e in mine if e.kind == kind], delta)
                    for kind in ("sample", "client")
                    if any(e.kind == kind for e in mine)
                },
            }
        total = record_level_epsilon(entries, delta)
        return {"delta": delta, "runs": runs, "total_epsilon": total if math.isfinite(total) else "inf"}
