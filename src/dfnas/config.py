"""Typed configs: dataclasses loaded from YAML, overridable from the CLI (`--set a.b=1`).

Unknown keys and wrong types are refused with the key's dotted name and the allowed values,
before any work starts. `to_dict` gives the resolved config that every run saves.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from dfnas.errors import DfnasError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; convert lists to tuples and ints to floats."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except DfnasError as e:
                errors.append(str(e))
        raise DfnasError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise DfnasError(
                f"config key '{key}': {value!r} is not allowed; choose one of {list(allowed)}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DfnasError(f"config key '{key}': expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise DfnasError(f"config key '{key}': expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise DfnasError(f"config key '{key}': expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise DfnasError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise DfnasError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DfnasError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string; a user means the number
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DfnasError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise DfnasError(f"config key '{key}': expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a plain mapping, refusing unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DfnasError(f"config '{prefix.rstrip('.') or 'root'}': expected a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        if k not in names:
            raise DfnasError(
                f"unknown config key '{prefix}{k}'; allowed keys: {', '.join(names)}"
            )
        kwargs[k] = _coerce(v, hints[k], prefix + k)
    return cls(**kwargs)


# Settings that change how fast a stage runs, not what it produces: they stay out of every
# fingerprint, so a folder started with one value resumes with another (killed on the GPU,
# finished on the CPU). `sync_bn` changes nothing in one process; across torchrun processes it
# trades exactness (the one-process result) for speed; `channels_last` changes float order only.
EXECUTION_KEYS: dict[str, tuple[str, ...]] = {
    "synth": ("device", "amp", "channels_last", "log_every"),
    "search": ("device", "sync_bn", "channels_last"),
    "train": ("device", "eval_batch_size", "sync_bn", "channels_last"),
}


def check_device(value: str, key: str = "device") -> None:
    """A device dfnas can run on here (cpu, cuda, cuda:N, mps), before any folder is made."""
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise DfnasError(f"config key '{key}': unknown device {value!r}; use cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DfnasError(f"config key '{key}': device '{value}': CUDA is not available on this machine; "
                             "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DfnasError(f"config key '{key}': device '{value}': this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s); use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DfnasError(f"config key '{key}': device 'mps' is not available on this machine; use --device cpu")


def check_devices(obj: Any, prefix: str = "") -> None:
    """`check_device` on every `device` field of a config, its sections included."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name == "device" and isinstance(value, str):
            check_device(value, prefix + f.name)
        elif dataclasses.is_dataclass(value):
            check_devices(value, f"{prefix}{f.name}.")


# options that change results, added after folders and job records were fingerprinted without
# them: left out of every fingerprint while at their default, so what older runs made stays valid
LATER_OPTIONS: dict[str, dict[str, Any]] = {
    "synth": {"color_shift": 0.0, "rlc_keep_class": True},
    "search": {"zeroshot": {"refine": 0, "refine_steps": 200}},  # nested: a sub-section's options
}


def drop_later_defaults(d: dict[str, Any], section: str) -> dict[str, Any]:
    """`d` (a section's dict) without the LATER_OPTIONS at their default."""
    return _drop_defaults(d, LATER_OPTIONS.get(section, {}))


