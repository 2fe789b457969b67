"""Sample-level DP at a site: the mechanism training uses is the one the ledger accounts for."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from client.dp_sgd import TrainingPopulation, round_mechanism, round_release, train_with_dp_sgd
from client.training import plan_for_round
from common.config import RunConfig
from common.errors import ConfigError
from common.models import LabelledArrays, build_model, model_from_config
from common.privacy.accounting import epsilon_of


def _breast_cancer() -> LabelledArrays:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = np.zeros((len(data.data), 36))
    x[:, :30] = (data.data - data.data.mean(0)) / data.data.std(0)
    return LabelledArrays(x.reshape(-1, 6, 6), 1 - data.target)


def test_a_target_epsilon_is_spent_over_the_whole_run_and_not_more() -> None:
    config = RunConfig(
        model="svm", sample_dp=True, sample_dp_epsilon=3.0, num_server_rounds=10, batch_size=32
    )
    population = TrainingPopulation(records=90, patients=90, max_records_per_patient=1)
    mechanism = round_mechanism(config, population)
    assert mechanism.sampling_rate == pytest.approx(1 / 3) and mechanism.steps == 3
    spent = epsilon_of([dataclasses.replace(mechanism, steps=mechanism.steps * 10)], 1e-5)
    assert 2.9 <= spent <= 3.0
    with pytest.raises(ConfigError):
        round_mechanism(dataclasses.replace(config, sample_dp_epsilon=1e-9), population)


def test_the_patient_is_the_unit_and_record_sampling_pays_for_the_group() -> None:
    """300 slices of 20 patients: patient-level DP-SGD samples 20 units; record-level DP-SGD samples
    300 records and is calibrated so that a patient of 40 slices still spends only the target."""
    population = TrainingPopulation(records=300, patients=20, max_records_per_patient=40)
    config = RunConfig(model="cnn", sample_dp=True, sample_dp_epsilon=3.0, num_server_rounds=5, batch_size=10)
    per_patient = round_release(config, population)
    assert (per_patient.unit, per_patient.group_size) == ("patient", 1)
    assert per_patient.sampling_rate == pytest.approx(1 / 2) and per_patient.steps == 2
    per_record = round_release(dataclasses.replace(config, sample_dp_unit="record"), population)
    assert (per_record.unit, per_record.group_size, per_record.steps) == ("record", 40, 30)
    for release in (per_patient, per_record):
        patient = release.patient_mechanism()
        spent = epsilon_of([dataclasses.replace(patient, steps=patient.steps * 5)], 1e-5)
        assert 2.9 <= spent <= 3.0
    assert per_record.noise_multiplier > 10 * per_patient.noise_multiplier  # the price of record sampling


def test_patient_level_dp_sgd_clips_a_patient_not_a_record() -> None:
    """One patient with 60 identical records and 60 patients with one each: with noise ~0 and one full
    batch, the 60-record patient moves the SVM exactly as much as one single-record patient."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    x[:60] = x[0]
    data = LabelledArrays(
        x.reshape(-1, 2, 2),
        np.ones(120, dtype=np.int64),
        np.r_[np.zeros(60), np.arange(1, 61)].astype(np.int64),
    )
    config = RunConfig(
        model="svm", image_size=2, sample_dp=True, sample_dp_noise=1e-9, sample_dp_clip=0.1, batch_size=1000,
        learning_rate=1.0, svm_alpha=1e-12, sample_dp_patient_records=100,
    )  # fmt: skip
    model = model_from_config(config)
    model.set_standardiser(np.zeros(4), np.ones(4))  # type: ignore[attr-defined]
    units = [data, LabelledArrays(x[60:].reshape(-1, 2, 2), data.y[60:], np.arange(60))]
    moved = []
    for part in units:
        fresh = model_from_config(config)
        fresh.set_arrays(model.get_arrays())
        train_with_dp_sgd(fresh, part, plan_for_round(config, 1), config)
        moved.append(np.abs(fresh.get_arrays()[0] - model.get_arrays()[0]).sum())
    assert TrainingPopulation.of(data) == TrainingPopulation(120, 61, 60)
    # All 61 patients clipped to 0.1 each vs the 60 single-record patients: one patient's worth apart.
    assert moved[0] - moved[1] <= 0.1 * 4 + 1e-6


def test_noisy_clipped_sgd_trains_the_svm_and_more_noise_costs_accuracy() -> None:
    """The noise is drawn from the OS, never seeded: one drowned model can still land on a good
    direction by chance (1 in 5 here), so the drowned side is averaged over ten trainings."""
    data = _breast_cancer()

    def trained_accuracy(noise: float) -> float:
        config = RunConfig(
            model="svm",
            image_size=6,
            num_features=30,
            sample_dp=True,
            sample_dp_noise=noise,
            learning_rate=0.01,
        )
        model = model_from_config(config)
        for server_round in range(1, 6):
            train_with_dp_sgd(model, data, plan_for_round(config, server_round), config)
        return model.evaluate(data).accuracy

    useful = trained_accuracy(0.5)
    drowned = [trained_accuracy(200.0) for _ in range(10)]
    assert useful > 0.9
    assert float(np.mean(drowned)) < useful - 0.1, drowned


def test_opacus_dp_sgd_trains_a_copy_and_leaves_the_sites_model_clean() -> None:
    config = RunConfig(model="cnn", image_size=16, cnn_widths="4,8", sample_dp=True, batch_size=8)
    model = build_model("cnn", image_size=16, widths=(4, 8), seed=0)
    rng = np.random.default_rng(0)
    data = LabelledArrays(rng.random((24, 16, 16)).astype(np.float32), rng.integers(0, 2, 24))
    model.evaluate(data)  # a ClientApp reuses its model: evaluation leaves it in eval mode
    before = model.get_arrays()
    result, mechanism = train_with_dp_sgd(model, data, plan_for_round(config, 1), config)
    assert result.steps == mechanism.steps == 3
    after = model.get_arrays()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(a.dtype == b.dtype for a, b in zip(before, after, strict=True))
    network = model.network  # type: ignore[attr-defined]
    assert not any(m._forward_hooks or m._backward_hooks for m in network.modules())
    assert not any(hasattr(p, "grad_sample") for p in network.parameters())
