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
from collections.abc import Callable

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
        rc = self.cfg.random
        return self.train_and_score(supernet, ctx, arch, f"random-{i}", rc.train_steps, rc.val_batches)

    def train_and_score(self, supernet: nn.Module, ctx: SearchContext, arch: Arch, stream: str, steps: int,
                        val_batches: int) -> dict[str, float]:
        """`arch` cut out of `supernet`, trained from scratch `steps` SGD steps (cosine) on the
        train split, then evaluated on `val_batches` of the val split (0 = all)."""
        cfg = self.cfg
        net = copy.deepcopy(supernet)
        apply_arch(net, arch)
        net = fix(net, arch).to(ctx.device).train()
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        batches = ctx.data.cycle("train", stream)
        loss = torch.zeros(())
        for step in range(steps):
            for gr in opt.param_groups:
                gr["lr"] = cosine(step, steps, cfg.lr, cfg.lr_min)
            x, t = next(batches)
            loss = target_loss(net(x), t, cfg.kd_temperature)
            optimizer_step(opt, loss, net, cfg.grad_clip)
        res = evaluate(net, ctx.data.batches("val", "score", train_aug=False, limit=val_batches),
                       cfg.kd_temperature)
        return {"val_acc": res["acc"], "val_loss": res["loss"], "train_loss": loss.item()}

    def score_all(self, model: nn.Module, ctx: SearchContext, archs: list[Arch], done: list[dict],
                  score: Callable[[nn.Module, SearchContext, Arch, int], dict[str, float]],
                  rank: Callable[[dict], float], save: Callable[[list[dict]], dict], desc: str) -> list[dict]:
        """Score `archs` after the `done` ones in rounds of one candidate per process (candidate i
        on rank i % N), a checkpoint (`save(results)`) per round."""
        results = list(done)
        bar = ctx.bar(len(archs), desc)
        bar.update(len(results))
        group = ctx.group
        for first in range(len(results), len(archs), group.world_size):
            todo = list(range(first, min(first + group.world_size, len(archs))))
            for i, r in zip(todo, group.map(lambda i: score(model, ctx, archs[i], i), todo), strict=True):
                results.append({"arch": arch_key(archs[i]), **r})
                bar.update(1)
                bar.set_postfix(score=f"{rank(r):.3f}", best=f"{max(rank(x) for x in results):.3f}")
                ctx.step_end(r)
                ctx.save_checkpoint(save(results))
                ctx.epoch_end(i, r)
        bar.close()
        return results

    def search(self, model: nn.Module, ctx: SearchContext) -> SearchResult:
        model.to(ctx.device)
        archs = self.draw(model, ctx)
        self.prepare(model, ctx)
        st = ctx.load_checkpoint()
        results = self.score_all(model, ctx, archs, st["results"] if st is not None else [], self.score, self.rank,
                                 lambda rs: {"algo": self.name, "results": rs}, f"{self.name} search")
        return self.finish(model, ctx, results, st)

    def finish(self, model: nn.Module, ctx: SearchContext, results: list[dict], st: dict | None) -> SearchResult:
        """The pick from every candidate's result (zero-shot refines a shortlist here)."""
        best = max(results, key=self.rank)  # the first of equal scores: draw order
        return SearchResult(json.loads(best["arch"]), self.summary(best, results))
