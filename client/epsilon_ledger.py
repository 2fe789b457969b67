"""The site's epsilon ledger: every release of its data, booked under a key the site controls.

One **booking** per training message the site accepts, made *before* it trains: the site's own
monotonic counter (``seq``), the message id (an exact re-delivery of the same message finds its booking
and gets the stored reply, :meth:`EpsilonLedger.stored_reply`: never a second training), the run, and
the server's round number (recorded for reconciliation only: nothing is keyed or merged by it, so a
coordinator that sends ``server-round = 1`` forever pays for every round). A booking holds the
mechanisms (:class:`Release`) that protect the update it produces:

``sample``
    DP-SGD at the site: sampling rate, noise multiplier, steps, and the *unit* it sampled and clipped:
    ``patient`` (every record of a patient as one unit, per-patient clipping) or ``record`` (then the
    largest number of records of one patient, ``group_size``, converts it to patient level);
``client``
    client-level noise the site adds itself (distributed mode): one Gaussian step at ``q = 1`` (the
    coordinator knows which sites it sampled: no amplification for it) and the noise the site can
    rely on with the number of honest contributors it assumes (``honest_sites``, from ``site.toml``);
``none``
    nothing the site can vouch for (no DP, or the server's own central noise): infinite epsilon.

**The privacy unit is the patient.** A booking costs a patient the tighter of its mechanisms, order by
order of Rényi DP (client-level DP bounds the whole site's data, hence each patient), and bookings add
up. A booking whose training failed before any reply left the site is *void* (nothing was released);
one whose process died mid-training stays booked (counted). Entries are mechanisms, not epsilons, so
totals are recomputed exactly by :mod:`common.privacy.accounting` at any delta.

The ledger's **head** is a hash chain over the bookings (``seq`` and the SHA-256 of every booking so
far); the ClientApp writes ``ledger_seq`` and ``ledger_head`` into the site's audit log with every
round it takes, so a ledger restored from an older backup shows as a counter going backwards
(``fedscan audit reconcile``), and the site itself refuses to train on a ledger older than its log.

The file is ``privacy/epsilon-ledger.fseal``, sealed under the site key (object id
``privacy/epsilon-ledger``; key rotation re-wraps it with the store), rewritten atomically under an
exclusive lock, so that the budget check and the booking are one step even for concurrent ClientApps of
one site. Replies are kept sealed under ``privacy/replies/`` for the newest :data:`REPLIES_KEPT`
bookings; an older message delivered again is refused (``replayed-message``), never trained again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from client.site import SiteDir
from common.crypto import Keyring, SiteKey, open_file, seal_file
from common.errors import FedscanError, IntegrityError
from common.privacy.accounting import (
    DEFAULT_ORDERS,
    SampledGaussian,
    epsilon_from_rdp,
    group_mechanism,
    rdp_curve,
)

__all__ = [
    "ENTRY_STATES",
    "LEDGER_KINDS",
    "PRIVACY_UNITS",
    "REPLIES_KEPT",
    "Booking",
    "EpsilonLedger",
    "LedgerEntry",
    "Release",
    "patient_level_epsilon",
]

LEDGER_KINDS = ("sample", "client", "none")
#: What DP-SGD samples and clips: whole patients (the default), or single records.
PRIVACY_UNITS = ("patient", "record")
#: booked: counted, training under way or the process died; sent: the reply left; void: nothing left.
ENTRY_STATES = ("booked", "sent", "void")
LEDGER_OBJECT_ID = "privacy/epsilon-ledger"
#: Replies kept for exact re-delivery (the newest bookings); an older message is refused if it comes back.
REPLIES_KEPT = 8
_FORMAT = 2
_GENESIS = "0" * 64


@dataclass(frozen=True)
class Release:
    """One mechanism that protects a booked update (see the module docstring for the kinds)."""

    kind: str
    sampling_rate: float = 1.0
    noise_multiplier: float = 0.0
    steps: int = 1
    unit: str = "patient"
    group_size: int = 1
    honest_sites: int = 0

    def __post_init__(self) -> None:
        if self.kind not in LEDGER_KINDS:
            raise ValueError(
                f"Unknown ledger entry kind {self.kind!r}; use one of {', '.join(LEDGER_KINDS)}."
            )
        if self.unit not in PRIVACY_UNITS:
            raise ValueError(f"Unknown privacy unit {self.unit!r}; use one of {', '.join(PRIVACY_UNITS)}.")
        if self.group_size < 1:
            raise ValueError(f"group_size must be at least 1, not {self.group_size}.")

    def patient_mechanism(self) -> SampledGaussian:
        """The sampled Gaussian mechanism this release is for one patient."""
        if self.kind == "none":
            return SampledGaussian(1.0, 0.0, 1)  # no noise: infinite epsilon
        mechanism = SampledGaussian(self.sampling_rate, self.noise_multiplier, self.steps)
        if self.kind == "sample" and self.unit == "record":
            return group_mechanism(mechanism, self.group_size)
        return mechanism  # per-patient sampling, or client level (the whole site's data)


@dataclass(frozen=True)
class LedgerEntry:
    """One booking: a training message the site accepted, and what protects the update it produced."""

    seq: int
    message_id: str
    run: str
    server_round: int
    releases: tuple[Release, ...]
    delta: float
    state: str = "booked"
    recorded_at: str = ""

    def __post_init__(self) -> None:
        if self.state not in ENTRY_STATES:
            raise ValueError(f"Unknown booking state {self.state!r}; use one of {', '.join(ENTRY_STATES)}.")
        if not self.releases:
            raise ValueError("A booking needs at least one release (kind 'none' when nothing protects it).")

    @property
    def counted(self) -> bool:
        """Whether this booking costs privacy (everything but a void booking)."""
        return self.state != "void"

    def to_dict(self) -> dict[str, object]:
        body = asdict(self)
        body["releases"] = [asdict(r) for r in self.releases]
        return body

    @classmethod
    def from_dict(cls, body: dict[str, object]) -> LedgerEntry:
        releases = tuple(Release(**r) for r in body["releases"])  # type: ignore[arg-type, attr-defined]
        return cls(**{**body, "releases": releases})  # type: ignore[arg-type]

    def digest(self, previous: str) -> str:
        """The chain link: SHA-256 of the previous head and this booking (its state excluded: settling a
        booking does not change history)."""
        body = self.to_dict()
        body.pop("state")
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"{previous}\n{canonical}".encode()).hexdigest()


@functools.lru_cache(maxsize=1024)
def _curve(mechanism: SampledGaussian, orders: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(rdp_curve([mechanism], orders))


def patient_level_epsilon(
    entries: Sequence[LedgerEntry], delta: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> float:
    """Epsilon at ``delta`` for one patient over ``entries``: per booking the tightest release, composed;
    void bookings cost nothing."""
    orders = tuple(orders)
    total = np.zeros(len(orders))
    counted = False
    for entry in entries:
        if not entry.counted:
            continue
        counted = True
        curves = [np.asarray(_curve(r.patient_mechanism(), orders)) for r in entry.releases]
        total = total + np.min(curves, axis=0)
    return epsilon_from_rdp(total, delta, orders) if counted else 0.0


@dataclass(frozen=True)
class Booking:
    """What :meth:`EpsilonLedger.book` did: a new booking, a re-delivery, or a refusal for the budget.

    ``entry`` is the new booking (``None`` when refused or re-delivered); ``previous`` the earlier
    booking of the same message id (a re-delivery); ``spent`` and ``after`` the patient-level epsilon
    at the budget's delta before and with this booking; ``head`` the ledger head after the call;
    ``run_epsilon`` the run's patient-level epsilon at the run's delta with this booking.
    """

    entry: LedgerEntry | None
    previous: LedgerEntry | None
    spent: float
    after: float
    head: tuple[int, str]
    run_epsilon: float = 0.0


@dataclass
class _Body:
    entries: list[LedgerEntry] = field(default_factory=list)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class EpsilonLedger:
    """The sealed ledger of one site (``SITE_DIR/privacy/epsilon-ledger.fseal``)."""

    def __init__(self, site: SiteDir) -> None:
        self.site = site
        self.path = site.root / "privacy" / "epsilon-ledger.fseal"
        self.replies_dir = site.root / "privacy" / "replies"
        self._lock_path = site.root / "privacy" / ".epsilon-ledger.lock"

    # -- storage -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self, keys: SiteKey | Keyring) -> _Body:
        if not self.path.exists():
            return _Body()
        body = json.loads(open_file(keys, self.path, object_id=LEDGER_OBJECT_ID))
        if body.get("format") == 1:
            return _Body(_from_format_1(body["entries"], _legacy_group_size(self.site, keys)))
        if body.get("format") != _FORMAT:
            raise IntegrityError(f"{self.path}: unknown epsilon ledger format {body.get('format')!r}.")
        entries = [LedgerEntry.from_dict(e) for e in body["entries"]]
        if [e.seq for e in entries] != list(range(1, len(entries) + 1)):
            raise IntegrityError(f"{self.path}: the booking counter is not 1, 2, 3, ...")
        return _Body(entries)

    def _write(self, key: SiteKey, body: _Body) -> None:
        text = json.dumps({"format": _FORMAT, "entries": [e.to_dict() for e in body.entries]}, sort_keys=True)
        seal_file(key, text.encode(), self.path, object_id=LEDGER_OBJECT_ID)

    def _reply_path(self, seq: int) -> Path:
        return self.replies_dir / f"{seq}.fseal"

    # -- reading -------------------------------------------------------------------------------------
    def entries(self, keys: SiteKey | Keyring) -> list[LedgerEntry]:
        """Every booking, oldest first."""
        with self._locked():
            return self._read(keys).entries

    def head(self, keys: SiteKey | Keyring) -> tuple[int, str]:
        """``(seq, sha256)`` of the newest booking (``(0, '0' * 64)`` for an empty ledger)."""
        return _head(self.entries(keys))

    def spent(self, keys: SiteKey | Keyring, delta: float) -> float:
        """Patient-level epsilon at ``delta`` over every run this site ever took part in."""
        return patient_level_epsilon(self.entries(keys), delta)

    def stored_reply(self, keys: SiteKey | Keyring, entry: LedgerEntry) -> bytes | None:
        """The reply sent for ``entry`` (serialised), if it is still kept."""
        path = self._reply_path(entry.seq)
        if entry.state != "sent" or not path.exists():
            return None
        return open_file(keys, path, object_id=f"privacy/replies/{entry.seq}")

    # -- writing -------------------------------------------------------------------------------------
    def book(
        self,
        key: SiteKey,
        *,
        message_id: str,
        run: str,
        server_round: int,
        releases: Sequence[Release],
        delta: float,
        max_epsilon: float = math.inf,
        budget_delta: float = 1e-5,
        not_before: int = 0,
    ) -> Booking:
        """Check the budget and book one training message, as one step under the lock.

        A message id booked before (and not void) is a re-delivery: nothing is booked, ``previous`` is
        the earlier booking. Otherwise the booking is made only if the patient-level epsilon at
        ``budget_delta`` *with* it stays within ``max_epsilon``. ``not_before`` is the newest ``seq``
        the site's audit log has recorded: a ledger behind it was restored from an older copy and is
        refused (:class:`IntegrityError`) instead of being spent again.
        """
        with self._locked():
            body = self._read(key)
            seq, head = _head(body.entries)
            if seq < not_before:
                raise IntegrityError(
                    f"{self.path}: the epsilon ledger ends at booking {seq}, but the site's audit log "
                    f"recorded booking {not_before}: the ledger was replaced by an older copy. Restore the "
                    "newest ledger; the site will not train on a ledger that forgot spent budget."
                )
            spent = patient_level_epsilon(body.entries, budget_delta)
            for earlier in body.entries:
                if earlier.message_id == message_id and earlier.counted:
                    run_eps = patient_level_epsilon([e for e in body.entries if e.run == run], delta)
                    return Booking(None, earlier, spent, spent, (seq, head), run_eps)
            entry = LedgerEntry(
                seq + 1, message_id, run, server_round, tuple(releases), delta, "booked", _now()
            )
            after = patient_level_epsilon([*body.entries, entry], budget_delta)
            if after > max_epsilon:
                return Booking(None, None, spent, after, (seq, head))
            body.entries.append(entry)
            self._write(key, body)
            run_eps = patient_level_epsilon([e for e in body.entries if e.run == run], delta)
            return Booking(entry, None, spent, after, _head(body.entries), run_eps)

    def settle(self, key: SiteKey, entry: LedgerEntry, *, reply: bytes | None) -> None:
        """Mark ``entry`` sent (its serialised ``reply`` kept for re-delivery) or void (``reply=None``:
        training failed and nothing left the site)."""
        with self._locked():
            body = self._read(key)
            index = entry.seq - 1
            if index >= len(body.entries) or body.entries[index].message_id != entry.message_id:
                raise IntegrityError(f"{self.path}: booking {entry.seq} is not the one being settled.")
            if reply is not None:
                self.replies_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                seal_file(key, reply, self._reply_path(entry.seq), object_id=f"privacy/replies/{entry.seq}")
            body.entries[index] = replace(body.entries[index], state="sent" if reply is not None else "void")
            self._write(key, body)
            for old in self.replies_dir.glob("*.fseal") if self.replies_dir.exists() else ():
                if old.stem.isdigit() and int(old.stem) <= entry.seq - REPLIES_KEPT:
                    old.unlink(missing_ok=True)

    def append(self, key: SiteKey, entries: Sequence[LedgerEntry]) -> list[LedgerEntry]:
        """Add finished bookings (renumbered after the newest; tests and imports): the whole ledger."""
        with self._locked():
            body = self._read(key)
            for entry in entries:
                body.entries.append(
                    replace(entry, seq=len(body.entries) + 1, recorded_at=entry.recorded_at or _now())
                )
            self._write(key, body)
            return list(body.entries)

    # -- the operator's view -------------------------------------------------------------------------
    def report(self, keys: SiteKey | Keyring, delta: float) -> dict[str, object]:
        """Per run: rounds booked, patient-level epsilon at ``delta`` (total and per mechanism), the
        assumptions behind it; and the total, the unit and the head."""
        entries = self.entries(keys)
        runs: dict[str, object] = {}
        for run in dict.fromkeys(e.run for e in entries):
            mine = [e for e in entries if e.run == run and e.counted]
            figures: dict[str, object] = {
                "rounds": len(mine),
                "epsilon": _finite(patient_level_epsilon(mine, delta)),
            }
            for kind in ("sample", "client"):
                only = [
                    replace(e, releases=tuple(r for r in e.releases if r.kind == kind))
                    for e in mine
                    if any(r.kind == kind for r in e.releases)
                ]
                if only:
                    figures[f"epsilon_{kind}"] = _finite(patient_level_epsilon(only, delta))
            figures["assumptions"] = _assumptions(mine)
            runs[run] = figures
        total = patient_level_epsilon(entries, delta)
        seq, head = _head(entries)
        return {
            "unit": "patient",
            "delta": delta,
            "runs": runs,
            "total_epsilon": _finite(total),
            "bookings": len(entries),
            "void_bookings": sum(1 for e in entries if not e.counted),
            "head": {"seq": seq, "sha256": head},
        }


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


def _assumptions(entries: Sequence[LedgerEntry]) -> list[str]:
    """What the run's epsilon rests on, in words a privacy officer can sign (deduplicated)."""
    out: dict[str, None] = {}
    for entry in entries:
        for r in entry.releases:
            if r.kind == "sample" and r.unit == "patient":
                out["DP-SGD sampled whole patients with per-patient clipping"] = None
            elif r.kind == "sample":
                out[
                    f"DP-SGD sampled records; converted to patients by group privacy with up to "
                    f"{r.group_size} record(s) per patient"
                ] = None
            elif r.kind == "client":
                out[
                    f"client-level noise at q = 1, assuming at least {r.honest_sites} honest site(s) "
                    "(this one included) add their share"
                ] = None
            else:
                out["a round without noise this site adds itself: unbounded"] = None
    return list(out)


