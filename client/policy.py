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
from common.errors import ConfigError
from common.privacy.refusals import REFUSAL_CODES, REFUSAL_PREFIX, parse_refusal

__all__ = [
    "REFUSAL_CODES",
    "REFUSAL_PREFIX",
    "Refusal",
    "RoundRequest",
    "SitePolicy",
    "app_hash",
    "check_round",
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
        for digest in self.approved_app_hashes:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(
                    f"policy.approved_app_hashes: {digest!r} is not a lowercase SHA-256 hex digest."
                )

    @property
    def has_budget(self) -> bool:
        return math.isfinite(self.max_epsilon)

    def to_toml(self) -> str:
        """The ``[policy]`` table, every field spelled out with a comment."""
        models = ", ".join(f'"{m}"' for m in self.allowed_models)
        hashes = ", ".join(f'"{h}"' for h in self.approved_app_hashes)
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
            "# Distributed client-level DP: sites of a round (this one included) assumed to add their\n"
            "# noise share honestly; this site adds 1/min_honest_sites of the noise variance. 1 = trust\n"
            "# no other site (SecAgg+ keys are not bound to enrolled sites). Never the server's number.\n"
            f"min_honest_sites = {self.min_honest_sites}\n"
        )


@dataclass(frozen=True)
class RoundRequest:
    """What the site knows about an incoming message before it touches any data.

    ``training`` is false for evaluation and queries (only the app and model checks apply to them).
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
    if not request.training:
        return None
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
    if policy.has_budget and request.epsilon_spent >= policy.max_epsilon:
        return Refusal(
            "budget-exhausted",
            f"epsilon spent {request.epsilon_spent:.4g} has reached max_epsilon {policy.max_epsilon:g}",
        )
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
