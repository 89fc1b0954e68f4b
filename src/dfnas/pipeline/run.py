"""`dfnas run`: teacher -> synthesize -> search -> distil the found network -> evaluate -> export -> report.

    dfnas run                                    # the embedded demo (bundled MNIST teacher, data-free)
    dfnas run --config configs/spos.yaml --out runs/spos --set search.epochs=4

One output folder:

    run.json              resolved config + one fingerprint per stage (what this folder holds)
    config.yaml           the resolved config
    stages/<stage>.json   done marker of each stage: key (fingerprint), seconds, result (atomic)
    synth/ search/ train/ export/   the stages' own folders (each stage is resumable by itself)
    report.md, report.html, report_files/

Fingerprints chain (search depends on synth, train on search, ...), so a changed setting
invalidates its own stage and the later ones only. A folder holding another config
is refused unless `force`; with `force`, the stages whose fingerprint changed are redone
and finished earlier stages are kept. A killed run resumes: finished stages are skipped,
the interrupted one continues from its own checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dfnas import __version__
from dfnas.config import check_devices, dump_yaml, from_dict, load_yaml, result_keys, to_dict
from dfnas.dist import Group
from dfnas.errors import DfnasError
from dfnas.io import atomic_write_json, atomic_write_text, torch_threads
from dfnas.io.folders import JobStore, OutputFolder
from dfnas.pipeline.config import RunConfig
from dfnas.training.config import TrainConfig

STAGES = ("teacher", "synth", "search", "train", "export")
STAGE_DIRS = ("synth", "search", "train", "export")

# The embedded default (`dfnas run` without a config): the shipped configs/demo.yaml, the
# file a user copies to start their own.
DEMO: dict[str, Any] = load_yaml(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")


def demo_config() -> RunConfig:
    return from_dict(RunConfig, copy.deepcopy(DEMO))


# ----------------------------------------------------------------------------- config


def resolve(cfg: RunConfig) -> RunConfig:
    """Push the run-wide `device` and `seed` into every section (the saved config shows them)."""
    cfg = copy.deepcopy(cfg)
    if cfg.device is not None:
        cfg.synth.device = cfg.search.device = cfg.train.device = cfg.device
    if cfg.seed is not None:
        cfg.synth.seed = cfg.search.seed = cfg.seed
        cfg.train.seeds = [cfg.seed]
    return cfg


def validate(cfg: RunConfig) -> None:
    """Everything checkable without loading anything heavy; one-line errors naming the key."""
    from dfnas.strategies.runner import validate_search
    from dfnas.training.export import FORMATS

    validate_search(cfg.search, "search")
    cfg.synth.validate(1)
    t = cfg.train
    t.validate("train")
    if not t.seeds or len(set(t.seeds)) != len(t.seeds):
        raise DfnasError(f"config key 'train.seeds': give distinct integers, e.g. [0, 1, 2]; got {t.seeds}")
    bad = [f for f in cfg.export.formats if f not in FORMATS]
    if bad:
        raise DfnasError(f"config key 'export.formats': {bad[0]!r} is not allowed; choose from {list(FORMATS)}")
    if cfg.threads is not None and cfg.threads < 1:
        raise DfnasError("config key 'threads' must be >= 1 (or null for torch's default)")
    check_devices(cfg)


def train_config(cfg: RunConfig) -> TrainConfig:
    """The TrainConfig part of the run's train section (what `train_arch` takes)."""
    return TrainConfig(**{f.name: getattr(cfg.train, f.name) for f in dataclasses.fields(TrainConfig)})


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _section(cfg: RunConfig, name: str) -> dict[str, Any]:
    return result_keys(to_dict(getattr(cfg, name)), name)


def fingerprints(cfg: RunConfig, teacher: Any, test_ref: str | None) -> dict[str, str]:
    """One hash per stage covering its own settings and every earlier stage's."""
    from dfnas.synth.run import fingerprint as synth_fingerprint

    spec = teacher.spec
    fp = {"teacher": _hash({"teacher": teacher.identity(), "spec": spec.to_dict(), "test": test_ref})}
    # the synth fingerprint covers the teacher's weights and spec, not the test data
    fp["synth"] = _hash({"synth": synth_fingerprint(teacher, cfg.synth.resolve(spec.height, spec.width, spec.channels))})
    fp["search"] = _hash({"prev": fp["synth"], "search": _section(cfg, "search")})
    fp["train"] = _hash({"prev": fp["search"], "train": _section(cfg, "train"), "test": test_ref})
    fp["export"] = _hash({"prev": fp["train"], "export": to_dict(cfg.export)})
    return fp


# ----------------------------------------------------------------------------- output folder


