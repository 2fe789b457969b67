"""An anatomy-like 2-D phantom of an axial abdominal slice, with an optional round lesion.

The phantom is drawn in millimetres around the image centre (x to the image right, y down, z along the
table), then rasterised for a given matrix and field of view, so one patient looks the same on every
scanner apart from resolution:

* the **body**: an ellipse of subcutaneous fat around an inner soft-tissue ellipse, on a CT couch;
* **bone**: a vertebral body (cortical ring around marrow) with a spinous process, and a broken ring of
  ribs just inside the fat;
* **organs** as ellipses, each present over a range of z and shrinking towards its ends: liver, spleen,
  two kidneys, the aorta, and a few gas bubbles in the bowel;
* a smooth **texture** (low-frequency noise, varying slowly with z) inside the body;
* a **lesion**: an ellipsoid with a round in-plane section (radius ``radius_mm``) and a z half-extent
  ``half_height_mm``, added with ``contrast_hu`` on top of whatever tissue it sits in. Its section at z
  has radius ``radius_mm * sqrt(1 - (dz / half_height_mm)**2)``; the lesion is drawn, and the slice is
  labelled 1, if and only if that section is at least :data:`VISIBLE_FRACTION` of ``radius_mm``
  (:func:`lesion_visible`). So "label 1" always means "a lesion of a clearly visible size is in the
  pixels", never a sliver.

Tissue values come from a per-modality table (:data:`TISSUE_TABLES`): Hounsfield units for CT, T1-like
arbitrary units for MR, an attenuation-like display scale for CR/DX (bone bright), echogenicity in [0, 1]
for US. ``contrast_hu`` is converted with the table's ``lesion_scale`` (MR 2 a.u. per HU, CR 3, US a
hypo-echoic -0.0015 per HU). Scanner effects (noise, gain, offset, storage) are *not* applied here; see
``simulations.scanners``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

import cv2
import numpy as np

__all__ = [
    "TISSUE_TABLES",
    "VISIBLE_FRACTION",
    "Anatomy",
    "Lesion",
    "Organ",
    "TissueTable",
    "draw_anatomy",
    "draw_lesion",
    "lesion_radius_at",
    "lesion_visible",
    "render_slice",
]

VISIBLE_FRACTION = 0.5
"""A lesion is drawn (label 1) where its section radius is at least this fraction of its radius."""

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel centres and axes
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class TissueTable:
    """Pixel values of each tissue in one modality's units, before scanner gain, offset and noise."""

    values: MappingProxyType[str, float]
    texture: float  # amplitude of the smooth texture inside the body
    lesion_scale: float  # modality units per HU of lesion contrast

    def __getitem__(self, tissue: str) -> float:
        return self.values[tissue]


def _table(texture: float, lesion_scale: float, **values: float) -> TissueTable:
    return TissueTable(MappingProxyType(values), texture, lesion_scale)


TISSUE_TABLES: MappingProxyType[str, TissueTable] = MappingProxyType(
    {
        "CT": _table(
            10.0, 1.0, air=-1000, fat=-100, soft=40, liver=62, spleen=48, kidney=32, aorta=42,
            gas=-950, cortex=800, marrow=240, table=-250,
        ),
        "MR": _table(
            22.0, 2.0, air=0, fat=900, soft=340, liver=460, spleen=300, kidney=320, aorta=90,
            gas=0, cortex=30, marrow=650, table=0,
        ),
        "CR": _table(
            35.0, 3.0, air=300, fat=1500, soft=1800, liver=1880, spleen=1840, kidney=1800, aorta=1850,
            gas=700, cortex=3400, marrow=2600, table=1000,
        ),
        "US": _table(
            0.04, -0.0015, air=0.0, fat=0.62, soft=0.42, liver=0.5, spleen=0.46, kidney=0.36, aorta=0.04,
            gas=0.95, cortex=0.95, marrow=0.8, table=0.0,
        ),
    }
)  # fmt: skip
"""Tissue values per modality; DX uses the CR table."""


def _tissue_table(modality: str) -> TissueTable:
    key = "CR" if modality == "DX" else modality
    try:
        return TISSUE_TABLES[key]
    except KeyError:
        raise ValueError(
            f"Modality {modality!r} has no tissue table; use one of CT, MR, CR, DX, US."
        ) from None


