"""Training-free ("zero-shot") NAS: rank architectures by a proxy score at initialization.

Every candidate is built with fixed seeded weights and scored by a proxy known to correlate
with trained accuracy, on a batch of Gaussian noise (no data at all: the cheapest data-free
baseline, the one the other strategies should beat) or of the search data (`--algo zeroshot`).

Proxies (implemented from the papers' definitions):

* ``naswot`` (Mellor et al., 2021, "Neural Architecture Search without Training"): how
  differently the ReLUs partition a batch of inputs. At every ``nn.ReLU``/``nn.ReLU6`` the
  pre-activation gives a binary code per sample (unit active or not); the kernel
  ``K[i, j]`` counts the units on which samples i and j agree, summed over all ReLUs; the
  score is ``log|det K|``. Distinct codes -> well-conditioned K -> high score.
* ``zen`` (Lin et al., 2021, "Zen-NAS"), simplified; see `zen_score`.

Both run with BatchNorm on batch statistics (train mode, as in the papers) under
``torch.no_grad()``; the model's modes and BN running statistics are restored afterwards.

    res = zero_shot_search("nb201", {"channels": 8}, proxy="naswot", samples=100, max_flops=5_000_000)
    res["arch"], res["score"], res["flops"]
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm.auto import tqdm

from dfnas.errors import DfnasError
from dfnas.io import derive_seed
from dfnas.spaces import create_space, input_shape_of, resolve_space_cfg, space_class
from dfnas.spaces.arch import build_network, make_record
from dfnas.spaces.base import Arch, arch_valid, fix, sample_distinct, search_space_of
from dfnas.spaces.profile import build_cost_tables
from dfnas.strategies import register_strategy
from dfnas.strategies.base import SearchResult
from dfnas.strategies.context import SearchContext
from dfnas.strategies.random_search import RandomStrategy

_RELUS = (nn.ReLU, nn.ReLU6)


# ----------------------------------------------------------------------------- helpers
def gaussian_input(input_shape: Sequence[int], batch_size: int, seed: int,
                   device: torch.device | str = "cpu") -> Tensor:
    """N(0, 1) batch of shape (batch_size, *input_shape), drawn from its own generator so the
    same seed gives the same batch on any device without touching the global RNG."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn((batch_size, *input_shape), generator=gen).to(device)


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _check_batch(batch_size: int) -> None:
    if batch_size < 2:
        raise DfnasError(f"zero-shot proxies need batch_size >= 2 (BatchNorm batch statistics and a "
                         f"sample kernel need several samples), got {batch_size}; use e.g. 64")


@contextmanager
def _scoring_mode(model: nn.Module) -> Iterator[None]:
    """BatchNorm on batch statistics, everything else in eval mode (no dropout noise); the
    modes and the BN running statistics the forward passes overwrite are restored on exit."""
    modes = {m: m.training for m in model.modules()}
    saved = {m: [b.detach().clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)]
             for m in model.modules()
             if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None}
    try:
        model.eval()
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.train()
        yield
    finally:
        with torch.no_grad():
            for m, bufs in saved.items():
                for dst, src in zip((m.running_mean, m.running_var, m.num_batches_tracked), bufs,
                                    strict=True):
                    dst.copy_(src)
        for m, mode in modes.items():
            m.training = mode


# ----------------------------------------------------------------------------- NASWOT
def _add_codes(kernel: Tensor, code: Tensor) -> None:
    """kernel += C C^T + (1-C)(1-C)^T for one ReLU's codes C (N x units), in float64.

    Uses the identity (1-C)(1-C)^T = U - s_i - s_j + C C^T (s = active units per sample,
    U = units) so only one N x U x N product is needed."""
    c = code.reshape(code.shape[0], -1).to(torch.float64)
    s = c.sum(dim=1)
    kernel += 2.0 * (c @ c.T) - s[:, None] - s[None, :] + float(c.shape[1])


def naswot_kernel(codes: Sequence[Tensor]) -> Tensor:
    """Hamming-similarity kernel of binary activation codes, one (N, ...) tensor per ReLU call:
    K[i, j] = number of units on which samples i and j are both on or both off (N x N,
    float64). Exposed so the kernel the score uses can be checked by hand."""
    if not codes:
        raise ValueError("naswot_kernel needs at least one code tensor")
    n = codes[0].shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=codes[0].device)
    for code in codes:
        _add_codes(kernel, code)
    return kernel


