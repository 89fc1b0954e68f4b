"""The DARTS cell space (Liu, Simonyan, Yang, ICLR 2019), as labelled choices.

A network is a stem, then `layers` cells; the cells at 1/3 and 2/3 of the depth are
*reduction* cells (stride 2, channels doubled), the others *normal* cells. All cells of a
type share one decision per label, so an architecture is two cell genotypes:

* `normal/op_2_0` - LayerChoice of the 8 ops on the edge from state 0 to node 2
  (states 0 and 1 are the two previous cells' outputs, nodes 2..5 the intermediate ones);
* `normal/input_2` - InputChoice of the 2 incoming edges node 2 keeps.

In the supernet a strategy installs mixers (DARTS: softmax-weighted sum of ops, sum of all
edges); in a fixed network a node computes only its two chosen edges. The cell output is the
concatenation of the intermediate nodes.

MNIST scale (defaults): `channels=8, layers=5, image_size=28, in_channels=1`.
ImageNet scale (DARTS paper, evaluation net): `channels=48, layers=14, image_size=224,
in_channels=3, num_classes=1000, stem_stride=8, stem_multiplier=1` (the DARTS-V2 genotype
then has 4.70M parameters, as published); search on CIFAR: `channels=16, layers=8,
image_size=32, in_channels=3`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dfnas.spaces import register_space
from dfnas.spaces.base import Arch, FixedInputs, InputChoice, LayerChoice
from dfnas.spaces.ops import DilConv, FactorizedReduce, ReLUConvBN, SepConv, Unused, Zero

DARTS_OPS = [
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
]
CELL_TYPES = ("normal", "reduce")
_OP_LABEL = re.compile(r"^(normal|reduce)/op_(\d+)_(\d+)$")


def darts_op(name: str, c: int, stride: int, affine: bool) -> nn.Module:
    """One candidate operation on a C-channel edge."""
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        return SepConv(c, c, k, stride, k // 2, affine)
    if name.startswith("dil_conv_"):
        k = int(name[-1])
        return DilConv(c, c, k, stride, k - 1, 2, affine)
    raise ValueError(f"unknown DARTS op {name!r}")


class DartsNode(nn.Module):
    """An intermediate node: one LayerChoice per incoming edge, an InputChoice keeps two."""

    def __init__(self, cell_type: str, node: int, c: int, reduction: bool, affine: bool) -> None:
        super().__init__()
        in_label = f"{cell_type}/input_{node}"
        ops = []
        for j in range(node):
            stride = 2 if reduction and j < 2 else 1
            choice = LayerChoice(f"{cell_type}/op_{node}_{j}",
                                 {name: darts_op(name, c, stride, affine) for name in DARTS_OPS})
            choice.gate = (in_label, j)  # this op only costs anything when edge j is chosen
            ops.append(choice)
        self.ops = nn.ModuleList(ops)
        self.inputs = InputChoice(in_label, node, 2)

    def _chosen(self) -> list[int] | None:
        """Edges to compute: the fixed/active selection, or None (all) when mixed."""
        ic = self.inputs
        if isinstance(ic, FixedInputs):
            return list(ic.chosen)
        if isinstance(ic, InputChoice) and ic.mixer is None and ic.active is not None:
            return list(ic.active)
        return None

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        chosen = self._chosen()
        outs: list[Any] = [op(s) if chosen is None or j in chosen else None
                           for j, (op, s) in enumerate(zip(self.ops, states, strict=False))]
        return self.inputs(outs)

    def after_fix(self) -> None:
        """Drop the ops of edges the fixed architecture does not use (no dead parameters)."""
        chosen = self._chosen() or []
        for j in range(len(self.ops)):
            if j not in chosen:
                self.ops[j] = Unused()


class DartsCell(nn.Module):
    def __init__(self, cell_type: str, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool, nodes: int, affine: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_pp, c, affine) if reduction_prev
                            else ReLUConvBN(c_pp, c, 1, 1, 0, affine=affine))
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=affine)
        self.nodes = nn.ModuleList(DartsNode(cell_type, i + 2, c, reduction, affine) for i in range(nodes))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in self.nodes:
            states.append(node(states))
        return torch.cat(states[2:], dim=1)


def make_stem(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 conv + BN; a stride of 2^k uses k stride-2 convs (the ImageNet stems)."""
    if stride < 1 or stride & (stride - 1):
        raise ValueError(f"stem_stride must be a power of two, got {stride}")
    n_down = int(math.log2(stride))
    if n_down == 0:
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels))
    layers: list[nn.Module] = []
    c = in_channels
    for i in range(n_down):
        c_out = out_channels if i == n_down - 1 else max(out_channels // 2, 1)
        layers += [nn.Conv2d(c, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out)]
        if i < n_down - 1:
            layers.append(nn.ReLU(inplace=False))
        c = c_out
    return nn.Sequential(*layers)


@register_space
class DartsSpace(nn.Module):
    """DARTS supernet (or, after `fix`, the network of one genotype)."""

    name = "darts"
    version = 1
    choice_kinds = ("layer", "input")  # op per edge + the wiring of every node

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 channels: int = 8, layers: int = 5, nodes: int = 4, stem_multiplier: int = 3,
                 stem_stride: int = 1, affine: bool = True) -> None:
        super().__init__()
        if layers < 3:
            raise ValueError("layers must be >= 3 (two of them are reduction cells)")
        self.stem = make_stem(in_channels, stem_multiplier * channels, stem_stride)
        c_pp = c_p = stem_multiplier * channels
        c = channels
        reduction_prev = False
        cells = []
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c *= 2
            cells.append(DartsCell("reduce" if reduction else "normal", c_pp, c_p, c,
                                   reduction, reduction_prev, nodes, affine))
            reduction_prev = reduction
            c_pp, c_p = c_p, nodes * c
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1).flatten(1))


