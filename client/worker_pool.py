"""Files processed in parallel across cores: a process pool that survives bad files and dies with its parent.

:func:`process_files` maps a per-file function over relative paths in worker processes and yields the
results as chunks complete. The function is built once per worker (``make`` is called in each worker
after ``fork``, so large read-only state such as a label table or the store's index is inherited, not
pickled); results come back through the pool's pipe (records as NumPy arrays, never temporary files).

Robustness, because the inputs are whatever a PACS exported:

- **a crashing decoder**: a file that kills its worker (a segmentation fault in a C decoder on corrupt
  data) breaks the pool. The chunks that were in flight are re-run one file at a time, alone in a
  fresh pool, so the file that crashes again is identified and reported (``on_crash``), and every
  other file still completes.
- **Ctrl-C**: workers ignore SIGINT; the parent stops submitting, cancels what has not started and
  lets the few running chunks finish, then raises ``KeyboardInterrupt`` for its caller to commit.
- **the parent killed** (SIGKILL): each worker asks the kernel to kill it when its parent dies
  (Linux ``PR_SET_PDEATHSIG``), so no orphan keeps decoding.
- **a hung decoder**: if no chunk completes for ``stall_seconds`` the run fails with an error naming
  the files in flight, instead of waiting forever.

Speed: each worker keeps freed memory for reuse (:func:`_keep_freed_memory`). By default glibc hands
every freed block over 128 KiB back to the kernel, so each file's pixel buffers (a 512 x 512 slice
passes through half a dozen 0.5-2 MiB arrays) come back as fresh pages: about 1,000 page faults per
slice, which cost more than the pixel arithmetic itself (measured: 7 ms per CT slice instead of 3).

In-flight work is bounded (a few chunks per worker), so memory does not grow with the folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_all_start_methods, get_context
from typing import Final, TypeVar

from common.errors import InputError

__all__ = ["default_workers", "process_files"]

T = TypeVar("T")

_PR_SET_PDEATHSIG: Final = 1
_M_TRIM_THRESHOLD: Final = -1  # glibc mallopt parameters
_M_MMAP_THRESHOLD: Final = -3
_CHUNK_FILES: Final = 8
_CHUNKS_PER_WORKER: Final = 3
_POLL_SECONDS: Final = 0.5

_WORKER_FUNCTION: Callable[[str], object] | None = None


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _keep_freed_memory() -> None:
    """Ask glibc to serve allocations up to 64 MiB from the heap and to keep up to 256 MiB of freed
    heap, so that same-sized pixel buffers reuse warm pages (see the module docstring). Linux/glibc
    only; elsewhere nothing happens. Workers only: it changes a process-wide allocator setting."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)


def _init_worker(make: Callable[[], Callable[[str], object]], parent: int) -> None:
    global _WORKER_FUNCTION
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    _keep_freed_memory()
    warnings.simplefilter("ignore")  # pydicom warns about odd but readable files; reasons are reported
    # OpenCV runs single-threaded here: the parent set it before forking (see _Pool). Never reconfigure
    # OpenCV's thread pool in a forked child: it waits for the parent's pool threads, which do not
    # exist in the child, forever.
    _WORKER_FUNCTION = make()


def _opencv_single_threaded() -> int | None:
    """Stop OpenCV's thread pool in this process (before forking); return the previous thread count.

    One process per core already; OpenCV threads would oversubscribe. More importantly, a child forked
    while the parent's OpenCV pool threads exist inherits a pool whose threads are gone, and hangs the
    first time it uses (or reconfigures) it. With one thread, OpenCV keeps no pool threads at all.
    """
    if "cv2" not in sys.modules:
        return None  # not imported: workers import it fresh, with no inherited pool
    import cv2

    previous = int(cv2.getNumThreads())
    cv2.setNumThreads(1)
    return previous


def _restore_opencv_threads(previous: int | None) -> None:
    if previous is not None and "cv2" in sys.modules:
        import cv2

        cv2.setNumThreads(previous)


def _run_chunk(chunk: list[str]) -> list[object]:
    assert _WORKER_FUNCTION is not None, "worker not initialised"
    return [_WORKER_FUNCTION(path) for path in chunk]


def _chunks(paths: list[str], size: int) -> deque[list[str]]:
    return deque(paths[i : i + size] for i in range(0, len(paths), size))


