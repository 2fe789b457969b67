"""Sample-level differential privacy at a site: DP-SGD for the torch models, noisy clipped SGD for SVMs.

Both run the same mechanism, so the site's own accountant (:mod:`common.privacy.accounting`) covers
both: every step includes each training record independently with probability ``q`` (Poisson
sampling), clips each record's gradient to L2 norm ``C`` (``sample-dp-clip``), sums, and adds Gaussian
noise of standard deviation ``sigma * C``. For the CNN this is Opacus (per-sample gradients through
``GradSampleModule``, its ``DPOptimizer``); for the SVM it is written out here (the hinge loss's
per-example subgradient is one line of NumPy).

* ``q = 1 / ceil(N / B)`` and one epoch is ``ceil(N / B)`` steps (Opacus's Poisson loader), or exactly
  ``local-steps`` steps: :func:`round_mechanism` is the one definition both training and accounting use.
* ``sigma`` is ``sample-dp-noise``, or, with ``sample-dp-epsilon`` > 0, the smallest noise with which
  this site spends at most that epsilon (at ``dp-delta``) over all ``num-server-rounds`` rounds: each
  site calibrates to its own data size.
* The sampling and the noise draw from the operating system's entropy, never from the run's seed: the
  server knows the seed, and noise it can regenerate would protect nothing. DP training is therefore
  not bit-for-bit reproducible.
"""

from __future__ import annotations

import copy
import functools
import math
import secrets

import numpy as np

from common.config import RunConfig
from common.errors import ConfigError, TrainingError
from common.models import FitResult, LabelledArrays, Model, TrainingPlan
from common.privacy.accounting import SampledGaussian, calibrate_noise

__all__ = ["round_mechanism", "steps_per_round", "train_with_dp_sgd"]


def steps_per_round(config: RunConfig, num_examples: int) -> tuple[float, int]:
    """``(q, steps)`` of one round at a site with ``num_examples`` training records."""
    if num_examples < 1:
        raise TrainingError("DP-SGD needs at least one training example.")
    batches = math.ceil(num_examples / config.batch_size)
    return 1.0 / batches, config.local_steps or config.local_epochs * batches


@functools.lru_cache(maxsize=64)
def _calibrated(target: float, delta: float, q: float, total_steps: int) -> float:
    return calibrate_noise(target, delta, sampling_rate=q, steps=total_steps)


def round_mechanism(config: RunConfig, num_examples: int) -> SampledGaussian:
    """The sampled Gaussian mechanism one round of DP-SGD at this site applies."""
    q, steps = steps_per_round(config, num_examples)
    if config.sample_dp_epsilon > 0:
        try:
            sigma = _calibrated(
                config.sample_dp_epsilon, config.dp_delta, q, steps * config.num_server_rounds
            )
        except ValueError as error:
            raise ConfigError(f"sample-dp-epsilon {config.sample_dp_epsilon}: {error}") from None
    else:
        sigma = config.sample_dp_noise
    return SampledGaussian(q, sigma, steps)


def _os_seed() -> int:
    return secrets.randbits(63)


def train_with_dp_sgd(
    model: Model, data: LabelledArrays, plan: TrainingPlan, config: RunConfig
) -> tuple[FitResult, SampledGaussian]:
    """One round of sample-level DP training from the model's current parameters.

    Returns the fit result and the mechanism it applied (for the site's ledger). FedProx's proximal
    term and augmentations are not part of DP-SGD here (the run config refuses those combinations).
    """
    mechanism = round_mechanism(config, len(data))
    if model.kind in ("svm", "rff-svm"):
        return _svm_dp_sgd(model, data, plan, mechanism, config.sample_dp_clip), mechanism
    if model.kind == "cnn":
        return _torch_dp_sgd(model, data, plan, mechanism, config.sample_dp_clip), mechanism
    raise ConfigError(f"Sample-level DP is available for the cnn and SVM models, not {model.kind}.")


