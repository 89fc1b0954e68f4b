"""What every search strategy shares: the search data, the loss, a small loop toolkit, costs.

* `SearchData` splits one `Source` (real or synthetic) into a seeded train/val pair and
  serves augmented, normalised batches. Batch order and augmentation come from generators
  seeded by `derive_seed(seed, split, key)`, so a resumed run replays exactly the batches
  the killed run would have seen.
* `search_loss`: cross-entropy against labels (real data) or KD at temperature T against
  the stored teacher logits (synthetic data); the target's dtype decides, so real and
  synthetic searches run the same code. With an online teacher, `SearchData` serves the
  teacher's logits on the very augmented view of each batch (real or synthetic data), so
  the loss is KD in every strategy without any change to the strategies.
* `SearchContext` + `Hook`: Lightning-style callbacks (`on_step_end`, `on_epoch_end`),
  atomic checkpoints, a log and progress bars.
* `probe`, `CostModel`: per-choice FLOPs (or measured latency) tables, so the FLOPs of an
  architecture and the expected cost of a distribution over choices are cheap sums.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dfnas.config import SearchConfig
from dfnas.data import Source
from dfnas.errors import DfnasError
from dfnas.io import atomic_save, derive_seed
from dfnas.losses import kd_loss
from dfnas.spaces.base import Arch, InputChoice, LayerChoice
from dfnas.teachers.online import logits_of_images, teacher_logits
from dfnas.transforms import augment

# ----------------------------------------------------------------------------- loss


def search_loss(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """CE for int labels (real data), KD for float logits (synthetic data)."""
    if target.dtype.is_floating_point:
        return kd_loss(logits, target, temperature)
    return F.cross_entropy(logits, target)


def top1(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Number of correct predictions; for soft targets, agreement with the teacher's top-1."""
    label = target.argmax(1) if target.dtype.is_floating_point else target
    return (logits.argmax(1) == label).sum()


# ----------------------------------------------------------------------------- data


def check_fits(source: Source) -> None:
    """Images, labels and stored logits must agree with the input spec the space is built from."""
    s = source.spec
    if source.x.dtype != torch.uint8 or source.x.dim() != 4 or tuple(source.x.shape[1:]) != (s.channels, s.height, s.width):
        raise DfnasError(f"data {source.name} has images {tuple(source.x.shape[1:])} ({source.x.dtype}), "
                         f"the input spec says {(s.channels, s.height, s.width)} uint8; pass the matching --spec")
    if len(source.y) != len(source.x) or len(source.y) == 0:
        raise DfnasError(f"data {source.name} has {len(source.x)} images and {len(source.y)} labels")
    if int(source.y.min()) < 0 or int(source.y.max()) >= s.num_classes:
        raise DfnasError(f"data {source.name} has labels outside [0, {s.num_classes}); check num_classes in the spec")
    if source.logits is not None and tuple(source.logits.shape) != (len(source.x), s.num_classes):
        raise DfnasError(f"data {source.name}: stored logits have shape {tuple(source.logits.shape)}, "
                         f"expected ({len(source.x)}, {s.num_classes})")


