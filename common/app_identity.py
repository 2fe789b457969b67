"""The app hash: one SHA-256 naming the code a ClientApp and a ServerApp run.

Sites approve the digests they have reviewed (``approved_app_hashes`` in site.toml, checked by
:mod:`client.policy`), both ends record it in their audit logs (``round.taken``, ``run.start``) and the
model card carries it, so an auditor can tell which code produced a model. Both ends compute it the
same way, over the same packages.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__all__ = ["APP_PACKAGES", "app_hash"]

#: The packages whose code a site runs in a ClientApp (and the server in its ServerApp).
APP_PACKAGES = ("client", "common", "server")


@functools.lru_cache(maxsize=1)
def app_hash() -> str:
    """SHA-256 over the source of the app this process runs (``client``, ``common``, ``server``).

    In a deployment the SuperNode installs the Flower App the server sent and runs the ClientApp from
    it, so this is a digest of the code the server sent; a site approves the digests it has reviewed.
    Files are taken in sorted relative order, each as its path and the SHA-256 of its bytes.
    """
    digest = hashlib.sha256()
    top = Path(__file__).resolve().parent.parent  # the folder holding client/, common/ and server/
    for package in APP_PACKAGES:
        for path in sorted((top / package).rglob("*.py")):
            relative = path.relative_to(top).as_posix()
            digest.update(relative.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
