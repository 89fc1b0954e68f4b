"""Unit checks of the synthesis terms against hand computations."""

from __future__ import annotations

import torch
from torch import nn

from dfnas.data.transforms import random_affine
from dfnas.synth.bn_stats import bn_losses, bn_reference
from dfnas.synth.config import SynthConfig
from dfnas.synth.engine import Inverter, keep_better, lr_at, phases
from dfnas.synth.priors import l2_prior, task_loss_per_image, tv_l1, tv_l2
from dfnas.synth.regional import box_mask, crop_resize, crop_windows, sample_boxes
from dfnas.teachers import load_teacher
from dfnas.teachers.probe import FeatureProbe, Taps


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return net.eval()


def test_bn_loss_equals_hand_computation():
    net = _net()
    x, ref_x = torch.randn(6, 2, 5, 5), torch.rand(4, 2, 5, 5)
    probe = FeatureProbe(net)
    ref = bn_reference(probe, ref_x)
    _, taps = probe(x)
    got = bn_losses(taps, ref)

    # by hand: inputs of each BN, statistics over batch and positions (biased variance), in units
    # of the layer's running std; each layer's distance in units of itself on the reference batch
    def raw(inp):
        a0 = net[0](inp)
        a1 = net[3](net[2](net[1](a0)))
        out = []
        for a, bn in ((a0, net[1]), (a1, net[4])):
            mean = a.mean(dim=(0, 2, 3))
            var = ((a - mean.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))
            s = bn.running_var.mean().sqrt()  # the layer's RMS running std
            out.append(torch.sqrt(((mean - bn.running_mean) ** 2).sum()) / s
                       + torch.sqrt(((var - bn.running_var) ** 2).sum()) / s**2)
        return torch.stack(out)

    assert torch.allclose(got, raw(x) / raw(ref_x), atol=1e-5)
    assert torch.allclose(bn_losses(taps, bn_reference(probe, x)), torch.ones(2), atol=1e-6)


def test_torchscript_probe_matches_eager_hooks():
    net = _net()
    x = torch.randn(4, 2, 5, 5, requires_grad=True)
    eager = FeatureProbe(net)
    lo_e, taps_e = eager(x)
    loss_e = bn_losses(taps_e, bn_reference(eager, x.detach() + 1)).sum() + lo_e.logsumexp(1).sum()
    (g_e,) = torch.autograd.grad(loss_e, x)
    eager.close()  # scripting refuses modules with Python hooks
    for scripted in (torch.jit.script(net), torch.jit.trace(net, torch.randn(2, 2, 5, 5))):
        probe = FeatureProbe(scripted)
        lo, taps = probe(x)
        loss = bn_losses(taps, bn_reference(probe, x.detach() + 1)).sum() + lo.logsumexp(1).sum()
        (g,) = torch.autograd.grad(loss, x)
        assert torch.allclose(lo, lo_e, atol=1e-6) and torch.allclose(g, g_e, atol=1e-6)
        assert torch.allclose(taps.features, taps_e.features, atol=1e-6)


def test_priors_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])
    # horizontal diffs: 1, 2 ; vertical diffs: 3, 4
    assert torch.isclose(tv_l2(x), torch.tensor((9 + 16) / 2 + (1 + 4) / 2))
    assert torch.isclose(tv_l1(x), torch.tensor((3 + 4) / 2 + (1 + 2) / 2))
    assert torch.isclose(l2_prior(x), torch.tensor((0 + 1 + 9 + 25) / 4))


def test_soft_task_loss_is_cross_entropy_to_the_distribution():
    logits = torch.randn(3, 4)
    hard = torch.tensor([0, 1, 2])
    one_hot = torch.nn.functional.one_hot(hard, 4).float()
    assert torch.allclose(task_loss_per_image(logits, hard, one_hot), task_loss_per_image(logits, hard, None))


