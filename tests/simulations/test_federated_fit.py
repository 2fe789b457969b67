"""In-process federated averaging for shadow models: the sites' own training code, FedAvg's mean."""

from __future__ import annotations

import numpy as np
import pytest

from common.config import RunConfig
from common.errors import ConfigError
from common.models import LabelledArrays, model_from_config
from simulations.federated_fit import train_federated


def _sites() -> tuple[list[LabelledArrays], LabelledArrays]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = np.zeros((len(data.data), 36), dtype=np.float32)
    x[:, :30] = data.data
    records = LabelledArrays(x.reshape(-1, 6, 6), 1 - data.target)
    order = np.random.default_rng(0).permutation(len(records))
    parts = [order[i::3] for i in range(3)]
    sites = [LabelledArrays(records.x[p[:120]], records.y[p[:120]]) for p in parts]
    held = np.concatenate([p[120:] for p in parts])
    return sites, LabelledArrays(records.x[held], records.y[held])


def test_fedavg_with_the_sites_training_learns_and_one_round_is_the_weighted_mean() -> None:
    sites, held_out = _sites()
    config = RunConfig(
        model="svm", image_size=6, num_features=30, feature_scaling="federated", learning_rate=0.01
    )
    model = train_federated(config, sites)
    assert model.evaluate(held_out).accuracy > 0.9
    one = RunConfig(model="svm", image_size=6, num_features=30, num_server_rounds=1, learning_rate=0.01)
    trained = []
    for site in sites[:2]:
        local = model_from_config(one)
        from client.training import train_locally

        train_locally(local, site, one, 1)
        trained.append(local.get_arrays()[0])
    mean = train_federated(one, sites[:2]).get_arrays()[0]
    np.testing.assert_allclose(mean, (trained[0] + trained[1]) / 2, rtol=1e-6)  # equal sizes: plain mean


def test_client_level_dp_is_not_modelled() -> None:
    with pytest.raises(ConfigError):
        train_federated(RunConfig(model="svm", client_dp="central"), _sites()[0])
