"""Quality of a synthetic set, per round: does the teacher see what we meant, how soft are
the labels, how close are the BN statistics, how varied are the images within a class."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from dfnas.data.spec import InputSpec
from dfnas.synth.bn_stats import bn_losses, bn_reference
from dfnas.teachers.probe import FeatureProbe, reference_input


@torch.inference_mode()
def quality_report(
    probe: FeatureProbe, spec: InputSpec, images: torch.Tensor, logits: torch.Tensor,
    labels: torch.Tensor, rounds: torch.Tensor, seconds: dict[int, float], device: str = "cpu",
    batch: int = 250,
) -> dict[str, Any]:
    """Per-round metrics from the stored uint8 images and their stored logits."""
    scale, shift = spec.affine(device)
    running = bn_reference(probe, reference_input(spec, device))  # 1.0 = as far off as smooth noise
    out: dict[str, Any] = {"rounds": []}
    for r in sorted(set(rounds.tolist())):
        sel = torch.nonzero(rounds == r).flatten()
        lg, lb = logits[sel], labels[sel]
        p = lg.softmax(1)
        ent = -(p * p.clamp_min(1e-12).log()).sum(1)
        bn_d, feats = [], []
        for i in range(0, len(sel), batch):
            xb = images[sel[i : i + batch]].to(device).float().div(255)
            if xb.shape[-2:] != (spec.height, spec.width):
                xb = F.interpolate(xb, size=(spec.height, spec.width), mode="bilinear", antialias=True)
            _, taps = probe(xb * scale + shift)
            if running:
                bn_d.append(bn_losses(taps, running).mean().item() * len(xb))
            if taps.features is not None:
                feats.append(taps.features.flatten(1).float().cpu())
        div = _within_class_diversity(torch.cat(feats), lb) if feats else None
        out["rounds"].append({
            "round": r, "images": len(sel),
            "teacher_agreement": (lg.argmax(1) == lb).float().mean().item(),
            "mean_max_prob": p.max(1).values.mean().item(),
            "mean_entropy": ent.mean().item(),
            "bn_distance": sum(bn_d) / len(sel) if bn_d else float("nan"),
            "diversity": div,
            "seconds": round(seconds.get(r, 0.0), 2),
        })
    return out


def _within_class_diversity(feats: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Mean pairwise cosine distance of features between images of the same class."""
    f = F.normalize(feats, dim=1)
    vals = []
    for k in labels.unique().tolist():
        fk = f[labels == k]
        n = len(fk)
        if n < 2:
            continue
        sim = fk @ fk.T
        vals.append((n * n - sim.sum().item()) / (n * (n - 1)))
    return sum(vals) / len(vals) if vals else None  # one image per class: no pair to compare (JSON null)


def format_report(rep: dict[str, Any]) -> str:
    head = f"{'round':>5} {'images':>6} {'agree':>6} {'max_p':>6} {'entropy':>7} {'bn_dist':>8} {'divers.':>7} {'sec':>7}"
    lines = [head]
    for r in rep["rounds"]:
        lines.append(
            f"{r['round']:>5} {r['images']:>6} {r['teacher_agreement']:>6.3f} {r['mean_max_prob']:>6.3f} "
            f"{r['mean_entropy']:>7.3f} {_f(r['bn_distance']):>8} {_f(r['diversity']):>7} {r['seconds']:>7.1f}"
        )
    return "\n".join(lines)


def _f(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
