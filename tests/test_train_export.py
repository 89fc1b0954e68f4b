"""Training fixed networks (CE, KD, seeds, resume), export with output checks, the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfnas.cli import main
from dfnas.data.sources import Source, mnist_spec
from dfnas.data.spec import InputSpec
from dfnas.errors import DfnasError
from dfnas.spaces import create_space, sample_arch
from dfnas.spaces.arch import ArchRecord, save_arch
from dfnas.training.config import TrainConfig
from dfnas.training.export import export_model
from dfnas.training.loop import warmup_cosine as lr_factor
from dfnas.training.losses import kd_loss
from dfnas.training.train import train_arch

CFG = {"channels": 4}


def test_kd_loss() -> None:
    t = torch.randn(5, 10)
    assert kd_loss(t, t, 3.0).abs() < 1e-6
    s = torch.randn(5, 10)
    manual = (F.softmax(t / 2, 1) * (F.log_softmax(t / 2, 1) - F.log_softmax(s / 2, 1))).sum(1).mean() * 4
    assert torch.allclose(kd_loss(s, t, 2.0), manual, atol=1e-5)


def _arch(tmp_path: Path) -> ArchRecord:
    net = create_space("nb201", **CFG)
    return save_arch(tmp_path / "arch.json", "nb201", 1, CFG, sample_arch(net, random.Random(0)))


def _source(n: int = 48, synthetic: bool = False, seed: int = 0) -> Source:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 10
    logits = torch.randn(n, 10, generator=g) * 3 if synthetic else None
    return Source("synthetic:toy" if synthetic else "toy", x, y, mnist_spec(), logits, {"source": f"toy{seed}"})


def test_train_seeds_metrics_and_resume(tmp_path: Path) -> None:
    rec = _arch(tmp_path)
    cfg = TrainConfig(batch_size=16, epochs=2)
    m = train_arch(rec, _source(synthetic=True), _source(20, seed=1), seeds=[0, 1], out=tmp_path / "a",
                   cfg=cfg, progress=False)
    assert m["loss"] == "kd-stored" and len(m["per_seed"]) == 2
    accs = [r["test_accuracy"] for r in m["per_seed"]]
    assert m["test_accuracy_mean"] == pytest.approx(float(np.mean(accs)))
    assert m["test_accuracy_std"] == pytest.approx(float(np.std(accs, ddof=1)))
    assert m["flops"] == rec.extra["flops"] and m["params"] == rec.extra["params"]
    assert (tmp_path / "a" / "seed1" / "weights.safetensors").is_file()
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["seeds"] == [0, 1]
    # killed after one epoch, resumed: the same weights as the uninterrupted run
    cfg1 = TrainConfig(batch_size=16, epochs=2)
    assert train_arch(rec, _source(synthetic=True), None, seeds=[0], out=tmp_path / "b", cfg=cfg1,
                      progress=False, max_epochs_this_call=1) is None
    assert (tmp_path / "b" / "seed0" / "checkpoint.pt").is_file()
    # ... also when resumed with other execution settings (device, eval batch): they change no result
    cfg2 = TrainConfig(batch_size=16, epochs=2, eval_batch_size=7)
    m2 = train_arch(rec, _source(synthetic=True), None, seeds=[0], out=tmp_path / "b", cfg=cfg2, progress=False)
    assert m2["per_seed"][0]["weights_sha256"] == m["per_seed"][0]["weights_sha256"]
    assert train_arch(rec, _source(synthetic=True), None, seeds=[0], out=tmp_path / "b", cfg=cfg1,
                      progress=False)["per_seed"][0]["wall_seconds"] == m2["per_seed"][0]["wall_seconds"]
    # a different config in the same folder is refused
    with pytest.raises(DfnasError, match="another"):
        train_arch(rec, _source(synthetic=True), None, seeds=[0], out=tmp_path / "b",
                   cfg=TrainConfig(batch_size=8, epochs=2), progress=False)


def test_train_refuses_mismatched_data(tmp_path: Path) -> None:
    rec = _arch(tmp_path)
    rgb = InputSpec(channels=3, height=28, width=28, num_classes=10, mean=[0.5] * 3, std=[0.5] * 3)
    src = Source("rgb", torch.zeros(4, 3, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), rgb)
    with pytest.raises(DfnasError, match="3x28x28"):
        train_arch(rec, src, out=tmp_path / "x", progress=False)
    five = InputSpec(channels=1, height=28, width=28, num_classes=5, mean=[0.5], std=[0.5])
    src5 = Source("five", torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), five)
    with pytest.raises(DfnasError, match="5 classes"):
        train_arch(rec, src5, out=tmp_path / "x", progress=False)


@pytest.mark.parametrize("space", ["darts", "spos"])
def test_export_matches_outputs(space: str, tmp_path: Path) -> None:
    cfg = {"channels": 4, "layers": 3} if space == "darts" else {}
    net = create_space(space, **cfg)
    rec = save_arch(tmp_path / "arch.json", space, 1, cfg, sample_arch(net, random.Random(2)))
    from safetensors.torch import save_file

    from dfnas.spaces.arch import build_network

    torch.manual_seed(0)
    fixed = build_network(rec)
    with torch.no_grad():  # non-trivial BN statistics so eval mode matters
        for m in fixed.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    save_file({k: v.contiguous() for k, v in fixed.state_dict().items()}, str(tmp_path / "w.safetensors"))
    r = export_model(rec, tmp_path / "w.safetensors", "torchscript", tmp_path / "m.ts")
    assert r["max_abs_diff"] is not None and r["max_abs_diff"] < 1e-4
    loaded = torch.jit.load(str(tmp_path / "m.ts")).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), fixed.eval()(x), atol=1e-5)
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    r = export_model(rec, tmp_path / "w.safetensors", "onnx", tmp_path / "m.onnx")
    assert r["checked_with"].startswith("onnxruntime") and r["max_abs_diff"] < 1e-4


def test_export_refuses_wrong_weights_and_format(tmp_path: Path) -> None:
    rec = _arch(tmp_path)
    from safetensors.torch import save_file

    save_file({"stem.0.weight": torch.zeros(3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(DfnasError, match="do not fit"):
        export_model(rec, tmp_path / "bad.safetensors", "torchscript", tmp_path / "m.ts")
    with pytest.raises(DfnasError, match="unknown export format"):
        export_model(rec, None, "tflite", tmp_path / "m.tflite")


def test_cli_train_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = _arch(tmp_path)
    src = _source(32)
    np.savez(tmp_path / "d.npz", x=src.x.numpy(), y=src.y.numpy())
    (tmp_path / "spec.json").write_text(json.dumps(mnist_spec().to_dict()))
    out = tmp_path / "run"
    rc = main(["train", "--arch", str(tmp_path / "arch.json"), "--data", f"npz:{tmp_path / 'd.npz'}",
               "--spec", str(tmp_path / "spec.json"), "--test-data", f"npz:{tmp_path / 'd.npz'}",
               "--epochs", "1", "--seeds", "0", "--set", "batch_size=16", "--out", str(out), "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["loss"] == "ce" and metrics["test_accuracy_mean"] is not None
    assert metrics["choices"] == rec.choices
    rc = main(["export", "--arch", str(tmp_path / "arch.json"), "--weights", str(out / "seed0" / "weights.safetensors"),
               "--format", "torchscript", "--out", str(tmp_path / "m.ts")])
    assert rc == 0 and (tmp_path / "m.ts").is_file()
    capsys.readouterr()
    (tmp_path / "broken.json").write_text("{")
    rc = main(["train", "--arch", str(tmp_path / "broken.json"), "--data", "mnist", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("dfnas: error:") and err.count("\n") == 1
    rc = main(["train", "--arch", str(tmp_path / "arch.json"), "--data", "mnist", "--seeds", "a,b", "--out", str(out)])
    assert rc == 2
    rc = main(["train", "--arch", str(tmp_path / "arch.json"), "--data", "mnist", "--set", "epoch=3", "--out", str(out)])
    assert rc == 2


def test_lr_warmup_then_cosine_to_the_floor():
    f = [lr_factor(s, 100, 10, 0.02) for s in range(101)]
    assert f[0] == pytest.approx(0.01) and f[10] == pytest.approx(1.0) and f[100] == pytest.approx(0.02)
    assert all(a < b for a, b in zip(f[:11], f[1:11], strict=False))  # rises through the warm-up
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # then only decays
    plain = [lr_factor(s, 100, 0, 0.0) for s in (0, 50, 100)]
    assert plain == pytest.approx([1.0, 0.5, 0.0])


def test_warmup_longer_than_training_is_refused():
    with pytest.raises(DfnasError, match="warmup_epochs"):
        TrainConfig(epochs=5, warmup_epochs=5).validate()


def test_evaluate_runs_without_autograd() -> None:
    """Test-set evaluation builds no graph (inference mode): memory and speed on big test sets."""
    from dfnas.training.train import evaluate

    seen: list[bool] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.is_inference_mode_enabled())
            return torch.zeros(len(x), 10)

    evaluate(Probe(), _source(20, seed=1))
    assert seen and all(seen)
