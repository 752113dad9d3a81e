"""Data-parallel training under torchrun: process group, device, sharding, gathers, synchronised BatchNorm.

`torchrun --nproc_per_node N --no-python vlm train ...` (or `python -m torch.distributed.run ... cli.py
train ...`) starts N processes with WORLD_SIZE, RANK and LOCAL_RANK set; `fit` then trains with plain
`torch.distributed` + `DistributedDataParallel` (NCCL for CUDA tensors, gloo for CPU tensors):

- every process holds the whole resident split and draws the same global epoch order (the sampler's
  own seeded generator); each global batch of `--batch-size` rows is cut into N contiguous parts of
  equal size (`shard_range`), one per rank. `--batch-size` stays the global batch and must be
  divisible by N; the epoch's last, shorter batch is cut into parts that differ by at most one row,
  and each rank's loss is weighted by its share, so the all-reduced gradient is the global batch's
  mean gradient (exactly so for ce, bce and focal; `weighted` normalises its class weights per rank);
- augmentation and shape-transform parameters are drawn for the global batch and each rank applies
  its rows' part, so a DDP run sees the augmentations a one-process run would;
- BatchNorm layers become synchronised ones (`timm.layers.convert_sync_batchnorm`: torch's
  `SyncBatchNorm`, and timm's BatchNorm+act layers); torch's needs a GPU, so for CPU modules
  `GlooSyncBatchNorm` computes the global batch statistics over gloo. Off with `--no-sync-bn`;
- val and test are cut into N contiguous ranges, scored, and `gather_rows` concatenates the scores in
  rank order: exactly the split's N rows, so AUC and CIs are on the true set. Rank 0's decisions
  (best epoch, metrics) are broadcast;
- rank 0 alone writes the run folder and reports progress; last.pt holds the unwrapped model, so a
  DDP run resumes with any number of processes (a resume with the same number ends as if it never
  stopped: every rank's RNG state is saved).

Dropout and drop-path draw from per-rank streams (seed + rank offset); without them a DDP run equals
the one-process run with the same global batch up to float rounding (the gradient is summed in
another order; synchronised BatchNorm statistics are float32 sums), except that (a) an epoch's last
batch is dropped when it has fewer than 2 rows per process (one process drops a last batch of 1 row),
and (b) a parameter whose exact gradient is 0, such as a convolution bias right before BatchNorm,
gets rounding-noise gradients that Adam turns into steps of up to the LR, so such runs part by ~1e-4.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from vlm.errors import VlmError
from vlm.runtime import resolve_device

RANK_SEED_STRIDE = 1_000_003  # rank r's dropout stream is seeded with seed + r * this


def launched() -> bool:
    """Whether this process was started by torchrun (WORLD_SIZE and RANK in the environment)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def launched_world_size() -> int:
    """The number of processes torchrun started (1 when it did not start this one)."""
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def is_main_process() -> bool:
    """Rank 0, or not launched by torchrun: the process that writes files and prints."""
    return int(os.environ.get("RANK", "0")) == 0


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [lo, hi) of rank `rank` when n rows are cut into `world_size` contiguous parts (as
    `torch.tensor_split`: the first n % world_size parts have one row more)."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; a single process is `Distributed()` (world size 1, no group)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None  # the backend of the training device's collectives: "nccl" or "gloo"

    @property
    def active(self) -> bool:
        """A process group is up (torchrun, even with one process)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous rows [lo, hi) of n."""
        return shard_range(n, self.rank, self.world_size)

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over ranks (in place)."""
        if self.active:
            dist.all_reduce(tensor)
        return tensor

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's `shard(n)` rows, concatenated in rank order: the n rows exactly (pad, all_gather, trim)."""
        if not self.active:
            return local
        sizes = [hi - lo for lo, hi in (shard_range(n, r, self.world_size) for r in range(self.world_size))]
        padded = local.new_zeros((max(sizes), *local.shape[1:]))
        padded[:len(local)] = local
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (picklable objects)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait until every rank gets here (e.g. until rank 0 has written a checkpoint)."""
        if self.active:
            dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """`model` in DistributedDataParallel (static graph: parameters a model leaves unused are fine)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, static_graph=True)

    def describe(self, sync_batchnorm: bool) -> dict[str, Any]:
        """The record's `distributed` block."""
        return {"world_size": self.world_size, "backend": self.backend, "sync_batchnorm": sync_batchnorm}


def init_distributed() -> Distributed:
    """Under torchrun: join the process group (once per process) and say where this process stands;
    otherwise `Distributed()`. CUDA tensors talk over NCCL, CPU tensors over gloo."""
    if not launched():
        return Distributed()
    world, rank, local = (int(os.environ[k]) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
    cuda = torch.cuda.is_available() and local < torch.cuda.device_count()
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
        atexit.register(_destroy)
    return Distributed(world_size=world, rank=rank, local_rank=local, backend="gloo")


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """`init_distributed` and the training device: under torchrun a CUDA device is cuda:LOCAL_RANK."""
    ctx = init_distributed()
    if not ctx.active:
        return ctx, resolve_device(device_name)
    device = resolve_device("cpu" if device_name == "cpu" else device_name.split(":")[0])
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise VlmError(f"torchrun started local rank {ctx.local_rank}, but torch sees "
                           f"{torch.cuda.device_count()} GPU(s): use --nproc_per_node {torch.cuda.device_count()} "
                           f"or fewer.")
        device = torch.device("cuda", ctx.local_rank)
        ctx = Distributed(ctx.world_size, ctx.rank, ctx.local_rank, backend="nccl")
    return ctx, device


def check_global_batch(batch_size: int, world_size: int) -> None:
    """A VlmError unless the global `--batch-size` splits evenly over the processes."""
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        raise VlmError(f"--batch-size {batch_size} is the global batch and must be divisible by the "
                       f"{world_size} processes torchrun started: use {lower or world_size} or "
                       f"{lower + world_size}.")


def sync_batchnorm(model: nn.Module, device: torch.device) -> tuple[nn.Module, int]:
    """`model` with its BatchNorm layers synchronised across ranks, and how many there are.

    CUDA: `timm.layers.convert_sync_batchnorm` (torch's SyncBatchNorm; timm's BatchNorm + act layers
    keep their act). CPU: every BatchNorm layer's class gains `GlooSyncBatchNorm` in front (torch's
    SyncBatchNorm and DDP refuse CPU modules); weights, buffers and state-dict keys stay as they are.
    """
    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm

        model = convert_sync_batchnorm(model)
        return model, sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.__class__ = _gloo_class(type(m))
    return model, len(layers)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Put in front of a BatchNorm class: in training, the mean and variance of the global batch over
    the process group (two-pass, float32), with gradients through them, and running statistics as
    torch's; in evaluation (and outside a process group), the layer's own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        c = self.num_features
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        first = _AllReduceSum.apply(torch.cat([xf.sum(dims), xf.new_tensor([xf.numel() // c])]))
        count = first[-1]
        mean = first[:c] / count
        centred = xf - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * count / (count - 1).clamp_min(1), m)
        y = y.to(x.dtype)
        for after in ("drop", "act"):  # timm's BatchNormAct2d: dropout and activation follow the norm
            if hasattr(self, after):
                y = getattr(self, after)(y)
        return y


@cache
def _gloo_class(cls: type) -> type:
    """`cls` with `GlooSyncBatchNorm` in front (its name prefixed with Gloo)."""
    return cls if issubclass(cls, GlooSyncBatchNorm) else type(f"Gloo{cls.__name__}", (GlooSyncBatchNorm, cls), {})


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
