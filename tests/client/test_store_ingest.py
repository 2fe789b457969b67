"""What ingest needs from the store: the SOP index, split inheritance, byte-bounded streamed shards,
stale temporaries, and stores written by format 1 (one .npz per shard) still read and appended to."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from client.site import SiteDir
from client.site_init import init_site
from client.site_keys import load_site_key
from client.store import Record, StoreWriter, iter_records, load_split, read_manifest
from common.crypto import seal_file


@pytest.fixture
def site(tmp_path: Path) -> SiteDir:
    return init_site(tmp_path / "site", "site-a")


def _record(i: int, patient: str, size: int = 8) -> Record:
    pixels = np.full((size, size), i / 1000, dtype=np.float32)
    return Record(pixels, i % 2, patient, f"study-{patient}", {"modality": "CT"}, sop=f"2.25.{i}")


def test_the_sop_index_survives_commits_and_reopening(site: SiteDir) -> None:
    key = load_site_key(site)
    writer = StoreWriter(site.store_dir, key, image_size=8)
    writer.add_all(_record(i, f"p{i % 5}") for i in range(12))
    assert writer.known_sops() == {f"2.25.{i}" for i in range(12)}  # pending records count too
    writer.commit()
    again = StoreWriter(site.store_dir, key, image_size=8)
    assert again.known_sops() == {f"2.25.{i}" for i in range(12)}
    assert {(e.sop, e.frame) for e in read_manifest(site.store_dir, key).records} == {
        (f"2.25.{i}", 0) for i in range(12)
    }


def test_a_known_patient_keeps_its_split_when_the_fractions_change(site: SiteDir) -> None:
    key = load_site_key(site)
    first = StoreWriter(site.store_dir, key, image_size=8, split_fractions=(1.0, 0.0, 0.0))
    first.add_all(_record(i, f"p{i % 4}") for i in range(8))
    first.commit()
    second = StoreWriter(site.store_dir, key, image_size=8, split_fractions=(0.0, 0.0, 1.0))
    second.add_all(_record(i, f"p{i % 4}") for i in range(8, 12))  # the same four patients
    second.add(_record(99, "new patient"))
    entries = second.commit().records
    assert {e.split for e in entries if e.patient != "new patient"} == {"train"}
    assert next(e.split for e in entries if e.patient == "new patient") == "test"


def test_shards_are_bounded_in_bytes_and_read_back(site: SiteDir) -> None:
    key = load_site_key(site)
    writer = StoreWriter(site.store_dir, key, image_size=64, shard_bytes=5 * 64 * 64 * 4)
    writer.add_all(_record(i, f"p{i}", size=64) for i in range(23))
    manifest = writer.commit()
    shards = {e.shard for e in manifest.records}
    assert len(shards) == 5  # 5 + 5 + 5 + 5 + 3 records
    for entry, pixels in iter_records(site.store_dir, key):
        assert pixels.shape == (64, 64) and float(pixels[0, 0]) == pytest.approx(int(entry.sop[5:]) / 1000)


def test_stale_temporaries_are_removed(site: SiteDir) -> None:
    key = load_site_key(site)
    writer = StoreWriter(site.store_dir, key, image_size=8)
    writer.add(_record(1, "p"))
    writer.commit()
    stale = [site.store_dir / ".manifest.fseal.x1.tmp", site.store_dir / "shards" / ".abc.fseal.y2.tmp"]
    for path in stale:
        path.write_bytes(b"ciphertext of a killed write")
    assert StoreWriter(site.store_dir, key, image_size=8).remove_stale_temporaries() == 2
    assert not any(path.exists() for path in stale)


def test_a_format_1_store_is_read_and_appended_to(site: SiteDir) -> None:
    key = load_site_key(site)
    x = np.arange(3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8) / 1000
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=np.array([0, 1, 0]))
    seal_file(key, buffer.getvalue(), site.store_dir / "shards" / "old.fseal", object_id="store/shards/old")
    records = [
        {
            "shard": "old",
            "row": i,
            "label": i % 2,
            "patient": f"p{i}",
            "study": "s",
            "split": "train",
            "meta": {},
        }
        for i in range(3)
    ]
    manifest = {"format_version": 1, "image_size": 8, "records": records}
    seal_file(
        key, json.dumps(manifest).encode(), site.store_dir / "manifest.fseal", object_id="store/manifest"
    )
    np.testing.assert_array_equal(load_split(site.store_dir, key, "train").x, x)
    writer = StoreWriter(site.store_dir, key, image_size=8)
    writer.add(_record(7, "p9"))
    assert writer.commit().count() == 4
    assert len(list(iter_records(site.store_dir, key))) == 4
