"""``fedscan server ...``: what the federation's coordinator runs."""

from __future__ import annotations

import json
from pathlib import Path

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
    sites: int | None = typer.Option(
        None,
        "--sites",
        min=1,
        help="Sites in the federation, to check fraction-fit against min-fit-sites "
        "(default: the larger of min-fit-sites and the site-dirs given).",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Validate and show the run configuration the ServerApp and ClientApps will use.

    Refuses a fraction-fit that min-fit-sites overrides (Flower samples max(int(n x fraction-fit),
    min-fit-sites) of n sites), since an epsilon accounted at that fraction would be wrong.

    Example: fedscan server config --set model=svm --set num-server-rounds=10 --sites 5
    """
    from common.config import RunConfig
    from common.privacy.site_sampling import check_fraction_fit

    overrides = dict(_parse_assignment(a) for a in assignments)
    config = RunConfig.from_flower({**RunConfig().to_flower(), **overrides})
    check_fraction_fit(
        config.fraction_fit, config.min_fit_sites, sites or max(config.min_fit_sites, len(config.site_dirs))
    )
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


# ---- deployment: provisioning and the training run ----------------------------------------------

provision_app = typer.Typer(
    help="Provision a federation: a CA, the SuperLink's TLS certificate, a node key and a kit per site.\n\n"
    "Example: fedscan server provision --federation lung-ct --sites a,b,c "
    "--superlink-address hub.example.org:9092 --out ./federation",
    invoke_without_command=True,
)
server_app.add_typer(provision_app, name="provision")

FED_DIR_OPTION = typer.Option(..., "--out", help="The federation directory `provision` wrote.")


def _split_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _print_federation(fed, json_output: bool) -> None:  # type: ignore[no-untyped-def]
    from common.crypto.pki import certificate_info

    cert = certificate_info(fed.server_certificate.read_bytes())
    body = {
        "federation": fed.name,
        "superlink": fed.superlink,
        "directory": str(fed.root),
        "server_kit": str(fed.server_dir),
        "certificate_names": list(fed.names),
        "certificate_expires": cert.not_after.isoformat(),
        "manifest_serial": fed.serial,
        "sites": [
            {
                "site": s.site_id,
                "status": s.status,
                "fingerprint": s.fingerprint,
                "kit": str(fed.site_kit(s.site_id)) if s.status != "revoked" else None,
            }
            for s in sorted(fed.sites, key=lambda s: s.site_id)
        ],
    }
    if json_output:
        typer.echo(json.dumps(body, indent=2))
        return
    console.print(
        f"Federation [bold]{fed.name}[/] in {fed.root}: SuperLink {fed.superlink} "
        f"(certificate for {', '.join(fed.names)}, expires {cert.not_after:%Y-%m-%d})"
    )
    table = Table()
    for column in ("site", "status", "node key fingerprint", "kit to send"):
        table.add_column(column)
    for site in body["sites"]:
        table.add_row(site["site"], site["status"], site["fingerprint"], site["kit"] or "-")
    console.print(table)
    console.print(f"Server kit: {fed.server_dir}. Move {fed.ca_key} offline (needed only for renew-cert).")


@provision_app.callback()
def server_provision(
    ctx: typer.Context,
    federation: str | None = typer.Option(None, "--federation", help="The federation's name."),
    sites: str | None = typer.Option(None, "--sites", help="Site ids, comma-separated: a,b,c."),
    superlink_address: str | None = typer.Option(
        None, "--superlink-address", help="HOST:PORT the sites connect to (goes into the certificate)."
    ),
    out: Path | None = typer.Option(None, "--out", help="New directory for the federation's files."),
    request: list[Path] = typer.Option(
        [], "--request", help="A site's enrolment request (`fedscan site enrol`); repeatable."
    ),
    extra_names: str = typer.Option(
        "", "--extra-names", help="Other names/IPs of the SuperLink for its certificate, comma-separated."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a federation from the sites' enrolment requests: CA, SuperLink certificate, publisher
    key, signed federation manifest, and a kit per site (no site private key is made or held here).

    A site in --sites without a --request is pending until `provision add-site --request` enrols it.

    Example: fedscan server provision --federation lung-ct --sites a,b,c \\
    --superlink-address hub.example.org:9092 --out ./federation --request a.json --request b.json \\
    --request c.json
    """
    if ctx.invoked_subcommand is not None:
        return
    from common.enrolment import read_request
    from common.errors import ConfigError
    from server.provision import provision

    missing = [
        flag
        for flag, value in (
            ("--federation", federation),
            ("--superlink-address", superlink_address),
            ("--out", out),
        )
        if not value
    ]
    if not sites and not request:
        missing.append("--sites or --request")
    if missing:
        raise ConfigError(f"fedscan server provision needs {', '.join(missing)}.")
    assert federation and superlink_address and out  # for the type checker
    fed = provision(
        out,
        federation,
        _split_names(sites or ""),
        superlink_address,
        requests=[read_request(path) for path in request],
        extra_names=_split_names(extra_names),
    )
    _print_federation(fed, json_output)


@provision_app.command("add-site")
def provision_add_site(
    out: Path = FED_DIR_OPTION,
    request: Path = typer.Option(
        ...,
        "--request",
        help="The site's enrolment request (`fedscan site enrol`): a new, pending or re-keyed site.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Enrol a site from its request: its keys go into the signed manifest and every kit is refreshed.

    A running SuperLink of this kit registers the key at once; otherwise the next `server run` does.

    Example: fedscan server provision add-site --out ./federation --request d-request.json
    """
    from common.enrolment import read_request
    from server.provision import add_site
    from server.superlink import sync_running

    enrolment = read_request(request)
    site = enrolment.site_id
    fed = add_site(out, enrolment)
    applied = sync_running(fed)
    _print_federation(fed, json_output)
    if not json_output:
        console.print(
            f"Site {site} registered with the running SuperLink."
            if applied is not None
            else f"Site {site}'s key will be registered by the next `fedscan server run`."
        )


@provision_app.command("revoke-site")
def provision_revoke_site(
    out: Path = FED_DIR_OPTION,
    site: str = typer.Option(..., "--site", help="The site to remove."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Revoke a site: its node key is unregistered from the SuperLink and can no longer connect.

    Unregistered at once if this kit's SuperLink runs, else by the next `server run`.

    Example: fedscan server provision revoke-site --out ./federation --site b
    """
    from server.provision import revoke_site
    from server.superlink import sync_running

    fed = revoke_site(out, site)
    applied = sync_running(fed)
    _print_federation(fed, json_output)
    if not json_output:
        console.print(
            f"Site {site} unregistered from the running SuperLink."
            if applied is not None
            else f"Site {site} will be unregistered by the next `fedscan server run`, before sites connect."
        )


@provision_app.command("renew-cert")
def provision_renew_cert(
    out: Path = FED_DIR_OPTION,
    extra_names: str = typer.Option("", "--extra-names", help="Names/IPs to add, comma-separated."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Issue a new SuperLink TLS certificate from the CA (needs ca/ca.key); sites need nothing new.

    Example: fedscan server provision renew-cert --out ./federation --extra-names hub2.example.org
    """
    from server.provision import renew_server_certificate

    _print_federation(renew_server_certificate(out, extra_names=_split_names(extra_names)), json_output)


@provision_app.command("show")
def provision_show(
    out: Path = FED_DIR_OPTION,
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a federation: SuperLink address and certificate, sites and their status.

    Example: fedscan server provision show --out ./federation --json
    """
    from server.provision import load_federation

    _print_federation(load_federation(out), json_output)


def _print_round(record) -> None:  # type: ignore[no-untyped-def]
    accuracy = "-" if record.accuracy is None else f"{record.accuracy:.3f}"
    loss = "-" if record.train_loss is None else f"{record.train_loss:.4f}"
    console.print(
        f"round {record.round}: {record.sites_fit} site(s) trained, {record.failures} failure(s), "
        f"train loss {loss}, accuracy {accuracy}, {record.round_seconds or 0:.1f} s",
        highlight=False,
    )


def _print_outcome(outcome, json_output: bool) -> None:  # type: ignore[no-untyped-def]
    if json_output:
        body = {
            "run_id": outcome.run_id,
            "status": outcome.status,
            "out_dir": str(outcome.out_dir),
            "sites": list(outcome.sites),
            "rounds": len(outcome.rounds),
            "seconds": round(outcome.seconds, 2),
        }
        typer.echo(json.dumps(body, indent=2))
        return
    console.print(
        f"Run {outcome.run_id} {outcome.status} in {outcome.seconds:.0f} s; final model and records in "
        f"{outcome.out_dir}",
        highlight=False,
    )


@server_app.command("start")
def server_start(
    kit: Path = typer.Option(..., "--kit", help="The server kit (FED/server) or the federation directory."),
    listen: str = typer.Option(
        "0.0.0.0", "--listen", help="Interface the SuperLink listens on (0.0.0.0: every interface)."
    ),
    port: int | None = typer.Option(None, "--port", help="Port (default: the kit's SuperLink address)."),
    isolation: str = typer.Option("warm", "--isolation", help="warm (default), process or subprocess."),
    in_memory: bool = typer.Option(
        False, "--in-memory", help="Keep Flower's state in memory (faster; run history lost on restart)."
    ),
) -> None:
    """Run the federation's coordinator until stopped: SuperLink, registrations kept equal to the kit.

    State (registrations, run history) lives in KIT/state/superlink.db, so a restart keeps it; sites
    reconnect by themselves. Submit runs with `fedscan server submit`; see them with `server status`.
    Stop with Ctrl-C or SIGTERM (a service manager's stop).

    Example: fedscan server start --kit ./federation/server
    """
    from common.flower_runtime.daemons import sigterm_as_interrupt
    from server.coordinator import serve
    from server.provision import load_federation

    fed = load_federation(kit)
    with sigterm_as_interrupt():
        try:
            serve(
                fed,
                listen_host=listen,
                port=port,
                isolation=isolation,
                in_memory=in_memory,
                on_progress=lambda line: console.print(line, highlight=False, markup=False),
            )
        except KeyboardInterrupt:
            console.print("coordinator stopped", highlight=False)


@server_app.command("submit")
def server_submit(
    kit: Path = typer.Option(..., "--kit", help="The server kit (FED/server) or the federation directory."),
    assignments: list[str] = typer.Option(
        [], "--set", help="Override a run-config key: KEY=VALUE (repeatable)."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Where the run's records go (default: KIT/runs/<UTC time>)."
    ),
    wait_for_sites: float = typer.Option(600.0, "--wait-for-sites", help="Seconds to wait for the sites."),
    timeout: float = typer.Option(43200.0, "--timeout", help="Seconds after which the run is stopped."),
    json_output: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Start a run on the running coordinator (over its loopback), follow it, exit with its result.

    Example: fedscan server submit --kit ./federation/server --set num-server-rounds=10
    """
    from common.flower_runtime.daemons import sigterm_as_interrupt
    from server.coordinator import submit
    from server.provision import load_federation

    overrides = dict(_parse_assignment(a) for a in assignments)
    with sigterm_as_interrupt():
        outcome = submit(
            load_federation(kit),
            overrides,
            out_dir=out_dir,
            wait_for_sites=wait_for_sites,
            timeout=timeout,
            on_progress=(lambda _: None)
            if json_output
            else (lambda line: console.print(line, highlight=False)),
            on_round=(lambda _: None) if json_output else _print_round,
        )
    _print_outcome(outcome, json_output)


@server_app.command("status")
def server_status(
    kit: Path = typer.Option(..., "--kit", help="The server kit (FED/server) or the federation directory."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the coordinator: running or not, sites connected, runs and their state, quorum and timeouts.

    Example: fedscan server status --kit ./federation/server --json
    """
    from server.coordinator import coordinator_status
    from server.provision import load_federation

    status = coordinator_status(load_federation(kit))
    body = status.to_dict()
    if json_output:
        typer.echo(json.dumps(body, indent=2))
        return
    state = f"running (pid {status.pid}, port {status.port})" if status.running else "not running"
    console.print(f"Coordinator of federation {status.federation}: {state}", highlight=False)
    online = ", ".join(status.sites_online) or "none"
    offline = ", ".join(body["sites_offline"]) or "none"
    console.print(
        f"sites: {len(status.sites_online)} of {len(status.sites_active)} active connected "
        f"(online: {online}; offline: {offline})",
        highlight=False,
    )
    defaults = status.defaults
    console.print(
        f"quorum: min-fit-sites {defaults['min-fit-sites']}; secure aggregation "
        f"{defaults['secure-aggregation']}; a round waits up to {defaults['secagg-timeout']:.0f} s "
        "for the sites at each stage",
        highlight=False,
    )
    table = Table(title="runs")
    for column in ("run", "status", "details"):
        table.add_column(column)
    for run in status.runs:
        table.add_row(str(run.get("run-id")), str(run.get("status")), str(run.get("status-details", "")))
    console.print(table)


@server_app.command("run")
def server_run(
    kit: Path = typer.Option(..., "--kit", help="The server kit (FED/server) or the federation directory."),
    assignments: list[str] = typer.Option(
        [], "--set", help="Override a run-config key: KEY=VALUE (repeatable)."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Where the run's records go (default: KIT/runs/<UTC time>)."
    ),
    listen: str = typer.Option("0.0.0.0", "--listen", help="Interface the SuperLink listens on."),
    port: int | None = typer.Option(None, "--port", help="Port (default: the kit's SuperLink address)."),
    isolation: str = typer.Option(
        "warm", "--isolation", help="warm (default, fastest), process or subprocess (Flower's default)."
    ),
    max_wait: float = typer.Option(
        0.1, "--max-wait", help="Cap on Flower's idle waits, seconds (0 = Flower's own 3 s polls)."
    ),
    hold: float = typer.Option(
        1.0, "--hold", help="Hold empty poll answers up to this long and answer on news, seconds (0 = off)."
    ),
    database: Path | None = typer.Option(
        None, "--database", help="SQLite file for the SuperLink's state (default: in memory, faster)."
    ),
    wait_for_sites: float = typer.Option(600.0, "--wait-for-sites", help="Seconds to wait for the sites."),
    timeout: float = typer.Option(43200.0, "--timeout", help="Seconds after which the run is stopped."),
    json_output: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Start the SuperLink (TLS, node authentication), register the sites' keys and run the training.

    Streams one line per round; the records (metrics.jsonl, checkpoints, final_model.npz,
    serverapp.log, deployment.json) go to --out-dir. Ctrl-C stops the run and every process.

    Example: fedscan server run --kit ./federation/server --set num-server-rounds=5
    """
    from server.deployment import run_deployment
    from server.provision import load_federation

    overrides = dict(_parse_assignment(a) for a in assignments)
    fed = load_federation(kit)

    from common.flower_runtime.daemons import sigterm_as_interrupt

    with sigterm_as_interrupt():
        outcome = run_deployment(
            fed,
            overrides,
            out_dir=out_dir,
            listen_host=listen,
            port=port,
            isolation=isolation,
            max_wait=max_wait or None,
            hold=hold or None,
            database=database,
            wait_for_sites=wait_for_sites,
            timeout=timeout,
            on_progress=(lambda _: None) if json_output else (lambda line: console.print(line)),
            on_round=(lambda _: None) if json_output else _print_round,
        )
    _print_outcome(outcome, json_output)
