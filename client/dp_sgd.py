"""Sample-level differential privacy at a site: DP-SGD over *patients* (by default) or records.

One step of DP-SGD here is the sampled Gaussian mechanism over **units**, and the unit is the patient
unless the run config says ``sample-dp-unit = "record"``:

* every unit is included independently with probability ``q`` (Poisson sampling);
* a patient's gradient is the mean of its records' gradients (at most ``sample-dp-patient-records``
  of them, drawn at random, per step; with ``sample-dp-augmentations`` K > 1, each record's K randomly
  augmented copies are averaged in too: augmentation multiplicity, De et al. 2022), *then* clipped to
  L2 norm ``C`` (``sample-dp-clip``): a patient with 300 slices moves the sum no more than a patient
  with one;
* the clipped unit gradients are summed, Gaussian noise of standard deviation ``sigma * C`` is added,
  and the sum is divided by the expected number of units ``q * U``.

So the patient-level epsilon is the mechanism's own. With ``record`` as the unit, each record is a unit
and the site's ledger converts to patient level by group privacy over the largest number of records
of one patient (:func:`common.privacy.accounting.group_mechanism`), which is far costlier: the reason
the patient is the default. The CNN's per-record gradients come from Opacus (``GradSampleModule``,
which supports Conv, Linear and GroupNorm layers); averaging per patient, clipping and noise are done
here, because Opacus clips per row. The SVM's per-record hinge subgradient is one line of NumPy.

* ``q = 1 / ceil(U / B)`` and one epoch is ``ceil(U / B)`` steps, with ``B`` the batch size in units,
  or exactly ``local-steps`` steps: :func:`round_mechanism` is the one definition both training and
  the ledger use (the ledger from the store's manifest, training from the records it holds).
* ``sigma`` is ``sample-dp-noise``, or, with ``sample-dp-epsilon`` > 0, the smallest noise with which
  this site spends at most that epsilon per *patient* (at ``dp-delta``) over all ``num-server-rounds``
  rounds: each site calibrates to its own population.
* The sampling, the augmentations and the noise draw from the operating system's entropy, never from
  the run's seed: the server knows the seed, and noise it can regenerate would protect nothing. DP
  training is therefore not bit-for-bit reproducible.
"""

from __future__ import annotations

import copy
import functools
import math
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from client.epsilon_ledger import Release
from common.config import RunConfig
from common.errors import ConfigError, TrainingError
from common.models import FitResult, LabelledArrays, Model, TrainingPlan
from common.privacy.accounting import SampledGaussian, calibrate_noise

__all__ = [
    "TrainingPopulation",
    "round_mechanism",
    "round_release",
    "steps_per_round",
    "train_with_dp_sgd",
]


@dataclass(frozen=True)
class TrainingPopulation:
    """Who is in a site's training split: records, patients, and the most records of one patient."""

    records: int
    patients: int
    max_records_per_patient: int

    @classmethod
    def of_patients(cls, patients: Sequence[object]) -> TrainingPopulation:
        """From one patient key per record (pseudonyms from the manifest, or group numbers)."""
        counts: dict[object, int] = {}
        for patient in patients:
            counts[patient] = counts.get(patient, 0) + 1
        return cls(len(patients), len(counts), max(counts.values(), default=0))

    @classmethod
    def of(cls, data: LabelledArrays) -> TrainingPopulation:
        """From records in memory (each record its own patient when ``data.groups`` is ``None``)."""
        if data.groups is None:
            return cls(len(data), len(data), 1 if len(data) else 0)
        return cls.of_patients(np.asarray(data.groups).tolist())


def _units(config: RunConfig, population: TrainingPopulation) -> int:
    return population.patients if config.sample_dp_unit == "patient" else population.records


def steps_per_round(config: RunConfig, population: TrainingPopulation) -> tuple[float, int]:
    """``(q, steps)`` of one round at a site with this training ``population``."""
    units = _units(config, population)
    if units < 1:
        raise TrainingError("DP-SGD needs at least one training example.")
    batches = math.ceil(units / config.batch_size)
    return 1.0 / batches, config.local_steps or config.local_epochs * batches


def _group_size(config: RunConfig, population: TrainingPopulation) -> int:
    return 1 if config.sample_dp_unit == "patient" else max(1, population.max_records_per_patient)


@functools.lru_cache(maxsize=64)
def _calibrated(target: float, delta: float, q: float, total_steps: int, group_size: int) -> float:
    return calibrate_noise(target, delta, sampling_rate=q, steps=total_steps, group_size=group_size)


def round_mechanism(config: RunConfig, population: TrainingPopulation) -> SampledGaussian:
    """The sampled Gaussian mechanism (over units) one round of DP-SGD at this site applies."""
    q, steps = steps_per_round(config, population)
    if config.sample_dp_epsilon > 0:
        try:
            sigma = _calibrated(
                config.sample_dp_epsilon,
                config.dp_delta,
                q,
                steps * config.num_server_rounds,
                _group_size(config, population),
            )
        except ValueError as error:
            raise ConfigError(f"sample-dp-epsilon {config.sample_dp_epsilon}: {error}") from None
    else:
        sigma = config.sample_dp_noise
    return SampledGaussian(q, sigma, steps)