def _as_weights(label: str, w: Any) -> list[float]:
    if isinstance(w, Mapping):
        return [float(w.get(name, 0.0)) for name in DARTS_OPS]
    if isinstance(w, torch.Tensor):
        w = w.detach().float().cpu().flatten().tolist()
    if not isinstance(w, Sequence) or len(w) != len(DARTS_OPS):
        raise ValueError(f"{label}: expected {len(DARTS_OPS)} weights over {DARTS_OPS}")
    return [float(v) for v in w]


def derive_darts_arch(weights: Mapping[str, Any], apply_softmax: bool = False, k: int = 2) -> Arch:
    """The DARTS genotype from edge weights: per node, the `k` edges whose strongest
    non-`none` op is largest, each with that op.

    `weights`: {op label -> tensor/list over `DARTS_OPS` (or dict op name -> weight)}; pass
    softmax probabilities, or raw alphas with `apply_softmax=True` (edge strengths are only
    comparable after the per-edge softmax). Labels other than op labels are ignored. Every
    op label gets its best non-`none` op (the arch must name one), the input labels the
    chosen edges.
    """
    nodes: dict[tuple[str, int], dict[int, tuple[float, str]]] = {}
    arch: Arch = {}
    none_idx = DARTS_OPS.index("none")
    for label, w in weights.items():
        m = _OP_LABEL.match(label)
        if not m:
            continue
        vals = _as_weights(label, w)
        if apply_softmax:
            vals = torch.softmax(torch.tensor(vals), 0).tolist()
        best = max((i for i in range(len(vals)) if i != none_idx), key=lambda i: (vals[i], -i))
        cell_type, node, edge = m.group(1), int(m.group(2)), int(m.group(3))
        nodes.setdefault((cell_type, node), {})[edge] = (vals[best], DARTS_OPS[best])
        arch[label] = DARTS_OPS[best]
    for (cell_type, node), edges in sorted(nodes.items()):
        ranked = sorted(edges, key=lambda e: (-edges[e][0], e))
        arch[f"{cell_type}/input_{node}"] = sorted(ranked[:k])
    return arch


def genotype_string(arch: Arch) -> str:
    """Human-readable DARTS genotype, e.g. `normal: 2<-(sep_conv_3x3@0, skip_connect@1) ...`."""
    parts = []
    for cell_type in CELL_TYPES:
        nodes = sorted(int(lbl.split("_")[-1]) for lbl in arch if lbl.startswith(f"{cell_type}/input_"))
        items = []
        for n in nodes:
            ins = arch[f"{cell_type}/input_{n}"]
            items.append(f"{n}<-(" + ", ".join(f"{arch[f'{cell_type}/op_{n}_{j}']}@{j}" for j in ins) + ")")
        parts.append(f"{cell_type}: " + " ".join(items))
    return "; ".join(parts)
