"""The federation's PKI recipe: what the certificates and node keys must be for TLS and Flower's auth."""

from __future__ import annotations

import ipaddress
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from common.crypto.pki import (
    certificate_info,
    is_issued_by,
    issue_server_certificate,
    new_certificate_authority,
    new_node_key,
    node_key_fingerprint,
    node_public_key,
    read_private_file,
    write_new_private_file,
)
from common.errors import KeyMaterialError


@pytest.fixture(scope="module")
def ca():  # type: ignore[no-untyped-def]
    return new_certificate_authority("test CA", days=30)


def test_ca_is_a_p384_ca_that_signs_end_entities_only(ca) -> None:  # type: ignore[no-untyped-def]
    cert = x509.load_pem_x509_certificate(ca.certificate)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp384r1"
    assert is_issued_by(ca.certificate, ca.certificate)  # self-signed


def test_server_certificate_names_the_address_as_ip_or_dns_san(ca) -> None:  # type: ignore[no-untyped-def]
    pair = issue_server_certificate(ca, "link", ["10.1.2.3", "hub.example.org", "::1"])
    cert = x509.load_pem_x509_certificate(pair.certificate)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("::1"),
    ]
    assert sans.get_values_for_type(x509.DNSName) == ["hub.example.org"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert is_issued_by(pair.certificate, ca.certificate)
    assert not is_issued_by(pair.certificate, new_certificate_authority("other").certificate)
    info = certificate_info(pair.certificate)
    assert set(info.names) == {"10.1.2.3", "hub.example.org", "::1"} and not info.is_ca


def test_python_tls_accepts_the_chain_for_its_names_only(ca, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What a SuperNode's TLS client does: verify the SuperLink certificate against ca.pem and the name."""
    pair = issue_server_certificate(ca, "link", ["127.0.0.1"])
    (tmp_path / "ca.pem").write_bytes(ca.certificate)
    (tmp_path / "cert.pem").write_bytes(pair.certificate)
    (tmp_path / "key.pem").write_bytes(pair.private_key)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    for name, ok in (("127.0.0.1", True), ("hub.example.org", False)):
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        cli = client.wrap_bio(c_in, c_out, server_hostname=name)
        srv = server.wrap_bio(s_in, s_out, server_side=True)
        error = None
        for _ in range(10):
            for side in (cli, srv):
                try:
                    side.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLCertVerificationError as exc:
                    error = exc
            s_in.write(c_out.read())
            c_in.write(s_out.read())
            if error:
                break
        assert (error is None) == ok, name


def test_node_key_is_openssh_p384_and_fingerprint_matches_ssh_keygen_form() -> None:
    pair = new_node_key(comment="fed:site-a")
    private = serialization.load_ssh_private_key(pair.private_openssh, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert pair.private_openssh.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pair.public_openssh.startswith(b"ecdsa-sha2-nistp384 ")
    assert pair.public_openssh.endswith(b"fed:site-a\n")
    public = serialization.load_ssh_public_key(pair.public_openssh)
    assert public == private.public_key()
    assert node_public_key(pair.private_openssh) == pair.public_openssh.split(b" fed:")[0]
    assert pair.fingerprint.startswith("SHA256:") and "=" not in pair.fingerprint
    assert node_key_fingerprint(pair.public_openssh) != new_node_key().fingerprint


def test_non_ec_keys_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    openssh_private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    openssh_public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    with pytest.raises(KeyMaterialError, match="not an EC key"):
        node_public_key(openssh_private)
    with pytest.raises(KeyMaterialError, match="Not an EC public key"):
        node_key_fingerprint(openssh_public)


def test_private_files_are_0600_never_overwritten_and_checked_on_read(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_new_private_file(path, b"secret")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_private_file(path) == b"secret"
    with pytest.raises(KeyMaterialError, match="refusing to overwrite"):
        write_new_private_file(path, b"other")
    os.chmod(path, 0o644)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        read_private_file(path)
    os.chmod(path, 0o600)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(KeyMaterialError, match="symbolic link"):
        read_private_file(link)
    with pytest.raises(KeyMaterialError, match="does not exist"):
        read_private_file(tmp_path / "missing.key")
