"""Code shared by sites and the aggregator: errors, config, crypto, models, audit, the CLI root."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedscan")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
