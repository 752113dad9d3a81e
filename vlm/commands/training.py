"""`vlm train`, `vlm finetune` and `vlm models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vlm.commands.calibrate import CalibrateOpt, calibrate_after
from vlm.commands.common import given, command
from vlm.commands.output import FormatOpt, Output, Table, columns
from vlm.commands.training_options import ImageSizeOpt, Recipe, RunControl, RunPlace, TrainFlagArg, TrainSizeOpt
from vlm.commands.training_options import TrainWeightsOpt, config_options, run_training, training_output
from vlm.errors import VlmError
from vlm.ranges import check_option
from vlm.training.recipes import RECIPES

RecipeOpt = Annotated[Optional[str], typer.Option(
    "--recipe", help="Named training recipe for the unset options: " + "; ".join(
        f"{r.name} (default for {r.describe()['default_for']})" for r in RECIPES.values())
    + ". Options given explicitly override it and the record lists them; `vlm models` shows each recipe's source.",
    show_default=False)]
InterpolationOpt = Annotated[Optional[str], typer.Option(
    "--interpolation", help="How --image-size resizes: nearest (medmnist's default: their --resize is "
                            "--image-size 224 with it), bilinear or bicubic (antialiased, PIL-like) \\[default: the "
                            "recipe's].", show_default=False)]


@command
def train_cmd(
    flag: TrainFlagArg = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Transfer model: a registered name (medmnist-resnet18, small-cnn, ...; see `vlm models`), "
                              "a 3D prefix (slices:NAME, acs:resnet18, 2.5d:resnet50, 3d:resnet18), vit3d, or any "
                              "timm 2D name.", show_default=False)] = None,
    size: TrainSizeOpt = None,
    image_size: ImageSizeOpt = None,
    interpolation: InterpolationOpt = None,
    recipe_name: RecipeOpt = None,
    weights: TrainWeightsOpt = None,
    pretrained: Annotated[Optional[bool], typer.Option(
        "--pretrained/--scratch", help="Start from pretrained weights or from scratch \\[default: pretrained when "
                                       "--weights is given, else scratch].", show_default=False)] = None,
    *,
    recipe: Recipe,
    augment_3d: Annotated[Optional[str], typer.Option(
        "--augment-3d", help="3D augmentations used with --augment: comma list of flip, rot90 \\[default: flip].",
        show_default=False)] = None,
    shape_transform: Annotated[Optional[bool], typer.Option(
        "--shape-transform/--no-shape-transform",
        help="MedMNIST's shape-dataset transform: voxels x U(0,1) in training, x 0.5 at evaluation \\[default: on for "
             "adrenalmnist3d and vesselmnist3d only].", show_default=False)] = None,
    control: RunControl,
    model_opt: Annotated[Optional[list[str]], typer.Option(
        "--model-opt", help="Architecture option KEY=VALUE, repeatable (e.g. slice_axis=1, head=mean, in_chans=1).",
        show_default=False)] = None,
    place: RunPlace,
    calibrate: CalibrateOpt = None,
    fmt: FormatOpt = "table",
) -> Output:
    """Train a transfer model (2D or 3D) on a dataset: best epoch by val AUC, test scored once.

    Unset options come from the model's training recipe (--recipe; `vlm models` lists the recipes);
    the record names the recipe and the options that overrode it. The run folder keeps
    best.safetensors, a resumable last.pt, epochs.jsonl and the test record. Ctrl-C keeps the last
    completed epoch: continue with --resume RUN_DIR.

    Example: [bold]vlm train breastmnist --model medmnist-resnet18 --epochs 2 --data-root ../shared/data/medmnist[/]
    Example: [bold]vlm train vesselmnist3d --model acs:resnet18 --augment affine --epochs 1 --batch-size 8 --data-root ../shared/data/medmnist --json[/]
    Example: [bold]vlm train retinamnist --model medmnist-resnet18 --image-size 224 --recipe medmnist --epochs 1 --batch-size 16 --data-root ../shared/data/medmnist[/]
    Example: [bold]vlm train --resume runs/*_breastmnist_train_small-cnn[/]
    """
    from vlm.calibrate import check_calibration
    from vlm.training import TrainConfig, parse_model_opts, train

    check_calibration(calibrate)
    opts = {**config_options(recipe, control, augment_3d=augment_3d, shape_transform=shape_transform,
                             image_size=image_size, interpolation=interpolation), **given(recipe=recipe_name)}
    model_opts = parse_model_opts(model_opt) if model_opt else None
    overrides = {**opts, **given(flag=flag.lower() if flag else None, model=model, size=size,
                                 weights=str(weights) if weights else None, pretrained=pretrained,
                                 model_opts=model_opts)}
    result = run_training(
        place, flag, model, overrides, fmt=fmt,
        usage="vlm train needs a dataset flag and --model NAME (or --resume RUN_DIR).",
        start=lambda bar: train(flag, model, config=TrainConfig(**opts), size=size or 28, weights=weights,
                                pretrained=pretrained, model_opts=model_opts, data_root=place.data_root,
                                download=place.download, runs_dir=place.runs_dir, log=place.log or (), progress=bar))
    rec = result.record
    return calibrate_after(training_output(result, f"{rec.dataset} · test · {rec.size}px · {rec.model} (trained)"),
                           result.run_dir, calibrate, place.data_root)


@command
def finetune_cmd(
    flag: TrainFlagArg = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Encoder: a VLM alias (biomedclip, clip-vit-b-32, plip, ...), an open_clip/transformers "
                              "name, or any timm name (image-only backbone).", show_default=False)] = None,
    weights: TrainWeightsOpt = None,
    mode: Annotated[Optional[str], typer.Option(
        "--mode", help="linear-probe (frozen, cached embeddings, L2 chosen on val), knn, full (tower + head) or "
                       "zs-init (head from the zero-shot classifier, then --zs-then) \\[default: linear-probe].",
        show_default=False)] = None,
    style: Annotated[Optional[str], typer.Option(
        "--style", help="zs-init: the prompt style that initialises the head \\[default: clip, else the first].",
        show_default=False)] = None,
    prompts: Annotated[Optional[Path], typer.Option(
        "--prompts", help="zs-init: a prompt-set YAML file \\[default: the shipped prompts/<flag>.yaml].",
        show_default=False)] = None,
    zs_then: Annotated[Optional[str], typer.Option(
        "--zs-then", help="zs-init: then full (fine-tune tower + head) or linear-probe (frozen; L2 pulls toward the "
                          "zero-shot head) \\[default: full].", show_default=False)] = None,
    k: Annotated[Optional[str], typer.Option(
        "--k", help="knn: neighbours, a number or auto (chosen on val AUC) \\[default: auto].", show_default=False)] = None,
    knn_weighting: Annotated[Optional[str], typer.Option(
        "--knn-weighting", help="knn: uniform votes or similarity (exp(cos/0.07)) weights \\[default: uniform].",
        show_default=False)] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="Image-embedding cache (linear-probe/knn) \\[default: $VLM_CACHE_DIR, else "
                            "~/.cache/medvlm/embeddings].", show_default=False)] = None,
    slice_axis: Annotated[Optional[int], typer.Option(
        "--slice-axis", help="3D (linear-probe/knn): slice axis 0/1/2 = D/H/W \\[default: 0].", show_default=False)] = None,
    pool: Annotated[Optional[str], typer.Option(
        "--pool", help="3D (linear-probe/knn): pool slice embeddings by mean or max \\[default: mean].",
        show_default=False)] = None,
    size: TrainSizeOpt = None,
    image_size: ImageSizeOpt = None,
    *,
    recipe: Recipe,
    control: RunControl,
    place: RunPlace,
    calibrate: CalibrateOpt = None,
    fmt: FormatOpt = "table",
) -> Output:
    """Vision-only fine-tuning of an image encoder with a linear head: linear-probe, knn, full or zs-init.

    linear-probe and knn run on cached embeddings (seconds after the first encoding; 3D via pooled
    slice embeddings). full and zs-init train with the `vlm train` loop (AdamW, cosine, tower at
    --backbone-lr 1e-5, head at --lr 1e-3, 10 epochs by default) and resume with --resume RUN_DIR.

    Example: [bold]vlm finetune breastmnist --model tf_efficientnet_lite0 --weights ../shared/weights/tf_efficientnet_lite0.safetensors --mode linear-probe --data-root ../shared/data/medmnist[/]
    Example: [bold]vlm finetune retinamnist --model ViT-B-32 --weights vitb32.pt --mode zs-init --style clip --epochs 1 --batch-size 16 --data-root ../shared/data/medmnist[/]
    """
    from vlm.calibrate import check_calibration
    from vlm.finetune import finetune, finetune_config

    check_calibration(calibrate)
    opts = config_options(recipe, control, image_size=image_size)
    k_value: Any = None if k is None else (k if k == "auto" else _int_or_error("--k", k))
    extra = given(k=k_value, knn_weighting=knn_weighting, style=style, prompts=str(prompts) if prompts else None,
                  zs_then=zs_then, cache_dir=str(cache_dir) if cache_dir else None, slice_axis=slice_axis, pool=pool)
    overrides = {**opts, **extra, **given(flag=flag.lower() if flag else None, model=model, mode=mode, size=size,
                                          weights=str(weights) if weights else None)}
    result = run_training(
        place, flag, model, overrides, fmt=fmt,
        usage="vlm finetune needs a dataset flag and --model ENCODER (or --resume RUN_DIR).",
        start=lambda bar: finetune(flag, model, mode=mode or "linear-probe", config=finetune_config(**opts),
                                   size=size or 28, weights=weights, data_root=place.data_root,
                                   download=place.download, runs_dir=place.runs_dir, log=place.log or (),
                                   progress=bar, embed_progress=bar.embed, **extra))
    rec = result.record
    title = f"{rec.dataset} · test · {rec.size}px · {rec.model} ({rec.method})"
    return calibrate_after(training_output(result, title), result.run_dir, calibrate, place.data_root)


def _int_or_error(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise VlmError(f"{name} takes a number or 'auto', got '{value}'.") from None
    return check_option("k", number, name)


@command
def models_cmd() -> Output:
    """List the registered transfer models and 3D prefixes (any timm 2D name works too), the encoder aliases and
    the training recipes.

    Example: [bold]vlm models --json[/]
    """
    from models.catalog import CATALOG  # the registry's names without importing torch/timm
    from vlm.encoders.aliases import list_aliases

    rows = [{"name": e.name + (":" if e.is_prefix else ""), "dims": e.dims, "description": e.description}
            for e in CATALOG]
    aliases = list_aliases()
    recipes = [{**r.describe(), "options": dict(r.options), "options_3d": dict(r.options_3d)} for r in RECIPES.values()]
    data = {"models": rows, "timm_fallback": "any timm 2D model name (e.g. resnet50, tf_efficientnet_lite0)",
            "encoders": aliases, "recipes": recipes}
    names = ("name", "backend", "target", "description")
    recipe_cols = ("name", "default_for", "summary", "source")
    return Output(data, [
        Table(columns("name", "dims", "description"), [[r["name"], r["dims"], r["description"]] for r in rows],
              title="transfer models (`vlm train --model`; any timm 2D name works too)"),
        Table(columns(*names), [[a[n] for n in names] for a in aliases],
              title="encoder aliases (`vlm zero-shot/finetune --model`; also open_clip, transformers and timm names)"),
        Table(columns(*recipe_cols), [[r[n] for n in recipe_cols] for r in recipes],
              title="training recipes (`vlm train --recipe`; explicit options override them)"),
    ])
