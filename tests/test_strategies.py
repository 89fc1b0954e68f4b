"""NAS strategies on tiny toy supernets (plus one check against the real DARTS space).

Numerical checks: the unrolled DARTS hypergradient against central differences of the
bilevel objective; binarized paths run one (weight step) / two (arch step) candidates;
evolution respects the FLOPs limit; BN recalibration gives the exact batch statistics;
an interrupted search resumes to the same architecture.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

from dfnas.config import from_dict
from dfnas.data.sources import Source
from dfnas.data.spec import InputSpec
from dfnas.spaces.base import InputChoice, LayerChoice, apply_arch, sample_arch
from dfnas.strategies import create_strategy
from dfnas.strategies.config import SearchConfig
from dfnas.strategies.context import Hook, SearchContext
from dfnas.strategies.costs import flops_cost_model
from dfnas.strategies.darts import derive_arch
from dfnas.strategies.evolution import Evolution
from dfnas.strategies.runner import run_search
from dfnas.strategies.search_data import SearchData
from dfnas.training.loop import recalibrate_bn
from dfnas.training.losses import target_loss


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def conv(c: int, k: int, bn: bool) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(c, c, k, padding=k // 2, bias=False)]
    layers += [nn.BatchNorm2d(c)] if bn else []
    return nn.Sequential(*layers, nn.Tanh())


class ToyChain(nn.Module):
    """stem -> l1 -> l2 (l2 shares its label with l2b: one decision, two modules) -> head."""

    def __init__(self, c: int = 4, classes: int = 3, bn: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), *([nn.BatchNorm2d(c)] if bn else []), nn.Tanh())

        def cands() -> dict[str, nn.Module]:
            return {"conv3": conv(c, 3, bn), "conv1": conv(c, 1, bn), "pool": nn.AvgPool2d(3, 1, 1), "none": Zero()}

        self.l1 = LayerChoice("l1", cands())
        self.l2 = LayerChoice("l2", cands())
        self.l2b = LayerChoice("l2", cands())
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.l1(x)
        x = x + self.l2(x)
        x = x + self.l2b(x)
        return self.head(x.mean((2, 3)))


class ToyCell(nn.Module):
    """DARTS-like: node 2 takes 2 of 2 edges, node 3 takes 2 of 3 edges (s0, s1, node 2)."""

    def __init__(self, c: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)

        def cands() -> dict[str, nn.Module]:
            return {"none": Zero(), "conv3": conv(c, 3, True), "pool": nn.AvgPool2d(3, 1, 1)}

        self.e20 = LayerChoice("op_2_0", cands())
        self.e21 = LayerChoice("op_2_1", cands())
        self.e30 = LayerChoice("op_3_0", cands())
        self.e31 = LayerChoice("op_3_1", cands())
        self.e32 = LayerChoice("op_3_2", cands())
        self.in2 = InputChoice("input_2", 2, 2)
        self.in3 = InputChoice("input_3", 3, 2)
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem(x)
        s1 = torch.tanh(s0)
        n2 = self.in2([self.e20(s0), self.e21(s1)])
        n3 = self.in3([self.e30(s0), self.e31(s1), self.e32(n2)])
        return self.head(n3.mean((2, 3)))


def toy_source(n: int = 48, synthetic: bool = False, seed: int = 0) -> Source:
    g = torch.Generator().manual_seed(seed)
    spec = InputSpec(channels=1, height=8, width=8, num_classes=3, mean=[0.5], std=[0.25], allow_flip=False)
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 3, (n,), generator=g)
    logits = torch.randn(n, 3, generator=g) if synthetic else None
    return Source("toy", x, y, spec, logits, identity={"source": "toy", "seed": seed})


def make_cfg(**kw: object) -> SearchConfig:
    base = {"epochs": 2, "batch_size": 8, "lr": 0.05, "max_steps_per_epoch": 3, "seed": 1,
            "spos": {"population": 4, "generations": 2, "topk": 2, "mutation": 2, "crossover": 2,
                     "bn_batches": 1, "val_batches": 1},
            "random": {"samples": 3, "train_steps": 2, "val_batches": 1},
            "zeroshot": {"samples": 4, "batch_size": 8, "proxy": "zen"}}
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return from_dict(SearchConfig, base)


# ----------------------------------------------------------------------------- DARTS


def test_darts_second_order_matches_finite_differences() -> None:
    torch.manual_seed(0)
    model = ToyChain(c=3, bn=False)
    cfg = make_cfg(algo="darts", weight_decay=1e-3, darts={"order": 2, "unrolled_lr": 0.5, "hvp_eps": 1e-3})
    data = SearchData(toy_source(32), cfg)
    strat = create_strategy("darts", cfg)
    strat.setup(model, SearchContext(cfg, data, progress=False))
    model.double()
    with torch.no_grad():
        for a in strat._alpha_of.values():
            a.data = torch.randn(len(a), dtype=torch.float64)
    (xt, tt), (xv, tv) = next(data.batches("train", 0)), next(data.batches("val", 0))
    xt, xv = xt.double(), xv.double()
    grads, _ = strat.arch_grads(model, xt, tt, xv, tv)

    params = [p for p in model.parameters()]
    w0 = [p.detach().clone() for p in params]
    xi, wd = 0.5, 1e-3

    def objective() -> float:
        """L_val(w - xi * (grad_w L_train + wd * w), alpha): the bilevel objective of DARTS."""
        for p, w in zip(params, w0, strict=True):
            p.data.copy_(w)
        g = torch.autograd.grad(target_loss(model(xt), tt, 3.0), params, allow_unused=True)
        with torch.no_grad():
            for p, gi in zip(params, g, strict=True):
                p.sub_(xi * ((gi if gi is not None else 0) + wd * p))
            val = float(target_loss(model(xv), tv, 3.0))
        for p, w in zip(params, w0, strict=True):
            p.data.copy_(w)
        return val

    h = 1e-5
    for a, ga in zip(strat._alpha_of.values(), grads, strict=True):
        num = torch.zeros_like(a)
        for i in range(len(a)):
            with torch.no_grad():
                a[i] += h
            fp = objective()
            with torch.no_grad():
                a[i] -= 2 * h
            fm = objective()
            with torch.no_grad():
                a[i] += h
            num[i] = (fp - fm) / (2 * h)
        assert torch.allclose(ga, num, rtol=1e-3, atol=1e-6), (ga, num)
    # the first-order gradient differs, so the check above really covers the unrolled term
    strat.cfg.darts.order = 1
    g1, _ = strat.arch_grads(model, xt, tt, xv, tv)
    assert not all(torch.allclose(a, b, rtol=1e-3) for a, b in zip(g1, grads, strict=True))


def test_genotype_on_hand_set_alphas() -> None:
    names = {k: ["none", "conv3", "pool"] for k in ("op_2_0", "op_2_1", "op_3_0", "op_3_1", "op_3_2")}
    probs = {
        "op_2_0": torch.tensor([0.8, 0.1, 0.1]),   # none dominates but is excluded -> conv3 (tie: first)
        "op_2_1": torch.tensor([0.1, 0.2, 0.7]),
        "op_3_0": torch.tensor([0.1, 0.3, 0.6]),   # strength 0.6
        "op_3_1": torch.tensor([0.9, 0.05, 0.05]),  # strength 0.05 (none ignored)
        "op_3_2": torch.tensor([0.2, 0.5, 0.3]),   # strength 0.5
    }
    inputs = {"input_2": (2, ["op_2_0", "op_2_1"]), "input_3": (2, ["op_3_0", "op_3_1", "op_3_2"])}
    arch = derive_arch(probs, names, inputs)
    assert arch == {"op_2_0": "conv3", "op_2_1": "pool", "op_3_0": "pool", "op_3_1": "conv3",
                    "op_3_2": "conv3", "input_2": [0, 1], "input_3": [0, 2]}
    # without an InputChoice above it, an edge takes its plain argmax (NB201: none may win)
    assert derive_arch({"e": torch.tensor([0.6, 0.3, 0.1])}, {"e": ["none", "a", "b"]}, {}) == {"e": "none"}


def test_darts_wiring_probe_and_real_darts_space_agree() -> None:
    """The generic derivation (edges found by probing) equals the space's own derive function."""
    from dfnas.spaces import create_space
    from dfnas.spaces.darts import derive_darts_arch

    torch.manual_seed(0)
    cfg = make_cfg(algo="darts")
    cell = ToyCell()
    strat = create_strategy("darts", cfg)
    strat.setup(cell, SearchContext(cfg, SearchData(toy_source(), cfg), progress=False))
    assert strat.inputs == {"input_2": (2, ["op_2_0", "op_2_1"]), "input_3": (2, ["op_3_0", "op_3_1", "op_3_2"])}

    net = create_space("darts", num_classes=3, in_channels=1, image_size=8, channels=2, layers=3, nodes=2)
    cfg = make_cfg(algo="darts", space="darts")
    strat = create_strategy("darts", cfg)
    strat.setup(net, SearchContext(cfg, SearchData(toy_source(), cfg), progress=False))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for a in strat._alpha_of.values():
            a.copy_(torch.randn(len(a), generator=g))
    assert strat.derive() == derive_darts_arch(strat.probs())


