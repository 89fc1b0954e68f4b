"""Which search data lead DARTS to deep cells on mnist-clutter? (the bench's one DARTS miss)

    python benchmarks/darts_cells.py --bench runs/bench-clutter       # every source, 3 seeds (~13 min on 2 idle cores)
    python benchmarks/darts_cells.py --bench runs/bench-clutter --data real,synthetic --steps-per-epoch 27
    python benchmarks/darts_cells.py --quick                          # real data only, 1 short search (~1 min)
    python benchmarks/darts_cells.py --bench runs/bench-clutter --data synthetic --online   # KD to the live teacher

DARTS with the search recipe of a bench config (default configs/bench-clutter.yaml, its `darts`
section; search seeds 0..N-1) on each of these data:
  real           the real train split with its labels (cross-entropy)
  real-kd        the same images with the teacher's logits (KD, as teacher-labelled data is searched)
  real-small     the first N/K images of every class of it, N = the bench's synthetic set size
  real-kd-small  that subset with the teacher's logits
  synthetic      the bench folder's dfnas synthetic set (its stored logits)
  plain          the bench folder's plain-inversion set
--online searches every teacher-labelled source with KD to the live teacher on each augmented
view (the bench's `search_online_teacher`) instead of its stored logits.
For every search: the derived cell, its 3x3 depth (how many 3x3 convs/pools the deepest live
path from the cell input to its output stacks: `nb201_depth`), the supernet's val accuracy,
FLOPs. On the clutter bench real data derived depth 2-3, synthetic data 0-2.
Without --bench only real and real-kd run (the others need its synthetic set).
Last line: JSON {metric, value, reference, ratio}: value = mean 3x3 depth on synthetic data
(or the last data named if synthetic is not), reference = the same on real data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dfnas.bench import BenchConfig, build_config
from dfnas.bench.sources import per_class_subset, synthetic_source
from dfnas.config import apply_overrides, load_yaml
from dfnas.data.sources import Source, load_source
from dfnas.errors import DfnasError
from dfnas.spaces.nb201 import nb201_depth
from dfnas.strategies.runner import run_search
from dfnas.teachers import Teacher, load_teacher
from dfnas.teachers.online import OnlineTeacher, logits_of_images

DATA = ("real", "real-kd", "real-small", "real-kd-small", "synthetic", "plain")


def with_teacher_labels(src: Source, teacher: torch.nn.Module) -> Source:
    """The same images, searched as teacher-labelled data: KD to the teacher's logits."""
    logits = logits_of_images(teacher, src.x, src.spec)
    return dataclasses.replace(src, name=f"{src.name}+teacher", logits=logits,
                               identity={**src.identity, "labels": "teacher-logits"})


def build_sources(names: list[str], cfg: BenchConfig, bench: Path | None, teacher: Teacher) -> dict[str, Source]:
    real = load_source(cfg.train_data, teacher.spec)
    stored: dict[str, Source] = {}
    for name in ("synthetic", "plain"):
        if name in names or (name == "synthetic" and any(n.endswith("small") for n in names)):
            if bench is None or not (bench / "data" / name / "manifest.json").is_file():
                raise DfnasError(f"--data {name} needs --bench DIR holding DIR/data/{name} (a finished dfnas bench)")
            stored[name] = synthetic_source(bench / "data" / name, name)
    net = OnlineTeacher(teacher).eval()
    out: dict[str, Source] = {}
    for name in names:
        if name in stored:
            out[name] = stored[name]
            continue
        src = real
        if name.endswith("small"):
            src = per_class_subset(real, len(stored["synthetic"]) // teacher.spec.num_classes)
        out[name] = with_teacher_labels(src, net) if "-kd" in name else src
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/bench-clutter.yaml", help="bench config whose darts recipe is used")
    ap.add_argument("--bench", default=None, help="a finished bench folder (for synthetic, plain and the *-small size)")
    ap.add_argument("--data", default=None, help=f"comma-separated, from {','.join(DATA)} (default: all)")
    ap.add_argument("--seeds", type=int, default=3, help="search seeds 0..N-1 per data")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="override darts max_steps_per_epoch")
    ap.add_argument("--set", action="append", default=[], help="override of the darts search config, key=value")
    ap.add_argument("--quick", action="store_true", help="real data, 1 seed, 3 epochs")
    ap.add_argument("--workdir", default=None, help="keep the searches here (reruns resume)")
    ap.add_argument("--online", action="store_true", help="teacher-labelled data: KD to the live teacher on each view")
    args = ap.parse_args()
    torch.set_num_threads(2)

    overrides = list(args.set) + (["epochs=3"] if args.quick else [])
    if args.steps_per_epoch is not None:
        overrides.append(f"max_steps_per_epoch={args.steps_per_epoch}")
    try:
        cfg = build_config(apply_overrides(load_yaml(args.config), [f"darts.{o}" for o in overrides]))
    except DfnasError as e:
        sys.exit(f"darts_cells: {e}")
    names = ["real"] if args.quick else (args.data.split(",") if args.data else list(DATA))
    if args.bench is None and not args.data and not args.quick:
        names = [n for n in names if n in ("real", "real-kd")]
    bad = [n for n in names if n not in DATA]
    if bad:
        sys.exit(f"darts_cells: unknown --data {bad[0]!r}; choose from {', '.join(DATA)}")
    seeds = 1 if args.quick else args.seeds
    teacher = load_teacher(cfg.teacher.ref, cfg.teacher.weights, cfg.teacher.spec)
    try:
        sources = build_sources(names, cfg, Path(args.bench) if args.bench else None, teacher)
    except DfnasError as e:
        sys.exit(f"darts_cells: {e}")

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dfnas-darts-cells-"))
    rows: dict[str, list[dict]] = {}
    for name, src in sources.items():
        for seed in range(seeds):
            s = cfg.search_config("darts", seed)
            t0 = time.perf_counter()
            online = teacher if args.online and name != "real" else None
            rec = run_search(s, src, work / f"{name}-s{seed}", progress=False, teacher=online)
            row = {"seed": seed, "cell": rec["nb201_string"], "depth3x3": nb201_depth(rec["choices"]),
                   "supernet_val_acc": round(rec["search"]["supernet_val_acc"], 3),
                   "mflops": round(rec["flops"] / 1e6, 2), "seconds": round(time.perf_counter() - t0, 1)}
            rows.setdefault(name, []).append(row)
            print(f"{name:14s} seed {seed}  depth {row['depth3x3']}  {row['cell']}  "
                  f"supernet val acc {row['supernet_val_acc']:.2f}  {row['mflops']:.2f} MFLOPs  {row['seconds']:.0f} s", flush=True)
    mean = {n: statistics.mean(r["depth3x3"] or 0 for r in rs) for n, rs in rows.items()}
    print(json.dumps({"settings": {"config": args.config, "bench": args.bench, "seeds": seeds, "overrides": overrides,
                                   "images": {n: len(s) for n, s in sources.items()}}, "searches": rows}, indent=1))
    head = "synthetic" if "synthetic" in mean else names[-1]
    value = mean[head]
    ref = mean.get("real")
    out = {"metric": f"darts_mean_3x3_depth_{head}", "value": round(value, 3)}
    if ref is not None:
        out.update(reference=round(ref, 3), ratio=round(value / ref, 3) if ref else None)
    print(json.dumps({**out, "mean_depth": {n: round(v, 3) for n, v in mean.items()}}))


if __name__ == "__main__":
    main()
