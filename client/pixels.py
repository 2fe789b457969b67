"""DICOM pixels to model input: decode once, then pure ``ndarray -> ndarray`` steps.

The pipeline that :func:`prepare_frames` runs for every kept frame, in order:

1. **decode** the (7FE0,0010) *Pixel Data* with pydicom's decoder for the (0002,0010) *Transfer Syntax UID*
   (native, deflated, RLE, JPEG, JPEG-LS, JPEG 2000 and HTJ2K through the pylibjpeg plugins);
2. **grayscale**: RGB, YBR and PALETTE COLOR images become one luma channel (:func:`to_grayscale`);
3. **modality LUT** for monochrome images: stored values to modality units, e.g. Hounsfield units for CT
   (:func:`to_modality_units`, PS3.3 C.11.1);
4. **multi-frame rule** (:data:`MULTIFRAME_RULES`): keep the middle frame, every frame, or project them;
5. **VOI to [0, 1]**: monochrome CT is windowed with a preset from :data:`WINDOW_PRESETS` or with the
   file's own VOI LUT (:func:`apply_window`, :func:`apply_file_voi`, PS3.3 C.11.2); everything else
   (MR, CR, DX, US, NM, ...) is normalised between two percentiles (:func:`normalize_percentiles`);
6. **MONOCHROME1** images are inverted so that bright always means dense (:func:`invert_monochrome1`);
7. optional **denoising** and **CLAHE** at the native resolution (:func:`denoise`, :func:`apply_clahe`);
8. **resize** to ``size x size`` with ``cv2.INTER_AREA``, aspect ratio kept (:func:`resize_area`).

Every output is a C-contiguous ``float32`` array in [0, 1]. Reading the file is the caller's business (I/O
at the edge); nothing here touches the disk, and nothing here modifies the dataset it is given.

YCbCr handling: by default pydicom converts (0028,0004) *Photometric Interpretation* ``YBR_FULL`` and
``YBR_FULL_422`` pixel data to RGB while decoding. This module asks it not to (``as_rgb=False``) and takes
the Y sample, which PS3.3 C.7.6.3.1.2 defines as the ITU-R BT.601 luma of the colour: the same gray level
as converting to RGB and back to luma, without the float64 colour transform (60% of the time spent on a
JPEG cine loop) and without the clipping of out-of-gamut RGB values. The JPEG 2000 decoders undo the
``YBR_ICT`` / ``YBR_RCT`` component transforms themselves and return RGB. Either way the photometric
interpretation acted on is the one pydicom's decoder reports for the *decoded* array, never the header's,
so a colour transform is never applied twice or skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from common.errors import ConfigError, InputError

__all__ = [
    "FILE_VOI",
    "MULTIFRAME_RULES",
    "VOI_LUT_FUNCTIONS",
    "WINDOW_PRESETS",
    "PixelSettings",
    "apply_clahe",
    "apply_file_voi",
    "apply_window",
    "denoise",
    "invert_monochrome1",
    "normalize_percentiles",
    "prepare_frames",
    "resize_area",
    "to_grayscale",
    "to_modality_units",
]

# ---- tables ----------------------------------------------------------------------------------------

#: CT window presets in Hounsfield units, name -> ((0028,1050) *Window Center*, (0028,1051) *Window
#: Width*). These are the conventional reading windows of radiology practice; a site picks one by name in
#: site.toml (``ct_window``), or ``"dicom"`` for the window stored in each file.
WINDOW_PRESETS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "soft-tissue": (40.0, 400.0),
        "mediastinum": (50.0, 350.0),
        "liver": (60.0, 160.0),
        "lung": (-600.0, 1500.0),
        "brain": (40.0, 80.0),
        "subdural": (75.0, 215.0),
        "stroke": (40.0, 40.0),
        "bone": (400.0, 1800.0),
    }
)

#: ``ct_window`` value meaning "use the file's own VOI LUT or window" instead of a preset.
FILE_VOI = "dicom"

#: The multi-frame rules a site can choose (``multiframe`` in site.toml), name -> what is kept.
MULTIFRAME_RULES: Mapping[str, str] = MappingProxyType(
    {
        "middle": "the frame at 0-based index (0028,0008) Number of Frames // 2 only: the central slice "
        "of a volume, a representative frame of a cine loop; only that frame is decoded",
        "split": "every frame, each becoming its own model input, in frame order",
        "max": "one maximum intensity projection of all frames, taken in modality units before VOI "
        "(the brightest displayed value, so the minimum stored value for MONOCHROME1)",
    }
)

_SELECT_FRAMES: Mapping[str, Callable[[int], Sequence[int] | None]] = MappingProxyType(
    {"middle": lambda n: [n // 2], "split": lambda n: None, "max": lambda n: None}
)

#: Luma weights applied to the three samples of a colour pixel, by the photometric interpretation of the
#: *decoded* array (PS3.3 C.7.6.3.1.2). RGB uses ITU-R BT.601, the same weights PS3.3 uses to define the
#: Y of YBR_FULL and YBR_ICT, so RGB and YCbCr versions of one image give the same gray levels; for
#: YCbCr arrays the Y sample already is that luma (YBR_RCT's Y is the reversible (R + 2G + B) / 4).
_LUMA_WEIGHTS: Mapping[str, tuple[float, float, float]] = MappingProxyType(
    {
        "RGB": (0.299, 0.587, 0.114),
        "YBR_FULL": (1.0, 0.0, 0.0),
        "YBR_FULL_422": (1.0, 0.0, 0.0),
        "YBR_ICT": (1.0, 0.0, 0.0),
        "YBR_RCT": (1.0, 0.0, 0.0),
    }
)
_MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})
_PALETTE = "PALETTE COLOR"
_SUPPORTED_PHOTOMETRIC = _MONOCHROME | {_PALETTE} | _LUMA_WEIGHTS.keys()

#: (0028,9145) and (0028,9132): where an enhanced multi-frame object (PS3.3 C.7.6.16) keeps the rescale
#: and window of each frame (Pixel Value Transformation Macro, C.7.6.16.2.9; Frame VOI LUT Macro,
#: C.7.6.16.2.10), with the elements each macro item may hold.
_FRAME_MACROS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "PixelValueTransformationSequence": ("RescaleIntercept", "RescaleSlope", "RescaleType"),
        "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence"),
    }
)
#: Top-level elements that the modality and VOI steps read, copied into a per-frame view.
_FRAME_VIEW_BASE = (
    "Modality",
    "PhotometricInterpretation",
    "BitsStored",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)

# Errors that pydicom and NumPy raise on a dataset whose pixel module is missing, malformed or unsupported.
_DATASET_ERRORS = (
    AttributeError,
    IndexError,
    KeyError,
    NotImplementedError,
    OverflowError,
    RuntimeError,
    TypeError,
    ValueError,
    MemoryError,
)


# ---- VOI LUT functions (PS3.3 C.11.2.1.2 and C.11.2.1.3), output in [0, 1] --------------------------


def _linear(arr: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1: 0 at or below c - 0.5 - (w - 1) / 2, 1 above c - 0.5 + (w - 1) / 2."""
    if width < 1:
        raise ValueError(f"a LINEAR window needs (0028,1051) Window Width >= 1, got {width}.")
    if width == 1:  # the ramp degenerates into a threshold at c - 0.5
        return (arr > center - 0.5).astype(np.float32)
    out = arr.astype(np.float32)  # always a new array, so the in-place steps below are safe
    out -= np.float32(center - 0.5 - (width - 1) / 2)
    out /= np.float32(width - 1)  # divide, not multiply: the top of the window maps to exactly 1
    return np.clip(out, 0.0, 1.0, out=out)


