"""Federated averaging in this process, with the sites' own training code: shadow models for attacks.

A membership-inference attack in the style of LiRA needs dozens of models trained exactly as the
target was, each on a different random half of the data. Running each through Flower's simulation
engine costs tens of seconds of orchestration per model; this module runs the same arithmetic in
one process instead: every round, each site trains from the global model with
:func:`client.training.train_locally` (DP-SGD at the site when ``sample-dp`` is on, with the noise each
site calibrates to its own population), and the global model becomes the example-weighted mean
(FedAvg; SecAgg+ computes the same sum, up to quantisation far below the DP noise). With
``feature-scaling = "federated"`` the SVM's standardiser comes from the sites' pooled moments, as the
ServerApp computes it. Client-level DP, FedProx and FedAdam are not modelled here.
"""

from __future__ import annotations

import numpy as np

from client.training import train_locally
from common.config import RunConfig
from common.errors import ConfigError
from common.models import LabelledArrays, Model, model_from_config

__all__ = ["train_federated"]


def _mean(arrays: list[list[np.ndarray]], weights: list[int]) -> list[np.ndarray]:
    total = float(sum(weights))
    return [
        (sum(w * a[i].astype(np.float64) for a, w in zip(arrays, weights, strict=True)) / total).astype(
            arrays[0][i].dtype
        )
        for i in range(len(arrays[0]))
    ]


def train_federated(config: RunConfig, sites: list[LabelledArrays]) -> Model:
    """The global model after ``num-server-rounds`` rounds of FedAvg over ``sites``' training data.

    Sites without a record are left out (as a site with an empty split would be).
    """
    if config.client_dp != "none" or config.strategy != "fedavg":
        raise ConfigError("train_federated models FedAvg without client-level DP only.")
    sites = [s for s in sites if len(s)]
    if not sites:
        raise ConfigError("train_federated needs at least one site with training data.")
    model = model_from_config(config)
    if config.feature_scaling == "federated":
        from common.models.svm import LinearSvmModel, feature_moments, standardiser_from_moments

        assert isinstance(model, LinearSvmModel)
        moments = [feature_moments(model.raw_features(s.x)) for s in sites]
        model.set_standardiser(*standardiser_from_moments(moments))
    global_arrays = model.get_arrays()
    frozen = set(model.frozen_arrays)
    for server_round in range(1, config.num_server_rounds + 1):
        updates, weights = [], []
        for data in sites:
            model.set_arrays(global_arrays)
            result = train_locally(model, data, config, server_round)
            updates.append(model.get_arrays())
            weights.append(result.num_examples)
        averaged = _mean(updates, weights)
        global_arrays = [global_arrays[i] if i in frozen else a for i, a in enumerate(averaged)]
    model.set_arrays(global_arrays)
    return model
