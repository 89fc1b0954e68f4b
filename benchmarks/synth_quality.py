"""Data-free distillation quality of `dfnas synth` on a bundled teacher (MNIST by default).

    python benchmarks/synth_quality.py                 # full protocol (~14 min on 2 idle cores)
    python benchmarks/synth_quality.py --quick         # small smoke version (~2 min)
    python benchmarks/synth_quality.py --bench-config configs/bench-clutter.yaml   # mnist-clutter (~30 min)
    python benchmarks/synth_quality.py --rows full --set bn_weight=1.0              # one row, one setting
    python benchmarks/synth_quality.py --rows full --raw-pixels   # the teacher as a raw 0-255-pixel model
    python benchmarks/synth_quality.py --task cifar10   # cifar10-resnet20; real rows: ../shared/cifar10 sample
    python benchmarks/synth_quality.py --task cifar10 --sets runs/bench-cifar10/data/synthetic   # score made sets

A fixed small student is trained only on a synthetic set (KD to the stored soft labels,
T = 3) and tested on the real MNIST test split. References measured in the same run: the
same student trained on the real labelled train split (cross-entropy), and on uniform-noise
images labelled by the teacher. Rows: plain inversion (1 round, no regional update), +RLC,
+regional, both (the full method), and, outside the headline protocol, the full method's
images distilled with the teacher queried online on each augmented view. Every synthetic row
has 200 images per class (RLC rows 66 per round x 3 = 198), half the real reference's 4,000
labelled images; every student gets the same number of SGD steps, with seeds 0,1,2 (mean ±
std); each set is synthesized once with seed 0.
With --bench-config the task is that bench config's (teacher, train and test data) and every
row starts from its `synth` section (rounds, steps, regional canvas, ...), with the bench's
image count (per_class x rounds per class): how well the images the bench searches on carry
the teacher's knowledge.
Last line: JSON {metric, value, reference, ratio} with value = full-method accuracy,
reference = real-data accuracy (target ratio >= 0.97; >= 0.85 with --task cifar10).
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
import torch.nn.functional as F
from torch import nn

from dfnas.bench import build_config
from dfnas.bench.sources import noise_source
from dfnas.config import from_dict, load_yaml
from dfnas.data.sources import Source, load_source
from dfnas.data.spec import InputSpec
from dfnas.data.transforms import augment
from dfnas.errors import DfnasError
from dfnas.synth import synthesize
from dfnas.synth.config import SynthConfig
from dfnas.teachers import Teacher, load_teacher
from dfnas.training.loop import accuracy, optimizer_step
from dfnas.training.losses import kd_loss

CIFAR_SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "cifar10" / "cifar10-sample.npz"


def cifar10_sample(path: Path) -> tuple[Source, Source]:
    """The kit's 6,102 genuine CIFAR-10 images: (5,085 train, 1,017 test) as Sources."""
    import numpy as np

    from dfnas.data.sources import cifar10_spec

    if not path.is_file():
        sys.exit(f"synth_quality: {path} not found; pass --cifar-sample PATH to cifar10-sample.npz")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: torch.from_numpy(f[k].copy()) for k in ("x_train", "y_train", "x_test", "y_test")}
    spec = cifar10_spec()
    return (Source("cifar10-sample:train", arrays["x_train"], arrays["y_train"].long(), spec,
                   identity={"source": "cifar10-sample:train"}),
            Source("cifar10-sample:test", arrays["x_test"], arrays["y_test"].long(), spec,
                   identity={"source": "cifar10-sample:test"}))


