"""Single Path One-Shot (Guo et al., ECCV 2020): uniform single-path supernet + evolution.

Phase 1: every step draws one architecture uniformly (optionally rejection-sampled until its
FLOPs fall in `spos.flops_range`), activates it with `apply_arch` and takes one SGD step on
the train split; only that path runs and gets gradients.
Phase 2: `Evolution` under `spos.flops_limit`; every candidate gets its BatchNorm statistics
recalibrated on the same fixed training batches before it is scored (`spos.score`: minus the
val loss, KD to the stored soft labels for synthetic data; or top-1 as in the paper), so
candidates are compared with statistics of their own path, not the supernet's mixture.
Checkpoints: per epoch in phase 1, per generation in phase 2.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

from dfnas.errors import DfnasError
from dfnas.io import derive_seed
from dfnas.spaces.base import Arch, apply_arch, arch_valid, sample_arch
from dfnas.strategies import register_strategy
from dfnas.strategies.base import SearchResult, Strategy
from dfnas.strategies.context import SearchContext
from dfnas.strategies.costs import CostModel, flops_cost_model
from dfnas.strategies.evolution import Evolution
from dfnas.strategies.search_data import SearchData
from dfnas.strategies.supernet import candidate_score, sgd_step, weight_optimizer
from dfnas.training.loop import evaluate, recalibrate_bn


@register_strategy
class SposStrategy(Strategy):
    name = "spos"

    def setup(self, model: nn.Module, ctx: SearchContext) -> None:
        s = ctx.data.spec
        self.cost: CostModel = flops_cost_model(model, (s.channels, s.height, s.width))
        self.w_opt, self.sched = weight_optimizer(model, self.cfg)

    def sample(self, model: nn.Module, rng: random.Random) -> Arch:
        """Uniform path; with a FLOPs range, redraw until it falls inside (rejection sampling)."""
        rngs = self.cfg.spos.flops_range
        for _ in range(1000):
            arch = sample_arch(model, rng)
            if rngs is None or rngs[0] <= self.cost.of(arch) <= rngs[1]:
                return arch
        raise DfnasError(f"no architecture found within spos.flops_range={list(rngs)} MFLOPs after 1000 draws; widen the range")

    def score(self, model: nn.Module, ctx: SearchContext, arch: Arch) -> float:
        """BN recalibration on fixed train batches, then `spos.score` on fixed val batches."""
        return candidate_score(self.measure(model, ctx, arch), self.cfg.spos.score)

    def measure(self, model: nn.Module, ctx: SearchContext, arch: Arch, val: SearchData | None = None) -> dict[str, float]:
        """Val loss and top-1 of `arch` after BN recalibration on this data's train batches
        (`val`: score on another source's val split instead of this one's)."""
        sc = self.cfg.spos
        apply_arch(model, arch)
        recalibrate_bn(model, ctx.data.batches("train", "bn-recal", train_aug=False, limit=sc.bn_batches))
        return evaluate(model, (val or ctx.data).batches("val", "score", train_aug=False, limit=sc.val_batches),
                        self.cfg.kd_temperature)

    def train_step(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, rng: random.Random) -> float:
        """One SGD step of the supernet on one uniformly drawn path."""
        apply_arch(model, self.sample(model, rng))
        return sgd_step(model, self.w_opt, x, t, self.cfg, self.weigh, self.reduce)

    def train_supernet(self, model: nn.Module, ctx: SearchContext, start: int,
                       metrics: dict[str, float]) -> dict[str, float]:
        data = ctx.data
        for epoch in range(start, self.cfg.epochs):
            rng = random.Random(derive_seed(self.cfg.seed, "spos-paths", epoch))
            bar = ctx.bar(data.steps("train"), f"spos supernet e{epoch + 1}/{self.cfg.epochs}")
            lt, n = 0.0, 0
            with ctx.sharded(model):  # every process draws the same path: same seeded rng
                for x, t in data.batches("train", f"spos-e{epoch}"):
                    lt += self.train_step(model, x, t, rng)
                    n += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{lt / n:.3f}")
                    ctx.step_end({"train_loss": lt / n})
            bar.close()
            self.sched.step()
            metrics = {"train_loss": lt / max(n, 1)}
            ctx.save_checkpoint(self._state(model, "train", epoch, None, metrics))
            ctx.epoch_end(epoch, metrics)
        return metrics

    def _state(self, model: nn.Module, phase: str, epoch: int, evo: dict[str, Any] | None,
               metrics: dict[str, float]) -> dict[str, Any]:
        return {"algo": self.name, "phase": phase, "epoch": epoch, "model": model.state_dict(), "metrics": metrics,
                "w_opt": self.w_opt.state_dict(), "sched": self.sched.state_dict(), "evolution": evo}

    def search(self, model: nn.Module, ctx: SearchContext) -> SearchResult:
        model.to(ctx.device).train()
        self.ctx = ctx
        self.setup(model, ctx)
        st = ctx.load_checkpoint()
        start, evo_state, metrics = 0, None, {}
        if st is not None:
            model.load_state_dict(st["model"])
            self.w_opt.load_state_dict(st["w_opt"])
            self.sched.load_state_dict(st["sched"])
            start, evo_state, metrics = st["epoch"] + 1, st["evolution"], st["metrics"]
        metrics = self.train_supernet(model, ctx, start, metrics)
        trained = {k: v.clone() for k, v in model.state_dict().items()}
        final_epoch = self.cfg.epochs - 1
        sc = self.cfg.spos
        evo = Evolution(lambda r: sample_arch(model, r), self.cost.of, sc.flops_limit, sc.population, sc.topk,
                        sc.mutation, sc.crossover, sc.mutation_prob, self.cfg.seed,
                        valid=lambda a: arch_valid(model, a))
        bar = ctx.bar(sc.generations, "spos evolution")

        def on_gen(s: dict[str, Any]) -> None:
            bar.update(1)
            bar.set_postfix(best=f"{s['history'][-1]['best']:.4f}")
            model.load_state_dict(trained)  # save the trained supernet, not the last candidate's BN stats
            ctx.save_checkpoint(self._state(model, "evolve", final_epoch, s, metrics))
            ctx.log({"generation": s["generation"], **s["history"][-1]})
            ctx.step_end({"generation": s["generation"], "best": s["history"][-1]["best"]})

        def score(arch: Arch) -> float:
            model.load_state_dict(trained)
            return self.score(model, ctx, arch)

        # candidates are independent: each process scores its own, on whole batches
        res = evo.run(score, evo_state, sc.generations, on_gen, map_fn=ctx.group.map)
        bar.close()
        model.load_state_dict(trained)
        best = res["best"]
        metrics = {**metrics, "val_score": res["best_score"], "evaluated": len(res["scores"]),
                   "evolution": res["history"], "flops_limit": sc.flops_limit, "MFLOPs_estimate": self.cost.of(best)}
        return SearchResult(best, metrics)