def _naswot_logdet(model: nn.Module, x: Tensor) -> float:
    """NASWOT score of `model` on the batch `x` (see `naswot_score`)."""
    relus = [m for m in model.modules() if isinstance(m, _RELUS)]
    if not relus:
        raise DfnasError(f"naswot needs nn.ReLU/nn.ReLU6 modules to hook, {type(model).__name__} has "
                         "none (functional relu is invisible to hooks); use proxy 'zen' instead")
    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    calls = [0]

    def hook(_m: nn.Module, inputs: tuple[Any, ...]) -> None:
        # a pre-hook sees the pre-activation even for inplace ReLUs
        _add_codes(kernel, inputs[0] > 0)
        calls[0] += 1

    handles = [m.register_forward_pre_hook(hook) for m in relus]
    try:
        with _scoring_mode(model), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if calls[0] == 0:  # ReLUs exist but none is on the computed path
        return -math.inf
    return float(torch.linalg.slogdet(kernel).logabsdet)


def naswot_score(model: nn.Module, input_shape: tuple[int, int, int], batch_size: int = 64,
                 seed: int = 0, x: Tensor | None = None) -> float:
    """NASWOT score (log|det K| of the ReLU-code kernel) on a seeded N(0, 1) batch, or on the
    batch `x` (model input, e.g. normalised images) where one is given.

    Higher is better; a network that maps different inputs to the same ReLU codes (e.g. a
    NAS-Bench-201 cell of only `none` edges) gets a singular K and -inf (or a very low number).
    """
    if x is None:
        _check_batch(batch_size)
        x = gaussian_input(input_shape, batch_size, seed, _device_of(model))
    _check_batch(len(x))
    return _naswot_logdet(model, x.to(_device_of(model)))


# ----------------------------------------------------------------------------- Zen-score
def _safe_log(v: float) -> float:
    if math.isnan(v):
        return math.nan
    return math.log(v) if v > 0 else -math.inf


def zen_score(model: nn.Module, input_shape: tuple[int, int, int], batch_size: int = 64,
              alpha: float = 0.01, repeats: int = 2, seed: int = 0, x: Tensor | None = None) -> float:
    """Zen-score (Lin et al., 2021), simplified: how strongly the features respond to a small
    input perturbation, with the BN rescaling compensated.

    Per draw (x, eps ~ N(0, 1), BN on batch statistics):
    ``log(mean_i ||f(x_i) - f(x_i + alpha eps_i)||_2) + sum_BN 0.5 * log(mean_c var_c)``,
    where var_c is the batch variance of BN input channel c (over N, H, W) in the forward on x;
    the result is averaged over `repeats` draws. Higher is better. A given batch `x` replaces
    the Gaussian x of every draw (eps stays Gaussian).

    Simplifications against the paper: f is the input of the model's last ``nn.Linear`` (the
    globally pooled feature) instead of the pre-pooling feature map, the norm is the per-sample
    L2 norm instead of the summed absolute difference, and the BN term uses the observed batch
    variance instead of the running variance. BN layers whose input is exactly constant
    (zero variance) are skipped: they sit on dead branches, e.g. a NAS-Bench-201 conv fed by a
    `none` edge, which compute zeros whatever the input; counting them would give -inf to a
    network that is otherwise fine. A network whose features do not react to the input at all
    still gets -inf via log(0). Weights stay as built (no Gaussian re-init).
    """
    _check_batch(batch_size if x is None else len(x))
    if repeats < 1:
        raise DfnasError(f"zen_score needs repeats >= 1, got {repeats}")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise DfnasError(f"zen needs a final nn.Linear classifier to read the features from, "
                         f"{type(model).__name__} has none; use proxy 'naswot' instead")
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    feats: list[Tensor] = []
    log_vars: list[float] = []
    record_bn = [False]

    def feat_hook(_m: nn.Module, inputs: tuple[Any, ...]) -> None:
        feats.append(inputs[0].detach().to(torch.float64))

    def bn_hook(_m: nn.Module, inputs: tuple[Any, ...]) -> None:
        if record_bn[0]:
            t = inputs[0].detach().to(torch.float64).transpose(0, 1).reshape(inputs[0].shape[1], -1)
            var = float(t.var(dim=1, unbiased=False).mean())
            if var != 0.0:  # an all-constant input is a dead branch (e.g. after `none`): no signal
                log_vars.append(0.5 * _safe_log(var))

    handles = [linears[-1].register_forward_pre_hook(feat_hook)]
    handles += [m.register_forward_pre_hook(bn_hook) for m in bns]
    device = _device_of(model)
    gen = torch.Generator().manual_seed(int(seed))  # x, eps, x, eps ... from one seeded stream
    shape = (batch_size, *input_shape) if x is None else tuple(x.shape)
    given = None if x is None else x.to(device)
    scores = []
    try:
        with _scoring_mode(model), torch.no_grad():
            for _ in range(repeats):
                x = torch.randn(shape, generator=gen).to(device) if given is None else given
                eps = torch.randn(shape, generator=gen).to(device)
                feats.clear()
                log_vars.clear()
                record_bn[0] = True
                model(x)
                record_bn[0] = False
                model(x + alpha * eps)
                if len(feats) != 2:
                    raise DfnasError(f"zen expects the last nn.Linear of {type(model).__name__} to run once "
                                     f"per forward, it ran {len(feats)} times; use proxy 'naswot'")
                delta = float((feats[0] - feats[1]).flatten(1).norm(dim=1).mean())
                scores.append(_safe_log(delta) + sum(log_vars))
    finally:
        for h in handles:
            h.remove()
    return sum(scores) / len(scores)


