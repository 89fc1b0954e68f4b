"""`dfnas bench`: the SPEC section 4 protocol, every number measured in the same run.

    dfnas bench --out runs/bench              # the documented regime (see the README)
    dfnas bench --quick --out runs/bench-q    # same protocol at a tiny budget

Jobs, in order, each done once and recorded in `jobs/<name>.json` (atomic) with a key
hashed from its inputs, so a killed bench resumes where it stopped (searches and final
trainings also resume inside themselves from their own checkpoints):

    teacher                      real test accuracy, FLOPs
    data-synthetic, data-plain   the two synthetic sets (`data/<name>`, resumable synthesis)
    search-<algo>-<source>       every algorithm on every source (`search/<algo>-<source>`)
    zeroshot-<algo>              training-free proxy in the algorithm's space, under the FLOPs
                                 of the architecture found on synthetic data
    final-<name>                 every architecture (found, random, zero-shot) trained from
                                 scratch on the real train subset with every seed (`final/<name>`)
    ranking                      Kendall tau of supernets trained on synthetic vs real data

then results.json and the report (dfnas.bench.report).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dfnas import __version__
from dfnas.bench.config import QUICK, SOURCES, BenchConfig, draw_suffix
from dfnas.config import apply_overrides, dump_yaml, from_dict, neutral_dict, to_dict
from dfnas.data.sources import Source, load_source
from dfnas.errors import DfnasError
from dfnas.io import atomic_write_json, atomic_write_text, derive_seed, read_json
from dfnas.strategies.config import SearchConfig

# settings that change how fast the bench runs, not what it measures
_EXECUTION_KEYS = ("threads", "out", "device")
# the bench's sections with a device, and what their execution settings are called in EXECUTION_KEYS
_SECTIONS = {"synth": "synth", "darts": "search", "proxyless": "search", "spos": "search", "final": "train"}


# ----------------------------------------------------------------------------- config


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Nested update: sections given partially keep the bench's own defaults for the rest."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("space_args",):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def build_config(data: dict[str, Any] | None = None, quick: bool = False, overrides: list[str] | None = None
                 ) -> BenchConfig:
    """Defaults < the YAML mapping < QUICK (when `quick`) < `key=value` overrides; checked.

    --quick wins over the file so that `dfnas bench my.yaml --quick` is a smoke test of my.yaml.
    """
    merged = _merge(to_dict(BenchConfig()), data or {})
    if quick:
        merged = _merge(merged, QUICK)
    over: dict[str, Any] = {}
    apply_overrides(over, overrides or [])
    merged = _merge(merged, over)
    cfg = from_dict(BenchConfig, merged)
    if cfg.device is not None:  # the saved config shows where each stage ran
        for name in _SECTIONS:
            getattr(cfg, name).device = cfg.device
    validate(cfg)
    return cfg


def validate(cfg: BenchConfig) -> None:
    """Everything checkable before loading anything: one-line errors naming the key."""
    from dfnas.strategies.runner import validate_search
    from dfnas.strategies.zeroshot import PROXIES

    algos = ("darts", "proxyless", "spos")
    bad = [a for a in cfg.algos if a not in algos]
    if bad or not cfg.algos or len(set(cfg.algos)) != len(cfg.algos):
        raise DfnasError(f"config key 'algos': give distinct values from {list(algos)}; got {cfg.algos}")
    bad = [s for s in cfg.sources if s not in SOURCES]
    if bad or len(set(cfg.sources)) != len(cfg.sources) or not {"real", "synthetic"} <= set(cfg.sources):
        raise DfnasError(f"config key 'sources': distinct values from {list(SOURCES)}, including real and "
                         f"synthetic; got {cfg.sources}")
    for a in algos:
        s = getattr(cfg, a)
        if s.algo != a:
            raise DfnasError(f"config key '{a}.algo' must be {a} (each section configures its own algorithm)")
        validate_search(s, a)
        if s.seed != 0:  # the bench seeds every search itself; a silently ignored key misleads
            raise DfnasError(f"config key '{a}.seed' is not used by dfnas bench (search repeat r runs with "
                             f"seed 'seed' + r): set 'seed' instead, or leave '{a}.seed' at 0")
    cfg.synth.validate(1)
    if cfg.ranking.algo not in algos:
        raise DfnasError(f"config key 'ranking.algo': choose one of {list(algos)}")
    rk = cfg.ranking
    if rk.enabled and (rk.archs < 2 or rk.steps < 1 or rk.epochs < 1 or rk.bn_batches < 1 or rk.val_batches < 0):
        raise DfnasError("config keys 'ranking.archs' (>= 2, 20+ for the headline), 'ranking.steps', "
                         "'ranking.epochs', 'ranking.bn_batches' (>= 1), 'ranking.val_batches' (>= 0, 0 = all)")
    if cfg.zeroshot.proxy not in PROXIES:
        raise DfnasError(f"config key 'zeroshot.proxy': {cfg.zeroshot.proxy!r} is not allowed; choose one of {list(PROXIES)}")
    if cfg.zeroshot.samples < 1 or cfg.random_archs < 0 or cfg.search_repeats < 1:
        raise DfnasError("config keys 'zeroshot.samples' and 'search_repeats' must be >= 1 and 'random_archs' >= 0")
    if not 1 <= cfg.synth_draws <= cfg.search_repeats:
        raise DfnasError(f"config key 'synth_draws' must be in [1, search_repeats={cfg.search_repeats}] (search "
                         f"repeat r uses draw r mod synth_draws); got {cfg.synth_draws}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise DfnasError(f"config key 'seeds': give distinct integers, e.g. [0, 1, 2]; got {cfg.seeds}")
    if cfg.final_per_class is not None and cfg.final_per_class < 1:
        raise DfnasError("config key 'final_per_class' must be >= 1 or null (the whole train split)")
    cfg.final.validate("final")
    if cfg.threads is not None and cfg.threads < 1:
        raise DfnasError("config key 'threads' must be >= 1 (or null for torch's default)")
    for a in algos:
        dev = getattr(cfg, a).device
        for d in (dev, cfg.synth.device, cfg.final.device):
            if d.startswith("cuda") and not torch.cuda.is_available():
                raise DfnasError(f"device '{d}': CUDA is not available on this machine; use cpu")


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def measured_part(cfg: BenchConfig) -> dict[str, Any]:
    """What the results depend on: not threads, folder or device (a bench resumes on another)."""
    d = {k: v for k, v in to_dict(cfg).items() if k not in _EXECUTION_KEYS}
    return {**d, **{k: neutral_dict(getattr(cfg, k), sec) for k, sec in _SECTIONS.items()}}


# ----------------------------------------------------------------------------- the bench


@dataclasses.dataclass
class Bench:
    """One bench folder: config, teacher and the data sources its jobs share."""

    cfg: BenchConfig
    out: Path
    progress: bool = True
    force: bool = False
    teacher: Any = None
    plan: dict[str, int] = dataclasses.field(default_factory=dict)  # jobs per kind (planned_jobs)
    _sources: dict[str, Source] = dataclasses.field(default_factory=dict)
    _t0: float = dataclasses.field(default_factory=time.perf_counter)
    # seconds of every job done so far (finished in this call or read back), per kind
    _seconds: dict[str, list[float]] = dataclasses.field(default_factory=dict)

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
            print(f"dfnas bench: {msg}", flush=True)

    def job(self, name: str, key: Any, fn: Callable[[], dict[str, Any]], folder: Path | None = None
            ) -> dict[str, Any]:
        """Run `fn` once per (name, key); a record with another key is redone (its folder cleared)."""
        k = _hash(key)
        done = self._seconds.setdefault(name.split("-")[0], [])  # the job's kind: search, final, ...
        path = self.out / "jobs" / f"{name}.json"
        if path.is_file():
            rec = read_json(path)
            if isinstance(rec, dict) and rec.get("key") == k:
                done.append(float(rec.get("seconds", 0.0)))
                return rec["result"]
            path.unlink()
            if folder is not None and folder.exists():
                shutil.rmtree(folder)
        t0 = time.perf_counter()
        n = sum(map(len, self._seconds.values())) + 1
        self.say(f"[{n}/{max(sum(self.plan.values()), n)}] {name} ... ({_clock(t0 - self._t0)} into this call{self._eta()})")
        result = fn()
        rec = {"job": name, "key": k, "seconds": round(time.perf_counter() - t0, 2),
               "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "result": result}
        atomic_write_json(path, rec)
        done.append(rec["seconds"])
        return result

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


def _teacher_job(b: Bench) -> dict[str, Any]:
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


def _draw_read(cfg: BenchConfig, src: str, repeat: int) -> int:
    """The draw of `src` that search repeat `repeat` reads: synthetic and plain sets rotate through theirs."""
    return repeat % cfg.synth_draws if src in ("synthetic", "plain") else 0


def _data_job(b: Bench, name: str, draw: int = 0) -> dict[str, Any]:
    from dfnas.bench.sources import plain_config
    from dfnas.synth import synthesize

    cfg = b.cfg.synth if name == "synthetic" else plain_config(b.cfg.synth)
    cfg = dataclasses.replace(cfg, seed=synthesis_seed(b.cfg.seed, cfg.seed + draw, name))
    rep = synthesize(b.teacher, cfg, b.out / "data" / (name + draw_suffix(draw)), progress=b.progress)
    return {"report": rep, "config": to_dict(cfg)}


def _label_stats(src: Source) -> dict[str, Any]:
    """How the teacher labels a source: images per predicted class, mean max-probability."""
    assert src.logits is not None
    p = src.logits.float().softmax(1)
    counts = torch.bincount(p.argmax(1), minlength=src.spec.num_classes)
    return {"images": len(src), "per_class": counts.tolist(), "mean_max_prob": float(p.max(1).values.mean())}


def _rep(r: int) -> str:
    """Name suffix of search repeat r (none for the first: folders of single-search runs keep their names)."""
    return f"-r{r}" if r else ""


def _search_job(b: Bench, algo: str, source: str, repeat: int) -> dict[str, Any]:
    from dfnas.strategies.runner import run_search

    teacher = b.teacher if b.cfg.search_online_teacher and source != "real" else None
    name = f"{algo}-{source}{_rep(repeat)}"
    cfg = b.cfg.search_config(algo, repeat)
    data = b.source(source, _draw_read(b.cfg, source, repeat))
    rec = run_search(cfg, data, b.out / "search" / name, progress=b.progress, teacher=teacher, force=b.force)
    return {"algo": algo, "source": source, "repeat": repeat, "search_seed": cfg.seed, "space": rec["space"],
            "space_cfg": rec["space_cfg"], "choices": rec["choices"], "flops": rec.get("flops"), "params": rec.get("params"),
            "search_seconds": rec.get("search_seconds", rec.get("search_seconds_last_run")), "search_loss": rec.get("search_loss"),
            "search": rec.get("search"), "arch_file": f"search/{name}/arch.json"}


def _random_archs(b: Bench, algo: str) -> list[dict[str, Any]]:
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


def _zeroshot_job(b: Bench, algo: str, budget: int | None, repeat: int) -> dict[str, Any]:
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
            "proxy": res["proxy"], "score": _finite(res["score"]), "flops": res["flops"], "params": res["params"],
            "max_flops": budget, "budget_relaxed": relaxed, "samples": res["samples"], "seconds": res["seconds"],
            "top5": [{"choices": c["arch"], "score": _finite(c["score"]), "flops": c["flops"]} for c in top]}


def _finite(x: float) -> float | None:
    return x if x == x and abs(x) != float("inf") else None


def _final_job(b: Bench, name: str, arch: dict[str, Any]) -> dict[str, Any]:
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


STRATEGY_SECTIONS = ("darts", "proxyless", "spos", "random")


def search_key(s: SearchConfig) -> dict[str, Any]:
    """The search's settings without the sections its algorithm never reads, so a new option
    of one algorithm does not redo every other algorithm's searches (random reads spos.flops_limit)."""
    d = neutral_dict(s, "search")
    keep = {s.algo, "spos"} if s.algo == "random" else {s.algo}
    return {k: v for k, v in d.items() if k not in STRATEGY_SECTIONS or k in keep}