def test_regional_gradient_only_inside_the_box():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, 20, 24, requires_grad=True)
    boxes = sample_boxes(16, 20, 24, (0.2, 0.6), (0.5, 2.0), gen)
    flip = torch.rand(16, generator=gen) < 0.5
    out = crop_resize(x, boxes, (28, 28), flip)
    (out * torch.randn_like(out)).sum().backward()
    mask = box_mask(boxes, 20, 24).expand_as(x)
    assert (x.grad[~mask] == 0).all()
    assert (x.grad[mask] != 0).float().mean() > 0.9  # and the box itself does get gradient


def test_input_sized_windows_are_the_boxes_pixels_with_gradient_only_there():
    """The released regional update (an input-sized window of the canvas) is cut by
    `crop_windows`: the same view `crop_resize` gives, up to its pull-in, and the same gradient mask."""
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(12, 3, 37, 37, requires_grad=True)
    boxes = sample_boxes(12, 37, 37, (0.765625, 0.765625), (1.0, 1.0), gen)
    assert (boxes[:, 2:] == 32).all()
    flip = torch.rand(12, generator=gen) < 0.5
    out = crop_windows(x, boxes, flip)
    i = int(flip.nonzero()[0])
    top, left = boxes[i, :2].tolist()
    assert torch.equal(out[i], x[i, :, top:top + 32, left:left + 32].flip(-1))
    assert torch.allclose(out, crop_resize(x, boxes, (32, 32), flip), atol=2e-3)
    (out * torch.randn_like(out)).sum().backward()
    mask = box_mask(boxes, 37, 37).expand_as(x)
    assert (x.grad[~mask] == 0).all() and (x.grad[mask] != 0).all()


def test_full_box_crop_is_identity_and_flip_mirrors():
    x = torch.rand(2, 1, 7, 9)
    boxes = torch.tensor([[0, 0, 7, 9]] * 2)
    assert torch.allclose(crop_resize(x, boxes, (7, 9)), x, atol=1e-5)
    assert torch.allclose(crop_resize(x, boxes, (7, 9), torch.tensor([True, False]))[0], x[0].flip(-1), atol=1e-5)


def test_random_affine_turns_and_zooms_about_the_centre():
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
    r2 = (yy - 16) ** 2 + (xx - 16) ** 2
    disk = (r2 <= 64).float().expand(8, 1, 33, 33)
    bar = ((yy - 16).abs() <= 2).float().expand(8, 1, 33, 33)
    assert torch.allclose(random_affine(bar, 0.0, 0.0, gen), bar, atol=1e-5)
    # any turn about the centre leaves a centred disk in place, but not a bar
    assert (random_affine(disk, 0.0, 180.0, gen) - disk).abs().mean() < 0.02
    assert (random_affine(bar, 0.0, 180.0, gen) - bar).abs().mean() > 0.1
    # zooms change the disk's area by the squared factor, within U(1-s, 1+s)^2
    area = random_affine(disk, 0.3, 0.0, gen).sum((1, 2, 3)) / disk[0].sum()
    assert area.min() > 0.7**2 * 0.9 and area.max() < 1.3**2 * 1.1 and area.std() > 0.05


def test_affine_view_passes_gradient_and_default_view_is_unchanged():
    t = load_teacher("mnist-cnn")
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    plain = Inverter(FeatureProbe(t.module), t.spec, SynthConfig(regional=False).resolve(28, 28, 1), "cpu")
    assert torch.equal(plain.view(x, torch.Generator().manual_seed(1)), x)
    cfg = SynthConfig(regional=False, affine_scale=0.2, affine_rotate=20).resolve(28, 28, 1)
    inv = Inverter(FeatureProbe(t.module), t.spec, cfg, "cpu")
    v = inv.view(x, torch.Generator().manual_seed(1))
    assert not torch.allclose(v, x, atol=1e-3)
    v.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_boxes_respect_area_and_canvas():
    gen = torch.Generator().manual_seed(0)
    b = sample_boxes(2000, 32, 32, (0.25, 0.5), (0.75, 1.33), gen)
    area = (b[:, 2] * b[:, 3]).float() / 1024
    assert (b[:, 0] >= 0).all() and (b[:, 0] + b[:, 2] <= 32).all() and (b[:, 1] + b[:, 3] <= 32).all()
    assert area.min() > 0.2 and area.max() < 0.56


