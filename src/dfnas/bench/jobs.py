"""The bench's jobs: each measures one thing and returns a JSON-able record.

Every job is one unit of the protocol that `dfnas.bench.protocol` runs once and records
(keyed by its inputs), so a killed bench resumes after the last finished one: the teacher's
test accuracy, the synthesis of one synthetic or plain set, one search of one algorithm on one
data source, the zero-shot baseline, the final training of one architecture and the ranking
check. The job keys' helpers live here too (`search_key`, `synthesis_seed`), next to what
they describe.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dfnas.bench.config import draw_read, draw_suffix
from dfnas.bench.config import repeat_suffix as _rep
from dfnas.bench.verdicts import finite, finite_taus
from dfnas.config import neutral_dict, to_dict
from dfnas.data.sources import Source
from dfnas.errors import DfnasError
from dfnas.io import derive_seed
from dfnas.strategies.config import SearchConfig

if TYPE_CHECKING:
    from dfnas.bench.protocol import Bench

STRATEGY_SECTIONS = ("darts", "gdas", "drnas", "proxyless", "spos", "random")
# sections an algorithm reads besides its own: random and zeroshot read spos.flops_limit, GDAS and DrNAS the
# alphas' optimizer of darts
ALSO_READS = {"random": {"spos"}, "zeroshot": {"spos"}, "gdas": {"darts"}, "drnas": {"darts"}}


def teacher_job(b: Bench) -> dict[str, Any]:
    """The teacher's identity, real test accuracy and cost."""
    from dfnas.spaces.profile import profile
    from dfnas.teachers import validate_teacher
    from dfnas.teachers.online import OnlineTeacher, check_teacher_fits
    from dfnas.training.train import evaluate

    t = b.teacher
    validate_teacher(t, need_bn=b.cfg.synth.bn_weight > 0)
    test = b.source("test")
    check_teacher_fits(t, test.spec, f"test data {b.cfg.test_data}")
    s = t.spec
    return {"identity": t.identity(), "test_accuracy": evaluate(OnlineTeacher(t, test.spec), test),
            **profile(t.module, (s.channels, s.height, s.width))}


def synthesis_seed(bench_seed: int, synth_seed: int, name: str) -> int:
    """Seed of the bench's `name` set: drawn from the bench seed, so that sets differ by name; a
    non-zero `synth.seed` picks another draw with all else fixed (0 keeps the documented runs' sets)."""
    return derive_seed(bench_seed, "bench-synth", name, *((synth_seed,) if synth_seed else ()))


def data_job(b: Bench, name: str, draw: int = 0) -> dict[str, Any]:
    """Synthesize draw `draw` of the synthetic or plain set into data/<name>[-d<draw>] (resumable)."""
    from dfnas.bench.sources import plain_config
    from dfnas.synth import synthesize

    cfg = b.cfg.synth if name == "synthetic" else plain_config(b.cfg.synth)
    cfg = dataclasses.replace(cfg, seed=synthesis_seed(b.cfg.seed, cfg.seed + draw, name))
    rep = synthesize(b.teacher, cfg, b.out / "data" / (name + draw_suffix(draw)), progress=b.progress)
    return {"report": rep, "config": to_dict(cfg)}


def label_stats(src: Source) -> dict[str, Any]:
    """How the teacher labels a source: images per predicted class, mean max-probability."""
    assert src.logits is not None
    p = src.logits.float().softmax(1)
    counts = torch.bincount(p.argmax(1), minlength=src.spec.num_classes)
    return {"images": len(src), "per_class": counts.tolist(), "mean_max_prob": float(p.max(1).values.mean())}


def search_key(s: SearchConfig) -> dict[str, Any]:
    """The search's settings without the sections its algorithm never reads, so a new option
    of one algorithm does not redo every other algorithm's searches (`ALSO_READS`)."""
    d = neutral_dict(s, "search")
    keep = {s.algo, *ALSO_READS.get(s.algo, ())}
    return {k: v for k, v in d.items() if k not in STRATEGY_SECTIONS or k in keep}


