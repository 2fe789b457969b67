"""The encrypted dataset store: sealed shards of preprocessed records plus a sealed manifest.

Layout under ``SITE_DIR/store``::

    manifest.fseal          sealed JSON: records (shard, row, label, pseudonymous ids, split, metadata)
    shards/<shard>.fseal    sealed ``.npz`` bytes: x (n, H, W) float32 and y (n,) int64

Every object is sealed with AES-256-GCM under its own data key wrapped by the site key
(:mod:`common.crypto`). An object's id is its path relative to the site directory without ``.fseal``
(``store/manifest``, ``store/shards/<shard>``), so a sealed file moved or renamed fails to open, and
key rotation can find and re-wrap every sealed object of a site without knowing what it holds.

Writes are atomic and the manifest is written last: it is the commit point, so a crash leaves the
previous manifest and only unreferenced shards, which the next writer removes.
Reads decrypt into memory only; nothing plaintext is ever written.
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.crypto import Keyring, SiteKey, open_bytes, open_file, seal_file
from common.errors import StoreError
from common.models.base import LabelledArrays

__all__ = [
    "MANIFEST_OBJECT_ID",
    "SPLITS",
    "Manifest",
    "Record",
    "RecordEntry",
    "StoreWriter",
    "load_split",
    "read_manifest",
    "sample_split",
]

FORMAT_VERSION = 1
MANIFEST_OBJECT_ID = "store/manifest"
SPLITS = ("train", "val", "test")
DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True)
class Record:
    """One training example as ingest produces it (in memory only)."""

    pixels: np.ndarray
    label: int
    patient: str
    study: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordEntry:
    """The manifest's line for one record: where it is, its label, split and non-identifying metadata."""

    shard: str
    row: int
    label: int
    patient: str
    study: str
    split: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    """What the store holds; itself sealed, because labels and pseudonymous ids are site data."""

    records: tuple[RecordEntry, ...]
    image_size: int
    format_version: int = FORMAT_VERSION

    def count(self, split: str | None = None) -> int:
        return sum(1 for r in self.records if split is None or r.split == split)

    def to_json(self) -> bytes:
        body = {
            "format_version": self.format_version,
            "image_size": self.image_size,
            "records": [asdict(r) for r in self.records],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        body = json.loads(data)
        if body.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"Store manifest has format {body.get('format_version')}, expected {FORMAT_VERSION}."
            )
        return cls(
            records=tuple(RecordEntry(**r) for r in body["records"]),
            image_size=int(body["image_size"]),
        )


def _manifest_path(store_dir: Path) -> Path:
    return store_dir / "manifest.fseal"


def _shard_path(store_dir: Path, shard: str) -> Path:
    return store_dir / "shards" / f"{shard}.fseal"


def _shard_object_id(shard: str) -> str:
    return f"store/shards/{shard}"