class _Pool:
    """A fork-based process pool that can be rebuilt after a worker crash."""

    def __init__(self, make: Callable[[], Callable[[str], object]], workers: int) -> None:
        self._make = make
        self._workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._opencv_threads: int | None = None

    def submit(self, chunk: list[str]) -> Future[list[object]]:
        if self._executor is None:
            if self._opencv_threads is None:  # a rebuilt pool keeps the count saved first
                self._opencv_threads = _opencv_single_threaded()
            # fork: workers start in milliseconds and inherit the read-only state of `make`
            method = "fork" if "fork" in get_all_start_methods() else None
            self._executor = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=get_context(method),
                initializer=_init_worker,
                initargs=(self._make, os.getpid()),
            )
        return self._executor.submit(_run_chunk, chunk)

    def reset(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def close(self, *, cancel: bool = False) -> None:
        """Shut the pool down; with ``cancel``, stop its workers now instead of letting chunks finish.

        Cancelling is for Ctrl-C and a stuck decoder: the chunks in flight are lost (their records
        were never committed), and a hung worker would otherwise keep the shutdown waiting forever.
        """
        if self._executor is None:
            return
        if cancel:
            # ProcessPoolExecutor has no public way to stop busy workers before Python 3.14
            # (terminate_workers); these are this pool's own children, stopped by their pids.
            processes = dict(getattr(self._executor, "_processes", None) or {})
            for process in processes.values():
                with contextlib.suppress(Exception):
                    process.kill()
        self._executor.shutdown(wait=True, cancel_futures=cancel)
        self._executor = None
        _restore_opencv_threads(self._opencv_threads)
        self._opencv_threads = None


def process_files(
    make: Callable[[], Callable[[str], T]],
    paths: list[str],
    *,
    workers: int,
    on_crash: Callable[[str], T],
    stall_seconds: float = 600.0,
) -> Iterator[T]:
    """Yield ``fn(path)`` for every path, in completion order, with ``fn = make()`` built per process.

    Parameters
    ----------
    make : callable
        Builds the per-file function; called once per worker process (or once, in process, when
        ``workers`` is 1).
    paths : list of str
        The files to process.
    workers : int
        Processes to use; 1 runs everything in this process (no crash isolation).
    on_crash : callable
        Makes the result for a file that killed its worker process twice.
    stall_seconds : float
        Longest wait for any chunk to complete before giving up.

    Raises
    ------
    InputError
        If no chunk completed for ``stall_seconds`` (a decoder hangs).
    KeyboardInterrupt
        On Ctrl-C, after the pool has been shut down; results yielded so far are complete.
    """
    if workers <= 1:
        fn = make()
        for path in paths:
            yield fn(path)
        return
    pool = _Pool(make, workers)  # type: ignore[arg-type]
    todo = _chunks(paths, _CHUNK_FILES)
    suspects: deque[str] = deque()  # files of chunks that were in flight when a worker died
    in_flight: dict[Future[list[object]], list[str]] = {}
    solo: set[Future[list[object]]] = set()  # suspects running alone
    limit = workers * _CHUNKS_PER_WORKER
    cancel = True
    try:
        while todo or suspects or in_flight:
            # Suspect files run alone, so that a crash names its file; ordinary chunks fill the pool.
            if suspects and not in_flight:
                path = suspects.popleft()
                future = pool.submit([path])
                in_flight[future] = [path]
                solo.add(future)
            while not suspects and todo and len(in_flight) < limit:
                chunk = todo.popleft()
                in_flight[pool.submit(chunk)] = chunk
            done = _wait_any(in_flight, stall_seconds)
            broken = False
            for future in done:
                chunk = in_flight.pop(future)
                try:
                    results = future.result()
                except BrokenProcessPool:
                    broken = True
                    if future in solo:
                        yield on_crash(chunk[0])  # it ran alone and killed its worker: the culprit
                    else:
                        suspects.extend(chunk)
                    continue
                finally:
                    solo.discard(future)
                yield from results  # type: ignore[misc]
            if broken:
                for chunk in in_flight.values():  # every other chunk in flight failed with it
                    suspects.extend(chunk)
                in_flight.clear()
                solo.clear()
                pool.reset()
        cancel = False
    finally:
        pool.close(cancel=cancel)


def _wait_any(
    in_flight: dict[Future[list[object]], list[str]], stall_seconds: float
) -> set[Future[list[object]]]:
    """Wait until a chunk completes; InputError naming the files in flight after ``stall_seconds``."""
    deadline = time.monotonic() + stall_seconds
    while True:
        done, _ = wait(in_flight, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
        if done:
            return done
        if time.monotonic() >= deadline:
            files = ", ".join(path for chunk in in_flight.values() for path in chunk)
            raise InputError(
                f"No file completed in {stall_seconds:.0f} s; a decoder seems stuck on one of: {files}."
            )
