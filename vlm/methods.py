"""Resume a run folder: `vlm train --resume` and `vlm finetune --resume`, above training and fine-tuning."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from vlm.errors import VlmError
from vlm.finetune import finetune
from vlm.training import TrainConfig, TrainProgress, TrainResult, read_spec, train
from vlm.training.config import option_names

# Options that may change when a run is resumed (they do not change what is computed on the CPU).
RESUME_FREE = ("device",)


def resume(
    run_dir: str | os.PathLike,
    *,
    overrides: dict[str, Any] | None = None,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    log: Iterable[str] = (),
    progress: TrainProgress | None = None,
    max_epochs_this_call: int | None = None,
) -> TrainResult:
    """Continue an interrupted `vlm train`/`vlm finetune` run from its `last.pt`, with its saved settings.

    `overrides` are the options the user gave again; any that differ from the saved ones (except
    `device`) raise a VlmError that lists them. `data_root` may point elsewhere.

    Example:
        >>> resume("runs/20250101-120000_breastmnist_train_small-cnn")   # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    spec = read_spec(run_dir)
    if (run_dir / "record.json").is_file():
        raise VlmError(f"{run_dir} already finished (it has a record.json); start a new run instead.")
    config = TrainConfig.from_dict(spec["config"])
    config = _apply_overrides(spec, config, overrides or {}, run_dir)
    root = data_root if data_root is not None else spec.get("data_root")
    if spec["entry"] == "finetune":
        return finetune(spec["flag"], spec["model"], mode=spec["mode"], config=config, size=spec["size"],
                        weights=spec.get("weights"), data_root=root, download=download, run_dir=run_dir,
                        log=log, progress=progress, max_epochs_this_call=max_epochs_this_call,
                        **spec.get("options", {}))
    return train(spec["flag"], spec["model"], config=config, size=spec["size"], weights=spec.get("weights"),
                 pretrained=spec.get("pretrained"), model_opts=spec.get("model_opts"), data_root=root,
                 download=download, run_dir=run_dir, log=log, progress=progress,
                 max_epochs_this_call=max_epochs_this_call)


def _apply_overrides(spec: dict[str, Any], config: TrainConfig, overrides: dict[str, Any], run_dir: Path) -> TrainConfig:
    conflicts = []
    config_names = option_names()
    top = {**spec, **spec.get("options", {})}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in config_names:
            saved = getattr(config, key)
            if key in RESUME_FREE:
                config = replace(config, **{key: value})
                continue
        elif key in top:
            saved = top[key]
        else:
            continue
        if not _same(value, saved):
            conflicts.append(f"--{key.replace('_', '-')} {value} (saved: {saved})")
    if conflicts:
        raise VlmError(f"--resume continues {run_dir.name} with its saved settings, and these options differ: "
                       f"{'; '.join(conflicts)}. Drop them, or start a new run without --resume.")
    return config


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Path) or isinstance(b, Path):
        return str(a) == str(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same(v, b.get(k)) for k, v in a.items())
    return a == b
