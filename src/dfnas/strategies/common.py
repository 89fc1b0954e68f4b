"""What every search strategy shares: the loss and a small loop toolkit. The search data
live in `strategies.data`, architecture costs (FLOPs, latency, wiring probe) in `strategies.costs`.

* `search_loss`: cross-entropy against labels (real data) or KD at temperature T against
  the stored teacher logits (synthetic data); the target's dtype decides, so real and
  synthetic searches run the same code (with an online teacher every target is logits).
* `SearchContext` + `Hook`: Lightning-style callbacks (`on_step_end`, `on_epoch_end`),
  atomic checkpoints, a log and progress bars.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dfnas.errors import DfnasError
from dfnas.io import atomic_save
from dfnas.spaces.base import Arch, InputChoice, LayerChoice
from dfnas.strategies.config import SearchConfig
from dfnas.strategies.search_data import SearchData
from dfnas.training.losses import kd_loss

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


def cosine(step: int, total: int, hi: float, lo: float) -> float:
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
