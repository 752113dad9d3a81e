"""Preprocessing as tensor operations on any device (no PIL, no per-image work).

Batches arrive as uint8 (B, C, H, W) or (B, C, D, H, W) slices of a resident split and leave as
float tensors ready for a model. `Preprocess` bundles the steps with a stable `id` used in cache
keys and run records. Two resamplers: "torch" (antialiased `F.interpolate` in float, PIL-like
kernels) and "pil", which redoes PIL's own 8-bit resampling (its filter weights in 22-bit fixed
point, a horizontal then a vertical pass, each rounded to 8-bit levels) as two matmuls, so that an
encoder sees what its library's PIL pipeline would have given it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from vlm.errors import VlmError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "trilinear")
PIL_ONLY = ("lanczos", "hamming")  # PIL filters the "pil" resampler also reproduces
RESIZE_MODES = ("squash", "shortest", "longest", "none")
CROP_OFFSETS = ("round", "floor")
RESAMPLERS = ("torch", "pil")

# MedMNIST's own normalisation (transforms.Normalize(mean=[.5], std=[.5])).
MEDMNIST_MEAN = (0.5, 0.5, 0.5)
MEDMNIST_STD = (0.5, 0.5, 0.5)

PRECISION_BITS = 22  # PIL's fixed-point precision for 8-bit resampling (32 - 8 - 2)


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


def _per_channel(values: tuple[float, ...], c: int) -> tuple[float, ...]:
    return tuple(values[:c]) if len(values) >= c else tuple(values) * c


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(x - mean) / std per channel (channel dim 1), for 2D or 3D batches."""
    shape = (1, -1) + (1,) * (images.dim() - 2)
    c = images.shape[1]
    m = torch.tensor(_per_channel(mean, c), dtype=images.dtype, device=images.device)
    s = torch.tensor(_per_channel(std, c), dtype=images.dtype, device=images.device)
    return (images - m.view(shape)) / s.view(shape)


# ----------------------------------------------------------------------------- PIL's resampling
def _sinc(x: float) -> float:
    return 1.0 if x == 0.0 else math.sin(x * math.pi) / (x * math.pi)


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    return (((x - 5) * x + 8) * x - 4) * a if x < 2.0 else 0.0


HAMMING_A, HAMMING_B = 0.54000002145767212, 0.46000000834465027  # PIL's float constants 0.54f, 0.46f


def _hamming(x: float) -> float:
    x = abs(x)
    if x >= 1.0:
        return 0.0
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x * (HAMMING_A + HAMMING_B * math.cos(x))


# PIL's filters (Resample.c) and their supports; "area" is PIL's BOX
PIL_FILTERS: dict[str, tuple[Callable[[float], float], float]] = {
    "area": (lambda x: 1.0 if -0.5 < x <= 0.5 else 0.0, 0.5),
    "bilinear": (lambda x: max(0.0, 1.0 - abs(x)), 1.0),
    "hamming": (_hamming, 1.0),
    "bicubic": (_bicubic, 2.0),
    "lanczos": (lambda x: _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0, 3.0),
}


@functools.lru_cache(maxsize=64)
def pil_weights(in_size: int, out_size: int, interpolation: str) -> torch.Tensor:
    """PIL's (out, in) resampling matrix for one axis (`precompute_coeffs`), as its fixed-point integers
    (float64, CPU; cached: do not modify)."""
    fn, support = PIL_FILTERS[interpolation]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    ss = 1.0 / filterscale
    w = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), in_size)
        k = [fn((j - center + 0.5) * ss) for j in range(lo, hi)]
        total = sum(k)
        for j, v in zip(range(lo, hi), k):
            v = v / total if total != 0.0 else v
            v *= 1 << PRECISION_BITS
            w[i, j] = math.floor(v + 0.5) if v >= 0 else math.ceil(v - 0.5)  # C's (int)(v +- 0.5)
    return w


@functools.lru_cache(maxsize=64)
def pil_nearest(in_size: int, out_size: int) -> tuple[int, ...]:
    """The source pixel of each output pixel in PIL's nearest resize (`ImagingScaleAffine`: a running sum)."""
    step, pos, out = in_size / out_size, in_size / out_size * 0.5, []
    for _ in range(out_size):
        out.append(min(int(pos), in_size - 1))
        pos += step
    return tuple(out)


