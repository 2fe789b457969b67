"""The site's policy: what a round must look like before this site touches its data for it.

A hospital states its own limits in ``site.toml`` (``[policy]``) and enforces them itself, whatever the
server says: secure aggregation required, a minimum number of sites in a round, the model kinds it may
train, a privacy budget (maximum epsilon at a maximum delta) and the Flower Apps it has approved. The
check here is pure: :func:`check_round` takes what the site knows about the incoming round (a
:class:`RoundRequest`, built from the message and the run config *before* any data is decrypted) and
returns a :class:`Refusal` or ``None``. A refusal is recorded at the site with its full reason
(:func:`record_refusal`: a plain JSONL file holding codes, numbers and model names, never patient
data); the server only ever sees the refusal *code*.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from client.site import SiteDir
from common.app_identity import app_hash
from common.config import MODEL_KINDS
from common.crypto.signing import VerifyKey, load_verify_key
from common.errors import ConfigError, KeyMaterialError
from common.privacy.refusals import REFUSAL_CODES, REFUSAL_PREFIX, parse_refusal

__all__ = [
    "REFUSAL_CODES",
    "REFUSAL_PREFIX",
    "Refusal",
    "RoundRequest",
    "SitePolicy",
    "app_hash",
    "check_round",
    "compare_parameters",
    "npy_header",
    "parse_refusal",
    "record_refusal",
    "refusals_file",
]


@dataclass(frozen=True)
class SitePolicy:
    """``[policy]`` of ``site.toml``: the limits this site enforces on every round.

    Attributes
    ----------
    require_secure_aggregation:
        Train only inside SecAgg+ (the server then sees the sum of the sites' updates, never one).
    min_sites:
        Fewest sites a training round may have (under SecAgg+ the site counts them in the protocol).
    allowed_models:
        Model kinds this site may train.
    max_epsilon, max_delta:
        Privacy budget of this site across all runs (its epsilon ledger); ``inf`` = no budget. A run
        whose delta exceeds ``max_delta`` is refused.
    approved_app_hashes:
        SHA-256 digests (:func:`app_hash`) of the app code the site accepts; empty = any.
    trusted_publishers:
        Ed25519 public keys (OpenSSH ``ssh-ed25519 ...`` lines or base64) of the publishers whose app
        bundles this site runs (:mod:`common.app_bundle`). Empty until the site's first ``site run``
        adopts its kit's publisher key (trust on first use, recorded in the audit log); a site that
        trusts no publisher runs nothing.
    pinned_bundles:
        SHA-256 of the app bundles (the bytes the SuperNode receives) this site accepts; empty = any
        bundle a trusted publisher signed for this site's installed fedscan.
    max_local_epochs, max_local_steps, max_batch_size, max_threads:
        Most local work one round may ask for: epochs (``local-epochs``), or mini-batch steps
        (``local-steps``) when the run counts steps, each of at most ``max_batch_size`` records
        (``batch-size``: a step's work, and what one step holds in memory), on at most ``max_threads``
        threads (``threads``: the share of the site's machine a round may take).
    max_rounds_per_run, max_rounds_per_day:
        Most training rounds this site takes in one run (the run's ``num-server-rounds`` too) and in one
        UTC day, counted by the site itself.
    max_message_mb:
        Largest incoming message (its model and every other record), in MiB; the model of a training
        or evaluation message must also have exactly the shapes and types of the run's model.
    min_honest_sites:
        Distributed client-level DP: how many of a round's sites (this one included) the site assumes
        add their noise share honestly. The site adds ``1 / min_honest_sites`` of the noise variance and
        books the noise as if that many shares were in the sum. The default, 1, trusts no other site:
        the site adds all of the noise itself. SecAgg+ keys are not bound to enrolled sites, so a
        coordinator could fill a round with sites of its own; raise it only for sites you trust.
        Never taken from the server (SecAgg+'s threshold is the server's number).
    """

    require_secure_aggregation: bool = True
    min_sites: int = 3
    allowed_models: tuple[str, ...] = MODEL_KINDS
    max_epsilon: float = math.inf
    max_delta: float = 1e-5
    approved_app_hashes: tuple[str, ...] = field(default=())
    trusted_publishers: tuple[str, ...] = field(default=())
    pinned_bundles: tuple[str, ...] = field(default=())
    max_local_epochs: int = 50
    max_local_steps: int = 100_000
    max_batch_size: int = 1024
    max_threads: int = 8
    max_rounds_per_run: int = 1000
    max_rounds_per_day: int = 5000
    max_message_mb: float = 1024.0
    min_honest_sites: int = 1

    def __post_init__(self) -> None:
        if self.min_sites < 2:
            raise ConfigError("policy.min_sites must be at least 2 (one site alone is not a federation).")
        if not 1 <= self.min_honest_sites <= self.min_sites:
            raise ConfigError(
                f"policy.min_honest_sites must be between 1 and min_sites ({self.min_sites}): a site cannot "
                "assume more honest sites than it requires in a round."
            )
        unknown = sorted(set(self.allowed_models) - set(MODEL_KINDS))
        if unknown or not self.allowed_models:
            raise ConfigError(
                f"policy.allowed_models must list some of {', '.join(MODEL_KINDS)}; "
                f"unknown: {', '.join(unknown) or 'none'}."
            )
        if not self.max_epsilon > 0:
            raise ConfigError("policy.max_epsilon must be positive (inf for no budget).")
        if not 0 < self.max_delta < 1:
            raise ConfigError("policy.max_delta must be in (0, 1).")
        for name in ("approved_app_hashes", "pinned_bundles"):
            for digest in getattr(self, name):
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ConfigError(f"policy.{name}: {digest!r} is not a lowercase SHA-256 hex digest.")
        self.publisher_keys()  # each must parse as an Ed25519 public key
        for name in (
            "max_local_epochs",
            "max_local_steps",
            "max_batch_size",
            "max_threads",
            "max_rounds_per_run",
            "max_rounds_per_day",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"policy.{name} must be at least 1.")
        if not self.max_message_mb > 0:
            raise ConfigError("policy.max_message_mb must be positive.")

    def publisher_keys(self) -> tuple[VerifyKey, ...]:
        """:attr:`trusted_publishers` as verify keys (ConfigError naming a key that does not parse)."""
        keys = []
        for text in self.trusted_publishers:
            try:
                keys.append(load_verify_key(text))
            except KeyMaterialError:
                raise ConfigError(
                    f"policy.trusted_publishers: {text[:40]!r}... is not an Ed25519 public key "
                    "(an OpenSSH 'ssh-ed25519 ...' line or 44 characters of base64)."
                ) from None
        return tuple(keys)

    @property
    def has_budget(self) -> bool:
        return math.isfinite(self.max_epsilon)

    def to_toml(self) -> str:
        """The ``[policy]`` table, every field spelled out with a comment."""
        models = ", ".join(f'"{m}"' for m in self.allowed_models)
        hashes = ", ".join(f'"{h}"' for h in self.approved_app_hashes)
        publishers = "".join(f'\n    "{k}",' for k in self.trusted_publishers)
        pins = ", ".join(f'"{h}"' for h in self.pinned_bundles)
        epsilon = "inf" if not self.has_budget else repr(float(self.max_epsilon))
        return (
            "[policy]\n"
            "# Enforced here before any data is decrypted; the server only sees a refusal code.\n"
            f"require_secure_aggregation = {'true' if self.require_secure_aggregation else 'false'}\n"
            "# Fewest sites a training round may have.\n"
            f"min_sites = {self.min_sites}\n"
            f"allowed_models = [{models}]\n"
            "# Privacy budget of this site over all runs (its sealed epsilon ledger); inf = none.\n"
            f"max_epsilon = {epsilon}\n"
            f"max_delta = {self.max_delta!r}\n"
            "# SHA-256 of the app code this site accepts (python -c 'import client.policy as p;\n"
            "# print(p.app_hash())'); empty = any.\n"
            f"approved_app_hashes = [{hashes}]\n"
            "# Publisher keys whose signed app bundles this site runs (`fedscan site run` adopts its kit's\n"
            "# key on first use if none is listed); nothing else runs here.\n"
            f"trusted_publishers = [{publishers}{chr(10) if publishers else ''}]\n"
            "# SHA-256 of the app bundles this site accepts; empty = any a trusted publisher signed.\n"
            f"pinned_bundles = [{pins}]\n"
            "# Most work a round may ask of this site, refused before any data is decrypted.\n"
            f"max_local_epochs = {self.max_local_epochs}\n"
            f"max_local_steps = {self.max_local_steps}\n"
            f"max_batch_size = {self.max_batch_size}\n"
            f"max_threads = {self.max_threads}\n"
            f"max_rounds_per_run = {self.max_rounds_per_run}\n"
            f"max_rounds_per_day = {self.max_rounds_per_day}\n"
            f"max_message_mb = {float(self.max_message_mb)!r}\n"
            "# Distributed client-level DP: sites of a round (this one included) assumed to add their\n"
            "# noise share honestly; this site adds 1/min_honest_sites of the noise variance. 1 = trust\n"
            "# no other site (SecAgg+ keys are not bound to enrolled sites). Never the server's number.\n"
            f"min_honest_sites = {self.min_honest_sites}\n"
        )


@dataclass(frozen=True)
class RoundRequest:
    """What the site knows about an incoming message before it touches any data.

    ``training`` is false for evaluation and queries (only the app, model and size checks apply to them).
    ``secure`` says whether the message is part of the SecAgg+ protocol; ``num_sites`` is the number of
    sites in the round as the protocol shows it (or the run config's claim without SecAgg+).
    ``epsilon_spent`` is the site's ledger total (record level, at the run's delta), and
    ``differentially_private`` whether the run bounds what this site's data can reveal (sample-level
    DP-SGD, or client-level noise that the sites add themselves).
    """

    app_hash: str
    model: str
    training: bool
    secure: bool = False
    run_wants_secure: bool = False
    num_sites: int | None = None
    delta: float = 1e-5
    differentially_private: bool = False
    epsilon_spent: float = 0.0
    local_epochs: int = 1
    local_steps: int = 0
    batch_size: int = 32
    threads: int = 1
    run_rounds: int = 1
    rounds_in_run: int = 0
    rounds_today: int = 0
    parameters_problem: str | None = None
    message_bytes: int = 0


@dataclass(frozen=True)
class Refusal:
    """A refusal: ``code`` (one of :data:`REFUSAL_CODES`, what the server sees) and the site's reason."""

    code: str
    reason: str

    def __post_init__(self) -> None:
        if self.code not in REFUSAL_CODES:
            raise ValueError(f"Unknown refusal code {self.code!r}.")

    @property
    def wire_reason(self) -> str:
        """The only text that leaves the site."""
        return f"{REFUSAL_PREFIX}{self.code}"


def check_round(policy: SitePolicy, request: RoundRequest) -> Refusal | None:
    """The first reason ``policy`` refuses ``request``, or ``None`` if the site may go on.

    Order: who sent the code, then how it aggregates, what it trains, how private it is and with how
    many sites, and last the budget.
    """
    if policy.approved_app_hashes and request.app_hash not in policy.approved_app_hashes:
        return Refusal("unapproved-app", f"app hash {request.app_hash} is not in approved_app_hashes")
    if request.model not in policy.allowed_models:
        return Refusal(
            "model-not-allowed",
            f"model {request.model!r} is not in allowed_models {list(policy.allowed_models)}",
        )
    refusal = _over_size(policy, request)  # any message: an evaluation loads the model sent as well
    if refusal is not None or not request.training:
        return refusal
    if request.run_wants_secure and not request.secure:
        return Refusal(
            "secure-aggregation-mismatch",
            "the run config asks for secure aggregation but the server sent a plain training message",
        )
    if policy.require_secure_aggregation and not request.secure:
        return Refusal("no-secure-aggregation", "the round does not run SecAgg+ and the policy requires it")
    if request.delta > policy.max_delta:
        return Refusal(
            "delta-too-large", f"the run's delta {request.delta:g} exceeds max_delta {policy.max_delta:g}"
        )
    if policy.has_budget and not request.differentially_private:
        return Refusal(
            "no-differential-privacy",
            f"the run has no site-enforced differential privacy and the site has a budget "
            f"(max_epsilon {policy.max_epsilon:g})",
        )
    if request.num_sites is not None and request.num_sites < policy.min_sites:
        return Refusal(
            "too-few-sites", f"the round has {request.num_sites} sites; the policy needs {policy.min_sites}"
        )
    refusal = _over_caps(policy, request)
    if refusal is not None:
        return refusal
    if policy.has_budget and request.epsilon_spent >= policy.max_epsilon:
        return Refusal(
            "budget-exhausted",
            f"epsilon spent {request.epsilon_spent:.4g} has reached max_epsilon {policy.max_epsilon:g}",
        )
    return None


def _over_size(policy: SitePolicy, request: RoundRequest) -> Refusal | None:
    """Whether the message is larger than the site takes, or its model is not the run's model."""
    if request.message_bytes > policy.max_message_mb * 2**20:
        return Refusal(
            "message-too-large",
            f"the message carries {request.message_bytes / 2**20:.1f} MiB, over max_message_mb "
            f"{policy.max_message_mb:g}",
        )
    if request.parameters_problem is not None:
        return Refusal("parameters-mismatch", request.parameters_problem)
    return None


def _over_caps(policy: SitePolicy, request: RoundRequest) -> Refusal | None:
    """The first cap on a round's work or rate that ``request`` exceeds."""
    if request.local_steps > 0 and request.local_steps > policy.max_local_steps:
        return Refusal(
            "work-over-cap",
            f"local-steps {request.local_steps} is over max_local_steps {policy.max_local_steps}",
        )
    if request.batch_size > policy.max_batch_size:
        return Refusal(
            "work-over-cap",
            f"batch-size {request.batch_size} is over max_batch_size {policy.max_batch_size}",
        )
    if request.threads > policy.max_threads:
        return Refusal("work-over-cap", f"threads {request.threads} is over max_threads {policy.max_threads}")
    if request.local_steps <= 0 and request.local_epochs > policy.max_local_epochs:
        return Refusal(
            "work-over-cap",
            f"local-epochs {request.local_epochs} is over max_local_epochs {policy.max_local_epochs}",
        )
    if request.run_rounds > policy.max_rounds_per_run or request.rounds_in_run >= policy.max_rounds_per_run:
        return Refusal(
            "work-over-cap",
            f"the run asks for {request.run_rounds} rounds and this site has taken {request.rounds_in_run} "
            f"in it; max_rounds_per_run is {policy.max_rounds_per_run}",
        )
    if request.rounds_today >= policy.max_rounds_per_day:
        return Refusal(
            "rate-over-cap",
            f"this site has taken {request.rounds_today} rounds today (UTC); max_rounds_per_day is "
            f"{policy.max_rounds_per_day}",
        )
    return None


def npy_header(data: bytes) -> tuple[tuple[int, ...], str]:
    """Shape and dtype (``numpy`` type string) from the header of ``.npy`` bytes, without the array.

    A header that cannot be read gives shape ``(-1,)``, which matches no model.
    """
    import io

    import numpy as np

    stream = io.BytesIO(data[:4096])
    try:
        version = np.lib.format.read_magic(stream)
        fmt = np.lib.format
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, dtype = read(stream)
    except (ValueError, OSError, SyntaxError, TypeError, EOFError):
        return (-1,), "?"
    return tuple(int(n) for n in shape), np.dtype(dtype).str


def compare_parameters(
    incoming: list[tuple[tuple[int, ...], str]], expected: tuple[tuple[tuple[int, ...], str], ...]
) -> str | None:
    """Why a model the server sent is not the run's model (array count, shapes, dtypes), or ``None``."""
    if len(incoming) != len(expected):
        return f"the server sent {len(incoming)} arrays; the run's model has {len(expected)}"
    for index, (got, want) in enumerate(zip(incoming, expected, strict=True)):
        if got != want:
            return f"array {index} is {got[0]} {got[1]}; the run's model has {want[0]} {want[1]}"
    return None


def refusals_file(site: SiteDir) -> Path:
    """Where a site keeps its refusals: codes, reasons, runs and rounds; no patient data."""
    return site.root / "privacy" / "refusals.jsonl"


def record_refusal(site: SiteDir, refusal: Refusal, *, run: str, server_round: int) -> None:
    """Append one refusal to :func:`refusals_file` (0600, created on first use)."""
    path = refusals_file(site)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = json.dumps(
        {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "run": run,
            "round": server_round,
            "code": refusal.code,
            "reason": refusal.reason,
        },
        sort_keys=True,
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as handle:
        handle.write(line + "\n")
