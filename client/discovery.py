"""Which files of a PACS export are candidate images: the walk, and the SOP classes that are not images.

A PACS export is a folder tree of files with any names, often none at all (``IM000123``, ``1.2.840...``,
``00000001``), sometimes a ``DICOMDIR`` index, and besides the images the other objects of a study:
structured reports, presentation states, RT plans and structure sets, raw data, waveforms, encapsulated
PDFs. Discovery takes every regular file (:func:`discover_files`, recursive, sorted, names ignored);
which of them are images is decided from each header by (0008,0016) *SOP Class UID*
(:func:`non_image_reason`), against the table :data:`NON_IMAGE_SOP_CLASSES` (PS3.4 Annex B, Storage
Service Class; PS3.6 Annex A names every UID). The table lists what is *not* an image, so a new image
class that a future scanner writes is still ingested, and a new non-image class still fails safely
later (no (7FE0,0010) *Pixel Data*, or pixels that do not decode).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from client.deid.folder import discover

__all__ = ["DICOMDIR_SOP_CLASS", "NON_IMAGE_SOP_CLASSES", "discover_files", "non_image_reason"]

#: (0002,0002) of a DICOMDIR: Media Storage Directory Storage (PS3.10 8.6).
DICOMDIR_SOP_CLASS: Final = "1.2.840.10008.1.3.10"

_STORAGE: Final = "1.2.840.10008.5.1.4.1.1."

#: SOP Class UIDs (exact) or UID roots (ending in ".") of objects that are not images for a model:
#: UID -> what it is, as the report names it. Exact entries win over roots; images inside a root
#: (RT Image Storage under the RT root) are listed in :data:`_IMAGES_UNDER_A_ROOT`.
NON_IMAGE_SOP_CLASSES: Mapping[str, str] = MappingProxyType(
    {
        DICOMDIR_SOP_CLASS: "a DICOMDIR (media directory index)",
        _STORAGE + "88.": "a structured report (SR) or key object selection",
        _STORAGE + "11.": "a presentation state",
        _STORAGE + "481.": "a radiotherapy object (plan, structure set, dose grid or treatment record)",
        "1.2.840.10008.5.1.4.34.": "a radiotherapy object (second-generation RT)",
        _STORAGE + "66": "raw data",
        _STORAGE + "66.1": "a spatial registration",
        _STORAGE + "66.2": "a set of spatial fiducials",
        _STORAGE + "66.3": "a deformable spatial registration",
        _STORAGE + "66.4": "a segmentation (a derived label map)",
        _STORAGE + "66.5": "a surface segmentation",
        _STORAGE + "66.6": "tractography results",
        _STORAGE + "66.7": "a label map segmentation",
        _STORAGE + "66.8": "a height map segmentation",
        _STORAGE + "67": "a real world value mapping",
        _STORAGE + "68.": "a surface scan (mesh or point cloud)",
        _STORAGE + "9.": "a waveform (ECG, audio, hemodynamic, ...)",
        _STORAGE + "104.": "an encapsulated document (PDF, CDA, STL, ...)",
        _STORAGE + "4.2": "MR spectroscopy",
        _STORAGE + "78.": "ophthalmic measurements",
        _STORAGE + "79.1": "a macular grid thickness and volume report",
        _STORAGE + "80.1": "an ophthalmic visual field analysis",
        _STORAGE + "81.1": "an ophthalmic thickness map report",
        _STORAGE + "82.1": "a corneal topography map",
        _STORAGE + "90.1": "content assessment results",
        _STORAGE + "91.1": "microscopy bulk simple annotations",
        _STORAGE + "200.": "a protocol (defined or performed procedure protocol)",
        "1.2.840.10008.5.1.4.38.": "a hanging protocol",
        "1.2.840.10008.5.1.4.39.": "a color palette",
        "1.2.840.10008.5.1.4.43.": "an implant template",
        "1.2.840.10008.5.1.4.44.": "an implant assembly template",
        "1.2.840.10008.5.1.4.45.": "an implant template group",
    }
)

#: Image storage classes that sit under a root of :data:`NON_IMAGE_SOP_CLASSES`.
_IMAGES_UNDER_A_ROOT: Final = frozenset({_STORAGE + "481.1"})  # RT Image Storage (portal images)

#: The roots, longest first, so that the most specific one names the object.
_ROOTS: Final = tuple(
    sorted((uid for uid in NON_IMAGE_SOP_CLASSES if uid.endswith(".")), key=len, reverse=True)
)


def non_image_reason(sop_class: str) -> str | None:
    """Why an object of this (0008,0016) *SOP Class UID* is not an image, or None if it may be one.

    The sentence starts with ``not an image:`` (the report's category) and names the class by its
    PS3.6 name when pydicom knows it, never anything taken from the file but the UID.
    """
    uid = sop_class.strip().rstrip("\x00")
    if not uid or uid in _IMAGES_UNDER_A_ROOT:
        return None
    what = NON_IMAGE_SOP_CLASSES.get(uid)
    if what is None:
        what = next((NON_IMAGE_SOP_CLASSES[root] for root in _ROOTS if uid.startswith(root)), None)
    if what is None:
        return None
    from pydicom.uid import UID

    name = UID(uid).name
    named = f"{name} ({uid})" if name != uid else uid
    return f"not an image: {named} is {what}"


def discover_files(input_dir: Path) -> list[str]:
    """Every regular file below ``input_dir``, relative, ``/``-separated, sorted (names are ignored).

    Symbolic links to directories are not followed (a loop would never end). DICOMDIR files are
    included here and rejected by name or SOP class when read, so that the report counts them.
    """
    return discover(Path(input_dir))
