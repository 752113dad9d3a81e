"""Training recipes: resolved values, overrides in the record, MedMNIST's exact schedule and inputs (3D [0, 1],
NEAREST 224 px, torchvision ResNet at 224), AugMix, old run folders, and `vlm datasets`' task strings."""

from __future__ import annotations

import json

import medmnist
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file
from typer.testing import CliRunner

from cli import app
from conftest import SHARED_DATA, write_synthetic
from models import create_model
from vlm.data import load_split
from vlm.errors import VlmError
from vlm.preprocess import medmnist_preprocess, normalize, to_float
from vlm.tasks import get_task
from vlm.training import InputPipeline, TrainConfig, build_scheduler, lr_factor, train
from vlm.training.recipes import RECIPE_FIELDS, default_recipe, recipe_model_opts, recipe_names
from vlm.training.transfer import build_transfer_model

TINY = dict(batch_size=16, eval_batch_size=64, n_bootstrap=20, device="cpu")
BREAST, VESSEL = get_task("breastmnist"), get_task("vesselmnist3d")


# ----------------------------------------------------------------------------- resolved values
def _resolved(recipe: str, task=BREAST, **options) -> TrainConfig:
    return TrainConfig(recipe=recipe, **options).resolved(task)


def test_the_four_recipes_and_their_default_models():
    assert recipe_names() == ("medmnist", "slices-study", "timm-finetune", "medvit")
    expect = {"medmnist-resnet18": "medmnist", "medmnist-resnet50": "medmnist", "acs:resnet18": "medmnist",
              "2.5d:resnet50": "medmnist", "3d:resnet18": "medmnist", "slices:tf_efficientnet_lite0": "slices-study",
              "medvit_small": "medvit", "small-cnn": "timm-finetune", "tf_efficientnet_lite0": "timm-finetune",
              "vit3d": "timm-finetune"}
    assert {m: default_recipe(m) for m in expect} == expect
    with pytest.raises(VlmError, match="Unknown recipe 'nope': choose one of medmnist, slices-study"):
        _resolved("nope")


def test_medmnist_recipe_2d_and_3d():
    c = _resolved("medmnist")
    assert (c.epochs, c.batch_size, c.lr, c.optimizer, c.weight_decay) == (100, 128, 1e-3, "adam", 0.0)
    assert (c.scheduler, c.lr_gamma, c.lr_milestones) == ("multistep", 0.1, [50.0, 75.0])
    assert (c.augment, c.sampler, c.loss, c.interpolation, c.normalize) == ("off", "none", "ce", "nearest", True)
    assert _resolved("medmnist", get_task("chestmnist")).loss == "bce"
    v = _resolved("medmnist", VESSEL)
    assert (v.batch_size, v.normalize, v.shape_transform, v.epochs) == (32, False, True, 100)
    assert recipe_model_opts("medmnist", "acs:resnet18", True, 28, {}) == ({"in_chans": 1}, [])
    assert recipe_model_opts("medmnist", "medmnist-resnet18", False, 224, {})[0] == {"stem": "imagenet"}
    assert recipe_model_opts("medmnist", "medmnist-resnet18", False, 28, {})[0] == {}


def test_slices_study_timm_finetune_and_medvit_recipes():
    s = _resolved("slices-study", VESSEL)
    assert (s.loss, s.gamma, s.sampler, s.optimizer, s.scheduler, s.lr_gamma) == (
        "focal", 0.7, "balanced", "radam", "exponential", 0.95)
    assert (s.batch_size, s.lr, s.epochs, s.normalize) == (32, 1e-4, 10, True)
    assert recipe_model_opts("slices-study", "slices:x", True, 28, {})[0] == {"features": "logits", "head": "flatten"}
    t = _resolved("timm-finetune")
    assert (t.epochs, t.batch_size, t.lr, t.optimizer, t.scheduler, t.lr_milestones) == (
        10, 128, 1e-3, "adam", "multistep", [5.0, 7.5])
    assert (t.augment, t.interpolation, t.normalize, t.gamma, t.warmup_epochs) == ("off", "bilinear", True, 2.0, 0.0)
    assert TrainConfig().resolved(BREAST).recipe == "timm-finetune"  # fit() without a recipe
    m = _resolved("medvit")
    assert (m.optimizer, m.lr, m.weight_decay, m.batch_size, m.eval_batch_size) == ("sgd", 0.005, 0.0, 10, 20)
    assert (m.augment, m.image_size, m.epochs, m.lr_milestones, m.lr_gamma) == ("augmix", 224, 10, [10.0, 15.0], 0.1)
    with pytest.raises(VlmError, match="AugMix is a 2D augmentation"):
        _resolved("medvit", VESSEL)