def _drop_defaults(d: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if k in later and isinstance(later[k], dict) and isinstance(v, dict):
            v = _drop_defaults(v, later[k])
        elif k in later and v == later[k]:
            continue
        out[k] = v
    return out


def result_keys(d: dict[str, Any], section: str) -> dict[str, Any]:
    """`d` (a section's `to_dict`) without its execution settings (nor later options at their default)."""
    return drop_later_defaults({k: v for k, v in d.items() if k not in EXECUTION_KEYS.get(section, ())}, section)


# execution settings added after folders were fingerprinted without them: left out entirely
_LATER_EXECUTION_KEYS = ("sync_bn", "channels_last")


def neutral_dict(obj: Any, section: str) -> dict[str, Any]:
    """`to_dict(obj)` with its execution settings at their defaults: a key that stays the same
    whatever they are, and the same as in folders made before they were set."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    d = {**to_dict(obj), **{k: fields[k].default for k in EXECUTION_KEYS.get(section, ()) if k in fields}}
    return drop_later_defaults({k: v for k, v in d.items() if k not in _LATER_EXECUTION_KEYS}, section)


def to_dict(obj: Any) -> Any:
    """Plain, YAML/JSON-safe view of a (nested) dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def packaged_configs() -> list[str]:
    """Names of the configs shipped inside dfnas (the repository's `configs/` folder)."""
    return sorted(p.stem for p in (Path(__file__).parent / "configs").glob("*.yaml"))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file, or a shipped config by name (`--config demo`, `--config spos`)."""
    p = Path(path)
    if not p.is_file() and p.suffix == "" and p.name == str(path) and p.name in packaged_configs():
        p = Path(__file__).parent / "configs" / f"{p.name}.yaml"
    if not p.is_file():
        raise DfnasError(f"config file not found: {p}; pass an existing YAML file or a shipped config name "
                         f"({', '.join(packaged_configs())})")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "parse error"
        raise DfnasError(f"config file {p} is not valid YAML ({first}); fix the syntax") from e
    except UnicodeDecodeError as e:
        raise DfnasError(f"config file {p} is not text; pass a YAML file") from e
    if data is None:  # an empty file would silently run on built-in defaults that are not the demo's
        raise DfnasError(f"config file {p} is empty; give at least one setting (see configs/demo.yaml)")
    if not isinstance(data, dict):
        raise DfnasError(f"config file {p} must hold a mapping of keys to values")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` strings (value parsed as YAML) to a nested mapping, in place."""
    for item in overrides or []:
        if "=" not in item:
            raise DfnasError(f"override '{item}' must look like key=value, e.g. synth.steps=200")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        set_key(data, key.strip(), value, f"override '{item}'")
    return data


def set_key(data: dict[str, Any], dotted: str, value: Any, what: str = "setting") -> None:
    """`data[a][b] = value` for the key `a.b`, making sections as needed, in place."""
    node = data
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise DfnasError(f"{what}: '{p}' is not a section")
    node[last] = value


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


# ----------------------------------------------------------------------------- the CLI's config


def add_config_args(p: argparse.ArgumentParser, section: str, *, out_help: str | None = None,
                    out_required: bool = False, device: bool = True) -> None:
    """The flags every command shares, with one meaning: --config, --set, --out, --device,
    --force, --quiet. Precedence (see `config_from_args`): defaults < --config < flags < --set."""
    where = f"{section} keys, flat or under a '{section}:' section" if section else "every section"
    p.add_argument("--config", default=None, metavar="FILE",
                   help=f"YAML file ({where}), or the name of a shipped config: {', '.join(packaged_configs())}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting (wins over --config and the flags), e.g. --set "
                        + {"synth": "tv_l2=0.002", "search": "darts.order=2", "train": "lr=0.1",
                           "teacher": "width=16"}.get(section, "search.algo=spos"))
    if out_help is not None:
        p.add_argument("--out", required=out_required, default=None, help=out_help)
    if device:
        p.add_argument("--device", default=None, help="cpu (default) | cuda | cuda:1 ...")
    p.add_argument("--force", action="store_true",
                   help="start over in an output dfnas made for other settings (a folder it did not make is never touched)")
    p.add_argument("--quiet", action="store_true", help="no progress bars; only the final summary")


def config_from_args(cls: type[T], args: argparse.Namespace, section: str, flags: dict[str, Any],
                     base: dict[str, Any] | None = None) -> T:
    """`cls` from built-in defaults (or `base`) < the --config file < explicit flags < --set.

    `section`: a file may hold the keys flat or under `section:` (the layout of `dfnas run`), and
    --set keys may carry the `section.` prefix; "" for the commands whose file is the whole config.
    """
    data = load_yaml(args.config) if args.config else dict(base or {})
    if section and isinstance(data.get(section), dict):
        data = data[section]
    for key, value in flags.items():
        if value is not None:
            set_key(data, key, value, f"flag for '{key}'")
    apply_overrides(data, [s.removeprefix(f"{section}.") if section else s for s in args.set])
    cfg = from_dict(cls, data, prefix=f"{section}." if section else "")
    check_devices(cfg, f"{section}." if section else "")
    return cfg
