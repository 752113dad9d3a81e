"""ResNet-18/50 for volumes with ACS, 2.5D or 3D convolutions (MedMNIST's 3D baselines).

MedMNIST's experiments build a 2D ResNet and convert it with the `acsconv` converters
(https://github.com/M3DV/ACSConv). This is our own small implementation of the same idea:

- `ACSConv`: the 2D kernel (O, I/g, k, k) is kept as is; its output channels are split in three
  groups (sizes as acsconv: the first groups take the remainder) applied in the axial (H, W),
  coronal (D, W) and sagittal (D, H) planes of a (B, C, D, H, W) volume, and concatenated.
- 2.5D (`Conv2_5d`): the kernel becomes 1×k×k in (D, H, W) order (k×k in-plane, 1 across slices);
  stride and dilation apply on all three axes, as acsconv's `Conv2_5d` does.
- 3D: a k×k×k `nn.Conv3d` whose weights inflate the 2D ones (I3D: replicated along depth and divided
  by k), as MedMNIST's default `--pretrained_3d i3d`.

`convert_to_3d(model, mode)` walks any 2D network (MedMNIST's ResNet `medmnist-resnet18/50`,
torchvision's or timm's ResNet) and replaces Conv2d, BatchNorm2d, pooling, Dropout2d and Upsample with their 3D forms,
keeping weights. 2D checkpoints (`weights=FILE`) load into the 2D ResNet before conversion.

Registered: `acs:resnet18`, `acs:resnet50`, `2.5d:resnet18`, `2.5d:resnet50`, `3d:resnet18`,
`3d:resnet50`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.architectures.medmnist_resnet import STEMS, medmnist_resnet18, medmnist_resnet50
from models.architectures.timm2d import create_timm_model
from models.errors import ModelError
from models.options import check_choice, reject_unknown
from models.registry import register_prefix
from models.weights import load_weights, read_state_dict

Mode = Literal["acs", "2.5d", "3d"]
Stem = Literal["cifar", "imagenet"]
MODES = ("acs", "2.5d", "3d")


# --- operators ------------------------------------------------------------------------------------


def split3(n: int) -> tuple[int, int, int]:
    """acsconv's split of n into (axial, coronal, sagittal): equal parts, remainder to the first."""
    return tuple(n // 3 + (1 if i < n % 3 else 0) for i in range(3))  # type: ignore[return-value]


def _same(value, what: str) -> int:
    vals = (value,) if isinstance(value, int) else tuple(value)
    if len(set(vals)) != 1:
        raise ModelError(f"cannot convert a Conv2d with non-square {what} {value} to 3D.")
    return int(vals[0])


class ACSConv(nn.Module):
    """ACS convolution (Yang et al., "Reinforcing 2D Representations as 3D", 2021).

    Holds a 2D kernel `weight` (O, I/groups, k, k) in exactly `nn.Conv2d`'s layout, so 2D state dicts
    load unchanged. Output channels are split into three groups (`acs_kernel_split`, default
    `split3(O)`): the first is applied as a 1×k×k kernel (axial plane H×W), the second as k×1×k
    (coronal, D×W), the third as k×k×1 (sagittal, D×H); the results are concatenated along channels
    and the bias is added. Along the axis where a group's kernel is 1, sampling follows the 3D conv
    with the same k, stride, padding and dilation, so all three outputs have nn.Conv3d's shape.
    Grouped convolutions split whole groups instead of channels (depthwise included).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = True, acs_kernel_split=None):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ModelError(f"ACSConv: channels {in_channels}->{out_channels} not divisible by groups={groups}.")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.groups = groups
        units = out_channels if groups == 1 else groups
        split = tuple(acs_kernel_split) if acs_kernel_split is not None else split3(units)
        if len(split) != 3 or sum(split) != units or min(split) < 0:
            raise ModelError(f"acs_kernel_split={split} must be three counts summing to {units}.")
        self.acs_kernel_split = split
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, groups=groups, bias=bias)  # default init
        with torch.no_grad():
            self.weight.copy_(conv.weight)
            if bias:
                self.bias.copy_(conv.bias)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d) -> "ACSConv":
        """The ACS form of `conv`, sharing its weight and bias tensors (kept exactly)."""
        if conv.padding_mode != "zeros":
            raise ModelError(f"cannot convert a Conv2d with padding_mode={conv.padding_mode!r} to ACS.")
        k = _same(conv.kernel_size, "kernel")
        pad = conv.padding
        if isinstance(pad, str):
            if pad == "same" and k % 2 == 0:
                raise ModelError("cannot convert an even-kernel Conv2d with padding='same' to ACS.")
            pad = 0 if pad == "valid" else _same(conv.dilation, "dilation") * (k - 1) // 2
        new = cls(conv.in_channels, conv.out_channels, k, _same(conv.stride, "stride"), _same(pad, "padding"),
                  _same(conv.dilation, "dilation"), conv.groups, conv.bias is not None)
        new.weight = conv.weight
        new.bias = conv.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, p, d, g = self.kernel_size, self.stride, self.padding, self.dilation, self.groups
        w = self.weight
        if k == 1 and p == 0:  # a 1×1 kernel is the same in every plane
            return F.conv3d(x, w.unsqueeze(2), self.bias, s, 0, d, g)
        o_per, i_per = self.out_channels // g, self.in_channels // g
        outs, o0, i0 = [], 0, 0
        for plane, n in enumerate(self.acs_kernel_split):
            if n == 0:
                continue
            o_n, i_n, groups = (n, self.in_channels, 1) if g == 1 else (n * o_per, n * i_per, n)
            xi = x if g == 1 else x[:, i0:i0 + i_n]
            wi = w[o0:o0 + o_n].unsqueeze(2 + plane)  # kernel 1 along D (axial), H (coronal), W (sagittal)
            padding = [p, p, p]
            padding[plane] = 0
            xi = self._centre(xi, plane)
            outs.append(F.conv3d(xi, wi, None, s, tuple(padding), d, groups))
            o0, i0 = o0 + o_n, i0 + (i_n if g > 1 else 0)
        out = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out

    def _centre(self, x: torch.Tensor, plane: int) -> torch.Tensor:
        """Along the kernel-1 axis, keep the positions a k-kernel 3D conv would centre on."""
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        if 2 * p == d * (k - 1):  # 'same'-style padding: the centres are the input positions
            return x
        axis = 2 + plane
        n = x.shape[axis]
        n_out = (n + 2 * p - d * (k - 1) - 1) // s + 1
        if n_out < 1:
            raise ModelError(f"ACSConv: a volume of size {n} along an axis is too small for kernel {k}.")
        pad = [0] * 6
        pad[2 * (4 - axis)] = pad[2 * (4 - axis) + 1] = p  # F.pad lists the last axis first
        x = F.pad(x, pad)
        start = d * (k - 1) // 2
        return x.narrow(axis, start, (n_out - 1) * s + 1)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}")
        if self.dilation != 1:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s + f", acs_kernel_split={self.acs_kernel_split}"


class Conv2_5d(nn.Conv3d):
    """2.5D convolution: a Conv3d with kernel 1×k×k (no mixing across slices), as acsconv's."""

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d) -> "Conv2_5d":
        k = _same(conv.kernel_size, "kernel")
        pad = conv.padding if isinstance(conv.padding, str) else _same(conv.padding, "padding")
        new = cls(conv.in_channels, conv.out_channels, (1, k, k), _same(conv.stride, "stride"),
                  pad if isinstance(pad, str) else (0, pad, pad), _same(conv.dilation, "dilation"), conv.groups,
                  conv.bias is not None, conv.padding_mode)
        with torch.no_grad():
            new.weight.copy_(conv.weight.unsqueeze(2))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new


