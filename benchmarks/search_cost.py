"""Cost of one search step per strategy at a fixed MNIST-scale setting (batch 64, 1x28x28,
each space at its default MNIST sizes), one child process per strategy so each has its own
peak RSS:

    python benchmarks/search_cost.py [--steps 3] [--threads 1]
    python benchmarks/search_cost.py --task cifar10 [--space-args '{"channels": 16, "cells_per_stage": 5}']

`--task cifar10` times every strategy on NAS-Bench-201 at 3x32x32, 10 classes (random pixels:
the cost does not depend on them), in the CIFAR proxy regime of docs/performance.md (NB201
C = 16, one cell per stage, batch 64) unless `--space-args` sets another; zero-shot is timed
per scored candidate.

Per strategy: seconds per search step (DARTS, GDAS, DrNAS: arch step on a val batch + weight
step on a train batch; ProxylessNAS: weight step on one sampled path + two-path arch step; SPOS: one
single-path supernet step, plus one evolution candidate = BN recalibration + scoring;
random: one training step of a sampled fixed network), the peak activation memory (bytes
of the tensors autograd saves for backward in the step's largest graph, device-independent)
and the process's peak RSS. Also the DARTS second/first order time ratio, and ProxylessNAS
vs DARTS activation memory on the same op set (the proxyless MBConv space; target <= 1/3).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch

CASES = {
    "darts1@nb201": ("darts", "nb201", 1),
    "darts2@nb201": ("darts", "nb201", 2),
    "darts1@proxyless": ("darts", "proxyless", 1),
    "proxyless@proxyless": ("proxyless", "proxyless", 1),
    "spos@spos": ("spos", "spos", 1),
    "random@nb201": ("random", "nb201", 1),
}
CIFAR_CASES = {
    "darts1@nb201": ("darts", "nb201", 1),
    "darts2@nb201": ("darts", "nb201", 2),
    "gdas@nb201": ("gdas", "nb201", 1),
    "drnas@nb201": ("drnas", "nb201", 1),
    "proxyless@nb201": ("proxyless", "nb201", 1),
    "spos@nb201": ("spos", "nb201", 1),
    "random@nb201": ("random", "nb201", 1),
    "zeroshot@nb201": ("zeroshot", "nb201", 1),
}
CIFAR_REGIME = {"channels": 16, "cells_per_stage": 1}


def cifar_like_source():
    """2,048 random 3x32x32 images of 10 classes: the step cost of a CIFAR-10 search."""
    from dfnas.data.sources import Source, cifar10_spec

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2048, 3, 32, 32), generator=g, dtype=torch.uint8)
    return Source("cifar10-shaped noise", x, torch.arange(2048) % 10, cifar10_spec(), identity={"source": "noise"})


class SavedBytes:
    """Bytes of distinct storages autograd saves for backward while the context is open."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        self.seen[s.data_ptr()] = s.nbytes()
        return t

    def __enter__(self) -> SavedBytes:
        self.ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ctx.__exit__(*exc)

    @property
    def mib(self) -> float:
        return sum(self.seen.values()) / 2**20


