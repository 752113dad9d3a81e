"""MedMNIST's CIFAR-style ResNets (`medmnist-resnet18`, `medmnist-resnet50`).

The architectures of MedMNIST's own experiments (MedMNIST/experiments, `MedMNIST2D/models.py`,
adapted there from kuangliu/pytorch-cifar) used for the 28 px baselines: a 3x3 stride-1 stem conv
with BatchNorm and ReLU and *no* max-pool, four stages of BasicBlocks ([2, 2, 2, 2]) or Bottlenecks
([3, 4, 6, 3]) at 64/128/256/512 planes (strides 1, 2, 2, 2), a 1x1-conv + BN projection shortcut
when the shape changes, adaptive average pooling and a linear head. Module names match that file
(`conv1`, `bn1`, `layer1..4`, `shortcut`, `linear`), so its checkpoints (`{"net": state_dict}`)
load with `weights=FILE`.

`stem="imagenet"` builds what that script trains at 224 px instead (`--resize`): torchvision's
`resnet18` / `resnet50(num_classes=K)` (7x7 stride-2 stem and max-pool, torchvision's own init; a
first conv for `in_chans` other than 3 is built the same way). The `medmnist` training recipe picks
it when the input is 224 px. Plain `resnet18` / `resnet50` keep timm's (ImageNet) meaning: the same
layout, timm's init (the last BatchNorm of each block starts at zero) and ImageNet weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.options import check_choice, reject_unknown
from models.registry import register_model
from models.weights import weights_or_scratch

__all__ = ["BasicBlock", "Bottleneck", "MedMNISTResNet"]

STEMS = ("cifar", "imagenet")  # MedMNIST's 28 px ResNet; torchvision's (2D) or timm's (3D prefixes)


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()  # identity, as in the original (keeps its state-dict keys)
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a residual shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 wide) conv + BN layers with a residual shortcut (ResNet-50)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class MedMNISTResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stride-1 stem, no max-pool, adaptive average pool, linear head."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], num_blocks: list[int], *,
                 in_chans: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = 512 * block.expansion
        self.linear = nn.Linear(self.num_features, num_classes)

    def _make_layer(self, block, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(self.avgpool(out), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.forward_features(x))


def torchvision_resnet(depth: int, num_classes: int, in_chans: int = 3) -> nn.Module:
    """torchvision's ResNet-18/50 as MedMNIST's 224 px runs build it (`resnet18(num_classes=K)`), its first
    conv rebuilt (torchvision's Kaiming init) for `in_chans` other than 3."""
    import torchvision

    model = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
    if in_chans != 3:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def _build(name: str, block, num_blocks: list[int], num_classes: int, in_chans: int,
           pretrained: bool, weights, kwargs: dict) -> nn.Module:
    stem = kwargs.pop("stem", "cifar")
    reject_unknown(name, kwargs, ("stem",))
    check_choice("stem", stem, STEMS)
    if stem == "imagenet":
        model = torchvision_resnet(18 if block is BasicBlock else 50, num_classes, in_chans)
        return weights_or_scratch(model, name, weights, pretrained, head="fc", first_conv="conv1")
    model = MedMNISTResNet(block, num_blocks, in_chans=in_chans, num_classes=num_classes)
    return weights_or_scratch(model, name, weights, pretrained, head="linear", first_conv="conv1")


@register_model("medmnist-resnet18", dims="2d")
def medmnist_resnet18(num_classes: int, *, in_chans: int = 3, pretrained: bool = False, weights=None, **kwargs):
    """MedMNIST's ResNet-18: CIFAR-style for 28 px inputs; `stem=imagenet`: torchvision's (their 224 px)."""
    return _build("medmnist-resnet18", BasicBlock, [2, 2, 2, 2], num_classes, in_chans, pretrained, weights, kwargs)


@register_model("medmnist-resnet50", dims="2d")
def medmnist_resnet50(num_classes: int, *, in_chans: int = 3, pretrained: bool = False, weights=None, **kwargs):
    """MedMNIST's ResNet-50: CIFAR-style for 28 px inputs; `stem=imagenet`: torchvision's (their 224 px)."""
    return _build("medmnist-resnet50", Bottleneck, [3, 4, 6, 3], num_classes, in_chans, pretrained, weights, kwargs)
