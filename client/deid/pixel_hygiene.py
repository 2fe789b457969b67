"""Pixel hygiene: a size ceiling checked before anything is decoded, and bits above High Bit zeroed.

**Ceiling.** A header declares how big its pixels are: (0028,0010) *Rows* x (0028,0011) *Columns* x
(0028,0008) *Number of Frames* x (0028,0002) *Samples per Pixel* x (0028,0100) *Bits Allocated* / 8.
An 858-byte RLE file can declare 40000 x 40000 pixels and make a decoder allocate 3.2 GB before it
notices that the data is missing. :func:`pixel_size_reason` compares the declared size with a ceiling
(:attr:`PixelLimits.max_bytes`) and, for encapsulated (compressed) pixel data, the declared size with
the compressed size (:attr:`PixelLimits.max_expansion`, applied above a floor so that small blank
images, which compress extremely well, still pass). It only reads header values and lengths: the check
costs nothing and runs in every worker before any decoder sees the file.

**Bits above High Bit.** In native (uncompressed) pixel data each sample occupies (0028,0100) *Bits
Allocated* bits of which only (0028,0101) *Bits Stored*, ending at (0028,0102) *High Bit*, are the
pixel value (PS3.5 8.1.1). The other bits are invisible to every viewer, and old systems used them for
overlays (PS3.3 C.9.2: (60xx,0102) *Overlay Bit Position* inside the pixel data), i.e. for graphics
and text. :func:`zero_unused_bits` clears them; the stored values (the bits up to High Bit) are
unchanged. In compressed pixel data the codec defines the sample precision; those files are not changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

__all__ = [
    "DEFAULT_MAX_EXPANSION",
    "DEFAULT_MAX_PIXEL_BYTES",
    "PixelLimits",
    "pixel_size_reason",
    "zero_unused_bits",
]

#: Default ceiling on the declared (decoded) size of a file's pixel data: 2 GiB (a 200-frame
#: 3328 x 4096 breast tomosynthesis at 16 bits is 5.5 GB and must be raised to explicitly).
DEFAULT_MAX_PIXEL_BYTES: Final = 2 << 30
#: Default ceiling on declared size / compressed size for encapsulated pixel data.
DEFAULT_MAX_EXPANSION: Final = 1000.0
#: Declared sizes up to this are never refused for their expansion ratio alone.
EXPANSION_FLOOR: Final = 64 << 20

_PIXEL_DATA: Final = 0x7FE00010
_UNDEFINED: Final = 0xFFFFFFFF


@dataclass(frozen=True)
class PixelLimits:
    """Ceilings on a file's pixel data, checked before decoding (see the module docstring).

    Parameters
    ----------
    max_bytes : int
        Largest Rows x Columns x Frames x Samples x Bits Allocated / 8 accepted.
    max_expansion : float
        Largest ratio of declared to compressed size for encapsulated pixel data (above 64 MiB).
    """

    max_bytes: int = DEFAULT_MAX_PIXEL_BYTES
    max_expansion: float = DEFAULT_MAX_EXPANSION

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_expansion < 1:
            raise ValueError(
                "The pixel ceilings must be positive: max_bytes at least 1 byte, max_expansion at least 1, "
                f"not {self.max_bytes} and {self.max_expansion}."
            )


def _integer(ds: Dataset, keyword: str, default: int | None) -> int | None:
    value = ds.get(keyword, default)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def declared_pixel_bytes(ds: Dataset) -> int | None:
    """Rows x Columns x Frames x Samples x Bits Allocated / 8, or ``None`` if a value is unreadable."""
    rows, cols = _integer(ds, "Rows", None), _integer(ds, "Columns", None)
    # an unreadable (0028,0008) (IS '1A' is seen in the wild) counts as one frame: decoders that cannot
    # read it either decode one frame or fail, never more
    frames = _integer(ds, "NumberOfFrames", 1) or 1
    samples = _integer(ds, "SamplesPerPixel", 1)
    bits = _integer(ds, "BitsAllocated", None)
    if rows is None or cols is None or frames is None or samples is None or bits is None:
        return None
    if min(rows, cols, frames, samples, bits) < 0:
        return None
    return (rows * cols * max(frames, 1) * max(samples, 1) * bits + 7) // 8


def _compressed_bytes(ds: Dataset) -> int | None:
    raw = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if isinstance(raw, RawDataElement):
        if isinstance(raw.value, bytes):
            return len(raw.value)
        return None if raw.length == _UNDEFINED else raw.length
    value = raw.value if raw is not None else None
    return len(value) if isinstance(value, bytes) else None


def pixel_size_reason(ds: Dataset, limits: PixelLimits, *, file_size: int | None = None) -> str | None:
    """Why the pixel data of ``ds`` must not be decoded (a sentence), or ``None``.

    ``file_size`` bounds the compressed size when the pixel data was left unread in the file.
    """
    if _PIXEL_DATA not in ds:
        return None
    declared = declared_pixel_bytes(ds)
    if declared is None:
        return "invalid: the pixel description (Rows, Columns, Frames, Samples, Bits Allocated) is unreadable"
    if declared > limits.max_bytes:
        return (
            f"too large: Rows x Columns x Frames x Samples x Bits Allocated declare {declared:,} bytes "
            f"of pixels, above the ceiling of {limits.max_bytes:,}"
        )
    raw = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    encapsulated = raw is not None and getattr(raw, "length", 0) == _UNDEFINED
    if encapsulated or getattr(raw, "is_undefined_length", False):
        compressed = _compressed_bytes(ds)
        if compressed is None:
            compressed = file_size
        if compressed is not None and declared > max(limits.max_expansion * compressed, EXPANSION_FLOOR):
            return (
                f"decompression bomb: {compressed:,} compressed bytes declare {declared:,} bytes of pixels "
                f"(more than {limits.max_expansion:g} times as many)"
            )
    return None


def _stored_mask(ds: Dataset) -> tuple[np.dtype, int] | None:
    """The sample dtype and the mask of the stored bits, if native pixel data has unused bits."""
    bits = _integer(ds, "BitsAllocated", None)
    stored = _integer(ds, "BitsStored", None)
    high = _integer(ds, "HighBit", None)
    if bits not in (8, 16, 32) or stored is None or high is None:
        return None
    assert bits is not None
    if not 0 < stored <= bits or not stored - 1 <= high < bits or stored == bits:
        return None
    mask = ((1 << stored) - 1) << (high - stored + 1)
    return np.dtype(f"u{bits // 8}"), mask


def zero_unused_bits(ds: Dataset, *, little_endian: bool) -> bool:
    """Clear the bits outside Bits Stored/High Bit in native (7FE0,0010) Pixel Data; whether any were set.

    Encapsulated pixel data is left alone. The element is replaced only when a bit had to be cleared.
    """
    if _PIXEL_DATA not in ds:
        return False
    raw = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if raw is None or getattr(raw, "length", 0) == _UNDEFINED or getattr(raw, "is_undefined_length", False):
        return False
    layout = _stored_mask(ds)
    if layout is None:
        return False
    dtype, mask = layout
    data = ds.PixelData  # reads a deferred value from the file
    if not isinstance(data, bytes | bytearray):
        return False
    usable = len(data) - len(data) % dtype.itemsize
    samples = np.frombuffer(
        data, dtype=dtype.newbyteorder("<" if little_endian else ">"), count=usable // dtype.itemsize
    )
    unused = samples.dtype.type(~mask & ((1 << (8 * dtype.itemsize)) - 1))
    if not np.bitwise_and(samples, unused).any():
        return False
    # the result of an operation comes back in native byte order: write it in the file's
    kept = np.bitwise_and(samples, samples.dtype.type(mask)).astype(samples.dtype, copy=False)
    cleared = kept.tobytes() + bytes(data[usable:])
    vr = "OB" if dtype.itemsize == 1 else "OW"
    ds[_PIXEL_DATA] = DataElement(_PIXEL_DATA, vr, cleared)
    return True
