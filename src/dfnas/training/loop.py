"""The pieces every training loop here shares (found networks, search candidates, supernets,
teachers): the cosine schedule, gradient clipping, evaluation and BN recalibration."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from dfnas.training.losses import correct, target_loss

if TYPE_CHECKING:
    from dfnas.dist import Group


def cosine(step: int, total: int, hi: float, lo: float) -> float:
    """Cosine decay from `hi` at step 0 to `lo` at `total` (and after)."""
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def warmup_cosine(step: int, total: int, warmup: int, floor: float) -> float:
    """Multiplier of the base lr: linear warm-up from 1/100 over `warmup` steps, then cosine
    from 1 down to `floor` at `total`."""
    if step < warmup:
        return 0.01 + 0.99 * step / warmup
    return cosine(step - warmup, max(total - warmup, 1), 1.0, floor)


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, model: nn.Module, max_norm: float = 0.0,
                   reduce: Callable[[list[torch.Tensor]], None] | None = None) -> None:
    """Zero the grads, backpropagate `loss`, clip to `max_norm` (0 = off) and step.
    `reduce`: sums the gradients over the processes of a sharded step, before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if reduce is not None:
        reduce([p.grad for p in model.parameters() if p.grad is not None])
    clip_grads(model, max_norm)
    opt.step()


@torch.inference_mode()
def accuracy(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor],
             device: torch.device | str = "cpu", batch_size: int = 500) -> float:
    """Top-1 accuracy of `model` (put in eval mode) on uint8 images and their labels."""
    model.eval()
    hits = 0
    for i in range(0, len(x_u8), batch_size):
        xb = normalize(x_u8[i:i + batch_size].to(device).to(torch.get_default_dtype()).div_(255))
        hits += int((model(xb).argmax(1) == y[i:i + batch_size].to(device)).sum())
    return hits / len(x_u8)


def clip_grads(model: nn.Module, max_norm: float) -> None:
    if max_norm and max_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], temperature: float,
             group: Group | None = None) -> dict[str, float]:
    """Mean loss and top-1 over the given batches, model in eval mode. `group`: the processes
    of a torchrun launch split the batches (batch i on rank i % N) and sum their results."""
    was = model.training
    model.eval()
    loss, hits, n = 0.0, 0, 0
    rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
    for i, (x, t) in enumerate(batches):
        if i % world != rank:
            continue
        logits = model(x)
        loss += float(target_loss(logits, t, temperature)) * len(x)
        hits += int(correct(logits, t))
        n += len(x)
    model.train(was)
    if world > 1:
        assert group is not None
        total = torch.tensor([loss, hits, n], dtype=torch.float64)
        group.reduce_([total])
        loss, hits, n = float(total[0]), round(float(total[1])), round(float(total[2]))
    return {"loss": loss / max(n, 1), "acc": hits / max(n, 1)}


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Recompute BN running stats as the exact average over `batches` for the active path.

    A single-path candidate of a weight-sharing supernet sees different input statistics
    than the supernet did during training, so SPOS re-estimates them before scoring.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = plain mean over the batches
    was = model.training
    model.train()
    for x, _ in batches:
        model(x)
    model.train(was)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
