"""DrNAS (Chen, Wang, Cheng, Tang, Hsieh; ICLR 2021): DARTS with Dirichlet-distributed op weights.

    dfnas search --algo drnas --space nb201 --data cifar10:DIR --out runs/drnas --epochs 100

Each label's alphas give a Dirichlet concentration beta = ELU(alpha) + 1; every forward draws
the mixed op's weights from Dir(beta) (pathwise gradient, as `torch.distributions.Dirichlet`),
so the search optimises the expected val loss under the distribution, and a KL term to the flat
Dir(1) (`drnas.reg_scale`) keeps the concentrations from growing without bound. The derived
arch is each label's argmax of the mean weight beta / sum(beta). Weights and alphas are updated
alternately as in first-order DARTS, on the same mixed supernet.

Why it is here: the sampled weights act as noise on the alphas that DARTS lacks, which at full
budget keeps the supernet from settling on parameter-free ops (published on NAS-Bench-201
CIFAR-10: DrNAS 94.36 %, DARTS 54.30 %); at the CPU proxy regime, with the DARTS arch lr, it
still drifts to `skip_connect` (80.57 %, docs/results-mnist.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.distributions import Dirichlet, kl_divergence

from dfnas.strategies import register_strategy
from dfnas.strategies.darts import SampledDarts


class _DirichletDraw(torch.autograd.Function):
    """A reparameterised Dir(concentration) draw from an explicit generator (the
    distribution's own `rsample` reads the global one): the implicit pathwise gradient."""

    @staticmethod
    def forward(ctx, concentration: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:  # type: ignore[override]
        x = torch._sample_dirichlet(concentration, generator=gen)
        ctx.save_for_backward(x, concentration)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        x, conc = ctx.saved_tensors
        total = conc.sum(-1, True).expand_as(conc)
        return torch._dirichlet_grad(x, conc, total) * (g - (x * g).sum(-1, True)), None


def concentration(alpha: torch.Tensor) -> torch.Tensor:
    return F.elu(alpha) + 1.0


def dirichlet_draw(alpha: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Op weights ~ Dir(ELU(alpha) + 1), differentiable w.r.t. alpha; without `gen` the mean."""
    beta = concentration(alpha)
    if gen is None:
        return beta / beta.sum()
    # drawn on the CPU from the CPU generator, then moved: the same weights on any device
    return _DirichletDraw.apply(beta.cpu().double(), gen).to(alpha.dtype).to(alpha.device)


@register_strategy
class DrnasStrategy(SampledDarts):
    name = "drnas"

    def info(self) -> dict[str, object]:
        return {"reg_scale": self.cfg.drnas.reg_scale}

    def mix_weights(self, alpha: torch.Tensor) -> torch.Tensor:
        return dirichlet_draw(alpha, self._gen)

    def probs(self) -> dict[str, torch.Tensor]:
        return {k: dirichlet_draw(a.detach(), None).cpu() for k, a in self._alpha_of.items()}  # the means

    def arch_penalty(self) -> torch.Tensor | None:
        scale = self.cfg.drnas.reg_scale
        if not scale:
            return None
        terms = []
        for a in self._alpha_of.values():
            beta = concentration(a)
            terms.append(kl_divergence(Dirichlet(beta), Dirichlet(torch.ones_like(beta))))
        return scale * torch.stack(terms).sum()
