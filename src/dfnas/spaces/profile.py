"""FLOPs, parameters and latency of networks and of architectures of a supernet.

FLOPs are counted with forward hooks as multiply-adds (MACs), per image (batch 1):

* Conv: output elements x (in_channels / groups) x kernel area (bias adds not counted);
* Linear: output elements x in_features;
* BatchNorm: one multiply-add per element (scale and shift);
* Max/Avg pooling: output elements x kernel area; adaptive average pooling: input elements.

Activations, additions and concatenations are free; functional calls are not seen. We use
our own counter rather than fvcore/ptflops: ptflops cannot build inputs for parameter-free
modules (pools, skips) that a per-candidate table needs, and fvcore traces the graph and
brings four extra dependencies for what is ~40 lines of hooks.

Searches evaluate thousands of architectures, so `CostTable` holds per-candidate costs of
every choice instance of a supernet (measured once at the input shapes the supernet sees)
and sums them for an architecture without building any network. `measure_latency_table`
fills the same table with latencies measured on the current device, cached in a JSON file
(the lookup table of ProxylessNAS).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfnas.io import atomic_write_json
from dfnas.spaces.base import Arch, InputChoice, LayerChoice

Shape = tuple[int, ...]


# ----------------------------------------------------------------------------- counting
def _module_flops(m: nn.Module, inputs: tuple[Any, ...], out: Any) -> int:
    if isinstance(m, nn.modules.conv._ConvNd):
        return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return inputs[0].numel()
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        k = m.kernel_size
        return out.numel() * (k * k if isinstance(k, int) else math.prod(k))
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d)):
        return inputs[0].numel()
    return 0


COUNTED = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.MaxPool2d,
           nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode without touching BN running stats, restoring each module's flag after."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, f in flags.items():
            m.training = f


def _device_of(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _full_shape(input_shape: Shape) -> Shape:
    return tuple(input_shape) if len(input_shape) == 4 else (1, *input_shape)


def count_flops(model: nn.Module, input_shape: Shape, skip: Callable[[nn.Module], bool] | None = None) -> int:
    """Multiply-adds of one forward on a (C, H, W) input (batch 1), see module docstring."""
    total = 0

    def hook(m: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
        nonlocal total
        total += _module_flops(m, inputs, out)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, COUNTED) and not (skip and skip(m))]
    try:
        x = torch.zeros(_full_shape(input_shape), device=_device_of(model))
        with _eval_mode(model), torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return int(total)


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def profile(model: nn.Module, input_shape: Shape) -> dict[str, int]:
    """{"flops": multiply-adds per image, "params": parameter count}."""
    return {"flops": count_flops(model, input_shape), "params": count_params(model)}


# ----------------------------------------------------------------------------- per-choice tables
@dataclasses.dataclass
class CostTable:
    """Cost of an architecture = base + sum over choice instances of the chosen candidate.

    `entries`: module path -> (label, {candidate: cost}); instances sharing a label (DARTS
    cells) are summed. `gates`: module path -> (input label, edge index): the instance
    only counts when that edge is chosen (an unchosen DARTS edge is not computed).
    """

    unit: str
    base: float
    entries: dict[str, tuple[str, dict[str, float]]]
    gates: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)
    key: dict[str, Any] = dataclasses.field(default_factory=dict)

    def cost(self, arch: Arch) -> float:
        total = self.base
        for path, (label, table) in self.entries.items():
            gate = self.gates.get(path)
            if gate is not None and gate[1] not in arch[gate[0]]:
                continue
            total += table[arch[label]]
        return total

    def per_label(self) -> dict[str, dict[str, float]]:
        """{label: {candidate: summed cost over its instances}} (ungated), for expected-cost losses."""
        out: dict[str, dict[str, float]] = {}
        for label, table in self.entries.values():
            acc = out.setdefault(label, dict.fromkeys(table, 0.0))
            for name, v in table.items():
                acc[name] += v
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "base": self.base, "key": self.key,
                "entries": {p: {"label": lbl, "costs": t} for p, (lbl, t) in self.entries.items()},
                "gates": {p: list(g) for p, g in self.gates.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostTable:
        return cls(d["unit"], float(d["base"]),
                   {p: (e["label"], {k: float(v) for k, v in e["costs"].items()}) for p, e in d["entries"].items()},
                   {p: (g[0], int(g[1])) for p, g in d.get("gates", {}).items()}, d.get("key", {}))


def _input_shape(supernet: nn.Module, input_shape: Shape | None) -> Shape:
    if input_shape is not None:
        return tuple(input_shape)
    cfg = getattr(supernet, "space_cfg", None)
    if cfg is None:
        raise ValueError("pass input_shape (the supernet was not built by create_space)")
    from dfnas.spaces import input_shape_of

    return input_shape_of(cfg)


def _choice_instances(supernet: nn.Module) -> dict[str, LayerChoice]:
    return {path: m for path, m in supernet.named_modules() if isinstance(m, LayerChoice)}


def _record_shapes(supernet: nn.Module, input_shape: Shape) -> dict[str, Shape]:
    """Input shape of every LayerChoice instance, with every edge computed once."""
    instances = _choice_instances(supernet)
    shapes: dict[str, Shape] = {}
    saved = {}
    for m in supernet.modules():
        if isinstance(m, (LayerChoice, InputChoice)):
            saved[m] = (m.mixer, m.active)
    path_of = {id(m): p for p, m in instances.items()}

    def layer_mixer(choice: LayerChoice, x: torch.Tensor) -> torch.Tensor:
        shapes[path_of[id(choice)]] = tuple(x.shape)
        return choice.candidates[choice.names[0]](x)

    def input_mixer(choice: InputChoice, inputs: list[Any]) -> torch.Tensor:
        return sum(t for t in inputs if t is not None)

    try:
        for m in saved:
            m.mixer = layer_mixer if isinstance(m, LayerChoice) else input_mixer
        x = torch.zeros(_full_shape(input_shape), device=_device_of(supernet))
        with _eval_mode(supernet), torch.inference_mode():
            supernet(x)
    finally:
        for m, (mixer, active) in saved.items():
            m.mixer, m.active = mixer, active
    return shapes


@contextmanager
def first_candidate_paths(supernet: nn.Module) -> Iterator[None]:
    """Run every LayerChoice through its first candidate and every InputChoice through all
    inputs (the all-edges forward the cost tables are measured on); restore afterwards."""
    saved = {m: (m.mixer, m.active) for m in supernet.modules() if isinstance(m, (LayerChoice, InputChoice))}
    try:
        for m in saved:
            if isinstance(m, LayerChoice):
                m.mixer = lambda c, t: c.candidates[c.names[0]](t)
            else:
                m.mixer = lambda c, inputs: sum(t for t in inputs if t is not None)
        yield
    finally:
        for m, (mixer, active) in saved.items():
            m.mixer, m.active = mixer, active


def build_cost_tables(supernet: nn.Module, input_shape: Shape | None = None) -> tuple[CostTable, CostTable]:
    """(FLOPs table, params table) of a supernet; exact for architectures of it."""
    input_shape = _input_shape(supernet, input_shape)
    instances = _choice_instances(supernet)
    shapes = _record_shapes(supernet, input_shape)
    inside = {id(sub) for lc in instances.values() for sub in lc.candidates.modules()}
    # base FLOPs: the modules outside every candidate, in the same all-edges forward
    with first_candidate_paths(supernet):
        base_flops = count_flops(supernet, input_shape, skip=lambda m: id(m) in inside)
    flops_entries, params_entries, gates = {}, {}, {}
    cand_params = 0
    for path, lc in instances.items():
        if path not in shapes:
            continue  # never reached in a forward (not part of any network)
        flops_entries[path] = (lc.label, {n: float(count_flops(c, shapes[path])) for n, c in lc.candidates.items()})
        params_entries[path] = (lc.label, {n: float(count_params(c)) for n, c in lc.candidates.items()})
        cand_params += sum(count_params(c) for c in lc.candidates.values())
        if getattr(lc, "gate", None) is not None:
            gates[path] = tuple(lc.gate)
    key = {"input_shape": list(input_shape), "space": getattr(supernet, "space_name", None)}
    return (CostTable("flops", float(base_flops), flops_entries, dict(gates), key),
            CostTable("params", float(count_params(supernet) - cand_params), params_entries, dict(gates), key))


def _tables(supernet: nn.Module | str, input_shape: Shape | None) -> tuple[CostTable, CostTable]:
    if isinstance(supernet, str):
        from dfnas.spaces import create_space

        supernet = create_space(supernet)
    cache = supernet.__dict__.setdefault("_dfnas_cost_tables", {})
    key = _input_shape(supernet, input_shape)
    if key not in cache:
        cache[key] = build_cost_tables(supernet, key)
    return cache[key]


def flops_of_arch(supernet: nn.Module | str | CostTable, arch: Arch, input_shape: Shape | None = None) -> int:
    """FLOPs of the fixed network of `arch`, from a table cached on the supernet (fast)."""
    table = supernet if isinstance(supernet, CostTable) else _tables(supernet, input_shape)[0]
    return int(round(table.cost(arch)))


def params_of_arch(supernet: nn.Module | str | CostTable, arch: Arch, input_shape: Shape | None = None) -> int:
    table = supernet if isinstance(supernet, CostTable) else _tables(supernet, input_shape)[1]
    return int(round(table.cost(arch)))


# ----------------------------------------------------------------------------- latency
def device_name(device: str | torch.device) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"{dev.type}:{platform.machine()}:{platform.processor() or 'cpu'}:threads={torch.get_num_threads()}"


def _time_ms(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1000)
    return float(statistics.median(times))


def measure_latency_table(supernet: nn.Module, input_shape: Shape | None = None, device: str | torch.device = "cpu",
                          batch_size: int = 1, repeats: int = 10, warmup: int = 2,
                          cache: str | Path | None = None) -> CostTable:
    """Per-candidate latency (ms, median) of every choice instance on `device`.

    Identical candidates at identical shapes are timed once. The base is the measured
    latency of one whole network minus its candidates' (clamped at 0). With `cache`, a
    table measured for the same space, config, shape, batch and device is reused.
    """
    input_shape = _input_shape(supernet, input_shape)
    dev = torch.device(device)
    key = {"space": getattr(supernet, "space_name", None), "space_version": getattr(supernet, "space_version", None),
           "space_cfg": getattr(supernet, "space_cfg", None), "input_shape": list(input_shape),
           "batch_size": batch_size, "device": device_name(dev), "torch": torch.__version__}
    if cache is not None and Path(cache).is_file():
        import json

        try:
            d = json.loads(Path(cache).read_text())
            if d.get("key") == key:
                return CostTable.from_dict(d)
        except (ValueError, KeyError, TypeError):
            pass  # a broken cache is simply measured again
    supernet = supernet.to(dev)
    shapes = _record_shapes(supernet, input_shape)
    entries: dict[str, tuple[str, dict[str, float]]] = {}
    gates = {}
    seen: dict[tuple[str, Shape], float] = {}
    instances = _choice_instances(supernet)
    with _eval_mode(supernet), torch.inference_mode():
        for path, lc in instances.items():
            if path not in shapes:
                continue
            shape = (batch_size, *shapes[path][1:])
            x = torch.randn(shape, device=dev)
            table = {}
            for name, cand in lc.candidates.items():
                k = (repr(cand), shape)
                if k not in seen:
                    seen[k] = _time_ms(lambda c=cand, t=x: c(t), dev, repeats, warmup)
                table[name] = seen[k]
            entries[path] = (lc.label, table)
            if getattr(lc, "gate", None) is not None:
                gates[path] = tuple(lc.gate)
        # base: one whole single-path network minus its candidates
        with first_candidate_paths(supernet):
            x = torch.randn((batch_size, *input_shape), device=dev)
            whole = _time_ms(lambda: supernet(x), dev, repeats, warmup)
    first = sum(next(iter(t.values())) for _, t in entries.values())  # names[0] of each instance
    table = CostTable("ms", max(0.0, whole - first), entries, gates, key)
    if cache is not None:
        atomic_write_json(cache, table.to_dict())
    return table