@dataclass(frozen=True)
class Organ:
    """A filled ellipse of one tissue, in mm from the image centre, present for ``|z - z_mm| < half_z``."""

    tissue: str
    x_mm: float
    y_mm: float
    ax_mm: float
    ay_mm: float
    angle_deg: float
    z_mm: float = 0.0
    half_z_mm: float = math.inf

    def section(self, z_mm: float) -> float:
        """Scale of the section at ``z_mm`` relative to the largest one (0 when absent)."""
        if math.isinf(self.half_z_mm):
            return 1.0
        d = (z_mm - self.z_mm) / self.half_z_mm
        return math.sqrt(1.0 - d * d) if abs(d) < 1.0 else 0.0


@dataclass(frozen=True)
class Anatomy:
    """One patient's anatomy: body outline, fat thickness, bones and organs, and a texture seed."""

    x_mm: float
    y_mm: float
    ax_mm: float
    ay_mm: float
    angle_deg: float
    fat_mm: float
    organs: tuple[Organ, ...]  # painted in order, after the body and before the bones
    bones: tuple[Organ, ...]  # ribs, vertebral body, marrow, spinous process
    table_y_mm: float  # top of the couch
    texture_seed: int

    def inside_inner(self, x_mm: float, y_mm: float, margin: float = 0.0) -> bool:
        """Whether (x, y) lies inside the soft-tissue ellipse shrunk by ``margin`` (a fraction)."""
        c, s = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
        dx, dy = x_mm - self.x_mm, y_mm - self.y_mm
        u, v = c * dx + s * dy, -s * dx + c * dy
        ax, ay = (self.ax_mm - self.fat_mm) * (1 - margin), (self.ay_mm - self.fat_mm) * (1 - margin)
        return (u / ax) ** 2 + (v / ay) ** 2 < 1.0


@dataclass(frozen=True)
class Lesion:
    """A lesion: round in-plane (radius), ellipsoidal along z (half height), additive contrast in HU."""

    x_mm: float
    y_mm: float
    z_mm: float
    radius_mm: float
    half_height_mm: float
    contrast_hu: float


def lesion_radius_at(lesion: Lesion, z_mm: float) -> float:
    """Radius of the lesion's section at ``z_mm`` (0 outside it)."""
    d = (z_mm - lesion.z_mm) / lesion.half_height_mm
    return lesion.radius_mm * math.sqrt(1.0 - d * d) if abs(d) < 1.0 else 0.0


