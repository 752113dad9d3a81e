"""Training: the one loop (`fit`) and `vlm train` (`train`), one job per module.

- `config`      TrainConfig (the recipe), its validation against a task, choices, `--model-opt` parsing
- `optim`       optimisers, head/backbone parameter groups, per-step LR schedules
- `pipeline`    uint8 batch -> model input (shape transform, augmentation), bf16 autocast, `predict`
- `checkpoint`  the run folder's files: spec.json, best.safetensors, last.pt (with RNG state), epochs.jsonl
- `loggers`     optional TensorBoard / Weights & Biases logging
- `loop`        `fit`: train, select on val AUC, score test once; TrainEvent, TrainResult
- `distributed` data-parallel `fit` under torchrun: process group, sharding, gathers, synchronised BatchNorm
- `transfer`    `train`: a transfer model from the `models` registry for a dataset, then `fit`

Fine-tuning (`vlm.finetune`) builds on this package; resuming a run folder is `vlm.methods.resume`.
"""

from vlm.training.checkpoint import BEST_FILE, EPOCHS_FILE, LAST_FILE, SPEC_FILE, read_spec, write_spec
from vlm.training.config import OPTIMIZERS, SCHEDULERS, TrainConfig, check_batch_size, parse_model_opts
from vlm.training.loggers import LOGGERS, check_log
from vlm.training.loop import TrainEvent, TrainingInterrupted, TrainProgress, TrainResult, fit
from vlm.training.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from vlm.training.pipeline import InputPipeline, autocast, batch_starts, predict, uses_bf16
from vlm.training.transfer import check_model_dims, fixed_input_size, train

__all__ = [
    "BEST_FILE", "EPOCHS_FILE", "LAST_FILE", "LOGGERS", "OPTIMIZERS", "SCHEDULERS", "SPEC_FILE",
    "InputPipeline", "TrainConfig", "TrainEvent", "TrainProgress", "TrainResult", "TrainingInterrupted",
    "autocast", "batch_starts", "build_optimizer", "build_scheduler", "check_batch_size", "check_log",
    "check_model_dims", "fit", "fixed_input_size", "lr_factor", "param_groups", "parse_model_opts", "predict",
    "read_spec", "train", "uses_bf16", "write_spec",
]