def round_release(config: RunConfig, population: TrainingPopulation) -> Release:
    """What the site's ledger books for one round of DP-SGD: the mechanism, its unit and group size."""
    m = round_mechanism(config, population)
    return Release(
        "sample",
        m.sampling_rate,
        m.noise_multiplier,
        m.steps,
        unit=config.sample_dp_unit,
        group_size=_group_size(config, population),
    )


def _os_seed() -> int:
    return secrets.randbits(63)


def _unit_members(config: RunConfig, data: LabelledArrays) -> list[np.ndarray]:
    """Record indices of every unit: one array per patient (or one record each)."""
    if config.sample_dp_unit == "record" or data.groups is None:
        return [np.array([i]) for i in range(len(data))]
    groups = np.asarray(data.groups)
    order = np.argsort(groups, kind="stable")
    _, starts = np.unique(groups[order], return_index=True)
    return np.split(order, starts[1:])


def _draw(
    rng: np.random.Generator, units: list[np.ndarray], q: float, per_unit: int
) -> tuple[np.ndarray, np.ndarray]:
    """One Poisson-sampled batch: record indices and, for each, its position among the chosen units."""
    chosen = np.flatnonzero(rng.random(len(units)) < q)
    records: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    for position, unit in enumerate(chosen):
        members = units[unit]
        if len(members) > per_unit:
            members = rng.choice(members, per_unit, replace=False)
        records.append(members)
        owners.append(np.full(len(members), position))
    if not records:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(records), np.concatenate(owners)


def train_with_dp_sgd(
    model: Model, data: LabelledArrays, plan: TrainingPlan, config: RunConfig
) -> tuple[FitResult, SampledGaussian]:
    """One round of DP-SGD from the model's current parameters.

    Returns the fit result and the mechanism it applied (over units). FedProx's proximal term and the
    non-private augmentations are not part of it (the run config refuses those combinations).
    """
    population = TrainingPopulation.of(data)
    mechanism = round_mechanism(config, population)
    units = _unit_members(config, data)
    if model.kind in ("svm", "rff-svm"):
        return _svm_dp_sgd(model, data, plan, mechanism, units, config), mechanism
    if model.kind == "cnn":
        return _torch_dp_sgd(model, data, plan, mechanism, units, config), mechanism
    raise ConfigError(f"Sample-level DP is available for the cnn and SVM models, not {model.kind}.")


def _svm_dp_sgd(
    model: Model,
    data: LabelledArrays,
    plan: TrainingPlan,
    mechanism: SampledGaussian,
    units: list[np.ndarray],
    config: RunConfig,
) -> FitResult:
    """Noisy clipped SGD on the hinge loss (the SVM's DP-SGD), in the model's feature space.

    The step size is per unit, as in scikit-learn's SGD (``learning-rate``): one step moves the weights
    by ``lr`` times the noisy *sum* of clipped unit subgradients, plus the L2 shrinkage
    ``lr * alpha * w`` for each expected unit (data-independent, so not clipped).
    """
    from common.models.svm import LinearSvmModel

    assert isinstance(model, LinearSvmModel)
    clip = config.sample_dp_clip
    z = model._inputs(data.x)  # standardised (and random-Fourier) features: what the SVM sees
    y = np.where(np.asarray(data.y) == 1, 1.0, -1.0)
    weights = (
        np.asarray(plan.class_weights, dtype=np.float64)[np.asarray(data.y, dtype=np.int64)]
        if plan.class_weights is not None
        else np.ones(len(y))
    )
    rng = np.random.default_rng(_os_seed())
    coef, intercept = model.coef[0].astype(np.float64).copy(), float(model.intercept[0])
    expected_units = mechanism.sampling_rate * len(units)
    for _ in range(mechanism.steps):
        records, owners = _draw(rng, units, mechanism.sampling_rate, config.sample_dp_patient_records)
        grad_sum = np.zeros(len(coef) + 1)
        if len(records):
            zc, yc = z[records], y[records]
            active = (yc * (zc @ coef + intercept) < 1.0).astype(np.float64) * weights[records]
            per_record = np.concatenate([zc, np.ones((len(records), 1))], axis=1) * (-(yc * active))[:, None]
            count = np.bincount(owners)
            per_unit = np.zeros((len(count), per_record.shape[1]))
            np.add.at(per_unit, owners, per_record)
            per_unit /= count[:, None]
            norms = np.linalg.norm(per_unit, axis=1)
            per_unit *= np.minimum(1.0, clip / np.maximum(norms, 1e-12))[:, None]
            grad_sum = per_unit.sum(axis=0)
        noisy = grad_sum + rng.normal(0.0, mechanism.noise_multiplier * clip, size=grad_sum.shape)
        coef = coef - plan.learning_rate * (noisy[:-1] + expected_units * model.alpha * coef)
        intercept = intercept - plan.learning_rate * noisy[-1]
    if not (np.all(np.isfinite(coef)) and math.isfinite(intercept)):
        raise TrainingError("DP-SGD of the SVM diverged; lower the learning rate.")
    model.coef, model.intercept = coef.reshape(1, -1), np.array([intercept])
    y01 = np.asarray(data.y, dtype=np.int64)
    return FitResult(loss=model._hinge(z, y01), num_examples=len(y), steps=mechanism.steps)


