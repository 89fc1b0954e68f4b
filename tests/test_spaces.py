"""Search spaces: every space builds, runs forward/backward at 1x28x28, counts FLOPs exactly
per architecture; DARTS genotype derivation and NB201 strings on hand-made inputs."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from dfnas.errors import DfnasError
from dfnas.spaces import (
    InputChoice,
    LayerChoice,
    choice_modules,
    create_space,
    fix,
    list_spaces,
    sample_arch,
    search_space_of,
)
from dfnas.spaces.darts import DARTS_OPS, derive_darts_arch, genotype_string
from dfnas.spaces.nb201 import NB201_OPS, derive_nb201_arch, from_nb201_string, to_nb201_string
from dfnas.spaces.ops import Unused
from dfnas.spaces.profile import count_flops, count_params, flops_of_arch, params_of_arch

SMALL = {
    "darts": {"channels": 4, "layers": 3},
    "nb201": {"channels": 4, "cells_per_stage": 1},
    "proxyless": {"stem_channels": 8, "first_channels": 4, "stage_channels": [8, 12], "stage_depths": [2, 2],
                  "stage_strides": [2, 2], "last_channels": 16},
    "spos": {"stem_channels": 8, "stage_channels": [12, 24], "stage_repeats": [2, 2], "last_channels": 16},
}


def test_registry_lists_the_four_spaces() -> None:
    assert list_spaces() == ["darts", "nb201", "proxyless", "spos"]
    with pytest.raises(DfnasError, match="unknown search space"):
        create_space("resnet")
    with pytest.raises(DfnasError, match="no setting"):
        create_space("darts", widht=3)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_space_forward_backward_and_flops(name: str) -> None:
    torch.manual_seed(0)
    net = create_space(name, num_classes=10, in_channels=1, image_size=28, **SMALL[name])
    assert net.space_name == name and isinstance(net.space_version, int)
    x = torch.randn(2, 1, 28, 28)
    out = net(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    for s in range(2):
        arch = sample_arch(net, random.Random(s))
        fixed = fix(copy.deepcopy(net), arch)
        assert not any(isinstance(m, (LayerChoice, InputChoice)) for m in fixed.modules())
        assert fixed(x).shape == (2, 10)
        flops = count_flops(fixed, (1, 28, 28))
        assert flops > 0
        # the per-choice table gives exactly the fixed network's count, without building it
        assert flops_of_arch(net, arch) == flops
        assert params_of_arch(net, arch) == count_params(fixed)


def test_weighted_mixers_run_like_a_strategy_would() -> None:
    """DARTS-style mixers: weighted sum of candidates, sum of all edges; alphas get gradients."""
    net = create_space("darts", **SMALL["darts"])
    alphas = {lbl: torch.zeros(len(m.names), requires_grad=True)
              for lbl, m in choice_modules(net).items() if isinstance(m, LayerChoice)}

    def layer_mixer(c: LayerChoice, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(alphas[c.label], 0)
        return sum(w[i] * c.candidates[n](x) for i, n in enumerate(c.names))

    for m in net.modules():
        if isinstance(m, LayerChoice):
            m.mixer = layer_mixer
        elif isinstance(m, InputChoice):
            m.mixer = lambda c, inputs: sum(inputs)
    net(torch.randn(2, 1, 28, 28)).sum().backward()
    assert all(a.grad is not None for a in alphas.values())


def test_darts_labels() -> None:
    space = search_space_of(create_space("darts", **SMALL["darts"]))
    assert space["normal/op_2_0"] == DARTS_OPS and space["reduce/op_5_4"] == DARTS_OPS
    assert space["normal/input_2"] == [0, 1] and space["reduce/input_5"] == [0, 1, 2, 3, 4]
    assert len(space) == 2 * (14 + 4)


def _onehot(op: str, strength: float) -> torch.Tensor:
    w = torch.full((len(DARTS_OPS),), (1 - strength) / (len(DARTS_OPS) - 1))
    w[DARTS_OPS.index(op)] = strength
    return w


def test_derive_darts_arch_on_hand_set_weights() -> None:
    weights = {}
    for cell in ("normal", "reduce"):
        for node in range(2, 6):
            for j in range(node):
                weights[f"{cell}/op_{node}_{j}"] = _onehot("sep_conv_3x3", 0.2)
    # node 2: edge 0 is mostly `none` (must not count), edge 1 strong dil_conv_5x5
    weights["normal/op_2_0"] = _onehot("none", 0.9)
    weights["normal/op_2_1"] = _onehot("dil_conv_5x5", 0.6)
    # node 4: edges 3 and 1 are the strongest
    weights["normal/op_4_3"] = _onehot("skip_connect", 0.7)
    weights["normal/op_4_1"] = _onehot("max_pool_3x3", 0.5)
    arch = derive_darts_arch(weights)
    assert arch["normal/input_2"] == [0, 1]  # only two edges exist
    assert arch["normal/op_2_1"] == "dil_conv_5x5"
    assert arch["normal/op_2_0"] != "none"  # best non-none op even on a none-dominated edge
    assert arch["normal/input_4"] == [1, 3]
    assert arch["normal/op_4_3"] == "skip_connect" and arch["normal/op_4_1"] == "max_pool_3x3"
    assert all(v != "none" for k, v in arch.items() if "/op_" in k)
    # raw alphas with softmax give the same choice as probabilities
    raw = {k: torch.log(v) for k, v in weights.items()}
    assert derive_darts_arch(raw, apply_softmax=True) == arch
    net = create_space("darts", **SMALL["darts"])
    fixed = fix(net, arch)  # a complete, valid architecture
    assert "normal: 2<-(" in genotype_string(arch)
    # unchosen edges hold no parameters in the fixed network
    node4 = fixed.cells[0].nodes[2]
    assert isinstance(node4.ops[0], Unused) and isinstance(node4.ops[2], Unused)
    assert not isinstance(node4.ops[1], Unused)


def test_nb201_string_round_trip_and_errors() -> None:
    s = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    arch = from_nb201_string(s)
    assert arch["cell/op_1_0"] == "nor_conv_3x3" and arch["cell/op_3_2"] == "nor_conv_3x3"
    assert to_nb201_string(arch) == s
    net = create_space("nb201", **SMALL["nb201"])
    fix(net, arch)
    for bad in ["|nor_conv_3x3~0|", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                "|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "|none~0|+|none~0|none~0|+|none~0|none~1|none~2|"]:
        with pytest.raises(DfnasError):
            from_nb201_string(bad)
    weights = {f"cell/op_{i}_{j}": torch.eye(5)[(i + j) % 5] for i in range(1, 4) for j in range(i)}
    derived = derive_nb201_arch(weights)
    assert derived["cell/op_2_1"] == NB201_OPS[3]


def test_proxyless_zero_only_where_skippable() -> None:
    net = create_space("proxyless", **SMALL["proxyless"])
    space = search_space_of(net)
    assert "zero" not in space["layer_0"] and "zero" in space["layer_1"]
    assert [n for n in space["layer_0"]] == ["k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6"]
    big = {k: "k7_e6" for k in space}
    small = {k: ("zero" if "zero" in v else "k3_e3") for k, v in space.items()}
    assert flops_of_arch(net, small) < flops_of_arch(net, big)


def test_spos_choices() -> None:
    space = search_space_of(create_space("spos", **SMALL["spos"]))
    assert len(space) == 4
    assert all(v == ["shuffle3x3", "shuffle5x5", "shuffle7x7", "xception"] for v in space.values())


def test_nb201_depth_counts_3x3_windows_on_live_paths() -> None:
    """The cells of the clutter bench: real data's deep chain, synthetic data's shallow ones."""
    from dfnas.spaces.nb201 import from_nb201_string, nb201_depth

    def d(s: str) -> int | None:
        return nb201_depth(from_nb201_string(s))

    assert d("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|") == 3
    assert d("|none~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|") == 2
    # node 1 is cut off, so its 3x3 edge to the output does not count
    assert d("|none~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_3x3~1|none~2|") == 0
    assert d("|avg_pool_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|nor_conv_3x3~2|") == 2
    assert d("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|") is None
    assert nb201_depth(from_nb201_string("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|skip_connect~2|"),
                       count=("nor_conv_1x1",)) == 1


def test_nb201_connectivity_and_valid_sampling() -> None:
    """A cell whose edges out of the input are all `none` predicts a constant: never sampled."""
    from dfnas.spaces.base import arch_valid
    from dfnas.spaces.nb201 import nb201_connected

    edges = [f"cell/op_{i}_{j}" for i in range(1, 4) for j in range(i)]
    assert not nb201_connected(dict.fromkeys(edges, "none"))
    assert nb201_connected({**dict.fromkeys(edges, "none"), "cell/op_3_0": "skip_connect"})
    chain = {**dict.fromkeys(edges, "none"), "cell/op_1_0": "avg_pool_3x3", "cell/op_2_1": "nor_conv_1x1",
             "cell/op_3_2": "nor_conv_3x3"}
    assert nb201_connected(chain)
    assert not nb201_connected({**chain, "cell/op_2_1": "none"})  # the chain broken in the middle
    # the cell a DARTS search on synthetic data once returned: nodes 1 and 2 never see the input
    cut = {**dict.fromkeys(edges, "none"), "cell/op_2_1": "nor_conv_3x3", "cell/op_3_1": "nor_conv_3x3",
           "cell/op_3_2": "nor_conv_3x3"}
    assert not nb201_connected(cut)
    net = create_space("nb201", **SMALL["nb201"])
    assert not arch_valid(net, cut) and arch_valid(net, chain)
    # that cell's output really ignores the input
    model = fix(copy.deepcopy(net), cut).eval()
    with torch.no_grad():
        out = model(torch.randn(4, 1, 28, 28))
    assert torch.allclose(out, out[:1].expand_as(out), atol=1e-5)
    rng = random.Random(0)
    draws = [sample_arch(net, rng) for _ in range(400)]
    assert all(nb201_connected(a) for a in draws)
    assert sum(a[e] == "none" for a in draws for e in edges) > 300  # `none` stays a choice


def test_most_likely_valid_is_the_best_valid_architecture() -> None:
    import itertools

    from dfnas.spaces.base import arch_valid, most_likely_valid

    net = create_space("nb201", **SMALL["nb201"])
    edges = [f"cell/op_{i}_{j}" for i in range(1, 4) for j in range(i)]
    g = torch.Generator().manual_seed(3)
    for trial in range(3):
        probs = {}
        for e in edges:  # `none` favoured on every edge, so the plain argmax is cut off
            p = torch.rand(len(NB201_OPS), generator=g)
            p[0] = p.max() + 0.5 + trial
            probs[e] = p / p.sum()
        argmax = {e: NB201_OPS[int(probs[e].argmax())] for e in edges}
        assert not arch_valid(net, argmax)
        got = most_likely_valid(net, argmax, probs)
        assert arch_valid(net, got)
        best = max((dict(zip(edges, ops, strict=True)) for ops in itertools.product(NB201_OPS, repeat=len(edges))
                    if arch_valid(net, dict(zip(edges, ops, strict=True)))),
                   key=lambda a: sum(float(probs[e][NB201_OPS.index(a[e])].log()) for e in edges))
        joint = sum(float(probs[e][NB201_OPS.index(got[e])].log()) for e in edges)
        assert joint == pytest.approx(sum(float(probs[e][NB201_OPS.index(best[e])].log()) for e in edges))
    # a valid derivation, and a space without a validity rule, are left as they are
    assert most_likely_valid(net, draws := sample_arch(net, random.Random(1)), probs) == draws
    spos = create_space("spos", **SMALL["spos"])
    a = sample_arch(spos, random.Random(0))
    assert most_likely_valid(spos, a, {}) == a


@pytest.mark.parametrize("name", sorted(SMALL))
def test_networks_do_not_see_the_units_of_their_input(name: str) -> None:
    """Every stem is a bias-free conv then BatchNorm, so in training (batch statistics) a
    supernet or a found network computes the same function, and gets the same gradients, on
    raw 0-255 inputs (a teacher spec with mean 0, std 1) as on normalised ones; zero-shot
    scores on Gaussian input need no spec either."""
    torch.manual_seed(0)
    net = create_space(name, num_classes=10, in_channels=1, image_size=28, **SMALL[name]).train()
    x = torch.randn(4, 1, 28, 28)
    grads = []
    for scale in (1.0, 255.0):
        net.zero_grad()
        out = net(x * scale)
        out.square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
        if scale == 1.0:
            ref = out.detach()
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-4)
    # as a function of the stem weights W, BN(W (255 x)) = BN(W x): every gradient is the same too
    assert torch.allclose(grads[1], grads[0], rtol=1e-3, atol=1e-4)


def test_nb201_table_holds_the_published_landmarks() -> None:
    """The shipped NAS-Bench-201 table against figures published with the benchmark (and in
    the kit's README): best 94.37, all-skip 54.30 (where DARTS collapses), the ResNet-like cell
    93.91, mean 87.06, 6,466 distinct cells; and codes round-trip through the cell string."""
    import numpy as np

    from dfnas.spaces.nb201_bench import N_CELLS, accuracies, cell_code, lookup

    acc = accuracies("cifar10_test")
    assert len(acc) == N_CELLS == 15625
    assert round(float(acc.max()), 2) == 94.37 and round(float(acc.mean()), 2) == 87.06
    skip = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    assert round(lookup(skip)["cifar10_test"], 2) == 54.30
    resnet = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    assert round(lookup(resnet)["cifar10_test"], 2) == 93.91
    from dfnas.spaces.nb201_bench import _table

    assert len(np.unique(_table()["iso"])) == 6466
    for s in (skip, resnet):
        assert cell_code(to_nb201_string(from_nb201_string(s))) == cell_code(s)
    with pytest.raises(DfnasError, match="not an NB201 cell"):
        cell_code({"cell/op_1_0": "sep_conv_3x3"})


@pytest.mark.parametrize("name", ["nb201", "darts"])
def test_channels_last_layout_is_the_same_network(name: str) -> None:
    """The NHWC layout (on by default where the space measured faster) changes float order only."""
    from dfnas.spaces import to_memory_format, use_channels_last

    torch.manual_seed(0)
    net = create_space(name, **SMALL[name]).double()
    arch = sample_arch(net, random.Random(0))
    fix(net, arch)
    nhwc = to_memory_format(copy.deepcopy(net), None)
    assert use_channels_last(net, None) == (name == "nb201")
    assert use_channels_last(net, True) and not use_channels_last(net, False)
    convs = [m.weight for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d)
             and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1]
    assert all(w.is_contiguous(memory_format=torch.channels_last) != (name != "nb201") for w in convs)
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    outs = []
    for m in (net, nhwc):
        out = m(x)
        outs.append((out, torch.autograd.grad(out.square().sum(), list(m.parameters()))))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-10)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(outs[0][1], outs[1][1], strict=True))
