"""``fedscan audit ...``: what an auditor runs, offline, trusting nobody's word.

A thin layer over :mod:`common.audit`: the library raises :class:`common.errors.AuditError`, the CLI root
turns it into one line and exit code 9. Library imports happen inside the commands so that
``fedscan --help`` stays fast (the report pulls in matplotlib and jinja2).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from common.audit import Head, VerifiedLog
    from common.crypto import SiteKey, VerifyKey
    from common.federation_manifest import FederationManifest

__all__ = ["audit_app"]

console = Console()

audit_app = typer.Typer(
    help="Check what happened in a run, offline.\n\nExample: fedscan audit verify site-a/audit/audit.jsonl",
    no_args_is_help=True,
)

_PUBKEY_HELP = (
    "ACTOR=KEY: the audit key of one actor (a site id, or 'server'): PEM or OpenSSH file, or raw base64; "
    "repeatable. Each log must be signed by its own actor's key. A bare KEY pins the one log given."
)
_KIT_HELP = (
    "A federation kit (server kit, site kit or federation directory): each log is checked against its "
    "actor's audit key in the signed federation manifest, and a site log against its enrolled genesis."
)
_UNPINNED_HELP = "Accept a log no key vouches for (checked against its own genesis key only)."
_SEAL_KEY_HELP = "Site key file that opens sealed (rotated) segments."


@dataclass(frozen=True)
class _Trust:
    """Which key vouches for which log: per actor (manifest, ACTOR=KEY) or one bare key for one log."""

    actor_keys: dict[str, VerifyKey] | None
    genesis: dict[str, str]
    bare: list[VerifyKey]
    require_pinned: bool
    seal: SiteKey | None

    def options(self) -> dict[str, Any]:
        return {
            "pubkeys": self.bare,
            "actor_keys": self.actor_keys,
            "genesis": self.genesis,
            "require_pinned": self.require_pinned,
            "seal_key": self.seal,
        }


def _manifest_of_kit(kit: Path) -> FederationManifest:
    from common.crypto import load_verify_key
    from common.errors import InputError
    from common.federation_manifest import MANIFEST_FILE, read_manifest

    for folder in (kit, kit / "server"):
        if (folder / MANIFEST_FILE).exists() and (folder / "publisher.pub").exists():
            return read_manifest(folder / MANIFEST_FILE, trusted=(load_verify_key(folder / "publisher.pub"),))
    raise InputError(f"{kit} holds no federation manifest (federation.json and publisher.pub).")


def _trust(
    kit: Path | None, pubkeys: list[str], seal_key: Path | None, logs: list[Path], allow_unpinned: bool
) -> _Trust:
    from common.crypto import load_key_file, load_verify_key
    from common.errors import ConfigError

    actor_keys: dict[str, VerifyKey] | None = None
    genesis: dict[str, str] = {}
    if kit is not None:
        manifest = _manifest_of_kit(kit)
        actor_keys, genesis = manifest.audit_keys(), manifest.enrolled_log_genesis()
    bare: list[VerifyKey] = []
    for text in pubkeys:
        actor, sep, source = text.partition("=")
        if sep and actor and "/" not in actor and not Path(text).exists():
            actor_keys = {**(actor_keys or {}), actor.strip().lower(): load_verify_key(source)}
        else:
            bare.append(load_verify_key(text))
    if bare and (len(bare) > 1 or len(logs) > 1):
        raise ConfigError(
            "A bare --pubkey KEY can only pin the one log given: with several logs or keys, say whose key "
            "each is (--pubkey site-a=site-a.pub --pubkey server=server.pub) or pass the federation's --kit."
        )
    seal = load_key_file(seal_key) if seal_key else None
    return _Trust(actor_keys, genesis, bare, not allow_unpinned, seal)


def _parse_heads(heads: list[str]) -> dict[str, Head]:
    from common.audit import Head
    from common.errors import ConfigError

    parsed: dict[str, Head] = {}
    for text in heads:
        actor, _, rest = text.partition(":")
        seq, _, digest = rest.partition(":")
        if not actor or not seq.isdigit() or len(digest) != 64:
            raise ConfigError(f"--head expects ACTOR:SEQ:SHA256 (as printed by verify), got {text!r}.")
        parsed[actor] = Head(int(seq), digest.lower())
    return parsed


def _read_logs(paths: list[Path], trust: _Trust, every_signature: bool = False) -> list[VerifiedLog]:
    from common.audit import read_verified_log

    return [read_verified_log(p, **trust.options(), every_signature=every_signature) for p in paths]


@audit_app.command("verify")
def audit_verify(
    logs: list[Path] = typer.Argument(
        ..., help="Audit logs (live files; rotated segments are found beside them)."
    ),
    kit: Path | None = typer.Option(None, "--kit", help=_KIT_HELP),
    pubkey: list[str] = typer.Option([], "--pubkey", help=_PUBKEY_HELP),
    allow_unpinned: bool = typer.Option(False, "--allow-unpinned", help=_UNPINNED_HELP),
    seal_key: Path | None = typer.Option(None, "--seal-key", help=_SEAL_KEY_HELP),
    head: list[str] = typer.Option(
        [], "--head", help="A head recorded earlier, ACTOR:SEQ:SHA256 (detects entries cut from the end)."
    ),
    every_signature: bool = typer.Option(
        False, "--every-signature", help="Verify each entry's signature, not only the chain's anchor."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check each log's hash chain and signatures against its own actor's key; name the first bad entry.

    Each log must be signed by the audit key of the actor it claims to be: from the federation's
    signed manifest (--kit) or --pubkey ACTOR=KEY. A site log must also start from the genesis its site
    enrolled (a re-created log fails). A log no key vouches for fails unless --allow-unpinned.
    Exit code 0 if every log verifies, 9 otherwise.
    Record the printed heads: passing them back with --head reveals entries cut from the end of a log.

    Example: fedscan audit verify site-a/audit/audit.jsonl server/audit.jsonl --kit federation/server
    """
    from common.audit import verify_log
    from common.errors import AuditError

    trust = _trust(kit, pubkey, seal_key, logs, allow_unpinned)
    expected = _parse_heads(head)
    results = []
    for path in logs:
        result = verify_log(path, **trust.options(), every_signature=every_signature)
        if result.actor in expected:
            result = verify_log(
                path, **trust.options(), every_signature=every_signature, expected_head=expected[result.actor]
            )
        results.append(result)
    if json_output:
        typer.echo(
            json.dumps({"ok": all(r.ok for r in results), "logs": [r.to_dict() for r in results]}, indent=2)
        )
    else:
        for r in results:
            console.print(
                r.summary(), style=None if r.ok else "bold red", highlight=False, markup=False, soft_wrap=True
            )
    failed = [r for r in results if not r.ok]
    if failed:
        raise AuditError(
            f"{len(failed)} of {len(results)} log(s) failed verification; first: {failed[0].failure}"
        )


