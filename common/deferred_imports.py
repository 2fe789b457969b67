"""Defer modules that a dependency imports eagerly but a command never uses.

pydicom imports its test-data downloader when it is imported, and with it ``requests`` and
``urllib.request`` (about 50 ms of start-up here, measured through the CLI), although
de-identification and ingest never download anything. :func:`defer_imports` makes such modules lazy
(the standard library's :class:`importlib.util.LazyLoader`): ``import requests`` still succeeds and
binds the module, but its code runs only when an attribute is first used, so a process that never uses
it never pays for it, and one that does gets the same module.

Call it before the dependency is imported, only in short-lived single-threaded commands: Python 3.11's
lazy modules are not safe to load for the first time from two threads at once.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["PYDICOM_UNUSED_IMPORTS", "defer_imports"]

# What ``import pydicom`` pulls in for ``pydicom.data.download`` (fetching pydicom's test files) only.
PYDICOM_UNUSED_IMPORTS: tuple[str, ...] = ("requests", "urllib.request")


class _DeferringFinder(importlib.abc.MetaPathFinder):
    """Find the named modules as usual, then wrap their loaders in :class:`~importlib.util.LazyLoader`."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # namespace packages and old-style loaders load as usual
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


_FINDER = _DeferringFinder()


def defer_imports(*names: str) -> list[str]:
    """Make the named modules lazy in this process if they are not imported yet; return those deferred."""
    deferred = [name for name in names if name not in sys.modules]
    _FINDER.names.update(deferred)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return deferred
