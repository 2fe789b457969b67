"""End-to-end throughput of `fedscan site ingest` (read + de-identify + pixels + seal) on synthetic CT.

Prints, for a synthetic cohort of 512 x 512 int16 CT slices (default 2,000; written once by
``simulations.cohort`` and cached under ``--cohort-dir``) ingested through the real code path
(:func:`client.ingest.ingest_folder`: process pool, de-identification, pixel pipeline, sealed shards):

1. files/s and MB/s with denoising off, against the target of 200 slices/s on 2 cores (ratio);
2. the share of time per stage: read, de-identify, pixels (summed over the workers) and seal (the
   parent: dedupe, streaming the shards through AES-256-GCM, atomic writes and manifest commits);
3. a re-run on the same folder (every file already stored: headers only, nothing added);
4. files/s with non-local-means denoising on, on the first ``--denoise-slices`` files (default 200:
   ``cv2.fastNlMeansDenoising`` costs about 150 ms per 512 x 512 slice, so the whole cohort would
   take minutes for the same figure).

Run under the shared lock, so that other heavy jobs do not disturb the figures:
``flock /tmp/fedscan-heavy.lock python benchmarks/bench_ingest.py [--slices N] [--workers N]``.
``--profile N`` instead profiles N files in one process (cProfile) and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from client.ingest import ingest_folder
from client.ingest_report import IngestReport
from client.pixels import PixelSettings
from client.site import SiteDir
from client.site_init import init_site
from simulations.cohort import CohortSpec, default_scanners, generate_cohort

TARGET = 200.0  # slices/s on 2 cores, denoising off (issue #4)
SIZE = 512


def cohort(root: Path, slices: int, seed: int) -> tuple[Path, Path]:
    """The cached cohort's DICOM folder and labels file, generated on first use."""
    marker = root / "spec.json"
    spec = {"slices": slices, "seed": seed, "size": SIZE, "version": 1}
    dicom, labels = root / "site-1" / "dicom", root / "site-1" / "labels.csv"
    if marker.exists() and json.loads(marker.read_text()) == spec and labels.exists():
        return dicom, labels
    shutil.rmtree(root, ignore_errors=True)
    scanner = default_scanners(2)[1]  # Globex: int16 storage (Pixel Representation 1, 16 bits)
    assert scanner.pixel_representation == 1 and scanner.bits_stored == 16 and scanner.matrix_scale == 1.0
    started = time.perf_counter()
    spec_obj = CohortSpec(
        n_sites=1,
        slices_per_site=slices,
        image_size=SIZE,
        seed=seed,
        scanners=(scanner,),
        slices_per_patient=(4, 12),
    )
    (made,) = generate_cohort(root, spec_obj, workers=os.cpu_count() or 1)
    marker.write_text(json.dumps(spec))
    print(f"generated {made.n_files} CT slices in {time.perf_counter() - started:.0f} s under {root}")
    return dicom, labels


def new_site(root: Path, name: str, image_size: int) -> SiteDir:
    site = init_site(root / name, name)
    site.config_file.write_text(
        site.config_file.read_text().replace("image_size = 64", f"image_size = {image_size}")
    )
    return site


def subset(dicom: Path, labels: Path, count: int, into: Path) -> tuple[Path, Path]:
    """The first ``count`` files (symbolic links) and their labels."""
    folder = into / "dicom"
    folder.mkdir(parents=True)
    lines = labels.read_text().splitlines()
    kept = [lines[0]]
    for line in lines[1 : count + 1]:
        name = line.split(",")[0]
        (folder / name).symlink_to(dicom / name)
        kept.append(line)
    (into / "labels.csv").write_text("\n".join(kept) + "\n")
    return folder, into / "labels.csv"


def show(title: str, report: IngestReport) -> None:
    print(
        f"{title}: {report.files_seen} files in {report.seconds:.2f} s = "
        f"{report.files_per_second:.0f} files/s, {report.megabytes_per_second:.0f} MB/s read; "
        f"{report.records_added} records added, "
        f"{report.already_stored} already stored, {len(report.rejected)} rejected ({report.workers} workers)"
    )


def shares(report: IngestReport) -> None:
    total = sum(report.stage_seconds.values())
    parts = ", ".join(
        f"{stage} {100 * seconds / total:.0f}% ({1000 * seconds / max(report.files_seen, 1):.2f} ms/file)"
        for stage, seconds in report.stage_seconds.items()
    )
    print(f"  time per stage (workers' stages summed over workers, seal in the parent): {parts}")


def profile(dicom: Path, labels: Path, count: int, image_size: int, work: Path) -> None:
    folder, csv = subset(dicom, labels, count, work / "profiled")
    site = new_site(work, "profile", image_size)
    profiler = cProfile.Profile()
    profiler.enable()
    ingest_folder(site, folder, csv, workers=1)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--image-size", type=int, default=64, help="record size (site.toml pixels.image_size)"
    )
    parser.add_argument("--denoise-slices", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cohort-dir", type=Path, default=Path(tempfile.gettempdir()) / "fedscan-bench-ingest"
    )
    parser.add_argument(
        "--profile", type=int, default=0, help="profile this many files in one process instead"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    dicom, labels = cohort(args.cohort_dir, args.slices, args.seed)
    megabytes = sum(p.stat().st_size for p in dicom.iterdir()) / 1e6
    print(
        f"cohort: {args.slices} CT slices {SIZE}x{SIZE} int16, {megabytes:.0f} MB; "
        f"records {args.image_size}px"
    )
    work = Path(tempfile.mkdtemp(prefix="fedscan-bench-ingest-"))
    try:
        if args.profile:
            profile(dicom, labels, args.profile, args.image_size, work)
            return
        site = new_site(work, "site", args.image_size)
        report = ingest_folder(site, dicom, labels, workers=args.workers)
        assert report.records_added == args.slices and not report.rejected, report.summary()
        show("ingest, denoising off", report)
        shares(report)
        rate = report.files_per_second
        verdict = "meets" if rate >= TARGET else "MISSES"
        print(
            f"  target {TARGET:.0f} slices/s on 2 cores: {rate:.0f} slices/s, "
            f"ratio {rate / TARGET:.2f} ({verdict})"
        )

        again = ingest_folder(site, dicom, labels, workers=args.workers)
        assert again.records_added == 0 and again.already_stored == args.slices
        show("re-run on the same folder", again)

        count = min(args.denoise_slices, args.slices)
        folder, csv = subset(dicom, labels, count, work / "denoise-input")
        noisy = new_site(work, "denoise", args.image_size)
        settings = PixelSettings(size=args.image_size, denoise=True)
        denoised = ingest_folder(noisy, folder, csv, workers=args.workers, pixels=settings)
        show(f"ingest, denoising on (first {count} slices only)", denoised)
        shares(denoised)
        print(f"  denoising on / off: {denoised.files_per_second / rate:.2f}x the files/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