PROXIES: dict[str, Callable[..., float]] = {"naswot": naswot_score, "zen": zen_score}


# ----------------------------------------------------------------------------- search
def _finite_or_neg_inf(v: float) -> float:
    return v if math.isfinite(v) else -math.inf


def shrink_to_budget(arch: dict[str, Any], options: dict[str, list[Any]], table: Any, max_flops: int,
                     rng: random.Random, valid: Callable[[dict[str, Any]], bool] | None = None
                     ) -> tuple[dict[str, Any], int]:
    """Random choices set to their cheapest option that keeps the architecture `valid`, one at
    a time in random order, until it fits `max_flops` (uniform samples of a space rarely reach
    the small end a hardware-aware search finds; this keeps the baseline under the same budget)."""
    arch = dict(arch)
    flops = int(round(table.cost(arch)))
    labels = [k for k in options if not isinstance(arch[k], (list, tuple))]  # operations, not wiring
    rng.shuffle(labels)
    for label in labels:
        if flops <= max_flops:
            break
        costs = {o: table.cost({**arch, label: o}) for o in options[label]
                 if valid is None or valid({**arch, label: o})}
        arch[label] = min(costs, key=lambda o: costs[o])  # the current choice is valid: never empty
        flops = int(round(costs[arch[label]]))
    return arch, flops


