"""Training and scoring the weights of a supernet, shared by the strategies: the SGD recipe
of the supernet weights and how a candidate's score is read."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from dfnas.strategies.config import SearchConfig
from dfnas.training.loop import optimizer_step
from dfnas.training.losses import target_loss


def weight_optimizer(model: nn.Module, cfg: SearchConfig) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """SGD + per-epoch cosine decay for the supernet weights (DARTS recipe)."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs), eta_min=cfg.lr_min)
    return opt, sched


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, t: torch.Tensor, cfg: SearchConfig,
             weigh: Callable[[torch.Tensor], torch.Tensor] | None = None,
             reduce: Callable[[Sequence[torch.Tensor]], None] | None = None) -> float:
    """One weight step on the search loss of batch (x, t): zero grads, backward, clip, step.
    A sharded step `weigh`s this process's loss and `reduce`s gradients and loss over processes."""
    loss = target_loss(model(x), t, cfg.kd_temperature)
    if weigh is not None:
        loss = weigh(loss)
    value = loss.detach().reshape(1).clone()
    optimizer_step(opt, loss, model, cfg.grad_clip,
                   None if reduce is None else lambda grads: reduce([*grads, value]))
    return float(value)


def candidate_score(res: dict[str, float], metric: str) -> float:
    """Higher is better: top-1 (ties broken by loss) or minus the loss (`acc`, `loss` keys)."""
    return res["acc"] - 1e-6 * res["loss"] if metric == "top1" else -res["loss"]
