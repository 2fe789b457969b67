"""Throughput of the pixel pipeline (client/pixels.py) on synthetic 512 x 512 int16 CT slices.

Prints slices per second for window -> resize (64 and 224), window -> CLAHE -> resize, window -> denoise
-> resize (fewer iterations: non-local means is slow), and the whole of ``prepare_frames`` on an in-memory
CT dataset, each with OpenCV on one thread and then on its default thread count. The design doc's
reference is about 500 slices/s for window -> CLAHE -> resize 224 on one core; the ratio to it is printed.

Run: ``/work/venv/bin/python benchmarks/bench_pixels.py [--slices N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from client.pixels import (
    WINDOW_PRESETS,
    PixelSettings,
    apply_clahe,
    apply_window,
    denoise,
    prepare_frames,
    resize_area,
)

DESIGN_REFERENCE = 500.0  # slices/s, window -> CLAHE -> resize 224 on one core (docs/DESIGN.md)


def phantom_slices(count: int, seed: int = 0) -> list[np.ndarray]:
    """Return `count` int16 slices in HU: air, a body ellipse, two lungs, a spine, a lesion, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-256:256, -256:256].astype(np.float32)
    base = np.full((512, 512), -1000.0, dtype=np.float32)
    base[(xx / 220) ** 2 + (yy / 160) ** 2 <= 1] = 40.0
    for side in (-1, 1):
        base[((xx - side * 95) / 70) ** 2 + (yy / 100) ** 2 <= 1] = -820.0
    base[(xx / 25) ** 2 + ((yy - 110) / 25) ** 2 <= 1] = 700.0
    slices = []
    for _ in range(count):
        image = base.copy()
        cx, cy = rng.integers(-60, 60, size=2)
        image[((xx - cx) / 12) ** 2 + ((yy - cy) / 12) ** 2 <= 1] += 60.0
        image += rng.normal(0.0, 12.0, size=image.shape).astype(np.float32)
        slices.append(np.clip(image, -1024, 3071).astype(np.int16))
    return slices


def ct_dataset(hu: np.ndarray) -> Dataset:
    """A minimal in-memory CT image (stored = HU + 1024, Rescale Intercept -1024)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = (hu.astype(np.int16) + 1024).astype(np.int16).tobytes()
    return ds


def rate(step: Callable[[np.ndarray], object], slices: list[np.ndarray], repeat: int) -> float:
    """Best-of-`repeat` slices per second of `step` over `slices`."""
    step(slices[0])  # warm-up: allocations, OpenCV dispatch, the CLAHE object cache
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for image in slices:
            step(image)
        best = min(best, time.perf_counter() - start)
    return len(slices) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200, help="slices per timed pass (default 200)")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes, best kept (default 5)")
    args = parser.parse_args()

    center, width = WINDOW_PRESETS["soft-tissue"]
    slices = phantom_slices(args.slices)
    few = slices[: max(4, args.slices // 25)]
    datasets = [ct_dataset(image) for image in slices]
    by_id = {id(image): ds for image, ds in zip(slices, datasets, strict=True)}
    clahe_224 = PixelSettings(size=224, clahe=True)

    cases: list[tuple[str, Callable[[np.ndarray], object], list[np.ndarray]]] = [
        ("window -> resize 64", lambda a: resize_area(apply_window(a, center, width), 64), slices),
        ("window -> resize 224", lambda a: resize_area(apply_window(a, center, width), 224), slices),
        (
            "window -> CLAHE -> resize 64",
            lambda a: resize_area(apply_clahe(apply_window(a, center, width)), 64),
            slices,
        ),
        (
            "window -> CLAHE -> resize 224",
            lambda a: resize_area(apply_clahe(apply_window(a, center, width)), 224),
            slices,
        ),
        (
            "window -> denoise -> resize 224",
            lambda a: resize_area(denoise(apply_window(a, center, width)), 224),
            few,
        ),
        ("prepare_frames(CT, CLAHE, 224)", lambda a: prepare_frames(by_id[id(a)], clahe_224), slices),
    ]

    default_threads = cv2.getNumThreads()
    print(f"synthetic 512x512 int16 CT, {args.slices} slices ({len(few)} for denoise), best of {args.repeat}")
    print(f"{'step':34s} {'1 thread':>14s} {f'{default_threads} threads':>14s}")
    results: dict[str, float] = {}
    for name, step, data in cases:
        row = []
        for threads in (1, default_threads):
            cv2.setNumThreads(threads)
            row.append(rate(step, data, args.repeat))
        cv2.setNumThreads(default_threads)
        results[name] = row[0]
        print(f"{name:34s} {row[0]:10.0f} s/s {row[1]:10.0f} s/s")
    measured = results["window -> CLAHE -> resize 224"]
    print(
        f"window -> CLAHE -> resize 224 on one thread: {measured:.0f} slices/s, "
        f"{measured / DESIGN_REFERENCE:.2f}x the design reference of {DESIGN_REFERENCE:.0f} slices/s"
    )
    print(f"denoise costs {1000 / results['window -> denoise -> resize 224']:.0f} ms per slice on one thread")


if __name__ == "__main__":
    main()
