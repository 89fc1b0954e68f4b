"""Image priors and the task loss of model inversion.

Priors are per-element means, so a weight means the same at 28 px and at 224 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tv_l2(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between horizontally and vertically adjacent pixels."""
    dh = x[..., 1:, :] - x[..., :-1, :]
    dw = x[..., :, 1:] - x[..., :, :-1]
    return dh.square().mean() + dw.square().mean()


def tv_l1(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between adjacent pixels (sparser edges than TV-L2)."""
    dh = x[..., 1:, :] - x[..., :-1, :]
    dw = x[..., :, 1:] - x[..., :, :-1]
    return dh.abs().mean() + dw.abs().mean()


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean()


def task_loss_per_image(logits: torch.Tensor, hard: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy to the slot class (round 0) or to the calibrated soft label (RLC rounds)."""
    if soft is None:
        return F.cross_entropy(logits.float(), hard, reduction="none")
    return -(soft * F.log_softmax(logits.float(), dim=1)).sum(1)
