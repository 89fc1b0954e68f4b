"""Synthesis does not depend on the units of the teacher's input or features.

The bundled MNIST teacher is wrapped three ways that compute the same function of the image:
taking raw 0-255 pixels (mean 0, std 1 in the spec: the Keras/Caffe convention), taking 0-255
pixels with mean/std given in 0-255 units, and with its first conv scaled by 100 and the first
BN's statistics scaled to match. Every loss term and the synthesized set must not change.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from dfnas.data.spec import InputSpec
from dfnas.data.synthetic import read_dataset
from dfnas.synth import synthesize
from dfnas.synth.bn_stats import bn_losses, bn_reference
from dfnas.synth.engine import Inverter
from dfnas.teachers import Teacher, load_teacher
from dfnas.teachers.probe import FeatureProbe, reference_input


class RawPixels(nn.Module):
    """The teacher as a model converted from a framework that feeds raw 0-255 pixels."""

    def __init__(self, inner: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.inner, self.mean, self.std = inner, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x / 255 - self.mean) / self.std)


def _variants() -> dict[str, Teacher]:
    t = load_teacher("mnist-cnn")
    s = t.spec
    raw = dataclasses.replace(s, mean=[0.0], std=[1.0], pixel_range=(0.0, 255.0))
    units255 = dataclasses.replace(s, mean=[s.mean[0] * 255], std=[s.std[0] * 255], pixel_range=(0.0, 255.0))
    scaled = copy.deepcopy(t.module)
    conv, bn = scaled.features[0][0], scaled.features[0][1]
    with torch.no_grad():  # the same function: conv x100, the BN it feeds rescaled to match
        conv.weight.mul_(100)
        bn.running_mean.mul_(100)
        bn.running_var.mul_(100**2)
    bn.eps *= 100**2
    return {
        "unit": t,
        "raw": Teacher(RawPixels(t.module, s.mean[0], s.std[0]).eval(), raw, "raw", "factory"),
        "units255": Teacher(t.module, units255, "units255", "factory"),
        "scaled": Teacher(scaled.eval(), s, "scaled", "factory"),
    }


@pytest.fixture(scope="module")
def variants() -> dict[str, Teacher]:
    return _variants()


def _first_step_terms(teacher: Teacher, cfg) -> dict[str, float]:
    probe = FeatureProbe(teacher.module)
    try:
        inv = Inverter(probe, teacher.spec, cfg, "cpu")
        gen = torch.Generator().manual_seed(3)
        x = torch.rand(10, 1, *inv.canvas, generator=gen).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=inv.cfg.lr)  # the resolved config (lr by input)
        hard = torch.arange(10)
        terms = inv._step(x, hard, None, gen, opt)
        return {k: float(v.detach()) for k, v in terms.items()}
    finally:
        probe.close()


def test_every_loss_term_is_free_of_input_and_feature_units(variants, tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, tv_l1=0.01, l2=0.01)  # every term on
    want = _first_step_terms(variants["unit"], cfg)
    assert set(want) >= {"tv2", "tv1", "l2", "bn", "task", "loss"}
    for name in ("raw", "units255", "scaled"):
        got = _first_step_terms(variants[name], cfg)
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (name, k)


@pytest.mark.parametrize("name", ["raw", "units255", "scaled"])
def test_same_function_same_synthetic_set(variants, tiny_cfg, tmp_path, name):
    """Pixel for pixel the sets part after a few steps even for `units255`, whose teacher input
    differs from the [0, 1] teacher's by float rounding only: Adam turns the rounding of
    near-zero gradients into full steps. So the sets are compared as sets."""
    reps, images = {}, {}
    for n in ("unit", name):
        reps[n] = synthesize(variants[n], tiny_cfg, tmp_path / n, progress=False)["rounds"]
        images[n] = read_dataset(tmp_path / n)[1]["images"].float()
    for a, b in zip(reps["unit"], reps[name], strict=True):
        assert abs(a["teacher_agreement"] - b["teacher_agreement"]) <= 0.1
        assert b["bn_distance"] == pytest.approx(a["bn_distance"], rel=0.02)
        assert b["diversity"] == pytest.approx(a["diversity"], abs=0.02)  # 20 images: noisy
    a, b = images["unit"], images[name]
    assert abs(a.mean() - b.mean()) < 1.0  # grey levels
    tv = [float((x[..., 1:] - x[..., :-1]).abs().mean()) for x in (a, b)]
    assert tv[1] == pytest.approx(tv[0], rel=0.02)


def test_bn_term_of_every_layer_is_free_of_feature_units(variants):
    """The scaled teacher's first BN inputs are 100x the original's, the raw-pixel teacher's
    input 255x: per layer, the BN term is the same for all of them."""
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    per_layer = {}
    for name in ("unit", "raw", "scaled"):
        t = variants[name]
        with FeatureProbe(t.module) as probe, torch.no_grad():
            ref = bn_reference(probe, reference_input(t.spec))
            _, taps = probe(t.spec.normalize(x))
            per_layer[name] = bn_losses(taps, ref)
            if name == "scaled":  # the raw distance did change: the unit is what absorbs it
                assert taps.means[0].abs().max() > 50 * per_layer["unit"].new_tensor(1e-3)
    assert per_layer["unit"].shape == (5,) and (per_layer["unit"] > 0).all()
    for name in ("raw", "scaled"):
        assert torch.allclose(per_layer[name], per_layer["unit"], rtol=1e-4), name


def test_input_spec_conventions_map_the_same_image_to_the_same_teacher_input():
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    m, s = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    unit = InputSpec(3, 4, 4, 10, m, s)
    units255 = InputSpec(3, 4, 4, 10, [v * 255 for v in m], [v * 255 for v in s], pixel_range=(0, 255))
    raw = InputSpec(3, 4, 4, 10, [0.0], [1.0], pixel_range=(0, 255))
    assert torch.allclose(unit.normalize(x), units255.normalize(x), atol=1e-5)
    assert torch.allclose(raw.normalize(x), x * 255, atol=1e-4)
