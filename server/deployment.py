"""A training run on Flower's deployment engine: from the server kit to the final model and records.

``fedscan server run`` = :func:`run_deployment`: start the SuperLink (:mod:`server.superlink`), bring
registrations in line with the kit, wait for enough sites, submit the run with ``flwr run``, follow it
(per-round records as they land, the ServerApp's log streamed to ``serverapp.log``), and stop every
process it started, whatever happens, with every wait bounded.

The run ships a *manifest-only* Flower App Bundle: ``pyproject.toml`` naming the ServerApp and
ClientApp and the run-config defaults, no code, signed with the federation's publisher key
(:mod:`common.app_bundle`). Each end runs the fedscan it has installed, the version its operator
approved; a site runs the bundle only after verifying the signature and that it names exactly its
installed fedscan.

The ServerApp writes the run's records under the run config's ``out-dir`` (``metrics.jsonl``,
checkpoints, ``final_model.npz``); this module adds ``run-config.toml`` (what was asked),
``serverapp.log`` and ``deployment.json`` (run id, final status, sites, isolation, round times).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import __version__
from common.app_bundle import SignedBundle, write_signed_manifest_bundle
from common.config import RunConfig
from common.crypto.signing import load_signing_key
from common.errors import ConfigError, TrainingError
from common.flower_runtime.daemons import Daemon, free_port
from common.flower_runtime.wakeups import HOLD_SECONDS
from common.fsio import write_atomic
from common.privacy.site_sampling import check_fraction_fit
from server.audit_trail import adopt_audit_key
from server.provision import Federation
from server.run_records import RoundRecord, read_round_records
from server.superlink import RegistrationReport, SuperLink

__all__ = [
    "DeploymentOutcome",
    "deployment_run_config",
    "follow_run",
    "run_deployment",
    "report_registrations",
    "run_training",
    "signed_bundle",
    "submit_run",
    "sync_before_opening",
]

Scalar = bool | int | float | str
_CONNECTION = "fedscan"
# While the ServerApp's log streams, the stream's end is the sign that the run finished; the status is
# asked now and then only as a safety net (each ask starts a `flwr` process: ~1 s of CPU here).
_STATUS_EVERY = 60.0


@dataclass(frozen=True)
class DeploymentOutcome:
    """How a deployed run ended and where its records are."""

    run_id: int
    status: str
    out_dir: Path
    rounds: tuple[RoundRecord, ...]
    sites: tuple[str, ...]
    seconds: float

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


def deployment_run_config(
    fed: Federation, overrides: Mapping[str, Scalar], out_dir: Path
) -> dict[str, Scalar]:
    """The run config of a deployed run, validated: ``overrides`` over the defaults, plus ``out-dir``.

    ``min-fit-sites`` defaults to every active site of the kit (the coordinator provisioned them to
    take part); ``site-dirs`` is for simulations and is refused here (each SuperNode names its own).
    """
    if overrides.get("site-dirs"):
        raise ConfigError(
            "site-dirs is for simulations; in a deployment each site's SuperNode names its own."
        )
    if "out-dir" in overrides:
        raise ConfigError("Give the output directory with --out-dir, not as a run-config key.")
    active = len(fed.active_sites())
    values: dict[str, Scalar] = {"min-fit-sites": active, **overrides}
    values["out-dir"] = str(Path(out_dir).resolve())
    config = RunConfig.from_flower({**RunConfig().to_flower(), **values})
    if config.min_fit_sites > active:
        raise ConfigError(
            f"min-fit-sites is {config.min_fit_sites} but federation {fed.name} has {active} active site(s)."
        )
    check_fraction_fit(config.fraction_fit, config.min_fit_sites, max(1, active))
    return values


def signed_bundle(fed: Federation, app_dir: Path) -> SignedBundle:
    """fedscan's app bundle for ``fed``, signed with its publisher key (the bundle sites verify and run)."""
    return write_signed_manifest_bundle(app_dir, load_signing_key(fed.publisher_key), fed.name)


