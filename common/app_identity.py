"""The app hash: one SHA-256 naming the code a ClientApp and a ServerApp run.

Sites approve the digests they have reviewed (``approved_app_hashes`` in site.toml, checked by
:mod:`client.policy`), both ends record it in their audit logs (``round.taken``, ``run.start``) and the
model card carries it, so an auditor can tell which code produced a model. Both ends compute it the
same way, over the same packages.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

__all__ = ["APP_PACKAGES", "app_hash", "source_digest"]

#: The packages whose code a site runs in a ClientApp (and the server in its ServerApp).
APP_PACKAGES = ("client", "common", "server")


def source_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """SHA-256 over source files given as (relative POSIX path, bytes), the way :func:`app_hash` hashes.

    Files are taken in sorted path order, each as its path, a NUL byte and the SHA-256 of its bytes; the
    same function names the installed app (:func:`app_hash`) and the code inside an app bundle
    (:mod:`common.app_bundle`), so a site can approve either by one digest.
    """
    digest = hashlib.sha256()
    for relative, content in sorted(files):
        digest.update(relative.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def app_hash() -> str:
    """SHA-256 over the source of the app this process runs (``client``, ``common``, ``server``).

    A fedscan site runs its installed fedscan (the app bundles it accepts carry no code, or carry code a
    trusted publisher signed: :mod:`common.app_bundle`), so this digest names the code a ClientApp runs;
    a site approves the digests it has reviewed (``approved_app_hashes``).
    """
    top = Path(__file__).resolve().parent.parent  # the folder holding client/, common/ and server/
    return source_digest(
        (path.relative_to(top).as_posix(), path.read_bytes())
        for package in APP_PACKAGES
        for path in (top / package).rglob("*.py")
    )
