"""What every torch image model shares: parameters as arrays, the local training loop, scoring.

The loop is written once for the small CNN and ResNet-18: mini-batch SGD (momentum) or Adam, for a
number of epochs or an exact number of steps, a class-weighted cross-entropy for sites whose labels
are skewed, FedProx's proximal term, and optional torchvision augmentations. Everything random draws
from generators seeded by the plan, so the same plan from the same parameters gives the same result.
Batch-norm buffers travel with the parameters (the whole ``state_dict``), so a site's statistics are
averaged like its weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.errors import TrainingError
from common.metrics import ClassificationCounts
from common.models.base import EvalResult, FitResult, LabelledArrays, TrainingPlan, check_compatible
from common.models.heap import retain_freed_memory

__all__ = ["TorchModel", "seed_cpu_generator"]

# Without this, denormal floats made CPU throughput collapse about 5x on these machines.
torch.set_flush_denormal(True)
# Without this, about a fifth of a CPU training step went on page faults (common.models.heap).
retain_freed_memory()


def _as_images(x: np.ndarray) -> torch.Tensor:
    """(N, H, W) float arrays -> (N, 1, H, W) float32 tensor (no copy when already float32)."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(1)


class _Augment:
    """Per-example random flips and a small affine jitter (rotation, shift, scale) with torchvision."""

    def __init__(self) -> None:
        from torchvision.transforms import v2

        self.transform = v2.Compose(
            [
                v2.RandomHorizontalFlip(),
                v2.RandomAffine(degrees=10.0, translate=(0.05, 0.05), scale=(0.95, 1.05)),
            ]
        )

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.transform(image) for image in batch])


def seed_cpu_generator(seed: int) -> None:
    """Seed torch's CPU generator, the one every fedscan model draws from, as ``torch.manual_seed``.

    ``torch.manual_seed`` also queues a seeding of every accelerator backend (CUDA, XPU, MTIA), each
    recording the caller's formatted stack; in a freshly forked task the first call read the stack's
    source files (~6 ms of CPU, measured in a forked warm interpreter) and every call formatted three
    stacks. fedscan models run on the CPU only, so the numbers drawn are the same.
    """
    torch.random.default_generator.manual_seed(seed)


class TorchModel:
    """:class:`common.models.base.Model` over any ``nn.Module`` mapping (N, 1, H, W) to class logits.

    Subclasses build ``self.network`` and set ``kind`` and ``num_classes``; the network is created
    under :func:`seed_cpu_generator` (``seed``), so every site and the server start from the same
    parameters.
    """

    kind = "torch"
    num_classes = 2
    frozen_arrays: tuple[int, ...] = ()

    def __init__(self, network: nn.Module, *, num_classes: int) -> None:
        self.network = network
        self.num_classes = num_classes
        self._keys = list(self.network.state_dict().keys())

    def get_arrays(self) -> list[np.ndarray]:
        state = self.network.state_dict()
        return [state[key].detach().cpu().numpy().copy() for key in self._keys]

    def set_arrays(self, arrays: list[np.ndarray]) -> None:
        check_compatible(self.get_arrays(), arrays, source=f"{self.kind} parameters")
        state = {key: torch.from_numpy(np.array(a)) for key, a in zip(self._keys, arrays, strict=True)}
        self.network.load_state_dict(state, strict=True)

    def _optimizer(self, plan: TrainingPlan) -> torch.optim.Optimizer:
        params = [p for p in self.network.parameters() if p.requires_grad]
        if plan.optimizer == "adam":
            return torch.optim.Adam(params, lr=plan.learning_rate)
        return torch.optim.SGD(params, lr=plan.learning_rate, momentum=plan.momentum)

    def fit(self, data: LabelledArrays, plan: TrainingPlan) -> FitResult:
        if len(data) == 0:
            raise TrainingError("Cannot train on an empty training split.")
        # Per thread (it sets the CPU's FTZ/DAZ flags): a ClientApp may run in another thread than the
        # one that imported this module, and denormals made training up to 5x slower here.
        torch.set_flush_denormal(True)
        seed_cpu_generator(plan.seed)  # augmentations draw from torch's global generator
        generator = torch.Generator().manual_seed(plan.seed)
        x, y = _as_images(data.x), torch.from_numpy(np.asarray(data.y, dtype=np.int64))
        weight = None if plan.class_weights is None else torch.tensor(plan.class_weights, dtype=torch.float32)
        loss_fn = nn.CrossEntropyLoss(weight=weight)
        optimizer = self._optimizer(plan)
        augment = _Augment() if plan.augment else None
        anchor = [p.detach().clone() for p in self.network.parameters()] if plan.proximal_mu > 0 else None
        self.network.train()
        total_steps = plan.steps or plan.epochs * -(-len(y) // plan.batch_size)
        steps, loss_sum, seen = 0, 0.0, 0
        while steps < total_steps:
            order = torch.randperm(len(y), generator=generator)
            if not plan.steps:  # report the last epoch's loss, as Keras and Flower's examples do
                loss_sum, seen = 0.0, 0
            for start in range(0, len(y), plan.batch_size):
                if steps == total_steps:
                    break
                idx = order[start : start + plan.batch_size]
                batch = x[idx] if augment is None else augment(x[idx])
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(self.network(batch), y[idx])
                objective = loss
                if anchor is not None:
                    drift = sum(
                        ((p - a) ** 2).sum() for p, a in zip(self.network.parameters(), anchor, strict=True)
                    )
                    objective = loss + 0.5 * plan.proximal_mu * drift
                objective.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(idx)
                seen += len(idx)
                steps += 1
        final_loss = loss_sum / seen if seen else float("nan")
        if not np.isfinite(final_loss):
            raise TrainingError(f"Local training diverged (loss {final_loss}); lower the learning rate.")
        return FitResult(loss=final_loss, num_examples=len(data), steps=steps)

    @torch.no_grad()
    def _logits(self, x: np.ndarray, batch_size: int = 256) -> torch.Tensor:
        torch.set_flush_denormal(True)
        self.network.eval()
        images = _as_images(x)
        if len(images) == 0:
            return torch.zeros((0, self.num_classes))
        return torch.cat(
            [self.network(images[s : s + batch_size]) for s in range(0, len(images), batch_size)]
        )

    def predict_scores(self, x: np.ndarray) -> np.ndarray:
        return torch.softmax(self._logits(x), dim=1).numpy().astype(np.float64)

    def evaluate(self, data: LabelledArrays) -> EvalResult:
        logits = self._logits(data.x)
        y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
        loss = float(nn.functional.cross_entropy(logits, y)) if len(y) else 0.0
        scores = torch.softmax(logits, dim=1).numpy().astype(np.float64)
        counts = ClassificationCounts.from_predictions(data.y, scores.reshape(len(y), self.num_classes))
        return EvalResult(loss=loss, num_examples=len(y), counts=counts)