def conv3d_from_conv2d(conv: nn.Conv2d, i3d: bool = True) -> nn.Conv3d:
    """k×k×k Conv3d; `i3d` inflates the 2D weights (replicated along depth, divided by k)."""
    k = _same(conv.kernel_size, "kernel")
    pad = conv.padding if isinstance(conv.padding, str) else _same(conv.padding, "padding")
    new = nn.Conv3d(conv.in_channels, conv.out_channels, k, _same(conv.stride, "stride"), pad,
                    _same(conv.dilation, "dilation"), conv.groups, conv.bias is not None, conv.padding_mode)
    if i3d:
        with torch.no_grad():
            new.weight.copy_(conv.weight.unsqueeze(2).repeat(1, 1, k, 1, 1) / k)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


class GlobalAvgPool3d(nn.Module):
    """Mean over (D, H, W); stands in for timm's fast 2D global pooling."""

    def __init__(self, flatten: bool = True):
        super().__init__()
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3, 4), keepdim=not self.flatten)


def _triple(v):
    if isinstance(v, (tuple, list)):
        return tuple(v) + (v[-1],) * (3 - len(v)) if len(set(v)) == 1 else None
    return v


def _convert_layer(m: nn.Module, mode: Mode, i3d: bool) -> nn.Module | None:
    """The 3D replacement for one 2D layer, or None when `m` is not a 2D layer."""
    if isinstance(m, nn.Conv2d):
        if mode == "acs":
            return ACSConv.from_conv2d(m)
        return Conv2_5d.from_conv2d(m) if mode == "2.5d" else conv3d_from_conv2d(m, i3d)
    if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and type(m) in (nn.BatchNorm2d, nn.InstanceNorm2d):
        cls = nn.BatchNorm3d if isinstance(m, nn.BatchNorm2d) else nn.InstanceNorm3d
        new = cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        new.load_state_dict(m.state_dict())
        return new
    if type(m) is nn.MaxPool2d:
        args = [_triple(a) for a in (m.kernel_size, m.stride, m.padding, m.dilation)]
        if None in args:
            raise ModelError(f"cannot convert a non-square {m} to 3D.")
        return nn.MaxPool3d(*args, return_indices=m.return_indices, ceil_mode=m.ceil_mode)
    if type(m) is nn.AvgPool2d:
        args = [_triple(a) for a in (m.kernel_size, m.stride, m.padding)]
        if None in args:
            raise ModelError(f"cannot convert a non-square {m} to 3D.")
        return nn.AvgPool3d(*args, ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad,
                            divisor_override=m.divisor_override)
    if type(m) in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
        size = _triple(m.output_size)
        if size is None:
            raise ModelError(f"cannot convert {m} with a non-cubic output size to 3D.")
        return nn.AdaptiveAvgPool3d(size) if type(m) is nn.AdaptiveAvgPool2d else nn.AdaptiveMaxPool3d(size)
    if type(m) is nn.Dropout2d:
        return nn.Dropout3d(m.p, m.inplace)
    if type(m) is nn.Upsample:
        mode_ = {"bilinear": "trilinear", "bicubic": "trilinear"}.get(m.mode, m.mode)
        return nn.Upsample(m.size, m.scale_factor, mode_, m.align_corners)
    if type(m).__name__ == "FastAdaptiveAvgPool":  # timm's global pooling (mean over dims 2, 3)
        return GlobalAvgPool3d(getattr(m, "flatten", True))
    return None


