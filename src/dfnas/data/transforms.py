"""Batched augmentations on image tensors (no torchvision): one kernel per batch, no Python loop.

Used for training students/teachers on real or synthetic images, and on synthesis views.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_translate(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by an integer offset in [-max_shift, max_shift], zero fill.

    Equivalent to "pad by max_shift then random crop", done for the whole batch at once: one
    gather from the zero-padded batch (`take_windows`), several times cheaper on CPU than
    resampling through grid_sample, and exact.
    """
    if max_shift <= 0:
        return x
    h, w = x.shape[-2:]
    shifts = torch.randint(-max_shift, max_shift + 1, (len(x), 2), generator=generator)
    m = max_shift
    # out[i, j] = x[i + dy, j + dx], read from the padded batch
    return take_windows(F.pad(x, (m, m, m, m)), shifts[:, 1] + m, shifts[:, 0] + m, h, w)


def take_windows(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int, width: int,
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Per image i the height x width window of x[i] at (top[i], left[i]), mirrored where
    flip[i]: one gather for the batch, its backward one scatter-add."""
    n, c, h, w = x.shape
    rows = top.to(x.device).view(n, 1) + torch.arange(height, device=x.device)
    cols = left.to(x.device).view(n, 1) + torch.arange(width, device=x.device)
    if flip is not None:
        cols = torch.where(flip.to(x.device).view(n, 1), cols.flip(1), cols)
    idx = (rows.view(n, height, 1) * w + cols.view(n, 1, width)).view(n, 1, height * width)
    return x.flatten(2).gather(2, idx.expand(n, c, height * width)).view(n, c, height, width)


def random_affine(x: torch.Tensor, scale: float, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Per-image random zoom by U(1 - scale, 1 + scale) and rotation by U(-degrees, degrees)
    about the centre, zeros outside (transformation robustness: class evidence that survives
    small zooms and turns is larger-scale than evidence tied to one pixel grid)."""
    n = len(x)
    s = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    a = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _warp(x, theta.to(x), "bilinear")


def color_shift(x: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    """Per image and channel, scale by exp(U(-c, c)) and shift by U(-c, c) ([0, 1] pixels)."""
    n, ch = x.shape[:2]
    u = torch.rand(2, n, ch, 1, 1, generator=generator).to(x) * 2 - 1
    return x * torch.exp(u[0] * c) + u[1] * c


def _warp(x: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """Resample each image through its (2, 3) affine map; zero fill outside."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image left-right with probability 1/2 (a real coin per image)."""
    coin = torch.rand(x.shape[0], generator=generator) < 0.5
    coin = coin.to(x.device).view(-1, 1, 1, 1)
    return torch.where(coin, x.flip(-1), x)


def augment(x: torch.Tensor, max_shift: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    x = random_translate(x, max_shift, generator)
    return random_hflip(x, generator) if flip else x


def smooth_noise(n: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Images in [0, 1] with image-like low frequencies (4x4 noise upsampled, plus fine noise):
    a fixed, data-free reference batch for checks that compare a teacher with its own statistics."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 4, 4, generator=g)
    x = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (0.8 * x + 0.2 * torch.rand(n, channels, height, width, generator=g)).clamp(0, 1)
