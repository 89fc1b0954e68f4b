"""Regional update: each step, each image is seen through a random box resized to the input.

Only pixels inside the box receive gradient, so every step pushes a different region of the
image towards the target at a different scale and position (more objects/parts per image,
more varied images). Crop, resize, flip and the low-resolution phase are one `grid_sample`
per batch: the sampling grid maps output pixel centres onto pixel centres of the box, so
bilinear interpolation never reads (or sends gradient to) a pixel outside it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_boxes(
    n: int, height: int, width: int, area: tuple[float, float], ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Integer boxes (n, 4) as (top, left, box_h, box_w) in pixels of an height x width canvas.

    Area fraction uniform in `area`, aspect ratio (w/h) log-uniform in `ratio`; boxes are
    clipped to the canvas and placed uniformly.
    """
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    frac = area[0] + (area[1] - area[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = torch.exp(log_r)
    a = frac * height * width
    bh = torch.sqrt(a / r).round().clamp(1, height).long()
    bw = torch.sqrt(a * r).round().clamp(1, width).long()
    top = (torch.rand(n, generator=generator, dtype=torch.float64) * (height - bh + 1)).floor().long()
    left = (u[:, 2] * (width - bw + 1)).floor().long()
    return torch.stack([top, left, bh, bw], dim=1)


def full_boxes(n: int, height: int, width: int) -> torch.Tensor:
    return torch.tensor([[0, 0, height, width]], dtype=torch.long).expand(n, 4).clone()


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean (n, 1, H, W) mask of the pixels inside each box."""
    rows = torch.arange(height).view(1, -1, 1)
    cols = torch.arange(width).view(1, 1, -1)
    t, l, h, w = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return ((rows >= t) & (rows < t + h) & (cols >= l) & (cols < l + w)).unsqueeze(1)


def crop_resize(
    x: torch.Tensor, boxes: torch.Tensor, out_hw: tuple[int, int], flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Bilinear crop of `boxes` (in pixels of x) resized to `out_hw`, optional per-image flip.

    With align_corners=True the first/last output pixel centres land on the centres of the
    box's first/last pixels, so every sample is a convex mix of in-box pixels only.
    """
    n, _, h, w = x.shape
    oh, ow = out_hw
    b = boxes.to(x.device, torch.float32)
    top, left, bh, bw = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    # centre and half-extent of the box's pixel centres, in normalized [-1, 1] coordinates
    cx = (left + (bw - 1) / 2) / max(w - 1, 1) * 2 - 1
    cy = (top + (bh - 1) / 2) / max(h - 1, 1) * 2 - 1
    sx = (bw - 1) / max(w - 1, 1)
    sy = (bh - 1) / max(h - 1, 1)
    if flip is not None:
        sx = torch.where(flip.to(x.device), -sx, sx)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [n, x.shape[1], oh, ow], align_corners=True).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
