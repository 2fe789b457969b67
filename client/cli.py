"""``fedscan site ...``: what a hospital's operator runs.

Thin layer: parse, call the library, print. Heavy imports (pydicom, torch) stay inside commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.deferred_imports import PYDICOM_UNUSED_IMPORTS, defer_imports

__all__ = ["site_app"]

console = Console()

site_app = typer.Typer(
    help="Run a site: keys and policy, de-identification, ingest into the encrypted store.\n\n"
    "Example: fedscan site init --site-dir /srv/fedscan/site-a --site-id site-a",
    no_args_is_help=True,
)

SITE_DIR_OPTION = typer.Option(..., "--site-dir", help="The site directory (keys, site.toml, store).")


@site_app.command("init")
def site_init(
    site_dir: Path = SITE_DIR_OPTION,
    site_id: str = typer.Option(..., "--site-id", help="This site's name in the federation."),
    key_source: str = typer.Option(
        "file",
        "--key-source",
        help="Where the site key lives: file (keys/site.key, 0600), env (FEDSCAN_SITE_KEY, set already), "
        "passphrase (scrypt over FEDSCAN_SITE_PASSPHRASE), or keyring (the OS keyring).",
    ),
) -> None:
    """Create a site: a site key and a de-identification secret (0600) and a site.toml.

    Example: fedscan site init --site-dir /srv/fedscan/site-a --site-id site-a
    """
    from client.site_init import init_site

    site = init_site(site_dir, site_id, key_source=key_source)
    console.print(f"Site [bold]{site_id}[/] created at {site.root}")
    key_home = {
        "file": str(site.site_key_file),
        "env": "FEDSCAN_SITE_KEY (your secret store)",
        "passphrase": f"FEDSCAN_SITE_PASSPHRASE + {site.salt_file}",
        "keyring": f"OS keyring entry fedscan/{site_id}",
    }[key_source]
    console.print(f"  site key: {key_home}; de-identification secret (0600): {site.deid_secret_file}")
    console.print("  back both up offline: without them the sealed data cannot be read")
    console.print(f"  settings: {site.config_file}")


@site_app.command("enrol")
def site_enrol(
    site_dir: Path = SITE_DIR_OPTION,
    out: Path = typer.Option(..., "--out", help="Where to write the enrolment request (public JSON)."),
    new_node_key: bool = typer.Option(
        False, "--new-node-key", help="Destroy the node key and make a new one first (after a revocation)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Write this site's public enrolment request: its node and audit public keys, proven by both keys.

    Send the request to the coordinator (any channel: it holds no secret, and altering it breaks its
    signatures); they run `fedscan server provision ... --request REQUEST` and send back this site's kit.
    No private key leaves the site.

    Example: fedscan site enrol --site-dir /srv/fedscan/site-a --out site-a-request.json
    """
    from client.site import SiteDir
    from client.site_enrolment import enrol_site

    result = enrol_site(SiteDir(site_dir), out, new_node_key=new_node_key)
    body = {
        "request": str(result.request),
        "site_id": result.site_id,
        "node_key_fingerprint": result.node_fingerprint,
        "audit_key_id": result.audit_key_id,
        "new_node_key": result.new_node_key,
    }
    if json_output:
        typer.echo(json.dumps(body, indent=2))
        return
    console.print(f"Enrolment request for site [bold]{result.site_id}[/] written to {result.request}")
    console.print(f"  node key {result.node_fingerprint}; audit key {result.audit_key_id}")
    console.print("  send it to the coordinator; tell them these two ids over another channel to check")


