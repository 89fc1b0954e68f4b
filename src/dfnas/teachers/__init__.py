"""Teachers: the pretrained classifier to invert, with its input spec.

`load_teacher(ref, weights=..., spec=...)` accepts
* a bundled name (`mnist-cnn`; `mnist-clutter-cnn` for the harder `mnist-clutter` task),
* `path/to/file.py:factory` or `package.module:factory` (+ `weights` as .safetensors or a
  .pt/.pth state dict, loaded with `weights_only=True`),
* a TorchScript file (`model.ts`, `.pt`, `.pth`, `.jit`) saved with `torch.jit.save`,
and `validate_teacher` checks it against its spec with one dummy forward before long work.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfnas.data.spec import InputSpec
from dfnas.errors import DfnasError
from dfnas.io import sha256_file, sha256_tensors

WEIGHTS_DIR = Path(__file__).with_name("weights")
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
TORCHSCRIPT_SUFFIXES = (".ts", ".pt", ".pth", ".jit", ".torchscript")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # where checkpoints keep the weights


@dataclasses.dataclass
class Teacher:
    module: nn.Module
    spec: InputSpec
    name: str
    kind: str  # "bundled" | "factory" | "torchscript"
    weights_hash: str | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_torchscript(self) -> bool:
        return isinstance(self.module, torch.jit.ScriptModule)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "weights_sha256": self.weights_hash, **self.info}

    def to(self, device: str | torch.device) -> Teacher:
        self.module.to(device)
        return self


# ------------------------------------------------------------------------------- bundled
BUNDLED = {
    "mnist-cnn": ("dfnas.teachers.mnist_cnn:build", "mnist-cnn"),
    "mnist-clutter-cnn": ("dfnas.teachers.mnist_cnn:build", "mnist-clutter-cnn"),
    "cifar10-resnet20": ("dfnas.teachers.resnet_cifar:build", "cifar10-resnet20"),
}


def bundled_teacher_names() -> list[str]:
    return sorted(BUNDLED)


def bundled_record(name: str) -> dict[str, Any]:
    """The JSON record shipped next to bundled weights (spec, recipe, test accuracy)."""
    path = WEIGHTS_DIR / f"{BUNDLED[name][1]}.json"
    if not path.is_file():
        raise DfnasError(f"bundled teacher '{name}' has no weights record; reinstall dfnas or run `dfnas teacher train {name.removesuffix('-cnn')}`")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------- loading
def _import_factory(ref: str) -> Any:
    target, _, attr = ref.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise DfnasError(f"teacher file not found: {path}; pass --teacher path/to/file.py:factory")
        mod_name = f"_dfnas_user_teacher_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise DfnasError(f"cannot import {path} as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise DfnasError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise DfnasError(f"cannot import module '{target}' ({e}); check the name or use path/to/file.py:factory") from e
    if not hasattr(module, attr):
        raise DfnasError(f"'{target}' has no attribute '{attr}'; name the factory that builds the model")
    return getattr(module, attr)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a .pt/.pth file, never unpickling arbitrary objects."""
    p = Path(path)
    if not p.is_file():
        raise DfnasError(f"weights file not found: {p}; pass --weights with a .safetensors or .pt state dict")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:
            raise DfnasError(f"cannot read {p} as safetensors ({e}); is the file complete?") from e
    try:
        with warnings.catch_warnings():  # torch's pickle warnings are about files we refuse anyway
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DfnasError(f"cannot load {p} as a state dict with weights_only=True ({_load_failure(e)}); dfnas never "
                         "unpickles other objects: save model.state_dict() with torch.save, or as .safetensors") from e
    for key in WRAPPER_KEYS:  # training checkpoints wrap the state dict beside epoch, accuracy, ...
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DfnasError(f"{p} does not hold a state dict of tensors; save model.state_dict()")
    return obj


