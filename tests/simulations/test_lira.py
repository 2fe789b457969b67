"""LiRA (Carlini et al. 2022), online and offline, against observations whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.lira import attack_metrics, lira_scores, logit_confidence, random_membership


def _observations(models: int, records: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each record has its own difficulty (mean confidence); membership adds ``shift`` to it."""
    rng = np.random.default_rng(seed)
    membership = random_membership(models, records, seed)
    difficulty = rng.normal(0.0, 3.0, records)
    phi = difficulty[None, :] + rng.normal(0.0, 0.5, (models, records)) + shift * membership
    return phi, membership


def test_random_membership_puts_every_record_in_half_the_models() -> None:
    membership = random_membership(64, 300, seed=1)
    assert (membership.sum(axis=1) == 150).all()
    assert membership.sum(axis=0).min() > 12 and membership.sum(axis=0).max() < 52


def test_lira_finds_members_where_a_global_threshold_cannot() -> None:
    """Per-record calibration: a 0.5-sigma membership shift hidden under records of very different
    difficulty. A single threshold on the confidence (the loss attack) barely beats chance at low FPR."""
    phi, membership = _observations(65, 400, shift=1.0, seed=0)
    online, offline = lira_scores(phi, membership)
    lira = attack_metrics(online, membership, bootstrap=50)
    loss = attack_metrics(phi, membership, bootstrap=50)
    assert lira.auc[0] > 0.8 and lira.tpr_at_1_fpr[0] > 0.15
    assert loss.tpr_at_1_fpr[0] < 0.05 and lira.tpr_at_1_fpr[0] > 5 * loss.tpr_at_1_fpr[0]
    assert lira.auc[1] <= lira.auc[0] <= lira.auc[2]  # the interval holds the estimate
    assert attack_metrics(offline, membership, bootstrap=50).auc[0] > 0.7
    assert lira.non_member_trials + lira.member_trials == 65 * 400


def test_without_a_membership_signal_lira_reports_chance_at_low_fpr() -> None:
    phi, membership = _observations(65, 400, shift=0.0, seed=1)
    online, _ = lira_scores(phi, membership)
    result = attack_metrics(online, membership, bootstrap=50)
    assert abs(result.auc[0] - 0.5) < 0.03
    assert result.tpr_at_0_1_fpr[0] < 0.005 and result.tpr_at_1_fpr[0] < 0.03


def test_few_shadow_models_use_the_global_variance_and_still_work() -> None:
    phi, membership = _observations(17, 300, shift=1.5, seed=2)
    online, _ = lira_scores(phi, membership)
    assert attack_metrics(online, membership, bootstrap=20).auc[0] > 0.8
    with pytest.raises(ValueError, match="at least one shadow model"):
        lira_scores(phi[:2], np.array([[True] * 300, [True] * 300]))


def test_logit_confidence_is_the_log_odds_of_the_true_class() -> None:
    p = np.array([[0.9, 0.1], [0.2, 0.8], [1.0, 0.0]])
    phi = logit_confidence(p, np.array([0, 0, 0]))
    assert phi[0] == pytest.approx(np.log(9)) and phi[1] == pytest.approx(np.log(0.25)) and phi[2] > 600