def _ranking_job(b: Bench, algo: str, first: list[dict[str, Any]]) -> dict[str, Any]:
    from dfnas.bench.ranking import ranking_check
    from dfnas.teachers.online import OnlineTeacher

    r = b.cfg.ranking
    s = b.cfg.search_config(algo)
    s = dataclasses.replace(s, spos=dataclasses.replace(s.spos, bn_batches=r.bn_batches, val_batches=r.val_batches,
                                                        score=r.score))
    online = OnlineTeacher(b.teacher, b.source("synthetic").spec) if b.cfg.search_online_teacher else None
    res = ranking_check(b.source("real"), b.source("synthetic"), s, r.archs, r.steps, r.epochs,
                        first=[a["choices"] for a in first], teacher=online, reseeded=r.reseeded)
    return {**_finite_taus(res), "other_score": _finite_taus(res["other_score"]), "algo": algo}


def _finite_taus(d: dict[str, Any]) -> dict[str, Any]:
    """`d` with every tau_* made JSON-safe (nan -> None)."""
    return {k: _finite(v) if k.startswith("tau_") else v for k, v in d.items()}


# ----------------------------------------------------------------------------- folder


def prepare_folder(out: Path, cfg: BenchConfig, force: bool) -> None:
    """Refuse a folder of another bench config (or not a bench) unless `force`."""
    if out.exists() and not out.is_dir():
        raise DfnasError(f"--out {out} is a file; pass a folder")
    meta = out / "bench.json"
    if out.is_dir() and any(out.iterdir()):
        prev = read_json(meta)
        prev = prev if isinstance(prev, dict) else None
        if prev is None and not force:
            raise DfnasError(f"--out {out} holds files that are not a dfnas bench; choose a new folder or pass --force")
        # keys an older dfnas did not have yet count at their defaults (new options default to the
        # old behaviour), so an upgrade alone does not lock a folder; the jobs keep their own keys
        now = measured_part(cfg)
        old = _merge(measured_part(BenchConfig()), prev.get("config") or {}) if prev is not None else {}
        if prev is not None and old != now and not force:
            diff = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
            raise DfnasError(f"--out {out} holds a bench with another config (keys {', '.join(diff)} differ); "
                             f"choose a new folder or pass --force to redo the jobs those keys change")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta, {"dfnas": __version__, "config": measured_part(cfg)})
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))


