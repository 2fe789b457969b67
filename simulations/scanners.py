"""Scanner profiles: what makes one site's images differ from another's, and the acquisition model.

A :class:`ScannerProfile` holds a site's vendor tags, matrix and field of view, point-spread function,
noise, gain and offset, how pixels are stored ((0028,0101) *Bits Stored*, (0028,0103) *Pixel
Representation*, (0028,1053) *Rescale Slope*, (0028,1052) *Rescale Intercept*, (0028,0004) *Photometric
Interpretation*) and the transfer syntax its files are written in.

The acquisition model (:func:`acquire`, :func:`to_stored`) is pure NumPy: measured = gain * phantom +
offset + noise (Gaussian; Rician magnitude noise for MR), then quantised into the stored representation:
``stored = round((value - intercept) / slope)`` clipped to the stored range, and for MONOCHROME1
``stored = 2**BitsStored - 1 - stored`` so that a reader who applies the standard inversion (PS3.3
C.7.6.3.1.2) sees the same picture as on a MONOCHROME2 site.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pydicom.pixels
from pydicom import uid as dcm_uid

__all__ = [
    "MODALITIES",
    "TRANSFER_SYNTAXES",
    "ScannerProfile",
    "acquire",
    "available_transfer_syntaxes",
    "default_scanners",
    "display_max",
    "stored_range",
    "to_stored",
    "window_from_pixels",
]

MODALITIES = ("CT", "MR", "CR", "DX", "US")

TRANSFER_SYNTAXES: MappingProxyType[str, str] = MappingProxyType(
    {
        "explicit": dcm_uid.ExplicitVRLittleEndian,
        "implicit": dcm_uid.ImplicitVRLittleEndian,
        "deflated": dcm_uid.DeflatedExplicitVRLittleEndian,
        "rle": dcm_uid.RLELossless,
        "jpeg-ls": dcm_uid.JPEGLSLossless,
        "jpeg2000": dcm_uid.JPEG2000Lossless,
    }
)
"""Short names of the transfer syntaxes a profile may ask for; profiles also accept the UIDs."""

_NATIVE = frozenset(
    {dcm_uid.ExplicitVRLittleEndian, dcm_uid.ImplicitVRLittleEndian, dcm_uid.DeflatedExplicitVRLittleEndian}
)


def available_transfer_syntaxes() -> tuple[str, ...]:
    """The transfer syntax UIDs this environment can *write*.

    Native encodings are always available; compressed ones need an installed pydicom encoder plugin
    (RLE Lossless: pydicom itself; JPEG 2000: pylibjpeg-openjpeg; JPEG-LS: pyjpegls).
    """
    return tuple(
        uid
        for uid in TRANSFER_SYNTAXES.values()
        if uid in _NATIVE or pydicom.pixels.get_encoder(uid).is_available
    )


def _resolve_syntax(value: str) -> str:
    if value in TRANSFER_SYNTAXES:
        return TRANSFER_SYNTAXES[value]
    if value in TRANSFER_SYNTAXES.values():
        return value
    known = ", ".join(f"{k!r} ({v})" for k, v in TRANSFER_SYNTAXES.items())
    raise ValueError(
        f"Transfer syntax {value!r} is not supported by the cohort generator; use one of {known}."
    )


@dataclass(frozen=True)
class ScannerProfile:
    """One site's scanner: vendor tags, geometry, image quality and storage. Use :meth:`for_modality`.

    The defaults describe a CT scanner. ``noise``, ``offset`` and ``padding_value`` are in the modality's
    units (HU for CT); ``gain`` multiplies the phantom. ``rows``/``cols`` override the cohort's
    ``image_size`` (scaled by ``matrix_scale``, ``cols = rows * aspect``). ``fov_mm`` is the image width.
    ``burned_in_fraction`` overrides the cohort's for this site (ultrasound defaults to 1.0).
    ``multiframe`` writes each series as one multi-frame file (Multi-frame Grayscale Word SC for CT/MR,
    US Multi-frame for US).
    """

    modality: str = "CT"
    manufacturer: str = "Acme Medical Systems"
    model_name: str = "Helix 64"
    station_name: str = "ACMECT01"
    software_versions: str = "VA20A"
    device_serial_number: str = "40001"
    private_creator: str = "ACME CT 1.0"
    rows: int | None = None
    cols: int | None = None
    matrix_scale: float = 1.0
    aspect: float = 1.0
    fov_mm: float = 360.0
    slice_thickness_mm: float = 5.0
    blur_mm: float = 0.9
    noise: float = 12.0
    gain: float = 1.0
    offset: float = 0.0
    transfer_syntax: str = dcm_uid.ExplicitVRLittleEndian
    photometric: str = "MONOCHROME2"
    pixel_representation: int = 0
    bits_stored: int = 12
    rescale_slope: float = 1.0
    rescale_intercept: float = -1024.0
    padding_value: float | None = None
    windows: tuple[tuple[float, float], ...] | None = ((40.0, 400.0),)
    multiframe: bool = False
    burned_in_fraction: float | None = None
    character_set: str = "ISO_IR 100"

    def __post_init__(self) -> None:
        object.__setattr__(self, "transfer_syntax", _resolve_syntax(self.transfer_syntax))
        m = self.modality
        if m not in MODALITIES:
            raise ValueError(f"Modality {m!r} is not supported; use one of {', '.join(MODALITIES)}.")
        if m == "US":
            if self.photometric != "RGB" or self.bits_stored != 8 or self.pixel_representation != 0:
                raise ValueError(
                    "An US profile stores 8-bit unsigned RGB pixels; use ScannerProfile.for_modality('US')."
                )
        elif self.photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise ValueError(
                f"Photometric interpretation {self.photometric!r} is not valid for {m}; "
                "use MONOCHROME1 or MONOCHROME2."
            )
        elif not 8 <= self.bits_stored <= 16:
            raise ValueError(f"Bits Stored must be between 8 and 16 for {m}, got {self.bits_stored}.")
        if self.pixel_representation not in (0, 1):
            raise ValueError(
                f"Pixel Representation must be 0 (unsigned) or 1 (signed), got {self.pixel_representation}."
            )
        if m not in ("CT", "DX") and (self.rescale_slope, self.rescale_intercept) != (1.0, 0.0):
            raise ValueError(
                f"{m} images are written without a rescale; "
                f"build the profile with ScannerProfile.for_modality({m!r})."
            )
        if self.rescale_slope <= 0:
            raise ValueError(f"Rescale Slope must be positive, got {self.rescale_slope}.")
        if self.padding_value is not None:
            if m != "CT":
                raise ValueError("Pixel padding outside the reconstruction circle is a CT feature only.")
            lo, hi = stored_range(self)
            padded = (self.padding_value - self.rescale_intercept) / self.rescale_slope
            if not lo <= padded <= hi:
                raise ValueError(
                    f"Padding value {self.padding_value} is outside the stored range of this profile."
                )
        if self.multiframe and m in ("CR", "DX"):
            raise ValueError("Multi-frame output is available for CT, MR and US profiles only.")
        if (
            self.multiframe
            and m in ("CT", "MR")
            and (self.pixel_representation, self.photometric) != (0, "MONOCHROME2")
        ):
            raise ValueError(
                "Multi-frame CT/MR is written as Multi-frame Grayscale Word SC, "
                "which needs unsigned MONOCHROME2 pixels."
            )
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if value is not None and not 16 <= value <= 4096:
                raise ValueError(f"{name} must be between 16 and 4096, got {value}.")
        for name in ("matrix_scale", "aspect", "fov_mm", "slice_thickness_mm", "gain"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.noise < 0 or self.blur_mm < 0:
            raise ValueError("noise and blur_mm must not be negative.")
        if self.burned_in_fraction is not None and not 0.0 <= self.burned_in_fraction <= 1.0:
            raise ValueError(f"burned_in_fraction must be within [0, 1], got {self.burned_in_fraction}.")

    @classmethod
    def for_modality(cls, modality: str, **changes: Any) -> ScannerProfile:
        """A profile with sensible defaults for ``modality`` (CT, MR, CR, DX, US), then ``changes``."""
        if modality not in _MODALITY_DEFAULTS:
            raise ValueError(f"Modality {modality!r} is not supported; use one of {', '.join(MODALITIES)}.")
        return cls(**{**_MODALITY_DEFAULTS[modality], "modality": modality, **changes})

    def replace(self, **changes: Any) -> ScannerProfile:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def matrix(self, image_size: int) -> tuple[int, int]:
        """(rows, cols) of this scanner's images for a cohort whose nominal size is ``image_size``."""
        rows = self.rows if self.rows is not None else max(round(image_size * self.matrix_scale), 16)
        cols = self.cols if self.cols is not None else max(round(rows * self.aspect), 16)
        return rows, cols


_MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "CT": {},
    "MR": dict(model_name="Orion 1.5T", station_name="ACMEMR01", private_creator="ACME MR 1.0",
               fov_mm=380.0, noise=14.0, rescale_intercept=0.0, bits_stored=12, windows=None,
               slice_thickness_mm=5.0),
    "CR": dict(model_name="FlexPlate 35", station_name="ACMECR01", private_creator="ACME CR 1.0",
               fov_mm=400.0, noise=25.0, rescale_intercept=0.0, bits_stored=12, windows=None,
               photometric="MONOCHROME1", blur_mm=0.4, slice_thickness_mm=10.0),
    "DX": dict(model_name="FlexPlate DR", station_name="ACMEDX01", private_creator="ACME DX 1.0",
               fov_mm=400.0, noise=25.0, rescale_intercept=0.0, bits_stored=12, windows=None,
               blur_mm=0.4, slice_thickness_mm=10.0),
    "US": dict(model_name="EchoStar 5", station_name="ACMEUS01", private_creator="ACME US 1.0",
               fov_mm=200.0, noise=0.03, rescale_intercept=0.0, bits_stored=8, windows=None,
               photometric="RGB", aspect=4 / 3, blur_mm=0.0, slice_thickness_mm=4.0, burned_in_fraction=1.0),
}  # fmt: skip