@audit_app.command("reconcile")
def audit_reconcile(
    logs: list[Path] = typer.Argument(
        ..., help="SITE_LOG... SERVER_LOG: the site logs, then the server's log last."
    ),
    kit: Path | None = typer.Option(None, "--kit", help=_KIT_HELP),
    pubkey: list[str] = typer.Option([], "--pubkey", help=_PUBKEY_HELP),
    allow_unpinned: bool = typer.Option(False, "--allow-unpinned", help=_UNPINNED_HELP),
    seal_key: Path | None = typer.Option(None, "--seal-key", help=_SEAL_KEY_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check every round's participants in the server's log against the sites' own entries, both ways.

    Flags a site claiming a round the server does not list, a site the server lists whose log has no
    such round (or refused it), any disagreement on the model hash, and a site log that no longer holds
    the head the server anchored for it (cut, rewritten or re-created).
    Exit code 9 on any difference.

    Example: fedscan audit reconcile site-a/audit/audit.jsonl site-b/audit/audit.jsonl server/audit.jsonl
    """
    from common.audit import reconcile
    from common.errors import AuditError, ConfigError

    if len(logs) < 2:
        raise ConfigError("reconcile needs at least one site log and the server's log (last).")
    verified = _read_logs(logs, _trust(kit, pubkey, seal_key, logs, allow_unpinned))
    result = reconcile(verified[:-1], verified[-1])
    if json_output:
        body = {"logs": [v.verification.to_dict() for v in verified], **result.to_dict()}
        typer.echo(json.dumps(body, indent=2))
    else:
        for finding in result.findings:
            console.print(str(finding), style="bold red", highlight=False, markup=False, soft_wrap=True)
        console.print(
            f"{result.rounds_checked} round(s), {result.participations_checked} participation(s) checked "
            f"against {len(result.sites)} site log(s); {len(result.findings)} difference(s).",
            highlight=False,
            markup=False,
        )
        if result.unchecked_sites:
            console.print(
                f"not checked (no log supplied): {', '.join(result.unchecked_sites)}",
                highlight=False,
                markup=False,
            )
        if result.unchecked_runs:
            console.print(
                f"runs in the site logs that the server's log does not mention (not checked): "
                f"{', '.join(result.unchecked_runs)}",
                highlight=False,
                markup=False,
            )
    if not result.ok:
        raise AuditError(
            f"Reconciliation found {len(result.findings)} difference(s); first: {result.findings[0]}"
        )


@audit_app.command("report")
def audit_report(
    logs: list[Path] = typer.Argument(None, help="Audit logs to include (sites and server)."),
    out: Path = typer.Option(..., "--out", help="Where to write the HTML report."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="A run's output folder (metrics.jsonl)."),
    kit: Path | None = typer.Option(None, "--kit", help=_KIT_HELP),
    pubkey: list[str] = typer.Option([], "--pubkey", help=_PUBKEY_HELP),
    seal_key: Path | None = typer.Option(None, "--seal-key", help=_SEAL_KEY_HELP),
    title: str = typer.Option("fedscan audit report", "--title", help="The report's title."),
) -> None:
    """Render a self-contained HTML report of logs and run records (figures embedded, no external files).

    Shows the verification of every log, the reconciliation (when one server log and site logs are
    given), a timeline, participation per round, epsilon per site, metrics and the de-identification
    summary. Problems found in the logs go into the report; the command still succeeds.

    Example: fedscan audit report --out report.html site-a/audit/audit.jsonl server/audit.jsonl --run-dir run
    """
    from common.audit.report import report_of_logs, write_report
    from common.errors import ConfigError

    logs = list(logs or [])
    if not logs and run_dir is None:
        raise ConfigError("report needs audit logs, a --run-dir, or both.")
    verified = _read_logs(logs, _trust(kit, pubkey, seal_key, logs, allow_unpinned=True))
    rows = _metrics_rows(run_dir) if run_dir is not None else []
    html, reconciliation = report_of_logs(
        verified, metrics_rows=rows, run_dir=str(run_dir) if run_dir else None, title=title
    )
    write_report(out, html)
    bad = [v for v in verified if not v.verification.ok]
    console.print(
        f"wrote {out} ({len(html) // 1024} KiB): {len(verified)} log(s), {len(bad)} failed verification"
        + (f", {len(reconciliation.findings)} reconciliation difference(s)" if reconciliation else ""),
        highlight=False,
        markup=False,
    )


def _metrics_rows(run_dir: Path) -> list[dict[str, object]]:
    from common.errors import InputError
    from server.run_records import read_round_records

    try:
        return [dict(vars(r)) for r in read_round_records(run_dir)]
    except (OSError, ValueError, TypeError) as error:
        raise InputError(f"Cannot read the run records in {run_dir}: {error}.") from None


@audit_app.command("verify-model")
def audit_verify_model(
    model: Path = typer.Argument(..., help="A run's output directory (model_card.json, final_model.npz)."),
    kit: Path | None = typer.Option(None, "--kit", help=_KIT_HELP),
    pubkey: str | None = typer.Option(
        None, "--pubkey", help="The server's audit key (file or text), instead of the kit's manifest."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check a model: the card's signature by the federation's server key, the model's hash, the run's log.

    model_sha256 is the hash of the parameter arrays (dtype, shape, bytes), the one the card and every
    audit log use; file_sha256 is the hash of final_model.npz's bytes. Exit code 0 if every check
    passes, 9 otherwise.

    Example: fedscan audit verify-model --kit federation/server federation/server/runs/20261207T101500Z
    """
    from common.crypto import load_verify_key
    from common.errors import AuditError, ConfigError
    from server.model_verification import verify_run_model

    if (kit is None) == (pubkey is None):
        raise ConfigError("Give the federation's --kit (its manifest names the server's key) or --pubkey.")
    key = _manifest_of_kit(kit).server_audit_key if kit is not None else load_verify_key(str(pubkey))
    result = verify_run_model(model, key)
    if json_output:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        status = "OK  " if result.ok else "FAIL"
        console.print(f"{status} {result.model}: run {result.run_id}", highlight=False, markup=False)
        console.print(f"  model_sha256 (arrays): {result.model_sha256}", highlight=False, markup=False)
        console.print(
            f"  file_sha256 ({'final_model.npz'}): {result.file_sha256}", highlight=False, markup=False
        )
        console.print(f"  card signed by server key {key.key_id}", highlight=False, markup=False)
        for problem in result.problems:
            console.print(f"  problem: {problem}", style="bold red", highlight=False, markup=False)
    if not result.ok:
        raise AuditError(f"The model in {model} failed verification: {result.problems[0]}")


@audit_app.command("summary")
def audit_summary(
    run_dir: Path = typer.Argument(..., help="A run's output folder (holds metrics.jsonl, final_model.npz)."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Summarise a run's records: rounds, participants, failures, and the final model's hashes.

    model_sha256 is the hash of the parameter arrays (what the model card and audit logs name);
    file_sha256 is the hash of final_model.npz's bytes. `fedscan audit verify-model` checks them.

    Example: fedscan audit summary fedscan-demo/run
    """
    from common.errors import InputError
    from server.run_records import MODEL_FILE, read_round_records

    rounds = read_round_records(run_dir)
    if not rounds:
        raise InputError(f"{run_dir} has no metrics.jsonl with completed rounds.")
    model = Path(run_dir) / MODEL_FILE
    digest = hashlib.sha256(model.read_bytes()).hexdigest() if model.exists() else None
    arrays_digest = None
    if model.exists():
        import io

        import numpy as np

        from common.model_card import model_sha256

        with np.load(io.BytesIO(model.read_bytes()), allow_pickle=False) as npz:
            arrays_digest = model_sha256([npz[f"arr_{i}"] for i in range(len(npz.files))])
    if json_output:
        body = {"rounds": [r.__dict__ for r in rounds], "model_sha256": arrays_digest, "file_sha256": digest}
        typer.echo(json.dumps(body, indent=2))
        return
    table = Table(title=f"run {run_dir}")
    for column in ("round", "sites", "failures", "accuracy"):
        table.add_column(column, justify="right")
    for r in rounds:
        table.add_row(
            str(r.round),
            str(r.sites_fit),
            str(r.failures),
            f"{r.accuracy:.3f}" if r.accuracy is not None else "-",
        )
    console.print(table)
    console.print(f"final model: model_sha256 (arrays, as in the card and logs) {arrays_digest or 'missing'}")
    console.print(f"             file_sha256 ({MODEL_FILE} bytes) {digest or 'missing'}")
