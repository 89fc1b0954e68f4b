"""Search spaces by name: a registry so strategies, arch.json files and the CLI agree.

A space is an `nn.Module` class whose constructor takes only keyword size arguments
(`num_classes`, `in_channels`, `image_size`, widths, depths ...) with MNIST-scale defaults;
it carries class attributes `name`, `version` and `choice_kinds` (which of LayerChoice /
InputChoice it uses; strategies read it to say which spaces they search). Bump `version`
whenever the labels, the candidates or the wiring change: an arch.json records both, so an
old file is refused instead of silently building a different network.

    net = create_space("darts", num_classes=10, in_channels=1, channels=8, layers=5)
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from dfnas.errors import DfnasError
from dfnas.spaces.base import (
    Arch,
    InputChoice,
    LayerChoice,
    apply_arch,
    choice_modules,
    fix,
    sample_arch,
    search_space_of,
    validate_arch,
)

__all__ = [
    "Arch", "InputChoice", "LayerChoice", "apply_arch", "choice_modules", "create_space", "fix",
    "list_spaces", "register_space", "resolve_space_cfg", "sample_arch", "search_space_of",
    "space_class", "validate_arch",
]

_REGISTRY: dict[str, type[nn.Module]] = {}
_BUILTINS = ("darts", "nb201", "proxyless", "spos")


def register_space(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: register a space under its `name` attribute."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not isinstance(getattr(cls, "version", None), int):
        raise TypeError(f"{cls.__name__} needs class attributes name: str and version: int")
    if not set(getattr(cls, "choice_kinds", ())) <= {"layer", "input"} or not getattr(cls, "choice_kinds", ()):
        raise TypeError(f"{cls.__name__} needs class attribute choice_kinds: a tuple of 'layer' / 'input'")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"search space '{name}' is registered twice")
    _REGISTRY[name] = cls
    return cls


def _load_builtins() -> None:
    import importlib

    for mod in _BUILTINS:
        importlib.import_module(f"dfnas.spaces.{mod}")


def list_spaces() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def space_class(name: str) -> type[nn.Module]:
    _load_builtins()
    if name not in _REGISTRY:
        raise DfnasError(f"unknown search space '{name}'; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def use_channels_last(model: nn.Module, setting: bool | None) -> bool:
    """Whether to run `model` in channels-last memory layout: `setting`, or where it is None the
    space's own measured preference (class attribute `channels_last`, default False). On the CPU
    it roughly halves the NB201 and ProxylessNAS step (pooling and depthwise kernels are far
    faster in NHWC) and slows the DARTS and SPOS spaces (docs/performance.md)."""
    return bool(getattr(type(model), "channels_last", False)) if setting is None else bool(setting)


def to_memory_format(model: nn.Module, setting: bool | None) -> nn.Module:
    """`model` in place in the layout `use_channels_last` picks; a convolution follows its
    weights' layout, so inputs need no conversion."""
    if use_channels_last(model, setting):
        model.to(memory_format=torch.channels_last)
    return model


def space_defaults(name: str) -> dict[str, Any]:
    """Constructor defaults of a space: its MNIST-scale configuration."""
    sig = inspect.signature(space_class(name).__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k != "self" and p.default is not inspect.Parameter.empty}


def resolve_space_cfg(name: str, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults overlaid with `cfg`, unknown keys refused; the full cfg an arch.json stores."""
    defaults = space_defaults(name)
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise DfnasError(f"search space '{name}' has no setting(s) {unknown}; allowed: {sorted(defaults)}")
    out = dict(defaults)
    for k, v in cfg.items():
        out[k] = list(v) if isinstance(v, tuple) else v
    for k, v in out.items():
        if isinstance(v, tuple):
            out[k] = list(v)
    return out


def create_space(name: str, **cfg: Any) -> nn.Module:
    """Build the supernet of space `name`; it remembers `space_name/version/cfg`."""
    cls = space_class(name)
    full = resolve_space_cfg(name, cfg)
    try:
        net = cls(**full)
    except (ValueError, TypeError) as e:
        raise DfnasError(f"search space '{name}' cannot be built with {cfg}: {e}") from e
    net.space_name = name
    net.space_version = cls.version
    net.space_cfg = full
    return net


def input_shape_of(cfg: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) the space was configured for."""
    size = cfg["image_size"]
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(cfg["in_channels"]), int(h), int(w)