def test_schedule_and_phases():
    cfg = SynthConfig(steps=100, lowres_fraction=0.4, lowres_scale=0.5)
    ph = phases(cfg, 28, 28)
    assert [(p.steps, p.height) for p in ph] == [(40, 14), (60, 28)]
    assert lr_at(0, 100, 1.0, 0.1) == 0.1 and lr_at(9, 100, 1.0, 0.1) == 1.0
    assert lr_at(99, 100, 1.0, 0.1) < 0.01


def test_regional_step_changes_only_pixels_in_the_box():
    """One real synthesis step with only the box visible: pixels outside stay bit-identical."""
    t = load_teacher("mnist-cnn")
    cfg = SynthConfig(steps=1, lowres_fraction=0.0, regional=True, region_area=(0.2, 0.4), jitter=0,
                      tv_l1=0.01).resolve(28, 28, 1)
    inv = Inverter(FeatureProbe(t.module), t.spec, cfg, "cpu")
    x = torch.rand(10, 1, 28, 28).requires_grad_(True)
    before = x.detach().clone()
    gen = torch.Generator().manual_seed(3)
    boxes = sample_boxes(10, 28, 28, cfg.region_area, cfg.region_ratio, torch.Generator().manual_seed(3))
    inv._step(x, torch.arange(10), None, gen, torch.optim.Adam([x], lr=0.1))
    changed = x.detach() != before
    inside = box_mask(boxes, 28, 28)
    assert changed.any() and not (changed & ~inside).any()


def test_probe_hooks_record_only_their_own_calls():
    """A probe left open must not accumulate graphs from other forwards (memory leak)."""
    net = _net()
    idle = FeatureProbe(net)
    active = FeatureProbe(net)
    for _ in range(3):
        active(torch.randn(4, 2, 5, 5, requires_grad=True))
        net(torch.randn(4, 2, 5, 5))
    assert idle._stats == [] and idle._features is None and active._stats == []
    active.close()
    idle.close()
    assert not net[1]._forward_hooks and "forward" not in net[1].__dict__


def test_fused_eval_bn_matches_module_and_has_exact_gradient():
    """The probe's fused BN: same output as the module, gradcheck-exact for output and stats."""
    from dfnas.teachers.probe import _EvalBNWithStats

    net = _net().double()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    want = net(x)
    with FeatureProbe(net) as probe:
        got, _ = probe(x)
    assert torch.allclose(got, want, atol=1e-6)
    xs = torch.randn(3, 4, 5, 2, dtype=torch.float64, requires_grad=True)
    scale, shift = torch.rand(4, dtype=torch.float64) + 0.5, torch.randn(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: _EvalBNWithStats.apply(t, scale, shift), (xs,))
    assert torch.autograd.gradcheck(lambda t: _EvalBNWithStats.apply(t, scale, shift)[0].sin().sum(), (xs,))


def test_batch_stats_gradient_matches_autograd_var_mean():
    from dfnas.teachers.probe import _batch_stats, _BatchStats

    x = torch.randn(5, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_BatchStats.apply, (x,))
    m, v = _batch_stats(x.float())
    var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), correction=0)
    assert torch.allclose(m, mean) and torch.allclose(v, var)


def test_moments_match_var_mean_in_every_layout():
    from dfnas.teachers.probe import _moments

    x = torch.randn(7, 5, 6, 4) * 3 + 2
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    for t in (x, x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3)):
        m, v = _moments(t)
        assert torch.allclose(m, mean, atol=1e-5) and torch.allclose(v, var, rtol=1e-5, atol=1e-5)


