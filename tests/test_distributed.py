"""Data-parallel training (`vlm.training.distributed`): 2 gloo ranks on the CPU, tiny models, synthetic data.

The two ranks are started once per module (`ranks` fixture: spawned processes that join one gloo
process group through the environment variables torchrun sets, then run the jobs they are sent), so
that each test pays for its own work, not for two fresh interpreters importing torch.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn

from conftest import write_synthetic
from vlm.augment import Augment2D, Augment3D, AugMix2D, ShapeTransform
from vlm.data import Split, load_splits
from vlm.errors import VlmError
from vlm.evaluate import evaluate
from vlm.sampling import EpochSampler
from vlm.tasks import get_task
from vlm.training import LAST_FILE, TrainConfig, batch_starts, fit
from vlm.training.checkpoint import read_last
from vlm.training.distributed import check_global_batch, init_distributed, shard_range

TINY = dict(epochs=2, batch_size=16, eval_batch_size=8, n_bootstrap=20, device="cpu")
RUN = dict(TINY, augment="affine")  # the DDP-against-one-process runs: augmentation drawn for the global batch
# A DDP run and a one-process run with the same global batch differ by float rounding only (the
# gradient is summed in another order; synchronised BatchNorm statistics are float32 sums): 1e-7 here.
# Not so for a parameter whose exact gradient is 0, such as a convolution bias just before BatchNorm:
# Adam turns its rounding-noise gradients into steps of up to lr, and the two runs then part by ~1e-4.
SCORE_ATOL = 1e-5
JOB_TIMEOUT = 120


# ----------------------------------------------------------------------------- the two ranks
def _serve(rank: int, world: int, port: int, jobs: Any, results: Any) -> None:
    """A rank: join the process group, then run fn(rank, *args) for every job until None arrives."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import medmnist  # noqa: F401 - the slow imports (sklearn, pandas, timm, DDP) once, here, not in a test
    import timm.layers  # noqa: F401
    import vlm.scoring  # noqa: F401
    from torch.nn.parallel import DistributedDataParallel  # noqa: F401

    init_distributed()
    while (job := jobs.get()) is not None:
        fn, args = job
        try:
            results.put((rank, True, fn(rank, *args)))
        except BaseException:  # noqa: BLE001 - the traceback goes to the test
            results.put((rank, False, traceback.format_exc()))
    os._exit(0)  # skip the interpreter's slow teardown


