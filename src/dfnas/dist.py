"""The process group of a `torchrun` launch: rank, world size, device, collectives and the
batch-sharded training they make exact.

    torchrun --nproc-per-node 2 -m dfnas synth --teacher mnist-cnn --out runs/synth
    torchrun --nproc-per-node 2 -m dfnas search --algo darts --data runs/synth --out runs/s

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a plain `dfnas` call is world size 1 and never
touches torch.distributed. CPU runs use gloo, CUDA runs NCCL with one GPU per local rank.
Collectives time out (DFNAS_DIST_TIMEOUT seconds, default 4 h: the slowest rank's share of a
long synthesis) instead of hanging forever on a rank that died outside torchrun's watch.

Data-parallel training here is exact, not approximate: every rank takes its rows of the same
global batch, BatchNorm reduces its batch statistics over all ranks (`SyncedBatchNorm`, which
also runs on the CPU, where torch's SyncBatchNorm does not), each rank's loss is weighted by its
share of the rows and the gradients are summed (`Group.reduce_`), so N processes follow one
process at the same global batch to float rounding, uneven shares included. dfnas sums
gradients itself instead of wrapping the model in DistributedDataParallel because DARTS and
ProxylessNAS take gradients with `torch.autograd.grad` (alphas, gates), which DDP's backward
hooks never see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from dfnas.errors import DfnasError


def _collective_failed(rank: int, e: Exception) -> DfnasError:
    return DfnasError(f"rank {rank}: another process of this torchrun job stopped or timed out "
                      f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); "
                      "rerun the same command to resume")


@dataclasses.dataclass(frozen=True)
class Group:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as td

            try:
                td.barrier()
            except RuntimeError as e:  # a rank died or the wait timed out
                raise _collective_failed(self.rank, e) from e

    def device(self, device: str) -> str:
        """Each rank's own GPU: `cuda` becomes cuda:LOCAL_RANK."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.distributed else device

    def rows(self, n: int) -> slice:
        """This rank's contiguous rows of a global batch of n (uneven when N does not divide n)."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def split(self, batch_size: int, key: str) -> tuple[slice, float]:
        """This rank's rows of every global batch and its share of them (the weight of its
        loss); `key` names the setting in the error when there are fewer rows than ranks."""
        if batch_size < self.world_size:
            raise DfnasError(f"{key} {batch_size} is smaller than the {self.world_size} processes it is split "
                             "over; raise it or launch fewer processes")
        rows = self.rows(batch_size)
        return rows, (rows.stop - rows.start) / batch_size

    def reduce_(self, tensors: Sequence[torch.Tensor]) -> None:
        """In place, every tensor becomes its sum over the ranks, in one flat all_reduce. Each
        rank backpropagates its rows' mean loss times its share of the global batch, so the
        sums are the global batch's gradients (BatchNorm's cross-rank terms included)."""
        if not self.distributed or not tensors:
            return
        import torch.distributed as td

        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        try:
            td.all_reduce(flat)
        except RuntimeError as e:
            raise _collective_failed(self.rank, e) from e
        offset = 0
        for t in tensors:
            t.detach().copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (small picklable records only)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world_size
        try:
            td.all_gather_object(out, obj)
        except RuntimeError as e:
            raise _collective_failed(self.rank, e) from e
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (a measurement only one rank should make, e.g. latency)."""
        if not self.distributed:
            return obj
        import torch.distributed as td

        box = [obj if self.is_main else None]
        try:
            td.broadcast_object_list(box, src=0)
        except RuntimeError as e:
            raise _collective_failed(self.rank, e) from e
        return box[0]

    def map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        """[fn(x) for x in items], item i computed on rank i % N, the results on every rank."""
        if not self.distributed:
            return [fn(x) for x in items]
        mine = {i: fn(items[i]) for i in range(self.rank, len(items), self.world_size)}
        merged: dict[int, Any] = {}
        for part in self.gather(mine):
            merged.update(part)
        return [merged[i] for i in range(len(items))]

    def check_same(self, value: Any, what: str) -> None:
        """Refuse to go on when the ranks disagree on `value` (a result every rank must share)."""
        if self.distributed and any(v != value for v in self.gather(value)):
            raise DfnasError(f"the {self.world_size} processes ended with different {what}; this is a bug in "
                             "dfnas's scale-out, please report it (a one-process run is unaffected)")


