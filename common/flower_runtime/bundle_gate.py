"""The SuperNode's bundle gate: a run's app bundle is verified when it arrives, before it is stored or run.

Flower 1.42's SuperNode fetches a run's bundle (FAB) the first time a message of that run arrives
(``flwr.supernode.start_client_internal._pull_and_store_message``). When the SuperNode was started with
``--trusted-entities``, Flower then verifies the bundle and, if it fails, stores nothing of the run, creates
no task and answers the message with an ``INVALID_FAB`` error; the next message of the run is checked again.
Flower's own verifier checks signatures made by Flower's app platform, which a bundle built locally with
``flwr run`` never has, so stock Flower with ``--trusted-entities`` refuses every fedscan run: it fails
closed.

:func:`install_bundle_gate` keeps Flower's flow and replaces the verdict with fedscan's
(:func:`common.app_bundle.verify_bundle`, through a callable the site supplies): the SuperNode runs the
bundles the site's own trust settings accept, and refuses every other one before any of its code could
be installed or imported, in every isolation mode (the executor, warm or not, only ever sees stored runs).
Verification is always on, whatever ``--trusted-entities`` says. This gate never falls back: on a Flower
other than the supported one, or if the functions it hooks are missing, it raises and the SuperNode does
not start.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Final

from common.errors import ConfigError
from common.flower_runtime import require_supported

__all__ = ["GATE_MARK", "install_bundle_gate"]

_MODULE: Final = "flwr.supernode.start_client_internal"
GATE_MARK: Final = "__fedscan_bundle_gate__"
#: What Flower's flow requires of a bundle's verification records before it calls the verifier.
_LICENSE_KEY: Final = "valid_license"
_LICENSE_MARK: Final = "fedscan-site-verification"
#: Stands in for Flower's trusted entities when the SuperNode was started without them.
_ALWAYS_VERIFY: Final = {"fedscan": "verification is always on at a fedscan site"}


def install_bundle_gate(verify: Callable[[str, bytes], bool]) -> str:
    """Make the SuperNode in this process accept a run's bundle only if ``verify(fab_hash, content)``.

    ``verify`` gets the hash the bundle was sent under and its bytes, returns whether the site runs it,
    and records its own refusals (the site's audit log). Idempotent; returns what was changed.

    Raises
    ------
    ConfigError
        On a Flower other than the supported one or one laid out differently: no SuperNode without the gate.
    """
    require_supported("The SuperNode's bundle gate")
    try:
        module = importlib.import_module(_MODULE)
    except ImportError as error:
        raise ConfigError(
            f"Cannot gate the SuperNode's bundles: {_MODULE} does not import ({error})."
        ) from None
    pull = getattr(module, "_pull_and_store_message", None)
    verifier = getattr(module, "_verify_fab", None)
    fab_type = getattr(module, "Fab", None)
    if pull is None or verifier is None or fab_type is None:
        raise ConfigError(
            f"Cannot gate the SuperNode's bundles: {_MODULE} is not laid out as in Flower 1.42."
        )
    if getattr(pull, GATE_MARK, False):
        return f"{_MODULE} (already gated)"

    def gated_pull(*args: Any, **kwargs: Any) -> Any:
        if args:  # Flower 1.42 calls it with keywords only; anything else is not the layout read
            raise ConfigError("The SuperNode called its message pull in an unexpected way; refusing.")
        get_fab = kwargs["get_fab"]

        def marked_get_fab(fab_hash: str, run_id: int) -> Any:
            fab = get_fab(fab_hash, run_id)
            verifications = {**dict(fab.verifications), _LICENSE_KEY: _LICENSE_MARK}
            return fab_type(fab.hash_str, fab.content, verifications)

        kwargs["get_fab"] = marked_get_fab
        kwargs["trusted_entities"] = kwargs.get("trusted_entities") or dict(_ALWAYS_VERIFY)
        return pull(**kwargs)

    def site_verdict(fab: Any, _trusted_entities: Any) -> bool:
        return bool(verify(str(fab.hash_str), bytes(fab.content)))

    setattr(gated_pull, GATE_MARK, True)
    setattr(site_verdict, GATE_MARK, True)
    module._pull_and_store_message = gated_pull  # type: ignore[attr-defined]
    module._verify_fab = site_verdict  # type: ignore[attr-defined]
    return f"{_MODULE}._pull_and_store_message and _verify_fab (the site's bundle verification)"
