"""MedViT (`medvit_small`, `medvit_base`, `medvit_large`): Manzari et al., "MedViT: A robust vision
transformer for generalized medical image classification", Computers in Biology and Medicine 157
(2023) 106791; released code: github.com/Omid-Nejati/MedViT (`MedViT.py`, derived from Next-ViT).

A hybrid CNN-Transformer: a 4-conv stem (stride 4, 64 channels) and four stages of

- ECB (Efficient Convolution Block): patch embedding (2x2 average pool when striding, 1x1 conv + BN
  when the width changes), x + MHCA(x) (multi-head convolutional attention: grouped 3x3 conv with
  32 channels per head, BN, ReLU, 1x1 conv), then x + LFFN(BN(x));
- LTB (Local Transformer Block): patch embedding to 3/4 of the width, x + E-MHSA(BN(x)) (efficient
  multi-head self-attention whose keys/values are average-pooled over sr_ratio**2 tokens and
  batch-normalised), a 1x1 projection to the remaining 1/4 with its own MHCA, both concatenated,
  then x + LFFN(BN(x));

where LFFN (locally feed-forward) is LocalViT's `LocalityFeedForward` with its own residual: 1x1 conv
to `ratio` x width, BN, h-swish, depthwise 3x3, BN, h-swish, squeeze-excite, 1x1 conv, BN (ratio 3
in ECBs, 2 in LTBs). Stages: 96 / 192+256 / (4x384+512) x n / 768+1024 channels, strides 1, 2, 2, 2,
depths (3, 4, 10, 3), (3, 4, 20, 3), (3, 4, 30, 3); BatchNorm + global average pool + linear head.

Released checkpoints load as they are: module and parameter names follow `MedViT.py` (`stem.N.conv`,
`features.N.mhca.group_conv3x3`, `features.N.e_mhsa.q`, `features.N.conv.conv.6.fc.0`, `norm`,
`proj_head.0`, ...), and `weights=FILE` takes the `{"model": state_dict, "optimizer": ...,
"args": Namespace}` checkpoints its `main.py` saves (its README's ImageNet-1K checkpoints are read by
its own loader as `checkpoint["model"]` too). Loading is strict: every backbone tensor must come from
the file and no key may be left over; the head (`proj_head`) is re-initialised when its class count
differs.

Grey input: `in_chans=1` builds a one-channel first stem conv (`stem.0.conv`); RGB weights are
adapted by summing their three input filters (timm's rule, `models.weights`). Default input: 224 px
(`pretrained_cfg["input_size"]`); inputs from 28 px up work (E-MHSA pools 16 stage-2 tokens).

Not in the released code, so not here: the paper's patch moment changer (a training-time exchange
of feature mean and variance between the images of a batch; `MedViT.py` has no such module) and the
release's `merge_bn` inference folding. Options: `drop_path_rate` (default 0.1 small, 0.2 base/large), `drop_rate`
(E-MHSA output dropout), `attn_drop_rate`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from models.errors import ModelError
from models.options import reject_unknown
from models.registry import register_model
from models.weights import load_weights, read_state_dict

__all__ = ["ECB", "LTB", "MedViT", "MedViTSize", "SIZES"]

NORM_EPS = 1e-5
HEAD_DIM = 32
MIX_BLOCK_RATIO = 0.75  # share of an LTB's output width that goes through self-attention
SR_RATIOS = (8, 4, 2, 1)  # E-MHSA key/value pooling per stage (pools sr**2 tokens)
STRIDES = (1, 2, 2, 2)
STEM_CHANNELS = (64, 32, 64)
RELEASE_URL = "https://github.com/Omid-Nejati/MedViT"
Weights = str | os.PathLike | Mapping[str, torch.Tensor]  # a checkpoint path or a state dict


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=NORM_EPS)


def make_divisible(value: float, divisor: int = 32) -> int:
    """Round to a multiple of `divisor` (nearest, never more than 10 % down), as Next-ViT does."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU(nn.Module):
    """3x3 conv (padding 1, no bias) + BN + ReLU: one stem layer."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm = _bn(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class PatchEmbed(nn.Module):
    """2x2 average pool when striding, 1x1 conv + BN when striding or changing width, else identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        project = stride == 2 or in_channels != out_channels
        self.avgpool = (nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False)
                        if stride == 2 else nn.Identity())
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False) if project else nn.Identity()
        self.norm = _bn(out_channels) if project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(self.avgpool(x)))


class MHCA(nn.Module):
    """Multi-head convolutional attention: grouped 3x3 conv (one group per head), BN, ReLU, 1x1 conv."""

    def __init__(self, channels: int, head_dim: int = HEAD_DIM) -> None:
        super().__init__()
        self.group_conv3x3 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels // head_dim, bias=False)
        self.norm = _bn(channels)
        self.act = nn.ReLU(inplace=True)
        self.projection = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.act(self.norm(self.group_conv3x3(x))))