def machine() -> dict[str, Any]:
    import os

    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "cpu": platform.processor() or None}


def run_bench(cfg: BenchConfig, out: str | Path | None = None, force: bool = False, progress: bool = True,
              command: str | None = None) -> dict[str, Any]:
    """Run (or resume) the whole protocol into `out`; returns results.json's content."""
    from dfnas.teachers import load_teacher

    validate(cfg)
    out = Path(out if out is not None else cfg.out)
    old_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    try:
        teacher = load_teacher(cfg.teacher.ref, cfg.teacher.weights, cfg.teacher.spec)
        prepare_folder(out, cfg, force)
        b = Bench(cfg, out, progress, force, teacher=teacher, plan=planned_jobs(cfg))
        results = _run_jobs(b)
        results.update({"dfnas": __version__, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
                        "command": command or "dfnas bench", "config": to_dict(cfg),
                        "seconds_this_call": round(time.perf_counter() - t_start, 1)})
        from dfnas.bench.report import write_report

        atomic_write_json(out / "results.json", results)
        write_report(out, results)
        return results
    finally:
        torch.set_num_threads(old_threads)


def _run_jobs(b: Bench) -> dict[str, Any]:
    cfg = b.cfg
    th = b.teacher.identity()
    teacher = b.job("teacher", {"t": th, "test": cfg.test_data}, lambda: _teacher_job(b))
    data: dict[str, Any] = {}
    for name in ("synthetic", "plain"):
        if name in cfg.sources:
            for d in range(cfg.synth_draws):
                data[name + draw_suffix(d)] = b.job(
                    f"data-{name}{draw_suffix(d)}", {"t": th, "synth": neutral_dict(cfg.synth, "synth"),
                                                     "seed": cfg.seed, "name": name, **({"draw": d} if d else {})},
                    lambda n=name, d=d: _data_job(b, n, d), b.out / "data" / (name + draw_suffix(d)))
    if "noise" in cfg.sources:
        data["noise"] = _label_stats(b.source("noise"))
    searches: list[dict[str, Any]] = []
    reps = range(cfg.search_repeats)
    for algo in cfg.algos:
        for src in cfg.sources:
            for r in reps:
                key = {"search": search_key(cfg.search_config(algo, r)),
                       "data": b.source(src, _draw_read(cfg, src, r)).identity,
                       "online": cfg.search_online_teacher and src != "real"}
                name = f"{algo}-{src}{_rep(r)}"
                searches.append({**b.job(f"search-{name}", key, lambda a=algo, s=src, r=r: _search_job(b, a, s, r),
                                         b.out / "search" / name), "repeat": r})  # records from before repeats lack it
    zeroshot: dict[str, list[dict[str, Any]]] = {}
    for algo in cfg.algos:
        # the same FLOPs budget as the searches: the largest architecture this algorithm found
        budget = max(s["flops"] for s in searches if s["algo"] == algo)
        key = {"z": to_dict(cfg.zeroshot), "space": to_dict(cfg.search_config(algo))["space_args"],
               "budget": budget, "seed": cfg.seed, "sampler": "shrink-to-budget, valid"}
        zeroshot[algo] = [b.job(f"zeroshot-{algo}{_rep(r)}", {**key, "seed": cfg.seed + r},
                                lambda a=algo, bd=budget, r=r: _zeroshot_job(b, a, bd, r)) for r in reps]
    random_sets = {algo: _random_archs(b, algo) for algo in cfg.algos}
    b.plan["final"] -= sum(cfg.random_archs - len(rs) for rs in random_sets.values())  # a space smaller than asked

    # every architecture, trained from scratch on the real train subset with every seed
    final_key = {"final": neutral_dict(cfg.final, "train"), "seeds": cfg.seeds, "per_class": cfg.final_per_class,
                 "train": cfg.train_data, "test": cfg.test_data}
    todo: list[tuple[str, dict[str, Any]]] = [(f"{s['algo']}-{s['source']}{_rep(s['repeat'])}", s) for s in searches]
    todo += [(f"zeroshot-{a}{_rep(r)}", z) for a, zs in zeroshot.items() for r, z in enumerate(zs)]
    todo += [(f"random-{a}-{i}", r) for a, rs in random_sets.items() for i, r in enumerate(rs)]
    finals: dict[str, dict[str, Any]] = {}
    for name, arch in todo:
        key = {**final_key, "space": arch["space"], "space_cfg": arch["space_cfg"], "choices": arch["choices"]}
        finals[name] = b.job(f"final-{name}", key, lambda n=name, a=arch: _final_job(b, n, a), b.out / "final" / name)

    ranking = None
    if cfg.ranking.enabled:
        r_algo = cfg.ranking.algo if cfg.ranking.algo in random_sets else cfg.algos[-1]
        key = {"r": to_dict(cfg.ranking), "search": neutral_dict(cfg.search_config(r_algo), "search"),
               "real": b.source("real").identity, "syn": b.source("synthetic").identity,
               "first": [a["choices"] for a in random_sets[r_algo]], "paths": "valid only", "cross_seed_tau": True,
               **({"online": True} if cfg.search_online_teacher else {})}  # keeps earlier offline keys
        ranking = b.job("ranking", key, lambda: _ranking_job(b, r_algo, random_sets[r_algo]))
        ranking["scratch"] = [finals[f"random-{r_algo}-{i}"]["test_accuracy_mean"] for i in range(len(random_sets[r_algo]))]
        k = len(ranking["scratch"])
        if k >= 2:
            from dfnas.bench.ranking import tau

            ranking["tau_scratch_vs_real_supernet"] = _finite(tau(ranking["scratch"], ranking["scores"]["real"][:k]))
            ranking["tau_scratch_vs_synthetic_supernet"] = _finite(
                tau(ranking["scratch"], ranking["scores"]["synthetic"][:k]))

    return summarize(cfg, teacher, data, searches, zeroshot, random_sets, finals, ranking)


