"""EC P-384 and X.509: the federation's CA, the SuperLink's TLS certificate, node key pairs, ECDSA.

The hazmat half of :mod:`common.crypto.pki` (see :mod:`common.crypto.hazmat`); the recipe and the key
files are there.

A recipe with nothing to choose: every key is EC P-384 (NIST curve, what Flower's SuperNode
authentication accepts), every signature ECDSA with SHA-384.

* The **CA** is self-signed and may sign end-entity certificates only (``pathLenConstraint = 0``). Its
  certificate goes to every site (``ca.pem``: sites verify the SuperLink with it); its private key is
  needed again only to rotate the SuperLink's certificate, so it belongs offline.
* The **SuperLink certificate** is a TLS server certificate (``serverAuth``) whose Subject Alternative
  Names are exactly the addresses sites use: an IP address becomes an ``iPAddress`` SAN, a host name a
  ``dNSName`` SAN (RFC 5280 4.2.1.6; TLS clients match names against the SANs, never the CN).
* A **node key** is what a SuperNode signs its requests with: OpenSSH private-key format
  (``-----BEGIN OPENSSH PRIVATE KEY-----``, unencrypted: the SuperNode reads it unattended, so the file
  is protected by mode 0600 instead) and the one-line OpenSSH public key
  (``ecdsa-sha2-nistp384 AAAA...``) that the coordinator registers with ``flwr supernode register``.

"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import KeyMaterialError

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
    "sign_with_node_key",
    "verify_node_signature",
]

_CURVE = ec.SECP384R1
_HASH = hashes.SHA384


@dataclass(frozen=True)
class PemPair:
    """A certificate and its private key, both PEM."""

    certificate: bytes
    private_key: bytes


@dataclass(frozen=True)
class NodeKeyPair:
    """A SuperNode's authentication key: OpenSSH private key (PEM text) and one-line public key."""

    private_openssh: bytes
    public_openssh: bytes

    @property
    def fingerprint(self) -> str:
        """``SHA256:<base64>``, as ``ssh-keygen -l`` prints it."""
        return node_key_fingerprint(self.public_openssh)


@dataclass(frozen=True)
class CertificateInfo:
    """What a person checks about a certificate."""

    subject: str
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    names: tuple[str, ...]
    is_ca: bool
    sha256: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def new_certificate_authority(name: str, *, days: int = 3650) -> PemPair:
    """A new self-signed CA named ``name`` that can sign end-entity certificates only."""
    key = ec.generate_private_key(_CURVE())
    subject = _name(name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _HASH())
    )
    return PemPair(cert.public_bytes(serialization.Encoding.PEM), _private_pem(key))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def issue_server_certificate(
    ca: PemPair, common_name: str, hosts: Sequence[str], *, days: int = 825
) -> PemPair:
    """A TLS server certificate signed by ``ca`` whose SANs are ``hosts`` (IP addresses or DNS names).

    825 days is the longest lifetime mainstream TLS clients accept for a server certificate.
    """
    if not hosts:
        raise ValueError("A server certificate needs at least one host name or IP address.")
    ca_cert = x509.load_pem_x509_certificate(ca.certificate)
    ca_key = serialization.load_pem_private_key(ca.private_key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise KeyMaterialError("The CA private key is not an EC key; it was not made by fedscan.")
    key = ec.generate_private_key(_CURVE())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # keep order, drop repeats
        names.append(_san(host))
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, _HASH())
    )
    return PemPair(cert.public_bytes(serialization.Encoding.PEM), _private_pem(key))


def new_node_key(comment: str = "") -> NodeKeyPair:
    """A new EC P-384 SuperNode key pair in OpenSSH formats (``comment`` is appended to the public key)."""
    key = ec.generate_private_key(_CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if comment:
        public += b" " + comment.encode("ascii", errors="replace").replace(b"\n", b" ")
    return NodeKeyPair(private, public + b"\n")


def node_public_key(private_openssh: bytes) -> bytes:
    """The one-line OpenSSH public key of a node's private key (to check a key pair belongs together).

    Raises
    ------
    KeyMaterialError
        If ``private_openssh`` is not an unencrypted OpenSSH EC private key on a NIST curve.
    """
    try:
        key = serialization.load_ssh_private_key(private_openssh, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyMaterialError("The node key is not an unencrypted OpenSSH private key.") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyMaterialError("The node key is not an EC key (Flower needs EC P-384).")
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def node_key_fingerprint(public_openssh: bytes) -> str:
    """``SHA256:<unpadded base64>`` of the key blob, the form ``ssh-keygen -lf key.pub`` prints.

    Raises
    ------
    KeyMaterialError
        If ``public_openssh`` is not an OpenSSH EC public key on a NIST curve.
    """
    try:
        key = serialization.load_ssh_public_key(public_openssh)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyMaterialError("Not an OpenSSH public key.") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyMaterialError("Not an EC public key (Flower's node authentication needs EC P-384).")
    blob = base64.b64decode(public_openssh.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def sign_with_node_key(private_openssh: bytes, data: bytes) -> bytes:
    """ECDSA (SHA-384) signature of ``data`` by a node's private key: proof that a site holds it.

    Raises
    ------
    KeyMaterialError
        If ``private_openssh`` is not an unencrypted OpenSSH EC private key.
    """
    try:
        key = serialization.load_ssh_private_key(private_openssh, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyMaterialError("The node key is not an unencrypted OpenSSH private key.") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyMaterialError("The node key is not an EC key (Flower needs EC P-384).")
    return key.sign(data, ec.ECDSA(_HASH()))


def verify_node_signature(public_openssh: bytes, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the node key's ECDSA (SHA-384) signature of ``data``; never raises."""
    try:
        key = serialization.load_ssh_public_key(public_openssh)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        key.verify(signature, data, ec.ECDSA(_HASH()))
    except (ValueError, UnsupportedAlgorithm, InvalidSignature, TypeError):
        return False
    return True


def certificate_info(pem: bytes) -> CertificateInfo:
    """Subject, issuer, validity, SANs and SHA-256 fingerprint of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(v) for v in sans.get_values_for_type(x509.DNSName)) + tuple(
            str(v) for v in sans.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        names = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        names=names,
        is_ca=is_ca,
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def is_issued_by(certificate: bytes, ca_certificate: bytes) -> bool:
    """Whether ``ca_certificate`` signed ``certificate`` (signature and issuer name)."""
    cert = x509.load_pem_x509_certificate(certificate)
    ca = x509.load_pem_x509_certificate(ca_certificate)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
