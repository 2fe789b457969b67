"""Burned-in text detection: recall on text lines and needless masking of text-free frames.

Renders the test set of ``simulations/text_frames.py`` (identifying text in OpenCV fonts, sizes,
colours and positions over ultrasound, radiograph, CT, screen and interface backgrounds, plus text-free
frames) and runs fedscan's OCR masking on every frame, exactly as ``fedscan site deidentify`` does
under the ``ocr-mask`` policy. Reports, per seed and as median and range over the seeds:

- recall on the tuning fonts and layouts (a line is found when 95% of its ink was blanked);
- recall on the held-out fonts (Triplex, Complex italic, Script) and layouts (right-edge column, dark
  text on a light bottom band), never used while tuning;
- needless masking: the share of text-free frames in which anything was blanked;
- seconds per frame (one ONNX Runtime thread).

Usage::

    nice -n 5 python benchmarks/bench_ocr.py --frames 60 --seeds 3 --rows 480 --cols 640
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from client.deid.ocr import RapidOcrDetector
from simulations.text_frames import (
    HELD_OUT_FONTS,
    HELD_OUT_LAYOUTS,
    render_text_frame,
    score_frames,
    text_free_frame,
)


def _summary(name: str, values: list[float]) -> str:
    return f"{name}: median {statistics.median(values):.4f} (range {min(values):.4f}-{max(values):.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="text frames per seed and set")
    parser.add_argument("--free", type=int, default=60, help="text-free frames per seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--cols", type=int, default=640)
    parser.add_argument("--first-seed", type=int, default=1000, help="seeds never used while tuning")
    args = parser.parse_args()
    detector = RapidOcrDetector()
    tuning, held_out, needless, seconds = [], [], [], []
    lines = [0, 0]
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rng = np.random.default_rng(seed)
        size = {"rows": args.rows, "cols": args.cols}
        texts = [render_text_frame(rng, **size) for _ in range(args.frames)]
        held = [
            render_text_frame(rng, fonts=HELD_OUT_FONTS, layouts=HELD_OUT_LAYOUTS, **size)
            for _ in range(args.frames)
        ]
        free = [text_free_frame(rng, **size) for _ in range(args.free)]
        a, b, c = score_frames(texts, detector), score_frames(held, detector), score_frames(free, detector)
        tuning.append(a.recall)
        held_out.append(b.recall)
        needless.append(c.needless_masking)
        seconds.append((a.seconds_per_frame + b.seconds_per_frame + c.seconds_per_frame) / 3)
        lines[0] += a.lines
        lines[1] += b.lines
        print(
            f"seed {seed}: recall tuning {a.recall:.4f} ({a.lines_found}/{a.lines} lines), held-out "
            f"{b.recall:.4f} ({b.lines_found}/{b.lines}), needless masking {c.needless_masking:.4f} "
            f"({c.text_free_masked}/{c.text_free_frames} frames), {seconds[-1]:.2f} s/frame"
        )
    print(f"{args.seeds} seeds, {args.rows}x{args.cols}, {lines[0]} tuning and {lines[1]} held-out lines")
    print(_summary("recall, tuning fonts and layouts", tuning))
    print(_summary("recall, held-out fonts and layouts", held_out))
    print(_summary("needless masking of text-free frames", needless))
    print(_summary("seconds per frame", seconds))


if __name__ == "__main__":
    main()
