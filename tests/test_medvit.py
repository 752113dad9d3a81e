"""MedViT (models.architectures.medvit) and the AugMix augmentation (vlm.augment.AugMix2D).

The reference state-dict layout below is written from the released code (Omid-Nejati/MedViT,
`MedViT.py`): attribute names of ConvBNReLU / PatchEmbed / MHCA / LocalityFeedForward / SELayer /
ECB / E_MHSA / LTB / MedViT, its `stage_out_channels` / `stage_block_types` tables and
`_make_divisible`, so a released checkpoint (`{"model": state_dict, ...}`) maps onto our modules key
for key and shape for shape. Parameter counts are those of that layout with the 1000-class ImageNet
head (`MedViT_small/base/large(num_classes=1000)`).
"""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from models import ModelError, create_model, list_models, model_dims
from models.architectures.medvit import EMHSA, LocalityFeedForward, MedViT, load_released
from vlm.augment import AugMix2D
from vlm.errors import VlmError

SIZES = {"medvit_small": (3, 4, 10, 3), "medvit_base": (3, 4, 20, 3), "medvit_large": (3, 4, 30, 3)}
# sum(p.numel() for p in model.parameters()) with 1000 classes; rounded: 32.16M, 45.43M, 58.70M.
PARAMS = {"medvit_small": 32_161_440, "medvit_base": 45_430_972, "medvit_large": 58_700_504}
# _make_divisible(int(out * 0.75), 32) in the release's LTB: the self-attention share of the width.
MHSA_WIDTH = {256: 192, 512: 384, 1024: 768}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _bn(p: str, c: int) -> dict:
    return {f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,), f"{p}.running_var": (c,),
            f"{p}.num_batches_tracked": ()}


def _patch_embed(p: str, cin: int, cout: int, stride: int) -> dict:
    return {f"{p}.conv.weight": (cout, cin, 1, 1), **_bn(f"{p}.norm", cout)} if stride == 2 or cin != cout else {}


def _mhca(p: str, c: int) -> dict:  # groups = c // head_dim (32): 32 input channels per group
    return {f"{p}.group_conv3x3.weight": (c, 32, 3, 3), **_bn(f"{p}.norm", c), f"{p}.projection.weight": (c, c, 1, 1)}


def _lffn(p: str, c: int, ratio: int) -> dict:  # Sequential: 0 conv, 1 bn, 2 act, 3 dw, 4 bn, 5 act, 6 SE, 7 conv, 8 bn
    h, r = c * ratio, ratio  # SELayer(hidden, reduction=out_channels): hidden // out = ratio
    return {f"{p}.conv.0.weight": (h, c, 1, 1), **_bn(f"{p}.conv.1", h), f"{p}.conv.3.weight": (h, 1, 3, 3),
            **_bn(f"{p}.conv.4", h), f"{p}.conv.6.fc.0.weight": (r, h), f"{p}.conv.6.fc.0.bias": (r,),
            f"{p}.conv.6.fc.2.weight": (h, r), f"{p}.conv.6.fc.2.bias": (h,), f"{p}.conv.7.weight": (c, h, 1, 1),
            **_bn(f"{p}.conv.8", c)}


def _ecb(p: str, cin: int, cout: int, stride: int) -> dict:
    return {**_patch_embed(f"{p}.patch_embed", cin, cout, stride), **_mhca(f"{p}.mhca", cout),
            **_lffn(f"{p}.conv", cout, 3), **_bn(f"{p}.norm", cout)}


def _ltb(p: str, cin: int, cout: int, stride: int, sr: int) -> dict:
    m = MHSA_WIDTH[cout]
    attn = {f"{p}.e_mhsa.{n}.{t}": (m, m) if t == "weight" else (m,) for n in "qkv" for t in ("weight", "bias")}
    attn.update({f"{p}.e_mhsa.proj.weight": (m, m), f"{p}.e_mhsa.proj.bias": (m,)})
    if sr > 1:
        attn.update(_bn(f"{p}.e_mhsa.norm", m))
    return {**_patch_embed(f"{p}.patch_embed", cin, m, stride), **_bn(f"{p}.norm1", m), **attn,
            **_patch_embed(f"{p}.projection", m, cout - m, 1), **_mhca(f"{p}.mhca", cout - m),
            **_bn(f"{p}.norm2", cout), **_lffn(f"{p}.conv", cout, 2)}


