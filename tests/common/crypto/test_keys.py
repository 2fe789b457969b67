"""Site keys: key files (format, permissions, owner, refusal messages), env and passphrase keys."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest

from common.crypto import (
    KEY_SIZE,
    Keyring,
    SiteKey,
    derive_key_from_passphrase,
    generate_key,
    key_from_env,
    load_key_file,
    write_key_file,
)
from common.errors import ConfigError, KeyMaterialError


def test_generated_keys_are_distinct_and_well_formed() -> None:
    a, b = generate_key(), generate_key()
    assert a != b and len(a.material) == KEY_SIZE
    assert len(a.key_id) == 16 and a.key_id == a.key_id.lower() and int(a.key_id, 16) >= 0
    assert a.key_id == hashlib.sha256(b"fedscan key-id v1\x00" + a.material).hexdigest()[:16]


def test_repr_never_shows_material() -> None:
    key = generate_key()
    for text in (repr(key), str(key), repr(Keyring([key]))):
        assert key.material.hex() not in text and repr(key.material) not in text
        assert key.key_id in text


@pytest.mark.parametrize("material", [b"", b"x" * 31, b"x" * 33, "x" * 32])
def test_site_key_refuses_wrong_material(material: object) -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        SiteKey.from_material(material)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SiteKey(key_id="0" * 16, material=material)  # type: ignore[arg-type]


def test_site_key_refuses_a_key_id_that_is_not_derived_from_the_key() -> None:
    with pytest.raises(ConfigError, match="key id"):
        SiteKey(key_id="0123456789abcdef", material=bytes(32))


def test_keyring_lookup() -> None:
    a, b = generate_key(), generate_key()
    ring = Keyring([a, b, a])
    assert len(ring) == 2 and ring.get(b.key_id) is b and a.key_id in ring
    assert ring.key_ids == (a.key_id, b.key_id) and list(ring) == [a, b]
    with pytest.raises(KeyMaterialError, match="not in the keyring"):
        ring.get("0" * 16)
    with pytest.raises(ConfigError):
        Keyring([])


# ---- key files -----------------------------------------------------------------------------------


def test_key_file_round_trip_format_and_modes(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "new" / "keys" / "site.key"
    write_key_file(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    lines = path.read_text().splitlines()
    assert lines == [f"fedscan-key v1 {key.key_id}", base64.b64encode(key.material).decode()]
    assert load_key_file(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["site.key"]  # no temporary file left


def test_write_key_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    first = generate_key()
    write_key_file(path, first)
    with pytest.raises(KeyMaterialError, match="already exists"):
        write_key_file(path, generate_key())
    assert load_key_file(path) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.key"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "site.key"
    write_key_file(path, generate_key())
    os.chmod(path, mode)
    with pytest.raises(KeyMaterialError) as info:
        load_key_file(path)
    message = str(info.value)
    assert str(path) in message and f"{mode:04o}" in message and f"chmod 600 {path}" in message


def test_key_file_of_another_owner_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    path = tmp_path / "site.key"
    write_key_file(path, generate_key())
    os.chown(path, 1, -1)
    with pytest.raises(KeyMaterialError) as info:
        load_key_file(path)
    assert str(path) in str(info.value) and "owned by uid 1" in str(info.value)
    assert "chown" in str(info.value)


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="does not exist"):
        load_key_file(tmp_path / "absent.key")


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "site.key"
    write_key_file(target, generate_key())
    link = tmp_path / "link.key"
    link.symlink_to(target)
    with pytest.raises(KeyMaterialError, match=str(link)):
        load_key_file(link)


def test_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyMaterialError, match="regular file"):
        load_key_file(directory)


_KEY = generate_key()
_B64 = base64.b64encode(_KEY.material).decode()
MALFORMED = {
    "empty": "",
    "one line": f"fedscan-key v1 {_KEY.key_id}\n",
    "bad magic": f"fedscan-kee v1 {_KEY.key_id}\n{_B64}\n",
    "future version": f"fedscan-key v2 {_KEY.key_id}\n{_B64}\n",
    "upper-case id": f"fedscan-key v1 {_KEY.key_id.upper()}\n{_B64}\n",
    "not base64": f"fedscan-key v1 {_KEY.key_id}\n{_B64[:-2]}!=\n",
    "short key": f"fedscan-key v1 {_KEY.key_id}\n{base64.b64encode(_KEY.material[:31]).decode()}\n",
    "extra line": f"fedscan-key v1 {_KEY.key_id}\n{_B64}\nmore\n",
    "id mismatch": f"fedscan-key v1 {'0' * 16}\n{_B64}\n",
    "binary": "\x00\xff" * 10,
    "huge": "x" * 10000,
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_key_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "site.key"
    path.write_bytes(content.encode("latin-1"))
    os.chmod(path, 0o600)
    with pytest.raises(KeyMaterialError) as info:
        load_key_file(path)
    assert str(path) in str(info.value) and _B64 not in str(info.value)


# ---- environment and passphrase ------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda m: m.hex(),
        lambda m: m.hex().upper(),
        lambda m: base64.b64encode(m).decode(),
        lambda m: base64.urlsafe_b64encode(m).decode().rstrip("="),
        lambda m: f"  {base64.b64encode(m).decode()}\n",
    ],
    ids=["hex", "HEX", "base64", "urlsafe-unpadded", "whitespace"],
)
def test_key_from_env(monkeypatch: pytest.MonkeyPatch, encode: object) -> None:
    key = generate_key()
    monkeypatch.setenv("FEDSCAN_TEST_KEY", encode(key.material))  # type: ignore[operator]
    assert key_from_env("FEDSCAN_TEST_KEY") == key


def test_key_from_env_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDSCAN_TEST_KEY", raising=False)
    with pytest.raises(KeyMaterialError, match="FEDSCAN_TEST_KEY is not set"):
        key_from_env("FEDSCAN_TEST_KEY")


@pytest.mark.parametrize(
    "value", ["", "zz" * 32, "00" * 31, base64.b64encode(bytes(33)).decode(), "not a key"]
)
def test_key_from_env_invalid(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FEDSCAN_TEST_KEY", value)
    with pytest.raises(KeyMaterialError, match="FEDSCAN_TEST_KEY") as info:
        key_from_env("FEDSCAN_TEST_KEY")
    assert not value or value not in str(info.value)


def test_passphrase_key_is_scrypt_n15_r8_p1() -> None:
    salt = bytes(range(16))
    key = derive_key_from_passphrase("correct horse battery staple", salt)
    expected = hashlib.scrypt(
        b"correct horse battery staple", salt=salt, n=2**15, r=8, p=1, maxmem=64 << 20, dklen=32
    )
    assert key.material == expected
    assert derive_key_from_passphrase("correct horse battery staple", salt) == key
    assert derive_key_from_passphrase("correct horse battery staple", bytes(16)) != key


@pytest.mark.parametrize(("passphrase", "salt"), [("", bytes(16)), ("pw", bytes(15)), ("pw", "salt" * 8)])
def test_passphrase_key_refuses_bad_arguments(passphrase: str, salt: object) -> None:
    with pytest.raises(ConfigError):
        derive_key_from_passphrase(passphrase, salt)  # type: ignore[arg-type]
