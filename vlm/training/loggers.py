"""Optional TensorBoard / Weights & Biases logging of a training run (only when installed and asked)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Iterable

from vlm.errors import VlmError
from vlm.training.config import check_choice

LOGGERS = ("tensorboard", "wandb")


def check_log(names: Iterable[str]) -> None:
    """Fail early when a logger is asked for but not installed."""
    for name in names:
        check_choice("logger", name, LOGGERS)
        if importlib.util.find_spec(name) is None:
            extra = " (then `wandb login`, or WANDB_MODE=offline)" if name == "wandb" else ""
            raise VlmError(f"--log {name} needs the {name} package: pip install {name}{extra}.")


class Loggers:
    """The loggers a run asked for: per-epoch scalars and the test AUC/ACC."""

    def __init__(self, names: Iterable[str], run_dir: Path, config: dict[str, Any]) -> None:
        self.tb = self.wandb = None
        check_log(names)
        names = set(names)
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if "wandb" in names:
            import wandb

            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "medvlm"), name=run_dir.name,
                                    id=run_dir.name.replace(":", "-")[:64], resume="allow", dir=str(run_dir),
                                    config=config)

    def epoch(self, row: dict[str, Any]) -> None:
        """Log the numbers of one epochs.jsonl row at step = its epoch."""
        step = row["epoch"]
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch" and v is not None}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def test(self, metrics: dict[str, Any]) -> None:
        """Log the test AUC and ACC."""
        if self.tb is not None:
            for k in ("auc", "acc"):
                if metrics.get(k) is not None:
                    self.tb.add_scalar(f"test_{k}", metrics[k], 0)
        if self.wandb is not None:
            self.wandb.summary.update({f"test_{k}": metrics.get(k) for k in ("auc", "acc")})

    def close(self) -> None:
        """Flush and close every logger."""
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
