"""DARTS (Liu, Simonyan, Yang, ICLR 2019): continuous relaxation + bilevel gradient descent.

Every LayerChoice becomes a mixed op: the softmax(alpha)-weighted sum of its candidates
(`none` candidates contribute exactly zero, so they are not run). Every InputChoice sums all
its inputs in the supernet. Weights are trained on the train split (SGD, cosine), alphas on
the val split (Adam, lr 3e-4, betas (0.5, 0.999), wd 1e-3).

* first order: grad_alpha L_val(w, alpha). Taken with `autograd.grad` w.r.t. the alphas only,
  so the backward pass skips every weight gradient (cheaper than a full backward).
* second order: grad_alpha L_val(w', alpha) - xi * H, with the virtual step
  w' = w - xi * (momentum * v + grad_w L_train(w) + wd * w) and the Hessian-vector product
  H = [grad_alpha L_train(w+) - grad_alpha L_train(w-)] / (2 eps), w+- = w +- eps * grad_w' L_val,
  eps = hvp_eps / ||grad_w' L_val||. Weights are moved in place and restored (no model copy).

Derivation: an edge feeding an InputChoice takes its strongest non-`none` op, the InputChoice
keeps its `n_chosen` strongest edges (strength = the edge's largest non-`none` weight);
a LayerChoice without InputChoice (NB201 edge, a chain layer) takes its argmax.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dfnas.dist import SyncedBatchNorm
from dfnas.io import derive_seed
from dfnas.spaces.base import Arch, InputChoice, LayerChoice, choice_instances, set_mixers
from dfnas.spaces.ops import bn_tail
from dfnas.strategies import register_strategy
from dfnas.strategies.base import AlphaStrategy, SearchResult
from dfnas.strategies.context import SearchContext
from dfnas.strategies.costs import is_zero_op, probe
from dfnas.strategies.supernet import sgd_step, weight_optimizer
from dfnas.training.loop import evaluate
from dfnas.training.losses import target_loss


def scaled_bn(bn: nn.BatchNorm2d, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`scale * bn(h)`, with BN's affine weight and bias multiplied by `scale` (a weight of ones
    where BN has none). A plain BatchNorm2d (or a SyncedBatchNorm not reducing now) runs as
    `F.batch_norm` with its running-statistics bookkeeping; other subclasses run their own
    forward with the scaled parameters swapped in."""
    weight = scale.expand(bn.num_features) if bn.weight is None else bn.weight * scale
    bias = None if bn.bias is None else bn.bias * scale
    if not (type(bn) is nn.BatchNorm2d or type(bn) is SyncedBatchNorm and not (bn.synced and bn.training)):
        params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
        return torch.func.functional_call(bn, params, (h,))
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative average
            factor = 1.0 / float(bn.num_batches_tracked)
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep = not bn.training or bn.track_running_stats
    return F.batch_norm(h, bn.running_mean if keep else None, bn.running_var if keep else None,
                        weight, bias, use_batch, factor, bn.eps)


def derive_arch(probs: dict[str, torch.Tensor], names: dict[str, list[str]],
                inputs: dict[str, tuple[int, list[str | None]]]) -> Arch:
    """Genotype from per-choice op weights. `inputs`: InputChoice label -> (n_chosen, source labels)."""
    feeds = {s for _, srcs in inputs.values() for s in srcs if s is not None}
    arch: Arch = {}
    strength: dict[str, float] = {}
    for label, p in probs.items():
        p = p.detach().float().cpu()
        keep = [i for i, n in enumerate(names[label]) if not is_zero_op(n)]
        if label in feeds and keep:
            best = max(keep, key=lambda i: float(p[i]))
        else:
            best = int(p.argmax())
        arch[label] = names[label][best]
        strength[label] = max((float(p[i]) for i in keep), default=0.0)
    for label, (k, srcs) in inputs.items():
        order = sorted(range(len(srcs)), key=lambda i: (-strength.get(srcs[i], 0.0) if srcs[i] else 0.0, i))
        arch[label] = sorted(order[:k])
    return arch


