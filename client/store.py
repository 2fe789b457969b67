"""The encrypted dataset store: sealed shards of preprocessed records plus a sealed manifest.

Layout under ``SITE_DIR/store``::

    manifest.fseal          sealed JSON: records (shard, row, label, pseudonymous ids, split, metadata)
    shards/<shard>.fseal    sealed bytes of two ``.npy`` arrays back to back: x (n, H, W) float32 and
                            y (n,) int64 (format 1 stores wrote one ``.npz``; both are read)
    .lock                   held (``flock``) by the one writer allowed at a time, see :func:`store_lock`

Every object is sealed with AES-256-GCM under its own data key wrapped by the site key
(:mod:`common.crypto`). An object's id is its path relative to the site directory without ``.fseal``
(``store/manifest``, ``store/shards/<shard>``), so a sealed file moved or renamed fails to open, and
key rotation can find and re-wrap every sealed object of a site without knowing what it holds.

Writes are atomic and the manifest is written last: it is the commit point, so a crash leaves the
previous manifest and only unreferenced shards, which the next writer removes. A long writer may commit
several times (ingest does, every few seconds), so that a killed run keeps what it had committed and a
re-run adds the rest: each record carries the pseudonymous (0008,0018) *SOP Instance UID* of the file
it came from, and :meth:`StoreWriter.known_sops` is the index that makes a re-run skip stored files.
A shard is streamed into its sealed file from the records' own arrays: no copy of the shard is built
in memory first.

Every record of a patient lands in the same split: the split is a keyed hash of the split seed and the
patient's pseudonym (reproducible from the seed for a given site), and a record of a patient the store
already holds inherits that patient's split. The seed is recorded in the manifest; a writer with
another seed is refused, since it would move patients between splits.
Reads decrypt into memory only; nothing plaintext is ever written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

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
    "iter_records",
    "load_split",
    "read_manifest",
    "sample_split",
    "store_lock",
]

FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
MANIFEST_OBJECT_ID = "store/manifest"
SPLITS = ("train", "val", "test")
DEFAULT_SHARD_SIZE = 256
#: A shard is also sealed once its pending records reach this many bytes (large images).
DEFAULT_SHARD_BYTES = 32 << 20
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class Record:
    """One training example as ingest produces it (in memory only).

    ``patient`` and ``study`` are keyed pseudonyms (never original identifiers); ``sop`` is the
    pseudonymous SOP Instance UID of the source file ("" when there is none) and ``frame`` the frame
    it came from, the pair that identifies a record across runs.
    """

    pixels: np.ndarray
    label: int
    patient: str
    study: str
    meta: dict[str, Any] = field(default_factory=dict)
    sop: str = ""
    frame: int = 0


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
    sop: str = ""
    frame: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "row": self.row,
            "label": self.label,
            "patient": self.patient,
            "study": self.study,
            "split": self.split,
            "meta": self.meta,
            "sop": self.sop,
            "frame": self.frame,
        }


@dataclass(frozen=True)
class Manifest:
    """What the store holds; itself sealed, because labels and pseudonymous ids are site data."""

    records: tuple[RecordEntry, ...]
    image_size: int
    format_version: int = FORMAT_VERSION
    split_seed: int | None = None

    def count(self, split: str | None = None) -> int:
        return sum(1 for r in self.records if split is None or r.split == split)

    def to_json(self) -> bytes:
        body = {
            "format_version": self.format_version,
            "image_size": self.image_size,
            "split_seed": self.split_seed,
            "records": [r.to_dict() for r in self.records],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        body = json.loads(data)
        if body.get("format_version") not in _READABLE_VERSIONS:
            raise StoreError(
                f"Store manifest has format {body.get('format_version')}, expected one of "
                f"{', '.join(map(str, _READABLE_VERSIONS))}."
            )
        seed = body.get("split_seed")
        return cls(
            records=tuple(RecordEntry(**r) for r in body["records"]),
            image_size=int(body["image_size"]),
            split_seed=None if seed is None else int(seed),
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


class _ShardSource(io.RawIOBase):
    """The bytes of one shard, read straight from the records' arrays (no copy of the shard is made).

    Layout: the ``.npy`` encoding of x (n, H, W) float32 followed by that of y (n,) int64, which
    :func:`numpy.lib.format.read_array` reads back one after the other. Sealing pulls from this
    stream chunk by chunk, so memory holds the pending records and the cipher's two chunk buffers.
    """

    def __init__(self, images: Sequence[np.ndarray], labels: np.ndarray) -> None:
        super().__init__()
        height, width = images[0].shape
        pieces: list[memoryview] = [_npy_header(np.dtype(np.float32), (len(images), height, width))]
        pieces.extend(_bytes_of(image) for image in images)
        pieces.append(_npy_header(labels.dtype, labels.shape))
        pieces.append(_bytes_of(labels))
        self._pieces = [p for p in pieces if len(p)]
        self._index = 0
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        out = memoryview(buffer).cast("B")
        written = 0
        while written < len(out) and self._index < len(self._pieces):
            piece = self._pieces[self._index]
            take = min(len(out) - written, len(piece) - self._offset)
            out[written : written + take] = piece[self._offset : self._offset + take]
            written += take
            self._offset += take
            if self._offset == len(piece):
                self._index += 1
                self._offset = 0
        return written


def _bytes_of(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without a copy."""
    return memoryview(cast(Any, array)).cast("B")


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> memoryview:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    return memoryview(header.getvalue())


