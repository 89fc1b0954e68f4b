"""Typed configs: dataclasses loaded from YAML, overridable from the CLI (`--set a.b=1`).

Unknown keys and wrong types are refused with the key's dotted name and the allowed values,
before any work starts. `to_dict` gives the resolved config that every run saves.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from dfnas.errors import DfnasError

T = TypeVar("T")


@dataclasses.dataclass
class SynthConfig:
    """Model inversion with recursive label calibration and regional update (SPEC section 2).

    Sizes default to `None` = derived from the teacher's input size by `resolve()`.
    """

    per_class: int = 10  # images per class per round
    rounds: int = 3  # RLC rounds; round 0 uses hard labels, round r>=1 soft labels of round r-1
    batch_size: int = 100  # slots per batch; batches are class-balanced
    steps: int = 300  # Adam steps per batch, all phases together
    lowres_fraction: float = 0.4  # share of steps in the first, low-resolution phase (0 = off)
    lowres_scale: float = 0.5  # resolution of that phase relative to the canvas
    lr: float = 0.25
    betas: tuple[float, float] = (0.5, 0.9)
    warmup_fraction: float = 0.05  # linear warm-up at the start of each phase, then cosine
    # Every weight is free of the teacher's units (docs/synth-units.md): the BN term of a layer
    # is 1 for smooth noise, the priors act on the [0, 1] image.
    bn_weight: float = 12.5  # a_feat: weight of the BN-statistics loss (0 = off)
    first_bn_multiplier: float = 10.0
    tv_l2: float = 0.01  # a_tv2: total variation, squared differences
    tv_l1: float = 0.0  # a_tv1: total variation, absolute differences
    l2: float = 1e-4  # a_l2: L2 prior about mid-grey
    jitter: int | None = None  # max roll in pixels; None = canvas size // 7
    flip: bool = True  # random horizontal flip (also needs the input spec to allow it)
    # Transformation robustness: each view zoomed by U(1-s, 1+s) and turned by U(-d, d) degrees.
    # Off by default: neutral on MNIST (whose bench and demo were measured without it), +10 points
    # of synthetic-data student accuracy on mnist-clutter (README, Synthesis quality).
    affine_scale: float = 0.0
    affine_rotate: float = 0.0
    regional: bool = True  # regional update: a random box per image each step
    # Regional update as released (256 px canvas, random 224 px window, no resize): the canvas
    # is 8/7 of the input and the box an input-sized window. Measured on MNIST: +2 points over
    # zoomed crops (area 0.7-1.0 of an input-sized canvas) and +1.5 over no regional update.
    region_area: tuple[float, float] = (0.765625, 0.765625)  # area fraction range of the box (of the canvas)
    region_ratio: tuple[float, float] = (1.0, 1.0)  # aspect ratio range of the box
    canvas_scale: float = 1.142857  # regional update's canvas relative to the input; stored resized to the input
    label_temperature: float = 1.0  # softmax temperature of the RLC soft targets
    best_every: int = 10  # check the stored-form image every N steps of the last quarter
    seed: int = 0
    device: str = "cpu"
    amp: bool = False  # bfloat16 autocast on GPU (fastest there: 1.18x a bare step vs 1.06x in float32, README)
    channels_last: bool = False
    log_every: int = 10  # progress-bar refresh period in steps

    def resolve(self, height: int, width: int) -> SynthConfig:
        """Fill size-dependent defaults so the saved config has no `None` left."""
        out = dataclasses.replace(self)
        if out.jitter is None:
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
            (self.lr > 0, "synth.lr must be > 0"),
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
            (self.best_every >= 1, "synth.best_every must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise DfnasError(msg)


@dataclasses.dataclass
class TeacherTrainConfig:
    """Training recipe of the bundled teachers (`dfnas teacher train mnist|mnist-clutter`)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    seed: int = 0
    width: int = 32