def _assign_split(patient: str, seed: int, fractions: Sequence[float]) -> str:
    """Patient-level split: every record of one patient lands in the same split, reproducibly."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        cumulative += fraction
        if u < cumulative:
            return name
    return SPLITS[-1]


class StoreWriter:
    """Accumulates records, seals them in shards, and commits a new manifest atomically.

    Existing records are kept: a writer opened on a non-empty store appends. ``commit`` is the only
    step that makes new shards visible.
    """

    def __init__(
        self,
        store_dir: Path,
        key: SiteKey,
        *,
        image_size: int,
        split_seed: int = 0,
        split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
        shard_size: int = DEFAULT_SHARD_SIZE,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.key = key
        self.image_size = image_size
        self.split_seed = split_seed
        self.split_fractions = tuple(split_fractions)
        self.shard_size = shard_size
        existing = read_manifest(self.store_dir, key) if _manifest_path(self.store_dir).exists() else None
        if existing is not None and existing.image_size != image_size:
            raise StoreError(
                f"Store {self.store_dir} holds {existing.image_size}px images; "
                f"cannot add {image_size}px ones."
            )
        self._entries: list[RecordEntry] = list(existing.records) if existing else []
        self._pending: list[Record] = []

    def add(self, record: Record) -> None:
        if record.pixels.shape != (self.image_size, self.image_size):
            raise StoreError(
                f"Record pixels have shape {record.pixels.shape}, expected {self.image_size}px square."
            )
        self._pending.append(record)
        if len(self._pending) >= self.shard_size:
            self._flush()

    def add_all(self, records: Iterable[Record]) -> None:
        for record in records:
            self.add(record)

    def _flush(self) -> None:
        if not self._pending:
            return
        shard = secrets.token_hex(8)
        x = np.stack([r.pixels.astype(np.float32) for r in self._pending])
        y = np.array([r.label for r in self._pending], dtype=np.int64)
        buffer = io.BytesIO()
        np.savez(buffer, x=x, y=y)
        seal_file(
            self.key, buffer.getvalue(), _shard_path(self.store_dir, shard), object_id=_shard_object_id(shard)
        )
        for row, r in enumerate(self._pending):
            split = _assign_split(r.patient, self.split_seed, self.split_fractions)
            self._entries.append(
                RecordEntry(shard, row, int(r.label), r.patient, r.study, split, dict(r.meta))
            )
        self._pending.clear()

    def commit(self) -> Manifest:
        """Seal the remaining records and publish the new manifest (the commit point)."""
        self._flush()
        manifest = Manifest(records=tuple(self._entries), image_size=self.image_size)
        seal_file(self.key, manifest.to_json(), _manifest_path(self.store_dir), object_id=MANIFEST_OBJECT_ID)
        self._remove_unreferenced_shards(manifest)
        return manifest

    def _remove_unreferenced_shards(self, manifest: Manifest) -> None:
        referenced = {r.shard for r in manifest.records}
        for path in (self.store_dir / "shards").glob("*.fseal"):
            if path.stem not in referenced:
                path.unlink()


def read_manifest(store_dir: Path, keys: SiteKey | Keyring) -> Manifest:
    """Open the sealed manifest; StoreError if the store was never written."""
    path = _manifest_path(Path(store_dir))
    if not path.exists():
        raise StoreError(f"No dataset store at {store_dir}: run `fedscan site ingest` first.")
    return Manifest.from_json(open_file(keys, path, object_id=MANIFEST_OBJECT_ID))


def _iter_shards(
    store_dir: Path, keys: SiteKey | Keyring, shards: Iterable[str]
) -> Iterator[tuple[str, np.ndarray]]:
    for shard in shards:
        blob = _shard_path(store_dir, shard).read_bytes()
        data = open_bytes(keys, blob, object_id=_shard_object_id(shard))
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            yield shard, arrays["x"]


def load_split(store_dir: Path, keys: SiteKey | Keyring, split: str) -> LabelledArrays:
    """Decrypt one split into memory, reading only the shards that hold its records."""
    if split not in SPLITS:
        raise StoreError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    manifest = read_manifest(Path(store_dir), keys)
    return _load_entries(Path(store_dir), keys, manifest, [r for r in manifest.records if r.split == split])


def sample_split(
    store_dir: Path, keys: SiteKey | Keyring, split: str, n: int, *, seed: int
) -> LabelledArrays:
    """A random subset of one split, decrypting only the shards that hold the chosen records.

    The manifest is the index: it says which shard and row hold each record, so a subset costs the
    shards it touches, not the whole store.
    """
    if split not in SPLITS:
        raise StoreError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    manifest = read_manifest(Path(store_dir), keys)
    pool = [r for r in manifest.records if r.split == split]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False).tolist())
    return _load_entries(Path(store_dir), keys, manifest, [pool[i] for i in chosen])


def _load_entries(
    store_dir: Path, keys: SiteKey | Keyring, manifest: Manifest, wanted: list[RecordEntry]
) -> LabelledArrays:
    rows_by_shard: dict[str, list[RecordEntry]] = {}
    for entry in wanted:
        rows_by_shard.setdefault(entry.shard, []).append(entry)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    try:
        for shard, x in _iter_shards(store_dir, keys, rows_by_shard):
            entries = rows_by_shard[shard]
            xs.append(x[[e.row for e in entries]])
            ys.extend(e.label for e in entries)
    except FileNotFoundError as missing:
        raise StoreError(
            f"Store {store_dir} is inconsistent: {Path(missing.filename).name} is missing."
        ) from None
    size = manifest.image_size
    x_all = np.concatenate(xs) if xs else np.zeros((0, size, size), dtype=np.float32)
    return LabelledArrays(x=x_all, y=np.asarray(ys, dtype=np.int64))
