"""``defer_imports``: a deferred module costs nothing until used, then behaves as the real one."""

from __future__ import annotations

from collections.abc import Callable


def test_pydicom_imports_without_running_its_downloader_modules(fresh_python: Callable[[str], str]) -> None:
    out = fresh_python(
        """
        import sys
        from common.deferred_imports import PYDICOM_UNUSED_IMPORTS, defer_imports
        print(defer_imports(*PYDICOM_UNUSED_IMPORTS))
        import pydicom
        ran = [m for m in ("requests.adapters", "urllib3", "http.client") if m in sys.modules]
        print(ran)
        """
    )
    assert out.strip().splitlines() == ["['requests', 'urllib.request']", "[]"]


def test_a_deferred_module_loads_on_first_use(fresh_python: Callable[[str], str]) -> None:
    out = fresh_python(
        """
        import sys
        from common.deferred_imports import defer_imports
        defer_imports("requests", "urllib.request")
        import requests, urllib.request
        print("requests.adapters" in sys.modules)
        session = requests.Session()
        print(type(session).__name__, "requests.adapters" in sys.modules)
        print(urllib.request.pathname2url("/a b"))
        """
    )
    assert out.strip().splitlines() == ["False", "Session True", "/a%20b"]


def test_modules_already_imported_or_missing_are_left_alone(fresh_python: Callable[[str], str]) -> None:
    out = fresh_python(
        """
        import json
        from common.deferred_imports import defer_imports
        print(defer_imports("json", "no_such_module_xyz"))
        print(type(json.dumps).__name__)
        try:
            import no_such_module_xyz
        except ImportError as exc:
            print(type(exc).__name__)
        """
    )
    assert out.strip().splitlines() == ["['no_such_module_xyz']", "function", "ModuleNotFoundError"]