def test_darts_search_moves_alphas_and_records_history() -> None:
    torch.manual_seed(0)
    cfg = make_cfg(algo="darts", darts={"arch_lr": 0.05})
    res = run_search(cfg, toy_source(), None, progress=False, supernet=ToyChain())
    assert set(res["choices"]) == {"l1", "l2"}
    strat_hist = res["search"]
    assert strat_hist["order"] == 1 and "supernet_val_acc" in strat_hist


@pytest.mark.parametrize("algo", ["darts", "gdas", "drnas"])
def test_warmup_epochs_train_weights_only_then_the_alphas_move(algo: str) -> None:
    torch.manual_seed(0)
    model = ToyChain()
    cfg = make_cfg(algo=algo, epochs=2, darts={"arch_lr": 0.1, "warmup_epochs": 1})
    data = SearchData(toy_source(), cfg)
    strat = create_strategy(algo, cfg)
    probs, moved, val = [], [], []
    stamp = [p.detach().clone() for p in model.parameters()]

    class Watch(Hook):
        def on_epoch_end(self, ctx: SearchContext, epoch: int, metrics: dict) -> None:
            probs.append({k: v.clone() for k, v in strat.probs().items()})
            moved.append(any(not torch.equal(a, p) for a, p in zip(stamp, model.parameters(), strict=True)))
            val.append(metrics["val_loss"])

    res = strat.search(model, SearchContext(cfg, data, progress=False, hooks=[Watch()]))
    start = {k: torch.full_like(v, 1 / len(v)) for k, v in probs[0].items()}
    assert all(torch.allclose(probs[0][k], start[k], atol=2e-3) for k in start)  # epoch 1: alphas as drawn
    assert any(not torch.allclose(probs[1][k], probs[0][k], atol=1e-4) for k in start)  # epoch 2: they move
    assert moved[0] and val[0] is None and val[1] > 0  # the warm-up trained the weights, scored no val batch
    assert res.metrics["train_loss"] > 0


