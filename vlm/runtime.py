"""Where and how reproducibly code runs: device resolution and seeding, shared by trainer and encoders."""

from __future__ import annotations

import random
import re

import numpy as np
import torch

from vlm.errors import VlmError

DEVICES = ("auto", "cpu", "cuda")


def check_device_name(name: str) -> None:
    """A VlmError unless `name` is auto, cpu, cuda or cuda:N (whether that GPU exists is not checked)."""
    if name not in DEVICES and not re.fullmatch(r"cuda:\d+", name):
        raise VlmError(f"Unknown device '{name}': choose auto, cpu, cuda or cuda:N.")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda'/'cuda:N' without that GPU is a VlmError."""
    name = str(name)
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        index = int(name.split(":")[1]) if ":" in name else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise VlmError(f"--device {name} was asked for, but torch sees no GPU of that index here. "
                           f"Use --device cpu or auto.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
