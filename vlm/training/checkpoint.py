"""The files of a run folder, written atomically: spec.json, best.safetensors, last.pt, epochs.jsonl.

    spec.json        what `train`/`finetune` built (dataset, model, weights, options): `--resume` reads it
    best.safetensors the weights of the best validation epoch
    last.pt          model, optimizer, scheduler, sampler/augmentation RNGs, the global RNG state (of
                     every rank under torchrun), epoch, best, history (every epoch): the resume point
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
from vlm.results import new_run_dir

SPEC_FILE = "spec.json"
BEST_FILE = "best.safetensors"
LAST_FILE = "last.pt"
EPOCHS_FILE = "epochs.jsonl"


# ----------------------------------------------------------------------------- spec.json
def create_run_dir(runs_dir: str | os.PathLike, name: str, spec: dict[str, Any]) -> Path:
    """A new run folder with its spec.json; under torchrun rank 0 creates it and tells the others."""
    from vlm.training.distributed import init_distributed

    ctx = init_distributed()
    run_dir = None
    if ctx.is_main:
        run_dir = new_run_dir(runs_dir, name)
        write_spec(run_dir, spec)
    return Path(ctx.broadcast(run_dir))


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
              state: dict[str, Any], config: dict[str, Any], rng_ranks: list[dict[str, Any]] | None = None) -> None:
    """The resume point: every state `restore_last` needs, plus the global RNG state, written atomically.

    `rng_ranks`: every rank's `rng_state()` under torchrun (rank 0's is also the file's "rng").
    """
    buf = io.BytesIO()
    torch.save({
        "model": state_dict_cpu(model), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
        "pipeline": pipeline.state_dict(), "rng": rng_ranks[0] if rng_ranks else rng_state(),
        "rng_ranks": rng_ranks or [], "state": state, "config": config,
    }, buf)
    atomic_write_bytes(path, buf.getvalue())


def restore_last(path: Path, *, model: nn.Module, optimizer: Any, scheduler: Any, sampler: Any,
                 pipeline: Any, rank: int = 0) -> dict[str, Any]:
    """Load a `save_last` file into the given objects and the global RNGs; returns the saved loop state.

    Rank r takes its own saved RNG state; a rank the file has none for (the run was saved by fewer
    processes) continues from rank 0's state reseeded with its rank, a stream of its own.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    sampler.load_state_dict(saved["sampler"])
    pipeline.load_state_dict(saved["pipeline"])
    ranks = saved.get("rng_ranks") or []
    _set_rng_state(ranks[rank] if rank < len(ranks) else saved["rng"])
    if rank >= max(len(ranks), 1):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,))) + rank)
    return saved["state"]


def write_epochs(path: Path, history: list[dict[str, Any]]) -> None:
    """epochs.jsonl: one JSON line per completed epoch."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in history))


# ----------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and initialised CUDA devices), Python and NumPy."""
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
