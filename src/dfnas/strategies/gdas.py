"""GDAS (Dong & Yang, CVPR 2019): DARTS with one sampled path per forward.

    dfnas search --algo gdas --space nb201 --data cifar10:DIR --out runs/gdas --epochs 100

Each forward draws, per choice label, a Gumbel-softmax sample of the alphas at temperature
tau and runs only its argmax op, scaled by the straight-through weight
`onehot - p.detach() + p` (1 in value, the softmax's gradient in the backward). Weights
(train split) and alphas (val split) are updated alternately, as in DARTS first order, but a
step costs one single-path forward+backward instead of every candidate's. tau falls linearly
from `gdas.tau_max` to `gdas.tau_min` over the epochs. The derived arch is each label's argmax.

Why it is here: on NAS-Bench-201 DARTS drifts to all-skip cells (54.30 % on CIFAR-10, as
published), while GDAS's sampled, hard paths hold near the top at full budget (93.61 %
published). At the CPU proxy regime a drawn `none` (zeros out, so no gradient of its own)
takes over; `gdas.exclude_none` keeps it out, which found a 93.12 % cell there
(docs/results-mnist.md).
"""

from __future__ import annotations

import torch
from torch import nn

from dfnas.spaces.base import LayerChoice
from dfnas.strategies import register_strategy
from dfnas.strategies.context import SearchContext
from dfnas.strategies.darts import SampledDarts


def gumbel_hard(alpha: torch.Tensor, tau: float, gen: torch.Generator | None) -> tuple[torch.Tensor, int]:
    """(straight-through one-hot weights, chosen index) of one Gumbel-softmax draw; without
    `gen` the argmax of `alpha` itself (no noise)."""
    if gen is None:
        p = torch.softmax(alpha, 0)
    else:
        u = torch.rand(alpha.shape, generator=gen).clamp_(1e-20, 1.0 - 1e-7).to(alpha.device)
        p = torch.softmax((alpha - torch.log(-torch.log(u))) / tau, 0)
    k = int(p.detach().argmax())
    hard = torch.zeros_like(p)
    hard[k] = 1.0
    return hard - p.detach() + p, k


@register_strategy
class GdasStrategy(SampledDarts):
    name = "gdas"

    def setup(self, model: nn.Module, ctx: SearchContext) -> None:
        super().setup(model, ctx)
        self._index: dict[str, int] = {}
        self.tau = self.cfg.gdas.tau_max
        # exclude_none: zero ops never drawn nor derived (-inf logits). A drawn `none` outputs
        # zeros, so its alpha gets no gradient of its own and rises as the others fall
        self._mask: dict[str, torch.Tensor] = {}
        for label, zero in self.zero.items():
            m = torch.zeros(len(zero), device=ctx.device)
            if self.cfg.gdas.exclude_none and not all(zero):
                m[torch.tensor(zero, device=ctx.device)] = float("-inf")
            self._mask[label] = m

    def begin_epoch(self, epoch: int) -> None:
        super().begin_epoch(epoch)
        g = self.cfg.gdas
        frac = epoch / max(self.cfg.epochs - 1, 1)
        self.tau = g.tau_max - (g.tau_max - g.tau_min) * frac

    def info(self) -> dict[str, object]:
        return {"tau_final": self.tau}

    def probs(self) -> dict[str, torch.Tensor]:
        return {k: torch.softmax(a.detach() + self._mask[k], 0).cpu() for k, a in self._alpha_of.items()}

    def _mixed_op(self, c: LayerChoice, x: torch.Tensor) -> torch.Tensor:
        w = self._probs_now.get(c.label)
        if w is None:  # one draw per label and forward: cells sharing a label share the path
            a = self._alpha_of[c.label]
            a = (a.detach() if self._frozen else a) + self._mask[c.label]
            w, self._index[c.label] = gumbel_hard(a, self.tau, self._gen)
            self._probs_now[c.label] = w
        k = self._index[c.label]
        return c.candidates[c.names[k]](x) * w[k]
