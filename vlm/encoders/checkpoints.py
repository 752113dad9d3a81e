"""Local weights files for encoders: checking, reading, fitting them to a model, and their ids.

Reading goes through the one checkpoint reader of the project, `models.weights.read_state_dict`
(safetensors or `torch.load(weights_only=True)`, wrapper keys and `module.` prefixes handled); its
`ModelError` becomes a `VlmError` with the same message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from vlm.errors import VlmError
from vlm.files import file_digest


def weights_file_id(path: str | os.PathLike) -> str:
    """The weights id of a local file: 'sha256:' + the first 16 hex digits of its sha256."""
    return f"sha256:{file_digest(path)[:16]}"


def check_weights_file(weights: str | os.PathLike | None) -> Path | None:
    """`weights` as an existing file's Path (None stays None); a VlmError when there is no such file."""
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        where = "" if path.parent.is_dir() else f" (folder {path.parent} does not exist either)"
        raise VlmError(f"Weights file {path} not found{where}.")
    return path


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in `path`, read by `models.weights.read_state_dict`; unreadable files are a VlmError."""
    from models.errors import ModelError  # imported here: `import vlm.encoders` must not build models/
    from models.weights import read_state_dict

    try:
        return read_state_dict(path)
    except ModelError as exc:
        raise VlmError(str(exc)) from None


def mismatch_message(target: str, source: Path, missing: Sequence[str], unexpected: Sequence[str],
                     detail: str = "") -> str:
    """'Weights SOURCE do not fit TARGET.' with a few missing / unexpected keys and `detail`."""
    parts = [f"Weights {source} do not fit {target}."]
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {', '.join(list(missing)[:4])}.")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(list(unexpected)[:4])}.")
    if detail:
        parts.append(detail)
    parts.append("Pass the --model the checkpoint was saved from.")
    return " ".join(parts)


def check_shapes(model: nn.Module, state: dict[str, torch.Tensor], target: str, source: Path) -> None:
    """A VlmError naming the first tensor of `state` whose shape differs from the model's."""
    own = model.state_dict()
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise VlmError(mismatch_message(target, source, [], [], f"{len(bad)} shape mismatch(es), e.g. {bad[0]}"))


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], target: str, source: Path,
                ignore_missing: Sequence[str] = ()) -> None:
    """Load `state` into `model`; any shape mismatch, missing key (but those ending in `ignore_missing`)
    or unexpected key is a VlmError naming them."""
    check_shapes(model, state, target, source)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(tuple(ignore_missing))]
    if missing or result.unexpected_keys:
        raise VlmError(mismatch_message(target, source, missing, result.unexpected_keys))
