"""docs/privacy.md stays complete: every privacy key, policy field and refusal code is documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from client.policy import SitePolicy
from common.config import RunConfig
from common.privacy.refusals import REFUSAL_CODES

DOC = (Path(__file__).resolve().parents[3] / "docs" / "privacy.md").read_text()
PRIVACY_KEYS = [
    f.name.replace("_", "-")
    for f in dataclasses.fields(RunConfig)
    if f.name.startswith(("secagg_", "client_dp", "sample_dp", "dp_")) or f.name == "secure_aggregation"
]


def test_every_privacy_run_config_key_is_documented() -> None:
    assert len(PRIVACY_KEYS) >= 10
    assert [k for k in PRIVACY_KEYS if f"`{k}" not in DOC] == []


def test_every_policy_field_and_refusal_code_is_documented() -> None:
    assert [f.name for f in dataclasses.fields(SitePolicy) if f"`{f.name}`" not in DOC] == []
    assert [code for code in REFUSAL_CODES if f"`{code}`" not in DOC] == []
