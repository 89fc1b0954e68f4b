"""DARTS step against peers, measured side by side: dfnas's NB201 supernet (C=16, N=5 cells per
stage, batch 64, first order) against a plain hand-written supernet of the same space, and
against NNI 3.0's one-shot DARTS where NNI is installed.

    python benchmarks/darts_nb201.py [--task mnist|cifar10] [--steps 4] [--warmup 1] [--threads 2]

`--task mnist`: 1x28x28 (the bundled digits); `--task cifar10`: 3x32x32, the CIFAR-10 NB201
setting (random images: a step's cost does not depend on pixel values).

The plain supernet is how the DARTS, NB201 and NNI codes write it: every candidate of an edge
run on its input in NCHW layout and multiplied by its softmax weight, `none` skipped (it
outputs zeros); the plain first-order step takes the alpha gradient of the val loss with
`autograd.grad`, then a weight step with the alphas detached. It is also timed in channels-last
layout (dfnas's default for this space) so the gain of the layout alone is visible.

NNI is optional and never a dependency: `pip install nni==3.0 pytorch-lightning` under a
`torch==2.13.0` constraint (benchmarks/_nni_darts.py; run in that environment, or set
DFNAS_NNI_PYTHON to its interpreter and it runs there).

Peak RSS is measured for dfnas alone, in a child process running the same steps.
Targets (issue 23): dfnas step <= 0.8x NNI's (or the plain loop's without NNI), peak RSS <= 2 GiB.
The last line is one JSON object. On a machine shared with other jobs, OpenMP's spinning
threads make 2-thread timings erratic; run with `OMP_WAIT_POLICY=PASSIVE` there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def _rcb(c_in: int, c_out: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out))


class PlainCell(nn.Module):
    """Six edges, each the weighted sum of its four non-`none` candidates."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleList([nn.Identity(), _rcb(c, c, 1, 1), _rcb(c, c, 3, 1),
                           nn.AvgPool2d(3, 1, 1, count_include_pad=False)]) for _ in range(6))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        nodes, e = [x], 0
        for i in range(1, 4):
            total = None
            for j in range(i):
                for k, op in enumerate(self.edges[e], start=1):  # column 0 of w is `none`
                    y = op(nodes[j]) * w[e, k]
                    total = y if total is None else total + y
                e += 1
            nodes.append(total)
        return nodes[-1]


class PlainReduction(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.a, self.b = _rcb(c_in, c_out, 3, 2), _rcb(c_out, c_out, 3, 1)
        self.short = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.short(x) + self.b(self.a(x))


class PlainNB201(nn.Module):
    """The NB201 supernet, written plainly: one (6, 5) alpha matrix shared by every cell."""

    def __init__(self, in_channels: int, channels: int = 16, cells: int = 5, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        blocks: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage:
                blocks.append(PlainReduction(c, 2 * c))
                c *= 2
            blocks += [PlainCell(c) for _ in range(cells)]
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())
        self.fc = nn.Linear(c, classes)
        self.alpha = nn.Parameter(1e-3 * torch.randn(6, len(OPS)))
        self.frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.alpha.detach() if self.frozen else self.alpha, -1)
        x = self.stem(x)
        for b in self.blocks:
            x = b(x, w) if isinstance(b, PlainCell) else b(x)
        return self.fc(F.adaptive_avg_pool2d(self.head(x), 1).flatten(1))