# ----------------------------------------------------------------------------- GDAS


def test_gdas_draws_ops_with_the_softmax_probabilities_at_any_temperature() -> None:
    """Gumbel-max: the argmax of alpha + Gumbel noise is distributed as softmax(alpha), whatever
    tau; the weight is exactly one-hot in value and carries the softmax gradient."""
    from dfnas.strategies.gdas import gumbel_hard

    alpha = torch.tensor([1.0, 0.0, -1.0, 0.5])
    want = torch.softmax(alpha, 0)
    for tau in (10.0, 0.1):
        g = torch.Generator().manual_seed(0)
        counts = torch.bincount(torch.tensor([gumbel_hard(alpha, tau, g)[1] for _ in range(4000)]), minlength=4)
        assert torch.allclose(counts / 4000, want, atol=0.025), (tau, counts)
    a = alpha.clone().requires_grad_(True)
    w, k = gumbel_hard(a, 1.0, torch.Generator().manual_seed(3))
    assert w.detach().tolist() == [float(i == k) for i in range(4)]
    w[k].backward()
    assert a.grad is not None and a.grad.abs().sum() > 0 and a.grad[k] > 0
    assert gumbel_hard(alpha, 1.0, None)[1] == 0  # no generator: the argmax, for the final evaluation


def test_gdas_runs_one_path_per_step_anneals_tau_and_moves_alphas() -> None:
    torch.manual_seed(0)
    model = ToyChain()
    cfg = make_cfg(algo="gdas", epochs=5, darts={"arch_lr": 0.1}, gdas={"tau_max": 8.0, "tau_min": 0.5})
    data = SearchData(toy_source(), cfg)
    strat = create_strategy("gdas", cfg)
    strat.setup(model, SearchContext(cfg, data, progress=False))
    taus = []
    for e in range(5):
        strat.begin_epoch(e)
        taus.append(strat.tau)
    assert taus == pytest.approx([8.0, 6.125, 4.25, 2.375, 0.5])
    x, t = next(data.batches("train", 0))
    before = {k: a.detach().clone() for k, a in strat._alpha_of.items()}
    for step in (strat.weight_step, lambda m, xb, tb: strat.arch_step(m, xb, tb, xb, tb)):
        runs, hs = _count_runs(model)
        step(model, x, t)
        for h in hs:
            h.remove()
        assert all(v == 1 for v in runs.values()), runs
    assert any(not torch.allclose(before[k], a.detach()) for k, a in strat._alpha_of.items())


