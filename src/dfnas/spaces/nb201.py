"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020), as labelled choices.

One cell type: 4 nodes, node i (1..3) sums an op on every edge from each earlier node j,
5 candidate ops per edge (`cell/op_{i}_{j}`, shared by every cell). The network is a stem,
three stages of N cells (C, 2C, 4C channels) joined by residual reduction blocks, then
BN-ReLU, global pooling and a linear classifier - as in the benchmark's training networks.

`to_nb201_string` / `from_nb201_string` convert to the benchmark's own notation
`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`, so results can be looked up in the benchmark.

MNIST scale (defaults): `channels=8, cells_per_stage=1, image_size=28, in_channels=1`.
Benchmark scale (CIFAR): `channels=16, cells_per_stage=5, image_size=32, in_channels=3`;
ImageNet-16-120 uses `image_size=16, num_classes=120`. For 224-px inputs set `stem_stride=4`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dfnas.errors import DfnasError
from dfnas.spaces import register_space
from dfnas.spaces.base import Arch, LayerChoice
from dfnas.spaces.darts import make_stem
from dfnas.spaces.ops import ReLUConvBN, Zero

NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
NB201_NODES = 4
NB201_LABELS = [f"cell/op_{i}_{j}" for i in range(1, NB201_NODES) for j in range(i)]


def nb201_op(name: str, c: int, affine: bool) -> nn.Module:
    if name == "none":
        return Zero(1)
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, 0, affine=affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, 1, affine=affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NB201 op {name!r}")


class NB201Cell(nn.Module):
    def __init__(self, c: int, affine: bool) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({
            f"{i}_{j}": LayerChoice(f"cell/op_{i}_{j}", {n: nb201_op(n, c, affine) for n in NB201_OPS})
            for i in range(1, NB201_NODES) for j in range(i)
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for i in range(1, NB201_NODES):
            nodes.append(sum(self.edges[f"{i}_{j}"](nodes[j]) for j in range(i)))
        return nodes[-1]


class ResidualReduction(nn.Module):
    """The benchmark's reduction block: two ReLU-conv-BN (first strided) + pooled 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, affine: bool) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine=affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine=affine)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


@register_space
class NB201Space(nn.Module):
    """NAS-Bench-201 supernet (or, after `fix`, one of its 15,625 networks)."""

    name = "nb201"
    version = 1
    choice_kinds = ("layer",)
    channels_last = True  # NHWC pooling/depthwise kernels: ~1.4x per step on the CPU

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 channels: int = 8, cells_per_stage: int = 1, stem_stride: int = 1,
                 affine: bool = True) -> None:
        super().__init__()
        self.stem = make_stem(in_channels, channels, stem_stride)
        blocks: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                blocks.append(ResidualReduction(c, 2 * c, affine))
                c *= 2
            blocks += [NB201Cell(c, affine) for _ in range(cells_per_stage)]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.blocks(self.stem(x))).flatten(1))

    @staticmethod
    def arch_valid(arch: Arch) -> bool:
        """A path of non-`none` edges leads from the cell input to its output; without one
        every cell outputs a constant and the network predicts one class whatever the input."""
        return nb201_connected(arch)


def nb201_connected(arch: Arch) -> bool:
    """Whether node 3 is reachable from node 0 through edges whose op is not `none`."""
    return nb201_depth(arch) is not None


def nb201_depth(arch: Arch, count: Sequence[str] = ("nor_conv_3x3", "avg_pool_3x3")) -> int | None:
    """Most `count` ops on one path of non-`none` edges from the cell input to its output (None:
    no such path). With the default, how many 3x3 windows the deepest path stacks: its receptive
    field, which real cluttered digits reward and shallow 1x1 cells lack."""
    depth: list[int | None] = [0, None, None, None]
    for i in range(1, 4):
        for j in range(i):
            op = arch.get(f"cell/op_{i}_{j}", "none")
            dj = depth[j]
            if op != "none" and dj is not None:
                d = dj + (op in count)
                depth[i] = d if depth[i] is None else max(depth[i], d)
    return depth[3]


def to_nb201_string(arch: Arch) -> str:
    """`|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|` from a dfnas architecture."""
    missing = [lbl for lbl in NB201_LABELS if lbl not in arch]
    if missing:
        raise DfnasError(f"not an nb201 architecture: missing {missing[:3]}")
    nodes = []
    for i in range(1, NB201_NODES):
        nodes.append("|" + "|".join(f"{arch[f'cell/op_{i}_{j}']}~{j}" for j in range(i)) + "|")
    return "+".join(nodes)


_ENTRY = re.compile(r"^([a-z0-9_]+)~(\d+)$")


def from_nb201_string(s: str) -> Arch:
    """Parse the benchmark notation; one-line DfnasError on anything malformed."""
    groups = s.strip().split("+")
    if len(groups) != NB201_NODES - 1:
        raise DfnasError(f"NB201 string must have {NB201_NODES - 1} '+'-separated nodes, got {s!r}")
    arch: Arch = {}
    for i, g in enumerate(groups, start=1):
        if not (g.startswith("|") and g.endswith("|")):
            raise DfnasError(f"NB201 string node {i} must look like |op~0|...|, got {g!r}")
        entries = [e for e in g.strip("|").split("|")]
        if len(entries) != i:
            raise DfnasError(f"NB201 string node {i} needs {i} entries, got {len(entries)} in {g!r}")
        for e in entries:
            m = _ENTRY.match(e)
            if not m or m.group(1) not in NB201_OPS or int(m.group(2)) >= i:
                raise DfnasError(f"NB201 string entry {e!r} of node {i} is not op~j with op in {NB201_OPS} and j < {i}")
            label = f"cell/op_{i}_{int(m.group(2))}"
            if label in arch:
                raise DfnasError(f"NB201 string names edge {m.group(2)}->{i} twice")
            arch[label] = m.group(1)
    return arch


def derive_nb201_arch(weights: Mapping[str, Any], apply_softmax: bool = False) -> Arch:
    """Argmax op per edge (the NB201 convention; `none` can win and cut the edge)."""
    arch: Arch = {}
    for label in NB201_LABELS:
        if label not in weights:
            raise ValueError(f"missing weights for {label}")
        w = weights[label]
        if isinstance(w, Mapping):
            w = [float(w.get(n, 0.0)) for n in NB201_OPS]
        t = torch.as_tensor(w, dtype=torch.float32).detach().cpu().flatten()
        if apply_softmax:
            t = torch.softmax(t, 0)
        arch[label] = NB201_OPS[int(t.argmax())]
    return arch
