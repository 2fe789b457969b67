"""Burned-in annotation: text drawn into the pixels, as consoles, secondary captures and ultrasound do.

Real exports carry the patient's name and MRN in image corners, which no header-only de-identification
removes; files that do are flagged with (0028,0301) *Burned In Annotation* = "YES" (PS3.3 C.7.6.1.1.4).
Text is drawn with OpenCV's Hershey font (ASCII only: accents are folded first) into a boolean mask that
the caller writes at the display's brightest value.
"""

from __future__ import annotations

import cv2
import numpy as np

from simulations.fake_phi import ascii_fold

__all__ = ["text_mask"]

_FONT = cv2.FONT_HERSHEY_PLAIN


def _font_scale(rows: int, cols: int) -> float:
    # About 22 lines of text per image height, never smaller than the font's legible minimum.
    return max(0.5, min(rows, cols) / 350.0)


def text_mask(
    rows: int,
    cols: int,
    top_left: tuple[str, ...] = (),
    top_right: tuple[str, ...] = (),
    bottom_left: tuple[str, ...] = (),
) -> np.ndarray:
    """A ``(rows, cols)`` boolean mask with lines of text in three corners (right corner right-aligned)."""
    mask = np.zeros((rows, cols), dtype=np.uint8)
    scale = _font_scale(rows, cols)
    thickness = 1 if scale < 1.2 else 2
    (_, height), baseline = cv2.getTextSize("Ag", _FONT, scale, thickness)
    step = height + baseline + 2
    margin = max(2, cols // 100)
    for corner, lines in (("tl", top_left), ("tr", top_right), ("bl", bottom_left)):
        for k, line in enumerate(lines):
            text = ascii_fold(line)
            (width, _), _ = cv2.getTextSize(text, _FONT, scale, thickness)
            x = margin if corner != "tr" else max(cols - margin - width, margin)
            y = (
                margin + height + k * step
                if corner != "bl"
                else rows - margin - baseline - (len(lines) - 1 - k) * step
            )
            cv2.putText(mask, text, (x, y), _FONT, scale, 255, thickness, cv2.LINE_AA)
    return mask > 96
