"""The ProxylessNAS mobile space (Cai, Zhu, Han, ICLR 2019): a chain of MBConv layers.

Every searchable layer is a LayerChoice `layer_{i}` over inverted-residual MBConv blocks
named `k{kernel}_e{expansion}` (kernel {3,5,7} x expansion {3,6}); a layer that keeps the
resolution and the width also offers `zero`, which skips it (the residual carries the
input through), so the search chooses depth as well.

MNIST scale (defaults): stem 16 ch stride 1, stages (16, 24, 32) x depth 2, 28 px.
ImageNet scale (the paper's mobile setting): `image_size=224, in_channels=3,
num_classes=1000, stem_channels=32, stem_stride=2, first_channels=16,
stage_channels=(24, 40, 80, 96, 192, 320), stage_depths=(4, 4, 4, 4, 4, 1),
stage_strides=(2, 2, 2, 1, 2, 1), last_channels=1280, dropout=0.1`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dfnas.spaces import register_space
from dfnas.spaces.base import LayerChoice


class MBConv(nn.Sequential):
    """Inverted residual body: 1x1 expand -> kxk depthwise (strided) -> 1x1 project (linear)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, expansion: int, stride: int) -> None:
        mid = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=False)]
        layers += [
            nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU6(inplace=False),
            nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        ]
        super().__init__(*layers)


class ZeroLayer(nn.Module):
    """`zero`: contributes nothing, so a residual layer becomes the identity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class MBLayer(nn.Module):
    """A searchable layer; adds the input back when shapes allow (as MobileNetV2 does)."""

    def __init__(self, label: str, c_in: int, c_out: int, stride: int,
                 kernels: Sequence[int], expansions: Sequence[int]) -> None:
        super().__init__()
        self.residual = stride == 1 and c_in == c_out
        cands: dict[str, nn.Module] = {
            f"k{k}_e{e}": MBConv(c_in, c_out, k, e, stride) for k in kernels for e in expansions
        }
        if self.residual:
            cands["zero"] = ZeroLayer()
        self.choice = LayerChoice(label, cands)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.choice
        if isinstance(c, ZeroLayer) or (isinstance(c, LayerChoice) and c.mixer is None and c.active == "zero"):
            return x  # a skipped layer: no zeros computed, none exported
        out = c(x)
        return out + x if self.residual else out


@register_space
class ProxylessSpace(nn.Module):
    name = "proxyless"
    version = 1
    choice_kinds = ("layer",)
    channels_last = True  # NHWC pooling/depthwise kernels: ~1.4x per step on the CPU

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 stem_channels: int = 16, stem_stride: int = 1, first_channels: int = 8,
                 stage_channels: Sequence[int] = (16, 24, 32), stage_depths: Sequence[int] = (2, 2, 2),
                 stage_strides: Sequence[int] = (2, 2, 1), last_channels: int = 128,
                 kernels: Sequence[int] = (3, 5, 7), expansions: Sequence[int] = (3, 6),
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not len(stage_channels) == len(stage_depths) == len(stage_strides):
            raise ValueError("stage_channels, stage_depths and stage_strides need the same length")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(stem_channels), nn.ReLU6(inplace=False),
            MBConv(stem_channels, first_channels, 3, 1, 1),
        )
        layers = []
        c = first_channels
        for width, depth, stride in zip(stage_channels, stage_depths, stage_strides, strict=True):
            for d in range(depth):
                layers.append(MBLayer(f"layer_{len(layers)}", c, width, stride if d == 0 else 1,
                                      kernels, expansions))
                c = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Conv2d(c, last_channels, 1, bias=False), nn.BatchNorm2d(last_channels),
            nn.ReLU6(inplace=False), nn.AdaptiveAvgPool2d(1),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.layers(self.stem(x))).flatten(1)
        return self.classifier(self.dropout(x))
