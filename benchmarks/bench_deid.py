"""Benchmark: fedscan's de-identification CLI against dicom-anonymizer on the same real files.

What it does, in one run:

1. builds a folder of real scanner files (the pydicom and pydicom-data test files fedscan's default
   policy accepts: CT, MR, CR, enhanced MR, RT dose..., every transfer syntax), replicated to
   ``--files`` files, each with its own SOP Instance UID and planted PHI;
2. installs ``dicom-anonymizer`` from PyPI into a throwaway virtual environment in a temp dir
   (or uses ``--anonymizer-venv``);
3. runs both command lines on that folder, alternately, ``--repeats`` times, and keeps each tool's
   best wall-clock time (process start-up and imports included, as a user would see them);
4. checks that none of the planted PHI and none of the original UIDs is in fedscan's output;
5. prints files/s and MB/s (input bytes) for both and the ratio.

fedscan runs through its CLI, ``fedscan site deidentify IN OUT --workers N`` (the secret from
``FEDSCAN_DEID_SECRET``); its outputs are written atomically and synced to disk once at the end;
dicom-anonymizer's are not synced.

Usage::

    python benchmarks/bench_deid.py [--files 500] [--workers 2] [--repeats 3] [--anonymizer-venv DIR]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import warnings
from pathlib import Path

PHI = ("Smithwick", "Johnathan", "MRN99812345", "Saint Elsewhere", "Kildare", "Zorblatt")


def _accepted_sources() -> list[Path]:
    """Test files that fedscan's default profile de-identifies (so both tools get the same work)."""
    from pydicom.data import get_testdata_files

    from client.deid import Deidentifier, DeidOptions, DeidRejected
    from client.deid.folder import read_dataset

    deid = Deidentifier(os.urandom(32), DeidOptions())
    accepted = []
    for name in sorted(set(get_testdata_files())):
        path = Path(name)
        if not path.is_file():
            continue
        try:
            deid.deidentify(read_dataset(path.read_bytes()))
        except DeidRejected:
            continue
        accepted.append(path)
    return accepted


def build_folder(target: Path, count: int) -> tuple[int, list[str]]:
    """Write ``count`` files with planted PHI into ``target``; return total bytes and the SOP UIDs."""
    import pydicom

    sources = _accepted_sources()
    datasets = []
    for path in sources:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets.append(pydicom.dcmread(path))
    target.mkdir(parents=True)
    uids: list[str] = []
    total = 0
    for index in range(count):
        ds = copy.deepcopy(datasets[index % len(datasets)])
        ds.PatientName = "Smithwick^Johnathan"
        ds.PatientID = "MRN99812345"
        ds.InstitutionName = "Saint Elsewhere Hospital"
        ds.ReferringPhysicianName = "Kildare^James"
        ds.StudyDescription = "CT for Johnathan Smithwick"
        ds.ImageComments = "called Zorblatt"
        block = ds.private_block(0x0011, "BENCH PHI", create=True)
        block.add_new(0x01, "LO", "Zorblatt Smithwick")
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.4242.{index + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        uids.append(ds.SOPInstanceUID)
        path = target / f"IM{index:05d}"  # PACS style: no extension
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(path)
        total += path.stat().st_size
    print(f"input: {count} files, {total / 1e6:.1f} MB, from {len(sources)} distinct real files")
    return total, uids


def install_anonymizer(where: Path) -> Path:
    """Create a virtual environment with dicom-anonymizer from PyPI; return its command."""
    print("installing dicom-anonymizer into a throwaway virtual environment ...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    pip = where / "bin" / "pip"
    quiet = ["--quiet", "--disable-pip-version-check"]
    subprocess.run([str(pip), "install", *quiet, "dicom-anonymizer"], check=True)
    command = where / "bin" / "dicom-anonymizer"
    if not command.exists():
        raise SystemExit("dicom-anonymizer did not install a 'dicom-anonymizer' command")
    return command


def _timed(command: list[str], env: dict[str, str]) -> float:
    os.sync()  # start each run with no dirty pages left by the previous one
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def leaks(folder: Path, needles: list[bytes]) -> int:
    """Number of output files containing any needle."""
    found = 0
    for path in folder.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            found += any(needle in blob for needle in needles)
    return found


def main() -> int:
    warnings.simplefilter("ignore")  # odd but readable test files make pydicom chatty
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--anonymizer-venv", type=Path, default=None, help="reuse this venv")
    args = parser.parse_args()

    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="bench-deid-") as tmp:
        work = Path(tmp)
        total_bytes, uids = build_folder(work / "in", args.files)
        if args.anonymizer_venv is not None and (args.anonymizer_venv / "bin" / "dicom-anonymizer").exists():
            anonymizer = args.anonymizer_venv / "bin" / "dicom-anonymizer"
        else:
            anonymizer = install_anonymizer(args.anonymizer_venv or work / "anon-venv")

        env = dict(os.environ, FEDSCAN_DEID_SECRET=os.urandom(32).hex(), PYTHONPATH=str(repo))
        ours_best = theirs_best = float("inf")
        for attempt in range(args.repeats):
            for tool in ("fedscan", "dicom-anonymizer"):
                out = work / f"out-{tool}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                if tool == "fedscan":
                    command = [
                        sys.executable,
                        "-m",
                        "common.cli",
                        "site",
                        "deidentify",
                        str(work / "in"),
                        str(out),
                        "--workers",
                        str(args.workers),
                        "--json",
                    ]
                    ours_best = min(ours_best, _timed(command, env))
                else:
                    theirs_best = min(theirs_best, _timed([str(anonymizer), str(work / "in"), str(out)], env))
            print(f"run {attempt + 1}: best so far {ours_best:.2f} s (fedscan), {theirs_best:.2f} s (theirs)")

        ours_out, theirs_out = work / "out-fedscan", work / "out-dicom-anonymizer"
        written = sum(1 for p in ours_out.rglob("*.dcm"))
        needles = [s.encode() for s in PHI] + [uid.encode() for uid in uids]
        our_leaks, their_leaks = leaks(ours_out, needles), leaks(theirs_out, needles)

        mb = total_bytes / 1e6
        print()
        print(f"{'tool':<18}{'files/s':>10}{'MB/s':>10}{'seconds':>10}{'files with PHI':>16}")
        print(
            f"{'fedscan':<18}{args.files / ours_best:>10.1f}{mb / ours_best:>10.1f}"
            f"{ours_best:>10.2f}{our_leaks:>16}"
        )
        print(
            f"{'dicom-anonymizer':<18}{args.files / theirs_best:>10.1f}{mb / theirs_best:>10.1f}"
            f"{theirs_best:>10.2f}{their_leaks:>16}"
        )
        print(
            f"ratio (fedscan / dicom-anonymizer files/s): {theirs_best / ours_best:.2f}x "
            f"on {args.workers} workers; fedscan wrote {written}/{args.files} files"
        )
        if our_leaks or written != args.files:
            print("FAIL: fedscan leaked PHI or skipped files", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