def test_explicit_options_override_the_recipe_and_are_listed():
    c = _resolved("medmnist", VESSEL, epochs=3, batch_size=128, normalize=True)
    assert (c.epochs, c.batch_size, c.normalize, c.lr) == (3, 128, True, 1e-3)
    assert c.recipe_overrides == ["epochs", "batch_size", "normalize"]  # batch 128 counts though 2D's value
    assert c.resolved(VESSEL) == c  # resolving again changes nothing (fit resolves what train resolved)
    assert _resolved("medmnist").recipe_overrides == []
    assert set(c.recipe_overrides) <= set(RECIPE_FIELDS)
    opts, replaced = recipe_model_opts("medmnist", "acs:resnet18", True, 28, {"in_chans": 3, "stem": "imagenet"})
    assert opts == {"in_chans": 3, "stem": "imagenet"} and replaced == ["model_opts.in_chans"]


# ----------------------------------------------------------------------------- the schedule
@pytest.mark.parametrize("epochs", [5, 10, 33, 100])
def test_multistep_equals_torch_multisteplr_with_float_milestones(epochs):
    config = _resolved("medmnist", epochs=epochs)
    net = torch.nn.Linear(2, 2)
    ref_opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    ref = torch.optim.lr_scheduler.MultiStepLR(ref_opt, milestones=[0.5 * epochs, 0.75 * epochs], gamma=0.1)
    ours_opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = 3
    ours = build_scheduler(ours_opt, config, steps)
    for epoch in range(epochs):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12), epoch
        assert lr_factor(config, epoch * steps + steps - 1, steps) == pytest.approx(ref.get_last_lr()[0] / 1e-3)
        for _ in range(steps):
            ours_opt.step()
            ours.step()
        ref_opt.step()
        ref.step()


def test_the_old_ceil_milestones_are_gone():
    factor = lambda c, e: lr_factor(c, e, 1)  # noqa: E731 - one step per epoch
    ten, five, odd = _resolved("medmnist", epochs=10), _resolved("medmnist", epochs=5), _resolved("medmnist", epochs=33)
    assert [factor(ten, e) for e in (4, 5, 8, 9)] == pytest.approx([1, 0.1, 0.1, 0.1])  # ceil(7.5) = 8 decayed
    assert {factor(five, e) for e in range(5)} == {1.0} and {factor(odd, e) for e in range(33)} == {1.0}
    medvit = _resolved("medvit", epochs=20)
    assert [factor(medvit, e) for e in (9, 10, 14, 15, 19)] == pytest.approx([1, 0.1, 0.1, 0.01, 0.01])


