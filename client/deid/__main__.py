"""``python -m client.deid IN_DIR OUT_DIR ...``: the de-identification command without the fedscan CLI.

Same arguments as ``fedscan site deidentify``; kept for scripts and the benchmark until the command is
wired into ``client/cli.py``. Example::

    FEDSCAN_DEID_SECRET=$(python -c 'import os; print(os.urandom(32).hex())') \\
        python -m client.deid exports/ deidentified/ --option clean-descriptors --workers 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.deid.command import deidentify_command
from client.deid.options import OPTION_NAMES, PROFILES
from common.errors import FedscanError


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run :func:`deidentify_command`, turn fedscan errors into one line."""
    parser = argparse.ArgumentParser(
        prog="python -m client.deid",
        description="De-identify a folder of DICOM files (PS3.15 Annex E basic profile + options).",
        epilog="example: python -m client.deid exports/ deidentified/ --site-dir site/ "
        "--option clean-descriptors",
    )
    parser.add_argument("in_dir", type=Path, help="folder of DICOM files (searched recursively)")
    parser.add_argument("out_dir", type=Path, help="output folder (STUDY/SERIES/SOP.dcm, new UIDs)")
    parser.add_argument("--site-dir", type=Path, default=None, help="site directory holding the secret")
    parser.add_argument(
        "--profile", default="fedscan", choices=sorted(PROFILES), help="profile (default: fedscan)"
    )
    parser.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="NAME",
        help=f"profile option, repeatable: {', '.join(OPTION_NAMES)}",
    )
    parser.add_argument("--strict", action="store_true", help="exit non-zero if any file is rejected")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs)")
    parser.add_argument("--json", dest="json_output", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        return deidentify_command(
            args.in_dir,
            args.out_dir,
            args.site_dir,
            args.profile,
            args.options,
            args.strict,
            args.workers,
            args.json_output,
        )
    except FedscanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