# Fictional vendors, cycled over sites by default_scanners(); fields are data, reviewed like data.
# noise_scale multiplies the modality's default noise; mr_gain is the arbitrary MR intensity scale.
_VENDORS: tuple[dict[str, Any], ...] = (
    dict(manufacturer="Acme Medical Systems", short="ACME", software="VA20A", noise_scale=1.0, gain=1.0,
         offset=0.0, mr_gain=1.0, fov=360.0, blur=0.9, thickness=5.0, matrix_scale=1.0, ct="uint16-1024",
         bits_xr=12, windows=((40.0, 400.0),), charset="ISO_IR 100"),
    dict(manufacturer="Globex Imaging", short="GLOBEX", software="4.2.1 build 77", noise_scale=1.7, gain=1.04,
         offset=15.0, mr_gain=1.6, fov=400.0, blur=1.3, thickness=2.5, matrix_scale=1.0, ct="int16",
         bits_xr=10, windows=((40.0, 400.0), (-600.0, 1500.0)), charset="ISO_IR 192"),
    dict(manufacturer="Initech Healthcare", short="INITECH", software="SP3.1", noise_scale=2.4, gain=0.96,
         offset=-12.0, mr_gain=0.7, fov=340.0, blur=1.7, thickness=3.0, matrix_scale=0.75, ct="uint16-1024",
         bits_xr=12, windows=((50.0, 350.0),), charset="ISO_IR 100"),
    dict(manufacturer="Umbrella Diagnostics", short="UMBRELLA", software="R11.0.2", noise_scale=0.7,
         gain=1.02, offset=5.0, mr_gain=1.2, fov=380.0, blur=0.7, thickness=1.25, matrix_scale=1.5,
         ct="uint16-slope", bits_xr=14, windows=((40.0, 400.0),), charset="ISO_IR 192"),
    dict(manufacturer="Soylent Systems", short="SOYLENT", software="V6.0", noise_scale=1.3, gain=0.98,
         offset=-5.0, mr_gain=0.85, fov=420.0, blur=1.1, thickness=5.0, matrix_scale=1.0, ct="int16-padded",
         bits_xr=12, windows=((40.0, 400.0),), charset="ISO_IR 100"),
)  # fmt: skip

