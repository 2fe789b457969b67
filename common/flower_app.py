"""The manifest-only Flower App both engines are given: components and config keys, no code.

Flower fuses a run's config over the ``[tool.flwr.app.config]`` defaults of an app's
``pyproject.toml``. The simulation engine and ``flwr run`` on a deployment both read that file, so it
is generated here, once, from :class:`common.config.RunConfig` (the one source of truth for the keys;
the repository's own pyproject.toml declares the same, and a test keeps them equal). Each end runs
the fedscan it has installed; the manifest carries no code.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import __version__
from common.config import RunConfig
from common.fsio import write_atomic

__all__ = ["CLIENT_COMPONENT", "SERVER_COMPONENT", "write_app_manifest"]

#: The installed apps a fedscan bundle names (module:attribute).
CLIENT_COMPONENT = "client.client_app:app"
SERVER_COMPONENT = "server.server_app:app"


def write_app_manifest(app_dir: Path) -> Path:
    """Write ``app_dir/pyproject.toml`` (creating ``app_dir``); return its path."""
    lines = [
        "[project]",
        'name = "fedscan"',
        f'version = "{__version__}"',
        'description = "fedscan apps, manifest only: each end runs the fedscan it has installed"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "fedscan"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{SERVER_COMPONENT}"',
        f'clientapp = "{CLIENT_COMPONENT}"',
        "",
        "[tool.flwr.app.config]",
    ]
    # JSON literals are valid TOML for booleans, numbers and basic strings.
    lines += [f"{key} = {json.dumps(value)}" for key, value in RunConfig().to_flower().items()]
    app_dir.mkdir(parents=True, exist_ok=True)
    path = app_dir / "pyproject.toml"
    write_atomic(path, ("\n".join(lines) + "\n").encode())
    return path
