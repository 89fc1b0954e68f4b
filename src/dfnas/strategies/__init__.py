"""NAS strategies by name: DARTS, ProxylessNAS, SPOS (+ evolution) and random search.

    strategy = create_strategy("darts", cfg)          # cfg: dfnas.config.SearchConfig
    result = strategy.search(supernet, ctx)           # ctx: common.SearchContext

`run_search` (in `runner`) wraps this with data, output folder, resume and artifacts.
"""

from __future__ import annotations

from dfnas.config import SearchConfig
from dfnas.errors import DfnasError
from dfnas.strategies.base import SearchResult, Strategy

__all__ = ["ALGOS", "COMPATIBLE_SPACES", "SearchResult", "Strategy", "create_strategy", "list_strategies"]

ALGOS = ("darts", "proxyless", "spos", "random")

# Which built-in spaces each algorithm searches. ProxylessNAS binarizes LayerChoices only;
# the DARTS cell's input choices (wiring) have no binary-gate form, so it is refused there.
COMPATIBLE_SPACES: dict[str, tuple[str, ...]] = {
    "darts": ("darts", "nb201", "proxyless", "spos"),
    "proxyless": ("nb201", "proxyless", "spos"),
    "spos": ("darts", "nb201", "proxyless", "spos"),
    "random": ("darts", "nb201", "proxyless", "spos"),
}


def _classes() -> dict[str, type[Strategy]]:
    from dfnas.strategies.darts import DartsStrategy
    from dfnas.strategies.proxyless import ProxylessStrategy
    from dfnas.strategies.random_search import RandomStrategy
    from dfnas.strategies.spos import SposStrategy

    return {c.name: c for c in (DartsStrategy, ProxylessStrategy, SposStrategy, RandomStrategy)}


def list_strategies() -> list[str]:
    return list(ALGOS)


def create_strategy(name: str, cfg: SearchConfig) -> Strategy:
    classes = _classes()
    if name not in classes:
        raise DfnasError(f"unknown search algorithm '{name}'; choose one of {list(ALGOS)}")
    return classes[name](cfg)
