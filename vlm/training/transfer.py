"""`vlm train`: build a transfer model from the `models` registry for a dataset and `fit` it.

Example:
    >>> result = train("breastmnist", "small-cnn", config=TrainConfig(epochs=3),
    ...                data_root="../shared/data/medmnist")                   # doctest: +SKIP
    >>> result.metrics.auc, result.run_dir                                     # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn

from vlm.data import load_splits
from vlm.errors import VlmError
from vlm.files import check_writable_folder
from vlm.preprocess import Preprocess, medmnist_preprocess
from vlm.runtime import seed_everything
from vlm.tasks import TaskSpec, get_task
from vlm.training.config import TrainConfig, check_batch_size
from vlm.training.loggers import check_log
from vlm.training.loop import TrainProgress, TrainResult, fit
from vlm.training.recipes import default_recipe, recipe_model_opts


def check_model_dims(model_name: str, task: TaskSpec) -> None:
    """A 2D model on a 3D dataset (or the reverse) -> a VlmError naming the prefix to use."""
    from models import list_models, model_dims

    dims = model_dims(model_name)
    if dims == "3d" and not task.is_3d:
        prefix, _, base = model_name.partition(":")
        base = base if base and "+" not in base and prefix in {e.name for e in list_models()} else None
        hint = f" Use the 2D model '{base}' itself" if base else " Use a 2D model (any timm name, medmnist-resnet18, small-cnn)"
        raise VlmError(f"{model_name} is a 3D model and {task.flag} is 2D.{hint}.")
    if dims == "2d" and task.is_3d:
        raise VlmError(f"{model_name} is a 2D model and {task.flag} is 3D: use slices:{model_name} (the 2D model "
                       f"applied slice by slice, its 2D weights kept), or a 3D model: acs:resnet18, 2.5d:resnet18, "
                       f"3d:resnet18 (also resnet50), vit3d or acs:resnet18+vit3d (see `vlm models`).")


def fixed_input_size(model: nn.Module) -> int | None:
    """The input size a 2D model requires (e.g. 224 for a ViT-224 without dynamic size), when it has one.

    Models that take any size (CNNs, even with a 224 px pretrained config) return None: they train at
    the dataset's native size unless --image-size says otherwise.
    """
    try:
        from models import fixed_input_size as is_fixed
        from models import input_size
    except ImportError:
        return None
    try:
        return input_size(model) if is_fixed(model) else None
    except Exception:  # noqa: BLE001 - not a timm model
        return None


@dataclass
class TransferModel:
    """A model built for a dataset, with the preprocessing and config it trains with."""

    model: nn.Module
    preprocess: Preprocess
    config: TrainConfig  # image_size set to the model's fixed input size when it has one
    model_opts: dict[str, Any]  # the architecture options as recorded (in_chans included)


def build_transfer_model(model_name: str, task: TaskSpec, config: TrainConfig, *, size: int, in_chans: int,
                         pretrained: bool, weights: str | None, model_opts: dict[str, Any]) -> TransferModel:
    """Seed and create the model (channels-last for 2D), and the MedMNIST preprocessing at the size it takes.

    The slices model upsamples each slice itself (`--image-size` becomes its `image_size` option); a
    2D model with a fixed input size gets images resized to it.
    """
    from models import create_model

    model_opts = dict(model_opts)
    resize = config.image_size  # the size the input pipeline resizes images or volumes to
    if model_name.partition(":")[0] == "slices" and config.image_size is not None:
        # Resizing the volume would change its slice count.
        if model_opts.setdefault("image_size", config.image_size) != config.image_size:
            raise VlmError(f"--image-size {config.image_size} and --model-opt image_size={model_opts['image_size']} "
                           "disagree: give one of them.")
        resize = None

    seed_everything(config.seed)
    model = create_model(model_name, task.num_classes, in_chans=in_chans, pretrained=pretrained, weights=weights,
                         **model_opts)
    if not task.is_3d:
        model = model.to(memory_format=torch.channels_last)  # see vlm.preprocess.channels_last
    fixed = None if task.is_3d else fixed_input_size(model)
    if fixed is not None and config.image_size not in (None, fixed):
        raise VlmError(f"{model_name} takes {fixed}×{fixed} images only, not --image-size {config.image_size}: leave "
                       f"--image-size out (images are then resized to {fixed}), or build the model for that size "
                       f"with --model-opt img_size={config.image_size}.")
    if fixed is not None and config.image_size is None and fixed != size:
        resize = fixed
        config = replace(config, image_size=fixed)
    preprocess = medmnist_preprocess(resize, rgb=in_chans == 3, interpolation=config.interpolation,
                                     normalize=config.normalize)
    return TransferModel(model=model, preprocess=preprocess, config=config,
                         model_opts={**model_opts, "in_chans": in_chans})


def train(
    flag: str,
    model_name: str,
    *,
    config: TrainConfig | None = None,
    size: int = 28,
    weights: str | os.PathLike | None = None,
    pretrained: bool | None = None,
    model_opts: dict[str, Any] | None = None,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    runs_dir: str | os.PathLike = "runs",
    run_dir: str | os.PathLike | None = None,
    log: Iterable[str] = (),
    progress: TrainProgress | None = None,
    max_epochs_this_call: int | None = None,
) -> TrainResult:
    """`vlm train`: build a transfer model from the registry for a dataset and `fit` it.

    Args:
        flag: dataset flag (2D or 3D).
        model_name: a registered name, `PREFIX:BASE` (3D: slices:, acs:, 2.5d:, 3d:), or any timm 2D name.
        config: training options; unset ones come from `config.recipe`, by default the model's recipe
            (`vlm.training.recipes`: medmnist for MedMNIST's ResNets and acs:/2.5d:/3d:, slices-study for
            slices:, medvit for medvit_*, timm-finetune otherwise).
        size: the dataset file's image size (28/64/128/224; 3D 28/64).
        weights: a local checkpoint loaded into the backbone (the head is re-initialised).
        pretrained: start from pretrained weights; default: True when `weights` is given, else from scratch.
        model_opts: architecture keyword arguments (e.g. `{"slice_axis": 1}`) over the recipe's; `in_chans=1`
            feeds grey images as one channel (default: 3, grey replicated to RGB as MedMNIST's as_rgb;
            the medmnist recipe's 3D default: 1).
        run_dir: an existing run folder to continue (use `vlm.methods.resume`), else a new one under `runs_dir`.

    Example:
        >>> train("vesselmnist3d", "acs:resnet18", config=TrainConfig(epochs=5))   # doctest: +SKIP
    """
    config = config or TrainConfig()
    task = get_task(flag)
    task.check_size(size)
    check_model_dims(model_name, task)
    if run_dir is None:
        check_writable_folder(runs_dir, "Runs folder")
    fresh = config.recipe_overrides is None  # a new run (a resumed one keeps its recorded overrides)
    config = replace(config, recipe=config.recipe or default_recipe(model_name)).resolved(task)
    check_log(log)
    model_opts, replaced = recipe_model_opts(config.recipe, model_name, task.is_3d, config.image_size or size,
                                             dict(model_opts or {}))
    if fresh and replaced:
        config = replace(config, recipe_overrides=[*config.recipe_overrides, *replaced])
    in_chans = int(model_opts.pop("in_chans", 3))
    if in_chans not in (1, 3) or (in_chans == 1 and task.n_channels == 3):
        raise VlmError(f"in_chans={in_chans} does not fit {task.flag} ({task.n_channels} channel(s)); use 3.")
    weights = str(weights) if weights is not None else None
    if weights is not None and not Path(weights).is_file():
        raise VlmError(f"Weights file {weights} not found.")
    pretrained = weights is not None if pretrained is None else pretrained
    train_s, val_s, test_s = load_splits(task, size, data_root, download)
    check_batch_size(config.batch_size, train_s)
    built = build_transfer_model(model_name, task, config, size=size, in_chans=in_chans, pretrained=pretrained,
                                 weights=weights, model_opts=model_opts)
    config = built.config
    spec = {"entry": "train", "flag": task.flag, "model": model_name, "size": size, "weights": weights,
            "pretrained": pretrained, "model_opts": built.model_opts,
            "data_root": str(data_root) if data_root is not None else None, "config": config.to_dict()}
    return fit(built.model, train_s, val_s, test_s, config, model_name=model_name, preprocess=built.preprocess,
               run_dir=run_dir, runs_dir=runs_dir, spec=spec, method="train",
               weights_id=_weights_id(weights, pretrained),
               extra_config={"model_opts": built.model_opts, "pretrained": pretrained, "weights": weights,
                             "size": size},
               log=log, progress=progress, max_epochs_this_call=max_epochs_this_call)


def _weights_id(weights: str | None, pretrained: bool) -> str | None:
    if weights is not None:
        return Path(weights).name
    return "pretrained" if pretrained else "scratch"
