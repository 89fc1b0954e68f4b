"""The interface every search strategy implements, and its result.

A strategy only touches a supernet through the primitives of `dfnas.spaces.base`
(installing mixers, setting `active`, `apply_arch`), so every strategy runs on every space
whose kinds of choices it supports (`supports`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from dfnas.errors import DfnasError
from dfnas.spaces.base import Arch, InputChoice, LayerChoice, choice_modules, most_likely_valid
from dfnas.strategies.config import SearchConfig
from dfnas.strategies.context import SearchContext


@dataclasses.dataclass
class SearchResult:
    arch: Arch
    metrics: dict[str, Any]
    # per epoch: {label: [prob per candidate]} (DARTS / ProxylessNAS), for the alpha plot
    history: list[dict[str, list[float]]] = dataclasses.field(default_factory=list)
    names: dict[str, list[str]] = dataclasses.field(default_factory=dict)


class Strategy:
    """Base class: `search(model, ctx)` runs the whole search, resumably, and returns the arch."""

    name: ClassVar[str] = ""
    supports_input_choice: ClassVar[bool] = True  # can decide an InputChoice (cell wiring)
    needs_layer_choice: ClassVar[bool] = False  # has nothing to optimise without a LayerChoice

    @classmethod
    def can_search(cls, choice_kinds: tuple[str, ...]) -> bool:
        """Whether a space using these kinds of choice ('layer', 'input') is searchable."""
        return (cls.supports_input_choice or "input" not in choice_kinds) and (
            not cls.needs_layer_choice or "layer" in choice_kinds)

    def __init__(self, cfg: SearchConfig) -> None:
        self.cfg = cfg
        self.ctx: SearchContext | None = None

    def weigh(self, loss: torch.Tensor) -> torch.Tensor:
        """This process's term of the global loss in a sharded step (see SearchContext)."""
        return loss if self.ctx is None else self.ctx.weigh(loss)

    def reduce(self, tensors: list[torch.Tensor]) -> None:
        """Sum gradients / loss values over the processes of a sharded step (see SearchContext)."""
        if self.ctx is not None:
            self.ctx.reduce(tensors)

    def grads(self, loss: torch.Tensor, tensors: list[torch.Tensor], values: tuple[torch.Tensor, ...] = ()
              ) -> list[torch.Tensor]:
        """d loss / d tensors (zeros where unused) for a strategy that takes gradients with
        `autograd.grad`; in a sharded step summed over the processes in one collective with
        `values` (loss values to report, in place)."""
        got = torch.autograd.grad(loss, tensors, allow_unused=True)
        out = [g if g is not None else torch.zeros_like(t) for g, t in zip(got, tensors, strict=True)]
        self.reduce([*out, *values])
        return out

    def check(self, model: nn.Module, space_name: str = "") -> None:
        """Refuse a supernet this strategy cannot search, before any work starts."""
        choices = choice_modules(model)
        if not choices:
            raise DfnasError(f"space '{space_name}' has no LayerChoice/InputChoice: nothing to search")
        if not self.supports_input_choice and any(isinstance(c, InputChoice) for c in choices.values()):
            raise DfnasError(f"--algo {self.name} cannot search space '{space_name}': it has input choices "
                             f"(cell wiring); use darts, spos or random for that space")
        if self.needs_layer_choice and not any(isinstance(c, LayerChoice) for c in choices.values()):
            raise DfnasError(f"--algo {self.name} needs LayerChoices in space '{space_name}'")

    def search(self, model: nn.Module, ctx: SearchContext) -> SearchResult:
        raise NotImplementedError


class AlphaStrategy(Strategy):
    """Shared by the strategies with one architecture-parameter vector per LayerChoice label
    (DARTS, GDAS, DrNAS, ProxylessNAS): probabilities, checkpoint state and resume.

    A subclass's `setup` creates `names`, `alphas` (ParameterDict), `_alpha_of` (label ->
    alpha), `w_opt`, `sched` and `arch_opt`.
    """

    names: dict[str, list[str]]
    alphas: nn.ParameterDict
    _alpha_of: dict[str, nn.Parameter]
    w_opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    arch_opt: torch.optim.Optimizer

    def setup(self, model: nn.Module, ctx: SearchContext) -> None:
        raise NotImplementedError

    def probs(self) -> dict[str, torch.Tensor]:
        return {k: torch.softmax(a.detach(), 0).cpu() for k, a in self._alpha_of.items()}

    def valid(self, arch: Arch) -> Arch:
        """The derived `arch`, or the most probable valid one where it cuts the input off."""
        model = getattr(self, "_model", None)
        return arch if model is None else most_likely_valid(model, arch, self.probs())

    def state_dict(self, model: nn.Module, epoch: int, history: list, metrics: dict) -> dict[str, Any]:
        return {"algo": self.name, "epoch": epoch, "model": model.state_dict(), "alphas": self.alphas.state_dict(),
                "w_opt": self.w_opt.state_dict(), "sched": self.sched.state_dict(),
                "arch_opt": self.arch_opt.state_dict(), "history": history, "metrics": metrics}

    def start(self, model: nn.Module, ctx: SearchContext) -> tuple[list[dict[str, list[float]]], int, dict[str, Any]]:
        """Set up on ctx's device and restore the checkpoint if there is one: (history, first epoch, metrics)."""
        model.to(ctx.device).train()
        self.ctx = ctx
        self.setup(model, ctx)
        self._model = model
        history: list[dict[str, list[float]]] = [{k: v.tolist() for k, v in self.probs().items()}]
        start, metrics = 0, {}
        if (st := ctx.load_checkpoint()) is not None:
            model.load_state_dict(st["model"])
            self.alphas.load_state_dict(st["alphas"])
            self.w_opt.load_state_dict(st["w_opt"])
            self.sched.load_state_dict(st["sched"])
            self.arch_opt.load_state_dict(st["arch_opt"])
            history, start, metrics = st["history"], st["epoch"] + 1, st["metrics"]
        return history, start, metrics

    def step_done(self, ctx: SearchContext, bar: Any, lt: float, lv: float, n: int) -> None:
        """Progress and hooks after step n (lt, lv: summed train / val losses of the epoch so far)."""
        bar.update(1)
        bar.set_postfix(train=f"{lt / n:.3f}", val=f"{lv / n:.3f}")
        ctx.step_end({"train_loss": lt / n, "val_loss": lv / n})

    def epoch_done(self, bar: Any, history: list[dict[str, list[float]]], lt: float, lv: float, n: int) -> dict[str, Any]:
        """Close the epoch: lr schedule, probability history; returns the epoch's mean losses."""
        bar.close()
        self.sched.step()
        history.append({k: v.tolist() for k, v in self.probs().items()})
        return {"train_loss": lt / max(n, 1), "val_loss": lv / max(n, 1)}
