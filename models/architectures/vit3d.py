"""`vit3d`: a small Vision Transformer on cubic patches, and the joint `acs:resnet18+vit3d`.

ViT3D defaults: 28³ volumes cut into 7×7×7 patches (a 4×4×4 grid, 64 tokens), 256-dim embedding,
6 pre-norm transformer layers with 8 heads (timm's `Block`), a class token and learned position
embeddings. The patch size scales with the volume: by default the grid is 4 patches per axis, so a
64³ volume takes 16×16×16 patches and gives the same 64 tokens (`patch_size` overrides this; it must
divide the volume). The volume size comes from `image_size` (int for a cube, or (D, H, W)) or from
`depth` (a cube of that side), 28 when neither is given.

Pooling (`pool`): "concat" (default) concatenates the class token and the mean of the patch tokens
(2·256 features); "avg" averages the two (256); "cls" and "mean" take one of them. The head is an
MLP with layer norm: LayerNorm -> Linear(F, embed_dim) -> GELU -> Dropout -> Linear(embed_dim, K).

Key names follow timm's ViT (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N`, `norm`) so a
2D ViT inflates into it (`inflate_from=FILE` or a timm ViT state dict, see `inflate_vit2d`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from models.architectures.acs import acs_resnet, pooled_features
from models.errors import ModelError
from models.options import check_choice, int_tuple, reject_unknown
from models.registry import register_model
from models.weights import load_weights, read_state_dict

Pool = Literal["concat", "avg", "cls", "mean"]
POOLS = ("concat", "avg", "cls", "mean")


def _triple(v: int | tuple[int, int, int], what: str) -> tuple[int, int, int]:
    return int_tuple(what, v, 3, "three ints (D, H, W)")  # type: ignore[return-value]


def volume_size(image_size=None, depth: int | None = None) -> tuple[int, int, int]:
    """(D, H, W) from `image_size` (int cube or triple) and/or `depth` (slices); 28³ by default."""
    if image_size is None:
        return _triple(depth if depth is not None else 28, "depth")
    if isinstance(image_size, int) and depth is not None:
        return _triple((depth, image_size, image_size), "image_size")
    size = _triple(image_size, "image_size")
    if depth is not None and depth != size[0]:
        raise ModelError(f"depth={depth} contradicts image_size={image_size!r}.")
    return size


def default_patch(size: tuple[int, int, int]) -> tuple[int, int, int]:
    """4 patches per axis: 7 for 28, 16 for 64."""
    for s in size:
        if s % 4:
            raise ModelError(f"a volume of {size} does not split into 4 patches per axis; pass patch_size.")
    return tuple(s // 4 for s in size)  # type: ignore[return-value]


class PatchEmbed3d(nn.Module):
    """(B, C, D, H, W) -> (B, N, E) with a strided Conv3d (`proj`, as timm's PatchEmbed)."""

    def __init__(self, size, patch, in_chans: int, embed_dim: int):
        super().__init__()
        self.size, self.patch = size, patch
        self.grid = tuple(s // p for s, p in zip(size, patch))
        self.num_patches = self.grid[0] * self.grid[1] * self.grid[2]
        self.proj = nn.Conv3d(in_chans, embed_dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT3D(nn.Module):
    """Vision Transformer on 3D patches; see the module docstring."""

    def __init__(self, num_classes: int, *, in_chans: int = 1, image_size=(28, 28, 28), patch_size=None,
                 embed_dim: int = 256, num_layers: int = 6, num_heads: int = 8, mlp_ratio: float = 4.0,
                 pool: Pool = "concat", drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        check_choice("pool", pool, POOLS)
        size = _triple(image_size, "image_size")
        patch = default_patch(size) if patch_size is None else _triple(patch_size, "patch_size")
        if any(s % p for s, p in zip(size, patch)):
            raise ModelError(f"patch_size {patch} does not divide the volume {size}.")
        if embed_dim % num_heads:
            raise ModelError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}.")
        self.in_chans, self.image_size, self.patch_size, self.pool = in_chans, size, patch, pool
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed3d(size, patch, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, num_layers).tolist()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, proj_drop=drop_rate, drop_path=dpr[i],
                  norm_layer=norm) for i in range(num_layers)])
        self.norm = norm(embed_dim)
        self.num_features = 2 * embed_dim if pool == "concat" else embed_dim
        self.head: nn.Module = nn.Sequential(OrderedDict(
            norm=nn.LayerNorm(self.num_features), fc1=nn.Linear(self.num_features, embed_dim), act=nn.GELU(),
            drop=nn.Dropout(drop_rate), fc2=nn.Linear(embed_dim, num_classes))) if num_classes else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features)."""
        if x.ndim != 5 or x.shape[1] != self.in_chans or tuple(x.shape[2:]) != self.image_size:
            want = ", ".join(map(str, (self.in_chans, *self.image_size)))
            raise ModelError(f"vit3d was built for volumes (B, {want}), got {tuple(x.shape)}; "
                             "build it with image_size=(D, H, W) of your volumes.")
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = self.norm(self.blocks(self.pos_drop(x)))
        cls, mean = x[:, 0], x[:, 1:].mean(1)
        if self.pool == "concat":
            return torch.cat([cls, mean], 1)
        if self.pool == "avg":
            return (cls + mean) / 2
        return cls if self.pool == "cls" else mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def inflate_vit2d(model: ViT3D, source) -> list[str]:
    """Initialise `model` from a 2D timm ViT (a checkpoint path, a state dict or a timm module).

    - `patch_embed.proj.weight` (E, 3, p, p): resampled in-plane to the 3D patch's (H, W) size when
      they differ (timm's `resample_patch_embed`), adapted to `in_chans` as timm does (summed for one
      channel), then replicated along depth and divided by the patch depth, so a volume that is
      constant along depth embeds like its 2D slice;
    - `pos_embed`: the class position copied; the 2D grid resized bilinearly to the 3D (H, W) grid
      and repeated along depth;
    - `cls_token`, `blocks.N.*` (for N below both depths) and the final `norm` copied when shapes fit;
    - the head is not touched.

    The embedding widths must match (pass `embed_dim`/`num_heads` to build a matching ViT3D).
    Returns the keys that were set.
    """
    from timm.layers import resample_patch_embed
    from timm.models import adapt_input_conv

    if isinstance(source, nn.Module):
        sd = dict(source.state_dict())
    elif isinstance(source, Mapping):
        sd = dict(source)
    else:
        sd = read_state_dict(source)
    w = sd.get("patch_embed.proj.weight")
    if w is None or w.ndim != 4:
        raise ModelError("inflate_from holds no 2D ViT patch embedding (patch_embed.proj.weight, 4D).")
    e = model.embed_dim
    if w.shape[0] != e:
        raise ModelError(f"the 2D ViT is {w.shape[0]}-dim but vit3d is {e}-dim; build vit3d with "
                         f"embed_dim={w.shape[0]} (and a fitting num_heads) to inflate it.")
    pd, ph, pw = model.patch_size
    w = w.float()
    if tuple(w.shape[-2:]) != (ph, pw):
        w = resample_patch_embed(w, [ph, pw])
    if w.shape[1] != model.in_chans:
        w = adapt_input_conv(model.in_chans, w)
    new: dict[str, torch.Tensor] = {"patch_embed.proj.weight": w.unsqueeze(2).repeat(1, 1, pd, 1, 1) / pd}
    if "patch_embed.proj.bias" in sd:
        new["patch_embed.proj.bias"] = sd["patch_embed.proj.bias"]
    if "cls_token" in sd and sd["cls_token"].shape == model.cls_token.shape:
        new["cls_token"] = sd["cls_token"]
    if "pos_embed" in sd:
        new["pos_embed"] = _inflate_pos_embed(sd["pos_embed"].float(), model)
    own = model.state_dict()
    for k, v in sd.items():
        if (k.startswith("blocks.") or k.startswith("norm.")) and k in own and own[k].shape == v.shape:
            new[k] = v
    model.load_state_dict(new, strict=False)
    return sorted(new)


def _inflate_pos_embed(pos: torch.Tensor, model: ViT3D) -> torch.Tensor:
    n = pos.shape[1]
    g = int(round((n - 1) ** 0.5))
    if g * g == n - 1:
        cls, grid = pos[:, :1], pos[:, 1:]
    else:
        g = int(round(n ** 0.5))
        if g * g != n:
            raise ModelError(f"cannot read a square grid from the 2D ViT's pos_embed of {n} tokens.")
        cls, grid = model.pos_embed.detach()[:, :1], pos
    gd, gh, gw = model.patch_embed.grid
    grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    if (g, g) != (gh, gw):
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).unsqueeze(1).expand(1, gd, gh, gw, -1).reshape(1, gd * gh * gw, -1)
    return torch.cat([cls, grid], 1)


_VIT_OPTIONS = ("image_size", "depth", "patch_size", "embed_dim", "num_layers", "num_heads", "mlp_ratio", "pool",
                "drop_rate", "drop_path_rate", "inflate_from")


@register_model("vit3d", dims="3d",
                description="ViT on 7×7×7 patches of 28³ volumes (16³ for 64³), 256-dim, 6 layers")
def vit3d(num_classes: int, *, in_chans: int = 1, pretrained: bool = False, weights=None, image_size=None,
          depth: int | None = None, patch_size=None, embed_dim: int = 256, num_layers: int = 6, num_heads: int = 8,
          mlp_ratio: float = 4.0, pool: Pool = "concat", drop_rate: float = 0.0, drop_path_rate: float = 0.0,
          inflate_from=None, **unknown) -> ViT3D:
    """ViT3D for (B, C, D, H, W) volumes; see `models.architectures.vit3d`.

    `weights=FILE`: a ViT3D checkpoint (head dropped), or a 2D timm ViT (4D patch embedding),
    which is inflated like `inflate_from`. `inflate_from`: a 2D ViT checkpoint path or state dict.
    """
    reject_unknown("vit3d", unknown, _VIT_OPTIONS)
    check_choice("pool", pool, POOLS)
    if pretrained and weights is None and inflate_from is None:
        raise ModelError("vit3d has no download; pass weights=FILE (a vit3d or 2D ViT checkpoint) or inflate_from=.")
    model = ViT3D(num_classes, in_chans=in_chans, image_size=volume_size(image_size, depth), patch_size=patch_size,
                  embed_dim=embed_dim, num_layers=num_layers, num_heads=num_heads, mlp_ratio=mlp_ratio, pool=pool,
                  drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if inflate_from is not None:
        inflate_vit2d(model, inflate_from)
    if weights is not None:
        sd = read_state_dict(weights) if not isinstance(weights, Mapping) else dict(weights)
        w = sd.get("patch_embed.proj.weight")
        if w is not None and w.ndim == 4:
            inflate_vit2d(model, sd)
        else:
            load_weights(model, sd, head="head", first_conv="patch_embed.proj", name="vit3d")
    return model


class JointACSViT(nn.Module):
    """ACS ResNet and ViT3D side by side: both pooled feature vectors concatenated, one Linear."""

    def __init__(self, cnn: nn.Module, vit: ViT3D, num_classes: int):
        super().__init__()
        self.cnn, self.vit = cnn, vit
        self.num_features = cnn.num_features + vit.num_features
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([pooled_features(self.cnn, x), self.vit.forward_features(x)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


_JOINT_OPTIONS = ("image_size", "depth", "stem", "inflate_from", "vit_kwargs")


@register_model("acs:resnet18+vit3d", dims="3d",
                description="ACS ResNet-18 and ViT3D features concatenated, one linear layer")
def joint_acs_resnet18_vit3d(num_classes: int, *, in_chans: int = 1, pretrained: bool = False, weights=None,
                             image_size=None, depth: int | None = None, stem=None, inflate_from=None,
                             vit_kwargs: dict | None = None, **unknown) -> JointACSViT:
    """Joint ACS ResNet-18 + ViT3D (features concatenated, one Linear(512 + 512, K)).

    `weights=FILE`: a 2D ResNet-18 checkpoint for the ACS branch; `inflate_from`: a 2D ViT for the
    ViT3D branch; `image_size`/`depth`: the volume size (for ViT3D); `stem`: the ResNet's stem;
    `vit_kwargs`: further vit3d options (patch_size, pool, embed_dim, ...).
    """
    reject_unknown("acs:resnet18+vit3d", unknown, _JOINT_OPTIONS)
    if pretrained and weights is None and inflate_from is None:
        raise ModelError("acs:resnet18+vit3d has no download; pass weights=FILE (2D ResNet-18) and/or inflate_from=.")
    cnn = acs_resnet("resnet18", 0, in_chans=in_chans, weights=weights, stem=stem)
    vit = vit3d(0, in_chans=in_chans, **{"image_size": image_size, "depth": depth, "inflate_from": inflate_from,
                                         **(vit_kwargs or {})})
    return JointACSViT(cnn, vit, num_classes)
