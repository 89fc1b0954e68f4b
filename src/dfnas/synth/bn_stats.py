"""The BN-statistics term of the synthesis loss, free of the teacher's feature units.

DeepInversion's distance between a batch's per-layer feature moments and the teacher's running
statistics, read through `dfnas.teachers.probe.FeatureProbe`.
"""

from __future__ import annotations

import torch

from dfnas.teachers.probe import FeatureProbe, Taps

BNReference = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]

def bn_reference(probe: FeatureProbe, reference: torch.Tensor) -> BNReference:
    """Per BN layer (running_mean, running_var, 1 / s, 1 / d_ref), float32, detached: s is the
    layer's RMS running std, d_ref its distance (see `bn_losses`) on `reference`, a batch of
    teacher input (`reference_input`).

    Raw moments carry the units of the teacher's features: a teacher fed raw 0-255 pixels has
    features hundreds of times larger than one fed normalised input. Means in units of s and
    variances in units of s^2 make each layer's distance free of them; dividing by the same
    distance on a fixed reference batch then weighs the layers alike (1 = as far off as smooth
    noise), as they were in the raw units of a teacher fed normalised input."""
    with torch.no_grad():
        _, taps = probe(reference)
    if not taps.means:
        return []
    one = torch.ones((), device=taps.means[0].device)
    ref = []
    for rm, rv in probe.running:
        rm, rv = rm.detach().float(), rv.detach().float()
        s = rv.clamp_min(0).mean().sqrt()
        ref.append((rm, rv, 1.0 / s if s > 0 else one, one))
    d = bn_losses(taps, ref).detach()
    d = d.clamp_min(1e-6 * float(d.max()) + 1e-30)  # a layer the reference already matches: no blow-up
    return [(rm, rv, inv_s, 1.0 / di) for (rm, rv, inv_s, _), di in zip(ref, d, strict=True)]


def bn_losses(taps: Taps, ref: BNReference, batched: bool = True) -> torch.Tensor:
    """Per-layer (||mean - running_mean||_2 / s + ||var - running_var||_2 / s^2) / d_ref, stacked
    (L,): DeepInversion's feature-statistics distance, free of the units of the teacher's
    features (`bn_reference` gives s and d_ref).

    `batched` (default) computes every layer at once from concatenated statistics: a dozen
    kernels instead of five per layer (half the time of the per-layer form on CPU too)."""
    if not taps.means:
        return torch.zeros(0)
    inv_s = torch.stack([r[2] for r in ref])
    inv_d = torch.stack([r[3] for r in ref])
    if batched:
        seg = _segments(tuple(m.numel() for m in taps.means), taps.means[0].device)
        n = len(taps.means)
        out = []
        for stats, k in ((taps.means, 0), (taps.variances, 1)):
            d2 = (torch.cat(stats) - torch.cat([r[k] for r in ref])).square()
            # clamped like the norm's zero subgradient: sqrt'(0) = inf would turn it into NaN
            out.append(d2.new_zeros(n).index_add_(0, seg, d2).clamp_min(1e-30).sqrt())
        mean_d, var_d = out
    else:
        mean_d = torch.stack([torch.linalg.vector_norm(m - r[0]) for m, r in zip(taps.means, ref, strict=True)])
        var_d = torch.stack([torch.linalg.vector_norm(v - r[1]) for v, r in zip(taps.variances, ref, strict=True)])
    return (mean_d * inv_s + var_d * inv_s.square()) * inv_d


_SEGMENTS: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}


def _segments(sizes: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Layer index of every concatenated channel, made once per (layers, device): a fresh
    host-to-device copy each step would stall the GPU stream."""
    key = (sizes, device)
    if key not in _SEGMENTS:
        _SEGMENTS[key] = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(device)
    return _SEGMENTS[key]
