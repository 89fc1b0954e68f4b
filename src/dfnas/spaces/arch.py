"""Architecture files (arch.json): which space, which version, which choices.

    {"format": "dfnas-arch", "format_version": 1, "space": "darts", "space_version": 1,
     "space_cfg": {...all size settings...}, "choices": {label: choice}, ...extra keys}

Extra keys (FLOPs, params, search metrics, seed, data identity) are kept as given. Loading
checks everything a later stage relies on and answers with a one-line DfnasError: a file
of another space or version, unknown labels or choices, a malformed file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from dfnas.errors import DfnasError
from dfnas.io import atomic_write_json
from dfnas.spaces import create_space, fix, resolve_space_cfg, space_class, validate_arch

ARCH_FORMAT = "dfnas-arch"
ARCH_FORMAT_VERSION = 1
_RESERVED = ("format", "format_version", "space", "space_version", "space_cfg", "choices")


@dataclasses.dataclass
class ArchRecord:
    space: str
    space_version: int
    space_cfg: dict[str, Any]
    choices: dict[str, Any]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"format": ARCH_FORMAT, "format_version": ARCH_FORMAT_VERSION, "space": self.space,
             "space_version": self.space_version, "space_cfg": self.space_cfg, "choices": self.choices}
        d.update(self.extra)
        return d

    @property
    def input_shape(self) -> tuple[int, int, int]:
        from dfnas.spaces import input_shape_of

        return input_shape_of(self.space_cfg)


def _check(record: ArchRecord, where: str) -> nn.Module:
    """Validate against the registered space; returns the supernet built for it."""
    cls = space_class(record.space)
    if record.space_version != cls.version:
        raise DfnasError(f"{where} was made for version {record.space_version} of space '{record.space}', "
                         f"this dfnas has version {cls.version}; search again with this version")
    record.space_cfg = resolve_space_cfg(record.space, record.space_cfg)
    supernet = create_space(record.space, **record.space_cfg)
    validate_arch(supernet, record.choices, record.space)
    return supernet


def make_record(space_name: str, space_version: int, space_cfg: dict[str, Any] | None,
                choices: dict[str, Any], extra: dict[str, Any] | None = None) -> ArchRecord:
    """A validated record (choices normalised: input lists sorted plain ints)."""
    clean = {k: (sorted(int(i) for i in v) if isinstance(v, (list, tuple)) else v) for k, v in choices.items()}
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"extra keys {clash} are reserved in arch.json")
    rec = ArchRecord(space_name, int(space_version), dict(space_cfg or {}), clean, extra)
    _check(rec, "the architecture")
    return rec


def save_arch(path: str | Path, space_name: str, space_version: int, space_cfg: dict[str, Any] | None,
              choices: dict[str, Any], extra: dict[str, Any] | None = None,
              count: bool = True) -> ArchRecord:
    """Validate and write arch.json atomically; adds `flops`/`params` unless given or `count=False`."""
    rec = make_record(space_name, space_version, space_cfg, choices, extra)
    if count and ("flops" not in rec.extra or "params" not in rec.extra):
        from dfnas.spaces.profile import profile

        p = profile(build_network(rec), rec.input_shape)
        rec.extra.setdefault("flops", p["flops"])
        rec.extra.setdefault("params", p["params"])
    atomic_write_json(path, rec.to_dict())
    rec.path = str(path)
    return rec


def load_arch(path: str | Path) -> ArchRecord:
    """Read and validate arch.json (one-line DfnasError on any problem)."""
    p = Path(path)
    if not p.is_file():
        raise DfnasError(f"architecture file not found: {p}; pass the arch.json a search wrote")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DfnasError(f"{p} is not valid JSON ({e.__class__.__name__} at {getattr(e, 'pos', '?')}); is the file complete?") from e
    return record_from_dict(d, str(p))


def record_from_dict(d: Any, where: str = "architecture") -> ArchRecord:
    if not isinstance(d, dict) or d.get("format") != ARCH_FORMAT:
        raise DfnasError(f"{where} is not a dfnas architecture file (no \"format\": \"{ARCH_FORMAT}\")")
    if d.get("format_version") != ARCH_FORMAT_VERSION:
        raise DfnasError(f"{where} has format_version {d.get('format_version')!r}; this dfnas reads {ARCH_FORMAT_VERSION}")
    for key, typ in (("space", str), ("space_version", int), ("space_cfg", dict), ("choices", dict)):
        if not isinstance(d.get(key), typ) or isinstance(d.get(key), bool):
            raise DfnasError(f"{where}: key '{key}' must be a {typ.__name__}, got {d.get(key)!r}")
    extra = {k: v for k, v in d.items() if k not in _RESERVED}
    rec = ArchRecord(d["space"], d["space_version"], dict(d["space_cfg"]), dict(d["choices"]), extra, where)
    _check(rec, where)
    return rec


def build_network(record: ArchRecord | str | Path) -> nn.Module:
    """The fixed network of an architecture (supernet built, then `fix`ed)."""
    if not isinstance(record, ArchRecord):
        record = load_arch(record)
    net = create_space(record.space, **record.space_cfg)
    fixed = fix(net, record.choices)
    fixed.space_name = record.space
    fixed.space_version = record.space_version
    fixed.space_cfg = record.space_cfg
    return fixed