def zero_shot_search(space: str, space_cfg: dict[str, Any], *, proxy: str = "naswot", samples: int = 50,
                     max_flops: int | None = None, seed: int = 0, batch_size: int = 64,
                     progress: bool = False) -> dict[str, Any]:
    """Score up to `samples` distinct random architectures of `space` (FLOPs <= `max_flops`)
    with a training-free proxy; return the best and every candidate's score.

    Every candidate is built under ``torch.manual_seed(seed)`` and scored on the same seeded
    noise batch, so the ranking reflects the architecture, and the whole result is
    deterministic for a given seed. Non-finite scores rank as -inf.

    Returns {"proxy", "arch", "score", "flops", "params", "candidates" (list of {"arch",
    "score", "flops"}, best first), "samples" (number scored), "max_flops", "seconds"}.
    """
    t0 = time.perf_counter()
    if proxy not in PROXIES:
        raise DfnasError(f"unknown zero-shot proxy '{proxy}'; choose one of {sorted(PROXIES)}")
    if samples < 1:
        raise DfnasError(f"zero-shot search needs samples >= 1, got {samples}; e.g. samples=50")
    _check_batch(batch_size)
    score_fn = PROXIES[proxy]
    cfg = resolve_space_cfg(space, space_cfg)
    shape = input_shape_of(cfg)
    with torch.random.fork_rng(devices=[]):  # its weights are never used; keep the caller's RNG
        supernet = create_space(space, **cfg)
    flops_table, params_table = build_cost_tables(supernet, shape)
    version = space_class(space).version

    options = search_space_of(supernet)
    rng = random.Random(seed)
    smallest: int | None = None

    def within_budget(arch: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal smallest
        flops = int(round(flops_table.cost(arch)))
        smallest = flops if smallest is None else min(smallest, flops)
        if max_flops is not None and flops > max_flops:
            arch, flops = shrink_to_budget(arch, options, flops_table, max_flops, rng,
                                           lambda a: arch_valid(supernet, a))
        return arch if max_flops is None or flops <= max_flops else None

    drawn = sample_distinct(supernet, samples, rng, 50 * samples, within_budget)
    archs = [(a, int(round(flops_table.cost(a)))) for a in drawn]
    if not archs:
        raise DfnasError(f"no architecture of space '{space}' fits max_flops={max_flops} "
                         f"(smallest seen: {smallest} FLOPs); raise max_flops or shrink the space_cfg")

    candidates: list[dict[str, Any]] = []
    bar = tqdm(total=len(archs), desc=f"zero-shot {proxy}", disable=not progress, leave=False,
               dynamic_ncols=True)
    try:
        for arch, flops in archs:
            with torch.random.fork_rng(devices=[]):  # seeded weights without moving the caller's RNG
                torch.manual_seed(seed)
                net = build_network(make_record(space, version, cfg, arch, {}))
            with torch.no_grad():
                score = _finite_or_neg_inf(float(score_fn(net, shape, batch_size=batch_size, seed=seed)))
            candidates.append({"arch": arch, "score": score, "flops": flops})
            bar.update(1)
            bar.set_postfix(best=f"{max(c['score'] for c in candidates):.2f}")
    finally:
        bar.close()
    candidates.sort(key=lambda c: c["score"], reverse=True)  # stable: ties keep draw order
    best = candidates[0]
    return {"proxy": proxy, "arch": best["arch"], "score": best["score"], "flops": best["flops"],
            "params": int(round(params_table.cost(best["arch"]))), "candidates": candidates,
            "samples": len(candidates), "max_flops": max_flops, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- the strategy
@register_strategy
class ZeroShotStrategy(RandomStrategy):
    """`dfnas search --algo zeroshot`: `zeroshot.samples` distinct valid architectures drawn
    uniformly (under `spos.flops_limit`), each cut out of the supernet at its seeded initial
    weights and scored by `zeroshot.proxy` on one batch: the search data's (un-augmented val
    split) or N(0, 1) noise. The best score wins, or with `zeroshot.refine` the best of its top
    k once trained (`finish`). Candidates spread over torchrun processes as in random search."""

    name = "zeroshot"

    @property
    def samples(self) -> int:
        return self.cfg.zeroshot.samples

    def check(self, model: nn.Module, space_name: str = "") -> None:
        super().check(model, space_name)
        if self.cfg.zeroshot.proxy == "naswot" and not any(isinstance(m, _RELUS) for m in model.modules()):
            raise DfnasError(f"zeroshot.proxy=naswot reads nn.ReLU modules and space '{space_name}' has none; "
                             "use --set zeroshot.proxy=zen")

    def prepare(self, model: nn.Module, ctx: SearchContext) -> None:
        zc, s = self.cfg.zeroshot, ctx.data.spec
        self.shape = (s.channels, s.height, s.width)
        if zc.input == "gaussian":
            self.x = gaussian_input(self.shape, zc.batch_size, derive_seed(self.cfg.seed, "zeroshot-input"), ctx.device)
        else:  # SearchData already refused a val split of fewer than 2 images
            self.x = ctx.data.fixed_batch("val", zc.batch_size)

    def score(self, supernet: nn.Module, ctx: SearchContext, arch: Arch, i: int) -> dict[str, float]:
        net = fix(copy.deepcopy(supernet), arch)
        score = PROXIES[self.cfg.zeroshot.proxy](net, self.shape, seed=derive_seed(self.cfg.seed, "zeroshot-draws"),
                                                 x=self.x)
        return {"score": _finite_or_neg_inf(float(score))}

    def rank(self, r: dict) -> float:
        return r["score"]

    def summary(self, best: dict, results: list[dict]) -> dict:
        zc = self.cfg.zeroshot
        return {"score": best["score"], "proxy": zc.proxy, "input": zc.input, "batch": len(self.x),
                "samples": len(results), "all_scores": [r["score"] for r in results],
                "all_archs": [json.loads(r["arch"]) for r in results]}

    def finish(self, model: nn.Module, ctx: SearchContext, results: list[dict], st: dict | None) -> SearchResult:
        """`zeroshot.refine` = k: the proxy ranks the whole space at no cost; its k best are then
        trained briefly on the data (all of it, where the proxy sees a batch), lowest val loss wins."""
        zc = self.cfg.zeroshot
        if zc.refine == 0:
            return super().finish(model, ctx, results, st)
        by_proxy = sorted(results, key=self.rank, reverse=True)[:zc.refine]  # stable: ties keep draw order
        trained = self.score_all(model, ctx, [json.loads(r["arch"]) for r in by_proxy], (st or {}).get("refined", []),
                                 lambda m, c, a, i: self.train_and_score(m, c, a, f"refine-{i}", zc.refine_steps, 0),
                                 lambda r: -r["val_loss"], lambda rs: {"algo": self.name, "results": results,
                                                                      "refined": rs}, "zero-shot refine")
        i = min(range(len(trained)), key=lambda j: trained[j]["val_loss"])  # the first of equals
        return SearchResult(json.loads(by_proxy[i]["arch"]), {
            **self.summary(by_proxy[i], results), "refine": zc.refine, "refine_steps": zc.refine_steps,
            "val_loss": trained[i]["val_loss"], "val_acc": trained[i]["val_acc"], "proxy_rank": i,
            "refined": [{"arch": json.loads(t["arch"]), "proxy_score": p["score"], "val_loss": t["val_loss"],
                         "val_acc": t["val_acc"]} for p, t in zip(by_proxy, trained, strict=True)]})
