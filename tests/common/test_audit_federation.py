"""The names both ends of a federation share: run tokens, site actors, and tokens from category names."""

from __future__ import annotations

import pytest

from common.audit import is_token
from common.audit.events import REFUSAL_REASONS, to_token
from common.audit.federation import run_token, site_actor
from common.errors import AuditError
from common.privacy.refusals import REFUSAL_CODES


@pytest.mark.parametrize("flower_id", [0, 7, 123456, 15117308245, 2**63 - 1])
def test_flower_run_ids_become_the_same_token_on_both_ends(flower_id: int) -> None:
    token = run_token(flower_id)
    assert token == run_token(str(flower_id)) == f"flwr-run-{flower_id}"
    assert is_token(token)  # a bare Flower id (a long number) is refused as record-number-like
    assert not is_token(str(flower_id)) or flower_id < 100000


def test_site_ids_become_lower_case_actors_and_phi_shaped_ids_are_refused() -> None:
    assert site_actor("Hospital-A") == "hospital-a"
    assert site_actor("site-1") == "site-1"
    for bad in ("20240117", "1.2.840.10008.1", "MRN0044812", "site a", "x" * 65):
        with pytest.raises(AuditError, match="cannot name an audit log"):
            site_actor(bad)


def test_category_names_become_tokens_and_anything_else_other() -> None:
    assert to_token("burned-in text") == "burned-in-text"
    assert to_token("No pixel data") == "no-pixel-data"
    assert to_token("mask-region=10,10,50,20") == "mask-region-10-10-50-20"
    assert to_token("20240117 scan") == "other"  # date-shaped: never a token
    assert to_token("   ") == "other"


def test_every_policy_refusal_code_has_an_audit_reason() -> None:
    from client.audit_mod import REFUSAL_REASON

    assert set(REFUSAL_REASON) == set(REFUSAL_CODES)
    assert set(REFUSAL_REASON.values()) <= set(REFUSAL_REASONS)