def convert_to_3d(model: nn.Module, mode: Mode = "acs", *, i3d: bool = True) -> nn.Module:
    """Turn a 2D network into one that takes (B, C, D, H, W) volumes, in place; returns it.

    Args:
        model: a 2D network built from standard layers (MedMNIST's, torchvision's or timm's ResNet).
        mode: "acs" (ACSConv; 2D kernels kept exactly), "2.5d" (1×k×k kernels) or "3d" (k×k×k).
        i3d: for mode "3d", inflate the 2D weights (True, MedMNIST's default) or keep Conv3d's init.

    Conv2d, BatchNorm2d/InstanceNorm2d, Max/Avg/Adaptive pooling, Dropout2d and Upsample are
    replaced; norms keep their parameters and running statistics. Other layers with a 2D-only
    form raise ModelError. Functional 2D calls inside `forward` methods cannot be seen and are not
    converted.
    """
    check_choice("mode", mode, MODES)
    new = _convert_layer(model, mode, i3d)
    if new is not None:
        return new
    for name, child in model.named_children():
        repl = _convert_layer(child, mode, i3d)
        if repl is not None:
            setattr(model, name, repl)
        elif "2d" in type(child).__name__.lower() and not list(child.children()):
            raise ModelError(f"no 3D form for layer {name} ({type(child).__name__}).")
        else:
            convert_to_3d(child, mode, i3d=i3d)
    return model


# --- the 2D ResNets and their 3D forms --------------------------------------------------------------

RESNETS = ("resnet18", "resnet50")
_MEDMNIST_RESNETS = {"resnet18": medmnist_resnet18, "resnet50": medmnist_resnet50}


def resnet2d(base: str, num_classes: int, *, in_chans: int = 1, pretrained: bool = False, weights=None,
             stem: Stem | None = None) -> nn.Module:
    """The 2D ResNet before conversion, its checkpoint (path or state dict) loaded.

    `stem="cifar"`: MedMNIST's ResNet (`medmnist-resnet18/50`: 3×3 stride-1 stem, no max-pool,
    MedMNIST's key names). `stem="imagenet"`: timm's `resnet18/50` (7×7 stride-2 stem + max-pool,
    timm/torchvision key names, ImageNet weights). `stem=None` picks "imagenet" when the checkpoint's
    conv1 is 7×7, else "cifar". The first conv is adapted to `in_chans`; the head is re-initialised.
    """
    if base not in RESNETS:
        raise ModelError(f"unknown ResNet '{base}'; choose one of {', '.join(RESNETS)}.")
    if stem is not None:
        check_choice("stem", stem, STEMS)
    if weights is not None:
        weights = read_state_dict(weights) if not isinstance(weights, dict) else dict(weights)
        conv1 = weights.get("conv1.weight")
        if conv1 is None or conv1.ndim != 4:
            raise ModelError(f"the checkpoint for {base} has no 2D conv1.weight: "
                             "not a MedMNIST/timm/torchvision ResNet.")
        k = conv1.shape[-1]
        stem = stem or ("imagenet" if k == 7 else "cifar")
        if k != (7 if stem == "imagenet" else 3):
            other = "imagenet" if k == 7 else "cifar"
            raise ModelError(f"the checkpoint's conv1 is {k}×{k} but stem='{stem}' has "
                             f"{'7×7' if stem == 'imagenet' else '3×3'}; use stem='{other}'.")
    if pretrained and weights is None and stem != "imagenet":
        raise ModelError(f"MedMNIST's {base} (stem='cifar') has no download; pass a 2D checkpoint with weights=FILE, "
                         f"or use stem='imagenet' for timm's ImageNet {base}.")
    n, download = max(num_classes, 1), pretrained and weights is None
    if stem == "imagenet":
        name, head = base, "fc"
        net = create_timm_model(base, n, in_chans=in_chans, pretrained=download)
    else:
        name, head = f"medmnist-{base}", "linear"
        net = _MEDMNIST_RESNETS[base](n, in_chans=in_chans, pretrained=download)
    if weights is not None:
        load_weights(net, weights, head=head, first_conv="conv1", name=name)
    if num_classes == 0:  # features only
        setattr(net, head, nn.Identity())
    return net


