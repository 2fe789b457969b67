"""Enrolment requests: how a site joins a federation without its private keys ever leaving it.

``fedscan site enrol`` writes a *public* request: the site's id, its node public key (what the SuperLink
registers for SuperNode authentication) and its audit public key (what auditors check its log against),
each proven by a signature of the request's body made with the matching private key (proof of
possession: nobody can enrol a public key whose private half they do not hold, and the request cannot be
altered on its way to the coordinator without breaking both). The coordinator builds the federation from
requests (``fedscan server provision --request``); it never creates or sees a site's private key.

Format (JSON, UTF-8)::

    {"request": {"format": 1, "kind": "fedscan-enrolment-request", "site_id": "...",
                 "node_public_key": "ecdsa-sha2-nistp384 AAAA...", "audit_public_key": "<base64>",
                 "audit_log_genesis": "<sha256 of the first line of the site's audit log>",
                 "created": "2026-12-07T10:00:00Z"},
     "node_signature": "<base64 ECDSA-SHA384 of the canonical request>",
     "audit_signature": "<base64 Ed25519 of the canonical request>"}

``audit_log_genesis`` pins the site's log itself: the manifest records it, and a log of that site that
starts from another genesis (deleted and re-created) fails ``fedscan audit verify --kit``.

Both signatures cover ``b"fedscan enrolment v1\\x00"`` followed by the canonical JSON of ``request``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common.crypto.pki import node_key_fingerprint, sign_with_node_key, verify_node_signature
from common.crypto.signing import SigningKey, VerifyKey
from common.errors import InputError, KeyMaterialError

__all__ = ["EnrolmentRequest", "make_request", "read_request"]

_LABEL: Final = b"fedscan enrolment v1\x00"
_KIND: Final = "fedscan-enrolment-request"
_MAX_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class EnrolmentRequest:
    """A verified enrolment request."""

    site_id: str
    node_public_key: str  # one OpenSSH line, without comment
    audit_key: VerifyKey
    created: str
    audit_log_genesis: str

    @property
    def node_fingerprint(self) -> str:
        return node_key_fingerprint(self.node_public_key.encode("ascii"))


def _canonical(body: dict[str, Any]) -> bytes:
    return _LABEL + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def make_request(site_id: str, node_private_openssh: bytes, node_public_openssh: bytes, audit_key: SigningKey,
                 created: str, audit_log_genesis: str) -> bytes:  # fmt: skip
    """The request's bytes, signed with both private keys (which stay with the caller)."""
    public = " ".join(node_public_openssh.decode("ascii").split()[:2])
    body = {
        "format": 1,
        "kind": _KIND,
        "site_id": site_id,
        "node_public_key": public,
        "audit_public_key": audit_key.verify_key.to_base64(),
        "audit_log_genesis": audit_log_genesis,
        "created": created,
    }
    message = _canonical(body)
    envelope = {
        "request": body,
        "node_signature": base64.b64encode(sign_with_node_key(node_private_openssh, message)).decode("ascii"),
        "audit_signature": base64.b64encode(audit_key.sign(message)).decode("ascii"),
    }
    return (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode()


def read_request(path: Path) -> EnrolmentRequest:
    """Read and verify an enrolment request.

    Raises
    ------
    InputError
        If the file is missing, too large or not a request, or a signature does not verify (it names the
        file and which proof failed).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(f"Enrolment request {path} cannot be read ({error.strerror}).") from None
    if len(raw) > _MAX_BYTES:
        raise InputError(f"Enrolment request {path} is {len(raw)} bytes; a request is a few hundred.")
    try:
        envelope = json.loads(raw)
        body = envelope["request"]
        if body.get("kind") != _KIND or body.get("format") != 1:
            raise ValueError("not a fedscan enrolment request (format 1)")
        site_id = str(body["site_id"])
        node_public = str(body["node_public_key"])
        audit = VerifyKey.from_raw(base64.b64decode(body["audit_public_key"], validate=True))
        node_signature = base64.b64decode(envelope["node_signature"], validate=True)
        audit_signature = base64.b64decode(envelope["audit_signature"], validate=True)
        created = str(body.get("created", ""))
        genesis = str(body.get("audit_log_genesis", ""))
        if len(genesis) != 64 or any(c not in "0123456789abcdef" for c in genesis):
            # Without it the site's log is not pinned, and a re-created log would verify.
            raise ValueError("audit_log_genesis is missing or not a SHA-256 hex digest")
    except (ValueError, KeyError, TypeError, AttributeError, KeyMaterialError) as error:
        raise InputError(f"Enrolment request {path} is malformed ({error}).") from None
    message = _canonical(body)
    if not audit.verify(message, audit_signature):
        raise InputError(f"Enrolment request {path}: the audit key's signature does not verify (altered?).")
    if not verify_node_signature(node_public.encode("ascii"), message, node_signature):
        raise InputError(f"Enrolment request {path}: the node key's signature does not verify (altered?).")
    request = EnrolmentRequest(site_id, node_public, audit, created, genesis)
    try:
        request.node_fingerprint  # noqa: B018 - checks the key is an EC key Flower accepts
    except KeyMaterialError as error:
        raise InputError(f"Enrolment request {path}: {error}") from None
    return request