def _pil_pass(levels: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """One PIL pass along `dim` (-1 horizontal, -2 vertical) of float64 8-bit levels: round, clip to 0..255."""
    w = weights.to(levels.device)
    acc = levels @ w.T if dim == -1 else w @ levels
    return acc.add_(1 << (PRECISION_BITS - 1)).div_(1 << PRECISION_BITS).floor_().clamp_(0, 255)


def pil_resize(images: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """PIL's `Image.resize(size, filter)` of 8-bit images on a (B, C, H, W) batch: uint8 or [0, 1] float in,
    [0, 1] float32 (on 8-bit levels) out; bit-exact with PIL for its filters and for nearest."""
    h, w = images.shape[-2:]
    if interpolation == "nearest":
        x = to_float(images)
        rows, cols = (torch.tensor(pil_nearest(n, m), device=x.device) for n, m in ((h, size[0]), (w, size[1])))
        return x.index_select(-2, rows).index_select(-1, cols)
    if interpolation not in PIL_FILTERS:
        raise VlmError(f"Unknown interpolation '{interpolation}' for PIL resampling: choose one of "
                       f"nearest, {', '.join(PIL_FILTERS)}.")
    x = images.double() if images.dtype == torch.uint8 else images.double().mul(255.0).round_().clamp_(0, 255)
    if w != size[1]:
        x = _pil_pass(x, pil_weights(w, size[1], interpolation), -1)
    if h != size[0]:
        x = _pil_pass(x, pil_weights(h, size[0], interpolation), -2)
    return x.float().div_(255.0)


# ----------------------------------------------------------------------------- resize and crop
def resize(images: torch.Tensor, size: int | tuple[int, int], interpolation: str = "bilinear",
           resampler: str = "torch") -> torch.Tensor:
    """Resize the spatial dims of a (B, C, H, W) or (B, C, D, H, W) batch (uint8 or [0, 1] float) to `size`
    per side, or (H, W) for 2D; returns [0, 1] float.

    "torch": bilinear/bicubic use PIL-like antialiased kernels in both directions; 3D batches use trilinear
    for 'bilinear'/'bicubic'/'trilinear', or nearest. "pil": PIL's 8-bit resampling (2D; see `pil_resize`).
    """
    if resampler not in RESAMPLERS:
        raise VlmError(f"Unknown resampler '{resampler}': choose one of {', '.join(RESAMPLERS)}.")
    allowed = INTERPOLATIONS + (PIL_ONLY if resampler == "pil" else ())
    if interpolation not in allowed:
        raise VlmError(f"Unknown interpolation '{interpolation}': choose one of {', '.join(allowed)}.")
    spatial = tuple(images.shape[2:])
    target = (size,) * len(spatial) if isinstance(size, int) else tuple(size)
    if spatial == target:
        return to_float(images)
    if images.dim() == 5:
        mode = "nearest" if interpolation == "nearest" else "trilinear"
        return F.interpolate(to_float(images), size=target, mode=mode,
                             align_corners=False if mode != "nearest" else None)
    if resampler == "pil":
        return pil_resize(images, target, "bicubic" if interpolation == "trilinear" else interpolation)
    mode = "bilinear" if interpolation == "trilinear" else interpolation
    kwargs: dict = {}
    if mode in ("bilinear", "bicubic"):
        # antialias=True also when upsampling: torch then uses PIL's separable kernels (bicubic a=-0.5),
        # so 28->224 matches a PIL resize to ~2 grey levels instead of ~11 (benchmarks/zeroshot_reference.py).
        kwargs = {"align_corners": False, "antialias": True}
    out = F.interpolate(to_float(images), size=target, mode=mode, **kwargs)
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def resized_shape(h: int, w: int, target: int, mode: str) -> tuple[int, int]:
    """The (H, W) an (h, w) image is resized to: 'squash' target×target, 'shortest' shortest edge = target
    (torchvision's Resize(int)), 'longest' longest edge = target (open_clip/timm ResizeKeepRatio), 'none' as is."""
    if mode == "squash":
        return target, target
    if mode == "shortest":
        short, long = min(h, w), max(h, w)
        new_long = int(target * long / short)
        return (target, new_long) if h <= w else (new_long, target)
    if mode == "longest":
        ratio = max(h / target, w / target)
        return round(h / ratio), round(w / ratio)
    if mode == "none":
        return h, w
    raise VlmError(f"Unknown resize mode '{mode}': choose one of {', '.join(RESIZE_MODES)}.")


def center_crop(images: torch.Tensor, size: int, offset: str = "round", fill: tuple[int, ...] = (0,)) -> torch.Tensor:
    """Centre crop (B, C, H, W) float [0, 1] images to size×size, padding with `fill` (8-bit levels per channel)
    where the image is smaller, as torchvision's CenterCrop does. The top/left offset of the crop is
    round((H - size) / 2) ('round': torchvision, open_clip, timm) or floor ('floor': transformers)."""
    if offset not in CROP_OFFSETS:
        raise VlmError(f"Unknown crop offset '{offset}': choose one of {', '.join(CROP_OFFSETS)}.")
    b, c, h, w = images.shape
    if size > h or size > w:
        ph, pw = max(size - h, 0), max(size - w, 0)
        values = torch.tensor(_per_channel(tuple(fill), c), dtype=images.dtype, device=images.device) / 255.0
        padded = values.view(1, c, 1, 1).expand(b, c, h + ph, w + pw).clone()
        padded[..., ph // 2:ph // 2 + h, pw // 2:pw // 2 + w] = images
        images, h, w = padded, h + ph, w + pw
    start = (lambda n: int(round((n - size) / 2.0))) if offset == "round" else (lambda n: (n - size) // 2)
    top, left = start(h), start(w)
    return images[..., top:top + size, left:left + size]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """2D batches in channels-last layout: convolutions (depthwise ones above all) run several times
    faster in it on CPU and GPU; 3D batches are returned unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


@dataclass(frozen=True)
class Preprocess:
    """uint8 batch -> float model input: resize (then centre crop), optional grey->RGB, rescale, normalise.

    `size` is the output side (None keeps the native size). 2D images are resized to `resize` (None:
    `size`) by `resize_mode` (see `resized_shape`) and centre-cropped (or padded with `fill`) to `size`
    with `crop_offset` (see `center_crop`); 3D volumes are resized to size³. `rescale` maps 8-bit levels
    to the units `mean`/`std` are in (1/255: [0, 1]). `source` names the library pipeline this
    reproduces, for the record. The `id` names every setting that changes pixels, for cache keys.
    """

    size: int | None = None
    mean: tuple[float, ...] = MEDMNIST_MEAN
    std: tuple[float, ...] = MEDMNIST_STD
    interpolation: str = "bilinear"
    rgb: bool = True
    resize: int | None = None
    resize_mode: str = "squash"
    crop_offset: str = "round"
    fill: tuple[int, ...] = (0,)
    resampler: str = "torch"
    rescale: float = 1 / 255
    source: str = "medmnist"

    def __call__(self, images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """A uint8 (or [0, 1] float) batch -> the normalised model input, on `device` if given."""
        x = images.to(device, non_blocking=True) if device is not None else images
        if self.size is not None and x.dim() == 5:
            if self.resize not in (None, self.size):
                raise VlmError(f"A centre crop (resize {self.resize}, crop {self.size}) applies to 2D images only.")
            x = resize(x, self.size, self.interpolation, self.resampler)
        elif self.size is not None:
            x = self.resize_2d(x)  # before grey->RGB: a third of the work
        x = to_float(x)
        if self.rgb:
            x = grey_to_rgb(x)
        if self.size is not None and x.dim() == 4:
            x = center_crop(x, self.size, self.crop_offset, self.fill)
        k = 255.0 * self.rescale  # (x * 255 * rescale - mean) / std, on [0, 1] images x
        if k == 1.0:
            return normalize(x, self.mean, self.std)
        return normalize(x, tuple(m / k for m in self.mean), tuple(s / k for s in self.std))

    def resize_2d(self, images: torch.Tensor) -> torch.Tensor:
        """The resize step alone (before the centre crop) of a 2D batch: [0, 1] float out; a batch already at
        that shape passes through unchanged."""
        if self.size is None:
            return to_float(images)
        shape = resized_shape(*images.shape[-2:], self.resize or self.size, self.resize_mode)
        return resize(images, shape, self.interpolation, self.resampler)

    def with_size(self, size: int) -> Preprocess:
        """The same pipeline for another output size; a pre-crop resize scales with it (as timm's crop_pct)."""
        resize = None if self.resize is None or self.size is None else size * self.resize // self.size
        return replace(self, size=size, resize=resize)

    @property
    def id(self) -> str:
        mean = ",".join(f"{m:.8g}" for m in self.mean)
        std = ",".join(f"{s:.8g}" for s in self.std)
        fill = ",".join(str(f) for f in self.fill)
        resampler = "torch-aa" if self.resampler == "torch" else self.resampler
        return (f"size={self.size or 'native'};resize={self.resize_mode}@{self.resize or self.size or 'native'};"
                f"crop={self.crop_offset};fill={fill};interp={self.interpolation};resampler={resampler};"
                f"rescale={self.rescale:.8g};mean={mean};std={std};rgb={int(self.rgb)}")

    def to_dict(self) -> dict:
        return asdict(self)


def medmnist_preprocess(size: int | None = None, rgb: bool = True, interpolation: str = "bilinear",
                        normalize: bool = True) -> Preprocess:
    """MedMNIST's preprocessing for transfer models: grey replicated to RGB (`rgb`, their `as_rgb`), then
    mean = std = 0.5 (2D: ToTensor + Normalize), or [0, 1] left as is (`normalize=False`, MedMNIST3D)."""
    if normalize:
        return Preprocess(size=size, interpolation=interpolation, rgb=rgb)
    return Preprocess(size=size, interpolation=interpolation, rgb=rgb, mean=(0.0,) * 3, std=(1.0,) * 3)