class SearchData:
    """A seeded train/val split of one Source, served as augmented normalised batches."""

    def __init__(self, source: Source, cfg: SearchConfig, device: torch.device | str = "cpu",
                 teacher: nn.Module | None = None) -> None:
        """`teacher`: an online teacher taking input normalised like `source` (see OnlineTeacher)."""
        check_fits(source)
        n = len(source)
        n_val = int(round(n * cfg.val_fraction))
        if not 0 < n_val < n:
            raise DfnasError(f"search.val_fraction={cfg.val_fraction} leaves an empty split of {n} images; use a value in (0, 1)")
        if min(n - n_val, n_val) < 2:
            raise DfnasError(f"data source {source.name} has only {n} images: too few to split into train and val")
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "split"))
        perm = torch.randperm(n, generator=g)
        self.source = source
        self.spec = source.spec
        self.device = torch.device(device)
        self.batch_size = min(cfg.batch_size, n - n_val, n_val)
        self.seed = cfg.seed
        self.max_shift = cfg.max_shift if cfg.max_shift is not None else max(1, source.spec.height // 14)
        self.flip = bool(cfg.flip and source.spec.allow_flip)
        target = source.logits.float() if source.logits is not None else source.y
        self.x = {"val": source.x[perm[:n_val]], "train": source.x[perm[n_val:]]}
        self.t = {"val": target[perm[:n_val]], "train": target[perm[n_val:]]}
        self.max_steps = cfg.max_steps_per_epoch
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        self._clean_logits: dict[str, torch.Tensor] = {}

    @property
    def is_synthetic(self) -> bool:
        return self.source.is_synthetic

    @property
    def loss_kind(self) -> str:
        """`kd-online` (teacher on each view), `kd-stored` (synthetic logits) or `ce` (labels)."""
        if self.teacher is not None:
            return "kd-online"
        return "kd-stored" if self.source.logits is not None else "ce"

    def clean_logits(self, split: str) -> torch.Tensor:
        """The online teacher's logits on the un-augmented images of `split` (computed once:
        without augmentation the view of an image is fixed, and eval-mode BN is per image)."""
        assert self.teacher is not None
        if split not in self._clean_logits:
            self._clean_logits[split] = logits_of_images(self.teacher, self.x[split], self.source.spec,
                                                         device=self.device)
        return self._clean_logits[split]

    def steps(self, split: str) -> int:
        """Batches per epoch of `split` (last partial batch dropped: BN needs full batches)."""
        s = len(self.x[split]) // self.batch_size
        return min(s, self.max_steps) if self.max_steps else s

    def batches(self, split: str, key: Any, train_aug: bool = True, limit: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches of `split`; the same (seed, split, key) always gives the same stream.

        `limit`: None = one epoch (capped by max_steps_per_epoch), 0 = every full batch of the
        split (scoring "on the whole val split" must not be capped), k = at most k batches."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, split, str(key)))
        x_all, t_all = self.x[split], self.t[split]
        perm = torch.randperm(len(x_all), generator=g)
        whole = len(x_all) // self.batch_size
        n = self.steps(split) if limit is None else min(limit or whole, whole)
        for i in range(n):
            idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
            x = x_all[idx].to(self.device, non_blocking=True).float().div_(255)
            if train_aug:
                x = augment(x, self.max_shift, self.flip, g)
            x = self.source.normalize(x)
            if self.teacher is None:
                t = t_all[idx].to(self.device, non_blocking=True)
            elif train_aug:
                t = teacher_logits(self.teacher, x)  # the same augmented view the student sees
            else:
                t = self.clean_logits(split)[idx.to(self.device)]
            yield x, t

    def cycle(self, split: str, key: Any, train_aug: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless stream over `split` (the val split of a bilevel search is shorter than train)."""
        r = 0
        while True:
            yield from self.batches(split, f"{key}/{r}", train_aug)
            r += 1


# ----------------------------------------------------------------------------- loop toolkit


class Hook:
    """Callbacks a strategy calls during its loop; override what you need."""

    def on_step_end(self, ctx: SearchContext, step: int, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, ctx: SearchContext, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclasses.dataclass
class SearchContext:
    """Everything a strategy's loop needs besides the model: data, config, output, hooks."""

    cfg: SearchConfig
    data: SearchData
    out: Path | None = None
    hooks: list[Hook] = dataclasses.field(default_factory=list)
    progress: bool = True
    global_step: int = 0
    # wall time of earlier calls (from the checkpoint) + this call's: a resumed search reports its whole cost
    seconds_before: float = 0.0
    started: float = dataclasses.field(default_factory=time.time)

    @property
    def seconds(self) -> float:
        """Search wall time over every call, up to the last checkpoint of calls that were killed."""
        return self.seconds_before + time.time() - self.started

    @property
    def device(self) -> torch.device:
        return self.data.device

    # -- hooks ----------------------------------------------------------------------------
    def step_end(self, metrics: dict[str, float]) -> None:
        self.global_step += 1
        for h in self.hooks:
            h.on_step_end(self, self.global_step, metrics)

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.log({"epoch": epoch, **metrics})
        for h in self.hooks:
            h.on_epoch_end(self, epoch, metrics)

    # -- log / progress ------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        """One JSON line per event in DIR/search.log (append: the log survives resumes)."""
        if self.out is None:
            return
        with open(self.out / "search.log", "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def bar(self, total: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, disable=not self.progress, dynamic_ncols=True)

    # -- checkpoints ---------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out is None else self.out / "checkpoint.pt"

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomic: a kill during the write leaves the previous checkpoint intact."""
        if self.checkpoint_path is None:
            return
        state = {**state, "global_step": self.global_step, "seconds": self.seconds}
        atomic_save(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> dict[str, Any] | None:
        p = self.checkpoint_path
        if p is None or not p.is_file():
            return None
        try:
            state = torch.load(p, map_location=self.device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
            raise DfnasError(f"checkpoint {p} is unreadable ({type(e).__name__}); delete it or pass --force to start over") from e
        self.global_step = int(state.get("global_step", 0))
        self.seconds_before = float(state.get("seconds", 0.0))
        return state


def weight_optimizer(model: nn.Module, cfg: SearchConfig) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """SGD + per-epoch cosine decay for the supernet weights (DARTS recipe)."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs), eta_min=cfg.lr_min)
    return opt, sched


def clip_grads(model: nn.Module, max_norm: float) -> None:
    if max_norm and max_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, t: torch.Tensor, cfg: SearchConfig) -> float:
    """One weight step on the search loss of batch (x, t): zero grads, backward, clip, step."""
    opt.zero_grad(set_to_none=True)
    loss = search_loss(model(x), t, cfg.kd_temperature)
    loss.backward()
    clip_grads(model, cfg.grad_clip)
    opt.step()
    return loss.item()


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], temperature: float) -> dict[str, float]:
    """Mean loss and top-1 over the given batches, model in eval mode."""
    was = model.training
    model.eval()
    loss, correct, n = 0.0, 0, 0
    for x, t in batches:
        logits = model(x)
        loss += float(search_loss(logits, t, temperature)) * len(x)
        correct += int(top1(logits, t))
        n += len(x)
    model.train(was)
    return {"loss": loss / max(n, 1), "acc": correct / max(n, 1)}


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Recompute BN running stats as the exact average over `batches` for the active path.

    A single-path candidate of a weight-sharing supernet sees different input statistics
    than the supernet did during training, so SPOS re-estimates them before scoring.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = plain mean over the batches
    was = model.training
    model.train()
    for x, _ in batches:
        model(x)
    model.train(was)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom


def arch_key(arch: Arch) -> str:
    return json.dumps(arch, sort_keys=True)


def candidate_score(res: dict[str, float], metric: str) -> float:
    """Higher is better: top-1 (ties broken by loss) or minus the loss (`acc`, `loss` keys)."""
    return res["acc"] - 1e-6 * res["loss"] if metric == "top1" else -res["loss"]


def choice_instances(model: nn.Module) -> list[LayerChoice | InputChoice]:
    """Every choice module, including repeats of a shared label (DARTS cells share labels)."""
    return [m for m in model.modules() if isinstance(m, (LayerChoice, InputChoice))]


def set_mixers(model: nn.Module, layer_mixer: Callable | None, input_mixer: Callable | None) -> None:
    for m in choice_instances(model):
        m.mixer = layer_mixer if isinstance(m, LayerChoice) else input_mixer


# ----------------------------------------------------------------------------- costs

_ZERO_NAMES = ("none", "zero")


def is_zero_op(name: str) -> bool:
    """Candidates that output zeros (DARTS `none`, NB201 `none`, a skippable layer's `zero`)."""
    return name.lower() in _ZERO_NAMES


@dataclasses.dataclass
class Probe:
    """The wiring of a supernet seen in one forward pass: per InputChoice label, the
    LayerChoice label that produced each candidate input (None if not a LayerChoice output)."""

    input_sources: dict[str, list[str | None]]


def probe(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu") -> Probe:
    """One batch-1 forward that records which edge feeds which input of every InputChoice.

    Every LayerChoice runs its first candidate and returns a fresh tensor (`+ 0`), so the
    InputChoice inputs are matched to the LayerChoice that made them by identity; this
    works for any space without knowing its label scheme.
    """
    produced: dict[int, tuple[torch.Tensor, str]] = {}
    sources: dict[str, list[str | None]] = {}

    def lmix(c: LayerChoice, x: torch.Tensor) -> torch.Tensor:
        out = c.candidates[c.names[0]](x) + 0
        produced[id(out)] = (out, c.label)
        return out

    def imix(c: InputChoice, inputs: list[torch.Tensor]) -> torch.Tensor:
        sources.setdefault(c.label, [produced.get(id(t), (None, None))[1] for t in inputs])
        return sum(t for t in inputs if t is not None)

    saved = [(m, m.mixer) for m in choice_instances(model)]
    set_mixers(model, lmix, imix)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape[-3:]), device=device))
    finally:
        model.train(was)
        for m, mixer in saved:
            m.mixer = mixer
    return Probe(sources)