def test_gdas_exclude_none_never_draws_or_derives_a_zero_op() -> None:
    torch.manual_seed(0)
    model = ToyChain()
    cfg = make_cfg(algo="gdas", darts={"arch_lr": 0.1}, gdas={"exclude_none": True})
    data = SearchData(toy_source(), cfg)
    strat = create_strategy("gdas", cfg)
    strat.setup(model, SearchContext(cfg, data, progress=False))
    strat.begin_epoch(0)
    with torch.no_grad():
        for a in strat._alpha_of.values():
            a[3] = 5.0  # `none` the strongest by far
    x, t = next(data.batches("train", 0))
    for _ in range(5):
        strat.arch_step(model, x, t, x, t)
        assert all(strat._index[k] != 3 for k in strat._index)
    assert all(float(p[3]) == 0.0 for p in strat.probs().values())
    assert all(v != "none" for v in strat.derive().values())


# ----------------------------------------------------------------------------- DrNAS


def test_drnas_draws_are_torchs_dirichlet_rsample_from_an_explicit_generator() -> None:
    """Same stream, same draw, same pathwise gradient as torch.distributions.Dirichlet.rsample."""
    from dfnas.strategies.drnas import concentration, dirichlet_draw

    alpha = torch.tensor([0.3, -0.5, 1.2, 0.0], dtype=torch.float64)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    a1 = alpha.clone().requires_grad_(True)
    x1 = dirichlet_draw(a1, torch.Generator().manual_seed(5))
    (x1 * w).sum().backward()
    a2 = alpha.clone().requires_grad_(True)
    torch.manual_seed(5)
    x2 = torch.distributions.Dirichlet(concentration(a2)).rsample()
    (x2 * w).sum().backward()
    assert torch.allclose(x1, x2) and torch.allclose(a1.grad, a2.grad)
    beta = concentration(alpha)
    assert torch.allclose(dirichlet_draw(alpha, None), beta / beta.sum())  # no generator: the mean


def test_drnas_kl_term_pulls_concentrations_to_the_flat_prior() -> None:
    """Without data the KL term alone moves the alphas towards Dir(1) (alpha -> 0)."""
    cfg = make_cfg(algo="drnas", drnas={"reg_scale": 1.0})
    strat = create_strategy("drnas", cfg)
    model = ToyChain()
    strat.setup(model, SearchContext(cfg, SearchData(toy_source(), cfg), progress=False))
    with torch.no_grad():
        for a in strat._alpha_of.values():
            a.copy_(torch.tensor([2.0, -0.5, 0.0, 1.0]))
    before = strat.arch_penalty()
    pen = strat.arch_penalty()
    pen.backward()
    a = next(iter(strat._alpha_of.values()))
    assert float(before) > 0 and a.grad[0] > 0 and a.grad[1] < 0  # down from above 0, up from below


# ----------------------------------------------------------------------------- ProxylessNAS


def _count_runs(model: nn.Module) -> tuple[dict[int, int], list]:
    """Hooks counting how many candidates of each LayerChoice module run."""
    runs: dict[int, int] = {}

    def counter(key: int):  # noqa: ANN202
        def hook(mod: nn.Module, i: object, o: object) -> None:
            runs[key] = runs.get(key, 0) + 1
        return hook

    handles = []
    for m in model.modules():
        if isinstance(m, LayerChoice):
            for c in m.candidates.values():
                handles.append(c.register_forward_hook(counter(id(m))))
    return runs, handles