@register_strategy
class DartsStrategy(AlphaStrategy):
    name = "darts"
    needs_layer_choice = True

    def setup(self, model: nn.Module, ctx: SearchContext) -> None:
        """Create the alphas (seeded), the optimizers and install the mixed ops."""
        dc = self.cfg.darts
        g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "darts-alpha"))
        self.names: dict[str, list[str]] = {}
        self.inputs: dict[str, tuple[int, list[str | None]]] = {}
        for m in choice_instances(model):
            if isinstance(m, LayerChoice):
                self.names.setdefault(m.label, list(m.names))
        pr = probe(model, (1, self.data_shape(ctx)[0], *self.data_shape(ctx)[1:]), ctx.device)
        for m in choice_instances(model):
            if isinstance(m, InputChoice):
                self.inputs.setdefault(m.label, (m.n_chosen, pr.input_sources.get(m.label, [None] * m.n_candidates)))
        self.alphas = nn.ParameterDict({
            k.replace(".", "__"): nn.Parameter(1e-3 * torch.randn(len(v), generator=g).to(ctx.device))
            for k, v in self.names.items()})
        self._alpha_of = {k: self.alphas[k.replace(".", "__")] for k in self.names}
        self.zero = {k: [is_zero_op(n) for n in v] for k, v in self.names.items()}
        self.arch_opt = torch.optim.Adam(self.alphas.parameters(), lr=dc.arch_lr, betas=dc.arch_betas,
                                         weight_decay=dc.arch_weight_decay)
        self.w_opt, self.sched = weight_optimizer(model, self.cfg)
        self._frozen = False
        self._tails: dict[nn.Module, tuple[list[nn.Module], nn.BatchNorm2d] | None] = {}
        self._probs_now: dict[str, torch.Tensor] = {}
        model.register_forward_pre_hook(lambda *_: self._probs_now.clear())  # fresh weights every forward
        set_mixers(model, self._mixed_op, self._sum_inputs)

    @staticmethod
    def data_shape(ctx: SearchContext) -> tuple[int, int, int]:
        s = ctx.data.spec
        return (s.channels, s.height, s.width)

    # -- mixers -------------------------------------------------------------------------------
    def _mixed_op(self, c: LayerChoice, x: torch.Tensor) -> torch.Tensor:
        w = self._probs_now.get(c.label)
        if w is None:  # once per label and forward: cells sharing a label share one softmax node
            a = self._alpha_of[c.label]
            # weight step: constant mixing weights, so autograd neither computes alpha gradients
            # nor keeps every candidate's output alive for them (less time and memory)
            w = self._probs_now[c.label] = self.mix_weights(a.detach() if self._frozen else a)
        out: torch.Tensor | None = None
        for i, name in enumerate(c.names):
            if self.zero[c.label][i]:
                continue
            op = c.candidates[name]
            tail = self._tails.get(op, False)
            if tail is False:
                tail = self._tails[op] = bn_tail(op)
            if tail is None:
                o = op(x)
                out = o * w[i] if out is None else out.addcmul_(o, w[i])
            else:  # w * BN(h) is BN(h) with weight and bias scaled by w: no pass over the output
                h = x
                for m in tail[0]:
                    h = m(h)
                o = scaled_bn(tail[1], h, w[i])
                out = o if out is None else out.add_(o)
        if out is None:  # only zero ops: the edge outputs zeros of the right shape
            out = c.candidates[c.names[0]](x) * w[0]
        return out

    @staticmethod
    def _sum_inputs(c: InputChoice, inputs: list[torch.Tensor]) -> torch.Tensor:
        return sum(inputs[1:], inputs[0])

    def derive(self) -> Arch:
        return self.valid(derive_arch(self.probs(), self.names, self.inputs))

    # -- gradients ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _weights_only(self) -> Iterator[None]:
        """Forwards inside mix with detached alphas: weight gradients only (see `_mixed_op`)."""
        self._frozen = True
        try:
            yield
        finally:
            self._frozen = False

    def _loss(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.weigh(target_loss(model(x), t, self.cfg.kd_temperature))

    def arch_grads(self, model: nn.Module, xt: torch.Tensor, tt: torch.Tensor,
                   xv: torch.Tensor, tv: torch.Tensor) -> tuple[list[torch.Tensor], float]:
        """Gradient of the val loss w.r.t. the alphas (first or unrolled second order)."""
        alphas = list(self._alpha_of.values())
        if self.cfg.darts.order == 1:
            loss = self._loss(model, xv, tv)
            value = loss.detach().reshape(1).clone()
            penalty = self.arch_penalty()
            if penalty is not None:  # the same on every process: weighed like one process's loss
                loss = loss + self.weigh(penalty)
            return self.grads(loss, alphas, (value,)), float(value)
        return self._unrolled_grads(model, xt, tt, xv, tv)

    def _unrolled_grads(self, model: nn.Module, xt: torch.Tensor, tt: torch.Tensor,
                        xv: torch.Tensor, tv: torch.Tensor) -> tuple[list[torch.Tensor], float]:
        dc, cfg = self.cfg.darts, self.cfg
        xi = dc.unrolled_lr if dc.unrolled_lr is not None else self.w_opt.param_groups[0]["lr"]
        alphas = list(self._alpha_of.values())
        params = [p for p in model.parameters() if p.requires_grad]
        with self._weights_only():  # the virtual step needs weight gradients only
            loss_t = self._loss(model, xt, tt)
        g_train = self.grads(loss_t, params)
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():  # virtual SGD step w' (with the optimizer's momentum and decay)
            for p, g in zip(params, g_train, strict=True):
                d = g + cfg.weight_decay * p
                buf = self.w_opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    d = d + cfg.momentum * buf
                p.sub_(xi * d)
        loss_v = self._loss(model, xv, tv)
        value = loss_v.detach().reshape(1).clone()
        grads = self.grads(loss_v, alphas + params, (value,))
        g_alpha, dw = grads[:len(alphas)], grads[len(alphas):]
        norm = torch.sqrt(sum((d * d).sum() for d in dw))
        eps = dc.hvp_eps / float(norm.clamp_min(1e-12))
        hvp: list[list[torch.Tensor]] = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, b, d in zip(params, backup, dw, strict=True):
                    p.copy_(b + sign * eps * d)
            hvp.append(self.grads(self._loss(model, xt, tt), alphas))
        with torch.no_grad():
            for p, b in zip(params, backup, strict=True):
                p.copy_(b)
        out = [ga - xi * (gp - gm) / (2 * eps) for ga, gp, gm in zip(g_alpha, hvp[0], hvp[1], strict=True)]
        return out, float(value)

    def arch_step(self, model: nn.Module, xt: torch.Tensor, tt: torch.Tensor, xv: torch.Tensor, tv: torch.Tensor) -> float:
        grads, loss = self.arch_grads(model, xt, tt, xv, tv)
        self.arch_opt.zero_grad(set_to_none=True)
        for a, g in zip(self._alpha_of.values(), grads, strict=True):
            a.grad = g
        self.arch_opt.step()
        return loss

    def weight_step(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> float:
        with self._weights_only():  # the mixers read the flag only in the forward
            return sgd_step(model, self.w_opt, x, t, self.cfg, self.weigh, self.reduce)

    # -- the search -----------------------------------------------------------------------------
    def search(self, model: nn.Module, ctx: SearchContext) -> SearchResult:
        history, start, metrics = self.start(model, ctx)
        data = ctx.data
        for epoch in range(start, self.cfg.epochs):
            self.begin_epoch(epoch)
            val = data.cycle("val", f"darts-e{epoch}")
            # warm-up: weights only, so the candidates train before the alphas judge them
            warm = epoch < self.cfg.darts.warmup_epochs
            bar = ctx.bar(data.steps("train"), f"{self.name} e{epoch + 1}/{self.cfg.epochs}" + (" warm-up" if warm else ""))
            lt = lv = 0.0
            n = 0
            with ctx.sharded(model):
                for xt, tt in data.batches("train", f"darts-e{epoch}"):
                    xv, tv = next(val)
                    if not warm:
                        lv += self.arch_step(model, xt, tt, xv, tv)
                    lt += self.weight_step(model, xt, tt)
                    n += 1
                    self.step_done(ctx, bar, lt, lv, n)
            metrics = self.epoch_done(bar, history, lt, lv, n)
            if warm:
                metrics["val_loss"] = None
            ctx.save_checkpoint(self.state_dict(model, epoch, history, metrics))
            ctx.epoch_end(epoch, metrics)
        with self.final_eval():
            final = evaluate(model, data.batches("val", "final", train_aug=False), self.cfg.kd_temperature, ctx.group)
        metrics = {**metrics, "supernet_val_loss": final["loss"], "supernet_val_acc": final["acc"], **self.info()}
        return SearchResult(self.derive(), metrics, history, self.names)

    # -- hooks for variants (GDAS, DrNAS) -----------------------------------------------------------
    def mix_weights(self, alpha: torch.Tensor) -> torch.Tensor:
        """A mixed op's candidate weights from its alphas."""
        return torch.softmax(alpha, 0)

    def arch_penalty(self) -> torch.Tensor | None:
        """A regularizer of the alphas added to the (first-order) val loss."""
        return None

    def begin_epoch(self, epoch: int) -> None:
        """Called before each epoch (also the first one after a resume)."""

    def final_eval(self) -> contextlib.AbstractContextManager[None]:
        """The supernet's state while its final val metrics are taken."""
        return contextlib.nullcontext()

    def info(self) -> dict[str, object]:
        """Settings reported in the search metrics."""
        return {"order": self.cfg.darts.order}


class SampledDarts(DartsStrategy):
    """Base of the DARTS variants that draw their op weights at random every forward (GDAS,
    DrNAS): a seeded stream per epoch, so a resumed run (checkpoints are per epoch) draws what
    the uninterrupted one drew and every process of a sharded run draws the same for its rows;
    `_gen` is None while the final val metrics are taken (the deterministic derived weights)."""

    _gen: torch.Generator | None = None

    def begin_epoch(self, epoch: int) -> None:
        self._gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, self.name, epoch))

    @contextlib.contextmanager
    def final_eval(self) -> Iterator[None]:
        gen, self._gen = self._gen, None
        try:
            yield
        finally:
            self._gen = gen