def child(case: str, steps: int, warmup: int, task: str = "mnist", space_args: dict | None = None) -> dict:
    from dfnas.config import from_dict
    from dfnas.data.sources import load_source
    from dfnas.spaces.base import apply_arch, fix, sample_arch
    from dfnas.strategies import create_strategy
    from dfnas.strategies.config import SearchConfig
    from dfnas.strategies.context import SearchContext
    from dfnas.strategies.runner import build_supernet
    from dfnas.strategies.search_data import SearchData
    from dfnas.training.losses import target_loss

    algo, space, order = (CIFAR_CASES if task == "cifar10" else CASES)[case]
    cfg = from_dict(SearchConfig, {"algo": algo, "space": space, "batch_size": 64, "darts": {"order": order},
                                   "spos": {"bn_batches": 4, "val_batches": 4},
                                   "space_args": space_args or {}})
    data = SearchData(cifar_like_source() if task == "cifar10" else load_source("mnist"), cfg)
    net, _ = build_supernet(cfg, data.source)
    strat = create_strategy(algo, cfg)
    ctx = SearchContext(cfg, data, progress=False)
    train, val = data.cycle("train", "bench"), data.cycle("val", "bench")
    phases: list[Callable[[], None]]
    extra: dict[str, float] = {}
    if algo in ("darts", "gdas", "drnas"):
        strat.setup(net, ctx)
        strat.begin_epoch(0)
        def arch() -> None:
            (xt, tt), (xv, tv) = next(train), next(val)
            strat.arch_step(net, xt, tt, xv, tv)
        def weights() -> None:
            strat.weight_step(net, *next(train))
        phases = [arch, weights]
    elif algo == "proxyless":
        strat.setup(net, ctx)
        g = torch.Generator().manual_seed(0)
        phases = [lambda: strat.weight_step(net, *next(train), g, False), lambda: strat.arch_step(net, *next(val), g)]
    elif algo == "spos":
        strat.setup(net, ctx)
        rng = random.Random(0)
        phases = [lambda: strat.train_step(net, *next(train), rng)]
    elif algo == "zeroshot":
        strat.prepare(net, ctx)
        archs = iter(range(10**6))
        phases = [lambda: strat.score(net, ctx, sample_arch(net, random.Random(next(archs))), 0)]
    else:
        arch_ = sample_arch(net, random.Random(0))
        apply_arch(net, arch_)
        fixed = fix(net, arch_)
        opt = torch.optim.SGD(fixed.parameters(), lr=0.025, momentum=0.9)
        def rstep() -> None:
            x, t = next(train)
            opt.zero_grad(set_to_none=True)
            target_loss(fixed(x), t, 3.0).backward()
            opt.step()
        phases = [rstep]
    for _ in range(warmup):
        for p in phases:
            p()
    times, act = [], 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        for p in phases:
            with SavedBytes() as sb:
                p()
            act = max(act, sb.mib)
        times.append(time.perf_counter() - t0)
    if algo == "spos":
        t0 = time.perf_counter()
        strat.score(net, ctx, sample_arch(net, random.Random(1)))
        extra["evolution_candidate_s"] = round(time.perf_counter() - t0, 4)
    return {"case": case, "step_s": round(sorted(times)[len(times) // 2], 4), "activation_mib": round(act, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), **extra}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--task", choices=("mnist", "cifar10"), default="mnist")
    ap.add_argument("--space-args", default=None, help="JSON space_args for NB201 with --task cifar10")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    space_args = json.loads(a.space_args) if a.space_args else (CIFAR_REGIME if a.task == "cifar10" else None)
    if a.child:
        torch.manual_seed(0)
        print(json.dumps(child(a.child, a.steps, a.warmup, a.task, space_args)))
        return
    res = {}
    for case in (CIFAR_CASES if a.task == "cifar10" else CASES):
        out = subprocess.run([sys.executable, __file__, "--child", case, "--steps", str(a.steps),
                              "--warmup", str(a.warmup), "--threads", str(a.threads), "--task", a.task,
                              *(["--space-args", json.dumps(space_args)] if space_args else [])],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        res[case] = r
        print(f"{case:22s} step {r['step_s']:.3f} s  activations {r['activation_mib']:8.1f} MiB  "
              f"peak RSS {r['peak_rss_mib']:7.1f} MiB" + (f"  evolution candidate {r['evolution_candidate_s']:.3f} s"
                                                       if "evolution_candidate_s" in r else ""), flush=True)
    second_first = res["darts2@nb201"]["step_s"] / res["darts1@nb201"]["step_s"]
    if a.task == "cifar10":
        print(f"DARTS second/first order step time: {second_first:.2f}x")
        print(json.dumps({"metric": "darts1_nb201_cifar10_step_s", "value": res["darts1@nb201"]["step_s"],
                          "darts_second_over_first_order": round(second_first, 3), "threads": a.threads,
                          "steps": a.steps, "space_args": space_args, "per_strategy": res}))
        return
    mem = res["proxyless@proxyless"]["activation_mib"] / res["darts1@proxyless"]["activation_mib"]
    print(f"DARTS second/first order step time: {second_first:.2f}x; "
          f"ProxylessNAS/DARTS activation memory on the MBConv op set: {mem:.3f} (target <= 0.333)")
    print(json.dumps({"metric": "proxyless_over_darts_activation_memory", "value": round(mem, 4),
                      "reference": round(1 / 3, 4), "ratio": round(mem * 3, 4),
                      "darts_second_over_first_order": round(second_first, 3), "threads": a.threads,
                      "steps": a.steps, "per_strategy": res}))


if __name__ == "__main__":
    main()
