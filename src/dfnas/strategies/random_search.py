"""Random search, the baseline every NAS result is compared against (Li & Talwalkar, 2019).

`random.samples` architectures drawn uniformly (under `spos.flops_limit` if set); each is
cut out of a freshly initialised supernet with `fix`, trained from scratch for
`random.train_steps` SGD steps (cosine) on the train split and scored on the val split by
`random.score`: minus the val loss (default) or top-1, which ties on small val splits and
saturates on teacher labels. The best is kept. Checkpoint after every scored sample.
"""

from __future__ import annotations

import copy
import json
import random

import torch
from torch import nn

from dfnas.io import derive_seed
from dfnas.spaces.base import Arch, apply_arch, arch_key, fix, sample_distinct
from dfnas.strategies import register_strategy
from dfnas.strategies.base import SearchResult, Strategy
from dfnas.strategies.context import SearchContext
from dfnas.strategies.costs import flops_cost_model
from dfnas.strategies.supernet import candidate_score
from dfnas.training.loop import cosine, evaluate, optimizer_step
from dfnas.training.losses import target_loss


@register_strategy
class RandomStrategy(Strategy):
    """Also the loop of every strategy that scores sampled candidates one by one (zero-shot):
    a subclass sets `samples`, `score`, `rank` and `summary`."""

    name = "random"

    @property
    def samples(self) -> int:
        return self.cfg.random.samples

    def draw(self, model: nn.Module, ctx: SearchContext) -> list[Arch]:
        limit = self.cfg.spos.flops_limit
        s = ctx.data.spec
        cost = flops_cost_model(model, (s.channels, s.height, s.width)) if limit is not None else None
        rng = random.Random(derive_seed(self.cfg.seed, f"{self.name}-samples"))
        return sample_distinct(model, self.samples, rng, self.samples * 50,
                               None if cost is None else lambda a: a if cost.of(a) <= limit else None)

    def rank(self, r: dict) -> float:
        """Higher is better."""
        return candidate_score({"acc": r["val_acc"], "loss": r["val_loss"]}, self.cfg.random.score)

    def summary(self, best: dict, results: list[dict]) -> dict:
        return {"val_acc": best["val_acc"], "val_loss": best["val_loss"], "samples": len(results),
                "score": self.cfg.random.score, "all_val_acc": [r["val_acc"] for r in results],
                "all_val_loss": [r["val_loss"] for r in results]}

    def prepare(self, model: nn.Module, ctx: SearchContext) -> None:
        """Set-up before the first candidate is scored (after a resume too)."""

    def score(self, supernet: nn.Module, ctx: SearchContext, arch: Arch, i: int) -> dict[str, float]:
        rc, cfg = self.cfg.random, self.cfg
        net = copy.deepcopy(supernet)
        apply_arch(net, arch)
        net = fix(net, arch).to(ctx.device).train()
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        stream = ctx.data.cycle("train", f"random-{i}")
        loss = torch.zeros(())
        for step in range(rc.train_steps):
            for gr in opt.param_groups:
                gr["lr"] = cosine(step, rc.train_steps, cfg.lr, cfg.lr_min)
            x, t = next(stream)
            loss = target_loss(net(x), t, cfg.kd_temperature)
            optimizer_step(opt, loss, net, cfg.grad_clip)
        res = evaluate(net, ctx.data.batches("val", "score", train_aug=False, limit=rc.val_batches),
                       cfg.kd_temperature)
        return {"val_acc": res["acc"], "val_loss": res["loss"], "train_loss": loss.item()}

    def search(self, model: nn.Module, ctx: SearchContext) -> SearchResult:
        model.to(ctx.device)
        archs = self.draw(model, ctx)
        self.prepare(model, ctx)
        st = ctx.load_checkpoint()
        results: list[dict] = st["results"] if st is not None else []
        bar = ctx.bar(len(archs), f"{self.name} search")
        bar.update(len(results))
        group = ctx.group
        # rounds of one candidate per process (candidate i on rank i % N); a checkpoint per round
        for first in range(len(results), len(archs), group.world_size):
            todo = list(range(first, min(first + group.world_size, len(archs))))
            for i, r in zip(todo, group.map(lambda i: self.score(model, ctx, archs[i], i), todo), strict=True):
                results.append({"arch": arch_key(archs[i]), **r})
                bar.update(1)
                bar.set_postfix(score=f"{self.rank(r):.3f}", best=f"{max(self.rank(x) for x in results):.3f}")
                ctx.step_end(r)
                ctx.save_checkpoint({"algo": self.name, "results": results})
                ctx.epoch_end(i, r)
        bar.close()
        best = max(results, key=self.rank)  # the first of equal scores: draw order
        return SearchResult(json.loads(best["arch"]), self.summary(best, results))
