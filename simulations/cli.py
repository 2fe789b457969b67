"""``fedscan sim ...`` and ``fedscan demo``: research runs on one machine.

Heavy imports (torch, flwr, pydicom) happen inside the commands, never at import time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["demo_command", "sim_app"]

console = Console()

sim_app = typer.Typer(
    help="Federated simulations on one machine (Flower's simulation engine).\n\n"
    "Example: fedscan sim run --site-dir sites/a --site-dir sites/b --rounds 5",
    no_args_is_help=True,
)


def _round_table(rounds: list, chance: float | None = None) -> Table:  # type: ignore[type-arg]
    table = Table(title="Federated training, per round")
    for column in ("round", "sites", "failures", "train loss", "eval loss", "accuracy"):
        table.add_column(column, justify="right")
    for r in rounds:
        table.add_row(
            str(r.round),
            str(r.sites_fit),
            str(r.failures),
            "-" if r.train_loss is None else f"{r.train_loss:.4f}",
            "-" if r.eval_loss is None else f"{r.eval_loss:.4f}",
            "-" if r.accuracy is None else f"{r.accuracy:.3f}",
        )
    if chance is not None:
        table.caption = f"chance level (majority class of the pooled test splits): {chance:.3f}"
    return table


def demo_command(
    workdir: Path = typer.Option(
        Path("fedscan-demo"), "--workdir", help="Folder for everything the demo writes."
    ),
    rounds: int = typer.Option(3, "--rounds", min=1, max=50, help="Federated rounds."),
    deployment: bool = typer.Option(
        False, "--deployment", help="Run it as a real local federation: coordinator and sites as processes."
    ),
    sites: int = typer.Option(3, "--sites", min=3, max=8, help="Hospitals (with --deployment)."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON instead of tables."),
) -> None:
    """Run the whole pipeline on synthetic data: 3 hospitals, de-identify, encrypt, train together.

    With --deployment the same hospitals enrol in a federation and run as real processes on 127.0.0.1
    (fedscan server start, fedscan site run per site; TLS, node authentication, signed app bundles); a
    run is submitted, the audit trail and model are verified, and everything the demo started is stopped.

    Example: fedscan demo --workdir ./fedscan-demo --rounds 3
    """
    if deployment:
        _deployment_demo(workdir, rounds, sites, json_output)
        return
    from simulations.demo import run_demo

    def stage(message: str) -> None:
        if not json_output:
            console.print(f"[bold cyan]>[/] {message}")

    def round_done(record) -> None:  # type: ignore[no-untyped-def]
        if not json_output:
            console.print(
                f"  round {record.round}: accuracy {record.accuracy:.3f}, eval loss {record.eval_loss:.4f}"
                if record.accuracy is not None
                else f"  round {record.round} finished"
            )

    with console.status("working...", spinner="dots") if not json_output else _null():
        result = run_demo(workdir, rounds=rounds, on_stage=stage, on_round=round_done)
    final = result.rounds[-1]
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "workdir": str(result.workdir),
                    "rounds": [r.__dict__ for r in result.rounds],
                    "final_accuracy": final.accuracy,
                    "chance_accuracy": result.chance_accuracy,
                    "ingest": [json.loads(r.to_json()) for r in result.ingest_reports],
                    "audit": _audit_summary(result.audit),
                },
                indent=2,
            )
        )
        return
    console.print(_round_table(list(result.rounds), result.chance_accuracy))
    ingested = sum(r.records_added for r in result.ingest_reports)
    rejected = sum(len(r.rejected) for r in result.ingest_reports)
    console.print(
        f"Final accuracy {final.accuracy:.3f} vs chance {result.chance_accuracy:.3f} "
        f"on {final.examples_evaluated} held-out slices; {ingested} slices ingested, {rejected} rejected."
    )
    console.print(f"Synthetic PACS exports (fake PHI, plaintext DICOM): {result.cohort_dir}")
    console.print(f"Site directories (keys 0600, sealed stores, reports): {result.workdir / 'sites'}")
    console.print(f"Run records (metrics.jsonl, final_model.npz): {result.run_dir}")
    if result.audit is not None:
        audit = result.audit
        verdict = "all logs verify and reconcile" if audit.ok else "PROBLEMS: see the report"
        console.print(f"Audit logs (signed, hash-chained; {verdict}): sites/*/audit/, {audit.server_log}")
        console.print(f"Model card (signed provenance of the final model): {audit.model_card}")
        console.print(f"Auditor's report (open in a browser): {audit.report}")


def _audit_summary(audit) -> dict | None:  # type: ignore[no-untyped-def]
    """The demo's audit evidence for --json: where it is and whether it checked out."""
    if audit is None:
        return None
    return {
        "site_logs": [str(p) for p in audit.site_logs],
        "server_log": str(audit.server_log),
        "model_card": str(audit.model_card),
        "report": str(audit.report),
        "logs_verified": audit.logs_verified,
        "reconciled": audit.reconciled,
        "card_problems": list(audit.card_problems),
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _metrics_table(rounds: list) -> Table:  # type: ignore[type-arg]
    """Per-round federated metrics on the union of the sites' held-out splits."""
    table = Table(title="Federated training, per round (metrics pooled over the sites' test splits)")
    columns = ("round", "sites", "failures", "train loss", "eval loss", "accuracy", "bal. acc.", "AUC")
    for column in (*columns, "sens.", "spec.", "F1", "seconds"):
        table.add_column(column, justify="right")
    for r in rounds:
        table.add_row(
            str(r.round),
            str(r.sites_fit),
            str(r.failures),
            _fmt(r.train_loss, 4),
            _fmt(r.eval_loss, 4),
            _fmt(r.accuracy),
            _fmt(r.balanced_accuracy),
            _fmt(r.auc),
            _fmt(r.sensitivity),
            _fmt(r.specificity),
            _fmt(r.f1),
            _fmt(r.round_seconds, 1),
        )
    return table


def _per_class_table(record) -> Table:  # type: ignore[no-untyped-def]
    """The final round, per class, plus each site's own accuracy."""
    table = Table(title=f"Round {record.round}, per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="right")
    for name, row in sorted(record.per_class.items()):
        table.add_row(name, _fmt(row["precision"]), _fmt(row["recall"]), _fmt(row["f1"]), str(row["support"]))
    sites = ", ".join(
        f"{site} {_fmt(v['accuracy'])} (n={v['n']})" for site, v in sorted(record.per_site.items())
    )
    table.caption = f"per-site accuracy: {sites}"
    return table


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _parse_assignment(text: str) -> tuple[str, bool | int | float | str]:
    """``KEY=VALUE`` -> (key, value typed as bool, int, float or str)."""
    from common.errors import ConfigError

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}.")
    if raw.lower() in {"true", "false"}:
        return key.strip(), raw.lower() == "true"
    for convert in (int, float):
        try:
            return key.strip(), convert(raw)
        except ValueError:
            continue
    return key.strip(), raw


def _with_overrides(config, assignments: list[str]):  # type: ignore[no-untyped-def]
    """Apply ``--set`` overrides to a RunConfig (validated again, with the key named on error)."""
    from common.config import RunConfig

    if not assignments:
        return config
    return RunConfig.from_flower({**config.to_flower(), **dict(_parse_assignment(a) for a in assignments)})


def _store_image_size(site_dir: Path) -> int:
    """The record size of an ingested site's store (what the model must be built for)."""
    from client.site import SiteDir
    from client.site_init import load_site_key
    from client.store import read_manifest

    site = SiteDir(site_dir)
    return read_manifest(site.store_dir, load_site_key(site)).image_size


def _generated_sites(
    root: Path,
    count: int,
    partition: str,
    slices: int,
    *,
    seed: int,
    secure: bool,
    resume: bool,
    announce: Callable[[str], None] | None,
) -> list[Path]:
    """Synthetic CT sites for `sim run --sites`: made under ``root``, or the same ones on --resume.

    Their policy is the experiments' safe one, except that it asks for secure aggregation exactly when
    the run uses it: a researcher's --no-secagg run on generated sites should run, not be refused.
    """
    import dataclasses

    from common.errors import ConfigError
    from simulations.datasets import experiment_policy, synthetic_ct_sites
    from simulations.partition import parse_partition

    spec = parse_partition(partition)
    if root.exists() and not resume:
        raise ConfigError(
            f"{root} already holds generated sites; pass --resume to continue that run, "
            "or choose another --out-dir."
        )
    if announce is not None and not root.exists():
        announce(f"[bold cyan]>[/] Generating and ingesting {count} synthetic CT sites ({spec}) under {root}")
    with console.status("generating sites...", spinner="dots") if announce is not None else _null():
        made = synthetic_ct_sites(
            root,
            count,
            spec,
            seed=seed,
            slices_per_site=slices,
            reuse=resume,
            policy=dataclasses.replace(experiment_policy(count), require_secure_aggregation=secure),
        )
    return list(made.site_dirs)


def _final_metrics(rounds: list) -> dict:  # type: ignore[type-arg]
    final = rounds[-1] if rounds else None
    if final is None:
        return {}
    keys = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1", "eval_loss")
    return {"round": final.round, **{k: getattr(final, k) for k in keys}, "per_class": final.per_class}


@sim_app.command("run")
def sim_run(
    site_dir: list[Path] = typer.Option(
        [], "--site-dir", help="An ingested site directory (repeat per site)."
    ),
    sites: int = typer.Option(
        0,
        "--sites",
        min=0,
        max=64,
        help="Instead of --site-dir: generate N synthetic CT hospitals (scanner differences, label skew) "
        "under OUT_DIR/cohort, ingest each through `fedscan site ingest`'s pipeline, then federate.",
    ),
    partition: str = typer.Option(
        "dirichlet:1.0", "--partition", help="With --sites: iid or dirichlet:ALPHA (label skew)."
    ),
    slices: int = typer.Option(160, "--slices", min=10, help="With --sites: CT slices per generated site."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Federated rounds."),
    model: str = typer.Option("cnn", "--model", help="cnn, resnet18, svm or rff-svm."),
    strategy: str = typer.Option("fedavg", "--strategy", help="fedavg, fedprox or fedadam."),
    local_epochs: int = typer.Option(1, "--local-epochs", min=1, help="Local epochs per round."),
    local_steps: int = typer.Option(0, "--local-steps", min=0, help="Local steps per round (0: use epochs)."),
    learning_rate: float = typer.Option(0.02, "--learning-rate", help="Local learning rate."),
    secagg: bool = typer.Option(True, "--secagg/--no-secagg", help="Secure aggregation (SecAgg+, default)."),
    assignments: list[str] = typer.Option(
        [], "--set", help="Any other run-config key: KEY=VALUE (repeatable)."
    ),
    out_dir: Path = typer.Option(
        Path("fedscan-run"), "--out-dir", help="Where metrics, checkpoints and the final model go."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue a crashed run in --out-dir from its last checkpoint."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
) -> None:
    """Federate sites on this machine: ingested ones (--site-dir), or N generated ones (--sites).

    Each virtual site opens its own encrypted store with its own key. --sites N first writes a synthetic
    CT cohort (DICOM with fake PHI, seeded by the run's seed) and ingests it (de-identification, pixels,
    sealed store) into N new site directories under OUT_DIR/cohort. With --resume, the same command
    continues after a crash from the last sealed checkpoint in --out-dir, keeping the round numbers
    (and, with --sites, the sites it generated).

    Example: fedscan sim run --site-dir sites/a --site-dir sites/b --site-dir sites/c --rounds 5 --json

    Example: fedscan sim run --sites 4 --rounds 5 --set optimizer=adam --set learning-rate=0.003
    """
    from common.config import RunConfig
    from common.errors import ConfigError
    from server.run_records import read_round_records
    from simulations.runtime import run_federation

    if bool(sites) == bool(site_dir):
        raise ConfigError("Give either --sites N (generated sites) or --site-dir per site, not both.")
    if sites:
        site_dir = _generated_sites(
            out_dir.resolve() / "cohort",
            sites,
            partition,
            slices,
            seed=_with_overrides(RunConfig(), assignments).seed,
            secure=secagg,
            resume=resume,
            announce=None if json_output else console.print,
        )
    config = _with_overrides(
        RunConfig(
            num_server_rounds=rounds,
            model=model,
            strategy=strategy,
            local_epochs=local_epochs,
            local_steps=local_steps,
            learning_rate=learning_rate,
            secure_aggregation=secagg,
            image_size=_store_image_size(site_dir[0]),
            min_fit_sites=len(site_dir),
            site_dirs=tuple(str(p.resolve()) for p in site_dir),
            out_dir=str(out_dir.resolve()),
            resume=resume,
        ),
        assignments,
    )
    with console.status("federated training...", spinner="dots") if not json_output else _null():
        run_federation(config.to_flower(), num_sites=len(site_dir))
    rounds_done = read_round_records(out_dir)
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "final": _final_metrics(rounds_done),
                    "rounds": [r.__dict__ for r in rounds_done],
                    "config_sha256": config.digest(),
                    "config": config.to_flower(),
                },
                indent=2,
            )
        )
    else:
        console.print(_metrics_table(rounds_done))
        if rounds_done and rounds_done[-1].per_class:
            console.print(_per_class_table(rounds_done[-1]))


