"""Ed25519 signing keys: RFC 8032 vectors, key files, public-key forms, and openssl interoperability."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from common.crypto import (
    SigningKey,
    VerifyKey,
    generate_signing_key,
    load_signing_key,
    load_verify_key,
    sign,
    verify,
    write_signing_key,
    write_verify_key,
)
from common.errors import KeyMaterialError

# RFC 8032 section 7.1, TEST 1, TEST 2 and TEST 3: (secret seed, public key, message, signature).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_known_answers(seed: str, public: str, message: str, signature: str) -> None:
    key = SigningKey.from_seed(bytes.fromhex(seed))
    assert key.verify_key.raw.hex() == public
    assert sign(key, bytes.fromhex(message)).hex() == signature
    assert verify(key.verify_key, bytes.fromhex(message), bytes.fromhex(signature))


def test_verify_rejects_any_change_and_never_raises() -> None:
    key = generate_signing_key()
    sig = key.sign(b"entry")
    assert verify(key.verify_key, b"entry", sig)
    assert not verify(key.verify_key, b"entrY", sig)
    assert not verify(key.verify_key, b"entry", bytes([sig[0] ^ 1]) + sig[1:])
    assert not verify(key.verify_key, b"entry", sig[:-1])
    assert not verify(generate_signing_key().verify_key, b"entry", sig)


def test_repr_never_shows_the_seed() -> None:
    key = generate_signing_key()
    text = repr(key)
    assert key.seed.hex() not in text and repr(key.seed) not in text
    assert key.key_id in text


def test_key_file_round_trip_mode_and_refusal_to_overwrite(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "keys" / "audit.key"
    write_signing_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().startswith(f"fedscan-signing-key v1 {key.key_id}\n")
    assert load_signing_key(path) == key
    with pytest.raises(KeyMaterialError, match="already exists"):
        write_signing_key(path, generate_signing_key())
    assert load_signing_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["audit.key"]


def test_loader_refuses_unsafe_or_damaged_files(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "audit.key"
    write_signing_key(path, key)
    os.chmod(path, 0o640)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        load_signing_key(path)
    os.chmod(path, 0o600)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(KeyMaterialError, match="cannot be opened"):
        load_signing_key(link)
    with pytest.raises(KeyMaterialError, match="does not exist"):
        load_signing_key(tmp_path / "missing.key")
    header, body = path.read_text().splitlines()
    other = base64.b64encode(generate_signing_key().seed).decode()
    for text in (f"{header}\n{other}\n", f"{header}\n", "garbage\n", f"{header}\n{body}x\n"):
        path.write_text(text)
        with pytest.raises(KeyMaterialError, match="malformed|corrupted"):
            load_signing_key(path)


def test_public_key_forms_round_trip(tmp_path: Path) -> None:
    key = generate_signing_key().verify_key
    pem_file = tmp_path / "site.pub"
    write_verify_key(pem_file, key)
    assert pem_file.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE(pem_file.stat().st_mode) == 0o644
    for source in (pem_file, key.to_pem(), key.to_openssh("site-a"), key.to_base64()):
        loaded = load_verify_key(source)
        assert loaded == key and loaded.key_id == key.key_id
    assert isinstance(load_verify_key(str(pem_file)), VerifyKey)


@pytest.mark.parametrize(
    "text", ["", "not a key", "ssh-rsa AAAAB3NzaC1yc2E=", base64.b64encode(b"x" * 31).decode()]
)
def test_load_verify_key_refuses_other_text(text: str) -> None:
    with pytest.raises(KeyMaterialError, match="not an Ed25519 public key"):
        load_verify_key(text)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_our_signature_from_the_pem(tmp_path: Path) -> None:
    """What docs/audit.md tells an auditor to run by hand."""
    key = generate_signing_key()
    message = b"fedscan-audit-entry-v1:" + b"ab" * 32
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig").write_bytes(key.sign(message))
    write_verify_key(tmp_path / "key.pub", key)
    command = [
        "openssl",
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "key.pub",
        "-rawin",
        "-in",
        "msg",
        "-sigfile",
        "sig",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Signature Verified Successfully" in result.stdout
