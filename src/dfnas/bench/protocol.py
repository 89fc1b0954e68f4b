"""`dfnas bench`: the paper's protocol, every number measured in the same run.

    dfnas bench --out runs/bench              # the documented regime (docs/bench.md)
    dfnas bench --quick --out runs/bench-q    # same protocol at a tiny budget

This module only orchestrates: it claims the output folder, runs the jobs of
`dfnas.bench.jobs` in order, each once and recorded in `jobs/<name>.json` (atomic) with a key
hashed from its inputs, so a killed bench resumes where it stopped (searches and final
trainings also resume inside themselves from their own checkpoints), then writes results.json
(`dfnas.bench.verdicts`) and the report (`dfnas.bench.report`). The jobs, in order:

    teacher                      real test accuracy, FLOPs
    data-synthetic, data-plain   the two synthetic sets (`data/<name>`, resumable synthesis)
    ranking, search-<algo>-<source>
                                 Kendall tau of supernets trained on synthetic vs real data (one
                                 stage with the searches: it needs only the data), then every
                                 algorithm on every source (`search/<algo>-<source>`)
    zeroshot-<algo>              training-free proxy in the algorithm's space, under the FLOPs
                                 of the largest architecture the algorithm's searches found
    final-<name>                 every architecture (found, random, zero-shot) trained from
                                 scratch on the real train subset with every seed (`final/<name>`)

Under torchrun (`torchrun --nproc-per-node N -m dfnas bench ...`), the jobs of each stage are
spread over the N workers: each takes the next job nobody has claimed (an atomic claim file
beside the records), the workers meet after each stage, and rank 0 writes the results. The
jobs are the one-process bench's, so are their results. A killed worker takes the launch
down with it (torchrun); the rerun clears the claims and redoes only unfinished jobs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dfnas import __version__
from dfnas.bench import jobs
from dfnas.bench.config import (
    SECTIONS,
    BenchConfig,
    _merge,
    draw_read,
    draw_suffix,
    measured_part,
    validate,
)
from dfnas.bench.config import repeat_suffix as _rep
from dfnas.bench.verdicts import add_scratch_taus, summarize
from dfnas.config import drop_later_defaults, dump_yaml, neutral_dict, to_dict
from dfnas.data.sources import Source, load_source
from dfnas.dist import Group
from dfnas.io import atomic_write_json, atomic_write_text, derive_seed, torch_threads
from dfnas.io.folders import JobStore, OutputFolder, differing_keys


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Bench:
    """One bench folder: config, teacher and the data sources its jobs share."""

    cfg: BenchConfig
    out: Path
    progress: bool = True
    teacher: Any = None
    plan: dict[str, int] = dataclasses.field(default_factory=dict)  # jobs per kind (planned_jobs)
    group: Group = dataclasses.field(default_factory=Group)  # the workers of a torchrun launch
    store: JobStore = dataclasses.field(init=False)  # jobs/<name>.json: each finished job's key and result
    _sources: dict[str, Source] = dataclasses.field(default_factory=dict)
    _t0: float = dataclasses.field(default_factory=time.perf_counter)
    # seconds of every job done so far (finished in this call or read back), per kind
    _seconds: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store = JobStore(self.out / "jobs")

    def _eta(self) -> str:
        """Time left for the jobs not done yet, from the mean time of the done jobs of each kind;
        empty until every pending kind has one."""
        left = {k: n - len(self._seconds.get(k, ())) for k, n in self.plan.items()}
        left = {k: n for k, n in left.items() if n > 0}
        if not left or any(not self._seconds.get(k) for k in left):
            return ""
        sec = sum(n * sum(self._seconds[k]) / len(self._seconds[k]) for k, n in left.items())
        return f", about {_clock(sec)} left"

    # -- bookkeeping
    def say(self, msg: str) -> None:
        if self.progress:
            who = f" [worker {self.group.rank}]" if self.group.distributed else ""
            print(f"dfnas bench{who}: {msg}", flush=True)

    def job(self, name: str, key: Any, fn: Callable[[], dict[str, Any]], folder: Path | None = None
            ) -> dict[str, Any]:
        """Run `fn` once per (name, key); a record with another key is redone (its folder cleared)."""
        k = _hash(key)
        done = self._seconds.setdefault(name.split("-")[0], [])  # the job's kind: search, final, ...
        rec = self.store.get(name, k)
        if rec is not None:
            done.append(float(rec.get("seconds", 0.0)))
            return rec["result"]
        if self.store.path(name).is_file():  # a record of other inputs: redo the job from scratch
            self.store.drop(name)
            if folder is not None and folder.exists():
                shutil.rmtree(folder)
        # a job folder is the bench's own: one left by a killed job of the same inputs resumes
        # inside (its own checkpoints), one of other inputs, or of a start not marked, starts over
        if self.store.start(name, k) != k and folder is not None and folder.exists():
            shutil.rmtree(folder)
        t0 = time.perf_counter()
        n = sum(map(len, self._seconds.values())) + 1
        self.say(f"[{n}/{max(sum(self.plan.values()), n)}] {name} ... ({_clock(t0 - self._t0)} into this call{self._eta()})")
        result = fn()
        done.append(self.store.put(name, k, result, time.perf_counter() - t0)["seconds"])
        return result

    def stage(self, specs: list[tuple[str, Any, Callable[[], dict[str, Any]], Path | None]]) -> list[dict[str, Any]]:
        """Independent jobs (name, key, fn, folder), their results in order. Workers of a launch
        share them: each runs the unclaimed ones it claims first, then all read every record."""
        if self.group.distributed:
            for name, key, fn, folder in specs:
                if self.store.get(name, _hash(key)) is None and self.store.claim(name):
                    try:
                        self.job(name, key, fn, folder)
                    finally:
                        self.store.release(name)
            self.group.barrier()
            self._seconds = {}  # counted again as they are read back below
        return [self.job(name, key, fn, folder) for name, key, fn, folder in specs]

    # -- data
    def source(self, name: str, draw: int = 0) -> Source:
        """A data source by name; `draw` picks one of the synthesized sets of synthetic/plain."""
        from dfnas.bench.sources import noise_source, per_class_subset, synthetic_source

        key = name + draw_suffix(draw)
        if key not in self._sources:
            if name in ("real", "test"):
                ref = self.cfg.train_data if name == "real" else self.cfg.test_data
                split = "train" if name == "real" else "test"
                self._sources[key] = load_source(ref, self.teacher.spec, split)
            elif name == "final":  # the real train subset every architecture is trained on
                self._sources[key] = per_class_subset(self.source("real"), self.cfg.final_per_class)
            elif name in ("synthetic", "plain"):
                self._sources[key] = synthetic_source(self.out / "data" / key, name)
            elif name == "noise":
                s = self.cfg.synth
                self._sources[key] = noise_source(self.teacher, s.per_class * s.rounds, derive_seed(self.cfg.seed, "noise"))
            else:
                raise KeyError(name)
        return self._sources[key]


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


def planned_jobs(cfg: BenchConfig) -> dict[str, int]:
    """The bench's jobs per kind (the first word of a job's name): the teacher, synthetic/plain
    sets, searches, zero-shot searches, final trainings of every found, zero-shot and random
    architecture, and the ranking check."""
    algos, reps = len(cfg.algos), cfg.search_repeats
    searches = algos * len(cfg.sources) * reps
    return {"teacher": 1, "data": len({"synthetic", "plain"} & set(cfg.sources)) * cfg.synth_draws,
            "search": searches, "zeroshot": algos * reps, "final": searches + algos * reps + algos * cfg.random_archs,
            "ranking": int(cfg.ranking.enabled)}


def _claim_folder(out: Path, cfg: BenchConfig, force: bool) -> None:
    """Refuse a folder dfnas did not make, or a bench of another config unless `force` (the jobs
    then redo what the changed keys change, by their own keys); mark it ours."""
    folder = OutputFolder(out, "bench", legacy=("bench.json", "config"))
    prev = folder.claim()
    if prev is not None:
        # keys an older dfnas did not have yet count at their defaults (new options default to the
        # old behaviour), so an upgrade alone does not lock a folder; the jobs keep their own keys
        old = _merge(measured_part(BenchConfig()), prev.get("config") or {})
        old = {k: drop_later_defaults(v, SECTIONS[k]) if k in SECTIONS and isinstance(v, dict) else v
               for k, v in old.items()}  # as measured_part leaves them
        folder.changed(differing_keys(old, measured_part(cfg)), force, what="config")
    identity = {"dfnas": __version__, "config": measured_part(cfg)}
    folder.save(identity)
    atomic_write_json(out / "bench.json", identity)  # what older dfnas versions and readers look for
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "cpu": platform.processor() or None}


def run_bench(cfg: BenchConfig, out: str | Path | None = None, force: bool = False, progress: bool = True,
              command: str | None = None, group: Group | None = None) -> dict[str, Any]:
    """Run (or resume) the whole protocol into `out`; returns results.json's content.
    `group`: the workers of a torchrun launch, sharing the jobs; rank 0 writes the results."""
    from dfnas.teachers import load_teacher

    validate(cfg)
    out = Path(out if out is not None else cfg.out)
    group = group or Group()
    t_start = time.perf_counter()
    with torch_threads(cfg.threads):
        teacher = load_teacher(cfg.teacher.ref, cfg.teacher.weights, cfg.teacher.spec)
        if cfg.score == "nb201":  # before any folder or work: the teacher's task must be the benchmark's
            jobs.nb201_dataset(teacher.spec)
        if group.is_main:
            _claim_folder(out, cfg, force)
            JobStore(out / "jobs").clear_claims()
        group.barrier()
        b = Bench(cfg, out, progress, teacher=teacher, plan=planned_jobs(cfg), group=group)
        results = _run_jobs(b)
        if not group.is_main:
            return results
        results.update({"dfnas": __version__, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
                        "command": command or "dfnas bench", "config": to_dict(cfg),
                        "seconds_this_call": round(time.perf_counter() - t_start, 1)})
        from dfnas.bench.report import write_report

        atomic_write_json(out / "results.json", results)
        write_report(out, results)
        return results


def _run_jobs(b: Bench) -> dict[str, Any]:
    cfg = b.cfg
    th = b.teacher.identity()
    first: list[tuple[str, Any, Callable[[], dict[str, Any]], Path | None]] = [
        ("teacher", {"t": th, "test": cfg.test_data}, lambda: jobs.teacher_job(b), None)]
    for name in ("synthetic", "plain"):
        if name in cfg.sources:
            for d in range(cfg.synth_draws):
                first.append((f"data-{name}{draw_suffix(d)}", {"t": th, "synth": neutral_dict(cfg.synth, "synth"),
                                                               "seed": cfg.seed, "name": name, **({"draw": d} if d else {})},
                              lambda n=name, d=d: jobs.data_job(b, n, d), b.out / "data" / (name + draw_suffix(d))))
    teacher, *made = b.stage(first)
    data: dict[str, Any] = {spec[0].removeprefix("data-"): r for spec, r in zip(first[1:], made, strict=True)}
    if "noise" in cfg.sources:
        data["noise"] = jobs.label_stats(b.source("noise"))
    # the ranking check needs only the sources and the random cells: it joins the search stage, so
    # under torchrun one worker trains its supernets while the others search
    random_sets = {algo: jobs.random_archs(b, algo) for algo in cfg.algos}
    r_algo = cfg.ranking.algo if cfg.ranking.algo in random_sets else cfg.algos[-1]
    ranking_spec = []
    if cfg.ranking.enabled:
        rk = to_dict(cfg.ranking)
        if not rk["noise"]:  # keys of benches from before the noise supernet stay as they were
            del rk["noise"]
        key = {"r": rk, "search": neutral_dict(cfg.search_config(r_algo), "search"),
               "real": b.source("real").identity, "syn": b.source("synthetic").identity,
               "first": [a["choices"] for a in random_sets[r_algo]], "paths": "valid only", "cross_seed_tau": True,
               **({"online": True} if cfg.search_online_teacher else {}),  # keeps earlier offline keys
               **({"noise": b.source("noise").identity} if cfg.ranking.noise else {})}
        cache = b.out / "ranking"
        ranking_spec = [("ranking", key, lambda: jobs.ranking_job(b, r_algo, random_sets[r_algo], cache), cache)]
    specs, reps_of, src_of = [], [], []
    reps = range(cfg.search_repeats)
    for algo in cfg.algos:
        for src in cfg.sources:
            for r in reps:
                key = {"search": jobs.search_key(cfg.search_config(algo, r)),
                       "data": b.source(src, draw_read(cfg, src, r)).identity,
                       "online": cfg.search_online_teacher and src != "real"}
                name = f"{algo}-{src}{_rep(r)}"
                specs.append((f"search-{name}", key, lambda a=algo, s=src, r=r: jobs.search_job(b, a, s, r),
                              b.out / "search" / name))
                reps_of.append(r)
                src_of.append(src)
    # run source by source in the config's order: a bench cut short has every algorithm on its first sources
    run_order = sorted(range(len(specs)), key=lambda i: cfg.sources.index(src_of[i]))
    done_first = b.stage(ranking_spec + [specs[i] for i in run_order])
    ranking = done_first[0] if ranking_spec else None
    found = dict(zip(run_order, done_first[len(ranking_spec):], strict=True))
    # records from before repeats lack the repeat
    searches = [{**found[i], "repeat": r} for i, r in enumerate(reps_of)]
    specs = []
    for algo in cfg.algos:
        # the same FLOPs budget as the searches: the largest architecture this algorithm found
        budget = max(s["flops"] for s in searches if s["algo"] == algo)
        key = {"z": to_dict(cfg.zeroshot), "space": to_dict(cfg.search_config(algo))["space_args"],
               "budget": budget, "seed": cfg.seed, "sampler": "shrink-to-budget, valid"}
        specs += [(f"zeroshot-{algo}{_rep(r)}", {**key, "seed": cfg.seed + r},
                   lambda a=algo, bd=budget, r=r: jobs.zeroshot_job(b, a, bd, r), None) for r in reps]
    done = iter(b.stage(specs))
    zeroshot: dict[str, list[dict[str, Any]]] = {algo: [next(done) for _ in reps] for algo in cfg.algos}
    b.plan["final"] -= sum(cfg.random_archs - len(rs) for rs in random_sets.values())  # a space smaller than asked

    # every architecture, trained from scratch on the real train subset with every seed
    final_key = ({"final": neutral_dict(cfg.final, "train"), "seeds": cfg.seeds, "per_class": cfg.final_per_class,
                  "train": cfg.train_data, "test": cfg.test_data} if cfg.score == "train" else {"score": "nb201"})
    todo: list[tuple[str, dict[str, Any]]] = [(f"{s['algo']}-{s['source']}{_rep(s['repeat'])}", s) for s in searches]
    todo += [(f"zeroshot-{a}{_rep(r)}", z) for a, zs in zeroshot.items() for r, z in enumerate(zs)]
    todo += [(f"random-{a}-{i}", r) for a, rs in random_sets.items() for i, r in enumerate(rs)]
    specs = [(f"final-{name}", {**final_key, "space": arch["space"], "space_cfg": arch["space_cfg"],
                                "choices": arch["choices"]},
              lambda n=name, a=arch: jobs.final_job(b, n, a), b.out / "final" / name) for name, arch in todo]
    finals = dict(zip([name for name, _ in todo], b.stage(specs), strict=True))

    if ranking is not None:
        add_scratch_taus(ranking, [finals[f"random-{r_algo}-{i}"]["test_accuracy_mean"]
                                   for i in range(len(random_sets[r_algo]))])
    return summarize(cfg, teacher, data, searches, zeroshot, random_sets, finals, ranking)
