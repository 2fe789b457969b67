"""Every model behind the one protocol: parameters round-trip, bad arrays are refused, they learn."""

from __future__ import annotations

import numpy as np
import pytest

from common.config import RunConfig
from common.errors import TrainingError
from common.models import LabelledArrays, Model, TrainingPlan, build_model, class_weights, model_from_config
from common.models.svm import LinearSvmModel, feature_moments, standardiser_from_moments
from common.models.torch_model import seed_cpu_generator

KINDS = ["cnn", "resnet18", "svm", "rff-svm"]


def _bright_spot_data(n: int, size: int = 32, seed: int = 0, *, fixed: bool = False) -> LabelledArrays:
    """Noise images; label 1 has a bright 4x4 spot at a random place (or always the same place)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 0.05, (n, size, size)).astype(np.float32)
    y = rng.integers(0, 2, n).astype(np.int64)
    for i in np.flatnonzero(y):
        r, c = (size // 2, size // 2) if fixed else rng.integers(2, size - 6, 2)
        x[i, r : r + 4, c : c + 4] += 0.6
    return LabelledArrays(np.clip(x, 0, 1), y)


def _rings(n: int, seed: int) -> LabelledArrays:
    """Two features; label 1 inside the unit circle: not linearly separable, easy for an RBF kernel."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, 2))
    return LabelledArrays(x, (np.hypot(x[:, 0], x[:, 1]) < 1.2).astype(np.int64))


