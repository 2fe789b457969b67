"""Signed app bundles: what a coordinator may ask a site to run, and how the site checks it first.

A Flower app bundle (FAB) is a zip the SuperLink sends to every SuperNode of a run; Flower installs it
and imports its ClientApp. A site must therefore decide *before any of its code is imported* whether it
runs it. fedscan's rule (``docs/deployment.md``, threat model):

* the bundle carries ``fedscan-bundle.json``: a *statement* (federation, fedscan version, the app hash
  of the code it runs, and the SHA-256 of every other file in it) and an Ed25519 signature of that
  statement by a *publisher* key (``fedscan server provision`` creates one per federation);
* the site accepts it only if the signature is by a publisher its ``site.toml`` trusts, every file of the
  bundle is one the statement names with its hash (nothing added, nothing changed), its federation is the
  site's, and, if the site pins bundles, the SHA-256 of the bundle's bytes (what the SuperNode received and
  Flower names the run by) is pinned;
* a bundle that carries no code (fedscan's own: a manifest naming fedscan's installed ClientApp) must
  declare the app hash of exactly the site's installed fedscan; a bundle that carries code is refused
  where the site runs its installed code only (the ``warm`` executor: the bundle's code would not be
  what runs), and otherwise its app hash is computed over its own Python files, and it runs only if
  the site has reviewed it: pinned the bundle or approved that app hash (the coordinator holds the
  publisher key, so a signature alone never admits new code);
* if the site lists approved app hashes, that app hash must be one of them;
* a bundle that carries code carries it as Python source only: bytecode (``__pycache__``, sourceless
  ``.pyc``) and extension modules are refused, since Python would run them instead of the source the
  app hash names;
* its publisher, name and version (which Flower turns into its install folder, unchecked) are plain
  names: no path separator, no ``..``.

Every check is pure (bytes in, :class:`BundleVerdict` out); Flower's side of it (calling this when a run's
bundle arrives, before it is stored) is :mod:`common.flower_runtime.bundle_gate`.

Bundles are deterministic: Flower builds the zip with fixed timestamps and Ed25519 signatures are
deterministic, so the same statement and key give the same bytes and the same hash, which a site can pin.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.machinery
import io
import json
import re
import tomllib
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from common import __version__
from common.app_identity import app_hash, source_digest
from common.crypto.signing import SigningKey, VerifyKey
from common.errors import ConfigError
from common.flower_app import CLIENT_COMPONENT, SERVER_COMPONENT, write_app_manifest
from common.flower_runtime.fab import build_fab
from common.fsio import write_atomic

__all__ = [
    "BUNDLE_FILE",
    "BUNDLE_REFUSALS",
    "MAX_BUNDLE_BYTES",
    "BundleTrust",
    "BundleVerdict",
    "SignedBundle",
    "build_fab",
    "publisher_keys",
    "sign_app_dir",
    "verify_bundle",
    "write_signed_manifest_bundle",
]

#: The signature file inside a bundle.
BUNDLE_FILE: Final = "fedscan-bundle.json"
#: Flower's own list of the bundle's files (written by its builder); not part of the statement.
_FLOWER_CONTENT: Final = ".info/CONTENT"
_SIGNED_LABEL: Final = b"fedscan app bundle v1\x00"
_FORMAT: Final = 1
#: Bundles larger than this are refused unread (fedscan's own is ~1.5 kB; Flower caps FABs at 20 MB).
MAX_BUNDLE_BYTES: Final = 20 * 1024 * 1024
_MAX_ENTRIES: Final = 2000

#: Refusal code -> what it means; a verdict names one.
BUNDLE_REFUSALS: Final[Mapping[str, str]] = {
    "hash-mismatch": "the bundle's bytes do not match the hash it was sent under",
    "malformed": "the bundle is not a readable zip of regular files",
    "too-large": "the bundle is larger than a site accepts",
    "unsigned": f"the bundle carries no {BUNDLE_FILE}",
    "untrusted-publisher": "the bundle is signed by a key this site does not trust",
    "bad-signature": "the signature does not verify: the statement was altered or forged",
    "files-mismatch": "the bundle's files differ from the ones its statement names",
    "wrong-federation": "the bundle was signed for another federation",
    "not-pinned": "the site pins bundles and this one is not pinned",
    "code-not-allowed": "the bundle carries code, but this site runs only its installed fedscan",
    "wrong-components": "the bundle names other components than fedscan's apps",
    "wrong-app": "the bundle is for other code than this site's installed fedscan",
    "unapproved-app": "the app hash is not one of the site's approved app hashes",
    "compiled-code": "the bundle carries bytecode or an extension module, which its app hash does not cover",
    "code-not-reviewed": "the bundle carries code the site has neither pinned nor approved by app hash",
    "unsafe-name": "the bundle's publisher, name or version is not a plain name (Flower installs by them)",
}
#: Importable files other than Python source: Python runs them instead of (or beside) the ``.py`` files
#: the app hash covers (``__pycache__`` bytecode, extension modules, sourceless ``.pyc``).
_COMPILED_SUFFIXES: Final = tuple(
    {*importlib.machinery.BYTECODE_SUFFIXES, *importlib.machinery.EXTENSION_SUFFIXES, ".pyc", ".pyo", ".pyd"}
)
#: What Flower may put in ``apps/<publisher>.<name>.<version>.<hash>``: one plain path component each.
_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


@dataclass(frozen=True)
class BundleTrust:
    """What a site trusts, from its ``site.toml`` and its installation.

    Attributes
    ----------
    publishers
        Publisher keys whose signatures the site accepts (at least one).
    federation
        The federation the site belongs to (its kit's); ``None`` accepts any.
    pinned_bundles
        SHA-256 (hex) of the bundles the site accepts; empty = any bundle that passes the other checks.
    approved_app_hashes
        App hashes the site has reviewed; empty = any.
    installed_only
        The site runs its installed fedscan only (``warm`` isolation): bundles carrying code are refused.
    installed_app_hash
        The app hash of the installed fedscan (:func:`common.app_identity.app_hash`).
    """

    publishers: tuple[VerifyKey, ...]
    federation: str | None = None
    pinned_bundles: tuple[str, ...] = ()
    approved_app_hashes: tuple[str, ...] = ()
    installed_only: bool = True
    installed_app_hash: str = field(default_factory=app_hash)


@dataclass(frozen=True)
class BundleVerdict:
    """The result of :func:`verify_bundle`: ``ok``, or the refusal ``code`` and a one-line ``detail``."""

    fab_sha256: str
    code: str | None
    detail: str
    publisher: str | None = None
    app_hash: str | None = None
    carries_code: bool = False

    @property
    def ok(self) -> bool:
        return self.code is None

    def __str__(self) -> str:
        verdict = "accepted" if self.ok else f"refused ({self.code})"
        return f"bundle {self.fab_sha256[:16]}... {verdict}: {self.detail}"


@dataclass(frozen=True)
class SignedBundle:
    """A signed app directory and the bundle Flower builds from it (deterministic)."""

    app_dir: Path
    fab: bytes
    fab_sha256: str
    statement: dict[str, Any]


def _canonical(statement: Mapping[str, Any]) -> bytes:
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _app_files(app_dir: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(Path(app_dir).rglob("*")):
        relative = path.relative_to(app_dir).as_posix()
        if path.is_file() and relative != BUNDLE_FILE and "__pycache__" not in path.parts:
            files[relative] = path.read_bytes()
    return files


def sign_app_dir(
    app_dir: Path, key: SigningKey, federation: str, *, declared_app_hash: str | None = None
) -> SignedBundle:
    """Sign every file of ``app_dir`` into ``app_dir/fedscan-bundle.json``; return the resulting bundle.

    ``declared_app_hash`` is the app hash a code-free bundle runs (fedscan's installed app); a bundle
    with Python files is named by the digest of its own code instead.
    """
    app_dir = Path(app_dir)
    files = _app_files(app_dir)
    code = {name: data for name, data in files.items() if name.endswith(".py")}
    statement = {
        "format": _FORMAT,
        "kind": "fedscan-app-bundle",
        "federation": federation,
        "fedscan_version": __version__,
        "app_hash": source_digest(code.items()) if code else (declared_app_hash or app_hash()),
        "files": {name: _sha256(data) for name, data in files.items()},
    }
    envelope = {
        "statement": statement,
        "publisher": key.key_id,
        "signature": base64.b64encode(key.sign(_SIGNED_LABEL + _canonical(statement))).decode("ascii"),
    }
    write_atomic(app_dir / BUNDLE_FILE, json.dumps(envelope, indent=2, sort_keys=True).encode())
    fab = build_fab(app_dir)
    return SignedBundle(app_dir, fab, _sha256(fab), statement)


def write_signed_manifest_bundle(app_dir: Path, key: SigningKey, federation: str) -> SignedBundle:
    """fedscan's own bundle: the manifest of the installed apps (no code), signed for ``federation``."""
    write_app_manifest(app_dir)
    return sign_app_dir(app_dir, key, federation, declared_app_hash=app_hash())


# ---- verification ---------------------------------------------------------------------------------


def _refused(fab_sha256: str, code: str, detail: str, **extra: Any) -> BundleVerdict:
    return BundleVerdict(fab_sha256, code, detail, **extra)


def _read_entries(fab: bytes) -> dict[str, bytes]:
    """The bundle's files by name; ValueError for anything but a plain zip of regular, unique files."""
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        infos = archive.infolist()
        if len(infos) > _MAX_ENTRIES:
            raise ValueError(f"{len(infos)} entries")
        if sum(info.file_size for info in infos) > MAX_BUNDLE_BYTES:
            raise ValueError("expands beyond the size limit")
        entries: dict[str, bytes] = {}
        for info in infos:
            name = info.filename
            if info.is_dir():
                continue
            parts = name.split("/")
            if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"unsafe entry name {name!r}")
            if name in entries:
                raise ValueError(f"entry {name!r} appears twice")
            entries[name] = archive.read(info)
        return entries


def _components(pyproject: bytes) -> dict[str, str]:
    raw = tomllib.loads(pyproject.decode("utf-8"))
    return {str(k): str(v) for k, v in raw["tool"]["flwr"]["app"]["components"].items()}


def _unsafe_install_name(pyproject: bytes | None) -> str | None:
    """The first of publisher, name and version that is not one plain path component (Flower installs a
    bundle into ``apps/<publisher>.<name>.<version>.<hash>``, unchecked); ``None`` if all are plain."""
    try:
        raw = tomllib.loads((pyproject or b"").decode("utf-8"))
        names = {
            "publisher": raw["tool"]["flwr"]["app"]["publisher"],
            "name": raw["project"]["name"],
            "version": raw["project"]["version"],
        }
    except (KeyError, TypeError, ValueError, UnicodeDecodeError):
        return "pyproject.toml names no publisher, name and version"
    for field_name, value in names.items():
        if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or ".." in value:
            return f"{field_name} {str(value)[:60]!r}"
    return None


def _compiled(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if n.endswith(_COMPILED_SUFFIXES) or "__pycache__" in n.split("/"))


def verify_bundle(fab: bytes, fab_hash: str, trust: BundleTrust) -> BundleVerdict:
    """Check a bundle a SuperNode received against a site's trust; never raises for a bad bundle.

    ``fab_hash`` is the hash the bundle was sent under (Flower's run names it); the verdict names the
    SHA-256 of the bytes themselves.
    """
    if not trust.publishers:
        raise ConfigError("A site must trust at least one publisher key to run any app bundle.")
    actual = _sha256(fab)
    if len(fab) > MAX_BUNDLE_BYTES:
        return _refused(actual, "too-large", f"{len(fab)} bytes")
    if actual != fab_hash:
        return _refused(actual, "hash-mismatch", f"sent as {fab_hash[:16]}...")
    try:
        entries = _read_entries(fab)
    except (ValueError, zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as error:
        return _refused(actual, "malformed", str(error) or type(error).__name__)
    envelope_bytes = entries.pop(BUNDLE_FILE, None)
    entries.pop(_FLOWER_CONTENT, None)
    if envelope_bytes is None:
        return _refused(actual, "unsigned", f"no {BUNDLE_FILE} in the bundle")
    try:
        envelope = json.loads(envelope_bytes)
        statement = envelope["statement"]
        signature = base64.b64decode(envelope["signature"], validate=True)
        publisher_id = str(envelope["publisher"])
        listed: dict[str, str] = dict(statement["files"])
        declared_app = str(statement["app_hash"])
        federation = str(statement["federation"])
    except (ValueError, KeyError, TypeError) as error:
        return _refused(actual, "malformed", f"{BUNDLE_FILE} is not a fedscan statement ({error!r})")
    publisher = next((k for k in trust.publishers if k.key_id == publisher_id), None)
    if publisher is None:
        return _refused(
            actual, "untrusted-publisher", f"publisher key {publisher_id}", publisher=publisher_id
        )
    if not publisher.verify(_SIGNED_LABEL + _canonical(statement), signature):
        return _refused(
            actual, "bad-signature", f"by claimed publisher {publisher_id}", publisher=publisher_id
        )
    found = {name: _sha256(data) for name, data in entries.items()}
    if found != listed:
        changed = sorted(
            (set(found) ^ set(listed)) | {n for n in found if listed.get(n) not in (None, found[n])}
        )
        return _refused(
            actual, "files-mismatch", f"differs in {', '.join(changed[:5])}", publisher=publisher_id
        )
    extra = {"publisher": publisher_id, "app_hash": declared_app}
    if trust.federation is not None and federation != trust.federation:
        return _refused(actual, "wrong-federation", f"signed for {federation!r}", **extra)
    if trust.pinned_bundles and actual not in trust.pinned_bundles:
        return _refused(actual, "not-pinned", "not among the site's pinned bundles", **extra)
    unsafe = _unsafe_install_name(entries.get("pyproject.toml"))
    if unsafe is not None:
        return _refused(actual, "unsafe-name", unsafe, **extra)
    code = {name: data for name, data in entries.items() if name != "pyproject.toml"}
    if code:
        if trust.installed_only:
            return _refused(
                actual,
                "code-not-allowed",
                f"{len(code)} file(s) besides the manifest",
                carries_code=True,
                **extra,
            )
        compiled = _compiled(code)
        if compiled:
            return _refused(actual, "compiled-code", f"{', '.join(compiled[:3])}", carries_code=True, **extra)
        python = {name: data for name, data in code.items() if name.endswith(".py")}
        computed = source_digest(python.items())
        if computed != declared_app:
            return _refused(
                actual, "wrong-app", "the declared app hash is not its code's", carries_code=True, **extra
            )
        if not trust.pinned_bundles and not trust.approved_app_hashes:
            # The coordinator holds the publisher key: code it signs runs only where the site itself
            # reviewed it (its app hash approved, or the exact bundle pinned), never on the signature alone.
            return _refused(
                actual,
                "code-not-reviewed",
                "pin the bundle or approve its app hash",
                carries_code=True,
                **extra,
            )
    else:
        try:
            components = _components(entries.get("pyproject.toml", b""))
        except (KeyError, TypeError, ValueError, UnicodeDecodeError):
            return _refused(actual, "malformed", "pyproject.toml names no components", **extra)
        if components != {"clientapp": CLIENT_COMPONENT, "serverapp": SERVER_COMPONENT}:
            return _refused(actual, "wrong-components", json.dumps(components, sort_keys=True), **extra)
        if declared_app != trust.installed_app_hash:
            return _refused(
                actual,
                "wrong-app",
                f"for app {declared_app[:16]}..., this site runs {trust.installed_app_hash[:16]}...",
                **extra,
            )
    if trust.approved_app_hashes and declared_app not in trust.approved_app_hashes:
        return _refused(
            actual, "unapproved-app", f"app {declared_app[:16]}...", carries_code=bool(code), **extra
        )
    return BundleVerdict(
        actual,
        None,
        f"signed by publisher {publisher_id}",
        publisher_id,
        declared_app,
        carries_code=bool(code),
    )


def publisher_keys(lines: Iterable[str]) -> tuple[VerifyKey, ...]:
    """Parse trusted publisher keys (OpenSSH, PEM or base64 text) into verify keys."""
    from common.crypto.signing import load_verify_key

    return tuple(load_verify_key(line) for line in lines)
