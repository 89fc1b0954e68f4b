"""Building blocks shared by the cell spaces (DARTS, NAS-Bench-201).

Written after the operations described in the DARTS paper (Liu et al., 2019) and the
NAS-Bench-201 paper (Dong & Yang, 2020): ReLU-Conv-BN ordering, separable convolutions
applied twice, dilated convolutions, a factorized reduction for stride-2 skips, and a
`Zero` op that keeps the output shape (so `none` can sit in a weighted sum).
"""

from __future__ import annotations

import torch
from torch import nn


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN, the ordering both cell spaces use (pre-activation inside cells)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 dilation: int = 1, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise dilated conv -> pointwise conv -> BN (DARTS `dil_conv_k`)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 dilation: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convs (DARTS `sep_conv_k`); only the first strides."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class Zero(nn.Module):
    """The `none` op: zeros of the output shape (strided when the edge reduces)."""

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs, concatenated (no info lost)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        a = self.conv_1(x)
        # the second conv sees the input shifted by one pixel; pad odd sizes so shapes agree
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, x.shape[3] % 2, 0, x.shape[2] % 2))
        b = self.conv_2(shifted)
        return self.bn(torch.cat([a, b], dim=1))


class Unused(nn.Module):
    """Placeholder for an op the fixed architecture never computes (keeps indices stable)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never called
        raise RuntimeError("this edge is not part of the fixed architecture")


def bn_tail(module: nn.Module) -> tuple[list[nn.Module], nn.BatchNorm2d] | None:
    """(the modules before it, the BatchNorm) for a candidate that is a chain ending in a
    BatchNorm2d, nested chains included (SepConv ends in a DilConv ending in BN); else None.
    A mixed op folds its weight into that BN's affine transform instead of a pass over the output."""
    if not isinstance(module, nn.Sequential) or len(module) == 0:
        return None
    *head, last = list(module)
    if isinstance(last, nn.BatchNorm2d):
        return head, last
    inner = bn_tail(last)
    return None if inner is None else (head + inner[0], inner[1])
