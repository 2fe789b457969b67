"""The audit event registry: which events exist, who writes them, and what their details may hold.

The registry is data (:data:`EVENTS`), reviewed like data. Each event type names the side that writes
it and, for every detail key it allows, a *kind* from :data:`KINDS`. A kind is a narrow value shape --
a count, a SHA-256, a lower-case pseudonymous token, a map of counts -- never free text. This is what
keeps PHI out of the log: a patient name, a DICOM UID, a date, a path or a medical record number does
not fit any kind, so :func:`check_details` refuses it, and its error message names the event and the key
but never repeats the value.

Tokens are the only strings: 1-64 characters of ``[a-z0-9_.-]`` starting with a letter or digit, and
not shaped like a DICOM UID (``1.2.840...``), a date (``20240131``, ``2024-01-31``, any token starting
with one), a number of six digits or more alone or behind a short prefix (``4481234``, ``mrn0044812``:
the shape of record and accession numbers), or digits and separators only with six digits or more
(phone numbers). Lower-case words still pass (a token cannot tell a site id from a surname): that is
why each event allows tokens only under keys that name ids, profiles and options.

Semantics shared by the round events (reconciliation relies on them):

``run_id``
    The run's id, the same token on the server and every site.
``round``
    The server round number (Flower's ``server_round``, from 1).
``model_sha256``
    :func:`common.model_card.model_sha256` of the global model the round *started from* -- the
    parameters the server sent and the site trained on. ``new_model_sha256`` is the aggregate.
``participants``
    Pseudonymous ids of the sites whose update was aggregated; each is the ``actor`` of that site's log.
``epsilon``
    On a site: the site's cumulative sample-level epsilon in this run after the round. On the server:
    the federation-level (client-level DP) cumulative epsilon; ``epsilons`` maps site id to the
    epsilon each site reported.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from common.app_bundle import BUNDLE_REFUSALS
from common.errors import AuditError

__all__ = [
    "EVENTS",
    "KINDS",
    "LIBRARY_EVENTS",
    "REFUSAL_REASONS",
    "ROLES",
    "EventSpec",
    "check_details",
    "is_token",
    "new_token",
    "to_token",
]

ROLES: Final = ("site", "server")

#: Why a site refused a round (``round.refused``'s ``reason``).
REFUSAL_REASONS: Final = (
    "app_not_approved",
    "budget_exhausted",
    "delta_too_large",
    "dp_required",
    "invalid_config",
    "message_replayed",
    "model_not_allowed",
    "secagg_mismatch",
    "secagg_required",
    "too_few_sites",
    "work_over_cap",
    "rate_over_cap",
    "parameters_mismatch",
    "message_too_large",
    "other",
)
_RUN_STATUSES: Final = ("completed", "failed", "aborted")
#: Why a site refused an app bundle (``bundle.refused``'s ``reason``): see common.app_bundle.
_BUNDLE_REFUSALS: Final = tuple(BUNDLE_REFUSALS)

_TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_UID_LIKE = re.compile(r"\d+(\.\d+){3,}")
_DATE_LIKE = re.compile(r"(19|20)\d\d(-?)(0[1-9]|1[0-2])\2(0[1-9]|[12]\d|3[01]).*")
_NUMBER_LIKE = re.compile(r"[a-z]{0,4}[-_.]?\d{6,}")
_DIGITS_AND_SEPARATORS = re.compile(r"[\d._-]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NON_TOKEN = re.compile(r"[^a-z0-9_.-]+")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_B64_KEY = re.compile(r"[A-Za-z0-9+/]{43}=")
_MAX_ITEMS = 10_000


def new_token(prefix: str = "run") -> str:
    """A fresh random token such as ``run-3f9a0c41d2e7`` (48 random bits), e.g. for run ids.

    Redrawn in the rare case the random part looks like a number: Flower's own numeric run ids would be
    refused as record-number-like, so runs should be named with this instead.
    """
    while True:
        token = f"{prefix}-{secrets.token_hex(6)}"
        if is_token(token):
            return token


def to_token(text: str, default: str = "other") -> str:
    """``text`` (a category name of fedscan's own, e.g. ``"burned-in text"``) as a token, else ``default``.

    Lower-cased, every run of other characters replaced by ``-``, cut to 64 characters. For fedscan's
    own labels (rejection categories, option names), never for data values: a value that normalises
    into something token-shaped is still whatever it was.
    """
    token = _NON_TOKEN.sub("-", text.lower()).strip("-._")[:64].strip("-._")
    return token if is_token(token) else default


def is_token(value: object) -> bool:
    """Whether ``value`` is a pseudonymous token (see the module docstring)."""
    return (
        type(value) is str
        and _TOKEN_RE.fullmatch(value) is not None
        and _UID_LIKE.fullmatch(value) is None
        and _DATE_LIKE.fullmatch(value) is None
        and _NUMBER_LIKE.fullmatch(value) is None
        and not (_DIGITS_AND_SEPARATORS.fullmatch(value) and sum(c.isdigit() for c in value) >= 6)
    )


def _count(v: object) -> bool:
    return type(v) is int and v >= 0


def _number(v: object) -> bool:
    return (type(v) is int) or (type(v) is float and math.isfinite(v))


def _epsilon(v: object) -> bool:
    return _number(v) and v >= 0  # type: ignore[operator]


def _flag(v: object) -> bool:
    return type(v) is bool


def _matches(pattern: re.Pattern[str]) -> Callable[[object], bool]:
    return lambda v: type(v) is str and pattern.fullmatch(v) is not None


def _one_of(choices: tuple[str, ...]) -> Callable[[object], bool]:
    return lambda v: type(v) is str and v in choices


def _list_of(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: type(v) is list and len(v) <= _MAX_ITEMS and all(check(x) for x in v)


def _map_of(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: (
        type(v) is dict and len(v) <= _MAX_ITEMS and all(is_token(k) and check(x) for k, x in v.items())
    )


def _config_value(v: object) -> bool:
    return _flag(v) or _number(v) or v == "" or is_token(v)


#: Value kinds: name -> (check, what it is). A check is strict about types (``True`` is no count).
KINDS: Final[Mapping[str, tuple[Callable[[object], bool], str]]] = MappingProxyType(
    {
        "count": (_count, "a non-negative integer"),
        "number": (_number, "a finite number"),
        "epsilon": (_epsilon, "a finite non-negative number"),
        "flag": (_flag, "true or false"),
        "sha256": (_matches(_HEX64), "64 lowercase hex characters"),
        "key_id": (_matches(_HEX16), "16 lowercase hex characters"),
        "public_key": (_matches(_B64_KEY), "a base64 Ed25519 public key"),
        "token": (is_token, "a pseudonymous token ([a-z0-9_.-], not UID-, date- or number-like)"),
        "tokens": (_list_of(is_token), "a list of tokens"),
        "counts": (_map_of(_count), "a map of token to count"),
        "sha256s": (_map_of(_matches(_HEX64)), "a map of token to SHA-256"),
        "metrics": (_map_of(_number), "a map of token to number"),
        "epsilons": (_map_of(_epsilon), "a map of token to epsilon"),
        "config": (_map_of(_config_value), "a flat map of token to flag, number, token or empty string"),
        "role": (_one_of(ROLES), f"one of {', '.join(ROLES)}"),
        "refusal_reason": (_one_of(REFUSAL_REASONS), f"one of {', '.join(REFUSAL_REASONS)}"),
        "bundle_refusal": (_one_of(_BUNDLE_REFUSALS), f"one of {', '.join(_BUNDLE_REFUSALS)}"),
        "run_status": (_one_of(_RUN_STATUSES), f"one of {', '.join(_RUN_STATUSES)}"),
    }
)


@dataclass(frozen=True)
class EventSpec:
    """One event type: the side that writes it and the kind of each detail key.

    Attributes
    ----------
    side
        ``"site"``, ``"server"`` or ``"any"`` (the log's own bookkeeping events).
    required, optional
        Detail key -> kind name in :data:`KINDS`.
    summary
        One line for the docs and the report.
    """

    side: str
    summary: str
    required: Mapping[str, str] = field(default_factory=dict)
    optional: Mapping[str, str] = field(default_factory=dict)


_ROUND = {"run_id": "token", "round": "count"}

#: Every event type an audit log may hold.
EVENTS: Final[Mapping[str, EventSpec]] = MappingProxyType(
    {
        # -- written by the library itself ------------------------------------------------------
        "log.genesis": EventSpec(
            "any",
            "First entry of a log: the actor's role and public key.",
            {"role": "role", "public_key": "public_key", "format": "token"},
        ),
        "log.recovered": EventSpec(
            "any",
            "A torn last line (crash during a write) was removed before appending.",
            {"dropped_bytes": "count", "dropped_sha256": "sha256"},
        ),
        "log.rotated": EventSpec(
            "any",
            "First entry of a new live file: the previous one became segment N.",
            {"segment": "count", "sealed": "flag"},
        ),
        # -- sites --------------------------------------------------------------------------------
        "site.init": EventSpec(
            "site",
            "Site created: key material and policy.",
            {"site_id": "token"},
            {
                "data_key_id": "key_id",
                "signing_key_id": "key_id",
                "policy_sha256": "sha256",
                "policy": "config",
            },
        ),
        "keys.rotate": EventSpec(
            "site",
            "Site data key rotated; objects re-wrapped.",
            {"old_key_id": "key_id", "new_key_id": "key_id"},
            {"objects": "count"},
        ),
        "keys.shred": EventSpec(
            "site", "Site data key destroyed (crypto-shredding).", {"key_id": "key_id"}, {"objects": "count"}
        ),
        "deid.run": EventSpec(
            "site",
            "De-identification of an export.",
            {"files_in": "count", "files_out": "count", "files_rejected": "count"},
            {
                "profile": "token",
                "options": "tokens",
                "rejected": "counts",
                "burned_in_flagged": "count",
                "config_sha256": "sha256",
                "output_sha256": "sha256",
                "report_sha256": "sha256",
            },
        ),
        "ingest.run": EventSpec(
            "site",
            "Ingestion into the encrypted store.",
            {"records": "count", "rejected": "count", "manifest_sha256": "sha256"},
            {
                "files": "count",
                "rejected_reasons": "counts",
                "labels": "counts",
                "store_key_id": "key_id",
                "config_sha256": "sha256",
                "total_records": "count",
                "report_sha256": "sha256",
                "profile": "token",
                "options": "tokens",
            },
        ),
        "site.enrolled": EventSpec(
            "site",
            "An enrolment request was written: the site's public node and audit keys (no private key).",
            {"node_key_sha256": "sha256", "audit_key_id": "key_id"},
            {"new_node_key": "flag"},
        ),
        "trust.publisher": EventSpec(
            "site",
            "The site trusts a publisher key (its kit's, on first use): app bundles it signs may run.",
            {"publisher_key_id": "key_id", "public_key": "public_key"},
        ),
        "bundle.accepted": EventSpec(
            "site",
            "A run's app bundle verified against the site's trust settings before anything of it ran.",
            {"bundle_sha256": "sha256", "publisher_key_id": "key_id"},
            {"app_sha256": "sha256", "carries_code": "flag"},
        ),
        "bundle.refused": EventSpec(
            "site",
            "A run's app bundle failed verification: nothing of it was stored or run.",
            {"bundle_sha256": "sha256", "reason": "bundle_refusal"},
            {"publisher_key_id": "key_id", "app_sha256": "sha256", "carries_code": "flag"},
        ),
        "policy.change": EventSpec(
            "site",
            "Site policy (site.toml) changed.",
            {"policy_sha256": "sha256"},
            {"previous_sha256": "sha256", "changed": "tokens", "policy": "config"},
        ),
        "round.taken": EventSpec(
            "site",
            "The site trained in a round and sent an update.",
            {**_ROUND, "model_sha256": "sha256"},
            {
                "examples": "count",
                "epsilon": "epsilon",
                "delta": "number",
                "secagg": "flag",
                "dp": "flag",
                "app_sha256": "sha256",
                "update_sha256": "sha256",
                "manifest_sha256": "sha256",
                "train_loss": "number",
                "ledger_seq": "count",
                "ledger_head": "sha256",
            },
        ),
        "round.refused": EventSpec(
            "site",
            "The site refused a round under its policy.",
            {**_ROUND, "reason": "refusal_reason"},
            {"model_sha256": "sha256", "app_sha256": "sha256"},
        ),
        # -- server -------------------------------------------------------------------------------
        "registrations.sync": EventSpec(
            "server",
            "The SuperLink's registrations were made exactly the federation's active sites.",
            {"registered": "tokens", "unregistered": "tokens", "removed_unknown": "count"},
            {"active": "count"},
        ),
        "run.start": EventSpec(
            "server",
            "A training run started.",
            {"run_id": "token", "config_sha256": "sha256"},
            {
                "config": "config",
                "app_sha256": "sha256",
                "secagg": "flag",
                "dp": "flag",
                "sites": "tokens",
                "rounds": "count",
                "min_fit_sites": "count",
                "initial_model_sha256": "sha256",
                "first_round": "count",
            },
        ),
        "round.aggregated": EventSpec(
            "server",
            "A round's updates were aggregated.",
            {**_ROUND, "model_sha256": "sha256", "participants": "tokens"},
            {
                "new_model_sha256": "sha256",
                "failures": "count",
                "examples": "count",
                "secagg": "flag",
                "epsilon": "epsilon",
                "epsilons": "epsilons",
                "metrics": "metrics",
                "site_log_heads": "sha256s",
                "site_log_seqs": "counts",
            },
        ),
        "checkpoint.saved": EventSpec(
            "server",
            "A checkpoint of the global model was written.",
            {**_ROUND, "model_sha256": "sha256"},
            {"prev_model_sha256": "sha256", "bytes": "count", "file_sha256": "sha256"},
        ),
        "model.final": EventSpec(
            "server",
            "The final model was published.",
            {"run_id": "token", "model_sha256": "sha256"},
            {"rounds": "count", "card_sha256": "sha256", "initial_model_sha256": "sha256"},
        ),
        "run.end": EventSpec(
            "server",
            "A training run ended.",
            {"run_id": "token", "status": "run_status"},
            {"rounds": "count"},
        ),
    }
)

#: Events only the log itself writes; :meth:`common.audit.AuditLog.append` refuses them.
LIBRARY_EVENTS: Final = frozenset({"log.genesis", "log.recovered", "log.rotated"})


def check_details(event: str, details: Mapping[str, Any], *, role: str | None = None) -> None:
    """Check that ``details`` is allowed for ``event`` (and for a log of ``role``, if given).

    Raises
    ------
    AuditError
        Naming the event and the offending key and what it must be -- never the value, which might be
        exactly the PHI being refused.
    """
    spec = EVENTS.get(event)
    if spec is None:
        raise AuditError(f"Unknown audit event type {event!r}; known types: {', '.join(sorted(EVENTS))}.")
    if role is not None and spec.side not in ("any", role):
        raise AuditError(f"Event {event} is written by the {spec.side}, not by a {role} log.")
    if not isinstance(details, Mapping):
        raise AuditError(f"Details of event {event} must be a mapping.")
    checks = _CHECKS[event]
    if not spec.required.keys() <= details.keys():
        missing = sorted(set(spec.required) - set(details))
        raise AuditError(f"Event {event} needs detail(s) {', '.join(missing)}.")
    for key, value in details.items():
        found = checks.get(key) if type(key) is str else None
        if found is None:
            shown = type(key) is str and _KEY_NAME.fullmatch(key) is not None and is_token(key)
            named = repr(key) if shown else "(name not shown)"
            allowed = ", ".join(sorted(checks))
            raise AuditError(
                f"Event {event} does not allow a detail named {named} (allowed: {allowed}); "
                "audit details are counts, hashes, ids and config, never free text."
            )
        if not found[0](value):
            raise AuditError(
                f"Detail {key!r} of event {event} must be {found[1]}; the value was refused "
                "(not shown: it could be PHI)."
            )


# Per event: detail key -> (check, description), built once from the registry (verification is hot).
_CHECKS: Final = {
    event: {key: KINDS[kind] for key, kind in {**spec.required, **spec.optional}.items()}
    for event, spec in EVENTS.items()
}
_KEY_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