@site_app.command("deidentify")
def site_deidentify(
    in_dir: Path = typer.Argument(..., help="Folder of DICOM files (searched recursively)."),
    out_dir: Path = typer.Argument(..., help="Output folder: STUDY/SERIES/SOP.dcm, with the new UIDs."),
    site_dir: Path | None = typer.Option(
        None, "--site-dir", help="Site whose secret keys the pseudonyms (else FEDSCAN_DEID_SECRET, hex)."
    ),
    profile: str = typer.Option(
        "fedscan",
        "--profile",
        help="fedscan (basic + modified dates + patient characteristics + structured content) or basic.",
    ),
    option: list[str] = typer.Option(
        [], "--option", help="Extra PS3.15 option, e.g. clean-descriptors, burned-in=reject|ocr-mask|mask."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero if any file was rejected."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Worker processes (default: all cores)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Write de-identified copies of DICOM files (DICOM PS3.15 Annex E basic profile + options).

    Every rejected file is listed with its reason; the report holds counts, never PHI values.

    Example: fedscan site deidentify /exports/2026-11 /deid/2026-11 --site-dir /srv/fedscan/site-a
    """
    defer_imports(*PYDICOM_UNUSED_IMPORTS)
    from client.deid.command import deidentify_command

    code = deidentify_command(in_dir, out_dir, site_dir, profile, list(option), strict, workers, json_output)
    if code:
        raise typer.Exit(code)


@site_app.command("ingest")
def site_ingest(
    site_dir: Path = SITE_DIR_OPTION,
    input_dir: Path = typer.Option(..., "--input", help="A PACS export: a folder of DICOM files, any depth."),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        help="CSV: label + one of path/sop_instance_uid/series_instance_uid/study_instance_uid.",
    ),
    keep_unlabelled: bool = typer.Option(
        False, "--keep-unlabelled", help="Store files without a label (label -1)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Worker processes (default: all cores)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """De-identify, preprocess and seal a DICOM folder into the site's encrypted store.

    Every file that does not become a record is listed with its reason. A re-run on the same folder
    adds only what is not stored yet; an interrupted run keeps what it had committed (docs/ingest.md).

    Example: fedscan site ingest --site-dir /srv/fedscan/site-a --input /exports/2026-11 --labels labels.csv
    """
    from rich.progress import TaskProgressColumn, TimeRemainingColumn

    defer_imports(*PYDICOM_UNUSED_IMPORTS)
    from client.ingest import ingest_folder
    from client.ingest_tables import ingest_table, problem_lines
    from client.site import SiteDir

    try:
        with Progress(
            TextColumn("ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=json_output,
            transient=True,
        ) as progress:
            task = progress.add_task("ingest", total=None)
            report = ingest_folder(
                SiteDir(site_dir),
                input_dir,
                labels,
                keep_unlabelled=keep_unlabelled,
                workers=workers,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except KeyboardInterrupt:
        Console(stderr=True).print(
            "[bold red]interrupted[/]: the records received so far are committed; "
            "run the same command again to add the rest."
        )
        raise typer.Exit(130) from None
    if json_output:
        typer.echo(report.to_json())
        return
    console.print(ingest_table(report))
    for line in problem_lines(report):
        console.print(f"  {line}", markup=False, highlight=False)


@site_app.command("inspect")
def site_inspect(
    site_dir: Path = SITE_DIR_OPTION,
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Open every sealed object (authenticating it); exit non-zero at the first bad one.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show what the encrypted store holds, what the last ingest did, and the privacy budget spent.

    Records per split, label, modality, manufacturer, transfer syntax and original size, then the last
    ingest's counts with every rejected file and its reason, then the site's privacy record: its
    budget, the epsilon each run spent (from the sealed ledger) and the rounds it refused, with codes.
    Decrypts in memory only. With --verify, every sealed object of the site (shards, manifest, reports,
    ledger, checkpoints) is opened and authenticated first; the first that fails is named and the
    command exits non-zero.

    Example: fedscan site inspect --site-dir /srv/fedscan/site-a --verify --json
    """
    from client.ingest_report import StoreSummary, latest_sealed_report
    from client.ingest_tables import ingest_table, problem_lines, store_table
    from client.privacy_summary import privacy_summary, privacy_table
    from client.site import SiteDir
    from client.site_config import SiteConfig
    from client.site_init import load_site_key
    from client.store import read_manifest

    site = SiteDir(site_dir)
    key = load_site_key(site)
    verified: int | None = None
    if verify:
        from client.site_keys import verify_sealed_objects

        verified = verify_sealed_objects(site)  # StoreError at the first object that does not open
    summary = StoreSummary.of(read_manifest(site.store_dir, key))
    last = latest_sealed_report(site, key)
    privacy = privacy_summary(site, key, SiteConfig.load(site.config_file).policy)
    if json_output:
        body = summary.to_dict()
        body["last_ingest"] = None if last is None else last.to_dict()
        body["privacy"] = privacy
        if verified is not None:
            body["verified_objects"] = verified
        typer.echo(json.dumps(body, indent=2))
        return
    if verified is not None:
        console.print(f"verified: all {verified} sealed objects open under the site key")
    console.print(store_table(summary, title=f"store of {site.root}"))
    if last is not None:
        console.print(ingest_table(last, title=f"last ingest ({last.started})"))
        for line in problem_lines(last):
            console.print(f"  {line}", markup=False, highlight=False)
    console.print(privacy_table(privacy, title="privacy budget and refusals"))


keys_app = typer.Typer(
    help="Manage the site key: rotate it, or shred it (crypto-shredding).\n\n"
    "Example: fedscan site keys rotate --site-dir /srv/fedscan/site-a",
    no_args_is_help=True,
)
site_app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def keys_rotate(
    site_dir: Path = SITE_DIR_OPTION,
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Introduce a new site key and re-wrap every sealed object under it (payloads untouched).

    Resumable: if interrupted, run it again. The old key is deleted once every object opens under the
    new one.

    Example: fedscan site keys rotate --site-dir /srv/fedscan/site-a
    """
    from client.site import SiteDir
    from client.site_keys import rotate_site_key

    report = rotate_site_key(SiteDir(site_dir))
    if json_output:
        typer.echo(json.dumps(report.__dict__))
        return
    console.print(
        f"Rotated key {report.old_key_id} -> {report.new_key_id}: {report.objects} sealed objects "
        f"re-wrapped in {report.seconds:.2f} s. Back up the new keys/site.key."
    )


@keys_app.command("shred")
def keys_shred(
    site_dir: Path = SITE_DIR_OPTION,
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Destroy the site key and de-identification secret: all sealed data becomes unrecoverable.

    For data-erasure requests. Copies of the keys in backups are not reached: shred those too.

    Example: fedscan site keys shred --site-dir /srv/fedscan/site-a --yes
    """
    from client.site import SiteDir
    from client.site_keys import shred_site_keys

    site = SiteDir(site_dir)
    if not yes:
        typer.confirm(
            f"Shred the keys of {site.root}? Every sealed object there becomes unrecoverable.", abort=True
        )
    from client.site_config import SiteConfig

    source = SiteConfig.load(site.config_file).key_source
    removed = shred_site_keys(site)
    console.print(f"Shredded {len(removed)} secret(s) of {site.root}: {', '.join(removed)}.")
    if source == "env":
        console.print(
            "[bold yellow]The site key comes from an environment variable: delete it in the secret "
            "store that injects it, or the sealed data stays readable.[/]"
        )
    else:
        console.print("Its sealed data is now unrecoverable.")


@site_app.command("run")
def site_run(
    site_dir: Path = SITE_DIR_OPTION,
    kit: Path = typer.Option(
        ...,
        "--kit",
        help="This site's kit from the coordinator (kit.toml, ca.pem, publisher.pub, federation.json).",
    ),
    superlink: str | None = typer.Option(
        None, "--superlink", help="HOST:PORT to connect to instead of the kit's (e.g. through a proxy)."
    ),
    isolation: str = typer.Option(
        "warm", "--isolation", help="warm (default, fastest), process or subprocess (Flower's default)."
    ),
    max_wait: float = typer.Option(
        0.2, "--max-wait", help="Cap on Flower's idle waits, seconds (0 = Flower's own 3 s polls)."
    ),
    hold: float = typer.Option(
        1.0, "--hold", help="Hold empty poll answers up to this long and answer on news, seconds (0 = off)."
    ),
    give_up_after: float | None = typer.Option(
        None,
        "--give-up-after",
        help="Exit if the SuperNode keeps failing this long, seconds (default: never).",
    ),
) -> None:
    """Check the site (keys 0600, enrolment, policy, store), then keep its SuperNode connected until Ctrl-C.

    A supervisor: the SuperNode is restarted (re-checked, with back-off up to 60 s) when it exits, e.g.
    after the coordinator restarted; the command stops, non-zero with one line, only for what a restart
    cannot fix (the site revoked, the coordinator's certificate no longer from the kit's CA, a bad kit
    or policy). One per site directory; its processes die with it.

    Connects out to the SuperLink over TLS (verified with the kit's CA) with the site's own node key;
    opens no inbound port. Runs only app bundles signed by a publisher this site trusts (on the first
    run, the kit's publisher key is adopted and recorded). Only model parameters and aggregate metrics
    leave the site.

    Example: fedscan site run --site-dir /srv/fedscan/site-a --kit /srv/fedscan/kit
    """
    from client.site import SiteDir
    from client.site_supervisor import supervise_site
    from client.supernode import SiteKit
    from common.flower_runtime.daemons import sigterm_as_interrupt

    with sigterm_as_interrupt():
        supervise_site(
            SiteDir(site_dir),
            SiteKit.load(kit),
            superlink=superlink,
            isolation=isolation,
            max_wait=max_wait or None,
            hold=hold or None,
            max_downtime=give_up_after,
            on_progress=lambda line: console.print(line, highlight=False, markup=False),
        )
