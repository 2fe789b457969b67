"""Throughput, memory and rotation cost of sealed objects (common/crypto), next to their references.

Prints, in one run:

1. In memory, a 256 MiB object: ``AESGCM.encrypt``/``decrypt`` on 1 MiB buffers (the bare primitive),
   then the recipe: ``seal_stream``/``open_stream`` from memory into a consuming sink, and
   ``seal_bytes``/``open_bytes``, which must also produce a fresh 256 MiB result; the bare primitive
   writing into a fresh 256 MiB result is printed as that allocation's reference. Target >= 0.8.
2. Sealing a 1 GiB file to disk with ``seal_file`` from a source stream, next to writing the same bytes
   unencrypted through the same atomic writer (temporary file, fsync, rename): with the same
   readinto + write loop minus the cipher, and with ``copy_file_range`` (the kernel moves the bytes).
   Target >= 0.9. Every round is printed: this disk's speed varies several-fold from run to run.
3. Peak memory of streaming seal and open for two object sizes (tracemalloc and max RSS, in a fresh
   child process per size): it must not grow with the object.
4. ``rewrap_file`` time per object for small and large objects: rotation costs per object, not per byte.
5. ``openssl speed -evp aes-256-gcm -seconds 1`` when openssl is installed.

Each timing is the best of several interleaved rounds (the machines are shared and noisy); the disk
runs start after ``sync`` so one run's write-back does not bill the next. Files go to a temporary
directory that is removed at the end.

Run: ``/work/venv/bin/python benchmarks/bench_crypto.py [--quick]``.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.crypto import (
    generate_key,
    open_bytes,
    open_file,
    open_stream,
    rewrap_file,
    seal_bytes,
    seal_file,
    seal_stream,
)
from common.fsio import atomic_writer

MiB = 1 << 20
CHUNK = MiB


class Discard(io.RawIOBase):
    """A sink that consumes whatever it is given (stands for the next stage of a pipeline)."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        return len(data)  # type: ignore[arg-type]


class Zeros(io.RawIOBase):
    """A source of ``size`` zero bytes that never holds more than one read's worth."""

    def __init__(self, size: int) -> None:
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), self._left)
        buffer[:size] = bytes(size)
        self._left -= size
        return size


@dataclass(frozen=True)
class Timing:
    """Best wall-clock and best process-CPU seconds over the rounds (CPU time is steadier under load)."""

    wall: float
    cpu: float
    walls: tuple[float, ...]


def best_of(
    rounds: int, *runs: Callable[[], object], before: Callable[[], None] | None = None
) -> list[Timing]:
    """Run each callable ``rounds`` times, interleaved; return each one's best times."""
    walls: list[list[float]] = [[] for _ in runs]
    cpus: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            if before is not None:
                before()
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            walls[i].append(time.perf_counter() - start)
            cpus[i].append(time.process_time() - start_cpu)
    return [Timing(min(w), min(c), tuple(w)) for w, c in zip(walls, cpus, strict=True)]


def rate(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e9:6.2f} GB/s"


# ---- 1. in memory ----------------------------------------------------------------------------------


def bench_memory(size: int, rounds: int) -> None:
    print(f"\n[1] in memory, one {size // MiB} MiB object, 1 MiB chunks (best of {rounds})")
    key = generate_key()
    data = os.urandom(size)
    view = memoryview(data)
    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    blob = seal_bytes(key, data, object_id="bench")
    raw_sealed = [aead.encrypt(nonce, view[i : i + CHUNK], None) for i in range(0, size, CHUNK)]

    def raw_encrypt() -> None:
        for i in range(0, size, CHUNK):
            aead.encrypt(nonce, view[i : i + CHUNK], None)

    def raw_decrypt() -> None:
        for chunk in raw_sealed:
            aead.decrypt(nonce, chunk, None)

    def raw_encrypt_fresh() -> bytes:
        return b"".join([aead.encrypt(nonce, view[i : i + CHUNK], None) for i in range(0, size, CHUNK)])

    def stream_seal() -> None:
        seal_stream(key, io.BytesIO(data), cast(BinaryIO, Discard()), object_id="bench")

    def stream_open() -> None:
        open_stream(key, io.BytesIO(blob), cast(BinaryIO, Discard()), object_id="bench")

    def bytes_seal() -> bytes:
        return seal_bytes(key, data, object_id="bench")

    def bytes_open() -> bytes:
        return open_bytes(key, blob, object_id="bench")

    enc, dec, fresh, s_seal, s_open, b_seal, b_open = best_of(
        rounds, raw_encrypt, raw_decrypt, raw_encrypt_fresh, stream_seal, stream_open, bytes_seal, bytes_open
    )
    rows: list[tuple[str, Timing, Timing | None]] = [
        ("raw AESGCM.encrypt, 1 MiB buffers", enc, None),
        ("raw AESGCM.decrypt, 1 MiB buffers", dec, None),
        ("seal_stream memory -> sink", s_seal, enc),
        ("open_stream memory -> sink", s_open, dec),
        (f"raw encrypt into a fresh {size // MiB} MiB bytes", fresh, enc),
        ("seal_bytes (fresh result)", b_seal, enc),
        ("open_bytes (fresh result)", b_open, dec),
    ]
    print(f"  {'':40s} {'wall':>12s} {'cpu':>12s}   ratio to raw: wall   cpu")
    for label, timing, reference in rows:
        line = f"  {label:40s} {rate(size, timing.wall)} {rate(size, timing.cpu)}"
        if reference is not None:
            line += f"   {reference.wall / timing.wall:17.2f} {reference.cpu / timing.cpu:5.2f}"
        print(line)
    print(
        f"  seal_bytes / open_bytes vs the raw cipher writing into fresh memory (same allocation): "
        f"{fresh.wall / b_seal.wall:.2f} / {fresh.wall / b_open.wall:.2f}"
    )


