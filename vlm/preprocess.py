"""Preprocessing as tensor operations on any device (no PIL, no per-image work).

Batches arrive as uint8 (B, C, H, W) or (B, C, D, H, W) slices of a resident split and leave as
float tensors ready for a model. `Preprocess` bundles the steps with a stable `id` used in cache
keys and run records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from vlm.errors import VlmError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "trilinear")

# MedMNIST's own normalisation (transforms.Normalize(mean=[.5], std=[.5])).
MEDMNIST_MEAN = (0.5, 0.5, 0.5)
MEDMNIST_STD = (0.5, 0.5, 0.5)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1] (like torchvision's ToTensor)."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def grey_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Replicate a single channel to three (channel dim 1); RGB input is returned unchanged."""
    if images.shape[1] == 3:
        return images
    if images.shape[1] != 1:
        raise VlmError(f"Expected 1 or 3 channels, got {images.shape[1]}.")
    return images.expand(-1, 3, *images.shape[2:])


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(x - mean) / std per channel (channel dim 1), for 2D or 3D batches."""
    shape = (1, -1) + (1,) * (images.dim() - 2)
    c = images.shape[1]
    m = torch.tensor(mean[:c] if len(mean) >= c else mean * c, dtype=images.dtype, device=images.device)
    s = torch.tensor(std[:c] if len(std) >= c else std * c, dtype=images.dtype, device=images.device)
    return (images - m.view(shape)) / s.view(shape)


def resize(images: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize the spatial dims of a float (B, C, H, W) or (B, C, D, H, W) batch to `size` per side.

    Bilinear/bicubic use PIL-like antialiased kernels in both directions; 3D batches use trilinear
    for 'bilinear'/'bicubic'/'trilinear', or nearest.
    """
    if interpolation not in INTERPOLATIONS:
        raise VlmError(f"Unknown interpolation '{interpolation}': choose one of {', '.join(INTERPOLATIONS)}.")
    spatial = images.shape[2:]
    if all(s == size for s in spatial):
        return images
    if images.dim() == 5:
        mode = "nearest" if interpolation == "nearest" else "trilinear"
        return F.interpolate(images, size=(size,) * 3, mode=mode, align_corners=False if mode != "nearest" else None)
    mode = "bilinear" if interpolation == "trilinear" else interpolation
    kwargs: dict = {}
    if mode in ("bilinear", "bicubic"):
        # antialias=True also when upsampling: torch then uses PIL's separable kernels (bicubic a=-0.5),
        # so 28->224 matches a PIL resize to ~2 grey levels instead of ~11 (benchmarks/zeroshot_reference.py).
        kwargs = {"align_corners": False, "antialias": True}
    out = F.interpolate(images, size=(size, size), mode=mode, **kwargs)
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """2D batches in channels-last layout: convolutions (depthwise ones above all) run several times
    faster in it on CPU and GPU; 3D batches are returned unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


@dataclass(frozen=True)
class Preprocess:
    """uint8 batch -> float model input: to float, optional grey->RGB, resize, normalise.

    `size=None` keeps the native size. The `id` names every setting, for cache keys and records.
    """

    size: int | None = None
    mean: tuple[float, ...] = MEDMNIST_MEAN
    std: tuple[float, ...] = MEDMNIST_STD
    interpolation: str = "bilinear"
    rgb: bool = True

    def __call__(self, images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        x = to_float(images.to(device, non_blocking=True) if device is not None else images)
        if self.size is not None:
            x = resize(x, self.size, self.interpolation)  # before grey->RGB: a third of the work
        if self.rgb:
            x = grey_to_rgb(x)
        return normalize(x, self.mean, self.std)

    @property
    def id(self) -> str:
        mean = ",".join(f"{m:.4g}" for m in self.mean)
        std = ",".join(f"{s:.4g}" for s in self.std)
        return f"size={self.size or 'native'};interp={self.interpolation}-aa;mean={mean};std={std};rgb={int(self.rgb)}"

    def to_dict(self) -> dict:
        return asdict(self)


def medmnist_preprocess(size: int | None = None, rgb: bool = True, interpolation: str = "bilinear") -> Preprocess:
    """MedMNIST's preprocessing for transfer models: mean = std = 0.5, grey replicated to RGB."""
    return Preprocess(size=size, interpolation=interpolation, rgb=rgb)