def search_job(b: Bench, algo: str, source: str, repeat: int) -> dict[str, Any]:
    """Search repeat `repeat` of `algo` on `source` into search/<algo>-<source>[-r<repeat>] (resumable)."""
    from dfnas.strategies.runner import run_search

    teacher = b.teacher if b.cfg.search_online_teacher and source != "real" else None
    name = f"{algo}-{source}{_rep(repeat)}"
    cfg = b.cfg.search_config(algo, repeat)
    data = b.source(source, draw_read(b.cfg, source, repeat))
    rec = run_search(cfg, data, b.out / "search" / name, progress=b.progress, teacher=teacher)
    return {"algo": algo, "source": source, "repeat": repeat, "search_seed": cfg.seed, "space": rec["space"],
            "space_cfg": rec["space_cfg"], "choices": rec["choices"], "flops": rec.get("flops"), "params": rec.get("params"),
            "search_seconds": rec.get("search_seconds", rec.get("search_seconds_last_run")), "search_loss": rec.get("search_loss"),
            "search": rec.get("search"), "arch_file": f"search/{name}/arch.json"}


def random_archs(b: Bench, algo: str) -> list[dict[str, Any]]:
    """`random_archs` distinct uniform samples of the algorithm's space (fixed by the seed)."""
    from dfnas.bench.ranking import sample_distinct
    from dfnas.spaces import create_space

    s = b.cfg.search_config(algo)
    space_cfg = _fitted_space_cfg(b, s.space, s.space_args)
    net = create_space(s.space, **space_cfg)
    archs = sample_distinct(net, b.cfg.random_archs, derive_seed(b.cfg.seed, "random-archs", s.space))
    return [{"space": s.space, "space_cfg": space_cfg, "choices": a} for a in archs]


def _fitted_space_cfg(b: Bench, space: str, args: dict[str, Any]) -> dict[str, Any]:
    from dfnas.spaces import resolve_space_cfg
    from dfnas.strategies.runner import fit_args

    return resolve_space_cfg(space, {**args, **fit_args(b.teacher.spec)})


def zeroshot_job(b: Bench, algo: str, budget: int | None, repeat: int) -> dict[str, Any]:
    """The training-free baseline: the best proxy score in the algorithm's space under `budget` FLOPs."""
    from dfnas.strategies.zeroshot import zero_shot_search

    s = b.cfg.search_config(algo)
    z = b.cfg.zeroshot
    space_cfg = _fitted_space_cfg(b, s.space, s.space_args)

    def run(limit: int | None) -> dict[str, Any]:
        return zero_shot_search(s.space, space_cfg, proxy=z.proxy, samples=z.samples, max_flops=limit,
                                seed=derive_seed(b.cfg.seed + repeat, "zeroshot", algo),
                                batch_size=z.batch_size, progress=b.progress)

    relaxed = False
    try:
        res = run(budget)
    except DfnasError:  # no uniform sample is as small as the searches' architectures: say so, go unconstrained
        res, relaxed = run(None), True
    top = res["candidates"][:5]
    return {"space": s.space, "space_cfg": space_cfg, "repeat": repeat, "choices": res["arch"],
            "proxy": res["proxy"], "score": finite(res["score"]), "flops": res["flops"], "params": res["params"],
            "max_flops": budget, "budget_relaxed": relaxed, "samples": res["samples"], "seconds": res["seconds"],
            "top5": [{"choices": c["arch"], "score": finite(c["score"]), "flops": c["flops"]} for c in top]}


