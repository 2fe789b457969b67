"""Local training plans: epochs or steps, optimisers, class weights, FedProx, threads, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from client.training import plan_for_round, round_seed, train_locally
from common.config import RunConfig
from common.models import LabelledArrays, build_model, model_from_config


def _data(n: int = 48, size: int = 16, positives: float = 0.25, seed: int = 0) -> LabelledArrays:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positives).astype(np.int64)
    x = rng.normal(0.4, 0.05, (n, size, size)).astype(np.float32)
    x[y == 1, 6:10, 6:10] += 0.5
    return LabelledArrays(np.clip(x, 0, 1), y)


def test_plan_follows_the_run_config_and_the_round() -> None:
    config = RunConfig(
        local_epochs=2,
        local_steps=7,
        optimizer="adam",
        class_weighting=True,
        augment=True,
        strategy="fedprox",
    )
    data = _data()
    plan = plan_for_round(config, 3, data)
    assert (plan.epochs, plan.steps, plan.optimizer, plan.augment) == (2, 7, "adam", True)
    assert plan.seed == round_seed(config, 3) != round_seed(config, 4)
    assert plan.proximal_mu == config.proximal_mu  # fedprox: from the run config unless the server says
    assert plan_for_round(config, 3, data, proximal_mu=0.5).proximal_mu == 0.5
    assert plan_for_round(RunConfig(), 1, data).proximal_mu == 0.0  # fedavg: no proximal term
    assert plan.class_weights is not None
    rare, common = plan.class_weights[1], plan.class_weights[0]
    assert rare > 1 > common  # the rare class is weighted up


def test_local_steps_make_exactly_that_many_steps() -> None:
    config = RunConfig(image_size=16, local_steps=5, batch_size=8)
    result = train_locally(model_from_config(config), _data(), config, 1)
    assert result.steps == 5 and result.num_examples == 48


def test_same_round_same_result_and_threads_respected() -> None:
    config = RunConfig(image_size=16, threads=1, augment=True, class_weighting=True)
    runs = []
    for _ in range(2):
        model = model_from_config(config)
        train_locally(model, _data(), config, 2)
        runs.append(model.get_arrays())
        assert torch.get_num_threads() == 1
    assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize("kind", ["cnn", "svm"])
def test_proximal_term_keeps_the_model_closer_to_the_global_one(kind: str) -> None:
    data = _data(96)
    drift = {}
    for mu in (0.0, 5.0):
        config = RunConfig(model=kind, image_size=16, local_epochs=3, learning_rate=0.02)
        model = build_model(kind, image_size=16)
        start = model.get_arrays()
        train_locally(model, data, config, 1, proximal_mu=mu)
        drift[mu] = sum(float(np.sum((a - b) ** 2)) for a, b in zip(model.get_arrays(), start, strict=True))
    assert drift[5.0] < 0.8 * drift[0.0], drift
