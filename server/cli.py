"""``fedscan server ...``: what the federation's coordinator runs."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["server_app"]

console = Console()

server_app = typer.Typer(
    help="Coordinate a federation: run configuration, the SuperLink and the training run.\n\n"
    "Example: fedscan server config --set num-server-rounds=5 --json",
    no_args_is_help=True,
)


def _parse_assignment(text: str) -> tuple[str, bool | int | float | str]:
    key, sep, raw = text.partition("=")
    if not sep:
        from common.errors import ConfigError

        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}.")
    value: bool | int | float | str = raw
    for convert in (int, float):
        try:
            value = convert(raw)
            break
        except ValueError:
            continue
    if raw.lower() in {"true", "false"}:
        value = raw.lower() == "true"
    return key.strip(), value


@server_app.command("config")
def server_config(
    assignments: list[str] = typer.Option(
        [], "--set", help="Override a run-config key: KEY=VALUE (repeatable)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Validate and show the run configuration the ServerApp and ClientApps will use.

    Example: fedscan server config --set model=svm --set num-server-rounds=10
    """
    from common.config import RunConfig

    overrides = dict(_parse_assignment(a) for a in assignments)
    config = RunConfig.from_flower({**RunConfig().to_flower(), **overrides})
    body = config.to_flower()
    if json_output:
        typer.echo(json.dumps({"config": body, "sha256": config.digest()}, indent=2, sort_keys=True))
        return
    table = Table(title=f"run config (sha256 {config.digest()[:16]}...)")
    table.add_column("key")
    table.add_column("value")
    for key, value in body.items():
        table.add_row(key, repr(value))
    console.print(table)
