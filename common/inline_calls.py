"""Run Flower's quick request steps on the server's event loop instead of handing each to a worker thread.

Flower 1.42's SuperLink and SuperNode write their Fleet and Runtime routes' dependencies and handlers
as plain functions, and FastAPI (dependencies) and Flower's protobuf route (handlers) run every plain
function in the thread pool. So each request made five to seven thread hand-offs: the dependencies
(return the app's state or handlers, the parsed protobuf request, whether node authentication is on;
check the peer's version header, the task token, an executor's signature), then the handler. Each
hand-off wakes a worker thread and passes the interpreter lock back and forth. Measured on Flower's
SuperNode app (ASGI transport, client included), a task's ``acquire-task`` took 3.1-3.2 ms of CPU
with the dependencies' hand-offs and 1.4 ms without, and the handler's own hand-off is another
~0.36 ms; a deployed SecAgg+ round makes about 650 such requests on the same two cores as the
training.

:func:`inline_flower_dependencies` and :func:`inline_quick_handlers` make FastAPI and Flower call *those*
functions directly, chosen by identity from the lists below (read in Flower 1.42):

* :data:`INLINE_DEPENDENCIES`: attribute and dictionary look-ups, header parsing, an HMAC check, and
  the state's token look-up (an in-memory dict, or one indexed SQLite query when the state is in a file).
* :data:`INLINE_HANDLERS`: the handlers that store or hand over what they are given and answer at once
  (push a message, an object or a task's output; confirm a receipt; a heartbeat; a task's input; the
  list of nodes). The handlers that may *hold* a poll (:mod:`common.flower_wakeups`: pull messages,
  pull an object, acquire a task), and every other route's, stay in the thread pool.

What each function computes, raises and returns is unchanged; only the thread it runs on differs.
Patched in the process that calls them (fedscan's launcher for ``flower-superlink`` and
``flower-supernode``, :mod:`common.flower_polling`), only on Flower 1.42; another Flower, or a FastAPI
or Flower that no longer runs these through a module-level ``run_in_threadpool``, is left alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

__all__ = [
    "CHECKED_FLOWER",
    "INLINE_DEPENDENCIES",
    "INLINE_HANDLERS",
    "inline_flower_dependencies",
    "inline_quick_handlers",
]

#: The Flower release whose functions were read.
CHECKED_FLOWER: Final = "1.42."
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
#: Flower 1.42's Fleet and Runtime route handlers that never wait: module -> names.
INLINE_HANDLERS: Final[dict[str, tuple[str, ...]]] = {
    "flwr.supercore.routers.runtime.router": (
        "send_task_heartbeat",
        "pull_task_input",
        "push_task_output",
        "push_object",
        "confirm_message_received",
        "push_messages",
        "get_nodes",
    ),
    "flwr.superlink.routers.fleet.router": (
        "fleet_send_node_heartbeat",
        "fleet_push_messages",
        "fleet_push_object",
        "fleet_confirm_message_received",
    ),
}
#: Where FastAPI runs plain-function dependencies, and Flower's protobuf route its handlers.
_DEPENDENCY_RUNNER: Final = "fastapi.dependencies.utils"
_HANDLER_RUNNER: Final = "flwr.supercore.protobuf.routing"
_MARK: Final = "__fedscan_inline__"


def inline_flower_dependencies() -> list[str]:
    """Make FastAPI in this process call Flower's quick dependencies in place.

    Returns the dependencies made inline (empty if Flower is not 1.42 or not laid out as it). Idempotent.
    """
    return _inline(_DEPENDENCY_RUNNER, INLINE_DEPENDENCIES)


def inline_quick_handlers() -> list[str]:
    """Make Flower's protobuf routes in this process call the handlers that never wait in place.

    Returns the handlers made inline (empty if Flower is not 1.42 or not laid out as it). Idempotent.
    """
    return _inline(_HANDLER_RUNNER, INLINE_HANDLERS)


def _inline(runner_module: str, targets: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Replace ``runner_module.run_in_threadpool`` by one that calls ``targets`` directly."""
    try:
        from flwr.supercore.version import package_version

        runner = importlib.import_module(runner_module)
    except ImportError:
        return []
    if not package_version.startswith(CHECKED_FLOWER):
        return []
    pooled: Callable[..., Awaitable[Any]] | None = getattr(runner, "run_in_threadpool", None)
    if pooled is None:
        return []
    pooled = getattr(pooled, _MARK, pooled)
    functions: set[int] = set()
    classes: list[type] = []
    found: list[str] = []
    for module_name, names in targets.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return []
        for name in names:
            target = getattr(module, name, None)
            if target is None:
                return []
            if isinstance(target, type):
                classes.append(target)
            else:
                functions.add(id(target))
            found.append(f"{module_name}.{name}")
    instance_of = tuple(classes)

    async def run_in_place_or_pool(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if id(func) in functions or isinstance(func, instance_of):
            return func(*args, **kwargs)
        return await pooled(func, *args, **kwargs)

    setattr(run_in_place_or_pool, _MARK, pooled)
    setattr(runner, "run_in_threadpool", run_in_place_or_pool)  # noqa: B010 - a module attribute
    return found
