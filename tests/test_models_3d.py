"""3D architectures: slices:, acs:/2.5d:/3d: ResNets, vit3d and the joint model (tiny inputs, CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import ModelError, create_model, model_dims
from models.architectures.acs import ACSConv, convert_to_3d, split3
from conftest import SHARED_WEIGHTS
from models.architectures.vit3d import inflate_vit2d

TINY = "test_efficientnet"  # timm's tiny test EfficientNet
LITE0 = SHARED_WEIGHTS / "tf_efficientnet_lite0.safetensors"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _fwd_bwd(model: nn.Module, x: torch.Tensor, k: int) -> None:
    model.train()
    out = model(x)
    assert out.shape == (x.shape[0], k)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# --- slices: ----------------------------------------------------------------------------------------


def test_slices_stages_28():
    m = create_model(f"slices:{TINY}", 3, in_chans=1, depth=28, image_size=32, chunk_size=20)
    st = m.stages(torch.randn(2, 1, 28, 28, 28))
    assert {k: tuple(v) for k, v in st.items()} == {
        "input": (2, 1, 28, 28, 28),
        "distribute": (56, 1, 28, 28),
        "upsample": (56, 1, 32, 32),
        "channels": (56, 3, 32, 32),
        "backbone": (56, 1000),  # features="logits": the backbone's 1000-way output
        "regroup": (2, 28, 1000),
        "flatten": (2, 28000),
        "fc1": (2, 1000),
        "logits": (2, 3),
    }
    assert m.head.fc1.in_features == 28 * 1000 and m.head.fc2.in_features == 1000


@torch.no_grad()
def test_slices_stages_64_pooled_native_size():
    m = create_model(f"slices:{TINY}", 2, in_chans=1, depth=64, features="pooled", chunk_size=16).eval()
    st = m.stages(torch.randn(1, 1, 64, 64, 64))
    f = m.num_features
    assert f == m.backbone.num_features
    assert [tuple(v) for v in st.values()] == [
        (1, 1, 64, 64, 64), (64, 1, 64, 64), (64, 1, 64, 64), (64, 3, 64, 64),
        (64, f), (1, 64, f), (1, 64 * f), (1, 1000), (1, 2)]


def test_slices_slice_axis_and_light_heads():
    x = torch.randn(2, 1, 6, 8, 10)
    for axis, (n, plane) in enumerate([(6, (8, 10)), (8, (6, 10)), (10, (6, 8))]):
        m = create_model(f"slices:{TINY}", 2, in_chans=1, slice_axis=axis, head="mean", features="pooled")
        st = m.stages(x)
        assert tuple(st["distribute"]) == (2 * n, 1, *plane) and tuple(st["regroup"])[:2] == (2, n)
    m = create_model(f"slices:{TINY}", 2, in_chans=1, head="attention", features="pooled", channel_mode="replicate")
    st = m.stages(x)
    assert tuple(st["channels"]) == (12, 3, 8, 10) and tuple(st["pool"]) == (2, m.num_features)
    # the distributed slices along W are exactly x[..., j]
    m = create_model(f"slices:{TINY}", 2, in_chans=1, slice_axis=2, head="mean", features="pooled").eval()
    seen = []
    m.channel.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        m(x)
    assert torch.equal(seen[0].view(2, 10, 1, 6, 8)[:, 3], x[..., 3])


def test_slices_forward_backward():
    m = create_model(f"slices:{TINY}", 2, in_chans=1, depth=8, chunk_size=5)
    _fwd_bwd(m, torch.randn(2, 1, 8, 8, 8), 2)


@torch.no_grad()
def test_slices_chunked_equals_unchunked():
    m = create_model(f"slices:{TINY}", 3, in_chans=1, depth=12, image_size=16, chunk_size=None).eval()
    x = torch.randn(2, 1, 12, 12, 12)
    ref = m(x)
    for chunk in (1, 5, 24, 100):
        m.chunk_size = chunk
        torch.testing.assert_close(m(x), ref, atol=1e-6, rtol=0)


def test_slices_grad_checkpoint_same_gradients():
    x = torch.randn(2, 1, 6, 6, 6)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        m = create_model(f"slices:{TINY}", 2, in_chans=1, depth=6, chunk_size=4, grad_checkpoint=ckpt,
                         features="pooled")
        m(x).sum().backward()
        grads.append(m.channel.conv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_slices_errors():
    for axis in (3, -1, "D"):
        with pytest.raises(ModelError, match="slice_axis"):
            create_model(f"slices:{TINY}", 2, in_chans=1, slice_axis=axis)
    m = create_model(f"slices:{TINY}", 2, in_chans=1, depth=8)
    with pytest.raises(ModelError, match="8 slices .* has 6; build it with depth=6"):
        m(torch.randn(1, 1, 6, 8, 8))
    with pytest.raises(ModelError, match="unknown option"):
        create_model(f"slices:{TINY}", 2, in_chans=1, slice_dim=1)
    with pytest.raises(ModelError, match="features"):
        create_model(f"slices:{TINY}", 2, in_chans=1, features="tokens")
    with pytest.raises(ModelError, match="Unknown timm 2D model"):
        create_model("slices:not_a_net", 2, in_chans=1)
    with pytest.raises(ModelError, match="cannot take 28×28 slices"):  # a fixed-size (160 px) ViT
        create_model("slices:test_vit", 2, in_chans=1, image_size=28)
    with pytest.raises(ModelError, match="replicate"):
        create_model(f"slices:{TINY}", 2, in_chans=2, channel_mode="replicate")
    assert model_dims(f"slices:{TINY}") == "3d"


@pytest.mark.skipif(not LITE0.is_file(), reason=f"{LITE0} not present")
def test_slices_lite0_local_weights():
    from safetensors.torch import load_file

    m = create_model("slices:tf_efficientnet_lite0", 2, in_chans=1, weights=str(LITE0), depth=4)
    own = m.backbone.state_dict()
    ref = load_file(str(LITE0))
    assert set(ref) <= set(own)
    for k, v in ref.items():
        assert torch.equal(own[k], v), k


# --- ACS / 2.5D / 3D ResNets ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["acs:resnet18", "2.5d:resnet18", "3d:resnet18"])
def test_resnet3d_forward_backward(name):
    m = create_model(name, 3, in_chans=1)
    assert not any(isinstance(mod, (nn.Conv2d, nn.BatchNorm2d)) for mod in m.modules())
    _fwd_bwd(m, torch.randn(2, 1, 4, 4, 4), 3)


def test_resnet3d_channels_last_3d_input_gives_same_output():
    """The 3D ResNets take volumes in channels-last-3d layout (faster conv3d); values must not change."""
    torch.manual_seed(0)
    m = create_model("acs:resnet18", 2, in_chans=3).eval()
    seen = []
    m.conv1.register_forward_pre_hook(lambda mod, args: seen.append(args[0].is_contiguous(
        memory_format=torch.channels_last_3d)))
    x = torch.randn(2, 3, 6, 6, 6)
    with torch.no_grad():
        out = m(x)
        ref = m.linear(m.forward_features(x))  # no hook: the contiguous layout as given
    assert seen == [True, False]
    torch.testing.assert_close(out, ref)


def test_acs_conversion_keeps_weights():
    net2d = create_model("medmnist-resnet18", 3, in_chans=1)
    before = {k: v.clone() for k, v in net2d.state_dict().items()}
    for mode in ("acs", "2.5d", "3d"):
        after = convert_to_3d(copy.deepcopy(net2d), mode).state_dict()
        assert after.keys() == before.keys()
        for k, v in before.items():
            w = after[k]
            if mode == "acs" or v.ndim != 4:
                assert torch.equal(w, v), (mode, k)
            elif mode == "2.5d":
                assert torch.equal(w, v.unsqueeze(2)), k
            else:  # I3D: replicated along depth / k, so the depth sum is the 2D kernel
                torch.testing.assert_close(w.sum(2), v)
    net = convert_to_3d(copy.deepcopy(net2d), "acs")
    assert isinstance(net.conv1, ACSConv) and net.conv1.weight.shape == (64, 1, 3, 3)


@pytest.mark.parametrize("source", ["medmnist-resnet18", "resnet18"])
def test_acs_weights_file_loads_before_conversion(tmp_path, source):
    """A 2D checkpoint (MedMNIST's `{"net": ...}` or timm/torchvision ImageNet layout) loads, then converts."""
    net2d = create_model(source, 10, in_chans=3)
    torch.save({"net": net2d.state_dict()}, tmp_path / "r18.pth")
    m = create_model("acs:resnet18", 2, in_chans=3, weights=str(tmp_path / "r18.pth"))  # stem picked from conv1
    own, head = m.state_dict(), "linear" if source.startswith("medmnist") else "fc"
    for k, v in net2d.state_dict().items():
        if not k.startswith(head + "."):
            assert torch.equal(own[k], v), k
    assert getattr(m, head).out_features == 2
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 8, 8, 8)).shape == (1, 2)