def _augment(batch, generator):  # type: ignore[no-untyped-def]
    """Random horizontal flips and shifts of up to 1/16 of the image (zero-filled), per image."""
    import torch

    size = batch.shape[-1]
    limit = max(1, size // 16)
    out = torch.zeros_like(batch)
    flips = torch.rand(len(batch), generator=generator) < 0.5
    shifts = torch.randint(-limit, limit + 1, (len(batch), 2), generator=generator)
    for i in range(len(batch)):
        image = batch[i].flip(-1) if flips[i] else batch[i]
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        src_y, dst_y = slice(max(0, -dy), size - max(0, dy)), slice(max(0, dy), size - max(0, -dy))
        src_x, dst_x = slice(max(0, -dx), size - max(0, dx)), slice(max(0, dx), size - max(0, -dx))
        out[i, ..., dst_y, dst_x] = image[..., src_y, src_x]
    return out


def _torch_dp_sgd(
    model: Model,
    data: LabelledArrays,
    plan: TrainingPlan,
    mechanism: SampledGaussian,
    units: list[np.ndarray],
    config: RunConfig,
) -> FitResult:
    """DP-SGD on a copy of the network: Opacus's per-record gradients, averaged per unit (and over
    augmented copies), clipped per unit, summed and noised here; the site's model never keeps hooks."""
    import torch
    from opacus import GradSampleModule
    from torch import nn

    from common.models.torch_model import TorchModel

    assert isinstance(model, TorchModel)
    torch.set_flush_denormal(True)
    clip, copies = config.sample_dp_clip, config.sample_dp_augmentations
    network = copy.deepcopy(model.network)
    network.train()  # the site's model may have just evaluated
    for module in network.modules():  # Opacus's backward hooks cannot follow in-place activations
        if isinstance(module, nn.ReLU):
            module.inplace = False
    sampler = GradSampleModule(network, batch_first=True, loss_reduction="sum")
    x = torch.from_numpy(np.ascontiguousarray(data.x, dtype=np.float32)).unsqueeze(1)
    y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
    rng = np.random.default_rng(_os_seed())
    generator = torch.Generator().manual_seed(_os_seed())
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=plan.learning_rate)
        if plan.optimizer == "adam"
        else torch.optim.SGD(params, lr=plan.learning_rate, momentum=plan.momentum)
    )
    weight = None if plan.class_weights is None else torch.tensor(plan.class_weights, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight, reduction="sum")
    expected_units = mechanism.sampling_rate * len(units)
    loss_sum, seen = 0.0, 0
    for _ in range(mechanism.steps):
        records, owners = _draw(rng, units, mechanism.sampling_rate, config.sample_dp_patient_records)
        optimizer.zero_grad(set_to_none=True)
        summed = [torch.zeros_like(p) for p in params]
        if len(records):
            index = torch.from_numpy(records)
            batch, labels = x[index], y[index]
            owner = torch.from_numpy(owners)
            if copies > 1:
                batch = _augment(batch.repeat_interleave(copies, dim=0), generator)
                labels, owner = labels.repeat_interleave(copies), owner.repeat_interleave(copies)
            for p in params:
                p.grad_sample = None  # type: ignore[attr-defined]
            loss = loss_fn(sampler(batch), labels)
            with warnings.catch_warnings():  # Opacus's hooks on a first layer whose input needs no gradient
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()
            count = torch.bincount(owner).to(torch.float32)
            per_unit = []
            for p in params:
                grads = torch.zeros((len(count), *p.shape), dtype=p.dtype)
                grads.index_add_(0, owner, p.grad_sample)  # type: ignore[attr-defined]
                per_unit.append(grads / count.view(-1, *([1] * p.dim())))
            norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in per_unit))  # type: ignore[arg-type]
            factor = (clip / (norms + 1e-6)).clamp(max=1.0)
            summed = [torch.einsum("u,u...->...", factor, g) for g in per_unit]
            loss_sum += float(loss.detach())
            seen += len(labels)
        for p, total in zip(params, summed, strict=True):
            noise = torch.normal(0.0, mechanism.noise_multiplier * clip, p.shape, generator=generator)
            p.grad = (total + noise) / max(expected_units, 1e-12)  # an empty batch releases pure noise
            p.grad_sample = None  # type: ignore[attr-defined]
        optimizer.step()
    sampler.remove_hooks()
    model.network.load_state_dict(network.state_dict(), strict=True)
    final_loss = loss_sum / seen if seen else 0.0
    if not math.isfinite(final_loss) or not all(torch.isfinite(p).all() for p in params):
        raise TrainingError(f"DP-SGD diverged (loss {final_loss}); lower the learning rate.")
    return FitResult(loss=final_loss, num_examples=len(data), steps=mechanism.steps)