def final_job(b: Bench, name: str, arch: dict[str, Any]) -> dict[str, Any]:
    """Train `arch` from scratch on the real train subset with every seed into final/<name>;
    with `score: nb201`, look its ground truth up instead."""
    if b.cfg.score == "nb201":
        return nb201_final(b, name, arch)
    from dfnas.spaces import space_class
    from dfnas.spaces.arch import make_record
    from dfnas.training.train import train_arch

    rec = make_record(arch["space"], space_class(arch["space"]).version, arch["space_cfg"], arch["choices"], {})
    m = train_arch(rec, b.source("final"), b.source("test"), seeds=b.cfg.seeds, out=b.out / "final" / name,
                   cfg=b.cfg.final, progress=False)  # dozens of short trainings: one summary line each
    assert m is not None
    b.say(f"  {name}: {100 * m['test_accuracy_mean']:.2f}% ± {100 * (m['test_accuracy_std'] or 0):.2f} "
          f"({len(b.cfg.seeds)} seeds, {m['wall_seconds']:.0f} s)")
    return {"test_accuracy_mean": m["test_accuracy_mean"], "test_accuracy_std": m["test_accuracy_std"],
            "per_seed": [r["test_accuracy"] for r in m["per_seed"]], "flops": m["flops"], "params": m["params"],
            "train_seconds": m["wall_seconds"]}


def ranking_job(b: Bench, algo: str, first: list[dict[str, Any]], cache: Path) -> dict[str, Any]:
    """Kendall tau of supernets trained on synthetic vs real data, ranking `first` and more.
    Each trained supernet is kept in `cache`, the job's folder, so a kill resumes after the last
    one (`Bench.job` clears the folder when the job's inputs change)."""
    from dfnas.bench.ranking import ranking_check
    from dfnas.teachers.online import OnlineTeacher

    r = b.cfg.ranking
    s = b.cfg.search_config(algo)
    s = dataclasses.replace(s, spos=dataclasses.replace(s.spos, bn_batches=r.bn_batches, val_batches=r.val_batches,
                                                        score=r.score))
    online = OnlineTeacher(b.teacher, b.source("synthetic").spec) if b.cfg.search_online_teacher else None
    res = ranking_check(b.source("real"), b.source("synthetic"), s, r.archs, r.steps, r.epochs,
                        first=[a["choices"] for a in first], teacher=online, reseeded=r.reseeded,
                        others={"noise": b.source("noise")} if r.noise else None, cache=cache)
    return {**finite_taus(res), "other_score": finite_taus(res["other_score"]), "algo": algo}


def nb201_final(b: Bench, name: str, arch: dict[str, Any]) -> dict[str, Any]:
    """A cell's NAS-Bench-201 test accuracy on the teacher's task (the benchmark's 200-epoch
    training on the full real dataset), in the record form of a final training (one value)."""
    from dfnas.spaces import create_space
    from dfnas.spaces.base import fix
    from dfnas.spaces.nb201 import to_nb201_string
    from dfnas.spaces.nb201_bench import lookup
    from dfnas.spaces.profile import profile

    dataset = nb201_dataset(b.teacher.spec)
    acc = lookup(arch["choices"])[dataset] / 100.0
    net = fix(create_space("nb201", **arch["space_cfg"]), arch["choices"])
    s = b.teacher.spec
    cost = profile(net, (s.channels, s.height, s.width))
    b.say(f"  {name}: {to_nb201_string(arch['choices'])} -> {100 * acc:.2f}% (NAS-Bench-201 {dataset})")
    return {"test_accuracy_mean": acc, "test_accuracy_std": None, "per_seed": [acc], "flops": cost["flops"],
            "params": cost["params"], "train_seconds": 0.0, "nb201": dataset}


def nb201_dataset(spec: Any) -> str:
    """The NAS-Bench-201 dataset of a teacher's task, or a one-line error naming what fits."""
    from dfnas.strategies.runner import NB201_TASKS, nb201_task

    dataset = nb201_task(spec)
    if dataset is None:
        raise DfnasError(f"config key 'score': nb201 needs a teacher of a NAS-Bench-201 task {sorted(NB201_TASKS.values())} "
                         f"(3x32x32, 10 or 100 classes; 3x16x16, 120), not {spec.describe()}; use score: train")
    return dataset
