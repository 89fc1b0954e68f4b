"""NAS strategies by name: DARTS, GDAS, DrNAS, ProxylessNAS, SPOS (+ evolution), random and zero-shot search.

    strategy = create_strategy("darts", cfg)          # cfg: dfnas.strategies.config.SearchConfig
    result = strategy.search(supernet, ctx)           # ctx: context.SearchContext

A strategy is a `Strategy` subclass registered with `@register_strategy`; which spaces it can
search follows from what it supports and what each space declares (`compatible_spaces`).
`run_search` (in `runner`) wraps this with data, output folder, resume and artifacts.
"""

from __future__ import annotations

import importlib

from dfnas.errors import DfnasError
from dfnas.strategies.base import SearchResult, Strategy
from dfnas.strategies.config import SearchConfig

__all__ = ["ALGOS", "SearchResult", "Strategy", "compatible_spaces", "create_strategy", "list_strategies",
           "register_strategy", "strategy_class"]

ALGOS = ("darts", "gdas", "drnas", "proxyless", "spos", "random", "zeroshot")  # the built-in strategies, in help order
_MODULES = {"darts": "darts", "gdas": "gdas", "drnas": "drnas", "proxyless": "proxyless", "spos": "spos", "random": "random_search",
            "zeroshot": "zeroshot"}
_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: register a strategy under its `name`."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a class attribute name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"search strategy '{cls.name}' is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    for mod in _MODULES.values():
        importlib.import_module(f"dfnas.strategies.{mod}")


def list_strategies() -> list[str]:
    _load_builtins()
    return list(ALGOS) + sorted(set(_REGISTRY) - set(ALGOS))


def strategy_class(name: str) -> type[Strategy]:
    _load_builtins()
    if name not in _REGISTRY:
        raise DfnasError(f"unknown search algorithm '{name}'; choose one of {list_strategies()}")
    return _REGISTRY[name]


def compatible_spaces(name: str) -> list[str]:
    """The registered spaces strategy `name` can search, from the kinds of choices each declares."""
    from dfnas.spaces import list_spaces, space_class

    cls = strategy_class(name)
    return [s for s in list_spaces() if cls.can_search(space_class(s).choice_kinds)]


def create_strategy(name: str, cfg: SearchConfig) -> Strategy:
    return strategy_class(name)(cfg)