def from_env(device: str = "cpu") -> Group:
    """The group torchrun describes in the environment, initialised once; world size 1 otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    import torch.distributed as td

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not td.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        timeout = datetime.timedelta(seconds=float(os.environ.get("DFNAS_DIST_TIMEOUT", 4 * 3600)))
        try:
            td.init_process_group(backend, timeout=timeout)
        except (RuntimeError, ValueError) as e:
            raise DfnasError(f"cannot join the torchrun process group ({str(e).splitlines()[0][:120]}); "
                             "launch with torchrun --nproc-per-node N -m dfnas ...") from e
    return Group(rank, world, local)


# -- exact data parallelism -------------------------------------------------------------------
def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as td

    td.all_reduce(t)
    return t


class _GlobalBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm over the global batch, on torch's native CPU/GPU kernels.

    Forward: each rank's count, mean and variance go out in one all_reduce (one row per rank:
    summed = gathered) and are merged exactly (Chan et al.); the output is the native kernel
    normalising with the global statistics. Backward: the native kernel gives this rank's
    sum(g) and sum(g * xhat), one all_reduce makes them global, and the input gradient takes the
    usual BatchNorm form with them; weight and bias get this rank's part (summed with the other
    gradients afterwards)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c = x.shape[1]
        _, mean_l, invstd_l = torch.native_batch_norm(x, None, None, None, None, True, 0.0, eps)
        rows = x.new_zeros(world, 1 + 2 * c)
        rows[rank, 0] = x.numel() // c
        rows[rank, 1:1 + c] = mean_l
        rows[rank, 1 + c:] = invstd_l.pow(-2) - eps
        rows = _all_reduce(rows)
        counts, means, vars_ = rows[:, :1], rows[:, 1:1 + c], rows[:, 1 + c:]
        n = counts.sum()
        mean = (counts * means).sum(0) / n
        var = (counts * (vars_ + (means - mean) ** 2)).sum(0) / n
        y = torch.native_batch_norm(x, weight, bias, mean, var, False, 0.0, eps)[0]
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps, ctx.n = eps, n
        ctx.mark_non_differentiable(mean, var, n)
        return y, mean, var, n

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, var = ctx.saved_tensors
        c = x.shape[1]
        dx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            g.contiguous(), x, weight, mean, var, None, None, False, ctx.eps, [True, True, True])
        sums = _all_reduce(torch.cat([gw, gb]))
        invstd = torch.rsqrt(var + ctx.eps)
        w = weight if weight is not None else torch.ones_like(invstd)
        k1 = w * invstd * invstd * sums[:c] / ctx.n
        k0 = w * invstd * sums[c:] / ctx.n - k1 * mean
        dx = dx.addcmul_(x, -k1.view(1, c, 1, 1)).sub_(k0.view(1, c, 1, 1))
        return (dx if ctx.needs_input_grad[0] else None, gw if ctx.needs_input_grad[1] else None,
                gb if ctx.needs_input_grad[2] else None, None, None, None)


class SyncedBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch over every rank,
    while `synced` is on (`sharded`); otherwise, and in eval mode, plain BatchNorm2d. Runs on
    the CPU too, where torch's own SyncBatchNorm does not."""

    synced: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.synced and self.training):
            return super().forward(x)
        import torch.distributed as td

        y, mean, var, n = _GlobalBatchNorm.apply(x, self.weight, self.bias, self.eps, td.get_rank(),
                                                 td.get_world_size())
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * (n / (n - 1)) if float(n) > 1 else var, m)
        return y


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d of `model` for a SyncedBatchNorm sharing its parameters and
    buffers (in place; optimizers built before or after see the same tensors)."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = SyncedBatchNorm  # same attributes, same tensors: only forward differs
    return model


@contextlib.contextmanager
def synced(model: nn.Module, on: bool = True) -> Iterator[None]:
    """Within: the SyncedBatchNorm layers of `model` reduce their statistics over all ranks."""
    bns = [m for m in model.modules() if isinstance(m, SyncedBatchNorm)]
    for m in bns:
        m.synced = on
    try:
        yield
    finally:
        for m in bns:
            m.synced = False