def submit_run(link: SuperLink, run_config: Mapping[str, Scalar], out_dir: Path) -> tuple[int, str]:
    """Start the run on ``link`` with ``flwr run``; returns Flower's run id and the bundle's SHA-256.

    The bundle is fedscan's manifest (no code), signed with the federation's publisher key; Flower builds
    the same bytes from the signed directory, so its hash is the one sites verify and may pin.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides = out_dir / "run-config.toml"
    write_atomic(overrides, "".join(f"{k} = {json.dumps(v)}\n" for k, v in run_config.items()).encode())
    bundle = signed_bundle(link.fed, link.state / "fedscan-app")
    body = link.flwr("run", str(bundle.app_dir), _CONNECTION, "--run-config", str(overrides))
    return int(body["run-id"]), bundle.fab_sha256


def _rounds(out_dir: Path, previous: list[RoundRecord]) -> list[RoundRecord]:
    try:
        return read_round_records(out_dir)
    except ValueError:  # the ServerApp is appending a line right now
        return previous


def _run_status(link: SuperLink, run_id: int) -> dict[str, Any]:
    runs = link.flwr("list", "--run-id", str(run_id), _CONNECTION).get("runs", [])
    if not runs:
        raise TrainingError(f"The SuperLink does not know run {run_id}.")
    return dict(runs[0])


def follow_run(
    link: SuperLink,
    run_id: int,
    out_dir: Path,
    *,
    timeout: float,
    on_round: Callable[[RoundRecord], None] = lambda _: None,
) -> tuple[str, str, list[RoundRecord]]:
    """Follow run ``run_id`` until it finishes; (status, details, round records).

    The ServerApp's log streams into ``out_dir/serverapp.log``. Past ``timeout`` seconds the run is
    stopped (``flwr stop``) and a TrainingError raised: a run never hangs the command.
    """
    stream = Daemon(
        "ServerApp log stream",
        [str(Path(sys.executable).parent / "flwr"), "log", str(run_id), _CONNECTION, "--stream"],
        out_dir / "serverapp.log",
        link.env(),
    ).start()
    deadline = time.monotonic() + timeout
    records: list[RoundRecord] = []
    next_status = time.monotonic() + _STATUS_EVERY
    try:
        while True:
            link.check_alive()
            latest = _rounds(out_dir, records)
            for record in latest[len(records) :]:
                on_round(record)
            records = latest
            now = time.monotonic()
            if not stream.running or now >= next_status:
                status = _run_status(link, run_id)
                if str(status.get("status", "")).startswith("finished"):
                    records = _rounds(out_dir, records)
                    return str(status["status"]), str(status.get("status-details", "")), records
                next_status = now + (2.0 if not stream.running else _STATUS_EVERY)
            if now > deadline:
                link.flwr("stop", str(run_id), _CONNECTION, check=False, timeout=30)
                raise TrainingError(
                    f"Run {run_id} did not finish within {timeout:.0f} s and was stopped "
                    f"({len(records)} round(s) completed; log: {out_dir / 'serverapp.log'})."
                )
            time.sleep(0.5)
    except BaseException:
        # Interrupted (Ctrl-C) or failed while the run may still be going: stop it, best effort.
        with contextlib.suppress(Exception):
            if not str(_run_status(link, run_id).get("status", "")).startswith("finished"):
                link.flwr("stop", str(run_id), _CONNECTION, check=False, timeout=20)
        raise
    finally:
        stream.stop(timeout=5)


def _failure_lines(log: Path, limit: int = 8) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    wanted = [line for line in lines if "ERROR" in line or "Error" in line or "failure" in line]
    return "\n".join(wanted[-limit:])


def run_training(
    link: SuperLink,
    overrides: Mapping[str, Scalar],
    *,
    out_dir: Path | None = None,
    wait_for_sites: float = 600.0,
    timeout: float = 12 * 3600.0,
    on_progress: Callable[[str], None] = lambda _: None,
    on_round: Callable[[RoundRecord], None] = lambda _: None,
) -> DeploymentOutcome:
    """Run one training on a started SuperLink whose registrations are in place.

    Raises
    ------
    ConfigError
        Bad run config (before the run starts).
    TrainingError
        Too few sites connected in time, the run failed or timed out, or a Flower process died; the
        message says which and where the logs are.
    """
    fed = link.fed
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = (Path(out_dir) if out_dir is not None else fed.server_dir / "runs" / stamp).resolve()
    run_config = deployment_run_config(fed, overrides, out_dir)
    adopt_audit_key(fed.audit_key, out_dir)  # the run's audit log is signed with the provisioned key
    needed = int(run_config["min-fit-sites"])
    started = time.monotonic()
    on_progress(f"waiting for {needed} site(s) to connect (up to {wait_for_sites:.0f} s)")
    online = link.wait_for_sites(needed, timeout=wait_for_sites)
    on_progress(f"sites online: {', '.join(online)}")
    run_id, bundle_sha256 = submit_run(link, run_config, out_dir)
    on_progress(f"run {run_id} started (app bundle {bundle_sha256[:16]}...); records in {out_dir}")
    status, details, records = follow_run(link, run_id, out_dir, timeout=timeout, on_round=on_round)
    outcome = DeploymentOutcome(
        run_id=run_id,
        status=status,
        out_dir=out_dir,
        rounds=tuple(records),
        sites=tuple(online),
        seconds=time.monotonic() - started,
    )
    write_atomic(
        out_dir / "deployment.json",
        json.dumps(
            {
                "run_id": run_id,
                "bundle_sha256": bundle_sha256,
                "status": status,
                "details": details,
                "federation": fed.name,
                "superlink": fed.superlink,
                "sites": list(online),
                "isolation": link.isolation,
                "max_wait": link.max_wait,
                "hold": link.hold,
                "seconds": round(outcome.seconds, 2),
                "rounds": [r.round for r in records],
                "round_seconds": [r.round_seconds for r in records],
                "run_config": dict(run_config),
                "fedscan": __version__,
            },
            indent=2,
        ).encode(),
    )
    if not outcome.completed:
        errors = _failure_lines(out_dir / "serverapp.log")
        raise TrainingError(
            f"Run {run_id} ended {status}: {details or 'no details'}."
            + (f"\nLast errors in {out_dir / 'serverapp.log'}:\n{errors}" if errors else "")
        )
    return outcome


def run_deployment(
    fed: Federation,
    overrides: Mapping[str, Scalar],
    *,
    out_dir: Path | None = None,
    listen_host: str = "0.0.0.0",
    port: int | None = None,
    isolation: str = "warm",
    max_wait: float | None = 0.1,
    hold: float | None = HOLD_SECONDS,
    database: Path | None = None,
    wait_for_sites: float = 600.0,
    timeout: float = 12 * 3600.0,
    on_progress: Callable[[str], None] = lambda _: None,
    on_round: Callable[[RoundRecord], None] = lambda _: None,
) -> DeploymentOutcome:
    """``fedscan server run``: start the SuperLink, sync registrations, train, stop everything.

    With a database file and a public interface, registrations change on a SuperLink listening on
    loopback first, so that no site knocks while a revoked key is still registered. With Flower's
    in-memory state (the default) nothing is registered until this SuperLink registers the kit's
    active keys, a few seconds after it starts: a site that knocks earlier is refused and its
    ``fedscan site run`` exits, to be restarted by its service manager (``docs/deployment.md``).
    """
    deployment_run_config(fed, overrides, out_dir or fed.server_dir)  # refuse a bad config first
    sync_before_opening(fed, database, listen_host, on_progress)
    with SuperLink(
        fed,
        listen_host=listen_host,
        port=port,
        isolation=isolation,
        max_wait=max_wait,
        hold=hold,
        database=database,
    ) as link:
        on_progress(
            f"SuperLink listening on {listen_host}:{link.port} (TLS, node authentication, {isolation})"
        )
        report_registrations(link.sync_registrations(), on_progress)
        return run_training(
            link,
            overrides,
            out_dir=out_dir,
            wait_for_sites=wait_for_sites,
            timeout=timeout,
            on_progress=on_progress,
            on_round=on_round,
        )


def sync_before_opening(
    fed: Federation,
    database: Path | None,
    listen_host: str,
    on_progress: Callable[[str], None] = lambda _: None,
) -> None:
    """With a database and a public interface, bring registrations in line on a loopback-only SuperLink
    first, so that no site knocks while a revoked (or never provisioned) key is still registered."""
    if database is None or _is_loopback(listen_host) or not Path(database).exists():
        return
    with SuperLink(
        fed, listen_host="127.0.0.1", port=free_port(), isolation="subprocess", database=database
    ) as setup:
        report_registrations(setup.sync_registrations(), on_progress)


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


def report_registrations(report: RegistrationReport, on_progress: Callable[[str], None]) -> None:
    """One line per change a registration sync made."""
    for site_id in report.registered:
        on_progress(f"registered site {site_id}'s node key")
    for site_id in report.unregistered:
        on_progress(f"unregistered revoked site {site_id}")
    if report.removed:
        on_progress(f"removed {len(report.removed)} registration(s) no active site accounts for")
