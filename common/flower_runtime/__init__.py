"""Every adaptation of Flower that fedscan makes, behind one supported-version gate.

fedscan runs Flower's own processes (SuperLink, SuperNode, their executors) and changes their
behaviour in two kinds of ways:

* **security gates** (:mod:`.control_gate`: only the Fleet API answers peers that are not on the
  coordinator's loopback; :mod:`.bundle_gate`: a site runs only app bundles that verify against its own
  trust settings). They never fall back: on a Flower release they were not written for, the coordinator
  and the sites refuse to start (:func:`require_supported`).
* **performance adaptations** (the other modules fedscan applies in its launchers), which are skipped,
  loudly, on a release they were not written for, leaving Flower's own behaviour.

:data:`SUPPORTED` is the one place that says which Flower release the code here was read against;
``pyproject.toml`` pins the same minor version.
"""

from __future__ import annotations

from typing import Final

from common.errors import ConfigError

__all__ = ["SUPPORTED", "flower_version", "is_supported", "require_supported"]

#: The Flower minor release whose internals the adaptations here were written against.
SUPPORTED: Final = "1.42"


def flower_version() -> str:
    """The installed Flower's version string (``"missing"`` if Flower is not importable)."""
    try:
        from flwr.supercore.version import package_version
    except ImportError:
        return "missing"
    return str(package_version)


def is_supported(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed Flower) is of the :data:`SUPPORTED` minor release."""
    version = flower_version() if version is None else version
    parts = version.split(".")
    return len(parts) >= 2 and ".".join(parts[:2]) == SUPPORTED


def require_supported(what: str) -> None:
    """Raise :class:`~common.errors.ConfigError` unless the installed Flower is :data:`SUPPORTED`.

    ``what`` names the security gate that needs it, for the message.
    """
    version = flower_version()
    if not is_supported(version):
        raise ConfigError(
            f"{what} is written for Flower {SUPPORTED}.x, but Flower {version} is installed; refusing to "
            f"start without it. Install fedscan's pinned Flower (pip install 'flwr=={SUPPORTED}.*')."
        )
