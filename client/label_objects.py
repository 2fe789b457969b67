"""Label-bearing objects kept by ingest: de-identified SEG and RTSTRUCT files, sealed in the store.

Ingest trains on images, but the segmentations ((0008,0016) Segmentation Storage) and RT structure sets
(RT Structure Set Storage) of an export hold the masks and contours that segmentation training needs.
They are de-identified by the same engine and keyed UID map as the images (so their references to
(0008,1155) *Referenced SOP Instance UID* and (0020,000E) *Series Instance UID* still name the stored
images), encoded as DICOM and sealed, one object per file::

    store/label_objects/<pseudonymous SOP Instance UID>.fseal     object id store/label_objects/<uid>

The file name is the keyed UID, never an input name; like every sealed object of a site it is found and
re-wrapped by key rotation (:mod:`client.site_keys`) and opened only in memory
(:func:`iter_label_objects`). Reading them into masks is the segmentation pipeline's business.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from common.crypto import Keyring, SiteKey, open_file, seal_file
from common.errors import StoreError

__all__ = [
    "LABEL_OBJECT_CLASSES",
    "iter_label_objects",
    "kept_label_objects",
    "label_object_path",
    "seal_label_object",
]

#: SOP Class UIDs of the objects kept, and what they are.
LABEL_OBJECT_CLASSES: Final = {
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
}
_FOLDER: Final = "label_objects"
_UID: Final = re.compile(r"2\.25\.[1-9][0-9]{0,38}")


def label_object_path(store_dir: Path, sop: str) -> Path:
    """Where the object with pseudonymous SOP Instance UID ``sop`` is sealed."""
    if not _UID.fullmatch(sop):
        raise StoreError(f"A kept label object is named by its keyed 2.25 UID, not {sop!r}.")
    return Path(store_dir) / _FOLDER / f"{sop}.fseal"


def _object_id(sop: str) -> str:
    return f"store/{_FOLDER}/{sop}"


def kept_label_objects(store_dir: Path) -> frozenset[str]:
    """Pseudonymous SOP Instance UIDs of the label objects in the store (from file names; no key needed)."""
    folder = Path(store_dir) / _FOLDER
    if not folder.is_dir():
        return frozenset()
    return frozenset(p.name[: -len(".fseal")] for p in folder.glob("*.fseal") if _UID.fullmatch(p.stem))


def seal_label_object(store_dir: Path, key: SiteKey, sop: str, data: bytes) -> Path:
    """Seal one de-identified object (its DICOM file bytes) into the store; returns the path."""
    path = label_object_path(store_dir, sop)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    seal_file(key, data, path, object_id=_object_id(sop))
    return path


def iter_label_objects(store_dir: Path, keys: SiteKey | Keyring) -> Iterator[tuple[str, bytes]]:
    """Each kept object as (pseudonymous SOP Instance UID, DICOM file bytes), decrypted in memory."""
    for sop in sorted(kept_label_objects(store_dir)):
        yield sop, open_file(keys, label_object_path(store_dir, sop), object_id=_object_id(sop))
