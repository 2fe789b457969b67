"""Signed app bundles: every way a bundle can fail a site's trust is refused with its own code, and the
bundles a site should run are accepted. Real bundles, built by Flower's own builder."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from common.app_bundle import (
    BUNDLE_FILE,
    BUNDLE_REFUSALS,
    BundleTrust,
    build_fab,
    sign_app_dir,
    verify_bundle,
    write_signed_manifest_bundle,
)
from common.app_identity import app_hash, source_digest
from common.crypto import generate_signing_key

PUBLISHER = generate_signing_key()
FEDERATION = "lung-ct"


def _trust(**changes: object) -> BundleTrust:
    values: dict[str, object] = {"publishers": (PUBLISHER.verify_key,), "federation": FEDERATION}
    values.update(changes)
    return BundleTrust(**values)  # type: ignore[arg-type]


def _check(fab: bytes, trust: BundleTrust | None = None) -> str | None:
    return verify_bundle(fab, hashlib.sha256(fab).hexdigest(), trust or _trust()).code


@pytest.fixture()
def fedscan_bundle(tmp_path: Path) -> bytes:
    return write_signed_manifest_bundle(tmp_path / "app", PUBLISHER, FEDERATION).fab


def _code_app(root: Path) -> Path:
    app = root / "code-app"
    (app / "pkg").mkdir(parents=True)
    (app / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "1.0.0"\ndependencies = []\n\n[tool.flwr.app]\npublisher = "x"\n\n'
        '[tool.flwr.app.components]\nserverapp = "pkg.s:app"\nclientapp = "pkg.c:app"\n\n'
        "[tool.flwr.app.config]\n"
    )
    (app / "pkg" / "__init__.py").write_text("")
    (app / "pkg" / "c.py").write_text("app = None\n")
    return app


def _rezip(fab: bytes, change) -> bytes:  # type: ignore[no-untyped-def]
    """The bundle's entries, passed through ``change(entries) -> entries``, zipped again."""
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in change(entries):
            archive.writestr(name, data)
    return out.getvalue()


def test_fedscans_own_bundle_is_accepted_and_deterministic(fedscan_bundle: bytes, tmp_path: Path) -> None:
    verdict = verify_bundle(fedscan_bundle, hashlib.sha256(fedscan_bundle).hexdigest(), _trust())
    assert verdict.ok and verdict.app_hash == app_hash() and not verdict.carries_code
    again = write_signed_manifest_bundle(tmp_path / "again", PUBLISHER, FEDERATION).fab
    assert again == fedscan_bundle  # a site can pin it
    assert (
        _check(fedscan_bundle, _trust(pinned_bundles=(hashlib.sha256(fedscan_bundle).hexdigest(),))) is None
    )
    assert _check(fedscan_bundle, _trust(approved_app_hashes=(app_hash(),))) is None


def test_each_way_to_fail_is_refused_with_its_code(fedscan_bundle: bytes, tmp_path: Path) -> None:
    unsigned = build_fab(_code_app(tmp_path / "u"))
    assert _check(unsigned, _trust(installed_only=False)) == "unsigned"
    stranger = generate_signing_key()
    app = tmp_path / "other"
    write_signed_manifest_bundle(app, stranger, FEDERATION)
    assert _check(build_fab(app)) == "untrusted-publisher"
    assert _check(fedscan_bundle, _trust(federation="other-federation")) == "wrong-federation"
    assert _check(fedscan_bundle, _trust(pinned_bundles=("ab" * 32,))) == "not-pinned"
    assert _check(fedscan_bundle, _trust(installed_app_hash="cd" * 32)) == "wrong-app"
    assert _check(fedscan_bundle, _trust(approved_app_hashes=("ef" * 32,))) == "unapproved-app"
    assert verify_bundle(fedscan_bundle, "00" * 32, _trust()).code == "hash-mismatch"
    assert _check(b"not a zip at all") == "malformed"


def test_a_changed_statement_or_file_breaks_the_signature_or_the_file_list(fedscan_bundle: bytes) -> None:
    def forge_statement(entries):  # type: ignore[no-untyped-def]
        out = []
        for name, data in entries:
            if name == BUNDLE_FILE:
                envelope = json.loads(data)
                envelope["statement"]["federation"] = "elsewhere"
                data = json.dumps(envelope).encode()
            out.append((name, data))
        return out

    assert _check(_rezip(fedscan_bundle, forge_statement)) == "bad-signature"
    edited = _rezip(
        fedscan_bundle,
        lambda es: [
            (n, d.replace(b"client.client_app:app", b"client.evil_app:app"))
            if n == "pyproject.toml"
            else (n, d)
            for n, d in es
        ],  # noqa: E501
    )
    assert _check(edited) == "files-mismatch"
    extra = _rezip(fedscan_bundle, lambda es: [*es, ("sitecustomize.py", b"import os\n")])
    assert _check(extra) == "files-mismatch"
    extra_pth = _rezip(fedscan_bundle, lambda es: [*es, ("evil.pth", b"import os\n")])
    assert _check(extra_pth) == "files-mismatch"


@pytest.mark.parametrize(
    "entries",
    [
        [("../escape.py", b"x")],
        [("/abs.py", b"x")],
        [("a/../../b.py", b"x")],
        [("pyproject.toml", b"a"), ("pyproject.toml", b"b")],
    ],
)
def test_unsafe_zip_entries_are_malformed(entries: list[tuple[str, bytes]]) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries:
            archive.writestr(name, data)
    assert _check(out.getvalue()) == "malformed"


def test_a_signed_bundle_with_code_runs_only_where_the_site_allows_code(tmp_path: Path) -> None:
    signed = sign_app_dir(_code_app(tmp_path), PUBLISHER, FEDERATION)
    assert _check(signed.fab) == "code-not-allowed"  # a site running its installed fedscan only
    # Signed by the trusted publisher, but not reviewed at the site: refused.
    assert _check(signed.fab, _trust(installed_only=False)) == "code-not-reviewed"
    verdict = verify_bundle(
        signed.fab, signed.fab_sha256, _trust(installed_only=False, pinned_bundles=(signed.fab_sha256,))
    )
    assert verdict.ok and verdict.carries_code
    code = {"pkg/__init__.py": b"", "pkg/c.py": b"app = None\n"}
    assert verdict.app_hash == source_digest(code.items())
    approved = _trust(installed_only=False, approved_app_hashes=(verdict.app_hash,))
    assert _check(signed.fab, approved) is None
    assert (
        _check(signed.fab, _trust(installed_only=False, approved_app_hashes=(app_hash(),)))
        == "unapproved-app"
    )


def test_every_refusal_code_is_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text()
    documented = {code for code in BUNDLE_REFUSALS if f"`{code}`" in text}
    assert documented == set(BUNDLE_REFUSALS)