def released_layout(depths: tuple[int, int, int, int], num_classes: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released MedViT(stem_chs=[64, 32, 64], depths, num_classes).state_dict()."""
    d1, d2, d3, d4 = depths
    widths = [[96] * d1, [192] * (d2 - 1) + [256], [384, 384, 384, 384, 512] * (d3 // 5), [768] * (d4 - 1) + [1024]]
    kinds = [["ECB"] * d1, ["ECB"] * (d2 - 1) + ["LTB"], ["ECB"] * 4 + ["LTB"], ["ECB"] * (d4 - 1) + ["LTB"]]
    kinds[2] = kinds[2] * (d3 // 5)
    out: dict[str, tuple[int, ...]] = {}
    for i, (cin, cout) in enumerate([(3, 64), (64, 32), (32, 64), (64, 64)]):
        out.update({f"stem.{i}.conv.weight": (cout, cin, 3, 3), **_bn(f"stem.{i}.norm", cout)})
    cin, idx = 64, 0
    for stage, (ws, ks) in enumerate(zip(widths, kinds)):
        for j, (cout, kind) in enumerate(zip(ws, ks)):
            stride = 2 if stage > 0 and j == 0 else 1
            block = _ecb if kind == "ECB" else lambda p, a, b, s, st=stage: _ltb(p, a, b, s, (8, 4, 2, 1)[st])
            out.update(block(f"features.{idx}", cin, cout, stride))
            cin, idx = cout, idx + 1
    out.update({**_bn("norm", 1024), "proj_head.0.weight": (num_classes, 1024), "proj_head.0.bias": (num_classes,)})
    return out


@pytest.fixture(scope="module")
def built() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: create_model(name, 1000) for name in SIZES}


def test_registered_as_2d_models() -> None:
    names = {e.name for e in list_models()}
    for name in SIZES:
        assert name in names and model_dims(name) == "2d"


@pytest.mark.parametrize("name", list(SIZES))
def test_layout_and_parameter_count_match_the_release(built, name: str) -> None:
    model = built[name]
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref = released_layout(SIZES[name], 1000)
    assert sorted(ours) == sorted(ref)
    assert ours == ref
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(math.prod(s) for k, s in ref.items() if not k.endswith(BUFFERS)) == PARAMS[name]
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)


@pytest.mark.parametrize("name", list(SIZES))
def test_forward_backward_at_224(built, name: str) -> None:
    model = built[name].train()
    out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    out.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


def test_released_checkpoint_loads_strictly(built, tmp_path) -> None:
    """main.py's checkpoint layout: {"model": state_dict, "optimizer": ..., "epoch": ..., "args": Namespace}."""
    src = built["medvit_small"].state_dict()
    path = tmp_path / "MedViT_small_im1k.pth"
    torch.save({"model": src, "optimizer": {"state": {}, "param_groups": []}, "epoch": 299,
                "args": argparse.Namespace(model="MedViT_small", lr=5e-4, input_size=224)}, path)
    grey = create_model("medvit_small", 3, in_chans=1, weights=str(path))
    sd = grey.state_dict()
    assert sd["proj_head.0.weight"].shape == (3, 1024)  # re-initialised head
    assert torch.allclose(sd["stem.0.conv.weight"], src["stem.0.conv.weight"].sum(dim=1, keepdim=True))
    assert all(torch.equal(v, sd[k]) for k, v in src.items() if not k.startswith(("proj_head", "stem.0.conv")))
    grey.eval()
    with torch.no_grad():
        assert grey(torch.randn(2, 1, 64, 64)).shape == (2, 3)

    target = MedViT(SIZES["medvit_small"])  # same class count: every tensor, head included, comes back
    load_released(target, {"model": src}, "medvit_small")
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in src.items())