def _linear_exact(arr: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.2: 0 at or below c - w / 2, 1 above c + w / 2, linear in between."""
    if width <= 0:
        raise ValueError(f"a LINEAR_EXACT window needs (0028,1051) Window Width > 0, got {width}.")
    out = arr.astype(np.float32)
    out -= np.float32(center - width / 2)
    out /= np.float32(width)
    return np.clip(out, 0.0, 1.0, out=out)


def _sigmoid(arr: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.1: 1 / (1 + exp(-4 (x - c) / w))."""
    if width <= 0:
        raise ValueError(f"a SIGMOID window needs (0028,1051) Window Width > 0, got {width}.")
    out = arr.astype(np.float32)
    out -= np.float32(center)
    out *= np.float32(-4.0 / width)
    np.exp(out, out=out)
    out += np.float32(1.0)
    return np.reciprocal(out, out=out)


#: (0028,1056) *VOI LUT Function* defined terms -> implementation; absent means LINEAR.
VOI_LUT_FUNCTIONS: Mapping[str, Callable[[np.ndarray, float, float], np.ndarray]] = MappingProxyType(
    {"LINEAR": _linear, "LINEAR_EXACT": _linear_exact, "SIGMOID": _sigmoid}
)


# ---- settings ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelSettings:
    """How a site turns DICOM pixels into model input (the ``[pixels]`` table of site.toml).

    Attributes
    ----------
    size : int
        Side of the square output, in pixels (8 to 4096).
    ct_window : str
        A name in :data:`WINDOW_PRESETS` for monochrome CT, or ``"dicom"`` to use each file's (0028,3010)
        *VOI LUT Sequence* or (0028,1050) *Window Center* / (0028,1051) *Window Width*.
    percentiles : tuple of float
        Low and high percentile (0 to 100) mapped to 0 and 1 for every image that is not windowed.
    multiframe : str
        A rule from :data:`MULTIFRAME_RULES`: ``"middle"``, ``"split"`` or ``"max"``.
    denoise : bool
        Run :func:`denoise` (non-local means, 150-200 ms per 512 x 512 slice on one core).
    clahe : bool
        Run :func:`apply_clahe`.
    """

    size: int = 64
    ct_window: str = "soft-tissue"
    percentiles: tuple[float, float] = (0.5, 99.5)
    multiframe: str = "middle"
    denoise: bool = False
    clahe: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 8 <= self.size <= 4096:
            raise ConfigError(f"PixelSettings.size must be an integer from 8 to 4096, got {self.size!r}.")
        if self.ct_window != FILE_VOI and self.ct_window not in WINDOW_PRESETS:
            names = ", ".join([*WINDOW_PRESETS, FILE_VOI])
            raise ConfigError(f"PixelSettings.ct_window must be one of {names}; got {self.ct_window!r}.")
        self._check_percentiles()
        if self.multiframe not in MULTIFRAME_RULES:
            raise ConfigError(
                f"PixelSettings.multiframe must be one of {', '.join(MULTIFRAME_RULES)}; "
                f"got {self.multiframe!r}."
            )
        for name in ("denoise", "clahe"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"PixelSettings.{name} must be true or false, got {getattr(self, name)!r}.")

    def _check_percentiles(self) -> None:
        value: Any = self.percentiles
        message = (
            f"PixelSettings.percentiles must be two numbers low < high between 0 and 100, got {value!r}."
        )
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ConfigError(message)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise ConfigError(message)
        low, high = float(value[0]), float(value[1])
        if not 0.0 <= low < high <= 100.0:
            raise ConfigError(message)
        object.__setattr__(self, "percentiles", (low, high))  # TOML gives a list: store the tuple


# ---- pure steps ----------------------------------------------------------------------------------------


def _frame_view(ds: Dataset, frame: int) -> Dataset:
    """Return `ds`, or for an enhanced multi-frame object a small dataset with frame `frame`'s values.

    Reads (5200,9229) *Shared Functional Groups Sequence* and then (5200,9230) *Per-Frame Functional
    Groups Sequence* item `frame` (which wins), taking the items of (0028,9145) *Pixel Value
    Transformation Sequence* and (0028,9132) *Frame VOI LUT Sequence* (PS3.3 C.7.6.16.2.9 and
    C.7.6.16.2.10) over the top-level Modality LUT and VOI LUT elements. `ds` is never modified.
    """
    groups: list[Dataset] = []
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and 0 <= frame < len(per_frame):
        groups.append(per_frame[frame])
    if not any(macro in group for group in groups for macro in _FRAME_MACROS):
        return ds

    view = Dataset()
    if getattr(ds, "file_meta", None) is not None:
        view.file_meta = ds.file_meta  # endianness of OW LUT data
    view.set_original_encoding(*ds.original_encoding)
    for keyword in _FRAME_VIEW_BASE:
        if keyword in ds:
            view.add(ds[keyword])
    for group in groups:
        for macro, keywords in _FRAME_MACROS.items():
            items = group.get(macro)
            if not items:
                continue
            for keyword in keywords:  # the macro replaces, rather than patches, what came before
                if keyword in view:
                    del view[keyword]
                if keyword in items[0]:
                    view.add(items[0][keyword])
    return view


def to_modality_units(arr: np.ndarray, ds: Dataset, frame: int = 0) -> np.ndarray:
    """Apply the Modality LUT: stored values to modality units (Hounsfield units for CT).

    Reads (0028,3000) *Modality LUT Sequence* if present, else (0028,1053) *Rescale Slope* and
    (0028,1052) *Rescale Intercept* (PS3.3 C.11.1), through :func:`pydicom.pixels.apply_modality_lut`.
    For an enhanced multi-frame object the values of frame `frame` come from (0028,9145) *Pixel Value
    Transformation Sequence* in the per-frame or shared functional groups (PS3.3 C.7.6.16.2.9), which
    pydicom alone does not read. Only meaningful for MONOCHROME1/MONOCHROME2 pixels.

    Parameters
    ----------
    arr : numpy.ndarray
        Stored values of one frame.
    ds : pydicom.dataset.Dataset
        The dataset the frame came from (not modified).
    frame : int, optional
        0-based index of the frame, for per-frame functional groups.

    Returns
    -------
    numpy.ndarray
        ``float32`` values in modality units; `arr` converted unchanged when the dataset has no
        Modality LUT.
    """
    out = apply_modality_lut(arr, _frame_view(ds, frame))
    return np.asarray(out, dtype=np.float32)


def apply_window(arr: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map values through a VOI window to [0, 1].

    Implements the (0028,1056) *VOI LUT Function* of PS3.3 C.11.2.1.2 with the output range set to
    [0, 1]: ``"LINEAR"`` (C.11.2.1.2.1, the default when the element is absent), ``"LINEAR_EXACT"``
    (C.11.2.1.3.2) and ``"SIGMOID"`` (C.11.2.1.3.1). `center` and `width` are (0028,1050) *Window
    Center* and (0028,1051) *Window Width* in modality units.

    Parameters
    ----------
    arr : numpy.ndarray
        Values in modality units (e.g. HU).
    center, width : float
        The window.
    function : str, optional
        A key of :data:`VOI_LUT_FUNCTIONS`.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the same shape, values in [0, 1].

    Raises
    ------
    ValueError
        If `function` is unknown or `width` is out of the range the function allows.
    """
    try:
        voi_function = VOI_LUT_FUNCTIONS[function.strip().upper()]
    except KeyError:
        raise ValueError(f"unsupported (0028,1056) VOI LUT Function {function!r}.") from None
    return voi_function(arr, float(center), float(width))


def apply_file_voi(arr: np.ndarray, ds: Dataset, frame: int = 0) -> np.ndarray | None:
    """Apply the dataset's own VOI LUT to modality values, output in [0, 1]; ``None`` if it has none.

    Reads, for frame `frame` (PS3.3 C.11.2, and C.7.6.16.2.10 for enhanced objects):

    * (0028,3010) *VOI LUT Sequence*, first item: (0028,3002) *LUT Descriptor* and (0028,3006) *LUT
      Data*, through :func:`pydicom.pixels.apply_voi`; the output is divided by 2**bits - 1, bits being
      the third value of the descriptor. Preferred when both forms are present, as pydicom does.
    * otherwise the first value of (0028,1050) *Window Center* and (0028,1051) *Window Width* with
      (0028,1056) *VOI LUT Function*, through :func:`apply_window`.

    Parameters
    ----------
    arr : numpy.ndarray
        One frame in modality units (the output of :func:`to_modality_units`).
    ds : pydicom.dataset.Dataset
        The dataset (not modified).
    frame : int, optional
        0-based frame index, for per-frame functional groups.

    Returns
    -------
    numpy.ndarray or None
        ``float32`` array of the same shape with values in [0, 1], or ``None`` when the frame has
        neither a VOI LUT nor a window (the caller then normalises by percentiles).
    """
    view = _frame_view(ds, frame)
    lut_items = view.get("VOILUTSequence")
    if lut_items and "LUTDescriptor" in lut_items[0] and "LUTData" in lut_items[0]:
        bits = int(lut_items[0].LUTDescriptor[2])
        mapped = apply_voi(np.rint(arr).astype(np.int64), view)  # LUT input is integer modality values
        return np.asarray(mapped, dtype=np.float32) / np.float32(2**bits - 1)
    center, width = _first_number(view.get("WindowCenter")), _first_number(view.get("WindowWidth"))
    if center is None or width is None:
        return None
    return apply_window(arr, center, width, str(view.get("VOILUTFunction") or "LINEAR"))


def _first_number(value: Any) -> float | None:
    """First value of a DS element with VM 1-n (the default of several alternative views), or None."""
    if value is None or isinstance(value, str | bytes):
        return float(value) if isinstance(value, str) and value.strip() else None
    if isinstance(value, Sequence):
        return float(value[0]) if len(value) else None
    return float(value)


def normalize_percentiles(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map the `low` and `high` percentiles of `arr` to 0 and 1, clipping outside.

    Reads no DICOM element: used for modalities without a standard intensity scale (MR, CR, DX, US,
    NM, ...), where the acquisition, not physics, sets the numbers. If the two percentiles coincide (a
    mostly constant image, e.g. a sparse segmentation) the minimum and maximum are used instead; a
    constant image maps to all zeros.

    Parameters
    ----------
    arr : numpy.ndarray
        One grayscale frame, any real dtype, finite values.
    low, high : float
        Percentiles from 0 to 100, ``low < high``.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the same shape, values in [0, 1].
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low} and {high}.")
    out = arr.astype(np.float32)
    lo, hi = (float(v) for v in np.percentile(out, [low, high]))
    if hi <= lo:
        lo, hi = float(out.min()), float(out.max())
    if hi <= lo:
        return np.zeros_like(out)
    out -= np.float32(lo)
    out /= np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def invert_monochrome1(arr: np.ndarray) -> np.ndarray:
    """Invert a [0, 1] image: for (0028,0004) *Photometric Interpretation* ``MONOCHROME1``.

    In MONOCHROME1 the minimum value is displayed white (PS3.3 C.7.6.3.1.2); the inversion is applied
    after the VOI step, as a display would, so that every model input has bright = dense.
    """
    return np.subtract(np.float32(1.0), arr, dtype=np.float32)


def to_grayscale(arr: np.ndarray, photometric: str, ds: Dataset | None = None) -> np.ndarray:
    """Reduce a colour frame to one luma channel, in the units of its samples.

    `photometric` must describe the array as it is, i.e. the (0028,0004) *Photometric Interpretation*
    reported by pydicom's decoder (which by default turns YBR_FULL / YBR_FULL_422 into RGB, and always
    undoes YBR_ICT / YBR_RCT), not necessarily the value in the file header:

    * ``RGB``: ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B;
    * ``YBR_FULL``, ``YBR_FULL_422``, ``YBR_ICT``, ``YBR_RCT``: the Y sample, which PS3.3 C.7.6.3.1.2
      defines with those same weights (reversible approximation for RCT), so no round trip through RGB;
    * ``PALETTE COLOR``: the (0028,1101-1103) *Palette Color Lookup Table Descriptor* and (0028,1201-1203)
      *Palette Color Lookup Table Data* (or the segmented (0028,1221-1223) form) of `ds` are applied with
      :func:`pydicom.pixels.apply_color_lut` (PS3.3 C.7.9), then the RGB rule;
    * ``MONOCHROME1``, ``MONOCHROME2``: returned as ``float32`` unchanged.

    Parameters
    ----------
    arr : numpy.ndarray
        One frame: (rows, columns, 3) for colour (planar configuration 0, as pydicom returns it),
        (rows, columns) for monochrome and palette indices.
    photometric : str
        The photometric interpretation of `arr`.
    ds : pydicom.dataset.Dataset, optional
        Required for ``PALETTE COLOR``: the dataset holding the palette.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape (rows, columns).

    Raises
    ------
    ValueError
        For another photometric interpretation, a shape that does not match it, or a palette image
        without `ds`.
    """
    photometric = photometric.strip().upper()
    if photometric in _MONOCHROME:
        if arr.ndim != 2:
            raise ValueError(f"a {photometric} frame must have 2 dimensions, got shape {arr.shape}.")
        return arr.astype(np.float32)
    if photometric == _PALETTE:
        if ds is None:
            raise ValueError("a PALETTE COLOR frame needs the dataset that holds its palette.")
        arr = apply_color_lut(arr, ds)
        photometric = "RGB"
    weights = _LUMA_WEIGHTS.get(photometric)
    if weights is None:
        raise ValueError(f"unsupported (0028,0004) Photometric Interpretation {photometric!r}.")
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"a {photometric} frame must have shape (rows, columns, 3), got {arr.shape}.")
    if weights[1:] == (0.0, 0.0):
        return arr[..., 0].astype(np.float32)
    return np.asarray(arr, dtype=np.float32) @ np.asarray(weights, dtype=np.float32)


def resize_area(arr: np.ndarray, size: int, pad_value: float = 0.0) -> np.ndarray:
    """Resize to ``size x size`` with ``cv2.INTER_AREA``, keeping the aspect ratio.

    The longer side is scaled to `size` and the shorter side padded on both sides (centred) with
    `pad_value` (0 = black, as the background is after windowing and MONOCHROME1 inversion). A plain
    resize would stretch non-square matrices (768 x 1024 ultrasound, 1024 x 256 NM whole body, cropped
    radiographs) by a different factor at each site, so a lesion's shape would depend on the scanner:
    a site-specific distortion the federated model would have to learn. Reads no DICOM element;
    (0028,0030) *Pixel Spacing* is assumed isotropic, as it is for nearly all CT, MR and CR.

    Scaling first and padding the small result is the same as padding to a square and then scaling, up
    to rounding at the border, without allocating a padded copy of a large radiograph.

    ``INTER_AREA`` averages the source pixels covering each output pixel, so downsampling does not
    alias and a constant image stays constant. When enlarging (a 16 x 16 test slice, a 10 x 10 dose
    grid) OpenCV's ``INTER_AREA`` replicates pixels, blending only at the boundaries between them.

    Parameters
    ----------
    arr : numpy.ndarray
        One grayscale frame.
    size : int
        Output side in pixels.
    pad_value : float, optional
        Value of the padding.

    Returns
    -------
    numpy.ndarray
        C-contiguous ``float32`` array of shape (size, size).
    """
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise ValueError(f"resize_area needs a non-empty 2-D array, got shape {arr.shape}.")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}.")
    src = np.ascontiguousarray(arr, dtype=np.float32)
    rows, cols = src.shape
    scale = size / max(rows, cols)
    new_rows = min(size, max(1, round(rows * scale)))
    new_cols = min(size, max(1, round(cols * scale)))
    resized = cv2.resize(src, (new_cols, new_rows), interpolation=cv2.INTER_AREA)
    if (new_rows, new_cols) == (size, size):
        return np.ascontiguousarray(resized, dtype=np.float32)
    out = np.full((size, size), pad_value, dtype=np.float32)
    top, left = (size - new_rows) // 2, (size - new_cols) // 2
    out[top : top + new_rows, left : left + new_cols] = resized
    return out


def _to_uint8(arr01: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(arr01, 0.0, 1.0) * 255.0).astype(np.uint8)


def denoise(arr01: np.ndarray, strength: float = 10.0) -> np.ndarray:
    """Non-local means denoising of a grayscale [0, 1] frame (``cv2.fastNlMeansDenoising``).

    The grayscale variant, not ``fastNlMeansDenoisingColored``: by this point every image is one luma
    channel. OpenCV needs 8-bit input, so the frame is quantised to 256 levels (the precision of a
    display after the VOI step), denoised with a 7 x 7 template and a 21 x 21 search window (OpenCV's
    defaults), and scaled back. Reads no DICOM element.

    Parameters
    ----------
    arr01 : numpy.ndarray
        One frame with values in [0, 1].
    strength : float, optional
        The filter strength ``h`` in 8-bit gray levels, about the noise standard deviation to remove:
        higher removes more noise and more detail. 10 suits CT in a soft-tissue window (400 HU over 255
        levels, quantum noise of 10-20 HU); OpenCV's default of 3 barely changes such images.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the same shape, values in [0, 1].
    """
    filtered = cv2.fastNlMeansDenoising(_to_uint8(arr01), None, h=float(strength))
    return filtered.astype(np.float32) * np.float32(1.0 / 255.0)


def apply_clahe(arr01: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a grayscale [0, 1] frame.

    OpenCV's CLAHE on ``tiles x tiles`` tiles with the histogram clipped at `clip_limit` times the
    mean bin count (2.0, a common choice for radiographs; OpenCV's own default of 40 barely limits).
    Run at the native resolution, before :func:`resize_area`, so tiles cover anatomy rather than a few
    output pixels. The frame is quantised to 8 bits as for :func:`denoise`. Reads no DICOM element.

    Parameters
    ----------
    arr01 : numpy.ndarray
        One frame with values in [0, 1].
    clip_limit : float, optional
        Contrast limit.
    tiles : int, optional
        Tiles per side.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the same shape, values in [0, 1].
    """
    # A CLAHE object keeps scratch buffers, so sharing one between threads would race; creating one
    # costs under a microsecond.
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tiles), int(tiles)))
    equalised = clahe.apply(_to_uint8(arr01))
    return equalised.astype(np.float32) * np.float32(1.0 / 255.0)


