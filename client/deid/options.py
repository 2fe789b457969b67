"""Which de-identification a site applies: the profile, its options, and the burned-in text policy.

PS3.15 E.3 defines options that *retain* or *clean* what the Basic Profile would remove. fedscan
offers the ones that make sense for training imaging models; each has a short name for the command
line and the CID 7050 *De-identification Method* code recorded in (0012,0064) *De-identification
Method Code Sequence* when it is applied.

Profiles (``--profile``):

``fedscan`` (default)
    Basic Profile + Retain Longitudinal Temporal Information with Modified Dates + Retain Patient
    Characteristics: dates are shifted per patient (intervals survive), age/sex/size/weight stay.
``basic``
    The Basic Application Level Confidentiality Profile alone (PS3.15 E.2).

Option names (``--option NAME``; ``no-NAME`` turns a profile's option off):

``retain-modified-dates``, ``retain-patient-characteristics``, ``retain-device-identity``,
``retain-institution-identity``, ``clean-descriptors``, ``retain-safe-private``, ``burned-in=reject``,
``burned-in=ocr-mask``, ``burned-in=mask``, ``burned-in-modalities=US,OT,SC,XC,ES``,
``mask-region=X,Y,W,H`` (repeatable; implies ``burned-in=mask``),
``max-pixel-bytes=N`` and ``max-expansion=R`` (the pixel ceilings of :mod:`client.deid.pixel_hygiene`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

from client.deid.pixel_hygiene import DEFAULT_MAX_EXPANSION, DEFAULT_MAX_PIXEL_BYTES, PixelLimits

__all__ = ["OPTION_NAMES", "PROFILES", "Code", "DeidOptions"]


class Code(NamedTuple):
    """A coded concept as written into a DICOM code sequence item (PS3.3 Table 8.8-1)."""

    value: str
    scheme: str
    meaning: str


#: CID 7050 *De-identification Method* (PS3.16), the codes fedscan can record.
BASIC_PROFILE: Final = Code("113100", "DCM", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_DATA: Final = Code("113101", "DCM", "Clean Pixel Data Option")
CLEAN_DESCRIPTORS: Final = Code("113105", "DCM", "Clean Descriptors Option")
CLEAN_STRUCTURED_CONTENT: Final = Code("113104", "DCM", "Clean Structured Content Option")
RETAIN_MODIFIED_DATES: Final = Code(
    "113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"
)
RETAIN_PATIENT_CHARACTERISTICS: Final = Code("113108", "DCM", "Retain Patient Characteristics Option")
RETAIN_DEVICE_IDENTITY: Final = Code("113109", "DCM", "Retain Device Identity Option")
RETAIN_SAFE_PRIVATE: Final = Code("113111", "DCM", "Retain Safe Private Option")
RETAIN_INSTITUTION_IDENTITY: Final = Code("113112", "DCM", "Retain Institution Identity Option")

# option name -> (DeidOptions field, CID 7050 code)
_FLAGS: Final[dict[str, tuple[str, Code]]] = {
    "retain-modified-dates": ("retain_dates_modified", RETAIN_MODIFIED_DATES),
    "retain-patient-characteristics": ("retain_patient_characteristics", RETAIN_PATIENT_CHARACTERISTICS),
    "retain-device-identity": ("retain_device_identity", RETAIN_DEVICE_IDENTITY),
    "retain-institution-identity": ("retain_institution_identity", RETAIN_INSTITUTION_IDENTITY),
    "clean-descriptors": ("clean_descriptors", CLEAN_DESCRIPTORS),
    "clean-structured-content": ("clean_structured_content", CLEAN_STRUCTURED_CONTENT),
    "retain-safe-private": ("retain_safe_private", RETAIN_SAFE_PRIVATE),
}

#: Every option name accepted by :meth:`DeidOptions.from_names` (besides the ``no-`` forms).
OPTION_NAMES: Final[tuple[str, ...]] = (
    *_FLAGS,
    "burned-in=reject",
    "burned-in=ocr-mask",
    "burned-in=mask",
    "burned-in-modalities=US,OT,...",
    "mask-region=X,Y,W,H",
    "max-pixel-bytes=N",
    "max-expansion=R",
)

#: Profile name -> the options it switches on.
PROFILES: Final[dict[str, tuple[str, ...]]] = {
    "fedscan": ("retain-modified-dates", "retain-patient-characteristics", "clean-structured-content"),
    "basic": (),
}

#: Private attributes kept by Retain Safe Private (PS3.15 E.3.10): (private creator, group, element
#: offset within the block). Only numeric acquisition parameters that models need (diffusion b-values
#: and directions) and that cannot name anyone; their values must also have a numeric VR or CS.
DEFAULT_SAFE_PRIVATE: Final[tuple[tuple[str, int, int], ...]] = (
    ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B_value
    ("SIEMENS MR HEADER", 0x0019, 0x0D),  # DiffusionDirectionality
    ("SIEMENS MR HEADER", 0x0019, 0x0E),  # DiffusionGradientDirection
    ("SIEMENS MR HEADER", 0x0019, 0x27),  # B_matrix
    ("GEMS_PARM_01", 0x0043, 0x39),  # slop_int_6..9: b-value and its scaling
    ("GEMS_ACQU_01", 0x0019, 0xBB),  # diffusion gradient direction x
    ("GEMS_ACQU_01", 0x0019, 0xBC),  # diffusion gradient direction y
    ("GEMS_ACQU_01", 0x0019, 0xBD),  # diffusion gradient direction z
    ("Philips Imaging DD 001", 0x2001, 0x03),  # Diffusion B-Factor
)

_BURNED_IN_POLICIES: Final = ("auto", "reject", "ocr-mask", "mask")
#: (0008,0060) Modality values whose files are checked for burned-in text by default.
DEFAULT_BURNED_IN_MODALITIES: Final = ("US", "OT", "SC", "XC", "ES")


@dataclass(frozen=True)
class DeidOptions:
    """The profile options and policies one de-identification run applies (PS3.15 E.3).

    The defaults are fedscan's profile: the Basic Profile with Retain Longitudinal Temporal
    Information with Modified Dates and Retain Patient Characteristics, private attributes removed,
    and files likely to carry burned-in text rejected.

    Parameters
    ----------
    retain_dates_modified : bool
        Retain Longitudinal Temporal Information with Modified Dates (E.3.6): dates are shifted by a
        keyed, per-patient number of whole days instead of being removed.
    retain_patient_characteristics : bool
        Retain Patient Characteristics (E.3.2): (0010,1010) *Patient's Age*, (0010,0040) *Patient's
        Sex*, (0010,1020) *Patient's Size*, (0010,1030) *Patient's Weight* and the like are kept.
    retain_device_identity, retain_institution_identity : bool
        Retain Device Identity (E.3.3) and Retain Institution Identity (E.3.4).
    clean_structured_content : bool
        Clean Structured Content (E.3.7): the content items of SR, KOS and other structured documents
        ((0040,A730) *Content Sequence*, (0040,0555) *Acquisition Context Sequence*) are kept and each
        item de-identified by the same rules (text replaced, names removed, dates and times shifted,
        UIDs remapped, codes scrubbed of known values) instead of being emptied.
    clean_descriptors : bool
        Clean Descriptors (E.3.5): descriptions and comments are cleaned (only words of a closed
        imaging vocabulary survive) instead of removed.
    retain_safe_private : bool
        Retain Safe Private (E.3.10): the private attributes of ``safe_private`` are kept; every other
        private attribute is removed either way.
    burned_in : {"auto", "reject", "ocr-mask", "mask"}
        What to do with a file likely to carry burned-in text (:mod:`client.deid.burned_in`): reject it,
        find and blank its text with OCR, or blank ``mask_regions``. ``auto`` (the default) is
        ``ocr-mask`` when the OCR extra is installed, else ``reject``.
    mask_regions : tuple of (x, y, width, height)
        Pixel rectangles blanked in every frame when ``burned_in == "mask"``.
    require_pixel_data : bool
        Reject data sets without (7FE0,0010) *Pixel Data*. Off by default: reports, key object
        selections, presentation states, segmentations and structure sets are de-identified like images
        (:mod:`client.deid.objects` lists what is refused instead).
    safe_private : tuple of (private creator, group, element offset)
        The allowlist used by ``retain_safe_private``.
    max_pixel_bytes : int
        Ceiling on the declared size of a file's pixels, checked before decoding.
    max_expansion : float
        Ceiling on declared / compressed size of encapsulated pixel data, checked before decoding.
    burned_in_modalities : tuple of str
        (0008,0060) Modality values checked for burned-in text besides the Secondary Capture,
        ultrasound and visible-light classes (CT and MR are not, unless a header says ``YES``).
    """

    retain_dates_modified: bool = True
    retain_patient_characteristics: bool = True
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = True
    retain_safe_private: bool = False
    burned_in: str = "auto"
    mask_regions: tuple[tuple[int, int, int, int], ...] = ()
    require_pixel_data: bool = False
    safe_private: tuple[tuple[str, int, int], ...] = field(default=DEFAULT_SAFE_PRIVATE)
    max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES
    max_expansion: float = DEFAULT_MAX_EXPANSION
    burned_in_modalities: tuple[str, ...] = DEFAULT_BURNED_IN_MODALITIES

    def __post_init__(self) -> None:
        PixelLimits(self.max_pixel_bytes, self.max_expansion)  # validates
        if self.burned_in not in _BURNED_IN_POLICIES:
            raise ValueError(
                f"The burned-in text policy must be one of {', '.join(_BURNED_IN_POLICIES)}, "
                f"not {self.burned_in!r}."
            )
        if self.burned_in == "mask" and not self.mask_regions:
            raise ValueError(
                "The burned-in policy 'mask' needs at least one mask region (x, y, width, height); "
                "without one nothing would be blanked."
            )
        for region in self.mask_regions:
            valid = len(region) == 4 and all(int(v) == v and v >= 0 for v in region)
            if not valid or region[2] == 0 or region[3] == 0:
                raise ValueError(
                    f"A mask region is four non-negative integers x, y, width, height with a non-zero "
                    f"width and height, not {region!r}."
                )

    @classmethod
    def for_profile(cls, profile: str) -> DeidOptions:
        """The options of a named profile (``fedscan`` or ``basic``)."""
        return cls.from_names((), profile=profile)

    @classmethod
    def from_names(cls, names: Iterable[str], *, profile: str = "fedscan") -> DeidOptions:
        """Build options from a profile name and option names, as given on the command line.

        Parameters
        ----------
        names : iterable of str
            Option names (see the module docstring); ``no-<name>`` switches off an option the profile
            switched on. Names are case-insensitive; ``_`` and ``-`` are interchangeable.
        profile : str
            ``fedscan`` (default) or ``basic``.

        Raises
        ------
        ValueError
            For an unknown profile or option name, or an invalid mask region.
        """
        key = profile.strip().lower()
        if key not in PROFILES:
            raise ValueError(f"Unknown de-identification profile {profile!r}; known: {', '.join(PROFILES)}.")
        flags = {fld: False for fld, _ in _FLAGS.values()}
        for name in PROFILES[key]:
            flags[_FLAGS[name][0]] = True
        burned_in = "auto"
        modalities: tuple[str, ...] = DEFAULT_BURNED_IN_MODALITIES
        regions: list[tuple[int, int, int, int]] = []
        limits: dict[str, float] = {}
        for raw in names:
            name = raw.strip().lower().replace("_", "-")
            option, _, value = name.partition("=")
            if option in _FLAGS and not value:
                flags[_FLAGS[option][0]] = True
            elif option.startswith("no-") and option[3:] in _FLAGS and not value:
                flags[_FLAGS[option[3:]][0]] = False
            elif option == "burned-in" and value in _BURNED_IN_POLICIES:
                burned_in = value
            elif option == "mask-region" and value:
                regions.append(_parse_region(value))
                burned_in = "mask"
            elif option == "burned-in-modalities" and value:
                modalities = tuple(m.strip().upper() for m in value.split(",") if m.strip())
            elif option in ("max-pixel-bytes", "max-expansion") and value:
                limits[option] = _parse_number(raw, value)
            else:
                raise ValueError(
                    f"Unknown de-identification option {raw!r}; known: {', '.join(OPTION_NAMES)} "
                    "(and no-<name> to switch one off)."
                )
        return cls(
            retain_dates_modified=flags["retain_dates_modified"],
            retain_patient_characteristics=flags["retain_patient_characteristics"],
            retain_device_identity=flags["retain_device_identity"],
            retain_institution_identity=flags["retain_institution_identity"],
            clean_descriptors=flags["clean_descriptors"],
            clean_structured_content=flags["clean_structured_content"],
            retain_safe_private=flags["retain_safe_private"],
            burned_in=burned_in,
            mask_regions=tuple(regions),
            max_pixel_bytes=int(limits.get("max-pixel-bytes", DEFAULT_MAX_PIXEL_BYTES)),
            max_expansion=float(limits.get("max-expansion", DEFAULT_MAX_EXPANSION)),
            burned_in_modalities=modalities,
        )

    @property
    def burned_in_policy(self) -> str:
        """The burned-in policy in force: ``auto`` resolved by whether the OCR extra is installed."""
        if self.burned_in != "auto":
            return self.burned_in
        from client.deid.ocr import ocr_available

        return "ocr-mask" if ocr_available() else "reject"

    @property
    def pixel_limits(self) -> PixelLimits:
        """The ceilings checked before any pixel data is decoded."""
        return PixelLimits(self.max_pixel_bytes, self.max_expansion)

    @property
    def option_names(self) -> tuple[str, ...]:
        """The names of the options switched on, in a stable order (for reports)."""
        names = [name for name, (fld, _) in _FLAGS.items() if getattr(self, fld)]
        names.append(f"burned-in={self.burned_in_policy}")
        return tuple(names)

    def method_codes(self, *, pixels_cleaned: bool = False) -> tuple[Code, ...]:
        """CID 7050 codes for (0012,0064) *De-identification Method Code Sequence*."""
        codes = [BASIC_PROFILE]
        if pixels_cleaned:
            codes.append(CLEAN_PIXEL_DATA)
        codes.extend(code for fld, code in _FLAGS.values() if getattr(self, fld))
        return tuple(codes)

    def replace(self, **changes: object) -> DeidOptions:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _parse_number(raw: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"The option {raw!r} needs a number after '='.") from None
    if number < 1:
        raise ValueError(f"The option {raw!r} needs a number of at least 1.")
    return number


def _parse_region(text: str) -> tuple[int, int, int, int]:
    parts = text.replace(" ", "").split(",")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"A mask region is written X,Y,W,H in pixels, not {text!r}.") from None
    return (x, y, w, h)