def test_proxyless_runs_one_path_per_forward_and_two_for_arch_step() -> None:
    torch.manual_seed(0)
    model = ToyChain()
    cfg = make_cfg(algo="proxyless", proxyless={"arch_lr": 0.1, "hw_metric": "none"})
    data = SearchData(toy_source(), cfg)
    strat = create_strategy("proxyless", cfg)
    strat.setup(model, SearchContext(cfg, data, progress=False))
    g = torch.Generator().manual_seed(0)
    x, t = next(data.batches("train", 0))
    n_choice_modules = sum(isinstance(m, LayerChoice) for m in model.modules())
    for _ in range(3):
        runs, hs = _count_runs(model)
        strat.weight_step(model, x, t, g, uniform=False)
        for h in hs:
            h.remove()
        assert len(runs) == n_choice_modules and all(v == 1 for v in runs.values())
    before = {k: a.detach().clone() for k, a in strat._alpha_of.items()}
    runs, hs = _count_runs(model)
    strat.arch_step(model, x, t, g)
    for h in hs:
        h.remove()
    assert all(v == 2 for v in runs.values())
    moved = [k for k in before if not torch.allclose(before[k], strat._alpha_of[k].detach())]
    assert moved, "the arch step must change the architecture parameters"
    # the pair's probability mass is kept: unsampled paths keep their probabilities
    # (without the hardware term, whose expected-cost gradient reaches every path)
    for k, a in strat._alpha_of.items():
        pair = list(strat.mode[k][1])
        rest = [i for i in range(len(a)) if i not in pair]
        p_old, p_new = torch.softmax(before[k], 0), torch.softmax(a.detach(), 0)
        assert torch.allclose(p_old[rest], p_new[rest], atol=1e-6)


def test_proxyless_flops_loss_prefers_cheap_ops() -> None:
    """With only the hardware term pushing (add mode, large lambda), alphas move to cheaper ops."""
    torch.manual_seed(0)
    cfg = make_cfg(algo="proxyless", epochs=3, proxyless={"arch_lr": 0.2, "hw_mode": "add", "hw_lambda": 50.0})
    res = run_search(cfg, toy_source(), None, progress=False, supernet=ToyChain())
    costly = {"conv3"}
    assert not costly & set(res["choices"].values()), res["choices"]


@pytest.mark.parametrize("target,want", [(1e3, {"conv3", "conv1"}), (1e-9, {"none", "pool"})])
def test_proxyless_abs_mode_pulls_the_cost_to_its_target_from_both_sides(target: float, want: set[str]) -> None:
    """`abs` (TuNAS): below the target the hardware term asks for *more* cost, above it less;
    `add` always asks for less."""
    torch.manual_seed(0)
    cfg = make_cfg(algo="proxyless", epochs=3, proxyless={"arch_lr": 0.2, "hw_mode": "abs", "hw_lambda": 50.0,
                                                          "hw_target": target})
    res = run_search(cfg, toy_source(), None, progress=False, supernet=ToyChain())
    assert set(res["choices"].values()) <= want, res["choices"]  # conv ops cost FLOPs, none/pool none


def test_proxyless_derived_figures_use_recalibrated_bn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The derived path is scored with BN statistics of that path, not the supernet's mix."""
    from dfnas.strategies import proxyless

    seen: list[dict[str, str]] = []
    real = proxyless.recalibrate_bn
    net = ToyChain()

    def spy(model: nn.Module, batches) -> None:  # type: ignore[no-untyped-def]
        assert model is net
        seen.append({k: m[0] for k, m in holder[0].mode.items()})
        real(model, batches)

    holder: list = []
    init = proxyless.ProxylessStrategy.setup

    def setup(self, model, ctx):  # type: ignore[no-untyped-def]
        holder.append(self)
        init(self, model, ctx)

    monkeypatch.setattr(proxyless, "recalibrate_bn", spy)
    monkeypatch.setattr(proxyless.ProxylessStrategy, "setup", setup)
    run_search(make_cfg(algo="proxyless", proxyless={"hw_metric": "none"}), toy_source(), None, progress=False,
               supernet=net)
    assert seen == [{"l1": "single", "l2": "single"}]  # once, with the derived single path active


# ----------------------------------------------------------------------------- SPOS / evolution


