"""`--device cuda` end to end: skipped where no CUDA device is present (CI, the dev machine).

    pytest tests/test_cuda.py -v        # on a GPU machine

CPU runs are covered everywhere else; these check what only a GPU can break: tensors left on
the wrong device, the stored-image soft labels under autocast, channels_last through the BN
probe, checkpoints written on the GPU and resumed on the CPU, and the whole `dfnas run`.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import pytest
import torch
from test_pipeline import TINY
from torch import nn

from dfnas.config import from_dict
from dfnas.data.synthetic import read_dataset
from dfnas.pipeline.config import RunConfig
from dfnas.spaces import create_space
from dfnas.strategies.config import SearchConfig
from dfnas.strategies.runner import run_search
from dfnas.synth import synthesize
from dfnas.synth.bn_stats import bn_losses, bn_reference
from dfnas.teachers import load_teacher
from dfnas.teachers.probe import FeatureProbe

# DFNAS_TEST_DEVICE=cpu runs the same checks on the CPU (to try them without a GPU)
DEV = os.environ.get("DFNAS_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEV.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device")

TINY_RUN = {**copy.deepcopy(TINY), "device": DEV}  # the tiny `dfnas run` of test_pipeline, on DEV


def _probe_loss_and_grad(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    with FeatureProbe(net) as probe:
        logits, taps = probe(x)
        loss = bn_losses(taps, bn_reference(probe, x.detach())).sum() + logits.logsumexp(1).sum()
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach().cpu(), g.cpu()


def test_bn_probe_on_cuda_matches_cpu_in_both_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # TF32 convs differ by ~1e-3
    t = load_teacher("mnist-cnn")
    x = torch.rand(16, 1, 28, 28)
    want_loss, want_g = _probe_loss_and_grad(copy.deepcopy(t.module).eval(), t.spec.normalize(x))
    net = copy.deepcopy(t.module).to(DEV).eval()
    for layout in (torch.contiguous_format, torch.channels_last):
        xc = t.spec.normalize(x.to(DEV)).contiguous(memory_format=layout)
        loss, g = _probe_loss_and_grad(net.to(memory_format=layout), xc)
        assert torch.allclose(loss, want_loss, rtol=1e-4)
        err = float((g - want_g).abs().max() / want_g.abs().max())
        assert err < 1e-4, f"{layout}: gradient differs from the CPU's by {err:.2e} of its max"
        with torch.autocast(DEV.split(":")[0], dtype=torch.bfloat16):  # --amp: bf16 activations, float32 statistics
            loss16, g16 = _probe_loss_and_grad(net, xc)
        assert torch.allclose(loss16, want_loss, rtol=0.05)
        cos = float(torch.nn.functional.cosine_similarity(g16.flatten(), want_g.flatten(), dim=0))
        assert cos > 0.98, f"{layout}: bf16 gradient direction off (cosine {cos:.3f})"


@pytest.mark.parametrize("amp,channels_last,affine", [(False, False, 0.0), (True, True, 0.15)])
def test_synthesis_on_cuda_stores_exact_soft_labels(tmp_path, tiny_cfg, amp: bool, channels_last: bool,
                                                    affine: float) -> None:
    t = load_teacher("mnist-cnn")
    cfg = dataclasses.replace(tiny_cfg, device=DEV, amp=amp, channels_last=channels_last,
                              affine_scale=affine, affine_rotate=100 * affine)  # zoom/turn: a second grid_sample
    synthesize(t, cfg, tmp_path / "s", progress=False)
    p = next(t.module.parameters())
    assert p.device.type == "cpu" and p.is_contiguous(), "the teacher goes back where it came from"
    manifest, data = read_dataset(tmp_path / "s")
    assert manifest["status"] == "complete" and data["images"].device.type == "cpu"
    # the soft labels are the fp32 teacher on the stored uint8 images, whatever the step ran in
    with torch.inference_mode():
        fresh = t.module.eval()(t.spec.normalize(data["images"].float() / 255))
    assert torch.allclose(fresh, data["logits"], rtol=5e-3, atol=5e-3)  # TF32 convs: ~1e-3; bf16 was ~3e-2
    assert torch.isfinite(data["logits"]).all() and data["images"].float().std() > 1


@pytest.mark.parametrize("algo,space", [("darts", "nb201"), ("proxyless", "proxyless"), ("spos", "spos"),
                                        ("random", "nb201")])
def test_search_on_cuda_resumes_on_cpu(tmp_path, algo: str, space: str) -> None:
    from dfnas.data.sources import load_source
    from dfnas.strategies.context import Hook

    class Crash(Exception):
        pass

    class CrashAt(Hook):
        def on_step_end(self, ctx: object, step: int, metrics: dict[str, float]) -> None:
            if step >= 3:
                raise Crash

    src = load_source("mnist", split="train")
    src = dataclasses.replace(src, x=src.x[:200], y=src.y[:200])
    base = {"algo": algo, "space": space, "epochs": 2, "batch_size": 16, "max_steps_per_epoch": 3,
            "space_args": {"channels": 4} if space == "nb201" else {"stem_channels": 4, "stage_channels": [8, 12, 16],
                                                                         "last_channels": 16},
            "spos": {"population": 4, "generations": 2, "topk": 2, "mutation": 2, "crossover": 2,
                     "bn_batches": 1, "val_batches": 1},
            "random": {"samples": 3, "train_steps": 4, "val_batches": 1}}
    cfg = from_dict(SearchConfig, {**base, "device": DEV})
    with pytest.raises(Crash):
        run_search(cfg, src, tmp_path / "run", progress=False, hooks=[CrashAt()])
    res = run_search(from_dict(SearchConfig, {**base, "device": "cpu"}), src, tmp_path / "run", progress=False)
    net = create_space(space, **base["space_args"], num_classes=10, in_channels=1, image_size=28)
    assert set(res["choices"]) == {c.label for c in net.modules() if hasattr(c, "label")}
    log = (tmp_path / "run" / "search.log").read_text()
    assert log.count('"event": "start"') == 2


def test_dfnas_run_on_cuda_end_to_end(tmp_path) -> None:
    from dfnas.pipeline.run import run_pipeline

    out = tmp_path / "run"
    summary = run_pipeline(from_dict(RunConfig, TINY_RUN), out, progress=False, command="pytest cuda run")
    assert summary["teacher"]["test_accuracy"] > 0.95 and 0.0 <= summary["network"]["test_accuracy"] <= 1.0
    for f in ("report.md", "search/arch.json", "train/seed0/weights.safetensors", "export/model.ts"):
        assert (out / f).is_file(), f
    loaded = torch.jit.load(str(out / "export" / "model.ts"), map_location="cpu")
    assert loaded(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
