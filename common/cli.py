"""The ``fedscan`` command: the root, the error boundary, and group discovery.

Command groups (``site``, ``server``, ``sim``, ``audit``) and top-level commands (``demo``) register
through the ``fedscan.commands`` entry-point group, so this module never imports ``client``, ``server``
or ``simulations``. Nothing imported here may pull in torch or flwr: ``fedscan --help`` must start fast.

Library code raises :class:`common.errors.FedscanError`; :func:`main` is the one place that turns it
into one line on stderr and the exit code of its class (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

import click
import typer
from rich.console import Console
from rich.markup import escape

from common import __version__
from common.errors import FedscanError

__all__ = ["ENTRY_POINT_GROUP", "build_app", "main"]

ENTRY_POINT_GROUP = "fedscan.commands"

_stderr = Console(stderr=True, highlight=False)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"fedscan {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """Create the root Typer app and attach every registered group and command."""
    app = typer.Typer(
        name="fedscan",
        help=(
            "Secure federated learning for medical imaging: sites keep their scans, "
            "de-identified and encrypted at rest; only model updates leave.\n\n"
            "Example: fedscan demo --workdir ./fedscan-demo"
        ),
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
        add_completion=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
        debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    ) -> None:
        """Secure federated learning for medical imaging."""

    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        target = ep.load()
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=ep.name)
        else:
            app.command(ep.name)(target)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; the only place where errors become messages and exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = build_app()(args=args, prog_name="fedscan", standalone_mode=False)
    except FedscanError as error:
        if debug:
            raise
        _stderr.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        _stderr.print("[bold red]aborted[/]")
        sys.exit(130)
    except KeyboardInterrupt:
        _stderr.print("[bold red]interrupted[/]")
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
