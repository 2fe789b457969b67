"""A site's verdict on app bundles, attacked with bundles a coordinator (who holds the publisher key) could
sign: each is refused with its reason, and the honest bundle next to it is accepted.

Bundles are built here byte by byte (a zip, Flower's ``.info/CONTENT``, and ``fedscan-bundle.json``
signed in the format :mod:`common.app_bundle` documents), because a hostile publisher does not use
fedscan's builder. Where the attack is what Flower would do with an accepted bundle, Flower's own
installer shows it (``flwr.cli.install.install_from_fab``), and a fresh interpreter imports the result.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import py_compile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from flwr.cli.install import install_from_fab

from common import __version__
from common.app_bundle import BUNDLE_FILE, BundleTrust, verify_bundle, write_signed_manifest_bundle
from common.app_identity import app_hash, source_digest
from common.crypto.signing import SigningKey, generate_signing_key
from common.flower_app import CLIENT_COMPONENT, SERVER_COMPONENT

FEDERATION = "fed"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pyproject(*, components: str = "", version: str = __version__, name: str = "fedscan") -> bytes:
    components = components or f'serverapp = "{SERVER_COMPONENT}"\nclientapp = "{CLIENT_COMPONENT}"\n'
    return (
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = []\n\n'
        f'[tool.flwr.app]\npublisher = "fedscan"\n\n[tool.flwr.app.components]\n{components}\n'
        "[tool.flwr.app.config]\n"
    ).encode()


def _signed_fab(files: dict[str, bytes], key: SigningKey | None, *, app: str | None = None) -> bytes:
    """A bundle of ``files``, its statement signed by ``key`` for :data:`FEDERATION` (no statement
    without a key)."""
    code = {name: data for name, data in files.items() if name.endswith(".py")}
    statement = {
        "format": 1,
        "kind": "fedscan-app-bundle",
        "federation": FEDERATION,
        "fedscan_version": __version__,
        "app_hash": app or (source_digest(code.items()) if code else app_hash()),
        "files": {name: _sha256(data) for name, data in files.items()},
    }
    canonical = json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    envelope = key and {
        "statement": statement,
        "publisher": key.key_id,
        "signature": base64.b64encode(key.sign(b"fedscan app bundle v1\x00" + canonical)).decode(),
    }
    members = {**files, BUNDLE_FILE: json.dumps(envelope).encode()} if key is not None else dict(files)
    content = "".join(f"{name},{_sha256(data)},{len(data)}\n" for name, data in members.items())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in {**members, ".info/CONTENT": content.encode()}.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 10, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def _trust(key: SigningKey, **changes: object) -> BundleTrust:
    return BundleTrust(publishers=(key.verify_key,), federation=FEDERATION, **changes)  # type: ignore[arg-type]


def _verdict(fab: bytes, trust: BundleTrust) -> str | None:
    return verify_bundle(fab, _sha256(fab), trust).code


def test_fedscans_own_bundle_and_one_built_here_are_accepted(tmp_path: Path) -> None:
    """Positive control for every attack below: the bundles they start from verify."""
    key = generate_signing_key()
    own = write_signed_manifest_bundle(tmp_path / "app", key, FEDERATION)
    assert _verdict(own.fab, _trust(key)) is None
    assert _verdict(_signed_fab({"pyproject.toml": _pyproject()}, key), _trust(key)) is None


def _reviewed_app() -> dict[str, bytes]:
    return {
        "pyproject.toml": _pyproject(
            components='serverapp = "app.server:app"\nclientapp = "app.client:app"\n'
        ),
        "app/__init__.py": b"",
        "app/client.py": b"WHO = 'the reviewed source'\n",
    }


def _unchecked_pyc(tmp_path: Path, source: str) -> bytes:
    """Bytecode Python imports without comparing it with any source (PEP 552 unchecked hash pyc)."""
    path = tmp_path / "payload.py"
    path.write_text(source)
    compiled = py_compile.compile(
        str(path),
        cfile=str(tmp_path / "payload.pyc"),
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    return Path(compiled).read_bytes()


def _import_installed(fresh_python: Callable[[str], str], fab: bytes, home: Path) -> str:
    installed = install_from_fab(fab, install_dir=home, skip_prompt=True)
    return fresh_python(
        f"import sys; sys.path.insert(0, {str(installed)!r}); import app.client as c; print(c.WHO)"
    )


def test_bytecode_beside_the_reviewed_source_is_refused(
    tmp_path: Path, fresh_python: Callable[[str], str]
) -> None:
    """A site that approved an app hash (its reviewed Python source) must not run other code under it.

    The app hash covers ``.py`` files only; Python imports ``__pycache__/client.*.pyc`` instead of
    ``client.py`` when the pyc is an unchecked-hash one, so a publisher could ship reviewed source and
    run unreviewed bytecode under its approved hash (isolation ``process`` or ``subprocess``).
    """
    key = generate_signing_key()
    reviewed = _reviewed_app()
    approved = source_digest((n, d) for n, d in reviewed.items() if n.endswith(".py"))
    trust = _trust(key, installed_only=False, approved_app_hashes=(approved,))
    honest = _signed_fab(reviewed, key)
    assert _verdict(honest, trust) is None
    assert _import_installed(fresh_python, honest, tmp_path / "honest") == "the reviewed source\n"

    cached = str(importlib.util.cache_from_source("app/client.py"))
    hostile = _signed_fab(
        {**reviewed, cached: _unchecked_pyc(tmp_path, "WHO = 'unreviewed bytecode'\n")}, key
    )
    # What the attack would achieve once installed: Flower's installer puts the pyc where Python uses it.
    assert _import_installed(fresh_python, hostile, tmp_path / "hostile") == "unreviewed bytecode\n"
    assert _verdict(hostile, trust) == "compiled-code"
    # Extension modules win over source files of the same name: refused the same way.
    for suffix in importlib.machinery.EXTENSION_SUFFIXES[:1] + [".so"]:
        assert (
            _verdict(_signed_fab({**reviewed, f"app/client{suffix}": b"\x7fELF"}, key), trust)
            == "compiled-code"
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", "1.0/../../../../../escaped"),
        ("version", ".."),
        ("name", "fedscan/../../x"),
    ],
)
def test_bundle_names_that_would_install_outside_flowers_apps_folder_are_refused(
    tmp_path: Path, field: str, value: str
) -> None:
    """Flower installs a bundle under ``apps/<publisher>.<name>.<version>.<hash>``, taking the three from
    the bundle's pyproject.toml unchecked: a signed, code-free bundle (accepted in ``warm`` isolation)
    with ``..`` and ``/`` in its version would make the site write outside its Flower home."""
    key = generate_signing_key()
    hostile = _signed_fab({"pyproject.toml": _pyproject(**{field: value})}, key)
    assert _verdict(hostile, _trust(key)) == "unsafe-name"
    assert _verdict(hostile, _trust(key, installed_only=False)) == "unsafe-name"
    if field == "version" and "/" in value:  # what Flower would do with it
        home = tmp_path / "site" / "flower"
        home.mkdir(parents=True)
        installed = install_from_fab(hostile, install_dir=home, skip_prompt=True)
        assert not installed.resolve().is_relative_to(home / "apps")


def _tampered(key: SigningKey) -> dict[str, Callable[[], bytes]]:
    base = {"pyproject.toml": _pyproject()}

    def altered_statement() -> bytes:
        fab = _signed_fab(base, key)
        with zipfile.ZipFile(io.BytesIO(fab)) as archive:
            members = {i.filename: archive.read(i) for i in archive.infolist()}
        envelope = json.loads(members[BUNDLE_FILE])
        envelope["statement"]["federation"] = "other"
        members[BUNDLE_FILE] = json.dumps(envelope).encode()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        return buffer.getvalue()

    def with_entries(*entries: tuple[str, bytes]) -> Callable[[], bytes]:
        def build() -> bytes:
            fab = _signed_fab(base, key)
            buffer = io.BytesIO(fab)
            with zipfile.ZipFile(buffer, "a") as archive:
                for name, data in entries:
                    archive.writestr(zipfile.ZipInfo(name), data)
            return buffer.getvalue()

        return build

    return {
        "unsigned": lambda: _signed_fab(base, None),
        "untrusted-publisher": lambda: _signed_fab(base, generate_signing_key()),
        "bad-signature": altered_statement,
        "files-mismatch": with_entries(("client/client_app.py", b"print('shadowing the installed app')")),
        "malformed-duplicate": with_entries(
            ("pyproject.toml", _pyproject(components='clientapp = "os:system"'))
        ),
        "malformed-traversal": with_entries(("../escape.py", b"")),
        "malformed-absolute": with_entries(("/etc/escape.py", b"")),
        "wrong-components-dotted": lambda: _signed_fab(
            {
                "pyproject.toml": _pyproject().replace(
                    f'clientapp = "{CLIENT_COMPONENT}"'.encode(), b'clientapp = "evil.client:app"'
                )
            },
            key,
        ),
        "wrong-components-extra": lambda: _signed_fab(
            {
                "pyproject.toml": _pyproject(
                    components=f'serverapp = "{SERVER_COMPONENT}"\nclientapp = '
                    f'"{CLIENT_COMPONENT}"\nagentapp = "evil:app"\n'
                )
            },
            key,
        ),  # fmt: skip
        "wrong-app": lambda: _signed_fab(base, key, app="0" * 64),
        "code-not-allowed": lambda: _signed_fab({**base, "client/client_app.py": b"x = 1\n"}, key),
    }


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(
    "attack",
    [
        "unsigned",
        "untrusted-publisher",
        "bad-signature",
        "files-mismatch",
        "malformed-duplicate",
        "malformed-traversal",
        "malformed-absolute",
        "wrong-components-dotted",
        "wrong-components-extra",
        "wrong-app",
        "code-not-allowed",
    ],
)
def test_each_hostile_bundle_is_refused_with_its_reason(attack: str) -> None:
    key = generate_signing_key()
    fab = _tampered(key)[attack]()
    code = attack.split("-")[0] if attack.startswith("malformed") else attack
    code = code.removesuffix("-dotted").removesuffix("-extra")
    assert _verdict(fab, _trust(key)) == code
    assert verify_bundle(fab, "0" * 64, _trust(key)).code == "hash-mismatch"  # sent under another hash
