"""Regional update: each step, each image is seen through a random box resized to the input.

Only pixels inside the box receive gradient, so every step pushes a different region of the
image towards the target at a different scale and position (more objects/parts per image,
more varied images). Crop, resize, flip and the low-resolution phase are one `grid_sample`
per batch: the sampling grid maps output pixel centres onto pixel centres of the box, so
bilinear interpolation never reads (or sends gradient to) a pixel outside it.
The optional zoom and turn of a view (`dfnas.data.transforms.random_affine`) is a second
`grid_sample` on the view, not folded into the crop: a zoomed-out view is padded with the
darkest pixel value, so pixels outside the box still get no gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dfnas.data.transforms import take_windows


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
    bh = torch.sqrt(a / r).round().clamp(min(2, height), height).long()
    bw = torch.sqrt(a * r).round().clamp(min(2, width), width).long()
    top = (torch.rand(n, generator=generator, dtype=torch.float64) * (height - bh + 1)).floor().long()
    left = (u[:, 2] * (width - bw + 1)).floor().long()
    return torch.stack([top, left, bh, bw], dim=1)


def full_boxes(n: int, height: int, width: int) -> torch.Tensor:
    return torch.tensor([[0, 0, height, width]], dtype=torch.long).expand(n, 4).clone()


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean (n, 1, H, W) mask of the pixels inside each box."""
    rows = torch.arange(height).view(1, -1, 1)
    cols = torch.arange(width).view(1, 1, -1)
    top, left, h, w = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return ((rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)).unsqueeze(1)


def crop_resize(
    x: torch.Tensor, boxes: torch.Tensor, out_hw: tuple[int, int], flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Bilinear crop of `boxes` (in pixels of x) resized to `out_hw`, optional per-image flip.

    Sample points run from the centre of the box's first pixel to the centre of its last,
    pulled in by `_EPS` pixel so that rounding can never give weight (or gradient) to a
    pixel outside the box.
    """
    n, _, h, w = x.shape
    oh, ow = out_hw
    b = boxes.to(x.device, torch.float64)
    top, left, bh, bw = (b[:, i : i + 1] for i in range(4))
    u = torch.linspace(0, 1, ow, device=x.device, dtype=torch.float64) if ow > 1 else torch.full((1,), 0.5, device=x.device, dtype=torch.float64)
    v = torch.linspace(0, 1, oh, device=x.device, dtype=torch.float64) if oh > 1 else torch.full((1,), 0.5, device=x.device, dtype=torch.float64)
    u = u.expand(n, ow)
    if flip is not None:
        u = torch.where(flip.to(x.device).view(-1, 1), 1 - u, u)
    ex = torch.where(bw >= w, 0.0, _EPS)  # a box spanning the axis has no outside to protect
    ey = torch.where(bh >= h, 0.0, _EPS)
    xs = left + ex + u * (bw - 1 - 2 * ex).clamp_min(0)
    ys = top + ey + v.expand(n, oh) * (bh - 1 - 2 * ey).clamp_min(0)
    gx = xs / max(w - 1, 1) * 2 - 1
    gy = ys / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(n, oh, ow), gy[:, :, None].expand(n, oh, ow)], dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=True)


_EPS = 1e-3


def crop_windows(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
    """The boxes' pixels as they are, for boxes all of one size (the released regional update:
    an input-sized window of a larger canvas), optionally flipped per image: one gather
    (`take_windows`), about 3x cheaper than `crop_resize`'s grid_sample here."""
    return take_windows(x, boxes[:, 0], boxes[:, 1], int(boxes[0, 2]), int(boxes[0, 3]), flip)