# ---- 2. to disk ------------------------------------------------------------------------------------


def _settle() -> None:
    """Flush earlier writes so that their write-back is not billed to the next run."""
    os.sync()


def bench_disk(workdir: Path, size: int, rounds: int) -> None:
    print(f"\n[2] sealing a {size // MiB} MiB file to disk from a source stream (best of {rounds})")
    key = generate_key()
    source = workdir / "source.bin"
    block = os.urandom(CHUNK)
    with open(source, "wb") as handle:
        for _ in range(size // CHUNK):
            handle.write(block)
    outputs = [workdir / "plain.bin", workdir / "kernel.bin", workdir / "sealed.fseal"]

    def clear_and_settle() -> None:
        for path in outputs:
            path.unlink(missing_ok=True)
        _settle()

    def write_plain() -> None:
        # The same loop as sealing minus the cipher: 1 MiB reused buffer, readinto, write.
        buffer = memoryview(bytearray(CHUNK))
        with open(source, "rb", buffering=0) as src, atomic_writer(outputs[0]) as dst:
            while filled := src.readinto(buffer):
                dst.write(buffer[:filled])

    def write_kernel() -> None:
        # The best an unencrypted copy can do: the kernel moves the bytes (copy_file_range).
        with open(source, "rb") as src, atomic_writer(outputs[1]) as dst:
            dst.flush()
            while os.copy_file_range(src.fileno(), dst.fileno(), 1 << 30):
                pass

    def write_sealed() -> None:
        with open(source, "rb") as src:
            seal_file(key, src, outputs[2], object_id="bench-file")

    plain, kernel, sealed = best_of(rounds, write_plain, write_kernel, write_sealed, before=clear_and_settle)
    for label, timing in (
        ("unencrypted, readinto + write, fsync + rename", plain),
        ("unencrypted, copy_file_range, fsync + rename", kernel),
        ("seal_file, fsync + rename", sealed),
    ):
        each = " ".join(f"{size / wall / 1e9:.2f}" for wall in timing.walls)
        print(f"  {label:48s} {rate(size, timing.wall)}   (every round: {each})")
    print(
        f"  ratio seal_file / unencrypted: {plain.wall / sealed.wall:.2f} (readinto + write), "
        f"{kernel.wall / sealed.wall:.2f} (copy_file_range)"
    )
    start = time.perf_counter()
    opened = open_file(key, outputs[2], object_id="bench-file")
    t_open = time.perf_counter() - start
    assert len(opened) == size
    del opened
    print(f"  {'open_file back into memory':48s} {rate(size, t_open)}")
    for path in (source, *outputs):
        path.unlink(missing_ok=True)


# ---- 3. peak memory --------------------------------------------------------------------------------


def _vm_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field in KiB (VmRSS now, VmHWM peak), or max RSS elsewhere.

    ``ru_maxrss`` is not used on Linux: a child started with fork + exec inherits its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_peak(size: int, workdir: Path) -> None:
    """In a fresh process: stream-seal ``size`` bytes to a file, stream-open it back; print the peaks."""
    key = generate_key()
    path = workdir / f"peak-{size}.fseal"
    rss_before = _vm_kib("VmRSS") * 1024
    tracemalloc.start()
    seal_file(key, cast(BinaryIO, Zeros(size)), path, object_id="peak")
    _, seal_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    with open(path, "rb") as src:
        opened = open_stream(key, src, cast(BinaryIO, Discard()), object_id="peak")
    _, open_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert opened == size
    path.unlink()
    print(f"{seal_peak} {open_peak} {rss_before} {_vm_kib('VmHWM') * 1024}")


def bench_peak(workdir: Path, sizes: tuple[int, int]) -> None:
    print("\n[3] peak memory of streaming seal_file / open_stream (fresh child process per size)")
    for size in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child-peak", str(size), "--workdir", str(workdir)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        seal_peak, open_peak, rss_before, rss_peak = (int(v) for v in out)
        print(
            f"  object {size // MiB:5d} MiB: traced peak seal {seal_peak / MiB:5.2f} MiB, "
            f"open {open_peak / MiB:5.2f} MiB; process RSS {rss_before / MiB:5.1f} MiB before, "
            f"peak {rss_peak / MiB:5.1f} MiB"
        )


# ---- 4. rotation -----------------------------------------------------------------------------------


def bench_rewrap(workdir: Path, count: int, sizes: tuple[int, int]) -> None:
    print(f"\n[4] rewrap_file on {count} objects of each size (journal, pwrite, 4 fsyncs per object)")
    keys = (generate_key(), generate_key())
    folders = {size: workdir / f"rewrap-{size}" for size in sizes}
    paths = {size: [folders[size] / f"{i:04d}.fseal" for i in range(count)] for size in sizes}
    for size in sizes:
        for path in paths[size]:
            seal_file(keys[0], cast(BinaryIO, Zeros(size)), path, object_id=path.stem)
    _settle()
    # Rotate each set twice (key 0 -> 1 -> 0) in the order small, large, large, small, so that any
    # drift of the disk (write-back of the objects just created) bills both sizes alike.
    holder = dict.fromkeys(sizes, 0)
    best = dict.fromkeys(sizes, float("inf"))
    for size in (sizes[0], sizes[1], sizes[1], sizes[0]):
        old, new = keys[holder[size]], keys[1 - holder[size]]
        start = time.perf_counter()
        for path in paths[size]:
            rewrap_file(path, old, new, object_id=path.stem)
        best[size] = min(best[size], time.perf_counter() - start)
        holder[size] = 1 - holder[size]
    for size in sizes:
        first = paths[size][0]
        assert len(open_file(keys[holder[size]], first, object_id=first.stem)) == size
        shutil.rmtree(folders[size])
        elapsed = best[size]
        print(
            f"  {size // 1024:8d} KiB objects: {elapsed:6.2f} s for {count}, "
            f"{1000 * elapsed / count:6.2f} ms per object "
            f"({count * size / elapsed / 1e9:7.2f} GB/s of payload 'rotated')"
        )
    print(
        f"  per-object time, large / small: {best[sizes[1]] / best[sizes[0]]:.2f} "
        f"(size ratio {sizes[1] // sizes[0]})"
    )


# ---- 5. openssl ------------------------------------------------------------------------------------


def bench_openssl() -> None:
    print("\n[5] openssl speed -evp aes-256-gcm -seconds 1")
    openssl = shutil.which("openssl")
    if openssl is None:
        print("  openssl not found")
        return
    result = subprocess.run(
        [openssl, "speed", "-evp", "aes-256-gcm", "-seconds", "1"], capture_output=True, text=True
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    for line in lines[-3:]:
        print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller objects and fewer rounds (about 30 s)")
    parser.add_argument("--child-peak", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_peak is not None:
        child_peak(args.child_peak, args.workdir)
        return

    if args.quick:
        mem_size, disk_size, rounds = 32 * MiB, 128 * MiB, 3
        peak_sizes, rewrap_count, rewrap_sizes = (4 * MiB, 32 * MiB), 20, (16 * 1024, 4 * MiB)
    else:
        mem_size, disk_size, rounds = 256 * MiB, 1024 * MiB, 5
        peak_sizes, rewrap_count, rewrap_sizes = (16 * MiB, 256 * MiB), 50, (16 * 1024, 16 * MiB)
    print(f"bench_crypto: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, quick={args.quick}")
    workdir = Path(tempfile.mkdtemp(prefix="fedscan-bench-crypto-"))
    try:
        bench_memory(mem_size, rounds)
        bench_disk(workdir, disk_size, rounds)
        bench_peak(workdir, peak_sizes)
        bench_rewrap(workdir, rewrap_count, rewrap_sizes)
        bench_openssl()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