# How CT pixels are stored: (Pixel Representation, Bits Stored, Rescale Slope, Rescale Intercept, padding HU)
_CT_STORAGE: dict[str, tuple[int, int, float, float, float | None]] = {
    "uint16-1024": (0, 12, 1.0, -1024.0, None),
    "int16": (1, 16, 1.0, 0.0, None),
    "uint16-slope": (0, 16, 0.5, -1024.0, None),
    "int16-padded": (1, 16, 1.0, 0.0, -2000.0),
}

_MODELS = {
    "CT": ("Helix 64", "Vista 128", "Spectra 16", "Quantum 256", "Apex 32"),
    "MR": ("Orion 1.5T", "Aurora 3T", "Magnet One 1.5T", "Zenith 3T", "Clarity 1.5T"),
    "CR": ("FlexPlate 35", "Digitizer 9", "PlateReader 2", "CRX 500", "Photon CR"),
    "DX": ("FlexPlate DR", "Detector 43", "DirectRay 3", "DRX 700", "Photon DR"),
    "US": ("EchoStar 5", "SonoView 9", "Wave E7", "Sound 300", "Echo One"),
}


def default_scanners(n_sites: int, modality: str = "CT") -> tuple[ScannerProfile, ...]:
    """``n_sites`` profiles of ``modality`` from five fictional vendors, cycled, with different noise,
    gain/offset, field of view, sharpness, matrix (x0.75 at site 3, x1.5 at site 4), storage and tags.

    Site 1 is the cleanest (the reference); beyond five sites, vendors repeat with noise raised by 15 %
    per cycle and a different station name. All write Explicit VR Little Endian.
    """
    if n_sites < 1:
        raise ValueError(f"n_sites must be at least 1, got {n_sites}.")
    if modality not in _MODALITY_DEFAULTS:
        raise ValueError(f"Modality {modality!r} is not supported; use one of {', '.join(MODALITIES)}.")
    base = _MODALITY_DEFAULTS[modality]
    profiles = []
    for i in range(n_sites):
        v = _VENDORS[i % len(_VENDORS)]
        cycle = i // len(_VENDORS)
        changes: dict[str, Any] = dict(
            manufacturer=v["manufacturer"],
            model_name=_MODELS[modality][i % len(_VENDORS)],
            station_name=f"{v['short'][:6]}{modality}{i + 1:02d}",
            software_versions=v["software"],
            device_serial_number=f"{40001 + 7919 * i}",
            private_creator=f"{v['short']} {modality} 1.0",
            noise=base.get("noise", 12.0) * v["noise_scale"] * 1.15**cycle,
            matrix_scale=v["matrix_scale"],
            character_set=v["charset"],
        )
        if modality == "US":
            changes.update(gain=v["gain"], fov_mm=base["fov_mm"] * v["fov"] / 360.0)
        else:
            changes.update(
                fov_mm=base.get("fov_mm", 360.0) * v["fov"] / 360.0,
                blur_mm=v["blur"] * (0.5 if modality in ("CR", "DX") else 1.0),
            )
        if modality == "CT":
            pr, bits, slope, intercept, padding = _CT_STORAGE[v["ct"]]
            changes.update(
                gain=v["gain"],
                offset=v["offset"],
                slice_thickness_mm=v["thickness"],
                windows=v["windows"],
                pixel_representation=pr,
                bits_stored=bits,
                rescale_slope=slope,
                rescale_intercept=intercept,
                padding_value=padding,
            )
        elif modality == "MR":
            changes.update(gain=v["mr_gain"], slice_thickness_mm=v["thickness"] + 1.0)
        elif modality in ("CR", "DX"):
            # The detector's bit depth sets the scale of its values: 10-bit plates give 1/4 of 12-bit values.
            changes.update(
                bits_stored=v["bits_xr"],
                gain=v["gain"] * 2.0 ** (v["bits_xr"] - 12),
                noise=changes["noise"] * 2.0 ** (v["bits_xr"] - 12),
            )
        profiles.append(ScannerProfile.for_modality(modality, **changes))
    return tuple(profiles)


