"""Export a trained architecture to TorchScript or ONNX, and prove the copy computes the same.

    dfnas export --arch arch.json --weights W.safetensors --format onnx --out model.onnx

The fixed network is rebuilt from arch.json, the weights must fit it exactly (one-line
error otherwise), and the exported file is run on a random batch and compared with the
PyTorch model: TorchScript always, ONNX with onnxruntime when it is installed
(`pip install dfnas[export]`). The batch dimension stays dynamic in both formats.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfnas.errors import DfnasError
from dfnas.io import atomic_save
from dfnas.io.folders import claim_file
from dfnas.spaces.arch import ArchRecord, build_network, load_arch

FORMATS = ("onnx", "torchscript")


def load_weights(net: nn.Module, weights: str | Path) -> nn.Module:
    """Load a state dict into the fixed network; mismatches are a one-line DfnasError."""
    from dfnas.teachers import load_state_dict_file

    sd = load_state_dict_file(weights)
    own = net.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}" if unexpected
                  else f"shape of {wrong[0]} is {tuple(sd[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        raise DfnasError(f"weights {weights} do not fit this architecture ({detail}); pass the weights trained for this arch.json")
    net.load_state_dict(sd)
    return net


def _check_close(ref: torch.Tensor, got: Any, what: str, atol: float) -> float:
    got = torch.as_tensor(got)
    diff = float((ref - got.to(ref.dtype)).abs().max())
    if not diff <= atol * max(1.0, float(ref.abs().max())):
        raise DfnasError(f"the {what} export differs from the PyTorch model by {diff:.3g}; please report this architecture")
    return diff


def export_model(record: ArchRecord | str | Path, weights: str | Path | None, fmt: str, out: str | Path,
                 check: bool = True, atol: float = 1e-4, seed: int = 0, force: bool = False) -> dict[str, Any]:
    """Write the exported model to `out` (an existing file only with `force`); returns
    {format, out, checked_with, max_abs_diff}."""
    if fmt not in FORMATS:
        raise DfnasError(f"unknown export format '{fmt}'; choose one of {list(FORMATS)}")
    claim_file(out, force)
    if not isinstance(record, ArchRecord):
        record = load_arch(record)
    net = build_network(record)
    if weights is not None:
        load_weights(net, weights)
    net.eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((2, *record.input_shape), generator=g)
    with torch.inference_mode():
        ref = net(x)
    out = Path(out)
    result: dict[str, Any] = {"format": fmt, "out": str(out), "checked_with": None, "max_abs_diff": None}
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, x, check_trace=False)
        atomic_save(out, lambda p: torch.jit.save(traced, p))
        if check:
            loaded = torch.jit.load(str(out), map_location="cpu").eval()
            x3 = torch.randn((3, *record.input_shape), generator=g)  # another batch size
            with torch.inference_mode():
                d = max(_check_close(ref, loaded(x), "TorchScript", atol),
                        _check_close(net(x3), loaded(x3), "TorchScript", atol))
            result.update(checked_with="torch.jit.load", max_abs_diff=d)
        return result
    atomic_save(out, lambda p: _export_onnx(net, x, p))
    if check:
        try:
            import onnxruntime as ort
        except ImportError:
            result["checked_with"] = "skipped: onnxruntime not installed (pip install onnxruntime)"
            return result
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        x3 = torch.randn((3, *record.input_shape), generator=g)
        with torch.inference_mode():
            d = max(_check_close(ref, sess.run(None, {name: x.numpy()})[0], "ONNX", atol),
                    _check_close(net(x3), sess.run(None, {name: x3.numpy()})[0], "ONNX", atol))
        result.update(checked_with=f"onnxruntime {ort.__version__}", max_abs_diff=d)
    return result


def _export_onnx(net: nn.Module, x: torch.Tensor, path: str) -> None:
    """The TorchScript-based exporter first (fast, no extra packages), then torch.export's."""
    kw: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (x,), path, dynamo=False, opset_version=17,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **kw)
            return
        except Exception as legacy_error:  # removed or failing legacy exporter: try the new one
            try:
                torch.onnx.export(net, (x,), path, dynamo=True, verbose=False,
                                  dynamic_shapes=({0: torch.export.Dim("batch")},), **kw)
            except ImportError as e:
                raise DfnasError(f"ONNX export needs the onnx packages: pip install 'dfnas[export]' ({e})") from e
            except Exception as e:
                raise DfnasError(f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}; "
                                 f"legacy exporter: {type(legacy_error).__name__})") from e
