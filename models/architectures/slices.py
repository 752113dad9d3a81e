"""`slices:<timm 2D name>`: the slice-wise 3D model ("EfficientNet slices").

A volume is cut into 2D slices, each slice goes through a pretrained 2D timm backbone, and the
per-slice outputs are regrouped per volume and classified::

    (B, C, D, H, W)  volume
    (B·D, C, H, W)   "distribute": one 2D image per slice (slices along `slice_axis`)
    (B·D, C, S, S)   bilinear upsample to `image_size` (skipped at the native size)
    (B·D, 3, S, S)   "increase channel": learned 1×1 conv (or replicate grey to RGB)
    (B·D, F)         pretrained 2D backbone, in chunks of `chunk_size` slices
    (B, D, F)        "regroup"
    (B, D·F)         flatten
    (B, 1000)        Linear(D·F, 1000)
    (B, K)           Linear(1000, K)

F is the backbone's 1000-way ImageNet output (`features="logits"`, as in the study) or its pooled
features (`features="pooled"`). `head="mean"|"attention"` replaces the flatten head with mean or
attention pooling over slices and one Linear(F, K); those heads take any number of slices.

`SlicesModel.stages(x)` returns the shape after every step above (a debugging aid; tests use it).
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from typing import Literal

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from models.architectures.timm2d import create_timm_model
from models.errors import ModelError
from models.inputs import input_size
from models.options import check_choice, int_tuple, reject_unknown
from models.registry import register_prefix
from models.weights import read_shapes

ChannelMode = Literal["conv", "replicate"]
Features = Literal["logits", "pooled"]
Head = Literal["flatten", "mean", "attention"]

CHANNEL_MODES = ("conv", "replicate")
FEATURES = ("logits", "pooled")
HEADS = ("flatten", "mean", "attention")


def _check_slice_axis(slice_axis: int) -> None:
    if slice_axis not in (0, 1, 2) or isinstance(slice_axis, bool):
        raise ModelError(f"slice_axis={slice_axis!r} is out of range: use 0 (D, axial), 1 (H) or 2 (W).")


class ChannelAdapter(nn.Module):
    """C input channels -> the backbone's 3: a learned 1×1 conv (`conv`) or grey replication.

    The 1×1 conv starts as the replication it replaces (identity for 3 channels, the channel mean
    copied to R, G and B otherwise), so a pretrained backbone first sees the images it expects.
    """

    def __init__(self, in_chans: int, mode: ChannelMode = "conv", out_chans: int = 3):
        super().__init__()
        check_choice("channel_mode", mode, CHANNEL_MODES)
        self.in_chans, self.out_chans, self.mode = in_chans, out_chans, mode
        if mode == "conv":
            self.conv = nn.Conv2d(in_chans, out_chans, kernel_size=1)
            with torch.no_grad():
                if in_chans == out_chans:
                    self.conv.weight.copy_(torch.eye(out_chans).view(out_chans, out_chans, 1, 1))
                else:
                    self.conv.weight.fill_(1.0 / in_chans)
                self.conv.bias.zero_()
        elif in_chans not in (1, out_chans):
            raise ModelError(f"channel_mode='replicate' needs 1 or {out_chans} input channels, not {in_chans}; "
                             "use channel_mode='conv'.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "conv":
            return self.conv(x)
        return x.expand(-1, self.out_chans, -1, -1) if self.in_chans == 1 else x


class FlattenHead(nn.Module):
    """(B, D, F) -> flatten -> Linear(D·F, hidden) -> Linear(hidden, K), as in the study.

    The study puts no non-linearity between the two linear layers; neither do we.
    """

    def __init__(self, depth: int, in_features: int, num_classes: int, hidden: int = 1000, drop_rate: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc1 = nn.Linear(depth * in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        x = x.flatten(1)
        if record is not None:
            record["flatten"] = x.shape
        x = self.fc1(self.drop(x))
        if record is not None:
            record["fc1"] = x.shape
        return self.fc2(x)


class MeanHead(nn.Module):
    """(B, D, F) -> mean over slices -> Linear(F, K)."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        x = x.mean(1)
        if record is not None:
            record["pool"] = x.shape
        return self.fc(self.drop(x))