# ----------------------------------------------------------------------------- MedMNIST's inputs
def test_medmnist_3d_input_is_one_channel_in_0_1_and_background_0_after_the_shape_transform(tmp_path):
    write_synthetic(tmp_path, "vesselmnist3d", n=(20, 8, 8))
    vit = {"embed_dim": 32, "num_layers": 1, "num_heads": 2}
    result = train("vesselmnist3d", "vit3d", config=TrainConfig(recipe="medmnist", epochs=1, **TINY),
                   data_root=tmp_path, runs_dir=tmp_path / "runs", model_opts=vit)
    rec = result.record
    assert rec.config["model_opts"]["in_chans"] == 1 and rec.config["normalize"] is False
    pre = medmnist_preprocess(None, rgb=False, interpolation="nearest", normalize=False)
    assert rec.preprocessing["id"] == pre.id and pre.id.endswith("mean=0,0,0;std=1,1,1;rgb=0")
    pipe = InputPipeline(pre, is_3d=True, config=TrainConfig(recipe="medmnist").resolved(VESSEL))
    x = torch.randint(0, 256, (3, 1, 8, 8, 8), dtype=torch.uint8)
    x[:, :, :2] = 0  # background
    out = pipe(x, train=False)
    assert out.shape == (3, 1, 8, 8, 8) and torch.allclose(out, x.float() / 255 * 0.5)
    assert out.min() == 0 and out.max() <= 0.5 and (out[:, :, :2] == 0).all()
    assert ((pipe(x, train=True) >= 0) & (pipe(x, train=True) <= 1)).all()


def test_nearest_upsampling_is_interpolate_nearest_of_the_28px_batch():
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    config = _resolved("medmnist", image_size=224)
    pre = medmnist_preprocess(224, interpolation=config.interpolation, normalize=config.normalize)
    expect = normalize(F.interpolate(to_float(x), size=(224, 224), mode="nearest").expand(-1, 3, -1, -1),
                       (0.5,) * 3, (0.5,) * 3)
    assert torch.equal(pre(x), expect)


