"""The registry of fedscan's performance adaptations of Flower, and the one switch that applies them.

Each entry names one adaptation, the processes it applies to and where its code and its measured reason
live (``docs/performance.md``, ablation table). :func:`apply` is the only way a process gets them:

* in **stock** mode (``FEDSCAN_FLOWER_RUNTIME=stock``) none is applied, anywhere: the federation runs
  Flower's own code paths (fedscan's security gates stay on: they are not in this registry);
* on a Flower other than the supported release (:data:`common.flower_runtime.SUPPORTED`) none is applied
  either, and the process says so on its log: the adaptations were read against that release's code,
  so a newer Flower runs stock rather than a mixture of applied and skipped patches;
* otherwise every adaptation of the process's role is applied, minus those named in
  ``FEDSCAN_FLOWER_WITHOUT`` (comma-separated names; for the ablation benchmark only).

Each adaptation follows the same contract: idempotent, marked, it reports what it changed, and its
absence changes only speed, never what a message carries, its authentication or who computes what.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from common.flower_runtime import SUPPORTED, flower_version, is_supported

__all__ = [
    "ADAPTATIONS",
    "ROLES",
    "RUNTIME_ENV",
    "WITHOUT_ENV",
    "Adaptation",
    "apply",
    "effective_isolation",
    "enabled",
    "runtime_mode",
]

#: ``fedscan`` (default: every adaptation) or ``stock`` (none).
RUNTIME_ENV: Final = "FEDSCAN_FLOWER_RUNTIME"
#: Comma-separated adaptation names to leave out (ablation benchmarks).
WITHOUT_ENV: Final = "FEDSCAN_FLOWER_WITHOUT"
#: The processes an adaptation may apply to.
ROLES: Final = (
    "superlink",
    "supernode",
    "executor",
    "clientapp-task",
    "serverapp-task",
    "serverapp",
    "simulation",
)


@dataclass(frozen=True)
class Adaptation:
    """One performance adaptation: its name, the roles it applies to, what it does, and its code."""

    name: str
    roles: tuple[str, ...]
    summary: str
    module: str


#: Every performance adaptation, by name (the ablation table in docs/performance.md has one row each).
ADAPTATIONS: Final[Mapping[str, Adaptation]] = {
    a.name: a
    for a in (
        Adaptation(
            "warm-executor",
            ("superlink", "supernode"),
            "start each task from a pre-warmed interpreter (fork) instead of a fresh Python process",
            "common.flower_runtime.warm_exec",
        ),
        Adaptation(
            "held-answers",
            ("superlink", "supernode"),
            "hold an empty poll answer until there is news (or a short timeout) instead of answering at once",
            "common.flower_runtime.wakeups",
        ),
        Adaptation(
            "short-polls",
            ("supernode", "clientapp-task", "serverapp-task"),
            "cap Flower's fixed idle waits (3 s polls, 1-10 s object back-off) while work is going on",
            "common.flower_runtime.polling",
        ),
        Adaptation(
            "wide-transfers",
            ("supernode", "clientapp-task", "serverapp-task"),
            "move a message's objects over more connections at once",
            "common.flower_runtime.transfers",
        ),
        Adaptation(
            "inline-dependencies",
            ("superlink", "supernode"),
            "run Flower's quick request look-ups on the event loop instead of a thread hand-off each",
            "common.flower_runtime.inline_dependencies",
        ),
        Adaptation(
            "lean-middleware",
            ("superlink",),
            "skip one-API middleware outside its API and run the rest in-task on one-message routes",
            "common.flower_runtime.superlink_middleware",
        ),
        Adaptation(
            "unary-dispatch",
            ("supernode",),
            "run the SuperNode's middleware in-task on its one-message routes",
            "common.flower_runtime.unary_dispatch",
        ),
        Adaptation(
            "unsent-telemetry",
            ("clientapp-task", "serverapp-task"),
            "skip building telemetry events that are never sent (each started the `file` command twice)",
            "common.flower_runtime.telemetry",
        ),
        Adaptation(
            "startup-heap",
            ("superlink", "supernode", "executor"),
            "freeze the start-up heap out of the garbage collector's reach before serving or forking",
            "common.flower_runtime.startup_heap",
        ),
        Adaptation(
            "message-packing",
            ("serverapp",),
            "send a message's whole content as one record: three wire objects instead of six to eight",
            "common.flower_runtime.message_packing",
        ),
        Adaptation(
            "prompt-handoff",
            ("simulation",),
            "wake the simulation engine's actors when a message is pushed instead of on a 0.1 s timer",
            "common.flower_runtime.engine_latency",
        ),
    )
}


def effective_isolation(requested: str) -> str:
    """The isolation mode to run for ``requested``: ``warm`` needs the warm executor to be on.

    In stock mode ``warm`` becomes Flower's default ``subprocess``; with the warm executor left out (an
    ablation) it becomes ``process`` (Flower's own SuperExec, everything else equal).
    """
    if requested != "warm":
        return requested
    if runtime_mode() == "stock":
        return "subprocess"
    return "warm" if enabled("warm-executor") else "process"


def runtime_mode() -> str:
    """``fedscan`` or ``stock`` (from :data:`RUNTIME_ENV`); anything else is refused loudly."""
    mode = os.environ.get(RUNTIME_ENV, "fedscan").strip().lower() or "fedscan"
    if mode not in ("fedscan", "stock"):
        raise ValueError(f"{RUNTIME_ENV} must be 'fedscan' or 'stock', not {mode!r}.")
    return mode


def _without() -> frozenset[str]:
    names = {n.strip() for n in os.environ.get(WITHOUT_ENV, "").split(",") if n.strip()}
    unknown = names - set(ADAPTATIONS)
    if unknown:
        raise ValueError(f"{WITHOUT_ENV} names unknown adaptations: {', '.join(sorted(unknown))}.")
    return frozenset(names)


def enabled(name: str) -> bool:
    """Whether adaptation ``name`` is on in this process (fedscan mode, supported Flower, not left out)."""
    if name not in ADAPTATIONS:
        raise KeyError(name)
    return runtime_mode() == "fedscan" and is_supported() and name not in _without()


def apply(role: str, appliers: Mapping[str, Callable[[], list[str]]], *, say: bool = True) -> list[str]:
    """Apply the adaptations of ``role`` that are enabled; ``appliers`` maps name -> function doing it.

    Returns what was changed (each applier's report). With ``say``, one line on standard error says
    which adaptations ran and which did not, and why (stock mode, another Flower, left out).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}.")
    names = [n for n, a in ADAPTATIONS.items() if role in a.roles]
    missing = [n for n in names if n not in appliers]
    if missing:
        raise ValueError(f"no applier given for {', '.join(missing)} in role {role}.")
    mode = runtime_mode()
    if mode == "stock":
        reason = "stock mode"
    elif not is_supported():
        reason = f"Flower {flower_version()} is not the supported {SUPPORTED}.x"
    else:
        reason = ""
    applied: list[str] = []
    ran: list[str] = []
    if not reason:
        left_out = _without()
        for name in names:
            if name in left_out:
                continue
            applied += appliers[name]()
            ran.append(name)
    if say:
        off = [n for n in names if n not in ran]
        line = f"fedscan: Flower {flower_version()} {role}: adaptations " + (
            f"on: {', '.join(ran) or 'none'}" + (f"; off: {', '.join(off)}" if off else "")
            if not reason
            else f"all off ({reason})"
        )
        print(line, file=sys.stderr, flush=True)
    return applied


def settings_summary(values: Mapping[str, Any]) -> str:
    """``k=v`` pairs for log lines."""
    return ", ".join(f"{k}={v}" for k, v in values.items())
