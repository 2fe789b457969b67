"""The encrypted dataset store: round trips, patient-level splits, the index, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from client.site import SiteDir
from client.site_init import init_site
from client.site_keys import load_site_key
from client.store import Record, StoreWriter, load_split, read_manifest, sample_split
from common.errors import IntegrityError, StoreError


def _records(n: int, size: int = 8, seed: int = 0, patients: int = 10) -> list[Record]:
    rng = np.random.default_rng(seed)
    return [
        Record(
            pixels=rng.random((size, size), dtype=np.float32),
            label=int(i % 2),
            patient=f"patient-{seed}-{i % patients}",
            study=f"study-{i % patients}",
            meta={"modality": "CT"},
        )
        for i in range(n)
    ]


@pytest.fixture
def site(tmp_path: Path) -> SiteDir:
    return init_site(tmp_path / "site", "site-a")


def test_round_trip_and_patient_level_split(site: SiteDir) -> None:
    records = _records(120)
    writer = StoreWriter(site.store_dir, load_site_key(site), image_size=8, shard_size=32)
    writer.add_all(records)
    manifest = writer.commit()
    assert manifest.count() == 120
    splits_of_patient: dict[str, set[str]] = {}
    for entry in manifest.records:
        splits_of_patient.setdefault(entry.patient, set()).add(entry.split)
    assert all(len(s) == 1 for s in splits_of_patient.values())
    by_pixels = {r.pixels.tobytes(): r.label for r in records}
    total = 0
    for split in ("train", "val", "test"):
        data = load_split(site.store_dir, load_site_key(site), split)
        total += len(data)
        for image, label in zip(data.x, data.y, strict=True):
            assert by_pixels[image.tobytes()] == label
    assert total == 120


def test_split_is_reproducible_from_the_seed(tmp_path: Path) -> None:
    assignments = []
    for name in ("a", "b"):
        site = init_site(tmp_path / name, name)
        writer = StoreWriter(site.store_dir, load_site_key(site), image_size=8, split_seed=11)
        writer.add_all(_records(60))
        assignments.append([(e.patient, e.split) for e in writer.commit().records])
    assert assignments[0] == assignments[1]


def test_split_follows_the_fractions_over_many_patients(site: SiteDir) -> None:
    # Fixed pseudonyms, so the keyed hash is fixed too: 400 patients, one record each.
    writer = StoreWriter(site.store_dir, load_site_key(site), image_size=8, split_fractions=(0.7, 0.1, 0.2))
    writer.add_all(_records(400, patients=400))
    manifest = writer.commit()
    shares = {split: manifest.count(split) / 400 for split in ("train", "val", "test")}
    assert abs(shares["train"] - 0.7) < 0.07
    assert abs(shares["val"] - 0.1) < 0.05
    assert abs(shares["test"] - 0.2) < 0.06


def test_reopening_appends(site: SiteDir) -> None:
    for seed in (0, 1):
        writer = StoreWriter(site.store_dir, load_site_key(site), image_size=8)
        writer.add_all(_records(30, seed=seed))
        writer.commit()
    assert read_manifest(site.store_dir, load_site_key(site)).count() == 60


def test_the_index_decrypts_only_the_shards_it_needs(site: SiteDir) -> None:
    key = load_site_key(site)
    train_writer = StoreWriter(
        site.store_dir, key, image_size=8, split_fractions=(1.0, 0.0, 0.0), shard_size=10
    )
    train_writer.add_all(_records(30, seed=1))
    train_writer.commit()
    test_writer = StoreWriter(
        site.store_dir, key, image_size=8, split_fractions=(0.0, 0.0, 1.0), shard_size=10
    )
    test_writer.add_all(_records(20, seed=2))
    manifest = test_writer.commit()
    test_shards = {e.shard for e in manifest.records if e.split == "test"}
    assert test_shards.isdisjoint(e.shard for e in manifest.records if e.split == "train")
    # Corrupt a shard holding only test records: reading train must not touch it, reading test must.
    path = site.store_dir / "shards" / f"{sorted(test_shards)[0]}.fseal"
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01
    path.write_bytes(bytes(blob))
    assert len(load_split(site.store_dir, key, "train")) == 30
    with pytest.raises(IntegrityError):
        load_split(site.store_dir, key, "test")


def test_sample_reads_a_reproducible_random_subset(site: SiteDir) -> None:
    writer = StoreWriter(site.store_dir, load_site_key(site), image_size=8)
    writer.add_all(_records(80, patients=80))
    writer.commit()
    a = sample_split(site.store_dir, load_site_key(site), "train", 10, seed=3)
    b = sample_split(site.store_dir, load_site_key(site), "train", 10, seed=3)
    c = sample_split(site.store_dir, load_site_key(site), "train", 10, seed=4)
    assert len(a) == 10 and np.array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


def test_image_size_mismatch_is_refused(site: SiteDir) -> None:
    writer = StoreWriter(site.store_dir, load_site_key(site), image_size=8)
    writer.add_all(_records(5))
    writer.commit()
    with pytest.raises(StoreError, match="8px"):
        StoreWriter(site.store_dir, load_site_key(site), image_size=16)


def test_killed_writer_leaves_the_previous_store_intact(site: SiteDir) -> None:
    first = StoreWriter(site.store_dir, load_site_key(site), image_size=64)
    first.add_all(_records(20, size=64))
    first.commit()
    before = read_manifest(site.store_dir, load_site_key(site))
    script = textwrap.dedent(
        f"""
        import numpy as np, sys
        from pathlib import Path
        from client.site import SiteDir
        from client.site_keys import load_site_key
        from client.store import Record, StoreWriter
        site = SiteDir(Path({str(site.root)!r}))
        writer = StoreWriter(site.store_dir, load_site_key(site), image_size=64, shard_size=50)
        rng = np.random.default_rng(1)
        print("writing", flush=True)
        for i in range(1_000_000):
            writer.add(Record(rng.random((64, 64), dtype=np.float32), i % 2, f"p{{i}}", "s"))
            if i % 5000 == 4999:
                writer.commit()
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "writing"
    time.sleep(2.5)  # well inside the stream of shard writes and commits
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    after = read_manifest(site.store_dir, load_site_key(site))  # opens: no half-written manifest
    assert after.count() >= before.count()
    assert {e.shard for e in before.records} <= {e.shard for e in after.records}
    for split in ("train", "val", "test"):
        load_split(site.store_dir, load_site_key(site), split)  # every referenced shard is whole
    # The next writer cleans up shards the killed one sealed but never committed.
    StoreWriter(site.store_dir, load_site_key(site), image_size=64).commit()
    referenced = {e.shard for e in read_manifest(site.store_dir, load_site_key(site)).records}
    assert {p.stem for p in (site.store_dir / "shards").glob("*.fseal")} == referenced
