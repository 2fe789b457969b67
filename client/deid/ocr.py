"""Finding burned-in text with an OCR text detector (the optional ``fedscan[ocr]`` extra).

The detector is RapidOCR's PP-OCR text detection network run by ONNX Runtime (``pip install
fedscan[ocr]`` installs ``rapidocr`` and ``onnxruntime``). Its model ships inside the ``rapidocr``
wheel and is loaded from there by path: nothing is downloaded at run time (a test runs it with every
socket refused). Only *detection* is used - where is there text, not what does it say - because
de-identification must blank every piece of text whatever it reads; recognition would add time and a
second way to miss.

:class:`TextDetector` is the seam the engine uses (a frame in, axis-aligned boxes out), so that the
masking logic in :mod:`client.deid.burned_in` does not depend on the OCR package and a site can plug in
another detector. :func:`load_detector` builds the RapidOCR one; :func:`ocr_available` says whether the
extra is installed (it decides the default burned-in policy, :mod:`client.deid.options`).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Protocol

import numpy as np

from common.errors import ConfigError

__all__ = [
    "DETECTOR_MODEL",
    "Box",
    "RapidOcrDetector",
    "TextDetector",
    "load_detector",
    "ocr_available",
]

#: The detection model inside the ``rapidocr`` wheel (PP-OCRv6 small, ONNX).
DETECTOR_MODEL: Final = "PP-OCRv6_det_small.onnx"

#: A text box in pixel coordinates: (x0, y0, x1, y1), x1 and y1 exclusive.
Box = tuple[int, int, int, int]


class TextDetector(Protocol):
    """Finds text in one frame."""

    def detect(self, image: np.ndarray) -> list[Box]:
        """Axis-aligned boxes around the text of ``image`` (uint8, rows x columns x 3, BGR)."""
        ...


def ocr_available() -> bool:
    """Whether the OCR extra (``rapidocr`` and ``onnxruntime``) is installed."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("rapidocr", "onnxruntime"))
    except (ImportError, ValueError):  # a broken install, or a module set to None in sys.modules
        return False


def _model_path() -> str:
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "The burned-in policy 'ocr-mask' needs the OCR extra: pip install 'fedscan[ocr]'."
        )
    path = os.path.join(os.path.dirname(spec.origin), "models", DETECTOR_MODEL)
    if not os.path.isfile(path):
        raise ConfigError(
            f"The installed rapidocr has no {DETECTOR_MODEL} in its wheel; fedscan never downloads models. "
            "Install the version pinned by fedscan[ocr]."
        )
    return path


@dataclass
class RapidOcrDetector:
    """RapidOCR's text detector on ONNX Runtime, loaded from the wheel (see the module docstring).

    Parameters
    ----------
    max_side : int
        Frames whose longer side exceeds this are scaled down for detection (boxes come back in the
        frame's own coordinates).
    min_side : int
        Frames whose longer side is below this are enlarged (at most 3 times) for detection: the
        network finds text lines of 10 pixels and more reliably than smaller ones.
    box_threshold : float
        Minimum mean text probability inside a box (the detector's ``box_thresh``).
    pixel_threshold : float
        Probability above which a pixel counts as text (``thresh``).
    threads : int
        ONNX Runtime threads; 1 per worker process (the folder runs one process per core).
    """

    max_side: int = 960
    min_side: int = 640
    box_threshold: float = 0.5
    pixel_threshold: float = 0.3
    threads: int = 1

    def __post_init__(self) -> None:
        try:
            from rapidocr import RapidOCR
        except ImportError as error:
            raise ConfigError(
                f"The burned-in policy 'ocr-mask' needs the OCR extra: pip install 'fedscan[ocr]' ({error})."
            ) from None
        params: dict[str, Any] = {
            "Global.use_cls": False,
            "Global.use_rec": False,
            "Global.log_level": "error",
            "Det.model_path": _model_path(),
            "Det.limit_side_len": self.max_side,
            "Det.limit_type": "max",
            "Det.box_thresh": self.box_threshold,
            "Det.thresh": self.pixel_threshold,
            "EngineConfig.onnxruntime.intra_op_num_threads": self.threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        self._engine = RapidOCR(params=params)

    def detect(self, image: np.ndarray) -> list[Box]:
        """Axis-aligned boxes around the text of ``image`` (uint8 BGR, rows x columns x 3)."""
        rows, cols = image.shape[:2]
        factor = min(3.0, self.min_side / max(rows, cols, 1))
        if factor > 1.0:
            import cv2

            image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        result = self._engine(image, use_det=True, use_cls=False, use_rec=False)
        quads = getattr(result, "boxes", None)
        if quads is None or len(quads) == 0:
            return []
        boxes = []
        for quad in np.asarray(quads, dtype=np.float64) / max(factor, 1.0):
            x0, y0 = np.floor(quad.min(axis=0)).astype(int)
            x1, y1 = np.ceil(quad.max(axis=0)).astype(int) + 1
            boxes.append((max(int(x0), 0), max(int(y0), 0), min(int(x1), cols), min(int(y1), rows)))
        return boxes


@lru_cache(maxsize=1)
def load_detector() -> TextDetector:
    """The RapidOCR detector, loaded once per process.

    Raises
    ------
    ConfigError
        If the OCR extra is not installed (or its wheel lacks the model).
    """
    return RapidOcrDetector()
