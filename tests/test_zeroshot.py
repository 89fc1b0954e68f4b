"""Zero-shot NAS: the NASWOT kernel by hand, proxy sanity, and the search contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dfnas.errors import DfnasError
from dfnas.spaces import input_shape_of, resolve_space_cfg, space_class
from dfnas.spaces.arch import build_network, make_record
from dfnas.spaces.profile import count_flops
from dfnas.strategies import zeroshot as zs
from dfnas.strategies.zeroshot import (
    PROXIES,
    _naswot_logdet,
    gaussian_input,
    naswot_kernel,
    naswot_score,
    zen_score,
    zero_shot_search,
)

SMALL = {
    "nb201": {"channels": 4, "image_size": 16},
    "spos": {"stem_channels": 8, "stage_channels": [12, 16, 24], "stage_repeats": [1, 1, 1],
             "last_channels": 32, "image_size": 16},
    "proxyless": {"stem_channels": 8, "first_channels": 8, "stage_channels": [8, 16, 16],
                  "stage_depths": [1, 1, 1], "last_channels": 32, "image_size": 16},
    "darts": {"channels": 4, "layers": 3, "nodes": 2, "image_size": 16},
}
BS = 16
PROXYLESS_CFG = {"stem_channels": 4, "first_channels": 4, "stage_channels": [8, 12, 16], "last_channels": 32,
                 "image_size": 16}


def _without_time(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "seconds"}


def _nb201_net(arch: dict) -> nn.Module:
    cfg = resolve_space_cfg("nb201", SMALL["nb201"])
    torch.manual_seed(0)
    return build_network(make_record("nb201", space_class("nb201").version, cfg, arch, {}))


def _nb201_connected(arch: dict) -> bool:
    """Does the cell output depend on its input (some path of non-`none` edges)?"""
    live = [True]
    for i in range(1, 4):
        live.append(any(live[j] and arch[f"cell/op_{i}_{j}"] != "none" for j in range(i)))
    return live[3]


# ----------------------------------------------------------------------------- NASWOT kernel
def test_naswot_kernel_matches_hand_count() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3)
    model = nn.Sequential(conv, nn.ReLU())
    x = gaussian_input((1, 5, 5), 6, seed=3)
    with torch.no_grad():
        codes = (conv(x) > 0).flatten(1)
    units = codes.shape[1]  # 2 channels x 3 x 3
    hand = torch.tensor([[sum(int(a == b) for a, b in zip(ci.tolist(), cj.tolist(), strict=True))
                          for cj in codes] for ci in codes], dtype=torch.float64)
    k = naswot_kernel([codes])
    assert k.dtype == torch.float64
    assert torch.equal(k, hand)
    assert torch.equal(torch.diagonal(k), torch.full((6,), float(units), dtype=torch.float64))
    # the score hooks the ReLU's input, so it must be log|det| of exactly this kernel
    expected = float(torch.linalg.slogdet(hand).logabsdet)
    assert naswot_score(model, (1, 5, 5), batch_size=6, seed=3) == pytest.approx(expected, rel=1e-12)
    # several ReLUs: kernels add
    other = torch.rand(6, 7) > 0.5
    assert torch.equal(naswot_kernel([codes, other]), hand + naswot_kernel([other]))


def test_naswot_identical_inputs_score_lower() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
    distinct = gaussian_input((1, 8, 8), BS, seed=0)
    same = distinct[:1].expand(BS, -1, -1, -1).clone()
    s_distinct = _naswot_logdet(model, distinct)
    s_same = _naswot_logdet(model, same)
    assert math.isfinite(s_distinct)
    assert s_same < s_distinct - 10  # identical codes: K is rank one (singular)


def test_naswot_needs_relu_modules() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(DfnasError, match="zen"):
        naswot_score(model, (1, 8, 8), batch_size=4)


def test_scoring_restores_modes_and_bn_stats() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    model[1].train()  # a mixed state that must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    naswot_score(model, (1, 8, 8), batch_size=8)
    zen_score(model, (1, 8, 8), batch_size=8)
    assert [m.training for m in model.modules()] == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# ----------------------------------------------------------------------------- degenerate nets
def test_all_none_nb201_cell_scores_low_without_crashing() -> None:
    labels = [f"cell/op_{i}_{j}" for i in range(1, 4) for j in range(i)]
    dead = _nb201_net(dict.fromkeys(labels, "none"))
    live = _nb201_net(dict.fromkeys(labels, "nor_conv_3x3"))
    shape = input_shape_of(resolve_space_cfg("nb201", SMALL["nb201"]))
    assert zen_score(dead, shape, batch_size=BS) == -math.inf  # features ignore the input
    assert math.isfinite(zen_score(live, shape, batch_size=BS))
    s_dead, s_live = naswot_score(dead, shape, batch_size=BS), naswot_score(live, shape, batch_size=BS)
    assert not math.isnan(s_dead)
    assert math.isfinite(s_live) and s_dead < s_live - 10


@pytest.mark.parametrize("space", ["nb201", "spos", "proxyless"])
def test_zen_finite_for_sampled_archs(space: str) -> None:
    res = zero_shot_search(space, SMALL[space], proxy="zen", samples=4, batch_size=BS, seed=1)
    assert res["samples"] == 4
    for c in res["candidates"]:
        if space == "nb201" and not _nb201_connected(c["arch"]):
            assert c["score"] == -math.inf
        else:
            assert math.isfinite(c["score"]), c


# ----------------------------------------------------------------------------- search contract
def test_search_is_deterministic_and_keeps_global_rng() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = zero_shot_search("nb201", SMALL["nb201"], samples=4, batch_size=BS, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    b = zero_shot_search("nb201", SMALL["nb201"], samples=4, batch_size=BS, seed=5)
    assert _without_time(a) == _without_time(b)
    assert a["proxy"] == "naswot" and a["samples"] == 4 and a["max_flops"] is None
    scores = [c["score"] for c in a["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert a["arch"] == a["candidates"][0]["arch"] and a["score"] == scores[0]
    assert len({str(sorted(c["arch"].items())) for c in a["candidates"]}) == 4  # distinct


def test_search_respects_max_flops() -> None:
    space = "spos"
    free = zero_shot_search(space, SMALL[space], samples=6, batch_size=BS)
    flops = sorted(c["flops"] for c in free["candidates"])
    budget = flops[len(flops) // 2]
    res = zero_shot_search(space, SMALL[space], samples=3, max_flops=budget, batch_size=BS)
    assert res["max_flops"] == budget
    assert res["candidates"] and all(c["flops"] <= budget for c in res["candidates"])
    # the FLOPs reported are those of the network that gets built
    cfg = resolve_space_cfg(space, SMALL[space])
    net = build_network(make_record(space, space_class(space).version, cfg, res["arch"], {}))
    assert res["flops"] == count_flops(net, input_shape_of(cfg))
    assert res["params"] == sum(p.numel() for p in net.parameters())
    with pytest.raises(DfnasError, match=r"smallest seen: \d+ FLOPs.*raise max_flops") as err:
        zero_shot_search(space, SMALL[space], samples=2, max_flops=1, batch_size=BS)
    smallest = int(str(err.value).split("smallest seen: ")[1].split()[0])
    assert 1 < smallest <= flops[0]


def test_search_errors() -> None:
    assert set(PROXIES) == {"naswot", "zen"}
    with pytest.raises(DfnasError, match=r"unknown zero-shot proxy 'snip'.*naswot.*zen"):
        zero_shot_search("nb201", SMALL["nb201"], proxy="snip")
    with pytest.raises(DfnasError, match="samples >= 1"):
        zero_shot_search("nb201", SMALL["nb201"], samples=0)
    with pytest.raises(DfnasError, match="batch_size >= 2"):
        zero_shot_search("nb201", SMALL["nb201"], samples=1, batch_size=1)


@pytest.mark.parametrize("proxy", ["naswot", "zen"])
def test_search_darts(proxy: str) -> None:
    res = zero_shot_search("darts", SMALL["darts"], proxy=proxy, samples=2, batch_size=BS)
    assert res["samples"] == 2 and math.isfinite(res["score"])


def test_budget_below_uniform_samples_is_reached_by_shrinking() -> None:
    """Uniform samples of the proxyless space are far above its all-cheapest architecture;
    the search still returns candidates under a budget close to that minimum."""
    from dfnas.spaces import create_space, input_shape_of, resolve_space_cfg
    from dfnas.spaces.base import search_space_of
    from dfnas.spaces.profile import build_cost_tables

    cfg = resolve_space_cfg("proxyless", PROXYLESS_CFG)
    net = create_space("proxyless", **cfg)
    table, _ = build_cost_tables(net, input_shape_of(cfg))
    opts = search_space_of(net)
    cheapest = {k: min(v, key=lambda o, k=k: table.cost({**{kk: vv[0] for kk, vv in opts.items()}, k: o}))
                for k, v in opts.items()}
    floor = table.cost(cheapest)
    budget = int(floor * 1.15)
    res = zero_shot_search("proxyless", PROXYLESS_CFG, samples=5, max_flops=budget, seed=0)
    assert res["samples"] >= 2 and all(c["flops"] <= budget for c in res["candidates"])


def test_shrinking_to_a_tight_budget_keeps_nb201_cells_connected() -> None:
    """The cheapest NB201 op is `none`: shrinking picks the cheapest op that keeps a path open."""
    from dfnas.spaces.nb201 import nb201_connected

    free = zero_shot_search("nb201", SMALL["nb201"], samples=6, batch_size=BS)
    budget = min(c["flops"] for c in free["candidates"]) * 3 // 4
    res = zero_shot_search("nb201", SMALL["nb201"], samples=6, max_flops=budget, batch_size=BS)
    assert res["candidates"] and all(c["flops"] <= budget for c in res["candidates"])
    assert all(nb201_connected(c["arch"]) for c in res["candidates"])


# ----------------------------------------------------------------------------- --algo zeroshot
def _zs_run(tmp_path, input_: str, proxy: str = "naswot"):
    from dfnas.config import from_dict
    from dfnas.strategies.config import SearchConfig
    from dfnas.strategies.runner import run_search
    from dfnas.strategies.search_data import SearchData

    src = _toy_digits()
    cfg = from_dict(SearchConfig, {"algo": "zeroshot", "space": "nb201", "space_args": {"channels": 4},
                                   "seed": 3, "zeroshot": {"samples": 6, "batch_size": 16, "input": input_,
                                                           "proxy": proxy}})
    rec = run_search(cfg, src, tmp_path / input_, progress=False)
    return cfg, src, rec, SearchData(src, cfg)


def _toy_digits():
    from dfnas.data.sources import Source
    from dfnas.data.spec import InputSpec

    g = torch.Generator().manual_seed(0)
    spec = InputSpec(channels=1, height=28, width=28, num_classes=10, mean=[0.5], std=[0.25], allow_flip=False)
    x = (torch.rand(64, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    return Source("digits", x, torch.randint(0, 10, (64,), generator=g), spec, identity={"source": "toy"})


def test_zeroshot_strategy_returns_the_best_scored_draw_with_its_own_score(tmp_path) -> None:
    """`--algo zeroshot`: the winner is the top of its candidates' proxy scores, and that score
    is the one the proxy gives the winner's network (supernet init weights) on the data batch."""
    from dfnas.spaces import fix, to_memory_format
    from dfnas.strategies.runner import build_supernet

    cfg, src, rec, data = _zs_run(tmp_path, "data")
    s = rec["search"]
    assert s["samples"] == 6 and s["input"] == "data" and s["batch"] == 16
    assert s["score"] == max(s["all_scores"]) and len(set(s["all_scores"])) > 1
    supernet, _ = build_supernet(cfg, src)
    net = fix(to_memory_format(supernet, cfg.channels_last), rec["choices"])  # as the search ran it
    assert zs.naswot_score(net, (1, 28, 28), x=data.fixed_batch("val", 16)) == pytest.approx(s["score"], rel=1e-9)
    assert rec["nb201_string"]  # recorded like every NB201 search


def test_zeroshot_on_data_and_on_noise_see_different_batches(tmp_path) -> None:
    a = _zs_run(tmp_path, "data")[2]["search"]["all_scores"]
    b = _zs_run(tmp_path, "gaussian")[2]["search"]["all_scores"]
    assert a != b
