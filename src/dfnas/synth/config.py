"""The settings of `dfnas synth` (and the `synth:` section of `dfnas run`)."""

from __future__ import annotations

import dataclasses

from dfnas.errors import DfnasError

SMALL_INPUT = 64  # px: teachers up to this input size get `jitter_mode: shift` (under "auto")


@dataclasses.dataclass
class SynthConfig:
    """Model inversion with recursive label calibration and regional update.

    Sizes default to `None` = derived from the teacher's input size by `resolve()`.
    """

    per_class: int = 10  # images per class per round
    rounds: int = 3  # RLC rounds; round 0 uses hard labels, round r>=1 soft labels of round r-1
    batch_size: int = 100  # slots per batch; batches are class-balanced
    steps: int = 300  # Adam steps per batch, all phases together
    lowres_fraction: float = 0.4  # share of steps in the first, low-resolution phase (0 = off)
    lowres_scale: float = 0.5  # resolution of that phase relative to the canvas
    # Adam step in [0, 1] pixel units; None = by input: 0.1 for RGB images up to SMALL_INPUT px
    # (CIFAR-10 with shift jitter: 41.2 % against 35.4 % at 0.25), else DeepInversion's 0.25
    # (the MNIST teacher: 96.2 % against 94.6 % at 0.1; docs/results-mnist.md)
    lr: float | None = None
    betas: tuple[float, float] = (0.5, 0.9)
    warmup_fraction: float = 0.05  # linear warm-up at the start of each phase, then cosine
    # Every weight is free of the teacher's units (docs/synth-units.md): the BN term of a layer
    # is 1 for smooth noise, the priors act on the [0, 1] image.
    bn_weight: float = 12.5  # a_feat: weight of the BN-statistics loss (0 = off)
    first_bn_multiplier: float = 10.0
    tv_l2: float = 0.01  # a_tv2: total variation, squared differences
    tv_l1: float = 0.0  # a_tv1: total variation, absolute differences
    l2: float = 1e-4  # a_l2: L2 prior about mid-grey
    # max shift in pixels; None = by the mode: input size / 16 for "shift", canvas size / 7 for "roll"
    jitter: int | None = None
    # "roll": the whole batch rolled (wrap-around), as DeepInversion; "shift": each image shifted
    # on its own with the vacated band black, as the pad-and-crop training augmentation of
    # CIFAR-style teachers, whose BN statistics include those black bands (docs/results-mnist.md);
    # "auto": "shift" for inputs up to SMALL_INPUT px (CIFAR/MNIST-scale teachers, trained with
    # pad-and-crop), "roll" above (ImageNet-scale ones, trained with random resized crops)
    jitter_mode: str = "auto"
    flip: bool = True  # random horizontal flip (also needs the input spec to allow it)
    # Each view zoomed by U(1-s, 1+s) and turned by U(-d, d) degrees; off by default, for
    # cluttered, harder tasks (docs/method.md, the defaults)
    affine_scale: float = 0.0
    affine_rotate: float = 0.0
    # Each view's channels scaled by exp(U(-c, c)) and shifted by U(-c, c) per image (Plug-In
    # Inversion's colour shift: class evidence that survives colour changes); 0 = off
    color_shift: float = 0.0
    regional: bool = True  # regional update: a random box per image each step
    # Regional update as released (256 px canvas, a random 224 px window, no resize): the canvas
    # is 8/7 of the input and the box an input-sized window (docs/method.md, the defaults)
    region_area: tuple[float, float] = (0.765625, 0.765625)  # area fraction range of the box (of the canvas)
    region_ratio: tuple[float, float] = (1.0, 1.0)  # aspect ratio range of the box
    canvas_scale: float = 1.142857  # regional update's canvas relative to the input; stored resized to the input
    label_temperature: float = 1.0  # softmax temperature of the RLC soft targets
    # A slot whose previous image the teacher gave another class starts its round from the hard
    # label again, instead of carrying that class on (and on: round-2 agreement 0.86 on CIFAR-10,
    # with every class's share drifting); False = the paper's chain as released
    rlc_keep_class: bool = True
    best_every: int = 10  # check the stored-form image every N steps of the last quarter
    seed: int = 0
    device: str = "cpu"
    amp: bool = False  # bfloat16 autocast on GPU (docs/performance.md)
    channels_last: bool = False
    log_every: int = 10  # progress-bar refresh period in steps

    def resolve(self, height: int, width: int, channels: int) -> SynthConfig:
        """Fill the defaults that depend on the teacher's input, so the saved config has no
        `None` or `auto` left."""
        out = dataclasses.replace(self)
        small = max(height, width) <= SMALL_INPUT
        if out.jitter_mode == "auto":
            out.jitter_mode = "shift" if small else "roll"
        if out.lr is None:
            out.lr = 0.1 if small and channels == 3 else 0.25
        if out.jitter is None:
            if out.jitter_mode == "shift":  # measured on CIFAR-10: 2 px beat 5 (docs/results-mnist.md)
                out.jitter = max(1, round(min(height, width) / 16))
            else:
                out.jitter = max(1, round(min(height, width) * (self.canvas_scale if self.regional else 1.0) / 7))
        return out

    def validate(self, num_classes: int) -> None:
        checks = [
            (self.per_class >= 1, "synth.per_class must be >= 1"),
            (self.rounds >= 1, "synth.rounds must be >= 1"),
            (self.batch_size >= 1, "synth.batch_size must be >= 1"),
            (self.steps >= 1, "synth.steps must be >= 1"),
            (0.0 <= self.lowres_fraction < 1.0, "synth.lowres_fraction must be in [0, 1)"),
            (0.0 < self.lowres_scale <= 1.0, "synth.lowres_scale must be in (0, 1]"),
            (self.lr is None or self.lr > 0, "synth.lr must be > 0 (or null: by the input size)"),
            (0.0 <= self.warmup_fraction < 1.0, "synth.warmup_fraction must be in [0, 1)"),
            (min(self.bn_weight, self.tv_l1, self.tv_l2, self.l2) >= 0, "loss weights must be >= 0"),
            (0 < self.region_area[0] <= self.region_area[1] <= 1.0,
             "synth.region_area must be [lo, hi] with 0 < lo <= hi <= 1"),
            (0 < self.region_ratio[0] <= self.region_ratio[1],
             "synth.region_ratio must be [lo, hi] with 0 < lo <= hi"),
            (self.canvas_scale >= 1.0, "synth.canvas_scale must be >= 1"),
            (self.label_temperature > 0, "synth.label_temperature must be > 0"),
            (0.0 <= self.affine_scale < 1.0, "synth.affine_scale must be in [0, 1)"),
            (0.0 <= self.affine_rotate <= 180.0, "synth.affine_rotate must be in [0, 180] degrees"),
            (0.0 <= self.color_shift <= 1.0, "synth.color_shift must be in [0, 1]"),
            (self.jitter_mode in ("auto", "roll", "shift"), "synth.jitter_mode must be 'auto', 'roll' or 'shift'"),
            (self.best_every >= 1, "synth.best_every must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise DfnasError(msg)
