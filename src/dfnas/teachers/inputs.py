"""What a teacher's own statistics say about its input units: the check behind `dfnas teacher info`.

A spec whose pixel range or mean/std is in the wrong units (0-255 against [0, 1], say) is the
most common mistake in a spec file, and nothing fails: the teacher just sees inputs hundreds of
times too large or too small. Its first BatchNorm layer knows better: its running statistics
were collected on real training inputs, so on a batch mapped through a correct spec its input
has about the running standard deviation. The ratio of the two is the check.

    dfnas teacher info --teacher file.py:build --weights w.pt --spec spec.json [--data npz:sample.npz]
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dfnas.teachers import Teacher
from dfnas.teachers.probe import FeatureProbe, reference_input

# A units mistake moves the ratio by a large factor: 56-69x for a [0, 1] ResNet-20 given a raw
# 0-255 spec, 1/9.6x (0.104) for MNIST given its mean/std in 0-255 units on a [0, 1] range. Correct
# specs measured 0.85-1.01 on real images and 0.59-1.10 on the smooth noise used without data.
WARN_FACTOR = 5.0


@torch.inference_mode()
def input_report(teacher: Teacher, x01: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 source: str | None = None) -> dict[str, Any]:
    """Teacher-input range of a batch (default: synthesis's smooth-noise reference batch), and
    the first BN layer's view of it against its running statistics; `warning` is a one-line
    message when they disagree by `WARN_FACTOR` or more."""
    s = teacher.spec
    device = next(iter(teacher.module.parameters()), torch.empty(0)).device
    if x01 is None:
        inp, source = reference_input(s, device), "smooth noise"
    else:
        inp = s.normalize(x01.float().to(device))
    out: dict[str, Any] = {
        "batch": source, "images": len(inp),
        "teacher_input_range": [round(float(inp.min()), 4), round(float(inp.max()), 4)],
    }
    probe = FeatureProbe(teacher.module)
    try:
        logits, taps = probe(inp)
        if labels is not None:
            out["teacher_accuracy"] = round(float((logits.argmax(1).cpu() == labels).float().mean()), 4)
        if taps.variances:
            rm, rv = probe.running[0]
            batch_std = float(taps.variances[0].clamp_min(0).mean().sqrt())
            run_std = float(rv.float().clamp_min(0).mean().sqrt())
            ratio = batch_std / run_std if run_std > 0 else math.inf
            out["first_bn"] = {"batch_input_std": round(batch_std, 6), "running_std": round(run_std, 6),
                               "running_mean_abs": round(float(rm.float().abs().mean()), 6),
                               "ratio": round(ratio, 4)}
            if not (1 / WARN_FACTOR < ratio < WARN_FACTOR):
                out["warning"] = (
                    f"the first BatchNorm sees inputs {ratio:.3g}x its running std on {source}: the spec's "
                    "pixel_range/mean/std are likely in other units than the teacher was trained with; fix the spec "
                    "(e.g. [0, 1] + mean/std in [0, 1] units, or raw pixels: pixel_range [0, 255], mean 0, std 1)")
    finally:
        probe.close()
    return out
