"""Freed tensor memory stays in the training process (common.models.heap), so steps stop page-faulting."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A training step in miniature: several buffers of a few MiB written, then all freed at once. Plain
# malloc'd buffers, as torch's CPU allocator makes them (numpy would ask for transparent huge pages,
# which makes the page-fault count depend on the kernel's free huge pages).
_STEPS = textwrap.dedent(
    """
    import resource, sys
    if sys.argv[1] == "retain":
        from common.models.heap import retain_freed_memory
        assert retain_freed_memory()
    faults = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffers = [bytearray(4 << 20) for _ in range(6)]  # zero-filled: every page written
        del buffers
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(max(faults[1:]))
    """
)


def _faults_after_first_step(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _STEPS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_retained_memory_is_reused_without_page_faults() -> None:
    default, retained = _faults_after_first_step("default"), _faults_after_first_step("retain")
    assert default > 1000, "the scenario no longer makes glibc hand memory back; the test proves nothing"
    assert retained < 100


def test_importing_the_torch_models_retains_freed_memory() -> None:
    from common.models import heap, torch_model  # noqa: F401  (the import applies it)

    assert heap.retain_freed_memory.cache_info().currsize == 1