@pytest.mark.parametrize("k,s,p,d,groups", [(3, 1, 1, 1, 1), (3, 2, 1, 1, 1), (7, 2, 3, 1, 1), (3, 1, 0, 1, 1),
                                            (3, 2, 2, 2, 1), (3, 1, 1, 1, 6), (5, 2, 2, 1, 2)])
def test_acs_conv_matches_planar_3d_kernels(k, s, p, d, groups):
    """ACS = a 3D conv whose kernel holds the 2D kernel in the axial/coronal/sagittal centre plane."""
    conv2d = nn.Conv2d(6, 8 if groups != 6 else 6, k, s, p, d, groups=groups, bias=True)
    acs = ACSConv.from_conv2d(conv2d)
    assert acs.weight is conv2d.weight  # the very same tensor
    x = torch.randn(2, 6, 9, 10, 11)
    w2, o = conv2d.weight.detach(), conv2d.out_channels
    units = o if groups == 1 else groups
    per = 1 if groups == 1 else o // groups
    w3 = torch.zeros(o, w2.shape[1], k, k, k)
    start = 0
    for plane, n in enumerate(split3(units)):
        sl = slice(start * per, (start + n) * per)
        idx = [sl, slice(None), slice(None), slice(None), slice(None)]
        idx[2 + plane] = k // 2
        w3[tuple(idx)] = w2[sl]
        start += n
    ref = F.conv3d(x, w3, conv2d.bias.detach(), s, p, d, groups)
    torch.testing.assert_close(acs(x), ref, atol=1e-5, rtol=1e-5)


