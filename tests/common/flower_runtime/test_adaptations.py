"""The adaptation registry: all of a role's adaptations, or none (stock mode, another Flower), or all but
the ones an ablation leaves out; and the isolation each mode runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from common.flower_runtime import SUPPORTED, is_supported
from common.flower_runtime.adaptations import (
    ADAPTATIONS,
    ROLES,
    RUNTIME_ENV,
    WITHOUT_ENV,
    apply,
    effective_isolation,
    enabled,
)


def _recording(role: str) -> tuple[dict[str, Callable[[], list[str]]], list[str]]:
    ran: list[str] = []

    def applier(name: str) -> Callable[[], list[str]]:
        return lambda: ran.append(name) or [f"changed by {name}"]

    return {n: applier(n) for n, a in ADAPTATIONS.items() if role in a.roles}, ran


def test_every_adaptation_names_known_roles_and_its_module() -> None:
    for adaptation in ADAPTATIONS.values():
        assert set(adaptation.roles) <= set(ROLES) and adaptation.roles
        assert adaptation.module.startswith("common.flower_runtime.")
    assert is_supported() and SUPPORTED == "1.42"  # the installed Flower is the pinned one


@pytest.mark.parametrize("role", ["superlink", "supernode", "clientapp-task"])
def test_fedscan_mode_applies_every_adaptation_of_the_role(
    role: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    monkeypatch.delenv(WITHOUT_ENV, raising=False)
    appliers, ran = _recording(role)
    changed = apply(role, appliers)
    assert ran == list(appliers) and changed == [f"changed by {n}" for n in appliers]
    assert f"{role}: adaptations on: " in capsys.readouterr().err


def test_stock_mode_applies_none_and_says_so(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(RUNTIME_ENV, "stock")
    appliers, ran = _recording("supernode")
    assert apply("supernode", appliers) == [] and ran == []
    assert "all off (stock mode)" in capsys.readouterr().err
    assert not any(enabled(name) for name in ADAPTATIONS)
    assert effective_isolation("warm") == "subprocess" and effective_isolation("process") == "process"


def test_another_flower_applies_none(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import flwr.supercore.version as version

    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    monkeypatch.setattr(version, "package_version", "1.43.0")
    appliers, ran = _recording("superlink")
    assert apply("superlink", appliers) == [] and ran == []
    assert "Flower 1.43.0 is not the supported 1.42.x" in capsys.readouterr().err


def test_an_ablation_leaves_out_exactly_what_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    monkeypatch.setenv(WITHOUT_ENV, "held-answers,warm-executor")
    appliers, ran = _recording("superlink")
    apply("superlink", appliers, say=False)
    assert set(appliers) - set(ran) == {"held-answers", "warm-executor"}
    assert not enabled("held-answers") and enabled("lean-middleware")
    assert effective_isolation("warm") == "process"  # Flower's own SuperExec, everything else equal
    monkeypatch.setenv(WITHOUT_ENV, "no-such-thing")
    with pytest.raises(ValueError, match="unknown adaptations"):
        enabled("held-answers")


def test_a_role_without_an_applier_for_each_adaptation_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no applier"):
        apply("superlink", {}, say=False)
    with pytest.raises(ValueError, match="role must be one of"):
        apply("nowhere", {}, say=False)