def test_evolution_respects_flops_limit() -> None:
    from dfnas.spaces import create_space

    net = create_space("spos", num_classes=3, in_channels=1, image_size=8)
    cost = flops_cost_model(net, (1, 8, 8))
    rng = random.Random(0)
    costs = sorted(cost.of(sample_arch(net, rng)) for _ in range(40))
    limit = costs[len(costs) // 3]
    scored: list[float] = []

    def score(a: dict) -> float:  # bigger is better: pushes against the limit
        scored.append(cost.of(a))
        return cost.of(a)

    evo = Evolution(lambda r: sample_arch(net, r), cost.of, limit, population=8, topk=3, n_mutation=4,
                    n_crossover=4, mutation_prob=0.3, seed=0)
    st = evo.run(score, generations=4)
    assert scored and max(scored) <= limit
    assert cost.of(st["best"]) <= limit
    assert st["best_score"] == max(scored)
    assert len(scored) > 8  # later generations made new candidates


def test_bn_recalibration_sets_exact_batch_statistics() -> None:
    torch.manual_seed(0)
    model = ToyChain()
    cfg = make_cfg()
    data = SearchData(toy_source(), cfg)
    apply_arch(model, {"l1": "conv3", "l2": "pool"})
    bn = model.stem[1]
    old = bn.running_mean.clone()
    batches = list(data.batches("train", "bn", train_aug=False, limit=2))
    inputs = []
    h = bn.register_forward_pre_hook(lambda m, i: inputs.append(i[0].detach()))
    recalibrate_bn(model, iter(batches))
    h.remove()
    assert not torch.allclose(old, bn.running_mean)
    expected = torch.stack([t.mean((0, 2, 3)) for t in inputs]).mean(0)
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)
    assert bn.momentum == 0.1  # restored


def test_candidate_score_orders_by_the_chosen_metric() -> None:
    from dfnas.strategies.supernet import candidate_score

    sharp, lucky = {"acc": 0.90, "loss": 0.30}, {"acc": 0.92, "loss": 0.60}
    assert candidate_score(lucky, "top1") > candidate_score(sharp, "top1")
    assert candidate_score(sharp, "loss") > candidate_score(lucky, "loss")
    tie = {"acc": 0.92, "loss": 0.40}
    assert candidate_score(tie, "top1") > candidate_score(lucky, "top1")  # equal top-1: the lower loss wins


def test_spos_loss_score_reaches_the_evolution() -> None:
    torch.manual_seed(0)
    cfg = make_cfg(algo="spos", spos={"flops_limit": 1e9, "score": "loss"})
    res = run_search(cfg, toy_source(), None, progress=False, supernet=ToyChain())
    assert res["search"]["val_score"] < 0  # minus a cross-entropy, not a top-1 in [0, 1]


@pytest.mark.parametrize("metric", ["loss", "top1"])
def test_random_search_keeps_the_best_sample_by_its_score(metric: str) -> None:
    torch.manual_seed(0)
    cfg = make_cfg(algo="random", random={"samples": 4, "score": metric})
    m = run_search(cfg, toy_source(), None, progress=False, supernet=ToyChain())["search"]
    assert m["score"] == metric and len(m["all_val_loss"]) == 4
    if metric == "loss":
        assert m["val_loss"] == min(m["all_val_loss"])
    else:
        assert m["val_acc"] == max(m["all_val_acc"])


def test_spos_scores_differ_with_recalibration_per_candidate() -> None:
    torch.manual_seed(0)
    cfg = make_cfg(algo="spos", spos={"flops_limit": 1e9})
    res = run_search(cfg, toy_source(), None, progress=False, supernet=ToyChain())
    assert res["search"]["evaluated"] >= 4 and set(res["choices"]) == {"l1", "l2"}


# ----------------------------------------------------------------------------- resume


class Crash(Exception):
    pass


class CrashAfter(Hook):
    def __init__(self, n: int) -> None:
        self.n = n

    def on_step_end(self, ctx: SearchContext, step: int, metrics: dict[str, float]) -> None:
        if step >= self.n:
            raise Crash(f"simulated kill at step {step}")


@pytest.mark.parametrize("algo,crash_at,synthetic", [("darts", 4, False), ("gdas", 4, True), ("drnas", 4, False), ("proxyless", 5, True),
                                                     ("spos", 7, False), ("random", 2, True), ("zeroshot", 2, False)])
