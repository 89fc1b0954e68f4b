"""Costs of architectures: the wiring probe and per-choice FLOPs (or measured latency) tables.

`probe` records which edge feeds which input of every InputChoice; `CostModel` makes the
FLOPs of an architecture and the expected cost of a distribution over choices cheap sums.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfnas.spaces.base import Arch, InputChoice, LayerChoice, choice_instances, set_mixers

_ZERO_NAMES = ("none", "zero")


def is_zero_op(name: str) -> bool:
    """Candidates that output zeros (DARTS `none`, NB201 `none`, a skippable layer's `zero`)."""
    return name.lower() in _ZERO_NAMES


@dataclasses.dataclass
class Probe:
    """The wiring of a supernet seen in one forward pass: per InputChoice label, the
    LayerChoice label that produced each candidate input (None if not a LayerChoice output)."""

    input_sources: dict[str, list[str | None]]


def probe(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu") -> Probe:
    """One batch-1 forward that records which edge feeds which input of every InputChoice.

    Every LayerChoice runs its first candidate and returns a fresh tensor (`+ 0`), so the
    InputChoice inputs are matched to the LayerChoice that made them by identity; this
    works for any space without knowing its label scheme.
    """
    produced: dict[int, tuple[torch.Tensor, str]] = {}
    sources: dict[str, list[str | None]] = {}

    def lmix(c: LayerChoice, x: torch.Tensor) -> torch.Tensor:
        out = c.candidates[c.names[0]](x) + 0
        produced[id(out)] = (out, c.label)
        return out

    def imix(c: InputChoice, inputs: list[torch.Tensor]) -> torch.Tensor:
        sources.setdefault(c.label, [produced.get(id(t), (None, None))[1] for t in inputs])
        return sum(t for t in inputs if t is not None)

    saved = [(m, m.mixer) for m in choice_instances(model)]
    set_mixers(model, lmix, imix)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape[-3:]), device=device))
    finally:
        model.train(was)
        for m, mixer in saved:
            m.mixer = mixer
    return Probe(sources)


class CostModel:
    """Cost of architectures from a `dfnas.spaces.profile.CostTable` (exact, gated DARTS edges included).

    `of(arch)` in `unit` (MFLOPs or ms); `expected(probs)` is the differentiable expected
    cost under independent per-choice distributions (ungated: for chain spaces).
    """

    def __init__(self, table: Any, names: dict[str, list[str]], scale: float, unit: str) -> None:
        self.table, self.scale, self.unit = table, scale, unit
        per = table.per_label()
        self.base = table.base * scale
        self.rows = {lb: [per.get(lb, {}).get(n, 0.0) * scale for n in ns] for lb, ns in names.items()}

    def of(self, arch: Arch) -> float:
        return float(self.table.cost(arch)) * self.scale

    def expected(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.as_tensor(self.base, dtype=torch.float32)
        for lb, p in probs.items():
            total = total + (p * torch.tensor(self.rows[lb], dtype=p.dtype, device=p.device)).sum()
        return total


def layer_names(model: nn.Module) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in choice_instances(model):
        if isinstance(m, LayerChoice):
            out.setdefault(m.label, list(m.names))
    return out


def flops_cost_model(model: nn.Module, input_shape: tuple[int, ...]) -> CostModel:
    """MFLOPs (multiply-adds) per architecture, from the profile module's per-candidate table."""
    from dfnas.spaces.profile import build_cost_tables

    return CostModel(build_cost_tables(model, tuple(input_shape[-3:]))[0], layer_names(model), 1e-6, "MFLOPs")


def latency_cost_model(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str,
                       repeats: int, cache: Path | None) -> CostModel:
    """Milliseconds (batch 1, median) measured on this machine; cached in `cache` (ProxylessNAS LUT)."""
    from dfnas.spaces.profile import measure_latency_table

    table = measure_latency_table(model, tuple(input_shape[-3:]), device, repeats=repeats, cache=cache)
    return CostModel(table, layer_names(model), 1.0, "ms")


def default_latency_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dfnas" / "latency"