def test_nearest_upsampling_equals_pil_on_a_real_image():
    if not (SHARED_DATA / "breastmnist.npz").is_file():
        pytest.skip("breastmnist.npz not in ../shared/data/medmnist")
    from PIL import Image

    image = load_split("breastmnist", "test", 28, SHARED_DATA).images[:1]
    pil = Image.fromarray(image[0, 0].numpy()).convert("RGB").resize((224, 224), Image.NEAREST)
    expect = (torch.from_numpy(np.array(pil)).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    assert torch.equal(medmnist_preprocess(224, interpolation="nearest")(image), expect)


def test_medmnist_recipe_at_224_builds_torchvision_resnet(tmp_path):
    write_synthetic(tmp_path, "breastmnist", size=224, n=(6, 4, 4))
    config = TrainConfig(epochs=1, batch_size=3, eval_batch_size=4, n_bootstrap=0, device="cpu")
    result = train("breastmnist", "medmnist-resnet18", size=224, config=config, data_root=tmp_path,
                   runs_dir=tmp_path / "runs")
    assert result.record.config["recipe"] == "medmnist" and result.record.config["model_opts"]["stem"] == "imagenet"
    reference = torchvision.models.resnet18(num_classes=2).state_dict()
    best = load_file(str(result.run_dir / "best.safetensors"))
    assert best.keys() == reference.keys() and all(best[k].shape == reference[k].shape for k in best)
    built = build_transfer_model("medmnist-resnet18", BREAST, _resolved("medmnist", image_size=224), size=28,
                                 in_chans=3, pretrained=False, weights=None, model_opts={"stem": "imagenet"})
    assert isinstance(built.model, torchvision.models.ResNet) and built.preprocess.interpolation == "nearest"
    assert built.preprocess.size == 224
    cifar = create_model("medmnist-resnet18", 2)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.state_dict().keys() != reference.keys()


# ----------------------------------------------------------------------------- records, CLI, old folders
def test_recipe_and_overrides_in_record_json(data_root, runs_dir):
    small = train("breastmnist", "small-cnn", config=TrainConfig(epochs=1, **TINY), data_root=data_root,
                  runs_dir=runs_dir / "a")
    record = json.loads((small.run_dir / "record.json").read_text())
    assert record["config"]["recipe"] == "timm-finetune"
    assert record["config"]["recipe_overrides"] == ["epochs", "batch_size"]
    resnet = train("breastmnist", "medmnist-resnet18", config=TrainConfig(epochs=1, lr=3e-3, **TINY),
                   data_root=data_root, runs_dir=runs_dir / "b")
    config = json.loads((resnet.run_dir / "record.json").read_text())["config"]
    assert config["recipe"] == "medmnist" and config["recipe_overrides"] == ["epochs", "batch_size", "lr"]
    assert config["lr_milestones"] == [0.5, 0.75] and config["interpolation"] == "nearest"


def test_a_resumed_run_keeps_its_recipe_and_overrides(data_root, runs_dir):
    from vlm.methods import resume

    config = TrainConfig(recipe="medmnist", epochs=2, **TINY)
    part = train("breastmnist", "small-cnn", config=config, data_root=data_root, runs_dir=runs_dir,
                 max_epochs_this_call=1)
    done = resume(part.run_dir, overrides={"epochs": 2})
    assert done.record.config["recipe"] == "medmnist"
    assert done.record.config["recipe_overrides"] == ["epochs", "batch_size"]


def test_cli_recipe_augment_and_milestones(data_root, runs_dir):
    runner = CliRunner()
    res = runner.invoke(app, ["train", "breastmnist", "--model", "small-cnn", "--recipe", "medmnist", "--epochs", "2",
                              "--batch-size", "16", "--augment", "affine", "--lr-milestones", "1,3.5", "--bootstrap",
                              "0", "--device", "cpu", "--data-root", str(data_root), "--runs-dir", str(runs_dir),
                              "--json"])
    assert res.exit_code == 0, res.output
    config = json.loads((next(runs_dir.iterdir()) / "record.json").read_text())["config"]
    assert config["recipe"] == "medmnist" and config["augment"] == "affine" and config["lr_milestones"] == [1.0, 3.5]
    assert config["recipe_overrides"] == ["epochs", "batch_size", "lr_milestones", "augment"]
    bad = runner.invoke(app, ["train", "breastmnist", "--model", "small-cnn", "--augment", "sideways",
                              "--data-root", str(data_root), "--runs-dir", str(runs_dir)])
    assert bad.exit_code == 2 and "off, affine, augmix" in bad.output
    listed = json.loads(runner.invoke(app, ["models", "--json"]).stdout)["recipes"]
    assert [r["name"] for r in listed] == list(recipe_names()) and all(r["source"] for r in listed)


def test_experiment_train_methods_take_a_recipe_but_not_its_overrides():
    from vlm.methods import get_method

    options = get_method("train").options
    assert "recipe" in options and "lr_milestones" in options and "recipe_overrides" not in options


def test_augmix_runs_on_8_bit_images_at_the_training_size():
    config = _resolved("medvit", image_size=32)
    pipe = InputPipeline(medmnist_preprocess(32), is_3d=False, config=config)
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    out = pipe(x, train=True)
    assert out.shape == (4, 3, 32, 32)
    levels = (out * 0.5 + 0.5) * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3) and not torch.equal(out, pipe(x, train=False))
    assert pipe.describe()["augment"]["augmix"]["severity"] == 3


def test_run_folders_from_before_recipes_resume_with_what_they_trained_with():
    old = {"epochs": 10, "batch_size": 128, "lr": 0.001, "optimizer": "adam", "scheduler": "multistep",
           "augment": True, "augment_3d": "flip", "image_size": 224, "seed": 0}
    config = TrainConfig.from_dict(old)
    assert (config.recipe, config.augment, config.interpolation, config.normalize) == (
        "timm-finetune", "affine", "bilinear", True)
    assert TrainConfig.from_dict({**old, "augment": False}).augment == "off"
    assert TrainConfig(augment=True).resolved(BREAST).augment == "affine"


def test_datasets_json_gives_medmnist_task_strings(data_root):
    rows = json.loads(CliRunner().invoke(app, ["datasets", "--json", "--data-root", str(data_root)]).stdout)["datasets"]
    assert all(r["medmnist_task"] == medmnist.INFO[r["flag"]]["task"] for r in rows)
    by_flag = {r["flag"]: r for r in rows}
    assert by_flag["chestmnist"]["medmnist_task"] == "multi-label, binary-class"
    retina = by_flag["retinamnist"]
    assert retina["medmnist_task"] == "ordinal-regression" and retina["task"] == "ordinal"
