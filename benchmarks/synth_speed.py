"""Cost of one synthesis step vs a bare teacher forward+backward, same batch, same run.

    python benchmarks/synth_speed.py                  # bundled teacher, batch 100
    python benchmarks/synth_speed.py --teacher cifar10-resnet20   # the bundled CIFAR-10 ResNet-20
    python benchmarks/synth_speed.py --device cuda --amp
    python benchmarks/synth_speed.py --device cuda --amp --channels-last --batch 64 \
        --factory torchvision.models:resnet50 --size 224 --classes 1000    # ImageNet scale

`--factory` times any importable `module:function` teacher at random init (the weights
do not change the cost), with an ImageNet-style spec of `--size` pixels and `--classes`.

The reference is the least any inversion step can cost: the teacher's forward and backward
w.r.t. the input on the same batch. A dfnas step adds the crop/flip/jitter view, the BN
statistics of every BN input, the priors, Adam and the clamp. Both are timed interleaved
(best of `--repeats` blocks) so load from other processes hits both alike. On CPU the
allocator is tuned as in `dfnas synth` (freed activations are reused, not page-faulted in
again), for both measurements.
`--profile N` prints the N ops taking the most device time in five steps (after timing).
Last line: JSON {metric, value, reference, ratio, images_per_second}; target ratio <= 1.15.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dfnas.data.spec import InputSpec
from dfnas.io import tune_cpu_allocator
from dfnas.synth.config import SynthConfig
from dfnas.synth.engine import Inverter
from dfnas.teachers import Teacher, _import_factory, load_teacher
from dfnas.teachers.probe import FeatureProbe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--iters", type=int, default=20, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--no-regional", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--teacher", default="mnist-cnn", help="a bundled teacher: mnist-cnn, cifar10-resnet20, ...")
    ap.add_argument("--factory", default=None, help="module:function building the teacher (instead of --teacher)")
    ap.add_argument("--size", type=int, default=224, help="input size with --factory")
    ap.add_argument("--classes", type=int, default=1000, help="classes with --factory")
    ap.add_argument("--affine-scale", type=float, default=SynthConfig.affine_scale, help="synth.affine_scale")
    ap.add_argument("--affine-rotate", type=float, default=SynthConfig.affine_rotate, help="synth.affine_rotate")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also print the N ops that take the most device time over five steps (torch.profiler)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cpu":  # as `dfnas synth` does; applies to the reference and the step alike
        tune_cpu_allocator()
    if args.factory:
        spec = InputSpec(3, args.size, args.size, args.classes, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        module = _import_factory(args.factory)()
        t = Teacher(module.eval(), spec, args.factory, "factory")
    else:
        t = load_teacher(args.teacher)
    t.to(dev)
    if args.channels_last:
        t.module.to(memory_format=torch.channels_last)
    spec = t.spec
    cfg = SynthConfig(device=args.device, amp=args.amp, regional=not args.no_regional, lowres_fraction=0.0,
                      channels_last=args.channels_last, affine_scale=args.affine_scale,
                      affine_rotate=args.affine_rotate).resolve(spec.height, spec.width, spec.channels)
    inv = Inverter(FeatureProbe(t.module), spec, cfg, dev)
    hard = (torch.arange(args.batch) % spec.num_classes).to(dev)
    x = torch.rand(args.batch, spec.channels, spec.height, spec.width, device=dev).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr, betas=cfg.betas)
    gen = torch.Generator().manual_seed(0)
    xin = torch.rand_like(x)
    if args.channels_last:
        xin = xin.contiguous(memory_format=torch.channels_last)
    xin.requires_grad_(True)

    def bare() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp and dev.type == "cuda"):
            out = t.module(xin)
        out.float().sum().backward()

    def step() -> None:
        inv._step(x, hard, None, gen, opt)

    def timed(fn) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.iters

    for _ in range(3):
        bare()
        step()
    tb, ts = [], []
    for _ in range(args.repeats):
        tb.append(timed(bare))
        ts.append(timed(step))
    b, s = min(tb), min(ts)
    if args.profile:
        _profile(step, dev, args.profile)
    print(f"device {dev}, threads {torch.get_num_threads()}, batch {args.batch}: bare fwd+bwd {b * 1e3:.1f} ms, "
          f"synthesis step {s * 1e3:.1f} ms (ratio {s / b:.3f}), {args.batch / s:.0f} images-steps/s")
    print(json.dumps({"metric": "synth_step_seconds", "value": round(s, 5), "reference": round(b, 5),
                      "ratio": round(s / b, 4), "images_per_second": round(args.batch / s, 1),
                      "target_ratio": 1.15, "device": str(dev), "batch": args.batch, "teacher": t.name,
                      "amp": args.amp, "channels_last": args.channels_last,
                      "affine": [args.affine_scale, args.affine_rotate]}))


def _profile(step, dev: torch.device, rows: int) -> None:
    """Where a step's time goes, per op, over 5 steps: launch-bound steps show many short kernels."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(5):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows))


if __name__ == "__main__":
    main()
