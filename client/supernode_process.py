"""The site's SuperNode process: Flower's ``flower-supernode`` with the site's bundle gate installed first.

``fedscan site run`` starts ``python -m client.supernode_process --site-dir S --kit K --isolation I
[--stock | --max-wait W --hold H] flower-supernode ARGS``. Before Flower's SuperNode starts, this installs
:func:`common.flower_runtime.bundle_gate.install_bundle_gate` with :class:`BundleCheck`, the site's
verdict on a run's app bundle: :func:`common.app_bundle.verify_bundle` against the trust settings in
``site.toml`` (trusted publishers, pinned bundles, approved app hashes), the kit's federation, and the
installed fedscan (in ``warm`` isolation, where the installed code is what runs, only bundles without code
are accepted). Each verdict goes into the site's audit log (``bundle.accepted`` / ``bundle.refused``,
with the bundle's SHA-256) and the SuperNode's log. The trust settings are read when the process starts:
a change to ``site.toml`` takes effect when ``site run`` restarts the SuperNode.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from client.site import SiteDir
from client.site_audit import site_log
from client.site_config import SiteConfig
from client.supernode import ISOLATIONS, SiteKit
from common.app_bundle import BundleTrust, BundleVerdict, verify_bundle
from common.errors import FedscanError

__all__ = ["BundleCheck", "main"]

log = logging.getLogger("fedscan.site")


class BundleCheck:
    """The site's verdict on app bundles: verify, audit, answer (a callable for the bundle gate).

    Flower asks once per run whose bundle verifies (the run is then stored) and once per message of a
    run whose bundle does not (nothing of it is stored), so every verdict is audited.
    """

    def __init__(self, site: SiteDir, trust: BundleTrust) -> None:
        self.site = site
        self.trust = trust
        self.verdicts: list[BundleVerdict] = []

    @classmethod
    def for_site(cls, site: SiteDir, kit: SiteKit, isolation: str) -> BundleCheck:
        """Trust settings from ``site.toml``, the kit's federation and the isolation mode."""
        policy = SiteConfig.load(site.config_file).policy
        trust = BundleTrust(
            publishers=policy.publisher_keys(),
            federation=kit.federation,
            pinned_bundles=policy.pinned_bundles,
            approved_app_hashes=policy.approved_app_hashes,
            installed_only=isolation == "warm",
        )
        if not trust.publishers:
            raise FedscanError(f"{site.config_file} trusts no publisher: this site would run nothing.")
        return cls(site, trust)

    def __call__(self, fab_hash: str, content: bytes) -> bool:
        verdict = verify_bundle(content, fab_hash, self.trust)
        self.verdicts.append(verdict)
        details: dict[str, object] = {"bundle_sha256": verdict.fab_sha256}
        if verdict.publisher and len(verdict.publisher) == 16:
            details["publisher_key_id"] = verdict.publisher
        if verdict.app_hash and len(verdict.app_hash) == 64:
            details["app_sha256"] = verdict.app_hash
        details["carries_code"] = verdict.carries_code
        try:
            with site_log(self.site) as audit:
                if verdict.ok:
                    audit.append("bundle.accepted", **details)
                else:
                    audit.append("bundle.refused", reason=verdict.code, **details)
        except FedscanError as error:  # a site that cannot audit runs nothing
            print(f"fedscan: refusing bundle: the audit log cannot be written ({error})", file=sys.stderr)
            return False
        print(f"fedscan: site {self.site.root.name}: {verdict}", file=sys.stderr, flush=True)
        return verdict.ok


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: see the module docstring."""
    from common.flower_runtime.bundle_gate import install_bundle_gate
    from common.flower_runtime.launcher import launch, parse_pace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--site-dir", type=Path, required=True)
    parser.add_argument("--kit", type=Path, required=True)
    parser.add_argument("--isolation", choices=ISOLATIONS, required=True)
    parse_pace(parser)
    parser.add_argument("command", choices=["flower-supernode"])
    parser.add_argument("flower_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        check = BundleCheck.for_site(SiteDir(args.site_dir), SiteKit.load(args.kit), args.isolation)
        launch(
            args.command,
            args.flower_args,
            performance=not args.stock,
            max_wait=args.max_wait,
            hold=args.hold,
            gates=[lambda: install_bundle_gate(check)],
        )
    except FedscanError as error:
        print(f"fedscan: {error}", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
