"""Start Flower's SuperLink or SuperNode in this process with fedscan's gates (always) and pace (optional).

Every SuperLink and SuperNode fedscan starts goes through :func:`launch`:

1. the installed Flower must be the supported release (:func:`common.flower_runtime.require_supported`);
2. the security gates are installed and must succeed, or nothing starts: the SuperLink's control-plane
   gate (:mod:`.control_gate`), and for a SuperNode the bundle gate its site supplies (:mod:`.bundle_gate`);
   the SuperLink must be started with TLS and SuperNode authentication, and Flower's legacy gRPC
   listeners (switched on by internal environment variables) are switched off;
3. fedscan's performance adaptations of the process's role are applied
   (:mod:`common.flower_runtime.adaptations`: all of them, or none in stock mode or on another Flower,
   or all but those an ablation leaves out); in *stock* mode the process runs Flower's own code paths
   apart from the gates;
4. Flower's own command-line entry point runs with the remaining arguments.

What was applied is printed on one line to standard error (the process's log), so a log always says
which adaptations a process ran with.

Run as ``python -m common.flower_runtime.launcher [--stock] [--max-wait S] [--hold S] flower-superlink ARGS``.
A SuperNode is started through :mod:`client.supernode_process`, which adds the site's bundle gate.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Final, NoReturn

from common.errors import ConfigError
from common.flower_runtime import flower_version, require_supported
from common.flower_runtime.adaptations import RUNTIME_ENV, apply

__all__ = ["COMMANDS", "LEGACY_GRPC_SWITCHES", "launch", "main", "parse_pace"]

COMMANDS: Final = ("flower-superlink", "flower-supernode")
#: Flower 1.42 environment switches that start the pre-HTTP gRPC Control and Fleet listeners, which the
#: control-plane gate does not cover.
LEGACY_GRPC_SWITCHES: Final = ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API")


def _require_flag(args: Sequence[str], flag: str, why: str) -> None:
    if flag not in args:
        raise ConfigError(f"Refusing to start the SuperLink without {flag}: {why}.")


def _appliers(role: str, max_wait: float, hold: float) -> dict[str, Callable[[], list[str]]]:
    """How each performance adaptation of a SuperLink or SuperNode process is applied."""
    from common.flower_runtime import (
        inline_dependencies,
        superlink_middleware,
        transfers,
        unary_dispatch,
        wakeups,
    )
    from common.flower_runtime.polling import shorten_polls
    from common.flower_runtime.startup_heap import freeze_startup_heap

    def held() -> list[str]:
        return wakeups.hold_empty_answers(role, hold) if hold > 0 else []

    def frozen() -> list[str]:
        return [f"start-up heap frozen ({freeze_startup_heap()} objects)"]

    appliers: dict[str, Callable[[], list[str]]] = {
        "warm-executor": lambda: [],  # the isolation mode the caller chose (adaptations.effective_isolation)
        "held-answers": held,
        "inline-dependencies": inline_dependencies.inline_flower_dependencies,
        "startup-heap": frozen,  # last: every import done
    }
    if role == "superlink":
        appliers["lean-middleware"] = superlink_middleware.skip_idle_middleware
    else:
        held_after = hold / 2 if hold > 0 else None
        appliers["short-polls"] = lambda: (
            shorten_polls("supernode", max_wait, held_after=held_after) if max_wait > 0 else []
        )
        appliers["wide-transfers"] = transfers.widen_object_transfers
        appliers["unary-dispatch"] = unary_dispatch.buffer_supernode_app
    return appliers


def launch(
    command: str,
    flower_args: Sequence[str],
    *,
    performance: bool = True,
    max_wait: float = 0.2,
    hold: float = 0.0,
    gates: Sequence[Callable[[], str]] = (),
) -> NoReturn:
    """Apply the gates (and, with ``performance``, the pace adaptations), then run Flower's ``command``.

    ``gates`` are extra security gates (a SuperNode's bundle gate); each returns what it changed and
    raises if it cannot be installed. Never returns: Flower's command ends the process.
    """
    if command not in COMMANDS:
        raise ConfigError(f"command must be one of {', '.join(COMMANDS)}, not {command!r}.")
    require_supported(f"fedscan's {command} launcher")
    role = "supernode" if command == "flower-supernode" else "superlink"
    applied: list[str] = []
    if role == "superlink":
        from common.flower_runtime.control_gate import install_control_gate

        _require_flag(flower_args, "--enable-supernode-auth", "only registered node keys may connect")
        _require_flag(flower_args, "--ssl-certfile", "every connection is TLS")
        if "--insecure" in flower_args:
            raise ConfigError("Refusing to start the SuperLink with --insecure: every connection is TLS.")
        for switch in LEGACY_GRPC_SWITCHES:
            os.environ.pop(switch, None)
        applied.append(install_control_gate())
    applied += [gate() for gate in gates]
    if not performance:
        os.environ[RUNTIME_ENV] = "stock"  # this process and every process it starts
    # Flower's entry point is imported before the adaptations (which patch what it will call) so that
    # the start-up heap is frozen with every import done.
    if role == "supernode":
        from flwr.supernode.cli import flower_supernode as serve
    else:
        from flwr.superlink.cli import flower_superlink as serve
    changed = apply(role, _appliers(role, max_wait, hold))
    print(
        f"fedscan: Flower {flower_version()} {command}; security gates: {'; '.join(applied)}; "
        f"pace: wait cap {max_wait} s, hold {hold} s; changed: {', '.join(changed) or 'nothing'}",
        file=sys.stderr,
        flush=True,
    )
    # Flower parses sys.argv itself and names its exit events after the command.
    sys.argv = [command, *flower_args]
    serve()
    sys.exit(0)


def parse_pace(parser: argparse.ArgumentParser) -> None:
    """Add the pace options shared by the SuperLink and SuperNode launchers to ``parser``."""
    parser.add_argument("--stock", action="store_true", help="No performance adaptation (gates stay on).")
    parser.add_argument(
        "--max-wait", type=float, default=0.2, help="Longest idle wait, in seconds (0: Flower's own waits)."
    )
    parser.add_argument("--hold", type=float, default=0.0, help="Hold empty answers this long (0: off).")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: see the module docstring (the SuperLink; a SuperNode needs its site's gate)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parse_pace(parser)
    parser.add_argument("command", choices=["flower-superlink"])
    parser.add_argument("flower_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        launch(
            args.command, args.flower_args, performance=not args.stock, max_wait=args.max_wait, hold=args.hold
        )
    except ConfigError as error:
        print(f"fedscan: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
