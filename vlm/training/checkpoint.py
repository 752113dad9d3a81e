"""The files of a run folder, written atomically: spec.json, best.safetensors, last.pt, epochs.jsonl.

    spec.json        what `train`/`finetune` built (dataset, model, weights, options): `--resume` reads it
    best.safetensors the weights of the best validation epoch
    last.pt          model, optimizer, scheduler, sampler/augmentation RNGs, the global RNG state, epoch,
                     best, history (every epoch): the resume point
    epochs.jsonl     one JSON line per epoch (loss, val AUC/ACC, LR, seconds)
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from vlm.errors import VlmError
from vlm.files import atomic_write_bytes, atomic_write_text

SPEC_FILE = "spec.json"
BEST_FILE = "best.safetensors"
LAST_FILE = "last.pt"
EPOCHS_FILE = "epochs.jsonl"


# ----------------------------------------------------------------------------- spec.json
def write_spec(run_dir: Path, spec: dict[str, Any]) -> None:
    """Write the run's spec.json (what `--resume` rebuilds the run from)."""
    atomic_write_text(run_dir / SPEC_FILE, json.dumps(spec, indent=2, default=str))


def read_spec(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The spec.json of a run folder (VlmError when there is none or it is not JSON)."""
    path = Path(run_dir) / SPEC_FILE
    if not path.is_file():
        raise VlmError(f"{run_dir} is not a resumable run folder (no {SPEC_FILE}); pass the folder that "
                       f"`vlm train`/`vlm finetune` created.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VlmError(f"{path} is not valid JSON ({exc.msg}).") from None


# ----------------------------------------------------------------------------- weights
def state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy of the model's state dict."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_best(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The model weights as safetensors, written atomically."""
    from safetensors.torch import save

    atomic_write_bytes(path, save(state_dict_cpu(model), metadata=metadata))


def load_best(model: nn.Module, path: Path) -> None:
    """Load weights written by `save_best` (strictly)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- last.pt
def save_last(path: Path, *, model: nn.Module, optimizer: Any, scheduler: Any, sampler: Any, pipeline: Any,
              state: dict[str, Any], config: dict[str, Any]) -> None:
    """The resume point: every state `restore_last` needs, plus the global RNG state, written atomically."""
    buf = io.BytesIO()
    torch.save({
        "model": state_dict_cpu(model), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
        "pipeline": pipeline.state_dict(), "rng": _rng_state(), "state": state, "config": config,
    }, buf)
    atomic_write_bytes(path, buf.getvalue())


def restore_last(path: Path, *, model: nn.Module, optimizer: Any, scheduler: Any, sampler: Any,
                 pipeline: Any) -> dict[str, Any]:
    """Load a `save_last` file into the given objects and the global RNGs; returns the saved loop state."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    sampler.load_state_dict(saved["sampler"])
    pipeline.load_state_dict(saved["pipeline"])
    _set_rng_state(saved["rng"])
    return saved["state"]


def write_epochs(path: Path, history: list[dict[str, Any]]) -> None:
    """epochs.jsonl: one JSON line per completed epoch."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in history))


# ----------------------------------------------------------------------------- RNG state
def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # another GPU count: the CPU-only guarantee still holds
            pass


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
