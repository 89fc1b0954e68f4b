"""Ranking fidelity: does a supernet trained on synthetic data rank architectures like one
trained on real data? (The ranking check of the paper's protocol.)

Two SPOS-style single-path supernets share the seed, the initial weights, the sequence of
sampled paths and the number of SGD steps; only the data differs (real: cross-entropy,
synthetic: KD to the stored logits). Each architecture is scored exactly as the SPOS
strategy scores an evolution candidate (BatchNorm recalibration on that supernet's own
training batches, then `spos.score` — top-1 or loss — on its own val split); the taus of the
other score are kept beside the headline's.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau

from dfnas.data.sources import Source
from dfnas.io import atomic_save, derive_seed
from dfnas.spaces import to_memory_format
from dfnas.spaces.base import Arch
from dfnas.spaces.base import sample_distinct as _sample_distinct
from dfnas.strategies.config import SearchConfig
from dfnas.strategies.context import SearchContext
from dfnas.strategies.runner import build_supernet
from dfnas.strategies.search_data import SearchData
from dfnas.strategies.spos import SposStrategy, candidate_score


def tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall tau-b (ties counted as in scipy); nan when either side is constant."""
    return float(kendalltau(list(a), list(b)).statistic)


class Supernet:
    """One single-path supernet trained on one source, scored with the SPOS strategy's functions."""

    def __init__(self, source: Source, cfg: SearchConfig, teacher: torch.nn.Module | None = None) -> None:
        """`teacher`: an online teacher (KD to its logits on every augmented view, as `dfnas search --teacher`)."""
        # the supernet recipe of `cfg` trained single-path (SPOS works in every space)
        self.cfg = dataclasses.replace(cfg, algo="spos")
        self.model, self.space_cfg = build_supernet(self.cfg, source)  # same seed -> same initial weights
        to_memory_format(self.model, self.cfg.channels_last).to(self.cfg.device)
        self.data = SearchData(source, self.cfg, self.cfg.device, teacher=teacher)
        self.ctx = SearchContext(self.cfg, self.data, progress=False)
        self.strategy = SposStrategy(self.cfg)
        self.trained: dict[str, torch.Tensor] = {}

    def train(self, steps: int, epochs: int, cache: Path | None = None) -> float:
        """`steps` single-path SGD steps in `epochs` cosine epochs; returns seconds. With `cache`
        (a file), the trained weights are saved there, and a later call loads them instead:
        the ranking check of a killed bench resumes after its last trained supernet."""
        if cache is not None and cache.is_file():
            state = torch.load(cache, map_location=self.cfg.device, weights_only=True)
            self.trained = state["trained"]
            return float(state["seconds"])
        t0 = time.perf_counter()
        self.model.train()
        self.strategy.setup(self.model, self.ctx)
        rng = random.Random(derive_seed(self.cfg.seed, "bench-paths"))  # the same paths for both supernets
        stream = self.data.cycle("train", "bench")
        per_epoch = max(1, steps // epochs)
        for _ in range(epochs):
            for _ in range(per_epoch):
                x, t = next(stream)
                self.strategy.train_step(self.model, x, t, rng)
            self.strategy.sched.step()
        self.trained = {k: v.clone() for k, v in self.model.state_dict().items()}
        seconds = time.perf_counter() - t0
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_save(cache, lambda tmp: torch.save({"trained": self.trained, "seconds": seconds}, tmp))
        return seconds

    def measure(self, arch: Arch, val: SearchData | None = None) -> dict[str, float]:
        """Loss and top-1 after BN recalibration on this supernet's own train batches, as SPOS
        scores an evolution candidate (`val`: on another source's val split)."""
        self.model.load_state_dict(self.trained)
        return self.strategy.measure(self.model, self.ctx, arch, val)


def sample_distinct(model: torch.nn.Module, n: int, seed: int, first: Sequence[Arch] = ()) -> list[Arch]:
    """`first` (deduplicated) then fresh distinct samples up to `n` architectures (at most 100 n
    draws), from the bench's own stream of `seed`."""
    return _sample_distinct(model, n, random.Random(derive_seed(seed, "bench-sample")), 100 * n, first=first)


def ranking_check(real: Source, synthetic: Source, cfg: SearchConfig, archs_n: int, steps: int, epochs: int,
                  first: Sequence[Arch] = (), teacher: torch.nn.Module | None = None,
                  reseeded: bool = False, others: dict[str, Source] | None = None,
                  cache: Path | None = None) -> dict[str, Any]:
    """Train both supernets, score the same architectures with each; taus and raw scores.

    `teacher` (an OnlineTeacher): the synthetic supernet learns from the teacher's logits on
    each augmented view instead of the stored ones (the real supernet always uses labels).
    `reseeded`: a third supernet on the same real data with another seed (other initial
    weights, paths and batches); its tau with the first is what real data itself achieves, the
    ceiling for synthetic vs real. Synthetic vs reseeded real differs in data *and* seed, as the
    ceiling differs in seed: the synthetic and real supernets share initial weights and paths,
    which on their own make rankings agree (measured: same seed 0.61, other seed -0.11).
    `others`: more supernets by name (teacher-labelled noise, say), on the synthetic one's footing.
    `cache`: a folder for each trained supernet (NAME.pt), loaded instead of retrained; it must
    be this call's own (its inputs only), as the bench's keyed folder is."""
    nets = {"real": Supernet(real, cfg), "synthetic": Supernet(synthetic, cfg, teacher)}
    for name, src in (others or {}).items():
        nets[name] = Supernet(src, cfg, teacher)
    if reseeded:
        nets["real_reseeded"] = Supernet(real, dataclasses.replace(cfg, seed=derive_seed(cfg.seed, "reseeded")))
    seconds = {k: round(n.train(steps, epochs, None if cache is None else cache / f"{k}.pt"), 1)
               for k, n in nets.items()}
    archs = sample_distinct(nets["real"].model, archs_n, cfg.seed, first)
    t0 = time.perf_counter()
    measured = {k: [n.measure(a) for a in archs] for k, n in nets.items()}
    measured["synthetic_on_real_val"] = [nets["synthetic"].measure(a, nets["real"].data) for a in archs]

    def scores_by(metric: str) -> dict[str, list[float]]:
        return {k: [candidate_score(m, metric) for m in ms] for k, ms in measured.items()}

    def taus(sc: dict[str, list[float]]) -> dict[str, float]:
        t = {"tau_synthetic_vs_real": tau(sc["synthetic"], sc["real"]),
             "tau_synthetic_weights_real_val_vs_real": tau(sc["synthetic_on_real_val"], sc["real"])}
        t.update({f"tau_{name}_vs_real": tau(sc[name], sc["real"]) for name in others or {}})
        if reseeded:  # the ceiling, and synthetic judged on the same footing: another seed than the reference
            t["tau_real_vs_real_reseeded"] = tau(sc["real_reseeded"], sc["real"])
            t["tau_synthetic_vs_real_reseeded"] = tau(sc["synthetic"], sc["real_reseeded"])
        return t

    metric = cfg.spos.score
    other = "top1" if metric == "loss" else "loss"
    scores = scores_by(metric)
    return {
        "space": cfg.space, "space_cfg": nets["real"].space_cfg, "archs": archs, "score": metric, "scores": scores,
        "measured": measured, **taus(scores), "other_score": {"score": other, **taus(scores_by(other))},
        "train_seconds": seconds, "score_seconds": round(time.perf_counter() - t0, 1), "steps": steps,
    }
