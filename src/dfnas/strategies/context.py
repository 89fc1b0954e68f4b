"""The context a search strategy runs in: Lightning-style hooks (`on_step_end`,
`on_epoch_end`), the search log, progress bars, atomic checkpoints, and the torchrun group
(`sharded` phases split every batch over the processes; `reduce` sums their gradients)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfnas.dist import Group, synced
from dfnas.errors import DfnasError
from dfnas.io import atomic_save
from dfnas.strategies.config import SearchConfig
from dfnas.strategies.search_data import SearchData


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

    @property
    def group(self) -> Group:
        return self.data.group

    # -- scale-out ------------------------------------------------------------------------
    @contextlib.contextmanager
    def sharded(self, model: nn.Module) -> Iterator[None]:
        """Within: every rank trains on its rows of each batch with BatchNorm over the global
        batch; losses must go through `weigh` and their gradients through `reduce`. One process:
        nothing changes."""
        self.data.sharded = True
        try:
            with synced(model, self.group.distributed):
                yield
        finally:
            self.data.sharded = False

    @property
    def share(self) -> float:
        """The weight of this rank's loss in a sharded step: its fraction of the global batch."""
        return self.data.share if self.data.sharded and self.group.distributed else 1.0

    def weigh(self, loss: torch.Tensor) -> torch.Tensor:
        """This rank's mean loss -> its term of the global batch's mean loss (before backward)."""
        return loss * self.share if self.share != 1.0 else loss

    def reduce(self, tensors: Sequence[torch.Tensor]) -> None:
        """Gradients (and loss values) of weighed losses -> those of the global batch, in place."""
        if self.data.sharded:
            self.group.reduce_(tensors)

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
        if self.out is None or not self.group.is_main:
            return
        with open(self.out / "search.log", "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def bar(self, total: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, disable=not self.progress or not self.group.is_main,
                    dynamic_ncols=True)

    # -- checkpoints ---------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out is None else self.out / "checkpoint.pt"

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomic: a kill during the write leaves the previous checkpoint intact."""
        if self.checkpoint_path is None or not self.group.is_main:
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