def _load_failure(e: Exception) -> str:
    """The part of torch.load's error that says what is wrong with the file, without its advice
    to turn weights_only off."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    if found:
        return f"it holds Python objects, not only tensors: {found.group(1)}"
    if lines and "Weights only load failed" in lines[0]:
        return "it holds Python objects, not only tensors"
    first = lines[0] if lines else type(e).__name__
    return first.split(". ")[0][:160].rstrip(".")


def _apply_weights(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    sd = {k.removeprefix("module."): v for k, v in sd.items()}  # DataParallel/DDP-saved checkpoints
    own = model.state_dict()
    # BN's batch counter is never read in eval mode; checkpoints from before PyTorch 0.4.1 and
    # many exported ones lack it
    sd.update({k: own[k] for k in own if k.endswith("num_batches_tracked") and k not in sd})
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        if shape:
            k = shape[0]
            parts.append(f"shape of '{k}' is {tuple(sd[k].shape)} in the file, {tuple(own[k].shape)} in the model")
        raise DfnasError(f"weights {source} do not fit the model: {'; '.join(parts)}; check the factory arguments or the weights file")
    model.load_state_dict(sd, strict=True)


def load_teacher(
    ref: str,
    weights: str | Path | None = None,
    spec: str | Path | InputSpec | dict | None = None,
) -> Teacher:
    """Load a teacher by reference (see module docstring) in eval mode on the CPU."""
    if isinstance(spec, (str, Path)):
        spec = InputSpec.load(spec)
    elif isinstance(spec, dict):
        spec = InputSpec.from_dict(spec)

    if ref in BUNDLED:
        factory_ref, stem = BUNDLED[ref]
        record = bundled_record(ref)
        model = _import_factory(factory_ref)(**record.get("factory_kwargs", {}))
        wpath = WEIGHTS_DIR / f"{stem}.safetensors"
        from safetensors.torch import load_file

        sd = load_file(str(wpath))
        _apply_weights(model, sd, str(wpath))
        teacher = Teacher(
            model.eval(), spec or InputSpec.from_dict(record["spec"]), ref, "bundled",
            sha256_tensors(sd), {"test_accuracy": record.get("test_accuracy")},
        )
    elif ":" in ref and not Path(ref).is_file():
        if weights is None:
            raise DfnasError(f"teacher '{ref}' is a factory: pass --weights W.safetensors|W.pt with its trained state dict")
        if spec is None:
            raise DfnasError(f"teacher '{ref}' needs an input spec: pass --spec spec.json")
        factory = _import_factory(ref)
        try:
            model = factory()
        except Exception as e:
            raise DfnasError(f"factory '{ref}' raised {type(e).__name__}: {e}") from e
        if not isinstance(model, nn.Module):
            raise DfnasError(f"factory '{ref}' returned {type(model).__name__}, not a torch.nn.Module")
        sd = load_state_dict_file(weights)
        _apply_weights(model, sd, str(weights))
        teacher = Teacher(model.eval(), spec, ref, "factory", sha256_tensors(sd), {"weights_file": Path(weights).name})
    else:
        p = Path(ref)
        if not p.is_file():
            raise DfnasError(
                f"teacher '{ref}' not found: use a bundled name ({', '.join(bundled_teacher_names())}), "
                "path/to/file.py:factory or package.module:factory with --weights, or a TorchScript file"
            )
        if spec is None:
            raise DfnasError(f"TorchScript teacher {p} needs an input spec: pass --spec spec.json")
        if weights is not None:
            raise DfnasError(f"{p} is a TorchScript file and carries its weights; drop --weights")
        try:
            model = torch.jit.load(str(p), map_location="cpu")
        except Exception as e:
            hint = " (a state dict needs a factory: --teacher file.py:build --weights W.pt)" if p.suffix in (".pt", ".pth") else ""
            raise DfnasError(f"cannot load {p} as TorchScript{hint}") from e
        teacher = Teacher(model.eval(), spec, p.name, "torchscript", sha256_file(p))
    for prm in teacher.module.parameters():
        prm.requires_grad_(False)
    return teacher


# ------------------------------------------------------------------------------- validation
def bn_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """BatchNorm layers in registration order (forward order for the usual models)."""
    out = []
    for name, m in module.named_modules():
        if isinstance(m, BN_TYPES):
            out.append((name, m))
        elif isinstance(m, torch.jit.ScriptModule) and getattr(m, "original_name", "").startswith(("BatchNorm", "SyncBatchNorm")):
            out.append((name, m))
    return out


def validate_teacher(teacher: Teacher, need_bn: bool = True, device: str = "cpu") -> int:
    """One dummy forward against the spec; returns the number of BN layers.

    Raises DfnasError naming the mismatch: input shape, class count, missing BN, NaN outputs.
    """
    s = teacher.spec
    x = torch.rand(2, s.channels, s.height, s.width, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.inference_mode():
            out = teacher.module(s.normalize(x))
    except Exception as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DfnasError(
            f"teacher {teacher.name} failed on a 2x{s.channels}x{s.height}x{s.width} input built from the spec "
            f"({msg[:160]}); check channels/height/width in the spec"
        ) from e
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DfnasError(f"teacher {teacher.name} returned {shape}; a classifier must return logits of shape (batch, num_classes)")
    if out.shape[1] != s.num_classes:
        raise DfnasError(
            f"teacher {teacher.name} outputs {out.shape[1]} classes but the spec says num_classes={s.num_classes}; fix the spec or the model"
        )
    if not torch.isfinite(out).all():
        raise DfnasError(f"teacher {teacher.name} gives non-finite outputs (NaN/inf) on valid input; check the weights and the spec's mean/std")
    n_bn = len(bn_layers(teacher.module))
    if need_bn and n_bn == 0:
        raise DfnasError(
            f"teacher {teacher.name} has no BatchNorm layers, so the BN-statistics loss cannot work; "
            "use a teacher with BatchNorm or set synth.bn_weight=0"
        )
    return n_bn
