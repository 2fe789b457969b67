"""A small CNN for CPUs: detects a finding anywhere in a single-channel slice.

Width and depth come from ``widths`` (one Conv-ReLU-MaxPool block per entry): about 23k parameters
with the default (16, 32, 64), 93k with (32, 64, 128). Inputs in [0, 1] are centred to roughly zero
mean and unit spread first: without it, plain SGD sat on the majority-class plateau (loss ln 2) for the
whole demo on the synthetic CT cohort. Global average *and* max pooling at the end, so a small finding
anywhere in the image is visible to the classifier, whatever the input size (64 to 224).
"""

from __future__ import annotations

import torch
from torch import nn

from common.models.torch_model import TorchModel, seed_cpu_generator

__all__ = ["CnnModel", "SmallCnn"]


def _groups(width: int, most: int = 8) -> int:
    """The number of GroupNorm groups for ``width`` channels: the largest divisor up to ``most``."""
    return max(g for g in range(1, most + 1) if width % g == 0)


class SmallCnn(nn.Module):
    """Conv-(GroupNorm)-ReLU-MaxPool blocks, then concatenated global average and max pooling, then a
    linear head.

    ``norm = "group"`` puts a GroupNorm after each convolution: normalisation that needs no statistics
    across records, so DP-SGD's per-record (per-patient) gradients stay separate, as Opacus requires;
    batch norm would mix records. Without it (``"none"``) the network is the original one.
    """

    INPUT_CENTRE = 0.5
    INPUT_SPREAD = 0.25

    def __init__(
        self, widths: tuple[int, ...] = (16, 32, 64), num_classes: int = 2, norm: str = "none"
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("SmallCnn needs at least one convolution block (widths is empty).")
        if norm not in ("none", "group"):
            raise ValueError(f"norm must be 'none' or 'group', not {norm!r}.")
        layers: list[nn.Module] = []
        channels = 1
        for width in widths:
            layers.append(nn.Conv2d(channels, width, 3, padding=1))
            if norm == "group":
                layers.append(nn.GroupNorm(_groups(width), width))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features((x - self.INPUT_CENTRE) / self.INPUT_SPREAD)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


class CnnModel(TorchModel):
    """:class:`common.models.base.Model` over :class:`SmallCnn` (binary finding / no finding)."""

    kind = "cnn"

    def __init__(
        self,
        *,
        widths: tuple[int, ...] = (16, 32, 64),
        num_classes: int = 2,
        seed: int = 0,
        norm: str = "none",
    ) -> None:
        seed_cpu_generator(seed)
        super().__init__(SmallCnn(widths, num_classes, norm), num_classes=num_classes)