# ----------------------------------------------------------------------------- generic loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; convert lists to tuples and ints to floats."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except DfnasError as e:
                errors.append(str(e))
        raise DfnasError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise DfnasError(
                f"config key '{key}': {value!r} is not allowed; choose one of {list(allowed)}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DfnasError(f"config key '{key}': expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise DfnasError(f"config key '{key}': expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise DfnasError(f"config key '{key}': expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise DfnasError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise DfnasError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DfnasError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string; a user means the number
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DfnasError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise DfnasError(f"config key '{key}': expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a plain mapping, refusing unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DfnasError(f"config '{prefix.rstrip('.') or 'root'}': expected a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        if k not in names:
            raise DfnasError(
                f"unknown config key '{prefix}{k}'; allowed keys: {', '.join(names)}"
            )
        kwargs[k] = _coerce(v, hints[k], prefix + k)
    return cls(**kwargs)


# Settings that change how fast a stage runs, not what it produces: they stay out of every
# fingerprint, so a folder started with one value resumes with another (killed on the GPU,
# finished on the CPU).
EXECUTION_KEYS: dict[str, tuple[str, ...]] = {
    "synth": ("device", "amp", "channels_last", "log_every"),
    "search": ("device",),
    "train": ("device", "eval_batch_size"),
}


def result_keys(d: dict[str, Any], section: str) -> dict[str, Any]:
    """`d` (a section's `to_dict`) without its execution settings."""
    return {k: v for k, v in d.items() if k not in EXECUTION_KEYS.get(section, ())}


def neutral_dict(obj: Any, section: str) -> dict[str, Any]:
    """`to_dict(obj)` with its execution settings at their defaults: a key that stays the same
    whatever they are, and the same as in folders made before they were set."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    return {**to_dict(obj), **{k: fields[k].default for k in EXECUTION_KEYS.get(section, ()) if k in fields}}


def to_dict(obj: Any) -> Any:
    """Plain, YAML/JSON-safe view of a (nested) dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise DfnasError(f"config file not found: {p}; pass an existing YAML file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "parse error"
        raise DfnasError(f"config file {p} is not valid YAML ({first}); fix the syntax") from e
    if not isinstance(data, dict):
        raise DfnasError(f"config file {p} must hold a mapping of keys to values")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` strings (value parsed as YAML) to a nested mapping, in place."""
    for item in overrides or []:
        if "=" not in item:
            raise DfnasError(f"override '{item}' must look like key=value, e.g. synth.steps=200")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise DfnasError(f"override '{item}': '{p}' is not a section")
        node[parts[-1]] = value
    return data


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


# ----------------------------------------------------------------------------- search (NAS)


@dataclasses.dataclass
class DartsSearchConfig:
    """DARTS bilevel search: alphas by Adam on the val split (values of the DARTS paper)."""

    order: int = 1  # 1 = first order, 2 = unrolled second order (finite-difference HVP)
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    unrolled_lr: float | None = None  # xi of the virtual step; None = current weight lr
    hvp_eps: float = 0.01  # finite-difference step = hvp_eps / ||grad_w' L_val||


@dataclasses.dataclass
class ProxylessSearchConfig:
    """ProxylessNAS: binarized paths, two-path gate gradients, hardware-aware loss."""

    arch_lr: float = 1e-3
    arch_betas: tuple[float, float] = (0.0, 0.999)
    warmup_epochs: int | None = None  # weight-only epochs (uniform paths) first; None = epochs // 4
    hw_metric: Literal["flops", "latency", "none"] = "flops"
    hw_target: float | None = None  # MFLOPs or ms; None = expected cost of the uniform start
    # loss + lambda*cost/target, or the paper's loss*(cost/target)^beta. `add` by default: with
    # `mul` the cost pressure grows with the loss, and KD on synthetic data (x T^2) runs ~2.3x a
    # real-data CE, so every teacher-labelled search was pushed to the cheapest net (bench).
    # `abs` (TuNAS): loss + lambda*|cost/target - 1| pulls every search to the same budget from
    # both sides, whatever its loss scale: like-for-like comparisons across search data.
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
    # what ranks candidates: minus the val loss, or val top-1 (the paper's). Top-1 saturates on
    # synthetic data (the teacher's own labels: most candidates agree on nearly all of them) and
    # ties on small val splits; the loss does neither. Measured on MNIST: two real-data supernets
    # agreed on 30 NB201 cells with tau 0.51-0.59 by loss, 0.35-0.48 by top-1; the bench's SPOS
    # searches found 96.28 % (synthetic) / 96.34 % (real) cells by loss, 95.97 / 96.23 by top-1
    score: Literal["loss", "top1"] = "loss"


@dataclasses.dataclass
class RandomSearchConfig:
    """Random search: uniform samples, each trained briefly from scratch and scored on val."""

    samples: int = 8
    train_steps: int = 50  # SGD steps per sample (from scratch)
    val_batches: int = 4  # 0 = whole val split
    score: Literal["loss", "top1"] = "loss"  # what picks the best sample; see SposSearchConfig.score


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
    darts: DartsSearchConfig = dataclasses.field(default_factory=DartsSearchConfig)
    proxyless: ProxylessSearchConfig = dataclasses.field(default_factory=ProxylessSearchConfig)
    spos: SposSearchConfig = dataclasses.field(default_factory=SposSearchConfig)
    random: RandomSearchConfig = dataclasses.field(default_factory=RandomSearchConfig)


@dataclasses.dataclass
class TrainConfig:
    """Training one fixed architecture (`dfnas train`): SGD + cosine, batched augmentation."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    lr_min: float = 0.0
    warmup_epochs: float = 0.0  # linear warm-up from lr/100, then cosine (steadies tiny nets' first steps)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    grad_clip: float = 5.0  # 0 = off
    max_shift: int | None = None  # random translation in pixels; None = H // 14
    flip: bool = True  # horizontal flip, only where the input spec allows it
    kd_temperature: float = 3.0  # synthetic data / online teacher: KD at this T
    eval_batch_size: int = 500
    device: str = "cpu"

    def validate(self, prefix: str = "train") -> None:
        """One-line errors naming the key, before any training starts."""
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise DfnasError(f"config keys '{prefix}.epochs', '{prefix}.batch_size' must be >= 1 and '{prefix}.lr' > 0")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise DfnasError(f"config key '{prefix}.warmup_epochs' must be in [0, epochs={self.epochs}); "
                             f"got {self.warmup_epochs}")


# ----------------------------------------------------------------------------- dfnas run


@dataclasses.dataclass
class TeacherRefConfig:
    """Which teacher `dfnas run` inverts: a bundled name, a factory + weights, or TorchScript."""

    ref: str = "mnist-cnn"
    weights: str | None = None  # state dict for a factory teacher (.safetensors / .pt)
    spec: str | dict[str, Any] | None = None  # input spec: JSON path or an inline mapping


@dataclasses.dataclass
class RunTrainConfig(TrainConfig):
    """Final training of the found network (TrainConfig fields) plus the run-only settings."""

    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    online_teacher: bool = False  # KD to the live teacher on augmented views, not stored logits


@dataclasses.dataclass
class ExportConfig:
    """Formats of the final network; onnx is skipped (with a note) when onnx is not installed."""

    formats: list[str] = dataclasses.field(default_factory=lambda: ["torchscript", "onnx"])
    check: bool = True  # compare the exported model's outputs with PyTorch


@dataclasses.dataclass
class RunConfig:
    """`dfnas run`: every stage's settings in one file; see dfnas.pipeline.run."""

    teacher: TeacherRefConfig = dataclasses.field(default_factory=TeacherRefConfig)
    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    train: RunTrainConfig = dataclasses.field(default_factory=RunTrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    test_data: str | None = None  # real labelled test set; None = a bundled teacher's own task (mnist, mnist-clutter)
    out: str = "runs/dfnas-run"  # output folder (--out overrides)
    device: str | None = None  # when set, used by every stage (overrides the sections' device)
    seed: int | None = None  # when set, used by every stage (synth, search, train seeds = [seed])
    threads: int | None = None  # torch CPU threads; None = torch's default
