"""Training: the one loop (`fit`) and `vlm train` (`train`), one job per module.

- `recipes`     named recipes (medmnist, slices-study, timm-finetune, medvit): option values and sources
- `config`      TrainConfig (the options), filled in from a recipe and checked against a task, `--model-opt` parsing
- `optim`       optimisers, head/backbone parameter groups, per-step LR schedules
- `pipeline`    uint8 batch -> model input (shape transform, augmentation), bf16 autocast, `predict`
- `checkpoint`  the run folder's files: spec.json, best.safetensors, last.pt (with RNG state), epochs.jsonl
- `loggers`     optional trackers: TensorBoard, MLflow, Weights & Biases
- `loop`        `fit`: train, select on val AUC, score test once; TrainEvent, TrainResult
- `distributed` data-parallel `fit` under torchrun: process group, sharding, gathers, synchronised BatchNorm
- `transfer`    `train`: a transfer model from the `models` registry for a dataset, then `fit`

Fine-tuning (`vlm.finetune`) builds on this package; resuming a run folder is `vlm.methods.resume`.
The names below load their module on first use, so `vlm.training.recipes` (torch-free) can be read
without importing torch (the CLI lists the recipes in its help).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "vlm.training.checkpoint": ("BEST_FILE", "EPOCHS_FILE", "LAST_FILE", "SPEC_FILE", "TrainingInterrupted",
                                "read_spec", "write_spec"),
    "vlm.training.config": ("OPTIMIZERS", "SCHEDULERS", "TrainConfig", "check_batch_size", "parse_model_opts"),
    "vlm.training.loggers": ("LOGGERS", "check_log"),
    "vlm.training.loop": ("TrainEvent", "TrainProgress", "TrainResult", "fit"),
    "vlm.training.optim": ("build_optimizer", "build_scheduler", "lr_factor", "param_groups"),
    "vlm.training.pipeline": ("InputPipeline", "autocast", "batch_starts", "predict", "uses_bf16"),
    "vlm.training.recipes": ("RECIPES", "Recipe", "default_recipe", "get_recipe", "recipe_names"),
    "vlm.training.transfer": ("check_model_dims", "fixed_input_size", "train"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'vlm.training' has no attribute '{name}'")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value