def stored_range(profile: ScannerProfile) -> tuple[int, int]:
    """The smallest and largest stored value (0028,0101) *Bits Stored* and (0028,0103) allow."""
    if profile.pixel_representation == 1:
        return -(1 << (profile.bits_stored - 1)), (1 << (profile.bits_stored - 1)) - 1
    return 0, (1 << profile.bits_stored) - 1


def display_max(profile: ScannerProfile) -> float:
    """The brightest value the scanner writes for overlays (burned-in text), in modality units."""
    lo, hi = stored_range(profile)
    if profile.modality == "CT":
        return min(3071.0, hi * profile.rescale_slope + profile.rescale_intercept)
    return float(hi)


def acquire(phantom: np.ndarray, profile: ScannerProfile, rng: np.random.Generator) -> np.ndarray:
    """Apply the scanner to a phantom (float32, modality units): gain, offset, noise, padding.

    CT/CR/DX get additive Gaussian noise of standard deviation ``noise``; MR gets Rician noise (the
    magnitude of complex Gaussian noise), which is what magnitude reconstruction produces. With a
    ``padding_value``, pixels outside the reconstruction circle are set to it (as many CT scanners do).
    """
    value = phantom * np.float32(profile.gain)
    if profile.offset:
        value += np.float32(profile.offset)
    if profile.noise > 0:
        if profile.modality == "MR":
            real = value + rng.standard_normal(value.shape, dtype=np.float32) * np.float32(profile.noise)
            imag = rng.standard_normal(value.shape, dtype=np.float32) * np.float32(profile.noise)
            value = np.sqrt(real * real + imag * imag)
        else:
            value += rng.standard_normal(value.shape, dtype=np.float32) * np.float32(profile.noise)
    if profile.padding_value is not None:
        rows, cols = value.shape
        yy, xx = np.ogrid[:rows, :cols]
        radius = min(rows, cols) / 2.0
        outside = (yy - (rows - 1) / 2.0) ** 2 + (xx - (cols - 1) / 2.0) ** 2 > radius**2
        value[outside] = np.float32(profile.padding_value)
    return value


def to_stored(value: np.ndarray, profile: ScannerProfile, overlay: np.ndarray | None = None) -> np.ndarray:
    """Quantise modality values into stored pixel values (uint16/int16), with an optional text overlay.

    ``overlay`` is a boolean mask of burned-in text, written at :func:`display_max` (white when displayed).
    MONOCHROME1 is applied last, as an inversion of the stored range, so overlays stay white on display.
    """
    lo, hi = stored_range(profile)
    if overlay is not None:
        value = value.copy()
        value[overlay] = np.float32(display_max(profile))
    stored = (value - np.float32(profile.rescale_intercept)) / np.float32(profile.rescale_slope)
    stored = np.clip(np.rint(stored), lo, hi)
    if profile.photometric == "MONOCHROME1":
        stored = (lo + hi) - stored
    dtype = np.int16 if profile.pixel_representation == 1 else np.uint16
    return stored.astype(dtype)


def window_from_pixels(stored: np.ndarray) -> tuple[float, float]:
    """A (center, width) window covering the 1st to 99th percentile, as MR and CR consoles compute one."""
    lo, hi = np.percentile(
        stored[:: max(stored.shape[0] // 64, 1), :: max(stored.shape[1] // 64, 1)], [1, 99]
    )
    width = max(float(hi - lo), 1.0)
    return math.floor(float(lo + hi) / 2.0), math.ceil(width)
