"""One batch of model inversion: the inner loop of `dfnas synth`.

    x (B,C,h,w) in [0,1]  --crop+resize+flip(+zoom/turn)-->  view (B,C,H,W)  --spec-->  teacher input
    loss = task(teacher(jitter(input)), target) + a_feat * sum_l w_l BN_l + priors(view)

jitter: the batch rolled (`jitter_mode: roll`) or each view shifted with a black band (`shift`).

Every term is free of the teacher's units: the priors act on the [0, 1] view, each layer's BN
term is read in units of its value on a fixed smooth-noise batch (`bn_reference`), and the
step size and clamp are in [0, 1] space. A teacher taking raw 0-255 pixels gets the images of
the same teacher taking [0, 1] floats.

The loop is one teacher forward+backward plus a few batched tensor ops; all randomness comes
from one `torch.Generator` per batch so a batch is reproducible on its own (resume safety).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dfnas.data.spec import InputSpec
from dfnas.data.transforms import color_shift, random_affine, random_translate
from dfnas.synth.bn_stats import bn_losses, bn_reference
from dfnas.synth.config import SynthConfig
from dfnas.synth.priors import l2_prior, task_loss_per_image, tv_l1, tv_l2
from dfnas.synth.regional import crop_resize, crop_windows, full_boxes, sample_boxes
from dfnas.teachers.probe import FeatureProbe, reference_input


@dataclasses.dataclass
class Phase:
    steps: int
    height: int
    width: int


def phases(cfg: SynthConfig, height: int, width: int) -> list[Phase]:
    """Multi-resolution schedule: a low-resolution phase, then the full canvas."""
    n_low = round(cfg.steps * cfg.lowres_fraction)
    out = []
    if n_low > 0:
        out.append(Phase(n_low, max(2, round(height * cfg.lowres_scale)), max(2, round(width * cfg.lowres_scale))))
    out.append(Phase(cfg.steps - n_low, height, width))
    return [p for p in out if p.steps > 0]


def lr_at(step: int, total: int, base: float, warmup_fraction: float) -> float:
    """Linear warm-up, then cosine decay to zero, within one phase."""
    warm = int(total * warmup_fraction)
    if step < warm:
        return base * (step + 1) / warm
    span = max(total - warm, 1)
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / span))


StepCallback = Callable[[int, dict[str, torch.Tensor]], None]


class Inverter:
    """Holds what is shared by every batch of a run: teacher probe, spec mapping, weights."""

    def __init__(self, probe: FeatureProbe, spec: InputSpec, cfg: SynthConfig, device: torch.device | str) -> None:
        self.probe = probe
        self.spec = spec
        self.cfg = cfg = cfg.resolve(spec.height, spec.width, spec.channels)  # idempotent: fills what is left by input size
        self.device = torch.device(device)
        self.scale, self.shift = spec.affine(self.device)
        # the larger canvas exists for the regional windows; without them the image is the input
        scale = cfg.canvas_scale if cfg.regional else 1.0
        self.canvas = (round(spec.height * scale), round(spec.width * scale))
        self.flip = cfg.flip and spec.allow_flip
        # its forward fixes the BN order and reads each layer's unit off the reference batch
        self.running = bn_reference(probe, reference_input(spec, self.device))
        w = torch.ones(len(self.running), device=self.device)
        if len(w):
            w[0] = cfg.first_bn_multiplier
        self.bn_layer_weights = w
        self.use_bn = cfg.bn_weight > 0 and len(self.running) > 0
        self.amp = cfg.amp and self.device.type == "cuda"

    # -------------------------------------------------------------------- views
    def view(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random region (or the whole image), resized to the input, randomly flipped, then
        randomly zoomed and turned where `affine_scale` / `affine_rotate` ask for it."""
        v = self._region(x, gen)
        if self.cfg.affine_scale or self.cfg.affine_rotate:
            v = random_affine(v, self.cfg.affine_scale, self.cfg.affine_rotate, gen)
        return v

    def _region(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        cfg = self.cfg
        coin = (torch.rand(n, generator=gen) < 0.5) if self.flip else None
        same_size = (h, w) == (self.spec.height, self.spec.width)
        if cfg.regional:
            boxes = sample_boxes(n, h, w, cfg.region_area, cfg.region_ratio, gen)
        elif same_size:
            return x if coin is None else torch.where(coin.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        else:
            boxes = full_boxes(n, h, w)
        out_hw = (self.spec.height, self.spec.width)
        if bool((boxes[:, 2] == out_hw[0]).all() and (boxes[:, 3] == out_hw[1]).all()):
            return crop_windows(x, boxes, coin)  # input-sized windows: no resampling needed
        return crop_resize(x, boxes, out_hw, coin)

    def to_input(self, view: torch.Tensor) -> torch.Tensor:
        return view * self.scale + self.shift

    # -------------------------------------------------------------------- evaluation
    @torch.inference_mode()
    def score_stored(self, x01: torch.Tensor, hard: torch.Tensor, soft: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image task loss and logits of the uint8-quantized full image, as it will be stored."""
        xq = quantize(x01).float().div_(255)
        if xq.shape[-2:] != (self.spec.height, self.spec.width):
            xq = F.interpolate(xq, size=(self.spec.height, self.spec.width), mode="bilinear", align_corners=False, antialias=True)
        # fp32 even under --amp: these logits are the stored soft labels (bf16 moved them by ~0.03)
        logits = self.probe.module(self.to_input(xq)).float()
        return task_loss_per_image(logits, hard, soft), logits

    # -------------------------------------------------------------------- the loop
    def invert(
        self, hard: torch.Tensor, soft: torch.Tensor | None, gen: torch.Generator,
        on_step: StepCallback | None = None,
    ) -> torch.Tensor:
        """Optimise one batch of images for `hard` classes (and `soft` targets); returns the
        best full images in [0,1]: of the stored uint8 forms checked over the last quarter of the
        final phase, those the teacher gives their slot's class first, then the lowest task loss."""
        cfg = self.cfg
        n = len(hard)
        hard = hard.to(self.device)
        soft = soft.to(self.device) if soft is not None else None
        plan = phases(cfg, *self.canvas)
        x = (torch.randn(n, self.spec.channels, plan[0].height, plan[0].width, generator=gen) * 0.2 + 0.5).clamp_(0, 1)
        x = x.to(self.device)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        kept: Kept | None = None
        step_global = 0
        for pi, ph in enumerate(plan):
            if x.shape[-2:] != (ph.height, ph.width):
                x = F.interpolate(x, size=(ph.height, ph.width), mode="bilinear", align_corners=False)
            x = x.detach().requires_grad_(True)
            opt = torch.optim.Adam([x], lr=cfg.lr, betas=cfg.betas)
            final = pi == len(plan) - 1
            track_from = ph.steps - max(1, ph.steps // 4)
            for t in range(ph.steps):
                for g in opt.param_groups:
                    g["lr"] = lr_at(t, ph.steps, cfg.lr, cfg.warmup_fraction)
                terms = self._step(x, hard, soft, gen, opt)
                if on_step is not None:
                    on_step(step_global, terms)
                step_global += 1
                if final and t >= track_from and (t - track_from) % cfg.best_every == 0 or final and t == ph.steps - 1:
                    loss_i, logits_i = self.score_stored(x.detach(), hard, soft)
                    cand = (x.detach().clone(), logits_i.argmax(1) != hard, loss_i)
                    kept = cand if kept is None else keep_better(kept, cand)
        return kept[0] if kept is not None else x.detach()

    def _step(self, x: torch.Tensor, hard: torch.Tensor, soft: torch.Tensor | None,
              gen: torch.Generator, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            v = self.view(x, gen)
            terms: dict[str, torch.Tensor] = {}
            loss = torch.zeros((), device=self.device)
            if cfg.tv_l2:
                terms["tv2"] = tv_l2(v)
                loss = loss + cfg.tv_l2 * terms["tv2"]
            if cfg.tv_l1:
                terms["tv1"] = tv_l1(v)
                loss = loss + cfg.tv_l1 * terms["tv1"]
            if cfg.l2:
                terms["l2"] = l2_prior(v - 0.5)  # about mid-grey: the spec's mean may be unknown (raw 0-255)
                loss = loss + cfg.l2 * terms["l2"]
            if cfg.color_shift:
                v = color_shift(v, cfg.color_shift, gen)
            if cfg.jitter and cfg.jitter_mode == "shift":
                v = random_translate(v, cfg.jitter, gen)
            inp = self.to_input(v)
            if cfg.jitter and cfg.jitter_mode == "roll":
                dy, dx = torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=gen).tolist()
                inp = torch.roll(inp, shifts=(dy, dx), dims=(2, 3))
            if cfg.channels_last:
                inp = inp.contiguous(memory_format=torch.channels_last)
            logits, taps = self.probe(inp)
            terms["task"] = task_loss_per_image(logits, hard, soft).mean()
            loss = loss + terms["task"]
            if self.use_bn:
                terms["bn"] = (bn_losses(taps, self.running) * self.bn_layer_weights).sum()
                loss = loss + cfg.bn_weight * terms["bn"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        terms["loss"] = loss
        return terms


Kept = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, teacher's class is wrong, task loss


def keep_better(kept: Kept, cand: Kept) -> Kept:
    """Per image, the better of two stored-form candidates: one the teacher gives its slot's class
    beats one it does not, whatever the loss (a stored image of another class is a mislabelled
    slot, and under RLC it would hand that class to the next round); between equals, the lower
    task loss."""
    (x0, wrong0, loss0), (x1, wrong1, loss1) = kept, cand
    better = (wrong0 & ~wrong1) | ((wrong0 == wrong1) & (loss1 < loss0))
    return (torch.where(better.view(-1, *[1] * (x0.dim() - 1)), x1, x0), torch.where(better, wrong1, wrong0),
            torch.where(better, loss1, loss0))


def quantize(x01: torch.Tensor) -> torch.Tensor:
    """[0,1] floats -> uint8, the lossless storage format (round to nearest)."""
    return x01.detach().clamp(0, 1).mul(255).round_().to(torch.uint8)