def _head(entries: Sequence[LedgerEntry]) -> tuple[int, str]:
    digest = _GENESIS
    for entry in entries:
        digest = entry.digest(digest)
    return (entries[-1].seq if entries else 0), digest


def _legacy_group_size(site: SiteDir, keys: SiteKey | Keyring) -> int:
    """For a format-1 ledger (record-level entries): the largest number of training records of one
    patient in the store now, the best bound on what those rounds sampled per patient."""
    from client.store import read_manifest

    try:
        manifest = read_manifest(site.store_dir, keys)
    except (FedscanError, OSError):  # no store, or one that no longer opens: nothing better to go by
        return 1
    counts: dict[str, int] = {}
    for record in manifest.records:
        if record.split == "train":
            counts[record.patient] = counts.get(record.patient, 0) + 1
    return max(counts.values(), default=1)


def _from_format_1(raw: list[dict[str, object]], group_size: int) -> list[LedgerEntry]:
    """Format 1 entries (one mechanism per (run, round), record level) as bookings.

    Format 1 merged entries by the server's round number, which is exactly what a coordinator could
    exploit; here every entry becomes its own booking, except the sample and client entries one round
    wrote together (same run, round and time), which stay one booking.
    """
    bookings: list[LedgerEntry] = []
    for old in raw:
        release = Release(
            str(old["kind"]),
            float(old["sampling_rate"]),  # type: ignore[arg-type]
            float(old["noise_multiplier"]),  # type: ignore[arg-type]
            int(old["steps"]),  # type: ignore[call-overload]
            unit="record",
            group_size=group_size if old["kind"] == "sample" else 1,
        )
        key = (str(old["run"]), int(old["round"]), str(old.get("recorded_at", "")))  # type: ignore[call-overload]
        last = bookings[-1] if bookings else None
        if (
            last is not None
            and (last.run, last.server_round, last.recorded_at) == key
            and release.kind not in {r.kind for r in last.releases}
        ):
            bookings[-1] = replace(last, releases=(*last.releases, release))
            continue
        bookings.append(
            LedgerEntry(
                len(bookings) + 1,
                f"format-1-{len(bookings) + 1}",
                key[0],
                key[1],
                (release,),
                float(old["delta"]),  # type: ignore[arg-type]
                "sent",
                key[2],
            )
        )
    return bookings
