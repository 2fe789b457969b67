"""Run Flower's request look-ups on the server's event loop instead of handing each to a worker thread.

Flower 1.42's SuperLink and SuperNode declare their Fleet and Runtime routes' dependencies as plain
functions: return the app's state or handlers, the parsed protobuf request, whether node
authentication is on, check the peer's version header, look up the task a token belongs to, check
an executor's signature. FastAPI runs every plain-function dependency in its thread pool, so each
request made four to six thread hand-offs before its handler started, each waking a worker thread
and passing the interpreter lock back and forth: measured on Flower's SuperNode app (ASGI transport,
client included), a task's ``acquire-task`` took 3.2-3.9 ms of CPU with the hand-offs and
1.6-1.8 ms with these look-ups run in place, and a deployed SecAgg+ round makes about 650 such
requests on the same two cores as the training.

:func:`inline_flower_dependencies` makes FastAPI call *those* dependencies directly (by identity:
the functions and classes listed in :data:`INLINE_DEPENDENCIES`, whose code in Flower 1.42 was read:
attribute and dictionary look-ups, header parsing, an HMAC check, and the state's token look-up,
an in-memory dict or one indexed SQLite query). Every other dependency, and every handler (some of
which hold a poll for a second, :mod:`common.flower_runtime.wakeups`), still runs in the thread pool. What
each dependency computes, raises and returns is unchanged; only the thread it runs on differs.

Patched in the process that calls it (fedscan's launcher for ``flower-superlink`` and
``flower-supernode``, :mod:`common.flower_runtime.polling`), only on Flower 1.42; another Flower or a FastAPI
that no longer runs dependencies through ``run_in_threadpool`` is left alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

from common.flower_runtime import is_supported

__all__ = ["INLINE_DEPENDENCIES", "inline_flower_dependencies"]

#: Flower 1.42's quick Fleet and Runtime dependencies: module -> names (functions, or classes whose
#: instances are the dependency).
INLINE_DEPENDENCIES: Final[dict[str, tuple[str, ...]]] = {
    "flwr.supercore.dependencies.runtime": (
        "get_runtime_state",
        "get_runtime_handlers",
        "get_task",
        "SuperExecAuthDependency",
    ),
    "flwr.supercore.dependencies.version": ("VersionDependency",),
    "flwr.supercore.protobuf.translation": ("get_protobuf_request",),
    "flwr.superlink.dependencies.linkstate": ("get_linkstate",),
    "flwr.superlink.routers.fleet.router": ("get_enable_supernode_auth",),
}
_FASTAPI_MODULE: Final = "fastapi.dependencies.utils"
_MARK: Final = "__fedscan_inline__"


def inline_flower_dependencies() -> list[str]:
    """Make FastAPI in this process call Flower's quick dependencies in place.

    Returns the dependencies made inline (empty if Flower is not 1.42 or not laid out as it). Idempotent.
    """
    if not is_supported():
        return []
    try:
        fastapi_utils = importlib.import_module(_FASTAPI_MODULE)
    except ImportError:
        return []
    pooled: Callable[..., Awaitable[Any]] | None = getattr(fastapi_utils, "run_in_threadpool", None)
    if pooled is None:
        return []
    pooled = getattr(pooled, _MARK, pooled)
    functions: set[int] = set()
    classes: set[type] = set()
    found: list[str] = []
    for module_name, names in INLINE_DEPENDENCIES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return []
        for name in names:
            target = getattr(module, name, None)
            if target is None:
                return []
            if isinstance(target, type):
                classes.add(target)
            else:
                functions.add(id(target))
            found.append(f"{module_name}.{name}")
    frozen_classes = tuple(classes)

    async def run_dependency(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if id(func) in functions or isinstance(func, frozen_classes):
            return func(*args, **kwargs)
        return await pooled(func, *args, **kwargs)

    setattr(run_dependency, _MARK, pooled)
    setattr(fastapi_utils, "run_in_threadpool", run_dependency)  # noqa: B010 - a module attribute
    return found