@pytest.mark.parametrize("kind", KINDS)
def test_arrays_round_trip_and_protocol(kind: str) -> None:
    model = build_model(kind, image_size=32, seed=3)
    assert isinstance(model, Model)
    arrays = model.get_arrays()
    shifted = [a + np.asarray(0.5, dtype=a.dtype) if a.dtype.kind == "f" else a + 1 for a in arrays]
    model.set_arrays(shifted)
    for got, want in zip(model.get_arrays(), shifted, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert got.dtype == want.dtype


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_initial_model(kind: str) -> None:
    a = build_model(kind, image_size=32, seed=5).get_arrays()
    b = build_model(kind, image_size=32, seed=5).get_arrays()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_seeding_draws_as_torch_manual_seed_without_recording_stacks(monkeypatch: pytest.MonkeyPatch) -> None:
    import traceback

    import torch

    torch.manual_seed(11)
    expected = torch.rand(8)
    stacks = []
    format_stack = traceback.format_stack
    monkeypatch.setattr(traceback, "format_stack", lambda *a: stacks.append(1) or format_stack(*a))
    seed_cpu_generator(11)
    assert torch.equal(torch.rand(8), expected)
    build_model("cnn", image_size=32, seed=2).fit(
        _bright_spot_data(16, seed=1), TrainingPlan(epochs=1, batch_size=8, augment=True, seed=3)
    )
    assert stacks == []  # torch.manual_seed formats the caller's stack for each idle accelerator backend


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_shape_dtype_or_nan_is_refused(kind: str) -> None:
    model = build_model(kind, image_size=32)
    arrays = model.get_arrays()
    with pytest.raises(TrainingError, match="shape"):
        model.set_arrays([np.zeros((3, 3), dtype=arrays[0].dtype)] + arrays[1:])
    with pytest.raises(TrainingError, match="expected"):
        model.set_arrays(arrays[:-1])
    with pytest.raises(TrainingError, match="dtype"):
        model.set_arrays([arrays[0].astype(np.float16)] + arrays[1:])
    poisoned = [a.copy() for a in arrays]
    poisoned[0].flat[0] = np.nan
    with pytest.raises(TrainingError, match="NaN"):
        model.set_arrays(poisoned)


def test_cnn_width_and_depth_are_configurable() -> None:
    small = model_from_config(RunConfig(cnn_widths="8,16"))
    large = model_from_config(RunConfig(cnn_widths="32,64,128"))
    assert len(small.get_arrays()) == 2 * 2 + 2
    assert 90_000 < sum(a.size for a in large.get_arrays()) < 96_000  # the 93k CNN of the design notes


@pytest.mark.parametrize("size", [64, 224])
def test_resnet18_takes_one_channel_at_64_to_224(size: int) -> None:
    model = build_model("resnet18", image_size=size)
    scores = model.predict_scores(np.random.default_rng(0).random((2, size, size), dtype=np.float32))
    assert scores.shape == (2, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert 11_000_000 < sum(a.size for a in model.get_arrays()) < 11_300_000


# A linear model sees a finding only where it always is; the CNN must find it anywhere.
@pytest.mark.parametrize(
    ("kind", "plan", "fixed"),
    [
        ("cnn", TrainingPlan(epochs=6, learning_rate=0.05), False),
        ("cnn", TrainingPlan(steps=50, learning_rate=0.003, optimizer="adam"), False),
        ("svm", TrainingPlan(epochs=5, learning_rate=0.01), True),
    ],
)
def test_learns_a_visible_finding(kind: str, plan: TrainingPlan, fixed: bool) -> None:
    train, test = _bright_spot_data(256, seed=1, fixed=fixed), _bright_spot_data(128, seed=2, fixed=fixed)
    model = build_model(kind, image_size=32, seed=0)
    result = model.fit(train, plan)
    assert result.steps == (plan.steps or result.steps)
    after = model.evaluate(test)
    assert after.accuracy >= 0.8, f"{kind} reached only {after.accuracy:.2f}"


def test_kernel_svm_through_random_features_beats_a_linear_one() -> None:
    train, test = _rings(600, seed=1), _rings(300, seed=2)
    plan = TrainingPlan(epochs=10, learning_rate=0.01)
    scores = {}
    for kind in ("svm", "rff-svm"):
        model = build_model(kind, image_size=2, num_features=2, rff_components=300, rff_gamma=1.0, seed=0)
        assert isinstance(model, LinearSvmModel)
        model.set_standardiser(*standardiser_from_moments([feature_moments(train.x)]))
        model.fit(train, plan)
        scores[kind] = model.evaluate(test).accuracy
    assert scores["rff-svm"] > 0.9 > scores["svm"] + 0.1, scores


def test_svm_warm_starts_from_the_global_model() -> None:
    data = _bright_spot_data(64, seed=3, fixed=True)
    model = build_model("svm", image_size=32)
    arrays = model.get_arrays()
    arrays[0] = np.full_like(arrays[0], 0.25)
    model.set_arrays(arrays)
    model.fit(data, TrainingPlan(epochs=1, learning_rate=1e-6))
    np.testing.assert_allclose(model.get_arrays()[0], 0.25, atol=1e-3)  # moved a little from 0.25, not from 0


def test_federated_moments_equal_pooled_standardisation() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc, scale, (n, 3)) for loc, scale, n in ((0, 1, 50), (5, 2, 20), (-3, 0.5, 80))]
    mean, scale = standardiser_from_moments([feature_moments(p) for p in parts])
    pooled = np.concatenate(parts)
    np.testing.assert_allclose(mean, pooled.mean(axis=0))
    np.testing.assert_allclose(scale, pooled.std(axis=0))
    constant = standardiser_from_moments([feature_moments(np.ones((4, 2)))])
    np.testing.assert_array_equal(constant[1], [1.0, 1.0])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_is_deterministic_under_a_seed(optimizer: str) -> None:
    data = _bright_spot_data(64, seed=4)
    runs = []
    for _ in range(2):
        model = build_model("cnn", image_size=32, seed=1)
        model.fit(data, TrainingPlan(epochs=1, batch_size=16, optimizer=optimizer, augment=True, seed=9))
        runs.append(model.get_arrays())
    assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize("kind", ["cnn", "svm"])
def test_site_with_one_class_still_trains_and_keeps_shapes(kind: str) -> None:
    data = _bright_spot_data(64, seed=6)
    only_negatives = LabelledArrays(data.x[data.y == 0], data.y[data.y == 0])
    model = build_model(kind, image_size=32)
    shapes = [a.shape for a in model.get_arrays()]
    weights = class_weights(only_negatives.y, 2)
    assert weights == (1.0, 0.0)
    model.fit(
        only_negatives, TrainingPlan(epochs=1, learning_rate=0.001, batch_size=16, class_weights=weights)
    )
    assert [a.shape for a in model.get_arrays()] == shapes
    result = model.evaluate(only_negatives)
    assert result.counts.confusion.shape == (2, 2) and result.counts.confusion[1].sum() == 0


def test_class_weights_are_inverse_frequency() -> None:
    assert class_weights(np.array([0, 0, 0, 1]), 2) == pytest.approx((4 / 6, 2.0))
