"""docs/audit.md stays true: its event table matches the registry, and its hand procedure works."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from common.audit import EVENTS, REASONS, AuditLog
from common.crypto import generate_signing_key

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


def _keys(cell: str) -> set[str]:
    return {re.sub(r"\s*\(.*\)", "", part).strip() for part in cell.split(",") if part.strip()}


def test_event_table_matches_the_registry() -> None:
    rows = re.findall(r"^\| `([a-z.]+)` \| (\w+) \|([^|]*)\|([^|]*)\|$", DOC.read_text(), re.MULTILINE)
    table = {event: (side, _keys(required), _keys(optional)) for event, side, required, optional in rows}
    registry = {
        event: (spec.side if spec.side != "any" else "log", set(spec.required), set(spec.optional))
        for event, spec in EVENTS.items()
    }
    assert table == registry


def test_every_failure_reason_is_documented() -> None:
    text = DOC.read_text()
    assert [r for r in REASONS if f"`{r}`" not in text] == []


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("bash", "openssl", "xxd", "sha256sum")),
    reason="the hand procedure needs bash, openssl, xxd and sha256sum",
)
def test_the_hand_verification_procedure_works(tmp_path: Path) -> None:
    script = re.search(
        r"<!-- hand-verification:begin -->\n```sh\n(.*?)```\n<!-- hand-verification:end -->",
        DOC.read_text(),
        re.S,
    )
    assert script is not None
    log = tmp_path / "audit.jsonl"
    with AuditLog.open(log, "site-a", generate_signing_key(), role="site") as writer:
        writer.append("site.init", site_id="site-a")
        writer.append("round.taken", run_id="run-1", round=1, model_sha256="ab" * 32, epsilon=0.25)
    for n in (1, 2, 3):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script.group(1)],
            cwd=tmp_path,
            env={"LOG": str(log), "N": str(n), "PATH": "/usr/bin:/bin:/usr/local/bin"},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["hash", "ok", "link", "ok", "Signature", "Verified", "Successfully"]
    lines = log.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"site-a", b"site-b", 1)
    log.write_bytes(b"\n".join(lines))
    result = subprocess.run(
        ["bash", "-uo", "pipefail", "-c", script.group(1)],
        cwd=tmp_path,
        env={"LOG": str(log), "N": "2", "PATH": "/usr/bin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
    )
    # The body no longer matches the stored hash; the signature still covers that stored hash.
    assert result.stdout.split()[:2] == ["link", "ok"]