@contextlib.contextmanager
def store_lock(store_dir: Path) -> Iterator[None]:
    """Hold the store's writer lock (``store/.lock``, ``flock``) for the duration of the block.

    One writer at a time: two concurrent ingests would each publish a manifest without the other's
    records. The lock dies with its process, so a killed ingest never leaves the store locked.

    Raises
    ------
    StoreError
        If another process holds the lock.
    """
    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(store_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"Store {store_dir} is being written by another process (an ingest is running); "
                "wait for it to finish."
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


class StoreWriter:
    """Accumulates records, seals them in shards, and commits a new manifest atomically.

    Existing records are kept: a writer opened on a non-empty store appends. ``commit`` is the only
    step that makes new shards visible; it may be called any number of times.
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
        shard_bytes: int = DEFAULT_SHARD_BYTES,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.key = key
        self.image_size = image_size
        self.split_seed = split_seed
        self.split_fractions = tuple(split_fractions)
        self.shard_size = shard_size
        self.shard_bytes = shard_bytes
        existing = read_manifest(self.store_dir, key) if _manifest_path(self.store_dir).exists() else None
        if existing is not None and existing.image_size != image_size:
            raise StoreError(
                f"Store {self.store_dir} holds {existing.image_size}px images; "
                f"cannot add {image_size}px ones."
            )
        if existing is not None and existing.split_seed not in (None, split_seed) and existing.records:
            raise StoreError(
                f"Store {self.store_dir} was split with seed {existing.split_seed}, not {split_seed}: "
                "a new seed would move patients between train, validation and test. Keep the seed, or "
                "ingest into a new store."
            )
        self._entries: list[RecordEntry] = list(existing.records) if existing else []
        self._patient_split = {e.patient: e.split for e in self._entries}
        self._sops = {e.sop for e in self._entries if e.sop}
        self._pending: list[Record] = []
        self._pending_bytes = 0

    @property
    def committed(self) -> int:
        """Records in the store, including those added through this writer and already sealed."""
        return len(self._entries)

    def known_sops(self) -> frozenset[str]:
        """Pseudonymous SOP Instance UIDs of every record held or added so far (the re-run index)."""
        return frozenset(self._sops)

    def add(self, record: Record) -> None:
        self.add_all([record])

    def add_all(self, records: Iterable[Record]) -> None:
        """Add records; those of one call join the store together (one file's frames: all or none)."""
        checked = []
        for record in records:
            if record.pixels.shape != (self.image_size, self.image_size):
                raise StoreError(
                    f"Record pixels have shape {record.pixels.shape}, expected {self.image_size}px square."
                )
            pixels = np.ascontiguousarray(record.pixels, dtype=np.float32)
            checked.append(record if pixels is record.pixels else dataclasses.replace(record, pixels=pixels))
        self._pending.extend(checked)
        self._pending_bytes += sum(r.pixels.nbytes for r in checked)
        self._sops.update(r.sop for r in checked if r.sop)
        while len(self._pending) >= self.shard_size or self._pending_bytes >= self.shard_bytes:
            self._flush()

    def _split_of(self, patient: str) -> str:
        split = self._patient_split.get(patient)
        if split is None:
            split = _assign_split(patient, self.split_seed, self.split_fractions)
            self._patient_split[patient] = split
        return split

    def _flush(self) -> None:
        """Seal one shard of the oldest pending records (at most ``shard_size`` and ``shard_bytes``)."""
        if not self._pending:
            return
        count, size = 0, 0
        for record in self._pending[: self.shard_size]:
            if count and size + record.pixels.nbytes > self.shard_bytes:
                break
            count, size = count + 1, size + record.pixels.nbytes
        batch = self._pending[:count]
        shard = secrets.token_hex(8)
        entries = [
            RecordEntry(
                shard,
                row,
                int(r.label),
                r.patient,
                r.study,
                self._split_of(r.patient),
                dict(r.meta),
                r.sop,
                int(r.frame),
            )
            for row, r in enumerate(batch)
        ]
        labels = np.array([r.label for r in batch], dtype=np.int64)
        source = _ShardSource([r.pixels for r in batch], labels)
        seal_file(
            self.key,
            cast(BinaryIO, source),
            _shard_path(self.store_dir, shard),
            object_id=_shard_object_id(shard),
        )
        # Only now, with the shard whole on disk: an interrupt above leaves the records pending.
        self._entries.extend(entries)
        del self._pending[:count]
        self._pending_bytes -= size

    def commit(self) -> Manifest:
        """Seal the remaining records and publish the new manifest (the commit point)."""
        while self._pending:
            self._flush()
        manifest = Manifest(
            records=tuple(self._entries), image_size=self.image_size, split_seed=self.split_seed
        )
        seal_file(self.key, manifest.to_json(), _manifest_path(self.store_dir), object_id=MANIFEST_OBJECT_ID)
        self._remove_unreferenced_shards(manifest)
        return manifest

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files that a killed writer left behind; returns how many.

        They hold ciphertext only (a sealed object is written encrypted from its first byte), but are
        garbage. Call this only while holding :func:`store_lock`, when no other writer can be busy.
        """
        removed = 0
        for directory in (self.store_dir, self.store_dir / "shards"):
            for path in directory.glob(".*.tmp"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

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


def _shard_images(data: bytes) -> np.ndarray:
    """The x array of a decrypted shard, in either shard format."""
    if data[: len(_NPY_MAGIC)] == _NPY_MAGIC:
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:  # format 1: one .npz
        return arrays["x"]


def _iter_shards(
    store_dir: Path, keys: SiteKey | Keyring, shards: Iterable[str]
) -> Iterator[tuple[str, np.ndarray]]:
    for shard in shards:
        blob = _shard_path(store_dir, shard).read_bytes()
        data = open_bytes(keys, blob, object_id=_shard_object_id(shard))
        yield shard, _shard_images(data)


def iter_records(store_dir: Path, keys: SiteKey | Keyring) -> Iterator[tuple[RecordEntry, np.ndarray]]:
    """Every record with its pixels, one shard decrypted at a time (quality checks, tests)."""
    manifest = read_manifest(Path(store_dir), keys)
    rows_by_shard: dict[str, list[RecordEntry]] = {}
    for entry in manifest.records:
        rows_by_shard.setdefault(entry.shard, []).append(entry)
    for shard, x in _iter_shards(Path(store_dir), keys, rows_by_shard):
        for entry in rows_by_shard[shard]:
            yield entry, x[entry.row]


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
    patients: dict[str, int] = {}  # pseudonym -> patient number (the pseudonyms stay in the manifest)
    groups: list[int] = []
    try:
        for shard, x in _iter_shards(store_dir, keys, rows_by_shard):
            entries = rows_by_shard[shard]
            xs.append(x[[e.row for e in entries]])
            ys.extend(e.label for e in entries)
            groups.extend(patients.setdefault(e.patient, len(patients)) for e in entries)
    except FileNotFoundError as missing:
        raise StoreError(
            f"Store {store_dir} is inconsistent: {Path(missing.filename).name} is missing."
        ) from None
    size = manifest.image_size
    x_all = np.concatenate(xs) if xs else np.zeros((0, size, size), dtype=np.float32)
    return LabelledArrays(
        x=x_all, y=np.asarray(ys, dtype=np.int64), groups=np.asarray(groups, dtype=np.int64)
    )