def lesion_visible(lesion: Lesion | None, z_mm: float) -> bool:
    """The label rule: drawn at ``z_mm`` iff its section is at least VISIBLE_FRACTION of its radius."""
    return lesion is not None and lesion_radius_at(lesion, z_mm) >= VISIBLE_FRACTION * lesion.radius_mm


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw a plausible adult abdomen: body 270-340 mm wide, organs placed relative to the body."""
    ax, ay = rng.uniform(135, 170), rng.uniform(95, 125)
    bx, by = rng.normal(0, 6), rng.normal(-8, 6)
    angle = rng.normal(0, 3)
    fat = rng.uniform(8, 28)
    iax, iay = ax - fat, ay - fat
    rot = math.radians(angle)

    def place(u: float, v: float) -> tuple[float, float]:
        """Body-relative (u, v in units of the inner semi-axes) to image mm."""
        x, y = u * iax, v * iay
        return bx + x * math.cos(rot) - y * math.sin(rot), by + x * math.sin(rot) + y * math.cos(rot)

    def organ(tissue: str, u: float, v: float, au: float, av: float, tilt: float, half_z: float) -> Organ:
        x, y = place(u + rng.normal(0, 0.03), v + rng.normal(0, 0.03))
        return Organ(
            tissue, x, y, au * iax * rng.uniform(0.85, 1.15), av * iay * rng.uniform(0.85, 1.15),
            angle + tilt + rng.normal(0, 6), rng.normal(0, 15), half_z * rng.uniform(0.8, 1.3),
        )  # fmt: skip

    organs = [
        organ("liver", -0.42, -0.12, 0.42, 0.55, 20, 140),  # patient's right = image left
        organ("spleen", 0.55, 0.05, 0.2, 0.3, -30, 70),
        organ("kidney", -0.38, 0.5, 0.14, 0.2, 25, 55),
        organ("kidney", 0.38, 0.5, 0.14, 0.2, -25, 55),
        organ("aorta", 0.06, 0.42, 0.06, 0.08, 0, math.inf),
    ]
    for _ in range(int(rng.integers(1, 5))):
        organs.append(organ("gas", rng.uniform(-0.1, 0.45), rng.uniform(-0.5, 0.1), 0.04, 0.03, 0, 25))

    sx, sy = place(0.0, 0.68)
    r_vert = rng.uniform(15, 20)
    bones = [
        Organ("cortex", sx, sy, r_vert, r_vert * 0.9, angle),
        Organ("marrow", sx, sy, r_vert - 3, r_vert * 0.9 - 3, angle),
        Organ("cortex", *place(0.0, 0.93), 5.0, 14.0, angle),
    ]
    n_ribs = int(rng.integers(5, 9))
    for k in range(n_ribs):
        t = math.pi * (0.12 + 0.76 * k / max(n_ribs - 1, 1))  # anterior half of the body, left to right
        u, v = -math.cos(t) * 0.97, -math.sin(t) * 0.97
        x, y = place(u, v)
        bones.append(Organ("cortex", x, y, 6.0, 3.5, angle + math.degrees(t) + 90))
    return Anatomy(
        x_mm=bx, y_mm=by, ax_mm=ax, ay_mm=ay, angle_deg=angle, fat_mm=fat,
        organs=tuple(organs), bones=tuple(bones), table_y_mm=by + ay + rng.uniform(4, 18),
        texture_seed=int(rng.integers(2**31)),
    )  # fmt: skip


def draw_lesion(
    rng: np.random.Generator,
    anatomy: Anatomy,
    *,
    contrast_hu: float,
    radius_mm: tuple[float, float] = (10.0, 25.0),
    z_mm: float = 0.0,
    min_half_height_mm: float = 0.0,
    within: Callable[[float, float], bool] | None = None,
) -> Lesion:
    """Draw a lesion inside the body's soft tissue, away from the spine, centred at ``z_mm``.

    ``min_half_height_mm`` stretches the lesion along z when a whole slab must show it; ``within`` is an
    extra constraint on the centre (e.g. inside an ultrasound sector).
    """
    radius = float(rng.uniform(*radius_mm))
    spine = anatomy.bones[0]
    x = y = 0.0
    for _ in range(200):
        x = anatomy.x_mm + rng.uniform(-1, 1) * anatomy.ax_mm
        y = anatomy.y_mm + rng.uniform(-1, 1) * anatomy.ay_mm
        clear_of_spine = math.hypot(x - spine.x_mm, y - spine.y_mm) > spine.ax_mm + radius + 6
        if anatomy.inside_inner(x, y, margin=0.18) and clear_of_spine and (within is None or within(x, y)):
            break
    else:  # pragma: no cover - the body is large; only a pathological ``within`` gets here
        x, y = anatomy.organs[0].x_mm, anatomy.organs[0].y_mm
    half_height = max(radius * rng.uniform(0.8, 1.3), min_half_height_mm)
    return Lesion(x, y, z_mm, radius, half_height, contrast_hu)


def _ellipse(img: np.ndarray, spacing: float, o: Organ, value: float, scale: float = 1.0) -> None:
    rows, cols = img.shape
    cx = (cols / 2 - 0.5 + o.x_mm / spacing) * _ONE
    cy = (rows / 2 - 0.5 + o.y_mm / spacing) * _ONE
    axes = (max(round(o.ax_mm * scale / spacing * _ONE), 1), max(round(o.ay_mm * scale / spacing * _ONE), 1))
    cv2.ellipse(img, (round(cx), round(cy)), axes, o.angle_deg, 0, 360, value, -1, cv2.LINE_8, _SHIFT)


def _texture(anatomy: Anatomy, rows: int, cols: int, z_mm: float) -> np.ndarray:
    """Smooth noise of unit-ish amplitude: two low-resolution fields blended by z, upsampled cubically."""
    rng = np.random.default_rng(anatomy.texture_seed)
    small = (max(rows // 10, 4), max(cols // 10, 4))
    a = rng.standard_normal(small, dtype=np.float32)
    b = rng.standard_normal(small, dtype=np.float32)
    phase = z_mm / 35.0
    field = a * math.cos(phase) + b * math.sin(phase)
    return cv2.resize(field, (cols, rows), interpolation=cv2.INTER_CUBIC)


def render_slice(
    anatomy: Anatomy,
    rows: int,
    cols: int | None = None,
    *,
    fov_mm: float = 360.0,
    z_mm: float = 0.0,
    lesion: Lesion | None = None,
    modality: str = "CT",
    blur_mm: float = 0.0,
) -> np.ndarray:
    """Rasterise the phantom at ``z_mm`` into a ``(rows, cols)`` float32 image in the modality's units.

    Pure and deterministic: the same arguments give the same array. ``fov_mm`` is the width of the image
    (pixel spacing ``fov_mm / cols``, square pixels); ``blur_mm`` is the standard deviation of the
    scanner's Gaussian point-spread function. No noise, gain or offset is applied.

    Parameters
    ----------
    anatomy:
        From :func:`draw_anatomy`.
    lesion:
        From :func:`draw_lesion`; drawn only where :func:`lesion_visible` says so.
    """
    cols = rows if cols is None else cols
    if rows < 16 or cols < 16:
        raise ValueError(f"The image must be at least 16x16 pixels, got {rows}x{cols}.")
    table = _tissue_table(modality)
    spacing = fov_mm / cols
    img = np.full((rows, cols), table["air"], dtype=np.float32)

    # CT couch: a flat slab below the patient (air in modalities where it does not show).
    top = round(rows / 2 - 0.5 + anatomy.table_y_mm / spacing)
    if top < rows:
        img[top : top + max(round(8 / spacing), 1), round(cols * 0.05) : round(cols * 0.95)] = table["table"]

    body_scale = 1.0 + 0.03 * math.sin(z_mm / 60.0)
    body = Organ("fat", anatomy.x_mm, anatomy.y_mm, anatomy.ax_mm, anatomy.ay_mm, anatomy.angle_deg)
    inner = Organ(
        "soft", anatomy.x_mm, anatomy.y_mm, anatomy.ax_mm - anatomy.fat_mm, anatomy.ay_mm - anatomy.fat_mm,
        anatomy.angle_deg,
    )  # fmt: skip
    _ellipse(img, spacing, body, table["fat"], body_scale)
    body_mask = img != table["air"]
    _ellipse(img, spacing, inner, table["soft"], body_scale)
    for organ in (*anatomy.organs, *anatomy.bones):
        scale = organ.section(z_mm)
        if scale > 0.05:
            _ellipse(img, spacing, organ, table[organ.tissue], scale)

    img += _texture(anatomy, rows, cols, z_mm) * (table.texture * body_mask)

    if lesion is not None and lesion_visible(lesion, z_mm):
        r_px = lesion_radius_at(lesion, z_mm) / spacing
        cx = cols / 2 - 0.5 + lesion.x_mm / spacing
        cy = rows / 2 - 0.5 + lesion.y_mm / spacing
        x0, y0 = max(int(cx - r_px) - 2, 0), max(int(cy - r_px) - 2, 0)
        x1, y1 = min(int(cx + r_px) + 3, cols), min(int(cy + r_px) + 3, rows)
        if x1 > x0 and y1 > y0:
            patch = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
            centre = (round((cx - x0) * _ONE), round((cy - y0) * _ONE))
            cv2.circle(patch, centre, max(round(r_px * _ONE), 1), 1.0, -1, cv2.LINE_8, _SHIFT)
            img[y0:y1, x0:x1] += patch * np.float32(lesion.contrast_hu * table.lesion_scale)

    sigma = blur_mm / spacing
    if sigma > 0.1:
        img = np.asarray(cv2.GaussianBlur(img, (0, 0), sigma), dtype=np.float32)
    return img