# ---- decoding (the edge) --------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """One line naming the failure; pydicom's messages describe the pixel module, never patient data."""
    detail = " ".join(str(exc).split())
    if len(detail) > 400:
        detail = detail[:397] + "..."
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _transfer_syntax(ds: Dataset) -> UID:
    """(0002,0010) *Transfer Syntax UID*, or the native syntax the dataset was read with if absent.

    A dataset without file meta information (read with ``force=True``) still records the encoding it
    was read in; native pixel data (defined length) is then unambiguous. Encapsulated data is not.
    """
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return UID(uid)
    implicit, little = ds.original_encoding
    pixel_keyword = next((k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds), "")
    if implicit is None or little is None or not pixel_keyword or ds[pixel_keyword].is_undefined_length:
        raise InputError(
            "cannot decode pixels: the file has no (0002,0010) Transfer Syntax UID and its pixel data "
            "is not natively encoded."
        )
    if not little:
        return ExplicitVRBigEndian
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


@dataclass(frozen=True)
class _Decoded:
    frames: np.ndarray  # (frames, rows, columns[, samples]); selected frames only
    indices: Sequence[int]  # 0-based frame number of each entry of `frames`
    photometric: str  # of the decoded array, as pydicom reports it


def _decode(ds: Dataset, rule: str) -> _Decoded:
    """Decode the frames that `rule` keeps, in one call; raise InputError with the reason if impossible."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(
            "cannot decode pixels: the dataset has no (7FE0,0010) Pixel Data, (7FE0,0008) Float Pixel "
            "Data or (7FE0,0009) Double Float Pixel Data."
        )
    uid = _transfer_syntax(ds)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise InputError(
            f"cannot decode pixels: transfer syntax {uid} ({uid.name}) is not supported by pydicom "
            f"{pydicom.__version__}."
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
        raise InputError(
            f"cannot decode pixels: transfer syntax {uid} ({uid.name}) needs a decoder that is not "
            f"installed ({missing})."
        )
    try:
        # as_rgb=False: keep YCbCr as decoded, to_grayscale takes its Y (see the module docstring)
        options: dict[str, Any] = {**as_pixel_options(ds), "as_rgb": False}
        number_of_frames = int(options["number_of_frames"])
        selected = _SELECT_FRAMES[rule](number_of_frames)
        if selected is None:
            arr, properties = decoder.as_array(ds, **options)
            indices: Sequence[int] = range(number_of_frames)
        else:
            (index,) = selected
            arr, properties = decoder.as_array(ds, index=index, **options)
            indices = [index]
        samples = int(properties.get("samples_per_pixel", 1))
        if arr.ndim == 2 + (samples > 1):  # one frame: pydicom drops the frame axis
            arr = arr[np.newaxis]
        if arr.shape[0] != len(indices):
            raise ValueError(f"decoded {arr.shape[0]} frames where {len(indices)} were expected.")
        photometric = str(properties.get("photometric_interpretation", "")).strip().upper()
    except _DATASET_ERRORS as exc:
        raise InputError(f"cannot decode pixels ({uid.name}): {_reason(exc)}") from None
    if photometric not in _SUPPORTED_PHOTOMETRIC:
        raise InputError(
            f"cannot convert pixels: (0028,0004) Photometric Interpretation {photometric!r} is not "
            f"supported (supported: {', '.join(sorted(_SUPPORTED_PHOTOMETRIC))})."
        )
    return _Decoded(arr, indices, photometric)


# ---- the pipeline ------------------------------------------------------------------------------------


def _gray_frames(ds: Dataset, decoded: _Decoded) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, float32 grayscale frame); monochrome frames in modality units."""
    monochrome = decoded.photometric in _MONOCHROME
    for index, frame in zip(decoded.indices, decoded.frames, strict=True):
        if monochrome:
            if frame.ndim != 2:
                raise ValueError(f"a {decoded.photometric} frame must have 2 dimensions, got {frame.shape}.")
            gray = to_modality_units(frame, ds, index)  # a Modality LUT Sequence indexes stored integers
        else:
            gray = to_grayscale(frame, decoded.photometric, ds)
        if gray.dtype.kind == "f" and not np.isfinite(gray).all():  # float pixel data may hold NaN
            gray = np.nan_to_num(gray, nan=0.0, posinf=0.0, neginf=0.0)
        yield index, gray


