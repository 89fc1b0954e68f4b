"""ProxylessNAS (Cai, Zhu, Han, ICLR 2019): binarized paths + hardware-aware loss.

Per LayerChoice an architecture parameter vector alpha, path probabilities p = softmax(alpha).

* Weight step (train split): every choice samples ONE path from p and only that path runs,
  so activations of a single path are kept (the point of binarized paths: memory of one
  path instead of all N as in DARTS).
* Arch step (val split), the paper's two-path estimator: per choice sample two distinct
  paths from p (multinomial without replacement), renormalise their probabilities p',
  draw the binary gate g (one-hot, one active path) from p'. The output is
  sum_k g_k * o_k, so the backward gives dL/dg_k = <dL/dout, o_k> for the two paths, and
  dL/dalpha_i = sum_j dL/dg_j p'_j (delta_ij - p'_i) (BinaryConnect-style estimator).
  Only the active path runs with a graph; the other sampled path is recomputed without one
  inside the backward to get its <dL/dout, o_k> (`_TwoPathGate`), so memory is one path.
  After the Adam step the two alphas are shifted so that their total probability mass is
  unchanged, so unsampled paths keep their probabilities (as in the released code).
* Hardware-aware loss on the expected cost E = base + sum_l sum_k p_lk c_lk, from a per-choice
  table of MFLOPs or measured latency (ms, cached): `mul`: loss * (E / target)^beta,
  `add`: loss + lambda * E / target. The cost term is differentiable in alpha directly.

Final architecture: argmax alpha per choice. InputChoice spaces (cell wiring) are refused.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from dfnas.io import derive_seed
from dfnas.spaces.base import Arch, LayerChoice, choice_instances, set_mixers
from dfnas.strategies import register_strategy
from dfnas.strategies.base import AlphaStrategy, SearchResult
from dfnas.strategies.context import SearchContext
from dfnas.strategies.costs import (
    CostModel,
    default_latency_cache,
    flops_cost_model,
    latency_cost_model,
)
from dfnas.strategies.supernet import sgd_step, weight_optimizer
from dfnas.training.loop import evaluate, recalibrate_bn
from dfnas.training.losses import target_loss


class _TwoPathGate(torch.autograd.Function):
    """out = g_a * o_a + g_b * o_b with one-hot g, keeping only the ACTIVE path's graph.

    Forward runs the active path (with autograd, on a detached copy of x) and returns its
    output. Backward: grad_x through the active path; dL/dg_k = <grad_out, o_k>, where the
    inactive path's output is recomputed without a graph. Memory: one path, as in the
    released ProxylessNAS code; the weights of the path get no gradient (arch step only).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, gates: torch.Tensor, op_a: nn.Module, op_b: nn.Module) -> torch.Tensor:
        active = int(gates.argmax())
        xd = x.detach().requires_grad_(x.requires_grad)
        with torch.enable_grad():
            out = (op_a, op_b)[active](xd)
        ctx.xd, ctx.out, ctx.other, ctx.active = xd, out, (op_a, op_b)[1 - active], active
        return out.detach()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, None, None]:
        xd, out = ctx.xd, ctx.out
        grad_x = None
        if xd.requires_grad:
            (grad_x,) = torch.autograd.grad(out, xd, grad_out)
        with torch.no_grad():
            g = torch.empty(2, dtype=grad_out.dtype, device=grad_out.device)
            g[ctx.active] = (out.detach() * grad_out).sum()
            g[1 - ctx.active] = (ctx.other(xd.detach()) * grad_out).sum()
        del ctx.xd, ctx.out, ctx.other
        return grad_x, g, None, None