class Ranks:
    """Two gloo ranks in spawned processes; `run(fn, *args)` returns fn(rank, *args) of each, in rank order."""

    def __init__(self, world: int = 2) -> None:
        context = mp.get_context("spawn")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.jobs = [context.Queue() for _ in range(world)]
        self.results = context.Queue()
        self.procs = [context.Process(target=_serve, args=(r, world, port, self.jobs[r], self.results), daemon=True)
                      for r in range(world)]
        for p in self.procs:
            p.start()

    def run(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        if not all(p.is_alive() for p in self.procs):
            raise AssertionError("the ranks stopped after an earlier failure")
        for q in self.jobs:
            q.put((fn, args))
        out: dict[int, Any] = {}
        deadline = time.monotonic() + JOB_TIMEOUT
        while len(out) < len(self.procs):
            try:
                rank, ok, value = self.results.get(timeout=1)
            except queue.Empty:
                if time.monotonic() > deadline or not all(p.is_alive() for p in self.procs):
                    self.close()
                    raise AssertionError(f"a rank died or did not answer within {JOB_TIMEOUT} s") from None
                continue
            if not ok:
                self.close()  # the other rank may wait in a collective forever
                raise AssertionError(f"rank {rank} failed:\n{value}")
            out[rank] = value
        return [out[r] for r in sorted(out)]

    def close(self) -> None:
        for q, p in zip(self.jobs, self.procs):
            if p.is_alive():
                q.put(None)
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()


def _rank(rank: int) -> int:
    return rank


@pytest.fixture(scope="module")
def ranks():
    """The two ranks, up and in their process group (start-up counts as the first test's setup)."""
    pool = Ranks()
    assert pool.run(_rank) == [0, 1]
    yield pool
    pool.close()


# ----------------------------------------------------------------------------- without processes
def test_shards_are_contiguous_and_cover_every_row():
    for n in (1, 2, 7, 16, 37):
        for world in (1, 2, 3):
            ranges = [shard_range(n, r, world) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            assert [hi - lo for lo, hi in ranges] == [len(p) for p in torch.arange(n).tensor_split(world)]


def test_global_batch_must_divide_over_the_ranks():
    check_global_batch(64, 2)
    with pytest.raises(VlmError, match="--batch-size 63 is the global batch.*use 62 or 64"):
        check_global_batch(63, 2)
    assert batch_starts(33, 16, world_size=2) == [0, 16]  # a trailing batch of < 2 rows per rank is dropped
    assert batch_starts(36, 16, world_size=2) == [0, 16, 32]


@pytest.mark.parametrize("make, shape, as_float", [
    (lambda: Augment2D(seed=3), (7, 3, 16, 16), True),
    (lambda: Augment3D(("flip", "rot90"), seed=3), (7, 1, 8, 8, 8), True),
    (lambda: ShapeTransform(seed=3).train, (7, 1, 8, 8, 8), True),
    (lambda: AugMix2D(seed=3), (7, 3, 16, 16), False),
], ids=["affine-2d", "flip-rot90-3d", "shape-transform", "augmix"])
def test_a_ranks_part_of_a_batch_is_augmented_as_one_process_augments_it(make, shape, as_float):
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x = x.float() / 255 if as_float else x
    whole = make()(x)
    parts = [make()(x[lo:hi], (lo, 7)) for lo, hi in ((0, 4), (4, 7))]  # each rank has its own augmenter
    assert torch.equal(torch.cat(parts), whole)


# ----------------------------------------------------------------------------- gather
def _gather_worker(rank: int, scores: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    ctx = init_distributed()
    lo, hi = ctx.shard(len(scores))
    gathered = ctx.gather_rows(scores[lo:hi].clone(), len(scores))
    metrics = evaluate("multi-class", labels, gathered, n_bootstrap=50, seed=3)
    return {"gathered": gathered, "metrics": metrics.to_dict(), "rows": (lo, hi)}


def test_gather_returns_exactly_the_rows_in_order_and_the_same_metrics(ranks):
    g = torch.Generator().manual_seed(0)
    n = 37  # 19 + 18 rows: unequal parts, padded for all_gather and trimmed
    scores = torch.softmax(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 3, (n, 1), generator=g)
    expected = evaluate("multi-class", labels, scores, n_bootstrap=50, seed=3).to_dict()
    out = ranks.run(_gather_worker, scores, labels)
    assert [r["rows"] for r in out] == [(0, 19), (19, 37)]
    for r in out:
        assert torch.equal(r["gathered"], scores)
        assert r["metrics"] == expected


# ----------------------------------------------------------------------------- synchronised BatchNorm
def _syncbn_worker(rank: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
    from vlm.training.distributed import sync_batchnorm

    ctx = init_distributed()
    bn, layers = sync_batchnorm(_norms(), torch.device("cpu"))
    lo, hi = ctx.shard(len(x))
    part = x[lo:hi].clone().requires_grad_(True)
    y = bn(part)
    (y * torch.arange(1.0, 4.0).view(1, 3, 1, 1)).sum().backward()
    weight_grad = ctx.all_sum(bn[1].weight.grad.clone())  # bn[0].weight: 0 in exact arithmetic (bn[1] rescales)
    return {"y": ctx.gather_rows(y.detach(), len(x)), "x_grad": ctx.gather_rows(part.grad, len(x)),
            "w_grad": weight_grad, "running_var": torch.stack([bn[0].running_var, bn[1].running_var]),
            "layers": layers}


def _norms() -> nn.Module:
    """torch's BatchNorm2d and timm's BatchNormAct2d (norm, then ReLU)."""
    from timm.layers import BatchNormAct2d

    return nn.Sequential(nn.BatchNorm2d(3), BatchNormAct2d(3, act_layer=nn.ReLU))


def test_gloo_sync_batchnorm_equals_batchnorm_of_the_global_batch(ranks):
    x = torch.randn(7, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 3 + 1
    ref = _norms()
    xr = x.clone().requires_grad_(True)
    y = ref(xr)
    (y * torch.arange(1.0, 4.0).view(1, 3, 1, 1)).sum().backward()
    for r in ranks.run(_syncbn_worker, x):
        assert r["layers"] == 2
        torch.testing.assert_close(r["y"], y.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r["x_grad"], xr.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r["w_grad"], ref[1].weight.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r["running_var"], torch.stack([ref[0].running_var, ref[1].running_var]),
                                   atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- sharding of the epoch order
class _Recorder(nn.Module):
    """Reads back the row index written into pixels (0, 0) and (0, 1) of every training image."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.seen: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            u = ((x[:, 0, 0, :2] * 0.5 + 0.5) * 255).round().long()  # undo MedMNIST's (x - 0.5) / 0.5
            self.seen.append((u[:, 0] * 256 + u[:, 1]).tolist())
        return self.lin(x.mean(dim=(2, 3)))


def _indexed_splits(n_train: int) -> tuple[Split, Split, Split]:
    task = get_task("breastmnist")
    out = []
    for name, n in (("train", n_train), ("val", 12), ("test", 10)):
        images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
        images[:, 0, 0, 0] = torch.arange(n) // 256
        images[:, 0, 0, 1] = torch.arange(n) % 256
        out.append(Split(images, (torch.arange(n) % 2)[:, None], task, name, 28))
    return tuple(out)


def _shard_worker(rank: int, runs: str) -> list[list[int]]:
    torch.manual_seed(0)
    model = _Recorder()
    fit(model, *_indexed_splits(45), TrainConfig(**TINY), model_name="recorder", runs_dir=runs)
    return model.seen


def test_each_rank_trains_its_part_of_every_global_batch_once_per_epoch(ranks, tmp_path):
    seen = ranks.run(_shard_worker, str(tmp_path))
    sampler = EpochSampler("none", get_task("breastmnist"), torch.zeros(45, 1, dtype=torch.long), seed=0)
    starts = batch_starts(45, 16, 2)  # 16, 16 and a last batch of 13 rows: 7 + 6
    for epoch in range(2):
        order = sampler.epoch_indices()
        batches = slice(epoch * len(starts), (epoch + 1) * len(starts))
        for start, part0, part1 in zip(starts, seen[0][batches], seen[1][batches]):
            assert part0 + part1 == order[start:start + 16].tolist()
            assert abs(len(part0) - len(part1)) <= 1
        assert sorted(sum(seen[0][batches] + seen[1][batches], [])) == list(range(45))


# ----------------------------------------------------------------------------- a whole run
def _bn_net() -> nn.Module:
    """A tiny CNN with BatchNorm (no bias before it: see SCORE_ATOL)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def _splits(data_root: Path) -> tuple[Split, Split, Split]:
    return load_splits(get_task("breastmnist"), 28, data_root)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_synthetic(root, "breastmnist", n=(46, 14, 21))  # last batch 14 rows: 7 + 7; test 11 + 10
    return root


@pytest.fixture(scope="module")
def one_process(data_root, tmp_path_factory) -> Any:
    """The one-process run the DDP runs are compared with."""
    return fit(_bn_net(), *_splits(data_root), TrainConfig(**RUN), model_name="bn-net",
               runs_dir=tmp_path_factory.mktemp("runs1"))


def _run_worker(rank: int, data_root: Path, runs: str, epochs_this_call: int | None) -> dict[str, Any]:
    """A DDP fit; on rank 1 every file or folder created (vlm.files writes through mkstemp) is recorded."""
    writes: list[str] = []
    mkstemp, mkdir = tempfile.mkstemp, os.mkdir

    def recording(create: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            writes.append(str(args[0] if args else kwargs.get("dir")))
            return create(*args, **kwargs)
        return call

    if rank:
        tempfile.mkstemp, os.mkdir = recording(mkstemp), recording(mkdir)
    try:
        result = fit(_bn_net(), *_splits(data_root), TrainConfig(**RUN), model_name="bn-net", runs_dir=runs,
                     max_epochs_this_call=epochs_this_call)
    finally:
        tempfile.mkstemp, os.mkdir = mkstemp, mkdir
    return {"writes": writes, "metrics": result.metrics, "run_dir": result.run_dir, "finished": result.finished}


def test_ddp_run_writes_once_from_rank_0_and_matches_one_process(ranks, data_root, one_process, tmp_path):
    runs = tmp_path / "runs"
    out = ranks.run(_run_worker, data_root, str(runs), None)
    assert out[1]["writes"] == []
    (folder,) = runs.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.safetensors", "epochs.jsonl", "last.pt", "logits.npy", "record.json", "scores.npy", "val_logits.npy"]
    record = json.loads((folder / "record.json").read_text())
    assert record["config"]["distributed"] == {"world_size": 2, "backend": "gloo", "sync_batchnorm": True}
    assert record["metrics"]["n"] == 21
    assert out[0]["run_dir"] == out[1]["run_dir"] == folder
    assert out[0]["metrics"].to_dict() == out[1]["metrics"].to_dict()
    ddp_scores = torch.from_numpy(np.load(folder / "scores.npy"))
    ref_scores = torch.from_numpy(np.load(Path(one_process.run_dir) / "scores.npy"))
    torch.testing.assert_close(ddp_scores, ref_scores, atol=SCORE_ATOL, rtol=0)
    assert out[0]["metrics"].auc == pytest.approx(one_process.metrics.auc, abs=1e-6)
    last = json.loads((folder / "epochs.jsonl").read_text().splitlines()[-1])
    assert last["train_loss"] == pytest.approx(one_process.history[-1]["train_loss"], abs=1e-5)


def test_ddp_run_resumes_in_one_process(ranks, data_root, one_process, tmp_path):
    runs = tmp_path / "runs"
    out = ranks.run(_run_worker, data_root, str(runs), 1)
    assert not out[0]["finished"]
    (folder,) = runs.iterdir()
    saved = read_last(folder / LAST_FILE)
    assert len(saved["rng_ranks"]) == 2 and not any(k.startswith("module.") for k in saved["model"])
    resumed = fit(_bn_net(), *_splits(data_root), TrainConfig(**RUN), model_name="bn-net", run_dir=folder)
    assert resumed.finished and resumed.epochs_run == 2
    assert resumed.metrics.auc == pytest.approx(one_process.metrics.auc, abs=1e-6)
    assert [h["val_auc"] for h in resumed.history] == pytest.approx([h["val_auc"] for h in one_process.history],
                                                                   abs=1e-6)


# ----------------------------------------------------------------------------- the CLI
def _cli_worker(rank: int, data_root: Path, runs: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from cli import app

    res = CliRunner().invoke(app, ["train", "breastmnist", "--model", "small-cnn", "--epochs", "1", "--batch-size",
                                   "16", "--bootstrap", "10", "--device", "cpu", "--data-root", str(data_root),
                                   "--runs-dir", runs, "--json"])
    return res.exit_code, res.stdout


def test_cli_train_prints_one_json_object_from_rank_0(ranks, data_root, tmp_path):
    runs = tmp_path / "runs"
    (code0, out0), (code1, out1) = ranks.run(_cli_worker, data_root, str(runs))
    assert code0 == code1 == 0 and out1 == ""
    summary = json.loads(out0)
    assert summary["n"] == 21 and summary["finished"]
    (folder,) = runs.iterdir()
    assert json.loads((folder / "record.json").read_text())["config"]["distributed"]["world_size"] == 2
