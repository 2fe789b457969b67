"""Key life cycle at a site: rotation (fast, resumable), shredding, and other key sources."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client.site import SiteDir
from client.site_init import init_site
from client.site_keys import (
    load_site_key,
    load_site_keyring,
    rotate_site_key,
    sealed_objects,
    shred_site_keys,
)
from client.store import Record, StoreWriter, load_split
from common.crypto import generate_key, load_key_file, open_file, read_header, rewrap_file, write_key_file
from common.errors import ConfigError, IntegrityError, KeyMaterialError, StoreError

HEADER_SIZE = 88  # docs/sealed-format.md: everything after it is payload


def _fill(site: SiteDir, n: int = 40) -> None:
    rng = np.random.default_rng(0)
    writer = StoreWriter(site.store_dir, load_site_key(site), image_size=8, shard_size=10)
    writer.add_all(Record(rng.random((8, 8), dtype=np.float32), i % 2, f"p{i}", "s") for i in range(n))
    writer.commit()


def _all_records(site: SiteDir, keys) -> list[bytes]:  # type: ignore[no-untyped-def]
    return sorted(
        x.tobytes() for s in ("train", "val", "test") for x in load_split(site.store_dir, keys, s).x
    )


@pytest.fixture
def site(tmp_path: Path) -> SiteDir:
    site = init_site(tmp_path / "site", "site-a")
    _fill(site)
    return site


def test_rotation_rewraps_every_object_and_retires_the_old_key(site: SiteDir) -> None:
    old = load_site_key(site)
    before = _all_records(site, old)
    payloads = {p: p.read_bytes()[HEADER_SIZE:] for p, _ in sealed_objects(site)}
    report = rotate_site_key(site)
    new = load_site_key(site)
    assert report.objects == len(payloads) == 5  # 4 shards + the manifest
    assert new.key_id != old.key_id == report.old_key_id
    assert _all_records(site, new) == before
    for path, object_id in sealed_objects(site):
        assert read_header(path).key_id == new.key_id
        assert path.read_bytes()[HEADER_SIZE:] == payloads[path]  # payloads were not re-encrypted
        with pytest.raises(IntegrityError):
            open_file(old, path, object_id=object_id)  # the old key no longer opens anything
    assert not site.site_key_file.with_name("site.key.next").exists()


def test_an_interrupted_rotation_is_visible_readable_and_resumable(site: SiteDir) -> None:
    before = _all_records(site, load_site_key(site))
    old = load_site_key(site)
    next_file = site.site_key_file.with_name("site.key.next")
    write_key_file(next_file, generate_key())
    new = load_key_file(next_file)
    objects = list(sealed_objects(site))
    for path, object_id in objects[: len(objects) // 2]:  # "crash" half way through
        rewrap_file(path, old, new, object_id=object_id)
    with pytest.raises(KeyMaterialError, match="interrupted"):
        load_site_key(site)  # no new writes under a half-rotated site
    assert _all_records(site, load_site_keyring(site)) == before  # but everything stays readable
    rotate_site_key(site)
    assert load_site_key(site).key_id == new.key_id
    assert _all_records(site, load_site_key(site)) == before


def test_shredding_makes_the_data_unrecoverable(site: SiteDir) -> None:
    old = load_site_key(site)
    result = subprocess.run(
        [sys.executable, "-m", "common.cli", "site", "keys", "shred", "--site-dir", str(site.root), "--yes"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert not site.site_key_file.exists() and not site.deid_secret_file.exists()
    with pytest.raises(KeyMaterialError, match="shredded"):
        load_site_key(site)
    # Even a key that *looks* right cannot help: only the destroyed material opened these objects.
    for path, object_id in sealed_objects(site):
        with pytest.raises(IntegrityError):
            open_file(generate_key(), path, object_id=object_id)
    assert {read_header(p).key_id for p, _ in sealed_objects(site)} == {old.key_id}
    with pytest.raises(KeyMaterialError):
        shred_site_keys(site)


def test_shred_asks_before_destroying(site: SiteDir) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "common.cli", "site", "keys", "shred", "--site-dir", str(site.root)],
        input="n\n",
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert site.site_key_file.exists()


def test_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDSCAN_SITE_KEY", raising=False)
    with pytest.raises(KeyMaterialError, match="FEDSCAN_SITE_KEY"):
        init_site(tmp_path / "env-site", "env-site", key_source="env")
    assert not (tmp_path / "env-site" / "site.toml").exists()  # a failed init leaves no site
    key = generate_key()
    monkeypatch.setenv("FEDSCAN_SITE_KEY", base64.b64encode(key.material).decode())
    site = init_site(tmp_path / "env-site", "env-site", key_source="env")
    assert not site.site_key_file.exists()
    assert load_site_key(site).key_id == key.key_id
    _fill(site, 10)
    assert len(_all_records(site, key)) == 10
    with pytest.raises(ConfigError, match="Only file keys"):
        rotate_site_key(site)
    monkeypatch.setenv("FEDSCAN_SITE_KEY", "not a key")
    with pytest.raises(KeyMaterialError, match="FEDSCAN_SITE_KEY") as caught:
        load_site_key(site)
    assert "not a key" not in str(caught.value)  # the value is never echoed


def test_key_from_a_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDSCAN_SITE_PASSPHRASE", raising=False)
    with pytest.raises(KeyMaterialError, match="FEDSCAN_SITE_PASSPHRASE"):
        init_site(tmp_path / "pp-site", "pp-site", key_source="passphrase")
    monkeypatch.setenv("FEDSCAN_SITE_PASSPHRASE", "correct horse battery staple")
    site = init_site(tmp_path / "pp-site", "pp-site", key_source="passphrase")
    assert not site.site_key_file.exists()
    assert site.salt_file.stat().st_mode & 0o777 == 0o600 and len(site.salt_file.read_bytes()) == 16
    first = load_site_key(site)
    assert load_site_key(site).key_id == first.key_id  # deterministic from passphrase + salt
    _fill(site, 10)
    monkeypatch.setenv("FEDSCAN_SITE_PASSPHRASE", "wrong horse")
    with pytest.raises(IntegrityError):
        _all_records(site, load_site_key(site))
    monkeypatch.setenv("FEDSCAN_SITE_PASSPHRASE", "correct horse battery staple")
    assert len(_all_records(site, load_site_key(site))) == 10
    shred_site_keys(site)  # the salt goes: the passphrase alone no longer derives the key
    assert not site.salt_file.exists()
    with pytest.raises(KeyMaterialError):
        load_site_key(site)


@pytest.fixture
def file_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real keyring backend (keyrings.alt's file keyring) in a folder of this test's own."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    import keyring.core

    keyring.core.init_backend()  # reads the variables above
    yield tmp_path / "xdg"
    monkeypatch.undo()
    keyring.core.init_backend()


def test_key_in_the_os_keyring(tmp_path: Path, file_keyring: Path) -> None:
    import keyring

    site = init_site(tmp_path / "kr-site", "kr-site", key_source="keyring")
    assert not site.site_key_file.exists()
    stored = keyring.get_password("fedscan", "kr-site")
    assert stored is not None and len(stored) == 64
    key = load_site_key(site)
    assert key.material.hex() == stored
    _fill(site, 10)
    assert len(_all_records(site, key)) == 10
    with pytest.raises(KeyMaterialError, match="exists already"):  # never overwrite another site's key
        init_site(tmp_path / "kr-site-2", "kr-site", key_source="keyring")
    destroyed = shred_site_keys(site)
    assert "keyring entry fedscan/kr-site" in destroyed
    assert keyring.get_password("fedscan", "kr-site") is None
    with pytest.raises(KeyMaterialError):
        load_site_key(site)


def test_keyring_entry_missing_is_a_clear_error(tmp_path: Path, file_keyring: Path) -> None:
    import keyring

    site = init_site(tmp_path / "kr-site", "kr-site", key_source="keyring")
    keyring.delete_password("fedscan", "kr-site")
    with pytest.raises(KeyMaterialError, match="fedscan/kr-site does not exist"):
        load_site_key(site)


def test_init_key_source_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("FEDSCAN_SITE_KEY", key.material.hex())
    env = {**__import__("os").environ}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "common.cli",
            "site",
            "init",
            "--site-dir",
            str(tmp_path / "s"),
            "--site-id",
            "s",
            "--key-source",
            "env",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert load_site_key(SiteDir(tmp_path / "s")).key_id == key.key_id
    assert 'source = "env"' in (tmp_path / "s" / "site.toml").read_text()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "common.cli",
            "site",
            "init",
            "--site-dir",
            str(tmp_path / "t"),
            "--site-id",
            "t",
            "--key-source",
            "usb-stick",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "keys.source must be one of" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_rotation_destroys_the_old_key_file_as_shredding_does(site: SiteDir, tmp_path: Path) -> None:
    old_bytes = site.site_key_file.read_bytes()
    witness = tmp_path / "old-key-inode"
    os.link(site.site_key_file, witness)  # a second name for the old key's inode, outside the site
    rotate_site_key(site)
    assert witness.read_bytes() != old_bytes  # the inode's bytes were overwritten, not just unlinked
    assert len(witness.read_bytes()) == len(old_bytes)
    leftovers = [p for p in site.keys_dir.iterdir() if old_bytes in p.read_bytes()]
    assert leftovers == []
    assert sorted(p.name for p in site.keys_dir.iterdir() if "site.key" in p.name) == ["site.key"]


def test_a_key_in_a_folder_open_to_others_is_refused(site: SiteDir) -> None:
    os.chmod(site.keys_dir, 0o755)
    with pytest.raises(KeyMaterialError, match="chmod 700"):
        load_site_key(site)
    os.chmod(site.keys_dir, 0o700)
    assert load_site_key(site).key_id  # positive control


def _inspect(site: SiteDir, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "common.cli", "site", "inspect", "--site-dir", str(site.root), *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_inspect_verify_opens_every_object_and_names_the_first_bad_one(site: SiteDir) -> None:
    clean = _inspect(site, "--verify", "--json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["verified_objects"] == 5
    shard = next(p for p, object_id in sealed_objects(site) if "shards" in object_id)
    data = bytearray(shard.read_bytes())
    data[-40] ^= 0x01  # one flipped bit in the last chunk of one shard
    shard.write_bytes(bytes(data))
    assert _inspect(site).returncode == 0  # the manifest alone still reads
    bad = _inspect(site, "--verify")
    assert bad.returncode == StoreError.exit_code
    assert str(shard) in bad.stderr and "Traceback" not in bad.stderr
