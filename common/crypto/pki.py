"""The federation's public-key infrastructure: a CA, the SuperLink's TLS certificate, node key pairs.

A recipe with nothing to choose: every key is EC P-384 (NIST curve, what Flower's SuperNode
authentication accepts), every signature ECDSA with SHA-384; the certificates and keys are built in
:mod:`common.crypto.hazmat.ec_x509`, re-exported here. This module adds the key files: private files
are written 0600 and never overwritten; :func:`read_private_file` refuses a private file that is not a
regular file owned by the current user with no group/other permission bits, or that lies in a folder
open to group or others (:mod:`common.crypto.private_files`).
"""

from __future__ import annotations

import os
from pathlib import Path

from common.crypto.hazmat.ec_x509 import (
    CertificateInfo,
    NodeKeyPair,
    PemPair,
    certificate_info,
    is_issued_by,
    issue_server_certificate,
    new_certificate_authority,
    new_node_key,
    node_key_fingerprint,
    node_public_key,
    sign_with_node_key,
    verify_node_signature,
)
from common.crypto.private_files import read_private_file as _read_private
from common.errors import KeyMaterialError
from common.fsio import write_atomic, write_private_atomic

__all__ = [
    "CertificateInfo",
    "NodeKeyPair",
    "PemPair",
    "certificate_info",
    "is_issued_by",
    "issue_server_certificate",
    "new_certificate_authority",
    "new_node_key",
    "node_key_fingerprint",
    "node_public_key",
    "read_private_file",
    "sign_with_node_key",
    "verify_node_signature",
    "write_new_private_file",
    "write_public_file",
]

_PRIVATE_MAX_BYTES = 64 * 1024


def write_new_private_file(path: Path, data: bytes) -> None:
    """Write a private key file, mode 0600 from creation, atomically; refuse to overwrite one."""
    path = Path(path)
    if os.path.lexists(path):
        raise KeyMaterialError(f"{path} already exists; refusing to overwrite a private key.")
    write_private_atomic(path, data)


def write_public_file(path: Path, data: bytes) -> None:
    """Write a certificate or public key (mode 0644), atomically."""
    write_atomic(Path(path), data, mode=0o644)


def read_private_file(path: Path) -> bytes:
    """Read a node or TLS private key file (:func:`common.crypto.private_files.read_private_file`'s checks).

    Raises
    ------
    KeyMaterialError
        If the file is missing, not a regular file, not owned by the current user, readable or
        writable by group or others, or in a folder that is; the message names the file and the fix.
    """
    return _read_private(path, max_bytes=_PRIVATE_MAX_BYTES, label="Private key file")[: _PRIVATE_MAX_BYTES]
