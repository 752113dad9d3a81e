"""2D transfer architectures: timm fallback, torchvision-only nets, MedMNIST ResNets, small CNNs,
and the shared weight loader. Offline, tiny inputs, one CPU thread."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import ModelError, create_model, fixed_input_size, input_size, model_dims
from models.architectures.timm2d import is_known
from conftest import SHARED_WEIGHTS
from models.weights import load_weights

LITE0 = SHARED_WEIGHTS / "tf_efficientnet_lite0.safetensors"

# name -> side the 28 px batch is upsampled to (alexnet needs >= 63 px)
FAMILIES = {
    "resnet18": 28,
    "alexnet": 64,
    "squeezenet1_1": 28,
    "medmnist-resnet18": 28,
    "medmnist-resnet50": 28,
    "small-cnn": 28,
    "medium-cnn": 28,
}
# (num_classes, in_chans): every class count (14 = ChestMNIST's multi-label logits) and both channel counts
CASES = [(2, 1), (5, 3), (14, 1)]


@pytest.mark.parametrize("num_classes,in_chans", CASES)
@pytest.mark.parametrize("name", list(FAMILIES))
def test_forward_backward(name, num_classes, in_chans):
    torch.manual_seed(0)
    model = create_model(name, num_classes, in_chans=in_chans)
    assert model_dims(name) == "2d"
    x = torch.rand(2, in_chans, 28, 28)
    if FAMILIES[name] != 28:
        x = F.interpolate(x, size=FAMILIES[name], mode="bilinear", align_corners=False)
    logits = model(x)
    assert logits.shape == (2, num_classes)
    if num_classes == 14:
        loss = F.binary_cross_entropy_with_logits(logits, torch.randint(0, 2, (2, 14)).float())
    else:
        loss = F.cross_entropy(logits, torch.tensor([0, 1]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_unknown_name_suggests():
    with pytest.raises(ModelError, match=r"Unknown model 'medmnist-resnet19'\. Did you mean medmnist-resnet18"):
        create_model("medmnist-resnet19", 2)
    with pytest.raises(ModelError, match=r"Did you mean resnet18"):
        create_model("resnet-18", 2)
    assert is_known("resnet18.a1_in1k") and is_known("squeezenet1_0") and not is_known("resnet-18")


def test_errors_and_registry_import_without_torch():
    # The CLI's error handler imports ModelError on every command; the registry is a leaf.
    code = ("import sys, models.errors, models.registry; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert not [m for m in sys.modules if m.startswith('models.architectures')], 'architectures imported'; "
            "import models; assert models.model_dims('vit3d') == '3d'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("name", ["test_efficientnet", "squeezenet1_1", "medmnist-resnet18", "small-cnn"])
def test_unknown_option_is_model_error(name):
    with pytest.raises(ModelError, match="bogus_option"):
        create_model(name, 2, bogus_option=1)


def test_pretrained_offline_names_the_file(monkeypatch):
    import timm.models._builder as builder
    import torchvision.models._api as tv_api

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(builder, "load_state_dict_from_hf", offline)
    monkeypatch.setattr(builder, "load_state_dict_from_url", offline)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError, match=r"huggingface\.co/timm/test_efficientnet\.r160_in1k/resolve/main/"
                                         r"model\.safetensors and pass it with --weights FILE"):
        create_model("test_efficientnet", 2, pretrained=True)
    with pytest.raises(ModelError, match=r"squeezenet1_1-b8a52dc0\.pth and pass it with --weights FILE"):
        create_model("squeezenet1_1", 2, pretrained=True)
    with pytest.raises(ModelError, match="no published pretrained weights"):
        create_model("medmnist-resnet18", 2, pretrained=True)


def test_missing_weights_file(tmp_path):
    for name in ("test_efficientnet", "small-cnn"):
        with pytest.raises(ModelError, match="Weights file not found"):
            create_model(name, 2, weights=tmp_path / "nope.safetensors")


def test_weights_that_do_not_fit(tmp_path):
    from safetensors.torch import save_file

    src = create_model("small-cnn", 2).state_dict()
    pt = tmp_path / "small.pt"
    torch.save({"state_dict": {"enc." + k: v for k, v in src.items()}}, pt)
    with pytest.raises(ModelError, match=r"0/\d+ backbone tensors found; missing e\.g\. features\.0\.weight.*"
                                         r"unexpected e\.g\. enc\.features\.0\.weight"):
        create_model("small-cnn", 2, weights=pt)
    torch.save(src, pt)
    with pytest.raises(ModelError, match=r"size mismatch for features\.0\.weight"):
        create_model("medium-cnn", 2, weights=pt)
    # timm path: strict load, one line naming keys
    st = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in src.items()}, str(st))
    with pytest.raises(ModelError, match=r"do not fit 'test_efficientnet': missing conv_stem\.weight.*"
                                         r"unexpected fc\.1\.bias") as err:
        create_model("test_efficientnet", 2, weights=st)
    assert "\n" not in str(err.value)


def test_load_weights_head_stem_and_wrappers(tmp_path):
    src = create_model("small-cnn", 5, in_chans=3)
    path = tmp_path / "ckpt.pth"  # MedMNIST experiments' format, saved from DataParallel
    torch.save({"net": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    same = create_model("small-cnn", 5, in_chans=3, weights=path)  # head fits: kept
    for k, v in src.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
    grey = create_model("small-cnn", 2, in_chans=1)
    head_before = grey.head.weight.clone()
    report = load_weights(grey, path, head="head", first_conv="features.0")
    assert report.adapted == ["features.0.weight"] and set(report.reinitialised) == {"head.weight", "head.bias"}
    assert torch.allclose(grey.features[0].weight, src.features[0].weight.sum(1, keepdim=True))
    assert torch.equal(grey.fc[1].weight, src.fc[1].weight) and torch.equal(grey.head.weight, head_before)


def test_timm_weights_file_roundtrip(tmp_path):
    from safetensors.torch import save_file

    src = create_model("test_efficientnet", 5)
    path = tmp_path / "te.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    same = create_model("test_efficientnet", 5, weights=path)  # 5-class head fits: kept
    for k, v in src.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
    pt = tmp_path / "te.pth"  # a torch pickle in MedMNIST experiments' wrapper, which timm alone would not unwrap
    torch.save({"net": src.state_dict()}, pt)
    grey = create_model("test_efficientnet", 2, in_chans=1, weights=pt)
    assert "state_dict" not in grey.pretrained_cfg and grey.pretrained_cfg["file"] == str(pt)
    assert grey.classifier.out_features == 2 and grey.conv_stem.in_channels == 1
    assert torch.allclose(grey.conv_stem.weight, src.conv_stem.weight.sum(1, keepdim=True))
    for k, v in src.state_dict().items():
        if not k.startswith(("conv_stem.", "classifier.")):
            assert torch.equal(grey.state_dict()[k], v), k
    assert grey(torch.rand(2, 1, 28, 28)).shape == (2, 2)


@pytest.mark.skipif(not LITE0.is_file(), reason=f"offline weights not present at {LITE0}")
def test_lite0_loads_from_shared_weights():
    from safetensors.torch import load_file

    model = create_model("tf_efficientnet_lite0", 2, weights=LITE0)
    file = load_file(str(LITE0))
    state = model.state_dict()
    backbone = [k for k in file if not k.startswith("classifier.")]
    assert len(backbone) > 200 and set(backbone) <= set(state)
    for k in backbone:
        assert torch.equal(state[k], file[k]), k
    assert model.classifier.weight.shape == (2, 1280)
    assert model.pretrained_cfg["file"] == str(LITE0) and input_size(model) == 224


def test_medmnist_resnet_is_cifar_style():
    r18 = create_model("medmnist-resnet18", 10, in_chans=3)
    assert not any(isinstance(m, nn.MaxPool2d) for m in r18.modules())
    assert (r18.conv1.kernel_size, r18.conv1.stride, r18.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert r18.linear.in_features == 512 and input_size(r18) is None
    # parameter counts of MedMNIST experiments' ResNet18/50 (kuangliu/pytorch-cifar) with 10 classes
    assert sum(p.numel() for p in r18.parameters()) == 11_173_962
    r50 = create_model("medmnist-resnet50", 10, in_chans=3)
    assert sum(p.numel() for p in r50.parameters()) == 23_520_842
    assert r50.linear.in_features == 2048


def test_input_size_helpers():
    assert input_size(create_model("test_efficientnet", 2)) == 160
    vit = create_model("vit_tiny_patch16_224", 2, img_size=32, depth=1)
    assert input_size(vit) == 32 and fixed_input_size(vit)
    assert not fixed_input_size(create_model("test_vit", 2, dynamic_img_size=True))
    tv = create_model("squeezenet1_1", 2, in_chans=1)
    assert input_size(tv) == 224 and not fixed_input_size(tv)
    small = create_model("small-cnn", 2)
    assert input_size(small) is None and small(torch.rand(1, 3, 64, 64)).shape == (1, 2)
    with pytest.raises(ValueError, match="at least 22 px"):
        create_model("medium-cnn", 2)(torch.rand(1, 3, 16, 16))