def test_resume_after_interruption_gives_same_arch(tmp_path, algo: str, crash_at: int, synthetic: bool) -> None:
    cfg = make_cfg(algo=algo, darts={"arch_lr": 0.05}, proxyless={"arch_lr": 0.2})
    src = toy_source(synthetic=synthetic)

    def net() -> nn.Module:
        torch.manual_seed(7)
        return ToyChain()

    ref = run_search(cfg, src, tmp_path / "ref", progress=False, supernet=net())
    with pytest.raises(Crash):
        run_search(cfg, src, tmp_path / "run", progress=False, supernet=net(), hooks=[CrashAfter(crash_at)])
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    # as if the killed run had been on the GPU: the device is no part of what the folder is for
    ident = json.loads((tmp_path / "run" / "run.json").read_text())
    ident["config"]["device"] = "cuda:1"
    (tmp_path / "run" / "run.json").write_text(json.dumps(ident))
    res = run_search(cfg, src, tmp_path / "run", progress=False, supernet=net())
    assert res["choices"] == ref["choices"]
    assert res["search"] == ref["search"]
    log = (tmp_path / "run" / "search.log").read_text().splitlines()
    assert sum('"event": "start"' in line for line in log) == 2


def test_zeroshot_refine_trains_the_proxys_shortlist_and_resumes_inside_it(tmp_path) -> None:
    """`zeroshot.refine` = k: the k best by the proxy, in proxy order, each trained; the pick is
    the lowest val loss among them, not the proxy's top; a kill during the training resumes to
    the same result."""
    cfg = make_cfg(algo="zeroshot", zeroshot={"samples": 4, "refine": 3, "refine_steps": 3})
    src = toy_source(synthetic=True)

    def net() -> nn.Module:
        torch.manual_seed(7)
        return ToyChain()

    ref = run_search(cfg, src, tmp_path / "ref", progress=False, supernet=net())["search"]
    proxy_order = sorted(zip(ref["all_scores"], ref["all_archs"], strict=True), key=lambda p: -p[0])[:3]
    assert [r["arch"] for r in ref["refined"]] == [a for _, a in proxy_order]
    assert [r["proxy_score"] for r in ref["refined"]] == [sc for sc, _ in proxy_order]
    losses = [r["val_loss"] for r in ref["refined"]]
    assert ref["val_loss"] == min(losses) and ref["proxy_rank"] == losses.index(min(losses))
    assert len(set(losses)) == 3  # trained: each cell its own loss
    with pytest.raises(Crash):  # steps 1-4 score the proxy, 5-7 train the shortlist
        run_search(cfg, src, tmp_path / "run", progress=False, supernet=net(), hooks=[CrashAfter(6)])
    assert run_search(cfg, src, tmp_path / "run", progress=False, supernet=net())["search"] == ref


def test_two_path_gate_gradients_match_the_dense_formula() -> None:
    """The memory-saving gate (one path with a graph) gives the same grads as g_a*o_a + g_b*o_b."""
    from dfnas.strategies.proxyless import _TwoPathGate

    torch.manual_seed(0)
    op_a, op_b = conv(3, 3, False).double(), conv(3, 1, False).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    for active in (0, 1):
        gates = torch.zeros(2, dtype=torch.float64)
        gates[active] = 1
        g1 = gates.clone().requires_grad_(True)
        dense = ((g1[0] * op_a(x) + g1[1] * op_b(x)) * w).sum()
        ref = torch.autograd.grad(dense, [g1, x])
        g2 = gates.clone().requires_grad_(True)
        ours = (_TwoPathGate.apply(x, g2, op_a, op_b) * w).sum()
        got = torch.autograd.grad(ours, [g2, x])
        for r, o in zip(ref, got, strict=True):
            assert torch.allclose(r, o, atol=1e-10)


def test_spos_rejection_sampling_stays_in_flops_range() -> None:
    from dfnas.spaces import create_space

    net = create_space("spos", num_classes=3, in_channels=1, image_size=8)
    cfg = make_cfg(algo="spos")
    strat = create_strategy("spos", cfg)
    strat.setup(net, SearchContext(cfg, SearchData(toy_source(), cfg), progress=False))
    rng = random.Random(0)
    costs = sorted(strat.cost.of(sample_arch(net, rng)) for _ in range(30))
    lo, hi = costs[10], costs[20]
    strat.cfg.spos.flops_range = (lo, hi)
    drawn = [strat.cost.of(strat.sample(net, rng)) for _ in range(20)]
    assert all(lo <= c <= hi for c in drawn)


