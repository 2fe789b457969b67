"""Keep freed tensor memory in the training process instead of handing it back to the OS each step.

A CPU training step allocates and frees the same activation and gradient buffers, a few hundred KiB
to tens of MiB each. glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB at start) with
fresh ``mmap`` pages and trims the heap once more than its trim threshold is free at the top, so each
step's buffers were returned to the kernel and faulted back in, page by page, at the next step: on
this project's 2-core machines the small CNN spent about a fifth of its training time on those page
faults (``benchmarks/bench_federation.py``), and how much depended on each process's history (its
dynamic threshold), which made the same work up to 35% slower in one process than in another.

:func:`retain_freed_memory` fixes both thresholds with ``mallopt`` (glibc's documented tunables
``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``): blocks up to 32 MiB (glibc's upper limit on 64-bit)
come from the heap, and up to 256 MiB of free heap stays mapped for reuse. The cost is that a trained
process keeps up to that much memory after training; decrypted data is unaffected (it lives in the
same process's memory either way and is never written to disk). On other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "retain_freed_memory"]

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc refuses more than HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)
TRIM_THRESHOLD = 256 * 1024 * 1024

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3


@functools.cache
def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); False where there is no ``mallopt``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without the symbol)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; fixing either threshold also turns off glibc's dynamic adjustment.
    mmap_set = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mmap_set and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