def _svm_dp_sgd(
    model: Model, data: LabelledArrays, plan: TrainingPlan, mechanism: SampledGaussian, clip: float
) -> FitResult:
    """Noisy clipped SGD on the hinge loss (the SVM's DP-SGD), in the model's feature space.

    The step size is per example, as in scikit-learn's SGD (``learning-rate``): one step moves the
    weights by ``lr`` times the noisy *sum* of clipped per-example subgradients, plus the L2 shrinkage
    ``lr * alpha * w`` for each expected example (data-independent, so not clipped).
    """
    from common.models.svm import LinearSvmModel

    assert isinstance(model, LinearSvmModel)
    z = model._inputs(data.x)  # standardised (and random-Fourier) features: what the SVM sees
    y = np.where(np.asarray(data.y) == 1, 1.0, -1.0)
    weights = (
        np.asarray(plan.class_weights, dtype=np.float64)[np.asarray(data.y, dtype=np.int64)]
        if plan.class_weights is not None
        else np.ones(len(y))
    )
    rng = np.random.default_rng(_os_seed())
    coef, intercept = model.coef[0].astype(np.float64).copy(), float(model.intercept[0])
    expected_batch = mechanism.sampling_rate * len(y)
    for _ in range(mechanism.steps):
        chosen = np.flatnonzero(rng.random(len(y)) < mechanism.sampling_rate)
        grad_sum = np.zeros(len(coef) + 1)
        if len(chosen):
            zc, yc = z[chosen], y[chosen]
            active = (yc * (zc @ coef + intercept) < 1.0).astype(np.float64) * weights[chosen]
            per_example = np.concatenate([zc, np.ones((len(chosen), 1))], axis=1) * (-(yc * active))[:, None]
            norms = np.linalg.norm(per_example, axis=1)
            per_example *= np.minimum(1.0, clip / np.maximum(norms, 1e-12))[:, None]
            grad_sum = per_example.sum(axis=0)
        noisy = grad_sum + rng.normal(0.0, mechanism.noise_multiplier * clip, size=grad_sum.shape)
        coef = coef - plan.learning_rate * (noisy[:-1] + expected_batch * model.alpha * coef)
        intercept = intercept - plan.learning_rate * noisy[-1]
    if not (np.all(np.isfinite(coef)) and math.isfinite(intercept)):
        raise TrainingError("DP-SGD of the SVM diverged; lower the learning rate.")
    model.coef, model.intercept = coef.reshape(1, -1), np.array([intercept])
    y01 = np.asarray(data.y, dtype=np.int64)
    return FitResult(loss=model._hinge(z, y01), num_examples=len(y), steps=mechanism.steps)


def _torch_dp_sgd(
    model: Model, data: LabelledArrays, plan: TrainingPlan, mechanism: SampledGaussian, clip: float
) -> FitResult:
    """DP-SGD with Opacus on a copy of the network (its hooks never stay on the site's model)."""
    import torch
    from opacus import PrivacyEngine
    from torch import nn

    from common.models.torch_model import TorchModel

    assert isinstance(model, TorchModel)
    torch.set_flush_denormal(True)
    network = copy.deepcopy(model.network)
    network.train()  # the site's model may have just evaluated; Opacus wraps only a training module
    for module in network.modules():  # Opacus's backward hooks cannot follow in-place activations
        if isinstance(module, nn.ReLU):
            module.inplace = False
    x = torch.from_numpy(np.ascontiguousarray(data.x, dtype=np.float32)).unsqueeze(1)
    y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
    generator = torch.Generator().manual_seed(_os_seed())
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=plan.batch_size, generator=generator
    )
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=plan.learning_rate)
        if plan.optimizer == "adam"
        else torch.optim.SGD(params, lr=plan.learning_rate, momentum=plan.momentum)
    )
    engine = PrivacyEngine(accountant="rdp")  # the site's ledger does the accounting, not Opacus
    private, optimizer, loader = engine.make_private(
        module=network,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=mechanism.noise_multiplier,
        max_grad_norm=clip,
        poisson_sampling=True,
        noise_generator=torch.Generator().manual_seed(_os_seed()),
    )
    weight = None if plan.class_weights is None else torch.tensor(plan.class_weights, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    private.train()
    steps, loss_sum, seen = 0, 0.0, 0
    while steps < mechanism.steps:
        for batch_x, batch_y in loader:
            if steps == mechanism.steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(private(batch_x), batch_y) if len(batch_y) else None
            if loss is not None:
                loss.backward()
                loss_sum += float(loss.detach()) * len(batch_y)
                seen += len(batch_y)
            optimizer.step()  # an empty Poisson batch still releases (pure) noise, as accounted
            steps += 1
    state = {k: v for k, v in network.state_dict().items()}
    model.network.load_state_dict(state, strict=True)
    final_loss = loss_sum / seen if seen else 0.0
    if not math.isfinite(final_loss):
        raise TrainingError(f"DP-SGD diverged (loss {final_loss}); lower the learning rate.")
    return FitResult(loss=final_loss, num_examples=len(data), steps=steps)
