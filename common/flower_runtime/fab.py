"""Building an app bundle (FAB) exactly as Flower's ``flwr run`` builds it from a directory.

``flwr run APP_DIR`` zips the directory with Flower's own builder (fixed timestamps, its include and
exclude rules, a ``.info/CONTENT`` list); a signed bundle (:mod:`common.app_bundle`) must hash to what
the SuperLink receives, so fedscan builds it with the same function rather than its own zip.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["build_fab"]


def build_fab(app_dir: Path) -> bytes:
    """The bundle bytes Flower's ``flwr run`` builds from ``app_dir`` (deterministic)."""
    from flwr.cli.build import build_fab_from_disk

    return bytes(build_fab_from_disk(Path(app_dir)))
