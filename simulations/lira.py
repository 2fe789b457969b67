"""The Likelihood Ratio Attack (LiRA) on membership: how the field measures what a model reveals.

Written against the published procedure of Carlini, Chien, Nasr, Song, Terzis and Tramèr (2022,
"Membership Inference Attacks From First Principles", IEEE S&P), Algorithm 1, in its **online**
variant, and evaluated the way the paper does: train ``N`` models, each on a random half of the data
(every record *in* about half of them and *out* of the others); then every model in turn is the
target and the other ``N - 1`` are its shadow models (leave-one-out), so every (record, target) pair
is one trial and the true-positive rate at a 0.1% false-positive rate rests on thousands of
non-member trials.

For a record ``x`` with label ``y`` and a model ``f``, the observation is the logit-scaled confidence
``phi = log(p_y / (1 - p_y))`` (the paper's Section IV-B; for a linear SVM the class margin, the same
quantity before the sigmoid). The shadow models where ``x`` was in give ``phi``'s *in* distribution,
those where it was out the *out* distribution, each fitted as a Gaussian; the attack's score for the
target is the log-likelihood ratio ``log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out)``. With few
shadow models per side the paper fits one variance per distribution across all records ("global
variance"); with enough (:data:`PER_RECORD_VARIANCE_FROM` per side) each record gets its own. The
**offline** variant (out models only: ``-log P[Z > phi]``, ``Z ~ N(mu_out, s_out)``) is computed
from the same scores and reported beside it.

Reported: AUC, and the TPR at 0.1% and 1% FPR (the largest threshold whose FPR does not exceed the
target), each with a 95% confidence interval from a bootstrap over *records* (all trials of a record
resampled together, since they share the record), and the number of non-member trials behind each FPR.
Pure NumPy/SciPy; models and training live elsewhere (``simulations.federated_fit``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "PER_RECORD_VARIANCE_FROM",
    "AttackResult",
    "attack_metrics",
    "lira_scores",
    "logit_confidence",
    "random_membership",
]

#: Shadow models per side from which each record gets its own variance (the paper uses a global one below).
PER_RECORD_VARIANCE_FROM = 16
_FPRS = (0.001, 0.01)


def random_membership(num_models: int, num_units: int, seed: int) -> np.ndarray:
    """``(num_models, num_units)`` booleans: each model takes exactly half of the units, at random.

    Units are records, or patients (every record of a patient in or out together).
    """
    rng = np.random.default_rng(seed)
    keep = np.zeros((num_models, num_units), dtype=bool)
    for row in keep:
        row[rng.choice(num_units, num_units // 2, replace=False)] = True
    return keep


def logit_confidence(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log(p_y) - log(1 - p_y)`` of each record's true class, computed stably from probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    true = np.clip(p[np.arange(len(y)), y], 1e-300, None)
    other = np.clip(1.0 - p[np.arange(len(y)), y], 1e-300, None)
    return np.log(true) - np.log(other)


def _leave_one_out(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (target, record): count, mean and variance of ``values`` over the *other* models in ``mask``."""
    weights = mask.astype(np.float64)
    total, total_sq, count = (weights * values).sum(0), (weights * values**2).sum(0), weights.sum(0)
    n = count[None, :] - weights
    mean = (total[None, :] - weights * values) / np.maximum(n, 1)
    square = (total_sq[None, :] - weights * values**2) / np.maximum(n, 1)
    return n, mean, np.maximum(square - mean**2, 0.0)


def lira_scores(observations: np.ndarray, membership: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Online and offline LiRA scores for every (target model, record) pair, leave-one-out.

    Parameters
    ----------
    observations:
        ``(models, records)`` logit-scaled confidences (:func:`logit_confidence`).
    membership:
        ``(models, records)`` booleans: whether the record was in that model's training data.

    Returns
    -------
    ``(online, offline)`` score matrices; higher means "member".
    """
    phi = np.asarray(observations, dtype=np.float64)
    member = np.asarray(membership, dtype=bool)
    n_in, mu_in, var_in = _leave_one_out(phi, member)
    n_out, mu_out, var_out = _leave_one_out(phi, ~member)
    if min(n_in.min(), n_out.min()) < 1:
        raise ValueError("Every record needs at least one shadow model with it and one without it.")
    per_record = min(float(np.median(n_in)), float(np.median(n_out))) >= PER_RECORD_VARIANCE_FROM
    if not per_record:  # the paper's global variance for few shadow models
        var_in = np.broadcast_to(np.median(var_in, axis=1, keepdims=True), var_in.shape)
        var_out = np.broadcast_to(np.median(var_out, axis=1, keepdims=True), var_out.shape)
    floor = 1e-12
    s_in, s_out = np.sqrt(var_in + floor), np.sqrt(var_out + floor)
    online = stats.norm.logpdf(phi, mu_in, s_in) - stats.norm.logpdf(phi, mu_out, s_out)
    offline = -stats.norm.logsf(phi, mu_out, s_out)
    return online, offline


def _tpr_at(truth: np.ndarray, score: np.ndarray, fpr_target: float) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(truth, score)
    return float(tpr[np.flatnonzero(fpr <= fpr_target)[-1]])


def _metrics(truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    from sklearn.metrics import roc_auc_score

    return np.array([roc_auc_score(truth, score), *(_tpr_at(truth, score, f) for f in _FPRS)])


@dataclass(frozen=True)
class AttackResult:
    """LiRA's figures over all (record, target) trials, each ``(value, low, high)`` (95% bootstrap CI)."""

    auc: tuple[float, float, float]
    tpr_at_0_1_fpr: tuple[float, float, float]
    tpr_at_1_fpr: tuple[float, float, float]
    member_trials: int
    non_member_trials: int
    models: int
    records: int

    def to_dict(self) -> dict[str, object]:
        return {
            "auc": list(self.auc),
            "tpr_at_0.1%_fpr": list(self.tpr_at_0_1_fpr),
            "tpr_at_1%_fpr": list(self.tpr_at_1_fpr),
            "member_trials": self.member_trials,
            "non_member_trials": self.non_member_trials,
            "models": self.models,
            "records": self.records,
        }


def attack_metrics(
    scores: np.ndarray,
    membership: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    bootstrap: int = 200,
    seed: int = 0,
) -> AttackResult:
    """AUC and TPR at 0.1% / 1% FPR over every (target, record) trial, with a bootstrap over records, or
    over ``groups`` (one number per record: its patient), whose records are resampled together."""
    member = np.asarray(membership, dtype=bool)
    score = np.asarray(scores, dtype=np.float64)
    point = _metrics(member.ravel(), score.ravel())
    rng = np.random.default_rng(seed)
    owner = np.arange(member.shape[1]) if groups is None else np.asarray(groups)
    units = np.unique(owner)
    members_of = {u: np.flatnonzero(owner == u) for u in units}
    draws = []
    for _ in range(bootstrap):
        pick = np.concatenate([members_of[u] for u in rng.choice(units, len(units))])
        truth = member[:, pick].ravel()
        if truth.all() or not truth.any():
            continue
        draws.append(_metrics(truth, score[:, pick].ravel()))
    low, high = np.percentile(np.array(draws), [2.5, 97.5], axis=0) if draws else (point, point)
    triple = [(float(point[i]), float(low[i]), float(high[i])) for i in range(3)]
    return AttackResult(
        auc=triple[0],
        tpr_at_0_1_fpr=triple[1],
        tpr_at_1_fpr=triple[2],
        member_trials=int(member.sum()),
        non_member_trials=int((~member).sum()),
        models=member.shape[0],
        records=member.shape[1],
    )
