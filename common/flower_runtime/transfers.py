"""Move a message's objects over more connections at once than the machine has cores.

Flower 1.42 sends and fetches a message's objects (the message, its record dict, each record, each
array) one request each, over ``min(FLWR_PRIVATE_MAX_CONCURRENT_OBJ_*, cpu_count)`` threads
(``flwr.supercore.inflatable.inflatable_utils.get_num_workers``): two on a 2-core site, so the
three objects of a SecAgg+ stage message take two round trips and a model message four, at every hop
(ServerApp -> SuperLink -> SuperNode -> ClientApp and back). A transfer thread spends its time
waiting for the other end, not computing, so the core count is not the right bound on a small site
machine; :func:`widen_object_transfers` sets it to ``workers`` (default :data:`TRANSFER_WORKERS`) in
this process and in any process it forks. The requests, their order within an object tree, the
checks and the retries are Flower's, unchanged.

Patched only where Flower 1.42 keeps this function; another Flower is left alone and the caller
told (an empty list), so the worst case is Flower's own pace.
"""

from __future__ import annotations

import importlib
from typing import Final

__all__ = ["TRANSFER_WORKERS", "widen_object_transfers"]

#: Threads per object transfer: a SecAgg+ stage message has 3 objects, a packed model message 7-8.
TRANSFER_WORKERS: Final = 8
_MODULE: Final = "flwr.supercore.inflatable.inflatable_utils"
_MARK: Final = "__fedscan_transfer_workers__"


def widen_object_transfers(workers: int = TRANSFER_WORKERS) -> list[str]:
    """Let each object transfer in this process use up to ``workers`` threads; what was changed.

    Idempotent (a second call sets the new bound). Raises ``ValueError`` for ``workers`` < 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    try:
        module = importlib.import_module(_MODULE)
    except ImportError:
        return []
    if not callable(getattr(module, "get_num_workers", None)):
        return []

    def get_num_workers(max_concurrent: int) -> int:
        """Threads for one transfer: Flower's setting, raised to fedscan's, never the core count."""
        return max(max_concurrent, workers)

    setattr(get_num_workers, _MARK, workers)
    module.get_num_workers = get_num_workers  # type: ignore[attr-defined]
    return [f"{_MODULE}.get_num_workers"]
