"""Small from-scratch CNNs of an OCTMNIST Keras notebook (`small-cnn`, `medium-cnn`).

    small-cnn:  [Conv 32 3x3 ReLU, MaxPool 2] x2                       -> Dense 64 ReLU -> K
    medium-cnn: Conv 128 / Conv 512 / Conv 1024 (each 3x3 ReLU, MaxPool 2) -> Dense 256 ReLU
                -> Dense 128 ReLU -> K

Convolutions use Keras' default "valid" padding and 2x2 max-pooling. Keras' `Flatten` ties the
dense layer to one input size; here an `AdaptiveAvgPool2d` to the grid the notebook's model sees at
28 px (5x5 for small-cnn, 1x1 for medium-cnn) sits before the flatten instead. At 28 px that pool is
the identity, so the networks are the notebook's exactly (same layers, same parameter count); at
64/128/224 px it averages the larger map down to the same grid, so one set of weights fits every
MedMNIST size (chosen over `nn.LazyLinear`, which would fix the size at the first batch and leave
uninitialised parameters for the optimiser and weight loading). Minimum input side: 10 px
(small-cnn), 22 px (medium-cnn). PyTorch's default initialisation is used (not Keras' Glorot).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.options import reject_unknown
from models.registry import register_model
from models.weights import weights_or_scratch

__all__ = ["KerasStyleCNN"]


class KerasStyleCNN(nn.Module):
    """Conv(3x3, valid) + ReLU + MaxPool(2) blocks -> adaptive pool -> flatten -> dense stack -> head."""

    def __init__(self, convs: list[int], dense: list[int], grid: int, min_input_size: int, *,
                 in_chans: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.min_input_size = min_input_size
        layers: list[nn.Module] = []
        chans = in_chans
        for width in convs:
            layers += [nn.Conv2d(chans, width, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            chans = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        mlp: list[nn.Module] = [nn.Flatten()]
        width = chans * grid * grid
        for units in dense:
            mlp += [nn.Linear(width, units), nn.ReLU(inplace=True)]
            width = units
        self.fc = nn.Sequential(*mlp)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(f"{type(self).__name__} needs inputs of at least {self.min_input_size} px, "
                             f"got {tuple(x.shape[-2:])}.")
        return self.head(self.fc(self.pool(self.features(x))))


def _build(name: str, convs, dense, grid, min_size, num_classes, in_chans, pretrained, weights, kwargs):
    reject_unknown(name, kwargs)
    model = KerasStyleCNN(convs, dense, grid, min_size, in_chans=in_chans, num_classes=num_classes)
    return weights_or_scratch(model, name, weights, pretrained, head="head", first_conv="features.0")


@register_model("small-cnn", dims="2d")
def small_cnn(num_classes: int, *, in_chans: int = 3, pretrained: bool = False, weights=None, **kwargs):
    """Keras-notebook small CNN: conv32-conv32 (3x3, ReLU, max-pool) -> dense 64 -> K."""
    return _build("small-cnn", [32, 32], [64], 5, 10, num_classes, in_chans, pretrained, weights, kwargs)


@register_model("medium-cnn", dims="2d")
def medium_cnn(num_classes: int, *, in_chans: int = 3, pretrained: bool = False, weights=None, **kwargs):
    """Keras-notebook medium CNN: conv128-conv512-conv1024 -> dense 256 -> dense 128 -> K."""
    return _build("medium-cnn", [128, 512, 1024], [256, 128], 1, 22, num_classes, in_chans, pretrained, weights, kwargs)
