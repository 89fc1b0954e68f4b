"""The interface every search strategy implements, and its result.

A strategy only touches a supernet through the primitives of `dfnas.spaces.base`
(installing mixers, setting `active`, `apply_arch`), so every strategy runs on every space
whose kinds of choices it supports (`supports`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import nn

from dfnas.config import SearchConfig
from dfnas.errors import DfnasError
from dfnas.spaces.base import Arch, InputChoice, LayerChoice, choice_modules
from dfnas.strategies.common import SearchContext


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
    supports_input_choice: ClassVar[bool] = True

    def __init__(self, cfg: SearchConfig) -> None:
        self.cfg = cfg

    def check(self, model: nn.Module, space_name: str = "") -> None:
        """Refuse a supernet this strategy cannot search, before any work starts."""
        choices = choice_modules(model)
        if not choices:
            raise DfnasError(f"space '{space_name}' has no LayerChoice/InputChoice: nothing to search")
        if not self.supports_input_choice and any(isinstance(c, InputChoice) for c in choices.values()):
            raise DfnasError(f"--algo {self.name} cannot search space '{space_name}': it has input choices "
                             f"(cell wiring); use darts, spos or random for that space")
        if not any(isinstance(c, LayerChoice) for c in choices.values()) and self.name == "darts":
            raise DfnasError(f"--algo darts needs LayerChoices in space '{space_name}'")

    def search(self, model: nn.Module, ctx: SearchContext) -> SearchResult:
        raise NotImplementedError
