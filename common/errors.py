"""One exception tree for fedscan.

Library code raises these; the CLI turns them into one clear line and the exit code attached to the
class, in one place (``common.cli``). Messages are full sentences that name the file or object and the
reason, and never contain PHI or key material.
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "ConfigError",
    "FedscanError",
    "InputError",
    "IntegrityError",
    "KeyMaterialError",
    "PolicyError",
    "StoreError",
    "TrainingError",
]


class FedscanError(Exception):
    """Base of every error fedscan raises on purpose; ``exit_code`` is what the CLI returns."""

    exit_code: int = 1


class ConfigError(FedscanError):
    """A configuration value, run config key or command-line argument is invalid."""

    exit_code = 2


class InputError(FedscanError):
    """An input file or folder cannot be used (missing, unreadable, not DICOM, bad labels)."""

    exit_code = 3


class IntegrityError(FedscanError):
    """A sealed object failed authentication: wrong key, edited, truncated, reordered or swapped.

    Deliberately one type with one message shape for every cause, so that a caller learns nothing
    about *why* decryption failed (no oracle).
    """

    exit_code = 4


class KeyMaterialError(FedscanError):
    """Key material is missing, unsafe (permissions, owner) or has been shredded."""

    exit_code = 5


class StoreError(FedscanError):
    """The encrypted dataset store is missing, empty or inconsistent."""

    exit_code = 6


class PolicyError(FedscanError):
    """A request falls outside the site's policy (site.toml) and was refused."""

    exit_code = 7


class TrainingError(FedscanError):
    """Federated training failed: a round had failures, an update was invalid, or no site answered."""

    exit_code = 8


class AuditError(FedscanError):
    """An audit log failed verification or could not be written."""

    exit_code = 9
