"""Shared fixtures: synthetic MedMNIST-format files, the optional real files in ../shared, encoder weights
built offline, and the scored runs the figure tests plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vlm.data import file_name
from vlm.tasks import get_task

torch.set_num_threads(1)  # tiny test models run fastest (and deterministically) on one thread

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data" / "medmnist"
SHARED_WEIGHTS = SHARED / "weights"

needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data/medmnist not present")
needs_shared_weights = pytest.mark.skipif(not SHARED_WEIGHTS.is_dir(), reason="../shared/weights not present")

# One dataset per task kind (and 3D), small enough to write in milliseconds.
SYNTHETIC = {
    "breastmnist": "binary",
    "pathmnist": "multi-class",
    "chestmnist": "multi-label",
    "retinamnist": "ordinal",
    "vesselmnist3d": "binary 3D",
}


def write_synthetic(root: Path, flag: str, size: int = 28, n: tuple[int, int, int] = (40, 12, 20), seed: int = 0,
                    separable: bool = False) -> Path:
    """Write `flag`'s file in MedMNIST's exact format: grey (N,H,W), colour (N,H,W,3), 3D (N,D,H,W), uint8.

    Labels are (N,1) uint8 (multi-label: (N,L)). With `separable`, a class's images are brighter in
    proportion to the class index, so a model can learn them.
    """
    task = get_task(flag)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        k = task.num_classes
        if task.kind == "multi-label":
            labels = (rng.random((count, k)) < 0.3).astype(np.uint8)
            level = labels.mean(axis=1)
        else:
            labels = (np.arange(count) % k).astype(np.uint8)[:, None]
            rng.shuffle(labels)
            level = labels[:, 0] / max(k - 1, 1)
        shape = (count,) + ((size,) * 3 if task.is_3d else (size, size)) + ((3,) if task.n_channels == 3 else ())
        noise = rng.integers(0, 256, size=shape)
        if separable:
            base = (level * 200).reshape((count,) + (1,) * (len(shape) - 1))
            noise = base + noise * 0.2
        arrays[f"{split}_images"] = np.clip(noise, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    path = root / file_name(task, size)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A temp data root with one small synthetic file per task kind (28 px)."""
    for flag in SYNTHETIC:
        write_synthetic(tmp_path, flag)
    return tmp_path


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


# ----------------------------------------------------------------------------- encoders (zero-shot and CLI tests)
@pytest.fixture
def offline(monkeypatch):
    """No hub downloads: HF_HUB_OFFLINE=1 (modules that load encoders use it with `pytest.mark.usefixtures`)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def vitb32_weights(tmp_path_factory) -> Path:
    """A random-initialised ViT-B-32 state dict with logit_scale = log(100) (as in the released CLIPs)."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))
    path = tmp_path_factory.mktemp("vitb32") / "vitb32.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny_oc_weights(tmp_path_factory) -> tuple[str, Path]:
    import open_clip

    from fixtures.tiny_models import tiny_open_clip_config

    name = tiny_open_clip_config(tmp_path_factory.mktemp("zs_configs"), "medvlm-zs-tiny")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("zs_weights") / "tiny.pt"
    torch.save(open_clip.create_model(name, pretrained=None).state_dict(), path)
    return name, path


# ----------------------------------------------------------------------------- figures
def write_bench(base: Path) -> dict:
    """Synthetic data files in base/data and scored runs in base/runs: binary (2 seeds), multi-class, multi-label,
    zero-shot styles (random scores, 30 bootstrap rounds)."""
    from vlm.data import load_split
    from vlm.scoring import record_run, score_split

    root, runs = base / "data", base / "runs"
    root.mkdir()
    for flag in SYNTHETIC:
        write_synthetic(root, flag)
    out = {"root": root, "runs": runs, "base": base}

    def run(flag, seed, **kw):
        data = load_split(flag, "test", 28, root)
        gen = torch.Generator().manual_seed(seed)
        s = torch.rand(len(data), data.task.num_classes, generator=gen, dtype=torch.float64)
        if data.task.kind != "multi-label":
            s = s / s.sum(1, keepdim=True)
        return record_run(data, s, score_split(data, s, n_bootstrap=30), runs_dir=runs, seed=seed, **kw)

    out["binary"] = [run("breastmnist", s, method="train", model="tiny") for s in (0, 1)]
    out["multiclass"] = run("pathmnist", 0, method="train", model="tiny")
    out["multilabel"] = run("chestmnist", 0, method="train", model="tiny")
    out["zeroshot"] = [run("breastmnist", i, method="zero-shot", model="ViT-B-32", config={"style": style})
                       for i, style in enumerate(("clip", "plain", "radiology"))]
    return out


@pytest.fixture(scope="session")
def bench(tmp_path_factory):
    """`write_bench`'s data and runs, shared by the figure tests."""
    return write_bench(tmp_path_factory.mktemp("plots"))