def _to_unit_range(gray: np.ndarray, ds: Dataset, index: int, settings: PixelSettings) -> np.ndarray:
    """Step 5 for one grayscale frame: window monochrome CT, normalise everything else, to [0, 1]."""
    if str(ds.get("Modality", "")).strip().upper() == "CT":
        if settings.ct_window != FILE_VOI:
            return apply_window(gray, *WINDOW_PRESETS[settings.ct_window])
        windowed = apply_file_voi(gray, ds, index)
        if windowed is not None:
            return windowed
    return normalize_percentiles(gray, *settings.percentiles)


def _finish(unit: np.ndarray, photometric: str, settings: PixelSettings) -> np.ndarray:
    """Steps 6 to 8: MONOCHROME1 inversion, optional denoising and CLAHE, resize."""
    image = invert_monochrome1(unit) if photometric == "MONOCHROME1" else unit
    if settings.denoise:
        image = denoise(image)
    if settings.clahe:
        image = apply_clahe(image)
    return np.clip(resize_area(image, settings.size), 0.0, 1.0)


def prepare_frames(ds: Dataset, settings: PixelSettings) -> list[np.ndarray]:
    """Decode `ds` once and return one model input per kept frame.

    Runs the pipeline described in the module docstring. Reads (0002,0010) *Transfer Syntax UID*,
    the Image Pixel Module (PS3.3 C.7.6.3: (0028,0002) *Samples per Pixel*, (0028,0004) *Photometric
    Interpretation*, (0028,0010) *Rows*, (0028,0011) *Columns*, (0028,0100) *Bits Allocated*,
    (0028,0101) *Bits Stored*, (0028,0103) *Pixel Representation*, (0028,0006) *Planar Configuration*),
    (0028,0008) *Number of Frames* (PS3.3 C.7.6.6), (0008,0060) *Modality*, and the elements read by
    :func:`to_grayscale`, :func:`to_modality_units` and :func:`apply_file_voi`. `ds` is not modified.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A dataset with pixel data.
    settings : PixelSettings
        The site's choices.

    Returns
    -------
    list of numpy.ndarray
        C-contiguous ``float32`` arrays of shape (size, size) with finite values in [0, 1]; one
        for ``"middle"`` and ``"max"``, one per frame in frame order for ``"split"``.

    Raises
    ------
    common.errors.InputError
        When the pixels cannot be decoded or converted (no pixel data, transfer syntax without an
        installed decoder, corrupt or truncated data, unsupported photometric interpretation,
        malformed LUTs). The message names the reason and no patient data.
    """
    decoded = _decode(ds, settings.multiframe)
    monochrome = decoded.photometric in _MONOCHROME
    try:
        frames = _gray_frames(ds, decoded)
        if settings.multiframe == "max":
            # The brightest displayed value: the smallest stored one where MONOCHROME1 shows it white.
            project = np.fmin if decoded.photometric == "MONOCHROME1" else np.fmax
            reference = decoded.indices[len(decoded.indices) // 2]  # whose VOI the projection uses
            frames = iter([(reference, functools.reduce(project, (gray for _, gray in frames)))])
        outputs = []
        for index, gray in frames:  # one frame at a time: a long cine loop never exists twice as float
            unit = (
                _to_unit_range(gray, ds, index, settings)
                if monochrome
                else normalize_percentiles(gray, *settings.percentiles)
            )
            outputs.append(_finish(unit, decoded.photometric, settings))
    except _DATASET_ERRORS as exc:
        raise InputError(f"cannot convert pixels: {_reason(exc)}") from None
    return outputs