def _channels_last_3d(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the volume in channels-last-3d layout, which oneDNN's conv3d prefers
    (an acs:resnet18 train step on 32 volumes of 28³: 23.7 s -> 20.7 s on a 2-core CPU)."""
    return (args[0].contiguous(memory_format=torch.channels_last_3d),) + tuple(args[1:])


def pooled_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, num_features) pooled features of a (converted) MedMNIST or timm ResNet."""
    x = _channels_last_3d(net, (x,))[0]  # forward_features skips the forward pre-hook
    if hasattr(net, "forward_head"):  # timm: forward_features keeps the spatial map
        return net.forward_head(net.forward_features(x), pre_logits=True)
    return net.forward_features(x)


_OPTIONS = {"acs": ("stem",), "2.5d": ("stem",), "3d": ("stem", "i3d")}


def _resnet3d(mode: Mode, base: str, num_classes: int, in_chans: int, pretrained: bool, weights,
              stem, i3d: bool, unknown: dict) -> nn.Module:
    reject_unknown(f"{mode}:{base}", unknown, _OPTIONS[mode])
    net = resnet2d(base, num_classes, in_chans=in_chans, pretrained=pretrained, weights=weights, stem=stem)
    net = convert_to_3d(net, mode, i3d=i3d)
    net.register_forward_pre_hook(_channels_last_3d)
    return net


_DOC = """{title} ResNet-18/50 for (B, C, D, H, W) volumes (MedMNIST's 3D baseline).

    Options: `stem` "cifar" (MedMNIST's ResNet, 3×3 stride-1 stem; the default without weights) or
    "imagenet" (timm's ResNet, 7×7 stem + max-pool; picked automatically for an ImageNet
    checkpoint){extra}. `weights=FILE`: a 2D checkpoint (MedMNIST or timm/torchvision key layout)
    loaded before conversion, head dropped.
    """


@register_prefix("acs", dims="3d", description="ResNet-18/50 with ACS convolutions (2D weights kept exactly)")
def acs_resnet(base: str, num_classes: int, *, in_chans: int = 1, pretrained: bool = False, weights=None,
               stem: Stem | None = None, **unknown) -> nn.Module:
    return _resnet3d("acs", base, num_classes, in_chans, pretrained, weights, stem, True, unknown)


@register_prefix("2.5d", dims="3d", description="ResNet-18/50 with 2.5D (1×k×k) convolutions")
def resnet_2_5d(base: str, num_classes: int, *, in_chans: int = 1, pretrained: bool = False, weights=None,
                stem: Stem | None = None, **unknown) -> nn.Module:
    return _resnet3d("2.5d", base, num_classes, in_chans, pretrained, weights, stem, True, unknown)


@register_prefix("3d", dims="3d", description="ResNet-18/50 with 3D convolutions (I3D-inflated 2D weights)")
def resnet_3d(base: str, num_classes: int, *, in_chans: int = 1, pretrained: bool = False, weights=None,
              stem: Stem | None = None, i3d: bool = True, **unknown) -> nn.Module:
    return _resnet3d("3d", base, num_classes, in_chans, pretrained, weights, stem, i3d, unknown)


acs_resnet.__doc__ = _DOC.format(title="ACS-convolution", extra="")
resnet_2_5d.__doc__ = _DOC.format(title="2.5D-convolution", extra="")
resnet_3d.__doc__ = _DOC.format(title="3D-convolution",
                                extra="; `i3d` (default True) inflates the 2D kernels, else Conv3d's own init")