def test_left_over_or_missing_keys_are_refused(built) -> None:
    model = built["medvit_small"]
    state = dict(model.state_dict())
    with pytest.raises(ModelError, match="left over"), pytest.warns(UserWarning, match="not used"):
        load_released(model, {**state, "features.99.mhca.projection.weight": torch.zeros(1)}, "medvit_small")
    state.pop("features.3.mhca.projection.weight")
    with pytest.raises(ModelError, match="backbone tensors"):
        load_released(model, state, "medvit_small")


def test_options_and_pretrained_without_file() -> None:
    with pytest.raises(ModelError, match="unknown option"):
        create_model("medvit_small", 2, img_size=224)
    with pytest.raises(ModelError, match="MedViT_base_im1k.pth"):
        create_model("medvit_base", 2, pretrained=True)
    model = create_model("medvit_small", 2, drop_path_rate=0.0, drop_rate=0.1)
    assert all(m.drop_prob == 0.0 for m in model.modules() if type(m).__name__ == "DropPath")
    assert model.features[6].e_mhsa.proj_drop.p == 0.1


def test_emhsa_matches_the_released_attention_math() -> None:
    torch.manual_seed(0)
    attn = EMHSA(64, sr_ratio=2).eval()
    x = torch.randn(2, 16, 64)
    with torch.no_grad():
        b, n, c, h = 2, 16, 64, 2
        q = attn.q(x).reshape(b, n, h, c // h).permute(0, 2, 1, 3)
        pooled = attn.norm(attn.sr(x.transpose(1, 2))).transpose(1, 2)
        k = attn.k(pooled).reshape(b, -1, h, c // h).permute(0, 2, 3, 1)
        v = attn.v(pooled).reshape(b, -1, h, c // h).permute(0, 2, 1, 3)
        ref = attn.proj(((q @ k) * 32 ** -0.5).softmax(-1).matmul(v).transpose(1, 2).reshape(b, n, c))
        assert torch.allclose(attn(x), ref, atol=1e-5)


def test_locality_feed_forward_keeps_its_own_residual() -> None:
    ffn = LocalityFeedForward(32, 2).eval()
    torch.nn.init.zeros_(ffn.conv[8].weight)  # last BN outputs 0: the block is the identity
    x = torch.randn(2, 32, 5, 5)
    with torch.no_grad():
        assert torch.equal(ffn(x), x)


# --- AugMix ---------------------------------------------------------------------------------------


def _images(c: int) -> torch.Tensor:
    return torch.randint(0, 256, (4, c, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(c))


@pytest.mark.parametrize("channels", [1, 3])
def test_augmix_keeps_uint8_and_changes_images(channels: int) -> None:
    x = _images(channels)
    y = AugMix2D(seed=0)(x)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    assert not torch.equal(y, x)


def test_augmix_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    x = _images(3)
    before = torch.get_rng_state()
    a, b = AugMix2D(seed=7)(x), AugMix2D(seed=7)(x)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, b)
    assert not torch.equal(a, AugMix2D(seed=8)(x))


def test_augmix_state_dict_round_trip_gives_the_same_next_batch() -> None:
    x = _images(3)
    aug = AugMix2D(seed=1)
    aug(x)
    state = aug.state_dict()
    expected = aug(x)
    resumed = AugMix2D(seed=123)
    resumed.load_state_dict(state)
    assert torch.equal(resumed(x), expected)
    assert state["spec"] == {"severity": 3, "mixture_width": 3, "chain_depth": -1, "alpha": 1.0}


def test_augmix_refuses_float_batches() -> None:
    with pytest.raises(VlmError, match="uint8"):
        AugMix2D()(torch.rand(2, 3, 8, 8))