def test_batched_bn_losses_match_the_per_layer_form():
    net = _net()
    with FeatureProbe(net) as probe:
        _, taps = probe(torch.randn(6, 2, 5, 5))
        ref = bn_reference(probe, torch.rand(6, 2, 5, 5))
        assert torch.allclose(bn_losses(taps, ref, batched=True), bn_losses(taps, ref, batched=False), atol=1e-6)
    # a layer already at its running statistics: zero loss, a finite (zero) gradient as the norm's
    m = torch.randn(3, requires_grad=True)
    v = torch.rand(3, requires_grad=True)
    one = torch.ones(())
    running = [(m.detach().clone(), v.detach().clone(), one, one), (torch.zeros(3), torch.zeros(3), one, one)]
    for batched in (True, False):
        loss = bn_losses(Taps([m, m * 2], [v, v + 1]), running, batched=batched)
        g = torch.autograd.grad(loss.sum(), [m, v])
        assert float(loss[0]) < 1e-12 and all(torch.isfinite(t).all() for t in g)


def test_probe_follows_changes_to_the_bn_buffers():
    """The eval-BN scale/shift are cached; editing running stats or affine weights in place
    (or moving the module) must still reach the output."""
    net = _net()
    x = torch.randn(3, 2, 5, 5)
    with FeatureProbe(net) as probe:
        probe(x)
        with torch.no_grad():
            net[1].running_var.mul_(3.0)
            net[4].weight.add_(0.5)
        got, _ = probe(x)
    assert torch.allclose(got, net(x), atol=1e-6)


def test_jitter_shift_shows_the_teacher_black_bands_per_image_roll_wraps_the_batch():
    """`jitter_mode: shift` feeds each image shifted on its own with a black vacated band (as
    pad-and-crop training did); `roll` moves the whole batch by one wrap-around offset."""
    t = load_teacher("mnist-cnn")
    seen = []
    hook = t.module.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    try:
        x0 = torch.rand(16, 1, 28, 28) * 0.5 + 0.25  # no pixel is black
        scale, shift = t.spec.affine()
        for mode in ("shift", "roll"):
            cfg = SynthConfig(steps=1, lowres_fraction=0.0, regional=False, flip=False, jitter=3,
                              jitter_mode=mode).resolve(28, 28, 1)
            inv = Inverter(FeatureProbe(t.module), t.spec, cfg, "cpu")
            x = x0.clone().requires_grad_(True)
            seen.clear()
            inv._step(x, torch.arange(16) % 10, None, torch.Generator().manual_seed(5),
                      torch.optim.Adam([x], lr=0.0))
            v = (seen[0] - shift) / scale  # back to [0, 1]
            black = (v.abs() < 1e-6).flatten(1).sum(1)
            if mode == "shift":
                assert (black > 0).sum() >= 12  # most images got a non-zero offset and its band
                assert len(set(black.tolist())) > 1  # offsets differ per image
            else:
                assert black.sum() == 0
                offsets = {next((dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                                if torch.allclose(v[i], torch.roll(x0[i], (dy, dx), (1, 2)), atol=1e-5))
                           for i in range(16)}
                assert len(offsets) == 1
    finally:
        hook.remove()


def test_kept_image_shows_its_slots_class_before_a_lower_loss():
    x0, x1 = torch.zeros(4, 1, 2, 2), torch.ones(4, 1, 2, 2)
    # per image: (kept wrong, cand wrong, kept loss, cand loss) -> the candidate wins?
    wrong0 = torch.tensor([True, False, False, True])
    wrong1 = torch.tensor([False, True, False, True])
    loss0 = torch.tensor([0.1, 2.0, 0.5, 0.5])
    loss1 = torch.tensor([3.0, 0.1, 0.2, 0.9])
    x, wrong, loss = keep_better((x0, wrong0, loss0), (x1, wrong1, loss1))
    assert x[:, 0, 0, 0].tolist() == [1.0, 0.0, 1.0, 0.0]  # right beats wrong; then the lower loss
    assert wrong.tolist() == [False, False, False, True]
    assert torch.equal(loss, torch.tensor([3.0, 2.0, 0.2, 0.5]))
