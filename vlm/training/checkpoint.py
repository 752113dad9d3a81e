"""The files of a run folder, written atomically: spec.json, best.safetensors, last.pt, epochs.jsonl.

    spec.json        what `train`/`finetune` built (dataset, model, weights, options): `--resume` reads it
    best.safetensors the weights of the best validation epoch; its metadata holds the sha256 of the tensor data
    last.pt          model, optimizer, scheduler, sampler/augmentation RNGs, the global RNG state (of
                     every rank under torchrun), epoch, best, history (every epoch): the resume point;
                     `CHECKPOINT_MAGIC` + sha256 + the `torch.save` bytes
    epochs.jsonl     one JSON line per epoch (loss, val AUC/ACC, LR, seconds)

Both checkpoints are verified on load: a file whose checksum does not match (changed or damaged after it
was written), a truncated file, a folder in its place or a missing one is a VlmError naming the file and
what to do, never a silent restart (`resume_point`). Files written before checksums existed (a plain
`torch.save` zip, safetensors without the digest) load unverified.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
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
CHECKPOINT_MAGIC = b"VLMCKPT1"  # then 32 bytes of sha256 over the rest: the torch.save payload
_DIGEST_KEY = "vlm_sha256"  # best.safetensors metadata: sha256 of the tensor data
_RESTART = "start a new run without --resume (this folder is left as it is)"


# ----------------------------------------------------------------------------- spec.json
def create_run_dir(runs_dir: str | os.PathLike, name: str, spec: dict[str, Any] | None) -> Path:
    """A new run folder with its spec.json (none when `spec` is None); under torchrun rank 0 creates it and
    tells the others. The spec keeps the record tags in force (an experiment's job key), so that a run resumed
    by hand still counts as its job."""
    from vlm.scoring import current_tags
    from vlm.training.distributed import init_distributed

    ctx = init_distributed()
    run_dir = None
    if ctx.is_main:
        run_dir = new_run_dir(runs_dir, name)
        if spec is not None:
            write_spec(run_dir, {**spec, **({"tags": current_tags()} if current_tags() else {})})
    return Path(ctx.broadcast(run_dir))


def discard_unstarted(run_dir: Path) -> None:
    """Remove a run folder made by this call when it holds no checkpoint, epoch or record (a run that failed
    before its first epoch was saved), so that failures leave no folders holding only spec.json."""
    if not any((run_dir / name).exists() for name in (LAST_FILE, BEST_FILE, EPOCHS_FILE, "record.json")):
        shutil.rmtree(run_dir, ignore_errors=True)


def write_spec(run_dir: Path, spec: dict[str, Any]) -> None:
    """Write the run's spec.json (what `--resume` rebuilds the run from)."""
    atomic_write_text(run_dir / SPEC_FILE, json.dumps(spec, indent=2, default=str))


def read_spec(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The spec.json of a run folder, checked against its schema (`vlm.schemas.RunSpec`); a VlmError when
    there is none, it is not JSON or it lacks what `--resume` rebuilds the run from."""
    from vlm.schemas import RunSpec, validate

    path = Path(run_dir) / SPEC_FILE
    if not Path(run_dir).is_dir():
        raise VlmError(f"{run_dir} is not a run folder; pass the folder that `vlm train`/`vlm finetune` created.")
    if not path.is_file():
        raise VlmError(f"{run_dir} is not a resumable run folder (no {SPEC_FILE}); pass the folder that "
                       f"`vlm train`/`vlm finetune` created.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VlmError(f"{path} is not valid JSON ({getattr(exc, 'msg', exc)}).") from None
    validate(RunSpec, data, str(path), hint=f"the run cannot be rebuilt from it; {_RESTART}")
    return data


def spec_entry(run_dir: Path) -> str:
    """The `entry` (train, finetune) of a run folder's spec.json, for the resume hint (train if unknown)."""
    try:
        return str(json.loads((run_dir / SPEC_FILE).read_text()).get("entry") or "train")
    except (OSError, ValueError, AttributeError):
        return "train"


# ----------------------------------------------------------------------------- stops
class TrainingInterrupted(VlmError):
    """Ctrl-C (exit code 130) or SIGTERM (143) during training: `last.pt` holds the last completed epoch; the
    message says how to resume."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def interrupted_error(run_dir: Path, saved_epoch: int, epochs: int, resume_hint: str,
                      exit_code: int = 130) -> TrainingInterrupted:
    """The Ctrl-C/SIGTERM error: where it stopped, what last.pt holds, and the command that continues."""
    done = f"last.pt holds epoch {saved_epoch}" if (run_dir / LAST_FILE).is_file() else "no epoch was completed"
    where = f"during epoch {saved_epoch + 1} of {epochs}" if saved_epoch < epochs else "while scoring the test split"
    return TrainingInterrupted(f"Interrupted {where} ({done}). Continue with: {resume_hint}", exit_code)


def non_finite_error(epoch: int, batch: int | None, run_dir: Path, saved_epoch: int, best_epoch: int) -> VlmError:
    """The error of a loss (or val scores) that became NaN/inf, naming the checkpoints kept."""
    where = f"epoch {epoch}" + (f", batch {batch}" if batch is not None else " (validation scores)")
    kept = (f"The last good checkpoint is {run_dir / LAST_FILE} (epoch {saved_epoch}) and the best is "
            f"{run_dir / BEST_FILE} (epoch {best_epoch})." if saved_epoch else "No epoch completed.")
    return VlmError(f"Training stopped: the loss became non-finite (NaN/inf) in {where}. {kept} "
                    f"Try a lower --lr, --loss ce, or --device cpu without bf16.")


# ----------------------------------------------------------------------------- weights
def state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy of the model's state dict."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _tensor_data(blob: bytes) -> bytes:
    """The tensor data of a safetensors file (what follows its 8-byte length and JSON header)."""
    return blob[8 + int.from_bytes(blob[:8], "little"):]


def save_best(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The model weights as safetensors with the sha256 of their data in the metadata, written atomically."""
    from safetensors.torch import save

    state = state_dict_cpu(model)
    digest = hashlib.sha256(_tensor_data(save(state))).hexdigest()  # the data does not depend on the metadata
    atomic_write_bytes(path, save(state, metadata={**(metadata or {}), _DIGEST_KEY: digest}))


def read_best(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a `save_best` file after checking their sha256; a VlmError naming the file when it is
    missing, unreadable, or changed since it was written."""
    from safetensors.torch import load

    if not path.is_file():
        raise VlmError(f"{path} is missing{' (a folder is in its place)' if path.is_dir() else ''}: the best "
                       f"epoch's weights are gone, so the test split cannot be scored with them; {_RESTART}.")
    blob = path.read_bytes()
    try:
        state = load(blob)
        meta = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")]).get("__metadata__") or {}
    except Exception as exc:  # noqa: BLE001 - any damage reads as "not a safetensors file"
        raise VlmError(f"{path} cannot be read ({type(exc).__name__}): it is truncated or not a safetensors "
                       f"file; {_RESTART}.") from None
    if _DIGEST_KEY in meta and hashlib.sha256(_tensor_data(blob)).hexdigest() != meta[_DIGEST_KEY]:
        raise VlmError(f"{path} is corrupt: its checksum does not match its contents (changed or damaged after it "
                       f"was written); {_RESTART}.")
    return state


def load_best(model: nn.Module, path: Path) -> None:
    """Load weights written by `save_best` (verified by `read_best`) strictly."""
    try:
        model.load_state_dict(read_best(path), strict=True)
    except RuntimeError as exc:
        raise VlmError(f"{path} holds the weights of another model ({str(exc).splitlines()[0]}).") from None


# ----------------------------------------------------------------------------- last.pt
def save_last(path: Path, *, model: nn.Module, optimizer: Any, scheduler: Any, sampler: Any, pipeline: Any,
              state: dict[str, Any], config: dict[str, Any], rng_ranks: list[dict[str, Any]] | None = None) -> None:
    """The resume point: every state `restore_last` needs, plus the global RNG state, checksummed, written
    atomically.

    `rng_ranks`: every rank's `rng_state()` under torchrun (rank 0's is also the file's "rng").
    """
    buf = io.BytesIO()
    torch.save({
        "model": state_dict_cpu(model), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
        "pipeline": pipeline.state_dict(), "rng": rng_ranks[0] if rng_ranks else rng_state(),
        "rng_ranks": rng_ranks or [], "state": state, "config": config,
    }, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, CHECKPOINT_MAGIC + hashlib.sha256(payload).digest() + payload)


def read_last(path: Path) -> dict[str, Any]:
    """The verified contents of a `save_last` file; a VlmError naming the file for a folder, a truncated or
    changed file (checksum), or one that is not a checkpoint of this tool."""
    if path.is_dir():
        raise VlmError(f"{path} is a folder, not a checkpoint file: the resume point is unreadable; move it away "
                       f"and put the run's last.pt back, or {_RESTART}.")
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise VlmError(f"{path} cannot be read ({exc.strerror}); {_RESTART}.") from None
    head = len(CHECKPOINT_MAGIC) + 32
    if blob.startswith(CHECKPOINT_MAGIC):
        payload = blob[head:]
        if len(blob) < head or hashlib.sha256(payload).digest() != blob[len(CHECKPOINT_MAGIC):head]:
            raise VlmError(f"{path} is corrupt: its checksum does not match its contents (truncated, changed or "
                           f"damaged after it was written), so it is not loaded; {_RESTART}.")
    elif blob.startswith(b"PK\x03\x04"):
        payload = blob  # written before checksums existed
    else:
        raise VlmError(f"{path} is not a last.pt of this tool ({'empty' if not blob else 'unknown format'}); "
                       f"{_RESTART}.")
    try:
        saved = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        missing = [k for k in ("model", "optimizer", "scheduler", "sampler", "pipeline", "rng", "state")
                   if k not in saved]
    except Exception as exc:  # noqa: BLE001 - a damaged pre-checksum file fails in many ways
        raise VlmError(f"{path} cannot be read ({type(exc).__name__}): it is truncated or damaged; "
                       f"{_RESTART}.") from None
    if missing:
        raise VlmError(f"{path} lacks {', '.join(missing)}: not a complete resume point; {_RESTART}.")
    return saved


def resume_point(run_dir: Path) -> dict[str, Any] | None:
    """What a run folder resumes from: the verified last.pt, or None when no epoch was completed (nothing to
    lose: the run starts at epoch 1). A missing last.pt beside completed epochs, or a missing or damaged best
    checkpoint, is a VlmError: resuming would overwrite them or score test with other weights."""
    last = run_dir / LAST_FILE
    if last.exists() or last.is_symlink():
        saved = read_last(last)
        best_epoch = saved["state"].get("best_epoch", 0)
        if best_epoch and not (run_dir / BEST_FILE).is_file():
            raise VlmError(f"{run_dir / BEST_FILE} (the weights of best epoch {best_epoch}) is missing: the run "
                           f"cannot pick its best epoch any more; put it back, or {_RESTART}.")
        if best_epoch:
            read_best(run_dir / BEST_FILE)
        return saved
    done = [name for name in (EPOCHS_FILE, BEST_FILE) if (run_dir / name).exists()]
    if done:
        raise VlmError(f"{last} is missing, but {run_dir} holds {' and '.join(done)} of completed epochs: resuming "
                       f"would start over and overwrite them. Put last.pt back, or {_RESTART}.")
    return None


def restore_last(saved: dict[str, Any], *, model: nn.Module, optimizer: Any, scheduler: Any, sampler: Any,
                 pipeline: Any, rank: int = 0, path: Path | None = None) -> dict[str, Any]:
    """Load a `read_last` payload into the given objects and the global RNGs; returns the saved loop state.

    Rank r takes its own saved RNG state; a rank the file has none for (the run was saved by fewer
    processes) continues from rank 0's state reseeded with its rank, a stream of its own.
    """
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        sampler.load_state_dict(saved["sampler"])
        pipeline.load_state_dict(saved["pipeline"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise VlmError(f"{path or LAST_FILE} does not fit this run's model or options "
                       f"({str(exc).splitlines()[0][:160]}); {_RESTART}.") from None
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
