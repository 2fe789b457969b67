"""torchvision's ResNet-18 for single-channel slices, randomly initialised (``weights=None``).

For larger runs than the small CNN is sized for (about 11.2M parameters; 64x64 to 224x224 inputs).
The first convolution takes one channel instead of three; nothing is downloaded, ever: federated
training starts from the same seeded random initialisation at every site. Inputs are centred inside
the network like the small CNN's, and batch-norm statistics are exchanged with the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from common.models.torch_model import TorchModel, seed_cpu_generator

__all__ = ["ResNet18Model", "resnet18_single_channel"]


class _Centred(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - 0.5) / 0.25)


def resnet18_single_channel(num_classes: int = 2) -> nn.Module:
    """ResNet-18 (torchvision, no weights) whose stem accepts (N, 1, H, W) inputs in [0, 1]."""
    from torchvision.models import resnet18

    network = resnet18(weights=None, num_classes=num_classes)
    network.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return _Centred(network)


class ResNet18Model(TorchModel):
    """:class:`common.models.base.Model` over :func:`resnet18_single_channel`."""

    kind = "resnet18"

    def __init__(self, *, num_classes: int = 2, seed: int = 0) -> None:
        seed_cpu_generator(seed)
        super().__init__(resnet18_single_channel(num_classes), num_classes=num_classes)
