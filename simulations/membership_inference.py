"""A loss-threshold membership-inference attack: measured privacy of a trained model.

The attack of Yeom et al. (2018, "Privacy risk in machine learning"): a record the model was trained
on tends to have a lower loss than one it never saw, so the attacker guesses "member" when the loss is
below a threshold. Its AUC over all thresholds, on as many training records (members) as held-out
records (non-members), measures what the model reveals about membership: 0.5 is a coin toss. The loss
is the cross-entropy of the model's class probabilities (``predict_scores``) at the true label, for
every model kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.models import LabelledArrays, Model

__all__ = ["MembershipAttack", "loss_threshold_attack", "per_example_loss"]


@dataclass(frozen=True)
class MembershipAttack:
    """The attack's AUC, its best balanced accuracy (over thresholds), and how many records per side."""

    auc: float
    best_accuracy: float
    records_per_side: int


def per_example_loss(model: Model, data: LabelledArrays) -> np.ndarray:
    """Cross-entropy of each record at its true label (the attacker's score, lower = 'member')."""
    scores = np.clip(model.predict_scores(data.x), 1e-12, 1.0)
    return -np.log(scores[np.arange(len(data)), np.asarray(data.y, dtype=np.int64)])


def loss_threshold_attack(
    model: Model, members: LabelledArrays, non_members: LabelledArrays, *, seed: int = 0
) -> MembershipAttack:
    """Attack ``model`` with equal numbers of members and non-members (the larger side is subsampled)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(seed)
    count = min(len(members), len(non_members))
    if count == 0:
        raise ValueError("The attack needs at least one member and one non-member.")
    pick_in = rng.choice(len(members), count, replace=False)
    pick_out = rng.choice(len(non_members), count, replace=False)
    loss_in = per_example_loss(model, LabelledArrays(members.x[pick_in], members.y[pick_in]))
    loss_out = per_example_loss(model, LabelledArrays(non_members.x[pick_out], non_members.y[pick_out]))
    truth = np.concatenate([np.ones(count), np.zeros(count)])
    guess = -np.concatenate([loss_in, loss_out])  # higher = more likely a member
    false_pos, true_pos, _ = roc_curve(truth, guess)
    best = float(np.max((true_pos + 1.0 - false_pos) / 2.0))
    return MembershipAttack(
        auc=float(roc_auc_score(truth, guess)), best_accuracy=best, records_per_side=count
    )