class OnlyOneValid(ToyChain):
    """A toy space whose validity rule accepts a single architecture."""

    ONLY = {"l1": "pool", "l2": "conv1"}

    def arch_valid(self, arch: dict) -> bool:
        return arch == self.ONLY


@pytest.mark.parametrize("algo", ["darts", "gdas", "drnas", "proxyless"])
def test_derived_architecture_is_valid(algo: str) -> None:
    """Whatever the alphas say, DARTS and ProxylessNAS hand back an architecture the space accepts."""
    torch.manual_seed(0)
    cfg = make_cfg(algo=algo, proxyless={"hw_metric": "none"})
    res = run_search(cfg, toy_source(), None, progress=False, supernet=OnlyOneValid())
    assert res["choices"] == OnlyOneValid.ONLY


def test_evolution_only_scores_valid_children() -> None:
    from dfnas.spaces import create_space
    from dfnas.spaces.base import arch_valid

    net = create_space("nb201", channels=4, image_size=8)
    scored: list[dict] = []

    def score(a: dict) -> float:  # rewards `none`: mutation and crossover push towards cut-off cells
        scored.append(a)
        return float(sum(v == "none" for v in a.values()))

    evo = Evolution(lambda r: sample_arch(net, r), lambda a: 0.0, None, population=8, topk=3, n_mutation=6,
                    n_crossover=6, mutation_prob=0.5, seed=0, valid=lambda a: arch_valid(net, a))
    st = evo.run(score, generations=4)
    assert len(scored) > 8 and all(arch_valid(net, a) for a in scored)
    assert st["best_score"] >= 4  # it did climb: most edges `none`, input still connected


def test_darts_folds_op_weights_into_batchnorm_exactly() -> None:
    """A candidate ending in BatchNorm is weighted through BN's affine transform instead of a
    pass over its output: outputs, gradients (alphas and weights) and running statistics equal
    the plain weighted sum's."""
    from dfnas.spaces import create_space

    torch.manual_seed(0)
    net = create_space("darts", num_classes=3, in_channels=1, image_size=8, channels=4, layers=3)
    cfg = make_cfg(algo="darts", space="darts")
    strat = create_strategy("darts", cfg)
    strat.setup(net, SearchContext(cfg, SearchData(toy_source(32), cfg), progress=False))
    net.double()
    with torch.no_grad():
        for a in strat._alpha_of.values():
            a.data = torch.randn(len(a), dtype=torch.float64)
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    results = []
    for fold in (True, False):
        net.load_state_dict(start)
        strat._tails = {} if fold else {op: None for op in strat._tails}
        loss = target_loss(net(x), y, 1.0)
        grads = torch.autograd.grad(loss, [*strat._alpha_of.values(), *net.parameters()])
        results.append((loss, grads, {k: v.clone() for k, v in net.state_dict().items()}))
        if fold:  # every op of the DARTS space but pooling, skip and none ends in BN
            assert sum(t is not None for t in strat._tails.values()) >= 8 * 6
    (l1, g1, s1), (l2, g2, s2) = results
    assert torch.allclose(l1, l2, atol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(g1, g2, strict=True))
    assert all(torch.equal(s1[k], s2[k]) or torch.allclose(s1[k], s2[k], atol=1e-12) for k in s1)
    moved = [k for k in s1 if "candidates" in k and k.endswith("running_mean") and not torch.equal(s1[k], start[k])]
    assert len(moved) >= 8 * 6  # the folded BNs did update their statistics


def test_zeroshot_naswot_refuses_a_space_without_relu_modules_before_any_folder(tmp_path) -> None:
    from dfnas.errors import DfnasError

    cfg = make_cfg(algo="zeroshot", zeroshot={"proxy": "naswot"})
    with pytest.raises(DfnasError, match="zeroshot.proxy=zen"):
        run_search(cfg, toy_source(), tmp_path / "out", progress=False, supernet=ToyChain())
    assert not (tmp_path / "out").exists()