class AttentionHead(nn.Module):
    """(B, D, F) -> attention pooling over slices (Ilse et al. 2018, tanh scorer) -> Linear(F, K)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128, drop_rate: float = 0.0):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        attn = self.score(x).softmax(dim=1)  # (B, D, 1)
        x = (attn * x).sum(1)
        if record is not None:
            record["pool"] = x.shape
        return self.fc(self.drop(x))


class SlicesModel(nn.Module):
    """Slice-wise 3D classifier around a 2D backbone; see the module docstring for the stages."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        in_chans: int = 1,
        depth: int = 28,
        image_size: int | tuple[int, int] | None = None,
        slice_axis: int = 0,
        channel_mode: ChannelMode = "conv",
        head: Head = "flatten",
        feature_dim: int,
        hidden_dim: int = 1000,
        drop_rate: float = 0.0,
        chunk_size: int | None = 128,
        grad_checkpoint: bool = False,
    ):
        super().__init__()
        _check_slice_axis(slice_axis)
        check_choice("head", head, HEADS)
        self.in_chans, self.depth, self.slice_axis = in_chans, depth, slice_axis
        self.image_size = _pair(image_size)
        self.chunk_size = chunk_size if chunk_size else None
        self.grad_checkpoint = grad_checkpoint
        self.num_features = feature_dim
        self.head_type = head
        self.channel = ChannelAdapter(in_chans, channel_mode)
        # channels-last: depthwise/1x1 convs of mobile backbones run several times faster on CPU (and on GPU).
        self.backbone = backbone.to(memory_format=torch.channels_last)
        if head == "flatten":
            self.head = FlattenHead(depth, feature_dim, num_classes, hidden_dim, drop_rate)
        elif head == "mean":
            self.head = MeanHead(feature_dim, num_classes, drop_rate)
        else:
            self.head = AttentionHead(feature_dim, num_classes, drop_rate=drop_rate)

    def encode_slices(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) slices -> (N, F): upsample, 1×1 channel conv, backbone (one chunk)."""
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return self.backbone(self.channel(x).contiguous(memory_format=torch.channels_last))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_chans:
            raise ModelError(f"expected a volume batch (B, {self.in_chans}, D, H, W), got shape {tuple(x.shape)}.")
        n = x.shape[2 + self.slice_axis]
        if self.head_type == "flatten" and n != self.depth:
            raise ModelError(f"this slices model was built for {self.depth} slices along axis {self.slice_axis} "
                             f"but the volume has {n}; build it with depth={n} (or head='mean'/'attention').")

    def _forward(self, x: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        self._check_input(x)
        if record is not None:
            record["input"] = x.shape
        x = x.movedim(2 + self.slice_axis, 1)  # (B, S, C, P, Q)
        b, s = x.shape[:2]
        x = x.reshape(b * s, *x.shape[2:])
        if record is not None:
            record["distribute"] = x.shape
        outs = []
        # Equal-sized chunks (no small remainder chunk: BatchNorm in training needs > 1 value).
        for chunk in x.tensor_split(-(-x.shape[0] // self.chunk_size)) if self.chunk_size else (x,):
            if record is not None:
                outs.append(self._record_chunk(chunk, record, b * s))
            elif self.grad_checkpoint and self.training and torch.is_grad_enabled():
                outs.append(checkpoint(self.encode_slices, chunk, use_reentrant=False))
            else:
                outs.append(self.encode_slices(chunk))
        feats = torch.cat(outs).view(b, s, -1)
        if record is not None:
            record["backbone"] = torch.Size((b * s, feats.shape[-1]))
            record["regroup"] = feats.shape
        out = self.head(feats, record)
        if record is not None:
            record["logits"] = out.shape
        return out

    def _record_chunk(self, chunk: torch.Tensor, record: dict, n: int) -> torch.Tensor:
        if self.image_size is not None and tuple(chunk.shape[-2:]) != self.image_size:
            chunk = F.interpolate(chunk, size=self.image_size, mode="bilinear", align_corners=False)
        record["upsample"] = torch.Size((n, *chunk.shape[1:]))
        chunk = self.channel(chunk)
        record["channels"] = torch.Size((n, *chunk.shape[1:]))
        return self.backbone(chunk.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    def stages(self, x: torch.Tensor) -> "OrderedDict[str, torch.Size]":
        """Run `x` through the model and return the shape after every stage (for debugging).

        Keys: input, distribute, upsample, channels, backbone, regroup, then flatten and fc1 (flatten
        head) or pool (mean/attention head), then logits. Shapes of the chunked stages are given for
        all B·D slices together. Runs without gradients, in the model's current train/eval mode.
        """
        record: OrderedDict[str, torch.Size] = OrderedDict()
        with torch.no_grad():
            self._forward(x, record)
        return record


def _pair(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    return None if size is None else int_tuple("image_size", size, 2, "a pair of ints")  # type: ignore[return-value]


def timm_2d_backbone(base: str, *, pretrained: bool, weights: str | None, features: Features,
                     **backbone_kwargs) -> nn.Module:
    """The timm 2D model `base` (3 input channels) with local `weights` or timm's download.

    `features="logits"` keeps the classifier the weights come with (1000-way ImageNet for most;
    the file's own size when a file is given); `"pooled"` removes it.
    """
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=4, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"Unknown timm 2D model '{base}' in 'slices:{base}'.{hint}")
    if features == "pooled":
        rows = 0
    elif weights is not None:
        cfg = timm.models.get_pretrained_cfg(base)
        cls = (cfg.classifier if cfg is not None else None) or "classifier"
        key = (cls if isinstance(cls, str) else cls[0]) + ".weight"
        shape = read_shapes(weights).get(key)
        if not shape:
            raise ModelError(f"{weights} has no {key} (the classifier of '{base}'; a checkpoint of another model?); "
                             f"features='logits' needs it, features='pooled' does not.")
        rows = int(shape[0])
    else:
        cfg = timm.models.get_pretrained_cfg(base)
        rows = (cfg.num_classes if cfg is not None else None) or 1000
    return create_timm_model(base, rows, in_chans=3, pretrained=pretrained, weights=weights, **backbone_kwargs)


def _probe(backbone: nn.Module, base: str, size: tuple[int, int]) -> int:
    """Run one blank slice through the backbone at `size`; return F or raise ModelError."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    min_size = cfg.get("min_input_size")
    if min_size is not None and (size[0] < min_size[-2] or size[1] < min_size[-1]):
        raise ModelError(f"image_size {size[0]}×{size[1]} is below the minimum {min_size[-2]}×{min_size[-1]} "
                         f"that '{base}' takes.")
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            p = next(backbone.parameters(), None)
            out = backbone(torch.zeros(1, 3, *size, dtype=p.dtype if p is not None else torch.float32))
    except Exception as e:  # noqa: BLE001 - whatever the backbone raises means "cannot take this size"
        native = input_size(backbone)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = f" (its native input is {native}×{native})" if native else ""
        raise ModelError(f"'{base}' cannot take {size[0]}×{size[1]} slices ({msg}); "
                         f"choose another image_size{hint}.") from None
    finally:
        backbone.train(was_training)
    if out.ndim != 2:
        raise ModelError(f"'{base}' gives outputs of shape {tuple(out.shape)} per slice, not a feature vector.")
    return int(out.shape[1])


_SLICES_OPTIONS = ("depth", "image_size", "slice_axis", "channel_mode", "features", "head", "hidden_dim",
                   "drop_rate", "chunk_size", "grad_checkpoint", "backbone_kwargs")


@register_prefix("slices", dims="3d",
                 description="slice-wise 3D model around any timm 2D backbone (EfficientNet slices)")
def slices_model(
    base: str,
    num_classes: int,
    *,
    in_chans: int = 1,
    pretrained: bool = False,
    weights: str | None = None,
    depth: int = 28,
    image_size: int | tuple[int, int] | None = None,
    slice_axis: int = 0,
    channel_mode: ChannelMode = "conv",
    features: Features = "logits",
    head: Head = "flatten",
    hidden_dim: int = 1000,
    drop_rate: float = 0.0,
    chunk_size: int | None = 128,
    grad_checkpoint: bool = False,
    backbone_kwargs: dict | None = None,
    **unknown,
) -> SlicesModel:
    """Slice-wise 3D model: every slice through a pretrained timm 2D backbone, regrouped per volume.

    Args:
        base: any timm 2D model name (`tf_efficientnet_lite0`, `resnet18`, ...).
        num_classes: K outputs.
        in_chans: channels of the volume (1 for MedMNIST 3D, 3 when replicated).
        pretrained: ImageNet backbone (from `weights`, else timm's download).
        weights: local backbone checkpoint in timm's key layout (.safetensors / .pt).
        depth: number of slices along `slice_axis` (28 for 28³, 64 for 64³); fixed by the flatten head.
        image_size: slices are bilinearly resized to this (int or (h, w)); None keeps the native size.
        slice_axis: 0, 1 or 2: slice along D, H or W of a (B, C, D, H, W) volume.
        channel_mode: "conv" (learned 1×1 conv to 3 channels) or "replicate".
        features: "logits" (the backbone's 1000-way ImageNet output, as in the study) or "pooled".
        head: "flatten" (Linear(D·F, hidden_dim) -> Linear(hidden_dim, K)), "mean" or "attention".
        hidden_dim: width of the flatten head's first layer (1000 in the study).
        drop_rate: dropout before the head's first linear layer.
        chunk_size: at most this many slices per backbone call (memory bound; None = all at once);
            the B·D slices are cut into equal chunks. In training mode BatchNorm statistics are per
            chunk; in eval mode the result does not depend on it.
        grad_checkpoint: recompute each chunk's activations in backward (trains 64³ in less memory;
            BatchNorm running statistics then see each chunk twice per step).
        backbone_kwargs: extra keyword arguments for `timm.create_model` (e.g. drop_path_rate).
    """
    reject_unknown(f"slices:{base}", unknown, _SLICES_OPTIONS)
    check_choice("features", features, FEATURES)
    check_choice("head", head, HEADS)
    check_choice("channel_mode", channel_mode, CHANNEL_MODES)
    _check_slice_axis(slice_axis)
    if not isinstance(depth, int) or depth < 1:
        raise ModelError(f"depth={depth!r} must be a positive number of slices.")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 0):
        raise ModelError(f"chunk_size={chunk_size!r} must be a positive int (or None for no chunking).")
    size = _pair(image_size)
    backbone = timm_2d_backbone(base, pretrained=pretrained, weights=weights, features=features,
                                **(backbone_kwargs or {}))
    # The native size is only known per volume; MedMNIST volumes are cubes, so probe at depth×depth.
    feature_dim = _probe(backbone, base, size or (depth, depth))
    return SlicesModel(backbone, num_classes, in_chans=in_chans, depth=depth, image_size=size,
                       slice_axis=slice_axis, channel_mode=channel_mode, head=head, feature_dim=feature_dim,
                       hidden_dim=hidden_dim, drop_rate=drop_rate, chunk_size=chunk_size,
                       grad_checkpoint=grad_checkpoint)