def test_resnet3d_errors(tmp_path):
    with pytest.raises(ModelError, match="unknown option"):
        create_model("acs:resnet18", 2, in_chans=1, i3d=False)  # i3d belongs to 3d: only
    with pytest.raises(ModelError, match="unknown ResNet"):
        create_model("acs:resnet34", 2, in_chans=1)
    bad = {"conv1.weight": torch.zeros(64, 3, 7, 7)}
    with pytest.raises(ModelError, match="stem='imagenet'"):
        create_model("3d:resnet18", 2, in_chans=1, weights=bad, stem="cifar")


# --- ViT3D and joint ------------------------------------------------------------------------------------


def test_vit3d_forward_backward_and_sizes():
    m = create_model("vit3d", 4, in_chans=1)
    assert m.patch_size == (7, 7, 7) and m.patch_embed.num_patches == 64 and len(m.blocks) == 6
    assert m.embed_dim == 256 and m.num_features == 512  # cls token ++ mean of patch tokens
    _fwd_bwd(m, torch.randn(2, 1, 28, 28, 28), 4)
    assert create_model("vit3d", 2, in_chans=1, depth=64).patch_size == (16, 16, 16)
    assert create_model("vit3d", 2, in_chans=1, image_size=64, pool="avg").num_features == 256
    with pytest.raises(ModelError, match="built for volumes"):
        m(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(ModelError, match="unknown option"):
        create_model("vit3d", 2, in_chans=1, heads=4)
    with pytest.raises(ModelError, match="patch"):
        create_model("vit3d", 2, in_chans=1, image_size=30)


def test_vit3d_inflation_from_2d_vit():
    import timm

    vit2d = timm.create_model("test_vit").eval()  # 64-dim, 6 blocks, 2 heads, 16 px patches
    sd2 = vit2d.state_dict()
    ratio = sd2["blocks.0.mlp.fc1.weight"].shape[0] / 64
    m = create_model("vit3d", 2, in_chans=3, image_size=(4, 32, 32), patch_size=(4, 16, 16), embed_dim=64,
                     num_heads=2, num_layers=4, mlp_ratio=ratio, inflate_from=sd2).eval()
    sd3 = m.state_dict()
    copied = [k for k in sd3 if k.startswith(("blocks.", "norm."))]
    assert len(copied) > 4 * 10
    for k in copied:
        assert torch.equal(sd3[k], sd2[k]), k
    torch.testing.assert_close(sd3["pos_embed"][:, 0], sd2["pos_embed"][:, 0])
    # a volume constant along depth embeds like its 2D slice
    img = torch.randn(1, 3, 32, 32)
    vol = img.unsqueeze(2).expand(-1, -1, 4, -1, -1)
    ref = vit2d.patch_embed(img)
    ref = ref.flatten(1, 2) if ref.ndim == 4 else ref  # timm keeps the (h, w) grid for dynamic sizes
    torch.testing.assert_close(m.patch_embed(vol), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ModelError, match="embed_dim=64"):
        inflate_vit2d(create_model("vit3d", 2, in_chans=1), sd2)


def test_joint_acs_resnet18_vit3d():
    m = create_model("acs:resnet18+vit3d", 3, in_chans=1, image_size=8)
    assert m.fc.in_features == 512 + 512
    _fwd_bwd(m, torch.randn(2, 1, 8, 8, 8), 3)
    with pytest.raises(ModelError, match="unknown option"):
        create_model("acs:resnet18+vit3d", 3, in_chans=1, pool="avg")
