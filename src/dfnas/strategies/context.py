"""The context a search strategy runs in: Lightning-style hooks (`on_step_end`,
`on_epoch_end`), the search log, progress bars and atomic checkpoints."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

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