# ----------------------------------------------------------------------------- verdicts


def _ms(f: dict[str, Any]) -> tuple[float, float]:
    return float(f["test_accuracy_mean"]), float(f["test_accuracy_std"] or 0.0)


def pool(finals: list[dict[str, Any]]) -> dict[str, Any]:
    """Every search's architecture, every training seed: one sample of 'search on this data,
    then train' (mean ± std over all of them; with one search, that architecture's own)."""
    import statistics

    accs = [a for f in finals for a in f["per_seed"]]
    return {"test_accuracy_mean": statistics.fmean(accs), "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "searches": len(finals), "per_search": [f["test_accuracy_mean"] for f in finals], "n": len(accs)}


def clearly_better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Mean ahead by more than the two standard deviations together (1-sigma bands do not touch)."""
    (ma, sa), (mb, sb) = _ms(a), _ms(b)
    return ma - mb > sa + sb


def summarize(cfg: BenchConfig, teacher: dict[str, Any], data: dict[str, Any], searches: list[dict[str, Any]],
              zeroshot: dict[str, Any], random_sets: dict[str, list[dict[str, Any]]],
              finals: dict[str, dict[str, Any]], ranking: dict[str, Any] | None) -> dict[str, Any]:
    import statistics

    rows = []
    for s in searches:
        rows.append({**{k: s[k] for k in ("algo", "source", "repeat", "space", "choices", "flops", "params",
                                          "search_seconds")},
                     "search_seed": s.get("search_seed", cfg.seed + s["repeat"]),
                     "final": finals[f"{s['algo']}-{s['source']}{_rep(s['repeat'])}"]})
    spread = {}
    for algo, rs in random_sets.items():
        accs = [finals[f"random-{algo}-{i}"]["test_accuracy_mean"] for i in range(len(rs))]
        seed_std = [finals[f"random-{algo}-{i}"]["test_accuracy_std"] or 0.0 for i in range(len(rs))]
        spread[algo] = {"space": rs[0]["space"] if rs else None, "accuracies": accs,
                        "mean": statistics.fmean(accs) if accs else None,
                        "std": statistics.stdev(accs) if len(accs) > 1 else None,
                        "best_minus_worst": (max(accs) - min(accs)) if accs else None,
                        "mean_seed_std": statistics.fmean(seed_std) if seed_std else None,
                        "archs": [{"choices": r["choices"], "final": finals[f"random-{algo}-{i}"]}
                                  for i, r in enumerate(rs)]}
    zfinal = {a: [finals[f"zeroshot-{a}{_rep(r)}"] for r in range(len(zs))] for a, zs in zeroshot.items()}
    pooled: dict[str, dict[str, Any]] = {}
    verdicts = {}
    for algo in cfg.algos:
        by = {src: pool([r["final"] for r in rows if r["algo"] == algo and r["source"] == src]) for src in cfg.sources}
        by["zeroshot"] = pool(zfinal[algo])
        pooled[algo] = by
        syn, real = by["synthetic"], by["real"]
        (ms, _), (mr, sr) = _ms(syn), _ms(real)
        v: dict[str, Any] = {"synthetic_within_1std_of_real": ms >= mr - sr, "synthetic_minus_real": ms - mr}
        for other in ("plain", "noise"):
            if other in by:
                v[f"clearly_better_than_{other}"] = clearly_better(syn, by[other])
                v[f"synthetic_minus_{other}"] = ms - _ms(by[other])[0]
        z = by["zeroshot"]
        v["clearly_better_than_zeroshot"] = clearly_better(syn, z)
        v["synthetic_minus_zeroshot"] = ms - _ms(z)[0]
        # the same questions asked of real data: a target real data cannot meet says the task can't tell
        v["reference_real"] = {f"clearly_better_than_{o}": clearly_better(real, by[o]) for o in ("noise", "zeroshot") if o in by}
        v["reference_real"].update({f"real_minus_{o}": mr - _ms(by[o])[0] for o in ("noise", "zeroshot") if o in by})
        if spread[algo]["mean"] is not None:
            v["synthetic_minus_random_mean"] = ms - spread[algo]["mean"]
        verdicts[algo] = v
    # zeroshot[algo]: the first repeat's record (+ its final); every repeat under "repeats"
    zs = {a: {**z[0], "final": zfinal[a][0],
              "repeats": [{**zr, "final": f} for zr, f in zip(z, zfinal[a], strict=True)]} for a, z in zeroshot.items()}
    return {"teacher": teacher, "data": data, "searches": rows, "zeroshot": zs, "pooled": pooled,
            "random": spread, "ranking": _ranking_public(ranking), "verdicts": verdicts,
            "targets_met": {
                "synthetic_within_1std_of_real": all(v["synthetic_within_1std_of_real"] for v in verdicts.values()),
                "clearly_better_than_noise": all(v.get("clearly_better_than_noise", True) for v in verdicts.values()),
                "clearly_better_than_zeroshot": all(v["clearly_better_than_zeroshot"] for v in verdicts.values()),
                "kendall_tau_ge_0.7": bool(ranking and (ranking.get("tau_synthetic_vs_real") or -1) >= 0.7),
            }}


def _ranking_public(r: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if r is None else {k: v for k, v in r.items() if k != "space_cfg"}
