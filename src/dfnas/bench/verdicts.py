"""The bench's verdicts: the statistics that turn finished jobs into pass/fail answers.

Kept apart from the jobs so the rules a reader must trust are in one short file: every
architecture found on one data source is pooled with every training seed (`pool`), one
source beats another only when the 1-sigma bands do not touch (`clearly_better`), and
synthetic data passes against real data when its mean is within one std of real's.
`summarize` builds results.json's rows, spreads, pooled numbers, verdicts and targets from
the job results; nothing here trains or loads anything.
"""

from __future__ import annotations

import statistics
from typing import Any

from dfnas.bench.config import BenchConfig
from dfnas.bench.config import repeat_suffix as _rep


def finite(x: float) -> float | None:
    """`x`, or None for nan and infinities (JSON has neither)."""
    return x if x == x and abs(x) != float("inf") else None


def finite_taus(d: dict[str, Any]) -> dict[str, Any]:
    """`d` with every tau_* made JSON-safe (nan -> None)."""
    return {k: finite(v) if k.startswith("tau_") else v for k, v in d.items()}


def _ms(f: dict[str, Any]) -> tuple[float, float]:
    return float(f["test_accuracy_mean"]), float(f["test_accuracy_std"] or 0.0)


def pool(finals: list[dict[str, Any]]) -> dict[str, Any]:
    """Every search's architecture, every training seed: one sample of 'search on this data,
    then train' (mean ± std over all of them; with one search, that architecture's own)."""
    accs = [a for f in finals for a in f["per_seed"]]
    return {"test_accuracy_mean": statistics.fmean(accs), "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "searches": len(finals), "per_search": [f["test_accuracy_mean"] for f in finals], "n": len(accs)}


def clearly_better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Mean ahead by more than the two standard deviations together (1-sigma bands do not touch)."""
    (ma, sa), (mb, sb) = _ms(a), _ms(b)
    return ma - mb > sa + sb


def add_scratch_taus(ranking: dict[str, Any], scratch: list[float]) -> None:
    """Record the from-scratch accuracies (or NAS-Bench-201 truth) of the first ranked
    architectures and, with two or more, the Kendall tau of each supernet's scores against them."""
    ranking["scratch"] = scratch
    k = len(scratch)
    if k >= 2:
        from dfnas.bench.ranking import tau

        for name, sc in ranking["scores"].items():
            if name != "synthetic_on_real_val":
                ranking[f"tau_scratch_vs_{name}_supernet"] = finite(tau(scratch, sc[:k]))


def summarize(cfg: BenchConfig, teacher: dict[str, Any], data: dict[str, Any], searches: list[dict[str, Any]],
              zeroshot: dict[str, Any], random_sets: dict[str, list[dict[str, Any]]],
              finals: dict[str, dict[str, Any]], ranking: dict[str, Any] | None) -> dict[str, Any]:
    """results.json's measured part: rows, random spreads, pooled numbers, verdicts, targets."""
    rows = []
    for s in searches:
        rows.append({**{k: s[k] for k in ("algo", "source", "repeat", "space", "choices", "flops", "params",
                                          "search_seconds")},
                     "search_seed": s.get("search_seed", cfg.seed + s["repeat"]),
                     "final": finals[f"{s['algo']}-{s['source']}{_rep(s['repeat'])}"]})
    spread = {}
    for algo, rs in random_sets.items():
        accs = [finals[f"random-{algo}-{i}"]["test_accuracy_mean"] for i in range(len(rs))]
        seed_std = [finals[f"random-{algo}-{i}"]["test_accuracy_std"] or 0.0 for i in range(len(rs))]
        spread[algo] = {"space": rs[0]["space"] if rs else None, "accuracies": accs,
                        "mean": statistics.fmean(accs) if accs else None,
                        "std": statistics.stdev(accs) if len(accs) > 1 else None,
                        "best_minus_worst": (max(accs) - min(accs)) if accs else None,
                        "mean_seed_std": statistics.fmean(seed_std) if seed_std else None,
                        "archs": [{"choices": r["choices"], "final": finals[f"random-{algo}-{i}"]}
                                  for i, r in enumerate(rs)]}
    zfinal = {a: [finals[f"zeroshot-{a}{_rep(r)}"] for r in range(len(zs))] for a, zs in zeroshot.items()}
    pooled: dict[str, dict[str, Any]] = {}
    verdicts = {}
    for algo in cfg.algos:
        by = {src: pool([r["final"] for r in rows if r["algo"] == algo and r["source"] == src]) for src in cfg.sources}
        by["zeroshot"] = pool(zfinal[algo])
        pooled[algo] = by
        verdicts[algo] = _verdict(by, spread[algo]["mean"])
    # zeroshot[algo]: the first repeat's record (+ its final); every repeat under "repeats"
    zs = {a: {**z[0], "final": zfinal[a][0],
              "repeats": [{**zr, "final": f} for zr, f in zip(z, zfinal[a], strict=True)]} for a, z in zeroshot.items()}
    return {"teacher": teacher, "data": data, "searches": rows, "zeroshot": zs, "pooled": pooled,
            "random": spread, "ranking": _ranking_public(ranking), "verdicts": verdicts,
            "targets_met": {
                "synthetic_within_1std_of_real": all(v["synthetic_within_1std_of_real"] for v in verdicts.values()),
                "clearly_better_than_noise": all(v.get("clearly_better_than_noise", True) for v in verdicts.values()),
                "clearly_better_than_zeroshot": all(v["clearly_better_than_zeroshot"] for v in verdicts.values()),
                "kendall_tau_ge_0.7": bool(ranking and (ranking.get("tau_synthetic_vs_real") or -1) >= 0.7),
                **_data_free_targets(verdicts, pooled, ranking),
            }}


MARGIN = 0.02  # real must beat noise by this much before "synthetic keeps the margin" is asked
KEPT = 0.8  # the share of that margin synthetic data must keep
ZS_LEAD = 0.005  # the best data-free search must beat zero-shot on Gaussian input by this much
TAU_SLACK = 0.05  # tau(synthetic supernet, truth) may trail tau(real supernet, truth) by this much


def _data_free_targets(verdicts: dict[str, Any], pooled: dict[str, dict[str, Any]],
                       ranking: dict[str, Any] | None) -> dict[str, Any]:
    """The CIFAR-10 bench's targets (issue 25), asked of any bench: does data matter and does
    synthetic data keep it, does the best search on synthetic data beat the data-free zero-shot
    proxy, and does a synthetic supernet rank architectures by the truth as well as a real one."""
    kept = [v["margin_kept"] for v in verdicts.values() if v.get("margin_kept") is not None]
    best = max((p["synthetic"]["test_accuracy_mean"] for p in pooled.values() if "synthetic" in p), default=None)
    gauss = max((p["zeroshot"]["test_accuracy_mean"] for p in pooled.values()), default=None)
    out: dict[str, Any] = {
        f"synthetic_keeps_{KEPT:.0%}_of_real_minus_noise": all(k >= KEPT for k in kept) if kept else None,
        f"best_synthetic_beats_zeroshot_gaussian_by_{100 * ZS_LEAD:.1f}": (
            None if best is None or gauss is None else best - gauss >= ZS_LEAD),
    }
    ts, tr = ((ranking or {}).get(f"tau_scratch_vs_{n}_supernet") for n in ("synthetic", "real"))
    out[f"tau_synthetic_vs_truth_ge_real_minus_{TAU_SLACK}"] = None if ts is None or tr is None else ts >= tr - TAU_SLACK
    return out


def _verdict(by: dict[str, dict[str, Any]], random_mean: float | None) -> dict[str, Any]:
    """One algorithm's verdict from its pooled numbers per source (and zero-shot)."""
    syn, real = by["synthetic"], by["real"]
    (ms, _), (mr, sr) = _ms(syn), _ms(real)
    v: dict[str, Any] = {"synthetic_within_1std_of_real": ms >= mr - sr, "synthetic_minus_real": ms - mr}
    for other in ("plain", "noise"):
        if other in by:
            v[f"clearly_better_than_{other}"] = clearly_better(syn, by[other])
            v[f"synthetic_minus_{other}"] = ms - _ms(by[other])[0]
    if "noise" in by:  # where data matters (real ahead of noise by MARGIN), the share synthetic keeps
        gap = mr - _ms(by["noise"])[0]
        v["margin_kept"] = (ms - _ms(by["noise"])[0]) / gap if gap >= MARGIN else None
    z = by["zeroshot"]
    v["clearly_better_than_zeroshot"] = clearly_better(syn, z)
    v["synthetic_minus_zeroshot"] = ms - _ms(z)[0]
    # the same questions asked of real data: a target real data cannot meet says the task can't tell
    v["reference_real"] = {f"clearly_better_than_{o}": clearly_better(real, by[o]) for o in ("noise", "zeroshot") if o in by}
    v["reference_real"].update({f"real_minus_{o}": mr - _ms(by[o])[0] for o in ("noise", "zeroshot") if o in by})
    if random_mean is not None:
        v["synthetic_minus_random_mean"] = ms - random_mean
    return v


def _ranking_public(r: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if r is None else {k: v for k, v in r.items() if k != "space_cfg"}