def student(spec: InputSpec, width: int = 16) -> nn.Module:
    """A LeNet-like student, smaller than the teacher and of a different shape."""
    w = width
    return nn.Sequential(
        nn.Conv2d(spec.channels, w, 5, padding=2, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 5, padding=2, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * w * (spec.height // 4) * (spec.width // 4), 64), nn.ReLU(),
        nn.Linear(64, spec.num_classes),
    )


def fit(src: Source, test: Source, steps: int, seed: int, temperature: float = 3.0, teacher=None) -> float:
    """Train the student on `src` for a fixed number of SGD steps (the same for every row,
    whatever its size); KD to stored logits if it has them, else CE. Real test accuracy."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = student(src.spec, width=32 if src.spec.channels == 3 else 16)
    bs = 64
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps, pct_start=0.15)
    step = 0
    while step < steps:
        perm = torch.randperm(len(src), generator=gen)
        for i in range(0, len(src), bs):
            if step >= steps:
                break
            idx = perm[i : i + bs]
            x = augment(src.x[idx].float() / 255, max_shift=max(2, src.spec.height // 14),
                        flip=src.spec.allow_flip, generator=gen)
            out = model(src.normalize(x))
            if teacher is not None:  # online: the teacher's logits on this very augmented view
                with torch.inference_mode():
                    t = teacher.module(teacher.spec.normalize(x))
                t = t.clone()
            elif src.logits is not None:
                t = src.logits[idx]
            else:
                t = None
            if t is None:
                loss = F.cross_entropy(out, src.y[idx])
            else:
                loss = kd_loss(out, t, temperature)
            optimizer_step(opt, loss, model)
            sched.step()
            step += 1
    return accuracy(model, test.x, test.y, test.normalize)


class _RawPixels(nn.Module):
    """A teacher as converted from a framework that feeds raw 0-255 pixels: it maps them to
    [0, 1] and through its own spec inside."""

    def __init__(self, inner: nn.Module, spec: InputSpec) -> None:
        super().__init__()
        self.inner = inner
        scale, shift = spec.affine()
        self.register_buffer("scale", scale / 255)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * self.scale + self.shift)


def raw_pixel_teacher(teacher: Teacher) -> Teacher:
    spec = dataclasses.replace(teacher.spec, mean=[0.0], std=[1.0], pixel_range=(0.0, 255.0))
    return dataclasses.replace(teacher, module=_RawPixels(teacher.module, teacher.spec).eval(), spec=spec,
                               name=f"{teacher.name} (raw 0-255 pixels)")


ROWS = ("plain", "rlc", "regional", "full", "noise", "online")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--task", choices=("mnist", "cifar10"), default="mnist",
                    help="cifar10: the bundled cifar10-resnet20 teacher; real rows from the kit's sample")
    ap.add_argument("--cifar-sample", type=Path, default=CIFAR_SAMPLE)
    ap.add_argument("--bench-config", default=None,
                    help="a dfnas bench config: its teacher, data and synth section (default: MNIST, SynthConfig defaults)")
    ap.add_argument("--images-per-class", type=int, default=None, help="images per class in every row")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--student-steps", type=int, default=None, help="SGD steps of every student (same for all rows)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workdir", default=None, help="keep the synthetic sets here (reruns resume)")
    ap.add_argument("--set", action="append", default=[], help="synth override for every row, key=value")
    ap.add_argument("--raw-pixels", action="store_true",
                    help="synthesize from the teacher wrapped to take raw 0-255 pixels (spec mean 0, std 1): "
                         "the same function in other input units")
    ap.add_argument("--sets", default=None,
                    help="comma-separated synthetic folders (dfnas synth / a bench's data/<name>) to score as they "
                         "are, instead of synthesizing the rows; the first is the headline value")
    ap.add_argument("--rows", default=",".join(ROWS),
                    help=f"comma-separated subset of {','.join(ROWS)} (the real reference always runs)")
    args = ap.parse_args()
    import yaml

    synth0: dict = {}
    teacher_ref, train_data, test_data = "mnist-cnn", "mnist", "mnist"
    if args.bench_config:
        try:
            bcfg = build_config(load_yaml(args.bench_config))
        except DfnasError as e:
            sys.exit(f"synth_quality: {e}")
        synth0 = {k: v for k, v in dataclasses.asdict(bcfg.synth).items() if k not in ("per_class", "rounds", "seed", "regional")}
        teacher_ref, train_data, test_data = bcfg.teacher.ref, bcfg.train_data, bcfg.test_data
        full = (bcfg.synth.rounds, bcfg.synth.per_class * bcfg.synth.rounds, bcfg.synth.steps)
    else:
        full = (3, 200, 150)
    rounds, per_class_total, steps = (2, 20, 60) if args.quick else full
    rounds, per_class_total, steps = args.rounds or rounds, args.images_per_class or per_class_total, args.steps or steps
    student_steps = args.student_steps or (150 if args.quick else 1000)
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(max(1, torch.get_num_threads()))

    if args.task == "cifar10":
        teacher_ref, train_data, test_data = "cifar10-resnet20", "cifar10-sample", "cifar10-sample"
    teacher = load_teacher(teacher_ref)
    if args.task == "cifar10":
        real, test = cifar10_sample(args.cifar_sample)
    else:
        real = load_source(train_data, teacher.spec, split="train")
        test = load_source(test_data, teacher.spec, split="test")
    def as_student_data(src: Source) -> Source:
        """Students read every set through the test data's spec (the images are the same
        [0, 1] bytes whatever units the teacher that made them takes)."""
        return dataclasses.replace(src, spec=test.spec)

    if args.raw_pixels:  # after the data: students and tests keep the teacher's own spec
        teacher = raw_pixel_teacher(teacher)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dfnas-bench-"))

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    base = {**synth0, "steps": steps, "seed": 0, **overrides}
    rows = set() if args.sets else set(args.rows.split(","))
    if not rows <= set(ROWS):
        sys.exit(f"synth_quality: unknown row(s) {sorted(rows - set(ROWS))}; choose from {','.join(ROWS)}")
    if "online" in rows:
        rows.add("full")
    candidates = {
        "plain": ("plain inversion", dict(rounds=1, per_class=per_class_total, regional=False)),
        "rlc": ("+RLC", dict(rounds=rounds, per_class=per_class_total // rounds, regional=False)),
        "regional": ("+regional", dict(rounds=1, per_class=per_class_total, regional=True)),
        "full": ("RLC + regional (dfnas)", dict(rounds=rounds, per_class=per_class_total // rounds, regional=True)),
    }
    try:
        rows_cfg = {name: from_dict(SynthConfig, {**base, **kw}) for key, (name, kw) in candidates.items() if key in rows}
    except DfnasError as e:
        sys.exit(f"synth_quality: {e}")
    results: dict[str, dict] = {}

    def record(name: str, src: Source, extra: dict | None = None, online: bool = False) -> None:
        t0 = time.time()
        accs = [fit(src, test, student_steps, s, teacher=teacher if online else None) for s in seeds]
        results[name] = {"images": len(src), "acc_mean": statistics.mean(accs),
                         "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "accs": accs,
                         "train_seconds": round(time.time() - t0, 1), **(extra or {})}
        r = results[name]
        print(f"{name:<26} n={r['images']:>5}  acc {100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f}", flush=True)

    # the real reference gets the same number of SGD steps as every synthetic row
    real_row = f"real ({len(real):,} labelled)"
    record(real_row, real)
    dirs = {name: work / f"set{i}" for i, name in enumerate(rows_cfg)}
    for name, cfg in rows_cfg.items():
        out = dirs[name]
        t0 = time.time()
        rep = synthesize(teacher, cfg, out, progress=False)
        synth_s = time.time() - t0
        record(name, as_student_data(load_source(str(out))), {"synth_seconds": round(synth_s, 1),
                                             "teacher_agreement": [r["teacher_agreement"] for r in rep["rounds"]],
                                             "mean_max_prob": [r["mean_max_prob"] for r in rep["rounds"]]})
    made = [Path(d) for d in args.sets.split(",")] if args.sets else []
    for d in made:
        src = as_student_data(load_source(str(d)))
        record(str(d), src)
    n_total = rounds * (per_class_total // rounds) * teacher.spec.num_classes
    if "noise" in rows:
        record("noise + teacher labels", noise_source(teacher, n_total // teacher.spec.num_classes, 0))
    if "online" in rows:
        # not the headline protocol (stored labels only): the same dfnas images with the teacher
        # queried on every augmented view, as `dfnas train --teacher` / `dfnas run` do
        record("dfnas images, online KD", as_student_data(load_source(str(dirs["RLC + regional (dfnas)"]))), online=True)

    def acc(name: str) -> float | None:
        return round(results[name]["acc_mean"], 4) if name in results else None

    real_acc = results[real_row]["acc_mean"]
    headline = str(made[0]) if made else "RLC + regional (dfnas)"
    full = results.get(headline, {}).get("acc_mean")
    print(json.dumps({"rows": results, "settings": {"rounds": rounds, "images_per_class": per_class_total,
                      "steps": steps, "student_steps": student_steps, "seeds": seeds, "overrides": overrides,
                      "bench_config": args.bench_config, "teacher": teacher_ref, "data": [train_data, test_data]}},
                     indent=1), file=sys.stderr)
    print(json.dumps({"metric": "student_acc_full_method_vs_real", "value": acc(headline),
                      "reference": round(real_acc, 4), "ratio": round(full / real_acc, 4) if full else None,
                      "plain": acc("plain inversion"), "noise": acc("noise + teacher labels"),
                      "online_kd": acc("dfnas images, online KD"),
                      "target_ratio": 0.85 if args.task == "cifar10" else 0.97}))


if __name__ == "__main__":
    main()