def _compare_table(summary: dict) -> Table:  # type: ignore[type-arg]
    from simulations.compare import COMPARE_METRICS

    table = Table(
        title=f"pooled vs local vs federated (pooled test set, {summary['test_examples']} examples)"
    )
    table.add_column("arm")
    for metric in COMPARE_METRICS:
        table.add_column(metric.replace("_", " "), justify="right")
    for name, row in summary["rows"].items():
        table.add_row(name, *(f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" for m in COMPARE_METRICS))
    table.caption = (
        "federated / pooled: "
        + ", ".join(f"{m} {v:.4f}" for m, v in summary["federated_over_pooled"].items())
        + "; federated - mean local: "
        + ", ".join(f"{m} {v:+.4f}" for m, v in summary["federated_minus_local_mean"].items())
        + f"; seeds {summary['seeds']}"
    )
    return table


@sim_app.command("compare")
def sim_compare(
    dataset: str = typer.Option(
        "", "--dataset", help="breast-cancer or synthetic-ct (sites are generated); or use --site-dir."
    ),
    site_dir: list[Path] = typer.Option(
        [], "--site-dir", help="An ingested site directory (repeat per site)."
    ),
    sites: int = typer.Option(0, "--sites", min=0, help="Number of sites to generate (default per dataset)."),
    partition: str = typer.Option(
        "", "--partition", help="iid or dirichlet:ALPHA (label skew across sites)."
    ),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds; each runs all three arms."),
    model: str = typer.Option("", "--model", help="cnn, resnet18, svm or rff-svm (default per dataset)."),
    strategy: str = typer.Option("fedavg", "--strategy", help="fedavg, fedprox or fedadam."),
    rounds: int = typer.Option(0, "--rounds", min=0, help="Federated rounds (default per dataset)."),
    local_epochs: int = typer.Option(0, "--local-epochs", min=0, help="Local epochs per round."),
    learning_rate: float = typer.Option(0.0, "--learning-rate", min=0.0, help="Local learning rate."),
    assignments: list[str] = typer.Option(
        [], "--set", help="Any other run-config key: KEY=VALUE (repeatable)."
    ),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Keep generated sites and run records here (default: a temporary folder)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Pooled vs each site alone vs federated, on the same splits and seeds (the FLamby protocol).

    Every arm is scored on the union of the sites' held-out splits; mean and spread over the seeds.

    Example: fedscan sim compare --dataset breast-cancer --sites 5 --partition dirichlet:0.5 --seeds 0,1,2
    """
    import dataclasses
    import tempfile

    from common.config import RunConfig
    from common.errors import ConfigError
    from simulations.compare import DATASETS, make_sites, run_compare
    from simulations.partition import parse_partition

    if bool(dataset) == bool(site_dir):
        raise ConfigError("Give either --dataset (breast-cancer or synthetic-ct) or --site-dir, not both.")
    if dataset and dataset not in DATASETS:
        raise ConfigError(f"Unknown --dataset {dataset!r}; choose breast-cancer or synthetic-ct.")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {seeds!r}.") from None
    if not seed_list:
        raise ConfigError("--seeds needs at least one seed.")
    preset = DATASETS.get(dataset, DATASETS["synthetic-ct"])
    defaults = dict(preset.config)
    if not dataset:
        defaults.pop("feature_scaling", None)
    explicit = {
        "model": model,
        "num_server_rounds": rounds,
        "local_epochs": local_epochs,
        "learning_rate": learning_rate,
    }
    values = {**defaults, **{k: v for k, v in explicit.items() if v}, "strategy": strategy}

    def stage(message: str) -> None:
        if not json_output:
            console.print(f"[bold cyan]>[/] {message}")

    with tempfile.TemporaryDirectory(prefix="fedscan-compare-") as scratch:
        root = (workdir or Path(scratch)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        config = RunConfig(**values)  # type: ignore[arg-type]
        if dataset:
            spec = parse_partition(partition or preset.partition)
            count = sites or preset.sites
            stage(f"Making {count} {dataset} sites ({spec}) under {root}")
            site_set = make_sites(dataset, root / "sites", count, spec, seed=seed_list[0])
            config = dataclasses.replace(
                config, image_size=site_set.image_size, num_features=site_set.num_features
            )
            site_dirs = list(site_set.site_dirs)
        else:
            site_dirs = [p.resolve() for p in site_dir]
            config = dataclasses.replace(config, image_size=_store_image_size(site_dirs[0]))
        config = _with_overrides(config, assignments)
        result = run_compare(site_dirs, config, seed_list, work_dir=root / "runs", on_stage=stage)
        summary = result.summary()
        summary["config"] = config.to_flower()
    if json_output:
        typer.echo(json.dumps(summary, indent=2, default=float))
    else:
        console.print(_compare_table(summary))


def _deployment_demo(workdir: Path, rounds: int, sites: int, json_output: bool) -> None:
    from common.errors import TrainingError
    from simulations.demo_deployment import run_deployment_demo

    def stage(message: str) -> None:
        if not json_output:
            console.print(f"[bold cyan]>[/] {message}")

    def round_done(record) -> None:  # type: ignore[no-untyped-def]
        if not json_output and record.accuracy is not None:
            console.print(
                f"  round {record.round}: accuracy {record.accuracy:.3f}, {record.round_seconds:.1f} s"
            )

    result = run_deployment_demo(workdir, rounds=rounds, sites=sites, on_stage=stage, on_round=round_done)
    body = {
        "workdir": str(result.workdir),
        "federation": str(result.federation_dir),
        "run_dir": str(result.outcome.out_dir),
        "status": result.outcome.status,
        "rounds": [r.__dict__ for r in result.outcome.rounds],
        "logs_verified": result.logs_verified,
        "reconciled": result.reconciled,
        "model": result.model.to_dict(),
        "processes_left": list(result.processes_left),
        "port_closed": result.port_closed,
        "ok": result.ok,
    }
    if json_output:
        typer.echo(json.dumps(body, indent=2))
    else:
        final = result.outcome.rounds[-1] if result.outcome.rounds else None
        accuracy = f"{final.accuracy:.3f}" if final is not None and final.accuracy is not None else "-"
        console.print(
            f"Run {result.outcome.status}: final accuracy {accuracy}; audit logs verified: "
            f"{result.logs_verified}, reconciled: {result.reconciled}, model verified: {result.model.ok}; "
            f"processes left: {len(result.processes_left)}, port closed: {result.port_closed}",
            highlight=False,
        )
        console.print(
            f"Federation (kits, manifest, coordinator state): {result.federation_dir}", highlight=False
        )
        console.print(f"Run records, model card and final model: {result.outcome.out_dir}", highlight=False)
    if not result.ok:
        raise TrainingError("The deployment demo finished with problems (see above).")
