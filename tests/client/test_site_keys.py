"""Key life cycle at a site: rotation (fast, resumable), shredding, and other key sources."""

from __future__ import annotations

import base64
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
from common.errors import ConfigError, IntegrityError, KeyMaterialError

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
    site = init_site(tmp_path / "env-site", "env-site")
    text = site.config_file.read_text().replace('source = "file"', 'source = "env"')
    site.config_file.write_text(text)
    monkeypatch.delenv("FEDSCAN_SITE_KEY", raising=False)
    with pytest.raises(KeyMaterialError, match="FEDSCAN_SITE_KEY"):
        load_site_key(site)
    key = generate_key()
    monkeypatch.setenv("FEDSCAN_SITE_KEY", base64.b64encode(key.material).decode())
    assert load_site_key(site).key_id == key.key_id
    _fill(site, 10)
    assert len(_all_records(site, key)) == 10
    with pytest.raises(ConfigError, match="Only file keys"):
        rotate_site_key(site)


def test_key_from_a_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = init_site(tmp_path / "pp-site", "pp-site")
    site.config_file.write_text(
        site.config_file.read_text().replace('source = "file"', 'source = "passphrase"')
    )
    (site.keys_dir / "site.salt").write_bytes(b"0123456789abcdef")
    monkeypatch.delenv("FEDSCAN_SITE_PASSPHRASE", raising=False)
    with pytest.raises(KeyMaterialError, match="FEDSCAN_SITE_PASSPHRASE"):
        load_site_key(site)
    monkeypatch.setenv("FEDSCAN_SITE_PASSPHRASE", "correct horse battery staple")
    first = load_site_key(site)
    assert load_site_key(site).key_id == first.key_id  # deterministic from passphrase + salt
