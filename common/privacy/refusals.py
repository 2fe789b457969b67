"""The refusal codes a site may answer a round with: the only thing the server learns of a refusal.

Shared by both ends: a site's policy (``client.policy``) refuses with one of these codes, and the
server (``server.privacy``) reads them back from the error replies to say why a round could not run.
"""

from __future__ import annotations

__all__ = ["ERROR_PREFIX", "REFUSAL_CODES", "REFUSAL_PREFIX", "parse_refusal"]

#: Every reason a site may refuse a round, as the server sees it.
REFUSAL_CODES = (
    "unapproved-app",
    "no-secure-aggregation",
    "secure-aggregation-mismatch",
    "model-not-allowed",
    "delta-too-large",
    "no-differential-privacy",
    "too-few-sites",
    "budget-exhausted",
    "work-over-cap",
    "rate-over-cap",
    "parameters-mismatch",
    "message-too-large",
    "replayed-message",
)
#: Error replies that carry a refusal start with this, followed by the code.
REFUSAL_PREFIX = "fedscan-refusal:"
#: Site errors that are faults of the run (not a site dropping out) carry this.
ERROR_PREFIX = "fedscan-error:"


def parse_refusal(text: str) -> str | None:
    """The refusal code in an error reason (as the server sees it), or ``None``."""
    start = text.find(REFUSAL_PREFIX)
    if start < 0:
        return None
    tail = text[start + len(REFUSAL_PREFIX) :]
    code = ""
    for char in tail[:40]:
        if not (char.isalnum() or char == "-"):
            break
        code += char
    return code if code in REFUSAL_CODES else None
