"""Fixtures shared by the simulation tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from client.policy import SitePolicy
from client.site_init import init_site, load_site_key
from client.store import Record, StoreWriter


@pytest.fixture
def blob_site() -> Callable[..., Path]:
    """Make a real sealed site of ``records`` 16x16 slices (one per patient), a bright square on the
    positive ones; 60% training, 40% test. Call as ``blob_site(root, name, seed, policy, records=50)``."""

    def make(root: Path, name: str, seed: int, policy: SitePolicy, records: int = 50, size: int = 16) -> Path:
        site = init_site(root / name, name, policy=policy)
        rng = np.random.default_rng(seed)
        writer = StoreWriter(
            site.store_dir, load_site_key(site), image_size=size, split_fractions=(0.6, 0.0, 0.4)
        )
        for i in range(records):
            label = int(rng.random() < 0.5)
            pixels = rng.normal(0.4, 0.05, (size, size)).astype(np.float32)
            if label:
                pixels[6:10, 6:10] += 0.5
            writer.add(Record(pixels=np.clip(pixels, 0, 1), label=label, patient=f"p{i}", study=f"s{i}"))
        writer.commit()
        return site.root

    return make