@register_strategy
class ProxylessStrategy(AlphaStrategy):
    name = "proxyless"
    supports_input_choice = False  # binary gates have no form for a choice of wiring
    needs_layer_choice = True

    def setup(self, model: nn.Module, ctx: SearchContext) -> None:
        pc = self.cfg.proxyless
        self.names: dict[str, list[str]] = {}
        for m in choice_instances(model):
            if isinstance(m, LayerChoice):
                self.names.setdefault(m.label, list(m.names))
        self.alphas = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(torch.zeros(len(v), device=ctx.device))
                                        for k, v in self.names.items()})
        self._alpha_of = {k: self.alphas[k.replace(".", "__")] for k in self.names}
        self.arch_opt = torch.optim.Adam(self.alphas.parameters(), lr=pc.arch_lr, betas=pc.arch_betas, eps=1e-8)
        self.w_opt, self.sched = weight_optimizer(model, self.cfg)
        s = ctx.data.spec
        shape = (1, s.channels, s.height, s.width)
        self.cost: CostModel | None = None
        if pc.hw_metric == "flops":
            self.cost = flops_cost_model(model, shape)
        elif pc.hw_metric == "latency":
            cache = default_latency_cache() / f"{ctx.cfg.space}-{derive_seed(0, json.dumps(ctx.cfg.space_args, sort_keys=True), str(shape))}.json"
            # measured once, on rank 0: every process must optimise the same cost table
            self.cost = ctx.group.broadcast(latency_cost_model(model, shape, ctx.device, pc.latency_repeats, cache)
                                            if ctx.group.is_main else None)
        self.target = pc.hw_target
        if self.cost is not None and self.target is None:
            uniform = {k: torch.full((len(v),), 1.0 / len(v)) for k, v in self.names.items()}
            self.target = float(self.cost.expected(uniform))
        # per-label state of the current forward: ("single", idx) or ("gate", (a, b), gates)
        self.mode: dict[str, tuple] = {}
        set_mixers(model, self._binary_op, None)

    # -- the binarized mixed op --------------------------------------------------------------
    def _binary_op(self, c: LayerChoice, x: torch.Tensor) -> torch.Tensor:
        m = self.mode[c.label]
        if m[0] == "single":
            return c.candidates[c.names[m[1]]](x)
        (a, b), gates = m[1], m[2]
        return _TwoPathGate.apply(x, gates, c.candidates[c.names[a]], c.candidates[c.names[b]])

    def sample_single(self, g: torch.Generator, uniform: bool = False) -> None:
        for k, a in self._alpha_of.items():
            p = torch.ones(len(a)) if uniform else torch.softmax(a.detach().cpu(), 0)
            self.mode[k] = ("single", int(torch.multinomial(p, 1, generator=g)))

    def sample_pairs(self, g: torch.Generator) -> None:
        for k, a in self._alpha_of.items():
            p = torch.softmax(a.detach().cpu(), 0)
            if len(a) == 1:
                self.mode[k] = ("single", 0)
                continue
            pair = torch.multinomial(p, 2, replacement=False, generator=g).tolist()
            p2 = torch.softmax(a.detach().cpu()[pair], 0)
            j = int(torch.multinomial(p2, 1, generator=g))
            gates = torch.zeros(2, device=a.device)
            gates[j] = 1.0
            self.mode[k] = ("gate", tuple(pair), gates.requires_grad_(True))

    def hw_loss(self, task: torch.Tensor) -> torch.Tensor:
        if self.cost is None:
            return task
        probs = {k: torch.softmax(a, 0) for k, a in self._alpha_of.items()}
        e = self.cost.expected(probs).to(task.device) / self.target
        pc = self.cfg.proxyless
        if pc.hw_mode == "mul":
            return task * e.pow(pc.hw_beta)
        return task + pc.hw_lambda * ((e - 1).abs() if pc.hw_mode == "abs" else e)

    # -- steps ------------------------------------------------------------------------------------
    def weight_step(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, g: torch.Generator, uniform: bool) -> float:
        self.sample_single(g, uniform)
        return sgd_step(model, self.w_opt, x, t, self.cfg, self.weigh, self.reduce)

    def arch_step(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, g: torch.Generator) -> float:
        self.sample_pairs(g)
        task = target_loss(model(x), t, self.cfg.kd_temperature)
        # weighing the whole loss counts the cost term once over processes: the shares sum to 1
        loss = self.weigh(self.hw_loss(task))
        labels = [k for k, m in self.mode.items() if m[0] == "gate"]
        gates = [self.mode[k][2] for k in labels]
        alphas = list(self._alpha_of.values())
        value = self.weigh(task.detach()).reshape(1).clone()
        grads = self.grads(loss, gates + alphas, (value,))
        g_gates, g_alpha = grads[:len(gates)], grads[len(gates):]
        self.arch_opt.zero_grad(set_to_none=True)
        old: dict[str, torch.Tensor] = {}
        for a, ga in zip(alphas, g_alpha, strict=True):
            a.grad = ga.clone()
        for k, gg in zip(labels, g_gates, strict=True):
            a = self._alpha_of[k]
            pair = list(self.mode[k][1])
            p2 = torch.softmax(a.detach()[pair], 0)
            # dL/dalpha_i = sum_j dL/dg_j * p_j * (delta_ij - p_i), over the two sampled paths
            jac = torch.diag(p2) - torch.outer(p2, p2)
            a.grad[pair] += jac @ gg
            old[k] = a.detach()[pair].clone()
        self.arch_opt.step()
        with torch.no_grad():  # keep the pair's total probability mass (unsampled paths unchanged)
            for k, before in old.items():
                a = self._alpha_of[k]
                pair = list(self.mode[k][1])
                shift = torch.logsumexp(a[pair], 0) - torch.logsumexp(before, 0)
                a[pair] -= shift
        return float(value)

    # -- the search -----------------------------------------------------------------------------
    def derive(self) -> Arch:
        return self.valid({k: self.names[k][int(a.detach().argmax())] for k, a in self._alpha_of.items()})

    def search(self, model: nn.Module, ctx: SearchContext) -> SearchResult:
        history, start, metrics = self.start(model, ctx)
        data, pc = ctx.data, self.cfg.proxyless
        for epoch in range(start, self.cfg.epochs):
            g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "proxyless-paths", epoch))
            warm = epoch < (pc.warmup_epochs if pc.warmup_epochs is not None else self.cfg.epochs // 4)
            val = data.cycle("val", f"proxyless-e{epoch}")
            bar = ctx.bar(data.steps("train"), f"proxyless e{epoch + 1}/{self.cfg.epochs}{' warm-up' if warm else ''}")
            lt = lv = 0.0
            n = 0
            with ctx.sharded(model):
                for xt, tt in data.batches("train", f"proxyless-e{epoch}"):
                    lt += self.weight_step(model, xt, tt, g, uniform=warm)
                    if not warm:
                        xv, tv = next(val)
                        lv += self.arch_step(model, xv, tv, g)
                    n += 1
                    self.step_done(ctx, bar, lt, lv, n)
            metrics = self.epoch_done(bar, history, lt, lv, n)
            if self.cost is not None:
                metrics["expected_cost"] = float(self.cost.expected(self.probs()))
            ctx.save_checkpoint(self.state_dict(model, epoch, history, metrics))
            ctx.epoch_end(epoch, metrics)
        arch = self.derive()
        for k, v in arch.items():
            self.mode[k] = ("single", self.names[k].index(v))
        # BN running stats mix every sampled path: re-estimate them for the derived one (as SPOS
        # does), or its val figures say little (chance level on the clutter bench before)
        with ctx.sharded(model):  # the global batches' statistics, as one process computes them
            recalibrate_bn(model, data.batches("train", "bn-recal", train_aug=False, limit=0))
        final = evaluate(model, data.batches("val", "final", train_aug=False), self.cfg.kd_temperature, ctx.group)
        metrics = {**metrics, "derived_val_loss": final["loss"], "derived_val_acc": final["acc"],
                   "hw_metric": pc.hw_metric, "hw_target": self.target}
        if self.cost is not None:
            metrics[f"derived_cost_{self.cost.unit}"] = self.cost.of(arch)
        return SearchResult(arch, metrics, history, self.names)