class CostModel:
    """Cost of architectures from a `dfnas.profile.CostTable` (exact, gated DARTS edges included).

    `of(arch)` in `unit` (MFLOPs or ms); `expected(probs)` is the differentiable expected
    cost under independent per-choice distributions (ungated: for chain spaces).
    """

    def __init__(self, table: Any, names: dict[str, list[str]], scale: float, unit: str) -> None:
        self.table, self.scale, self.unit = table, scale, unit
        per = table.per_label()
        self.base = table.base * scale
        self.rows = {lb: [per.get(lb, {}).get(n, 0.0) * scale for n in ns] for lb, ns in names.items()}

    def of(self, arch: Arch) -> float:
        return float(self.table.cost(arch)) * self.scale

    def expected(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.as_tensor(self.base, dtype=torch.float32)
        for lb, p in probs.items():
            total = total + (p * torch.tensor(self.rows[lb], dtype=p.dtype, device=p.device)).sum()
        return total


def layer_names(model: nn.Module) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in choice_instances(model):
        if isinstance(m, LayerChoice):
            out.setdefault(m.label, list(m.names))
    return out


def flops_cost_model(model: nn.Module, input_shape: tuple[int, ...]) -> CostModel:
    """MFLOPs (multiply-adds) per architecture, from the profile module's per-candidate table."""
    from dfnas.profile import build_cost_tables

    return CostModel(build_cost_tables(model, tuple(input_shape[-3:]))[0], layer_names(model), 1e-6, "MFLOPs")


def latency_cost_model(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str,
                       repeats: int, cache: Path | None) -> CostModel:
    """Milliseconds (batch 1, median) measured on this machine; cached in `cache` (ProxylessNAS LUT)."""
    from dfnas.profile import measure_latency_table

    table = measure_latency_table(model, tuple(input_shape[-3:]), device, repeats=repeats, cache=cache)
    return CostModel(table, layer_names(model), 1.0, "ms")


def default_latency_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dfnas" / "latency"


def cosine(step: int, total: int, hi: float, lo: float) -> float:
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
