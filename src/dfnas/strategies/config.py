"""The settings of `dfnas search`: shared ones plus one section per strategy."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal


@dataclasses.dataclass
class DartsSearchConfig:
    """DARTS bilevel search: alphas by Adam on the val split (values of the DARTS paper)."""

    order: int = 1  # 1 = first order, 2 = unrolled second order (finite-difference HVP)
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    unrolled_lr: float | None = None  # xi of the virtual step; None = current weight lr
    hvp_eps: float = 0.01  # finite-difference step = hvp_eps / ||grad_w' L_val||
    # weight-only epochs before the alphas move (also GDAS, DrNAS); 0 = the DARTS paper's
    warmup_epochs: int = 0


@dataclasses.dataclass
class GdasSearchConfig:
    """GDAS: Gumbel-softmax temperature, linear from tau_max to tau_min over the epochs (the
    paper's 10 -> 0.1). The alphas' optimizer is the `darts` section's."""

    tau_max: float = 10.0
    tau_min: float = 0.1
    exclude_none: bool = False  # never draw or derive a `none` op (docs/results-mnist.md, GDAS)


@dataclasses.dataclass
class DrnasSearchConfig:
    """DrNAS: weight of the KL term pulling each Dir(ELU(alpha) + 1) towards the flat Dir(1).
    The alphas' optimizer is the `darts` section's."""

    reg_scale: float = 1e-3


@dataclasses.dataclass
class ProxylessSearchConfig:
    """ProxylessNAS: binarized paths, two-path gate gradients, hardware-aware loss."""

    arch_lr: float = 1e-3
    arch_betas: tuple[float, float] = (0.0, 0.999)
    warmup_epochs: int | None = None  # weight-only epochs (uniform paths) first; None = epochs // 4
    hw_metric: Literal["flops", "latency", "none"] = "flops"
    hw_target: float | None = None  # MFLOPs or ms; None = expected cost of the uniform start
    # add: loss + lambda*cost/target; mul (the paper's): loss*(cost/target)^beta, whose pressure
    # grows with the loss; abs (TuNAS): loss + lambda*|cost/target - 1| (docs/method.md, the defaults)
    hw_mode: Literal["add", "mul", "abs"] = "add"
    hw_beta: float = 0.6
    hw_lambda: float = 0.1
    latency_repeats: int = 10  # timed runs per candidate for the latency lookup table


@dataclasses.dataclass
class SposSearchConfig:
    """SPOS: uniform single-path supernet training, then evolution under a FLOPs limit."""

    flops_range: tuple[float, float] | None = None  # MFLOPs; rejection-sample training paths into it
    flops_limit: float | None = None  # MFLOPs; evolution keeps only candidates under it
    population: int = 20
    generations: int = 5
    topk: int = 5
    mutation: int = 8  # children by mutation per generation
    crossover: int = 8  # children by crossover per generation
    mutation_prob: float = 0.1
    bn_batches: int = 4  # training batches for BN recalibration of every candidate
    val_batches: int = 4  # val batches to score a candidate (0 = whole val split)
    # what ranks candidates: minus the val loss, or val top-1 (the paper's), which saturates on
    # synthetic data and ties on small val splits (docs/method.md, the defaults)
    score: Literal["loss", "top1"] = "loss"


@dataclasses.dataclass
class RandomSearchConfig:
    """Random search: uniform samples, each trained briefly from scratch and scored on val."""

    samples: int = 8
    train_steps: int = 50  # SGD steps per sample (from scratch)
    val_batches: int = 4  # 0 = whole val split
    score: Literal["loss", "top1"] = "loss"  # what picks the best sample; see SposSearchConfig.score


@dataclasses.dataclass
class ZeroShotSearchConfig:
    """Training-free search: candidates scored by a proxy at their initial weights."""

    proxy: Literal["naswot", "zen"] = "naswot"
    samples: int = 100  # distinct valid architectures scored (under spos.flops_limit if set)
    # the batch the proxy sees: one un-augmented batch of the search data (val split), or
    # N(0, 1) noise of the input's shape (`dfnas search` without --data uses noise)
    input: Literal["data", "gaussian"] = "data"
    batch_size: int = 64
    # shortlist-then-refine: the `refine` best by the proxy are each trained from scratch for
    # `refine_steps` SGD steps on the train split and the lowest loss on the whole val split
    # wins; 0 = the proxy's pick alone
    refine: int = 0
    refine_steps: int = 200


@dataclasses.dataclass
class SearchConfig:
    """One `dfnas search` run. The resolved config is saved next to arch.json."""

    algo: str = "darts"
    space: str = "darts"
    space_args: dict[str, Any] = dataclasses.field(default_factory=dict)  # sizes for create_space
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.025  # supernet weights: SGD with cosine decay to lr_min
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    val_fraction: float = 0.5  # share of the data held out for the arch / scoring split
    max_steps_per_epoch: int | None = None  # cap (quick runs, tests); None = whole split
    max_shift: int | None = None  # random translation in pixels; None = H // 14
    flip: bool = True  # horizontal flip, only where the input spec allows it
    kd_temperature: float = 3.0  # synthetic data: KD to the stored logits at this T
    seed: int = 0
    device: str = "cpu"
    # under torchrun: BatchNorm over the global batch (the one-process result, exactly) or over
    # each process's rows (faster where collectives are slow, as with gloo on CPU; DDP's default)
    sync_bn: bool = True
    # NHWC memory layout for the supernet; None: the space's measured preference (spaces.use_channels_last)
    channels_last: bool | None = None
    darts: DartsSearchConfig = dataclasses.field(default_factory=DartsSearchConfig)
    gdas: GdasSearchConfig = dataclasses.field(default_factory=GdasSearchConfig)
    drnas: DrnasSearchConfig = dataclasses.field(default_factory=DrnasSearchConfig)
    proxyless: ProxylessSearchConfig = dataclasses.field(default_factory=ProxylessSearchConfig)
    spos: SposSearchConfig = dataclasses.field(default_factory=SposSearchConfig)
    random: RandomSearchConfig = dataclasses.field(default_factory=RandomSearchConfig)
    zeroshot: ZeroShotSearchConfig = dataclasses.field(default_factory=ZeroShotSearchConfig)