class SqueezeExcite(nn.Module):
    """Channel gate: global average pool, Linear-ReLU-Linear, hard sigmoid."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels), nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class LocalityFeedForward(nn.Module):
    """LocalViT's feed-forward with a depthwise 3x3 and squeeze-excite, plus its own residual."""

    def __init__(self, channels: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish(),
            SqueezeExcite(hidden, reduction=channels),  # the release passes reduction=out_channels
            nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class ECB(nn.Module):
    """Efficient Convolution Block: patch embedding, x + MHCA(x), x + LFFN(BN(x))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, drop_path: float = 0.0,
                 mlp_ratio: float = 3) -> None:
        super().__init__()
        if out_channels % HEAD_DIM:
            raise ModelError(f"ECB width {out_channels} is not a multiple of the head size {HEAD_DIM}.")
        self.patch_embed = PatchEmbed(in_channels, out_channels, stride)
        self.mhca = MHCA(out_channels)
        self.attention_path_dropout = DropPath(drop_path)
        self.conv = LocalityFeedForward(out_channels, mlp_ratio)
        self.norm = _bn(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = x + self.attention_path_dropout(self.mhca(x))
        return x + self.conv(self.norm(x))


class EMHSA(nn.Module):
    """Efficient multi-head self-attention on (B, N, C) tokens; keys/values from tokens average-pooled
    in runs of sr_ratio**2 (then batch-normalised) when sr_ratio > 1."""

    def __init__(self, dim: int, sr_ratio: int = 1, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = dim // HEAD_DIM
        self.scale = HEAD_DIM ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.AvgPool1d(sr_ratio ** 2, stride=sr_ratio ** 2)
            self.norm = nn.BatchNorm1d(dim, eps=NORM_EPS)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        kv = self.norm(self.sr(x.transpose(1, 2))).transpose(1, 2) if self.sr_ratio > 1 else x
        out = F.scaled_dot_product_attention(self._heads(self.q(x)), self._heads(self.k(kv)), self._heads(self.v(kv)),
                                             dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class LTB(nn.Module):
    """Local Transformer Block: E-MHSA on 3/4 of the width, MHCA on the rest, concat, x + LFFN(BN(x))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, sr_ratio: int = 1,
                 drop_path: float = 0.0, attn_drop: float = 0.0, drop: float = 0.0, mlp_ratio: float = 2) -> None:
        super().__init__()
        self.mhsa_out_channels = make_divisible(int(out_channels * MIX_BLOCK_RATIO), HEAD_DIM)
        self.mhca_out_channels = out_channels - self.mhsa_out_channels
        self.patch_embed = PatchEmbed(in_channels, self.mhsa_out_channels, stride)
        self.norm1 = _bn(self.mhsa_out_channels)
        self.e_mhsa = EMHSA(self.mhsa_out_channels, sr_ratio=sr_ratio, attn_drop=attn_drop, proj_drop=drop)
        self.mhsa_path_dropout = DropPath(drop_path * MIX_BLOCK_RATIO)
        self.projection = PatchEmbed(self.mhsa_out_channels, self.mhca_out_channels)
        self.mhca = MHCA(self.mhca_out_channels)
        self.mhca_path_dropout = DropPath(drop_path * (1 - MIX_BLOCK_RATIO))
        self.norm2 = _bn(out_channels)
        self.conv = LocalityFeedForward(out_channels, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        tokens = self.norm1(x).flatten(2).transpose(1, 2)
        x = x + self.mhsa_path_dropout(self.e_mhsa(tokens)).transpose(1, 2).reshape(b, c, h, w)
        out = self.projection(x)
        x = torch.cat([x, out + self.mhca_path_dropout(self.mhca(out))], dim=1)
        return x + self.conv(self.norm2(x))


def stage_plan(depths: tuple[int, int, int, int]) -> list[list[tuple[type[ECB] | type[LTB], int]]]:
    """(block type, output width) of every block, stage by stage (Next-ViT's hybrid strategy)."""
    d1, d2, d3, d4 = depths
    if d2 < 1 or d4 < 1 or d3 % 5:
        raise ModelError(f"MedViT depths {depths}: stages 2 and 4 need a block, stage 3 a multiple of 5.")
    return [[(ECB, 96)] * d1,
            [(ECB, 192)] * (d2 - 1) + [(LTB, 256)],
            ([(ECB, 384)] * 4 + [(LTB, 512)]) * (d3 // 5),
            [(ECB, 768)] * (d4 - 1) + [(LTB, 1024)]]


class MedViT(nn.Module):
    """MedViT: conv stem, four stages of ECB/LTB blocks, BatchNorm, average pool, linear head."""

    def __init__(self, depths: tuple[int, int, int, int], *, num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.1, drop_rate: float = 0.0, attn_drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        c0, c1, c2 = STEM_CHANNELS
        self.stem = nn.Sequential(ConvBNReLU(in_chans, c0, 2), ConvBNReLU(c0, c1, 1),
                                  ConvBNReLU(c1, c2, 1), ConvBNReLU(c2, c2, 2))
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()  # stochastic depth grows with depth
        blocks: list[nn.Module] = []
        width = c2
        for stage, plan in enumerate(stage_plan(depths)):
            for i, (kind, out) in enumerate(plan):
                stride = STRIDES[stage] if i == 0 else 1
                if kind is ECB:
                    blocks.append(ECB(width, out, stride, drop_path=dpr[len(blocks)]))
                else:
                    blocks.append(LTB(width, out, stride, sr_ratio=SR_RATIOS[stage], drop_path=dpr[len(blocks)],
                                      attn_drop=attn_drop_rate, drop=drop_rate))
                width = out
        self.features = nn.Sequential(*blocks)
        self.num_features = width
        self.norm = _bn(width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.proj_head = nn.Sequential(nn.Linear(width, num_classes))
        self.pretrained_cfg = {"input_size": (in_chans, 224, 224), "fixed_input_size": False,
                               "first_conv": "stem.0.conv", "classifier": "proj_head.0"}
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.norm(self.features(self.stem(x)))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    """The release's init: truncated normal (std 0.02) for convs and linears, zero biases, unit BN."""
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class MedViTSize:
    """One released size: stage depths, default stochastic depth, ImageNet-1K checkpoint file."""

    depths: tuple[int, int, int, int]
    drop_path_rate: float
    checkpoint: str


SIZES = {
    "medvit_small": MedViTSize((3, 4, 10, 3), 0.1, "MedViT_small_im1k.pth"),
    "medvit_base": MedViTSize((3, 4, 20, 3), 0.2, "MedViT_base_im1k.pth"),
    "medvit_large": MedViTSize((3, 4, 30, 3), 0.2, "MedViT_large_im1k.pth"),
}
OPTIONS = ("drop_path_rate", "drop_rate", "attn_drop_rate")


def load_released(model: MedViT, weights: Weights, name: str) -> None:
    """Load a checkpoint strictly: the backbone whole, no key left over, the head when it fits."""
    if not isinstance(weights, Mapping):
        # main.py saves its argparse Namespace beside the weights: allow that one plain class (torch >= 2.5;
        # weights_only loading still refuses any other pickled object).
        allow = getattr(torch.serialization, "safe_globals", None)
        with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
            weights = read_state_dict(weights)
    report = load_weights(model, weights, head="proj_head", first_conv="stem.0.conv", name=name)
    if report.unexpected:
        raise ModelError(f"Weights {report.source} do not fit '{name}': {len(report.unexpected)} keys left over "
                         f"(e.g. {', '.join(report.unexpected[:3])}); is it another MedViT size?")


def _build(name: str, num_classes: int, in_chans: int, pretrained: bool, weights: Weights | None,
           kwargs: dict) -> MedViT:
    reject_unknown(name, {k: v for k, v in kwargs.items() if k not in OPTIONS}, OPTIONS)
    size = SIZES[name]
    if pretrained and weights is None:
        raise ModelError(f"'{name}' pretrained weights are not downloaded automatically: get {size.checkpoint} "
                         f"(ImageNet-1K) from the links in {RELEASE_URL} (README) and pass it with --weights FILE.")
    model = MedViT(size.depths, num_classes=num_classes, in_chans=in_chans,
                   **{"drop_path_rate": size.drop_path_rate, **kwargs})
    if weights is not None:
        load_released(model, weights, name)
    return model


@register_model("medvit_small", dims="2d")
def medvit_small(num_classes: int, *, in_chans: int = 3, pretrained: bool = False, weights: Weights | None = None,
                 **kwargs) -> MedViT:
    """MedViT-small (Manzari et al. 2023): hybrid ECB/LTB transformer, depths 3-4-10-3, 224 px."""
    return _build("medvit_small", num_classes, in_chans, pretrained, weights, kwargs)


@register_model("medvit_base", dims="2d")
def medvit_base(num_classes: int, *, in_chans: int = 3, pretrained: bool = False, weights: Weights | None = None,
               **kwargs) -> MedViT:
    """MedViT-base (Manzari et al. 2023): hybrid ECB/LTB transformer, depths 3-4-20-3, 224 px."""
    return _build("medvit_base", num_classes, in_chans, pretrained, weights, kwargs)


@register_model("medvit_large", dims="2d")
def medvit_large(num_classes: int, *, in_chans: int = 3, pretrained: bool = False, weights: Weights | None = None,
               **kwargs) -> MedViT:
    """MedViT-large (Manzari et al. 2023): hybrid ECB/LTB transformer, depths 3-4-30-3, 224 px."""
    return _build("medvit_large", num_classes, in_chans, pretrained, weights, kwargs)
