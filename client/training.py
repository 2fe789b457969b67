"""Local training at a site, without Flower: the plan for a round, seeding, threads, the call to fit.

What a site does in one round is decided here from the run config and the round's instructions:
epochs or an exact number of steps, the optimiser, FedProx's proximal weight, class weights computed
from the site's *own* label counts (so a site with few positives weights them up), augmentations,
and a seed per (run seed, round), so reruns reproduce and rounds differ.
"""

from __future__ import annotations

from common.config import RunConfig
from common.models import FitResult, LabelledArrays, Model, TrainingPlan, class_weights

__all__ = ["plan_for_round", "round_seed", "train_locally"]


def round_seed(config: RunConfig, server_round: int) -> int:
    """A seed per (run seed, round): reruns reproduce, rounds differ."""
    return config.seed * 100_003 + server_round


def plan_for_round(
    config: RunConfig,
    server_round: int,
    labels: LabelledArrays | None = None,
    *,
    proximal_mu: float | None = None,
    num_classes: int = 2,
) -> TrainingPlan:
    """The :class:`TrainingPlan` of one round at one site.

    ``proximal_mu`` is what the server sent (FedProx puts it in the fit instructions); ``None`` falls
    back to the run config. ``labels`` (the site's training split) sets the class weights when
    ``class-weighting`` is on.
    """
    weights = class_weights(labels.y, num_classes) if config.class_weighting and labels is not None else None
    return TrainingPlan(
        epochs=config.local_epochs,
        steps=config.local_steps,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        momentum=config.momentum,
        proximal_mu=config.proximal_weight if proximal_mu is None else proximal_mu,
        class_weights=weights,
        augment=config.augment,
        seed=round_seed(config, server_round),
    )


def train_locally(
    model: Model,
    data: LabelledArrays,
    config: RunConfig,
    server_round: int,
    *,
    proximal_mu: float | None = None,
) -> FitResult:
    """Run one round of local training from the model's current parameters.

    Sets torch's thread count to ``threads`` first (a site process shares the host with others: the
    simulation runs one ClientApp per core), and imports torch only if it is already in use.
    """
    import sys

    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(config.threads)
    plan = plan_for_round(config, server_round, data, proximal_mu=proximal_mu, num_classes=model.num_classes)
    if config.sample_dp:  # DP-SGD (client.dp_sgd); the site's ledger accounts for it
        from client.dp_sgd import train_with_dp_sgd

        return train_with_dp_sgd(model, data, plan, config)[0]
    return model.fit(data, plan)
