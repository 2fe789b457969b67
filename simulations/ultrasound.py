"""A B-mode ultrasound frame of the phantom: sector geometry, speckle, RGB with burned-in overlays.

The echogenicity of each tissue comes from the phantom's "US" table (the lesion is hypo-echoic). The
frame is a sector with its apex above the top edge; inside it the echo map is multiplied by correlated
speckle (the magnitude of smoothed complex Gaussian noise), attenuated with depth, gamma-compressed to
8 bits and replicated into RGB. Overlays typical of ultrasound (probe, MI/TIS, depth ticks) are always
drawn; the patient's name, MRN, date and institution only when the caller asks for identifying text.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from simulations.burned_in import text_mask
from simulations.phantom import Anatomy, Lesion, render_slice

__all__ = ["render_us_frame", "sector_contains", "sector_mask"]

_HALF_ANGLE = math.radians(36.0)
_APEX = -0.06  # apex height above the top edge, as a fraction of the image height
_NEAR, _FAR = 0.08, 0.97  # sector radii as fractions of the image height


def _apex_and_radii(rows: int) -> tuple[float, float, float]:
    return _APEX * rows, (_NEAR - _APEX) * rows, (_FAR - _APEX) * rows


def sector_mask(rows: int, cols: int) -> np.ndarray:
    """Boolean ``(rows, cols)`` mask of the imaged sector."""
    apex_y, near, far = _apex_and_radii(rows)
    yy, xx = np.ogrid[:rows, :cols]
    dx, dy = xx - (cols - 1) / 2.0, yy - apex_y
    radius = np.sqrt(dx * dx + dy * dy)
    return (radius >= near) & (radius <= far) & (np.abs(np.arctan2(dx, dy)) <= _HALF_ANGLE)


def sector_contains(
    x_mm: float, y_mm: float, *, rows: int, cols: int, fov_mm: float, margin_mm: float
) -> bool:
    """Whether the point (mm from the image centre) is inside the sector, ``margin_mm`` from its edges."""
    spacing = fov_mm / cols
    apex_y, near, far = (v * spacing for v in _apex_and_radii(rows))
    dx, dy = x_mm, y_mm + rows * spacing / 2.0 - apex_y
    radius = math.hypot(dx, dy)
    inside_radially = near + margin_mm <= radius <= far - margin_mm
    return inside_radially and abs(math.atan2(dx, dy)) * radius <= _HALF_ANGLE * radius - margin_mm


def render_us_frame(
    anatomy: Anatomy,
    lesion: Lesion | None,
    rows: int,
    cols: int,
    *,
    fov_mm: float,
    z_mm: float,
    gain: float,
    noise: float,
    rng: np.random.Generator,
    identifying_text: tuple[str, ...] = (),
    right_text: tuple[str, ...] = (),
) -> np.ndarray:
    """Render one ``(rows, cols, 3)`` uint8 RGB B-mode frame with overlays.

    ``identifying_text`` (name, MRN, ...) goes top-left; ``right_text`` (institution, date) top-right.
    The probe/MI/TIS block and depth ticks are always drawn.
    """
    echo = render_slice(anatomy, rows, cols, fov_mm=fov_mm, z_mm=z_mm, lesion=lesion, modality="US")
    np.clip(echo, 0.02, None, out=echo)
    # Speckle grains are wider than tall (lateral resolution is worse than axial).
    re_, im_ = (
        np.asarray(
            cv2.GaussianBlur(rng.standard_normal((rows, cols), dtype=np.float32), (0, 0), 1.3, sigmaY=0.6)
        )
        for _ in range(2)
    )
    speckle = np.sqrt(re_ * re_ + im_ * im_)
    speckle /= np.float32(speckle.mean())
    depth = np.linspace(1.0, 0.7, rows, dtype=np.float32)[:, None]
    signal = echo * speckle * depth * np.float32(gain)
    if noise > 0:
        signal += np.abs(rng.standard_normal((rows, cols), dtype=np.float32)) * np.float32(noise)
    gray = np.clip(signal, 0.0, 1.0) ** np.float32(0.7) * np.float32(255.0)
    gray[~sector_mask(rows, cols)] = 0.0
    rgb = np.repeat(np.rint(gray).astype(np.uint8)[:, :, None], 3, axis=2)

    if identifying_text or right_text:
        rgb[text_mask(rows, cols, top_left=identifying_text, top_right=right_text)] = (235, 235, 235)
    rgb[text_mask(rows, cols, bottom_left=("C5-2 ABD", "MI 1.1 TIS 0.4"))] = (255, 220, 0)
    tick = max(rows // 64, 1)
    for k in range(1, 10):
        y = round(rows * (_NEAR + (_FAR - _NEAR) * k / 10))
        rgb[y : y + tick, cols - 3 * tick : cols - tick] = (0, 230, 0)
    return rgb
