"""Our architectures against independent references, on shared weights.

- MedMNIST's CIFAR-style ResNet-18/50 (MedMNIST/experiments, `MedMNIST2D/models.py`) against a
  re-implementation written here from that file's description, with its own module tree;
- the slice-wise model against an explicit loop over volumes and slices;
- ACS / 2.5D / 3D conversions against the `acsconv` package's converters (the ones MedMNIST's 3D
  script uses), when it is installed (test extra; skipped otherwise).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import create_model
from models.architectures.acs import ACSConv, convert_to_3d


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomise_batchnorm(net: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return net.eval()


# --- MedMNIST's CIFAR ResNets ---------------------------------------------------------------------------


class _RefBlock(nn.Module):
    """One residual unit of kuangliu/pytorch-cifar: basic (two 3x3) or bottleneck (1x1, 3x3, 1x1)."""

    def __init__(self, cin: int, planes: int, stride: int, bottleneck: bool) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        cout = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
        else:
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        if self.bottleneck:
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
        else:
            y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class _RefResNet(nn.Module):
    def __init__(self, blocks: list[int], bottleneck: bool, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            units = []
            for j in range(n):
                units.append(_RefBlock(cin, planes, (1 if i == 0 else 2) if j == 0 else 1, bottleneck))
                cin = planes * (4 if bottleneck else 1)
            setattr(self, f"layer{i + 1}", nn.Sequential(*units))
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.linear(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("name,blocks,bottleneck", [("medmnist-resnet18", [2, 2, 2, 2], False),
                                                    ("medmnist-resnet50", [3, 4, 6, 3], True)])
@torch.no_grad()
def test_cifar_resnet_equals_a_reimplementation_of_medmnists(name, blocks, bottleneck):
    ours = _randomise_batchnorm(create_model(name, 5, in_chans=1))
    ref = _RefResNet(blocks, bottleneck, in_channels=1, num_classes=5).eval()
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=True)  # same key layout as MedMNIST's file
    assert (missing, unexpected) == ([], [])
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    ours, ref = ours.double(), ref.double()
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=0)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


# --- the slices model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
@torch.no_grad()
def test_slices_model_equals_a_loop_over_slices(slice_axis):
    """Upsample each slice, 1x1 channel conv, backbone, then flatten -> fc1 -> fc2, volume by volume."""
    depth = 6
    m = create_model("slices:test_efficientnet", 3, in_chans=1, depth=depth, image_size=16, slice_axis=slice_axis,
                     chunk_size=4)
    m = _randomise_batchnorm(m)
    with torch.no_grad():  # a channel conv that is not the plain replication it starts as
        m.channel.conv.weight.copy_(torch.randn_like(m.channel.conv.weight))
        m.channel.conv.bias.copy_(torch.randn_like(m.channel.conv.bias))
    x = torch.randn(2, 1, depth, depth, depth)
    rows = []
    for volume in x:
        feats = []
        for s in range(depth):
            sl = volume.select(1 + slice_axis, s)  # (C, P, Q)
            sl = F.interpolate(sl[None], size=(16, 16), mode="bilinear", align_corners=False)
            sl = F.conv2d(sl, m.channel.conv.weight, m.channel.conv.bias)
            feats.append(m.backbone(sl)[0])
        flat = torch.cat(feats)
        rows.append(F.linear(F.linear(flat, m.head.fc1.weight, m.head.fc1.bias), m.head.fc2.weight, m.head.fc2.bias))
    torch.testing.assert_close(m(x), torch.stack(rows), atol=1e-5, rtol=1e-5)


# --- ACS / 2.5D / 3D against acsconv --------------------------------------------------------------------


def _acsconv_reference(net2d: nn.Module, mode: str) -> nn.Module:
    """`net2d` in 3D with acsconv's convolution operators and its own 2D -> 2.5D / I3D weight transforms.

    acsconv 0.1.1's converters cannot rebuild BatchNorm under current torch (they read constructor
    arguments from `co_varnames`), so BatchNorm and pooling come from our converter (the plain
    BatchNorm3d / AdaptiveAvgPool3d that acsconv's would give) and every convolution from acsconv.
    """
    ops = pytest.importorskip("acsconv.operators", reason="acsconv (test extra) not installed")
    from acsconv.converters.conv2_5d_converter import load_state_dict_from_2d_to_2_5d
    from acsconv.converters.conv3d_converter import load_state_dict_from_2d_to_i3d

    ref = convert_to_3d(copy.deepcopy(net2d), mode)
    for name, conv in net2d.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        kw = dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size[0],
                  stride=conv.stride[0], padding=conv.padding[0], dilation=conv.dilation[0], groups=conv.groups,
                  bias=conv.bias is not None)
        new = {"acs": ops.ACSConv, "2.5d": ops.Conv2_5d, "3d": nn.Conv3d}[mode](**kw)
        parent, _, child = name.rpartition(".")
        setattr(ref.get_submodule(parent) if parent else ref, child, new)
    state = dict(net2d.state_dict())
    {"acs": lambda: ref.load_state_dict(state, strict=True),
     "2.5d": lambda: load_state_dict_from_2d_to_2_5d(ref, state, strict=True),
     "3d": lambda: load_state_dict_from_2d_to_i3d(ref, state, strict=True, repeat_axis=-3)}[mode]()
    return ref.eval()


@pytest.mark.parametrize("mode", ["acs", "2.5d", "3d"])
@torch.no_grad()
def test_3d_resnets_equal_acsconv_operators(mode, tmp_path):
    net2d = _randomise_batchnorm(create_model("medmnist-resnet18", 3, in_chans=1))
    ref = _acsconv_reference(net2d, mode)
    path = tmp_path / "r18.pt"
    torch.save(net2d.state_dict(), path)
    ours = create_model(f"{mode}:resnet18", 3, in_chans=1, weights=str(path)).eval()
    x = torch.randn(2, 1, 10, 12, 14)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("k,s,p,groups,out", [(3, 1, 1, 1, 8), (3, 2, 1, 1, 7), (7, 2, 3, 1, 5), (1, 2, 0, 1, 4),
                                              (3, 1, 0, 1, 6), (3, 1, 1, 6, 6)])
@torch.no_grad()
def test_acs_conv_equals_acsconv_operator(k, s, p, groups, out):
    """Undilated standard and depthwise convolutions, the cases acsconv supports as the definition says.

    (With dilation > 1 acsconv crops the padded input at k//2 instead of d·(k//2), one voxel off the
    planar-kernel definition that `test_models_3d` checks our ACSConv against; grouped convolutions
    other than depthwise it refuses, and a strided depthwise one on odd sizes it feeds all channels.)
    """
    d = 1
    ops = pytest.importorskip("acsconv.operators", reason="acsconv (test extra) not installed")
    conv2d = nn.Conv2d(6, out, k, s, p, d, groups=groups, bias=True)
    ref = ops.ACSConv(6, out, k, s, p, d, groups=groups, bias=True)
    ref.load_state_dict(conv2d.state_dict())
    x = torch.randn(2, 6, 9, 10, 11)
    torch.testing.assert_close(ACSConv.from_conv2d(conv2d)(x), ref(x), atol=1e-5, rtol=1e-5)
