"""The SPOS space (Guo et al., ECCV 2020): a ShuffleNetV2 supernet of choice blocks.

Every block is a LayerChoice `layer_{i}` among `shuffle3x3`, `shuffle5x5`, `shuffle7x7`
(ShuffleNetV2 units with that depthwise kernel) and `xception` (three depthwise 3x3 convs).
A stride-1 unit splits the channels in two halves and transforms one; a stride-2 unit (the
first of a stage) transforms the whole input in both branches; the two branches are
concatenated and channel-shuffled, so every candidate maps the same shape to the same shape.

MNIST scale (defaults): stem 16 ch stride 1, stages (24, 48, 96) x 2 blocks, 28 px.
ImageNet scale (the paper's supernet): `image_size=224, in_channels=3, num_classes=1000,
stem_channels=16, stem_stride=2, stage_channels=(64, 160, 320, 640),
stage_repeats=(4, 4, 8, 4), last_channels=1024, dropout=0.1`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dfnas.spaces import register_space
from dfnas.spaces.base import LayerChoice

SPOS_CHOICES = ["shuffle3x3", "shuffle5x5", "shuffle7x7", "xception"]


def _dw(c: int, k: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False), nn.BatchNorm2d(c)]


def _pw(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=False)]


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """One ShuffleNetV2 unit; `kind` is `shuffle{k}x{k}` or `xception`."""

    def __init__(self, c_in: int, c_out: int, stride: int, kind: str) -> None:
        super().__init__()
        self.stride = stride
        if stride == 1 and c_in != c_out:
            raise ValueError("a stride-1 unit keeps the width")
        branch_in = c_in // 2 if stride == 1 else c_in
        branch_out = c_out - c_in // 2 if stride == 1 else c_out - c_in
        if branch_out <= 0:
            raise ValueError(f"stage width {c_out} must exceed the input width {c_in}")
        mid = max(c_out // 2, 1)
        if kind == "xception":
            main = (_dw(branch_in, 3, stride) + _pw(branch_in, mid) + _dw(mid, 3, 1) + _pw(mid, mid)
                    + _dw(mid, 3, 1) + _pw(mid, branch_out))
            k = 3
        elif kind.startswith("shuffle"):
            k = int(kind[len("shuffle")])
            main = _pw(branch_in, mid) + _dw(mid, k, stride) + _pw(mid, branch_out)
        else:
            raise ValueError(f"unknown SPOS block {kind!r}")
        self.main = nn.Sequential(*main)
        self.proj = nn.Sequential(*(_dw(c_in, k, stride) + _pw(c_in, c_in))) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            half = x.shape[1] // 2
            out = torch.cat([x[:, :half], self.main(x[:, half:])], dim=1)
        else:
            out = torch.cat([self.proj(x), self.main(x)], dim=1)
        return channel_shuffle(out, 2)


@register_space
class SposSpace(nn.Module):
    name = "spos"
    version = 1
    choice_kinds = ("layer",)

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 stem_channels: int = 16, stem_stride: int = 1,
                 stage_channels: Sequence[int] = (24, 48, 96), stage_repeats: Sequence[int] = (2, 2, 2),
                 last_channels: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        if len(stage_channels) != len(stage_repeats):
            raise ValueError("stage_channels and stage_repeats need the same length")
        if any(c % 2 for c in stage_channels):
            raise ValueError("stage_channels must be even (units split channels in halves)")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_channels, 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=False))
        blocks = []
        c = stem_channels
        for width, repeats in zip(stage_channels, stage_repeats, strict=True):
            for r in range(repeats):
                stride = 2 if r == 0 else 1
                blocks.append(LayerChoice(f"layer_{len(blocks)}",
                                          {kind: ShuffleUnit(c, width, stride, kind) for kind in SPOS_CHOICES}))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_pw(c, last_channels), nn.AdaptiveAvgPool2d(1))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x))).flatten(1)
        return self.classifier(self.dropout(x))