def prepare_folder(out: Path, fps: dict[str, str], cfg: RunConfig, force: bool) -> list[str]:
    """Refuse a folder that is not a run of ours, or ours with another config unless `force`;
    clear the stages whose fingerprint changed. Returns the names of the stages that were reset.
    """
    folder = OutputFolder(out, "run", legacy=("run.json", "fingerprints"))
    prev = folder.claim()
    reset: list[str] = []
    if prev is not None:
        old = prev.get("fingerprints", {})
        reset = [s for s in STAGES if old.get(s) != fps[s]]
        folder.changed([f"stages {', '.join(reset)}"] if reset else [], force, "config")
        for s in reset:
            JobStore(out / "stages").drop(s)
            if s in STAGE_DIRS and (out / s).exists():
                shutil.rmtree(out / s)
    identity = {"dfnas": __version__, "fingerprints": fps, "config": to_dict(cfg)}
    folder.save(identity)
    atomic_write_json(out / "run.json", identity)
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    return reset


# ----------------------------------------------------------------------------- stages


@dataclasses.dataclass
class RunState:
    """What the stages hand each other while one `run_pipeline` call runs."""

    cfg: RunConfig
    out: Path
    teacher: Any
    test_ref: str | None
    progress: bool
    group: Group = dataclasses.field(default_factory=Group)  # the processes of a torchrun launch
    _test_source: Any = None
    _synth_source: Any = None

    def test_source(self) -> Any:
        from dfnas.data.sources import load_source

        if self.test_ref is None:
            return None
        if self._test_source is None:
            self._test_source = load_source(self.test_ref, self.teacher.spec, "test")
        return self._test_source

    def synth_source(self) -> Any:
        from dfnas.data.sources import load_source

        if self._synth_source is None:
            self._synth_source = load_source(str(self.out / "synth"))
        return self._synth_source


def stage_teacher(st: RunState) -> dict[str, Any]:
    """Teacher accuracy on the real test data (when there is some) and its size."""
    from dfnas.spaces.profile import profile
    from dfnas.teachers import validate_teacher
    from dfnas.training.train import evaluate

    t = st.teacher
    n_bn = validate_teacher(t, need_bn=st.cfg.synth.bn_weight > 0)
    s = t.spec
    res: dict[str, Any] = {"identity": t.identity(), "spec": s.to_dict(), "bn_layers": n_bn,
                           "test_data": st.test_ref, "test_accuracy": None, "flops": None, "params": None}
    try:
        res.update(profile(t.module, (s.channels, s.height, s.width)))
    except Exception as e:  # noqa: BLE001 - e.g. a TorchScript teacher the counter cannot hook
        res["profile_error"] = f"{type(e).__name__}: {e}"
    test = st.test_source()
    if test is not None:
        if test.spec.signature != s.signature:
            raise DfnasError(f"test data {st.test_ref} is {test.spec.describe()}, the teacher takes {s.describe()}")
        res["test_accuracy"] = evaluate(t.module, test, "cpu", st.cfg.train.eval_batch_size)
    return res


def stage_synth(st: RunState) -> dict[str, Any]:
    from dfnas.synth import synthesize

    g = st.group
    cfg = dataclasses.replace(st.cfg.synth, device=g.device(st.cfg.synth.device))
    return synthesize(st.teacher, cfg, st.out / "synth", force=False, progress=st.progress and g.is_main,
                      rank=g.rank, world_size=g.world_size, barrier=g.barrier)


def stage_search(st: RunState) -> dict[str, Any]:
    from dfnas.strategies.runner import run_search

    cfg = dataclasses.replace(st.cfg.search, device=st.group.device(st.cfg.search.device))
    return run_search(cfg, st.synth_source(), st.out / "search", progress=st.progress, group=st.group)


def stage_train(st: RunState) -> dict[str, Any]:
    from dfnas.spaces.arch import load_arch
    from dfnas.training.train import train_arch

    record = load_arch(st.out / "search" / "arch.json")
    teacher = st.teacher.module if st.cfg.train.online_teacher else None
    cfg = train_config(st.cfg)
    cfg.device = st.group.device(cfg.device)
    metrics = train_arch(record, st.synth_source(), st.test_source(), seeds=st.cfg.train.seeds,
                         out=st.out / "train", teacher=teacher, cfg=cfg, progress=st.progress, group=st.group)
    assert metrics is not None
    return metrics


def best_seed(metrics: dict[str, Any]) -> dict[str, Any]:
    """The seed whose network is exported: best test accuracy, else the first seed."""
    runs = metrics["per_seed"]
    scored = [r for r in runs if r.get("test_accuracy") is not None]
    return max(scored, key=lambda r: r["test_accuracy"]) if scored else runs[0]