def plain_step(net: PlainNB201, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """A first-order DARTS step of the plain supernet (the same batch serves as train and val)."""
    weights = [p for n, p in net.named_parameters() if n != "alpha"]
    arch_opt = torch.optim.Adam([net.alpha], 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    w_opt = torch.optim.SGD(weights, 0.025, momentum=0.9, weight_decay=3e-4)

    def step() -> None:
        (net.alpha.grad,) = torch.autograd.grad(F.cross_entropy(net(x), y), [net.alpha])
        arch_opt.step()
        w_opt.zero_grad(set_to_none=True)
        net.frozen = True
        F.cross_entropy(net(x), y).backward()
        net.frozen = False
        nn.utils.clip_grad_norm_(weights, 5.0)
        w_opt.step()
    return step


def dfnas_setup(task: str, threads: int) -> tuple[Callable[[], None], Callable[[], None], tuple[int, int, int]]:
    """(DARTS step, bare forward+backward) of dfnas's own search path on `task`."""
    from dfnas.config import from_dict
    from dfnas.data.sources import Source, cifar10_spec, load_source
    from dfnas.spaces import to_memory_format
    from dfnas.strategies import create_strategy
    from dfnas.strategies.config import SearchConfig
    from dfnas.strategies.context import SearchContext
    from dfnas.strategies.runner import build_supernet
    from dfnas.strategies.search_data import SearchData
    from dfnas.training.losses import target_loss

    torch.set_num_threads(threads)
    if task == "mnist":
        source = load_source("mnist")
    else:
        g = torch.Generator().manual_seed(0)
        source = Source("random-cifar10", torch.randint(0, 256, (1024, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (1024,), generator=g), cifar10_spec(), identity={"source": "random"})
    cfg = from_dict(SearchConfig, {"algo": "darts", "space": "nb201", "batch_size": 64, "darts": {"order": 1},
                                   "space_args": {"channels": 16, "cells_per_stage": 5}})
    net, _ = build_supernet(cfg, source)
    to_memory_format(net, cfg.channels_last)  # as `dfnas search` runs it
    data = SearchData(source, cfg)
    strat = create_strategy("darts", cfg)
    strat.setup(net, SearchContext(cfg, data, progress=False))
    train, val = data.cycle("train", "bench"), data.cycle("val", "bench")

    def bare() -> None:
        x, t = next(train)
        net.zero_grad(set_to_none=True)
        target_loss(net(x), t, cfg.kd_temperature).backward()

    def step() -> None:
        (xt, tt), (xv, tv) = next(train), next(val)
        strat.arch_step(net, xt, tt, xv, tv)
        strat.weight_step(net, xt, tt)
    s = source.spec
    return step, bare, (s.channels, s.height, s.width)


def median(v: list[float]) -> float:
    return sorted(v)[len(v) // 2]


def rss_child(task: str, steps: int, threads: int) -> float:
    """Peak RSS (GiB) of a process that only runs dfnas's DARTS steps."""
    out = subprocess.run([sys.executable, __file__, "--task", task, "--threads", str(threads), "--rss-only",
                          "--steps", str(steps)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def nni_reference(task: str, steps: int, warmup: int, threads: int) -> dict | None:
    """NNI's step in this interpreter, or in DFNAS_NNI_PYTHON; None where NNI is not installed."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_nni_darts.py")
    python = os.environ.get("DFNAS_NNI_PYTHON")
    if python is None:
        try:
            import nni  # noqa: F401
        except ImportError:
            return None
        python = sys.executable
    out = subprocess.run([python, here, "--task", task, "--steps", str(steps), "--warmup", str(warmup),
                          "--threads", str(threads)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"NNI reference failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=("mnist", "cifar10"), default="mnist")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.rss_only:
        step, _, _ = dfnas_setup(a.task, a.threads)
        for _ in range(a.warmup + a.steps):
            step()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        return
    rss = rss_child(a.task, 2, a.threads)  # first: a forked child's peak RSS starts at its parent's size
    step, bare, shape = dfnas_setup(a.task, a.threads)

    torch.manual_seed(0)
    x, y = torch.randn(64, *shape), torch.randint(0, 10, (64,))
    plain = PlainNB201(shape[0])
    plain_cl = PlainNB201(shape[0]).to(memory_format=torch.channels_last)
    runs: dict[str, Callable[[], None]] = {
        "dfnas_step": step,
        "dfnas_bare": bare,
        "plain_step": plain_step(plain, x, y),
        "plain_step_channels_last": plain_step(plain_cl, x, y),
    }

    def plain_bare() -> None:
        plain.zero_grad(set_to_none=True)
        F.cross_entropy(plain(x), y).backward()
    runs["plain_bare"] = plain_bare
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(a.warmup + a.steps):  # interleaved, so load from other processes hits all alike
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if r >= a.warmup:
                times[k].append(time.perf_counter() - t0)
    t = {k: round(median(v), 3) for k, v in times.items()}
    nni = nni_reference(a.task, a.steps, a.warmup, a.threads)
    ref_name, ref = ("nni_step_s", nni["nni_step_s"]) if nni else ("plain_step_s", t["plain_step"])
    ratio = t["dfnas_step"] / ref
    for k, v in t.items():
        print(f"{k:26s} {v:7.3f} s")
    if nni:
        print(f"{'nni_step':26s} {nni['nni_step_s']:7.3f} s   (NNI {nni.get('nni_version')})")
    print(f"dfnas step / {ref_name[:-2]}: {ratio:.2f}  (target <= 0.8); dfnas peak RSS {rss:.2f} GiB (target <= 2.0); "
          f"task {a.task}, threads {a.threads}")
    print(json.dumps({"metric": "darts_nb201_step_over_reference", "value": round(ratio, 3), "reference": ref_name,
                      "ratio": round(ratio, 3), "task": a.task, **{f"{k}_s": v for k, v in t.items()},
                      **({"nni_step_s": nni["nni_step_s"], "nni_bare_s": nni.get("nni_bare_s")} if nni else {}),
                      "step_over_plain": round(t["dfnas_step"] / t["plain_step"], 3),
                      "step_over_plain_channels_last": round(t["dfnas_step"] / t["plain_step_channels_last"], 3),
                      "peak_rss_gib": round(rss, 3), "target_ratio": 0.8, "target_peak_rss_gib": 2.0,
                      "ratio_ok": ratio <= 0.8, "rss_ok": rss <= 2.0, "threads": a.threads,
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}))


if __name__ == "__main__":
    main()