def stage_export(st: RunState) -> dict[str, Any]:
    """TorchScript always; ONNX when the onnx package is installed (else a note)."""
    from dfnas.training.export import export_model

    train = json.loads((st.out / "train" / "metrics.json").read_text())
    seed = best_seed(train)
    weights = st.out / "train" / seed["weights"]
    exp = st.out / "export"
    exp.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(st.out / "search" / "arch.json", exp / "arch.json")
    shutil.copyfile(weights, exp / "weights.safetensors")
    results: list[dict[str, Any]] = []
    for fmt in st.cfg.export.formats:
        path = exp / ("model.ts" if fmt == "torchscript" else "model.onnx")
        if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
            results.append({"format": fmt, "out": None, "skipped": "onnx is not installed (pip install 'dfnas[export]')"})
            continue
        try:
            r = export_model(exp / "arch.json", exp / "weights.safetensors", fmt, path, check=st.cfg.export.check,
                                 force=True)  # the run's own export folder
        except DfnasError as e:
            if fmt == "torchscript":
                raise
            results.append({"format": fmt, "out": None, "skipped": f"export failed: {e}"})
            continue
        r["out"] = str(path.relative_to(st.out))
        results.append(r)
    return {"seed": seed["seed"], "weights": str((exp / "weights.safetensors").relative_to(st.out)),
            "arch": "export/arch.json", "files": results}


STAGE_FUNCS: dict[str, Callable[[RunState], dict[str, Any]]] = {
    "teacher": stage_teacher, "synth": stage_synth, "search": stage_search,
    "train": stage_train, "export": stage_export,
}
# the stages every torchrun process takes part in; rank 0 alone runs the others
SHARED_STAGES = ("synth", "search", "train")


# ----------------------------------------------------------------------------- the run


def default_test_data(cfg: RunConfig) -> str | None:
    """Real test data: the configured one, else a bundled teacher's own task's test split."""
    from dfnas.teachers import BUNDLED, bundled_record

    if cfg.test_data is not None:
        return cfg.test_data
    return bundled_record(cfg.teacher.ref).get("task", "mnist") if cfg.teacher.ref in BUNDLED else None


def run_pipeline(cfg: RunConfig, out: str | Path | None = None, force: bool = False, progress: bool = True,
                 command: str | None = None, group: Group | None = None) -> dict[str, Any]:
    """Run (or resume) every stage into `out` (default `cfg.out`); returns the summary dict.
    `group`: the processes of a torchrun launch; synthesis, search and training are spread over
    them, rank 0 runs the other stages and writes the folder (the others return {})."""
    from dfnas.teachers import load_teacher

    cfg = resolve(cfg)
    validate(cfg)
    out = Path(out if out is not None else cfg.out)
    with torch_threads(cfg.threads):
        teacher = load_teacher(cfg.teacher.ref, cfg.teacher.weights, cfg.teacher.spec)
        test_ref = default_test_data(cfg)
        fps = fingerprints(cfg, teacher, test_ref)
        group = group or Group()
        main = group.is_main
        reset = prepare_folder(out, fps, cfg, force) if main else []
        group.barrier()
        if reset and progress and len(reset) < len(STAGES):
            print(f"dfnas run: config changed; redoing stages {', '.join(reset)}")
        st = RunState(cfg, out, teacher, test_ref, progress, group)
        results: dict[str, dict[str, Any]] = {}
        stages = JobStore(out / "stages")
        say = progress and main
        for i, name in enumerate(STAGES):
            marker = stages.get(name, fps[name])
            if marker is not None:
                results[name] = {**marker, "skipped": True}
                if say:
                    print(f"[{i + 1}/{len(STAGES) + 1}] {name}: done earlier ({marker['seconds']:.1f} s), skipped")
                continue
            if say:
                print(f"[{i + 1}/{len(STAGES) + 1}] {name} ...", flush=True)
            t0 = time.perf_counter()
            if main or name in SHARED_STAGES:
                res = STAGE_FUNCS[name](st)
                if main:
                    marker = stages.put(name, fps[name], res, time.perf_counter() - t0)
            group.barrier()  # the stage's files and record are written before anyone goes on
            marker = marker or stages.get(name, fps[name])
            results[name] = {**marker, "skipped": False}
        if not main:
            return {}
        if progress:
            print(f"[{len(STAGES) + 1}/{len(STAGES) + 1}] report ...", flush=True)
        t0 = time.perf_counter()
        from dfnas.pipeline.report import summarize, write_report

        summary = summarize(cfg, out, results)
        write_report(cfg, out, results, summary, command or _api_command(out))
        summary["seconds"]["report"] = round(time.perf_counter() - t0, 2)
        atomic_write_json(out / "summary.json", summary)
        return summary


def _api_command(out: Path) -> str:
    return f"python -c 'from dfnas.pipeline.run import *; run_pipeline(demo_config(), \"{out}\")'  # or a config of your own"
