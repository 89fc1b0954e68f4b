"""The report of one `dfnas bench`: report.md and a self-contained report.html with plots.

    dfnas bench --out runs/bench   # then open runs/bench/report.html (or report.md)

Plots (report_files/): accuracy per algorithm x data source with error bars, accuracy
vs FLOPs of every trained architecture, and the ranking scatter (synthetic vs real supernet).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dfnas.bench.config import draw_suffix
from dfnas.io import atomic_write_text
from dfnas.report.doc import Doc, mflops, pct
from dfnas.report.plots import pyplot, save_figure

SOURCE_LABEL = {"real": "real data", "synthetic": "dfnas synthetic", "plain": "plain inversion",
                "noise": "teacher-labelled noise"}
# the data-free targets (dfnas.bench.verdicts); n/a where the bench lacks what they need
DATA_FREE_TARGETS = {
    "synthetic_keeps_80%_of_real_minus_noise": "where real beats noise by >= 2 points, synthetic keeps >= 80 % of that margin",
    "best_synthetic_beats_zeroshot_gaussian_by_0.5": "the best search on synthetic data beats zero-shot on Gaussian input by >= 0.5 points",
    "tau_synthetic_vs_truth_ge_real_minus_0.05": "Kendall tau vs the truth: synthetic supernet >= real supernet - 0.05",
}
SCORE_LABEL = {"top1": "top-1", "loss": "the loss"}
COLORS = {"real": "#1f77b4", "synthetic": "#2ca02c", "plain": "#ff7f0e", "noise": "#7f7f7f",
          "zeroshot": "#9467bd", "random": "#8c564b"}


def _pm(f: dict[str, Any]) -> str:
    std = f.get("test_accuracy_std")
    return pct(f["test_accuracy_mean"]) + (f" ± {100 * std:.2f}" if std is not None else "")


def _yes(v: bool | None) -> str:
    return "n/a" if v is None else ("yes" if v else "**no**")


def _floor(values: list[float]) -> float:
    """Lower y limit: below the ordinary results, ignoring collapsed ones (20+ points under the median)."""
    import statistics

    med = statistics.median(values)
    return max(0.0, min(v for v in values if v >= med - 20) - 2)


def plot_bars(res: dict[str, Any], path: Path) -> None:
    """Mean ± std test accuracy: one group per algorithm, one bar per data source (+ baselines)."""
    plt = pyplot()
    algos = list(res["verdicts"])
    sources = [s for s in ("real", "synthetic", "plain", "noise") if any(r["source"] == s for r in res["searches"])]
    kinds = sources + ["zeroshot", "random"]
    width = 0.8 / len(kinds)
    fig, ax = plt.subplots(figsize=(2.6 * len(algos) + 2, 4.2))
    lows = []
    for j, kind in enumerate(kinds):
        means, stds = [], []
        for a in algos:
            if kind == "random":
                r = res["random"][a]
                m, s = (r["mean"] or 0.0), (r["std"] or 0.0)
            else:  # every search repeat x every training seed (the verdicts' numbers)
                f = res["pooled"][a][kind]
                m, s = f["test_accuracy_mean"], f["test_accuracy_std"] or 0.0
            means.append(100 * m)
            stds.append(100 * s)
        lows += [m - s for m, s in zip(means, stds, strict=True)]
        xs = [i + (j - (len(kinds) - 1) / 2) * width for i in range(len(algos))]
        label = {"zeroshot": "zero-shot proxy", "random": "random archs (mean ± spread)"}.get(kind, SOURCE_LABEL.get(kind))
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=label, color=COLORS[kind])
        floor = _floor(lows)
        for x, m in zip(xs, means, strict=True):
            if m < floor:  # a collapsed architecture: keep the axis readable, print its value
                ax.annotate(f"{m:.1f}%", (x, floor), xytext=(0, 3), textcoords="offset points", ha="center",
                            fontsize=7, rotation=90, color=COLORS[kind])
    ax.set_xticks(range(len(algos)), [f"{a}\n({res['random'][a]['space']} space)" for a in algos])
    ax.set_ylabel("real test accuracy (%)")
    ax.set_ylim(_floor(lows), 100)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: never over a bar
    ax.set_title("architectures trained from scratch on real data", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_flops(res: dict[str, Any], path: Path) -> None:
    """Accuracy vs FLOPs of every trained architecture, one marker per algorithm/space."""
    plt = pyplot()
    markers = {"darts": "o", "proxyless": "s", "spos": "^"}
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for a in res["verdicts"]:
        mk = markers.get(a, "o")
        for r in res["random"][a]["archs"]:
            f = r["final"]
            ax.errorbar(f["flops"] / 1e6, 100 * f["test_accuracy_mean"], yerr=100 * (f["test_accuracy_std"] or 0),
                        fmt=mk, color=COLORS["random"], alpha=0.5, ms=5)
        for r in res["searches"]:
            if r["algo"] == a:
                f = r["final"]
                ax.errorbar(f["flops"] / 1e6, 100 * f["test_accuracy_mean"], yerr=100 * (f["test_accuracy_std"] or 0),
                            fmt=mk, color=COLORS[r["source"]], ms=7)
        for z in res["zeroshot"][a]["repeats"]:
            f = z["final"]
            ax.errorbar(f["flops"] / 1e6, 100 * f["test_accuracy_mean"], yerr=100 * (f["test_accuracy_std"] or 0),
                        fmt=mk, color=COLORS["zeroshot"], ms=7)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=lab) for lab, c in
               [*((SOURCE_LABEL[s], COLORS[s]) for s in SOURCE_LABEL), ("zero-shot proxy", COLORS["zeroshot"]),
                ("random", COLORS["random"])]]
    handles += [plt.Line2D([], [], color="k", marker=m, ls="", label=f"{a} space") for a, m in markers.items()
                if a in res["verdicts"]]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    accs = [100 * f["test_accuracy_mean"] for f in _all_finals(res)]
    floor = _floor(accs)
    ax.set_ylim(floor, 100)
    low = [f for f in _all_finals(res) if 100 * f["test_accuracy_mean"] < floor]
    if low:
        ax.text(0.01, 0.02, f"{len(low)} collapsed architecture(s) below the axis: "
                + ", ".join(f"{100 * f['test_accuracy_mean']:.1f}%" for f in low), transform=ax.transAxes, fontsize=7)
    ax.set_xlabel("MFLOPs (log)")
    ax.set_ylabel("real test accuracy (%)")
    ax.set_title("accuracy vs FLOPs (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _all_finals(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = [r["final"] for r in res["searches"]] + [z["final"] for zs in res["zeroshot"].values() for z in zs["repeats"]]
    return out + [a["final"] for r in res["random"].values() for a in r["archs"]]


def _ranks(v: list[float]) -> list[float]:
    """1 = highest score (scores of different supernets are on different scales; ranks are not)."""
    from scipy.stats import rankdata  # the ranking check that made these scores needs scipy too

    return [float(r) for r in rankdata([-x for x in v], method="ordinal")]


def plot_ranking(rk: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    s = {k: _ranks(v) for k, v in rk["scores"].items()}
    fig, axes = plt.subplots(1, 2 if rk.get("scratch") else 1, figsize=(9 if rk.get("scratch") else 4.6, 4.0),
                             squeeze=False)
    ax = axes[0][0]
    ax.scatter(s["real"], s["synthetic"], s=18, color=COLORS["synthetic"], label="synthetic-data supernet")
    if "real_reseeded" in s:
        ax.scatter(s["real"], s["real_reseeded"], s=18, marker="x", color="0.5", label="real data, another seed")
        ax.legend(fontsize=7)
    score = SCORE_LABEL[rk["score"]]
    ax.set_xlabel(f"rank by the real-data supernet (by {score}, 1 = best)")
    ax.set_ylabel("rank by the other supernet (own val)")
    tau = rk.get("tau_synthetic_vs_real")
    ax.set_title(f"{len(s['real'])} architectures, Kendall tau {tau:.2f}" if tau is not None else "Kendall tau n/a",
                 fontsize=9)
    if rk.get("scratch"):
        k = len(rk["scratch"])
        ax2 = axes[0][1]
        ax2.scatter([100 * v for v in rk["scratch"]], _ranks(rk["scores"]["real"][:k]), label="real supernet",
                    color=COLORS["real"])
        ax2.scatter([100 * v for v in rk["scratch"]], _ranks(rk["scores"]["synthetic"][:k]),
                    label="synthetic supernet", color=COLORS["synthetic"], marker="x")
        ax2.set_xlabel("from-scratch real test accuracy (%)")
        ax2.set_ylabel(f"rank among these {k} by the supernet (1 = best)")
        ax2.invert_yaxis()
        ax2.legend(fontsize=7)
        ax2.set_title(f"{k} random architectures trained from scratch", fontsize=9)
    ax.invert_xaxis()
    ax.invert_yaxis()
    fig.tight_layout()
    save_figure(fig, path)


def write_report(out: Path, res: dict[str, Any]) -> None:
    files = out / "report_files"
    files.mkdir(exist_ok=True)
    plot_bars(res, files / "accuracy.png")
    plot_flops(res, files / "flops.png")
    rk = res.get("ranking")
    if rk:
        plot_ranking(rk, files / "ranking.png")
    cfg = res["config"]
    d = Doc(out)
    d.h(1, "dfnas bench: does NAS on synthetic data match NAS on real data?")
    t = res["teacher"]
    per_class = cfg["final_per_class"]
    nb201 = cfg.get("score") == "nb201"
    scored = ("Every architecture is scored by its NAS-Bench-201 ground truth: the cell trained 200 epochs on the "
              "full real dataset (a benchmark lookup, not trained here)." if nb201 else
              f"Every architecture is trained from scratch on {'all' if per_class is None else f'{per_class} per class of'} "
              f"the real train split (`{cfg['train_data']}`) with seeds {cfg['seeds']} ({cfg['final']['epochs']} epochs) "
              f"and tested on the real test split (`{cfg['test_data']}`).")
    d.p(f"{res['date']}, dfnas {res['dfnas']}, {res['machine']['cpus']} CPU(s), torch {res['machine']['torch']}; "
        f"teacher {cfg['teacher']['ref']} ({pct(t['test_accuracy'])} on the real test split). {scored}")
    d.code(res["command"], "sh")

    d.h(2, "Headline")
    tm = res["targets_met"]
    d.table(["target", "met"], [
        ["found on synthetic data within one std of (or better than) real data, every algorithm",
         _yes(tm["synthetic_within_1std_of_real"])],
        ["synthetic clearly better than teacher-labelled noise", _yes(tm["clearly_better_than_noise"])],
        ["synthetic clearly better than the zero-shot proxy", _yes(tm["clearly_better_than_zeroshot"])],
        ["Kendall tau (synthetic vs real supernet) >= 0.7", _yes(tm["kendall_tau_ge_0.7"])],
        *[[label, _yes(tm[key])] for key, label in DATA_FREE_TARGETS.items() if key in tm],
    ])
    reps = cfg["search_repeats"]
    draws = cfg.get("synth_draws", 1)
    d.p("'Clearly better' = the mean is ahead by more than the two standard deviations together. "
        + (f"Every search and the zero-shot baseline ran {reps} times (search seeds "
           f"{cfg['seed']}..{cfg['seed'] + reps - 1}); a verdict pools every found architecture's accuracies over "
           f"all training seeds ({reps} x {len(cfg['seeds'])} per cell), so it compares search procedures, not "
           "single draws." + (f" The synthetic and plain sets were each synthesized {draws} times (synthesis "
                              f"seeds synth.seed + 0..{draws - 1}); search repeat r searched on draw r mod {draws}, so "
                              "the verdicts pool sets too." if draws > 1 else " All searches on synthetic data read one synthesized set (one draw).")
           if reps > 1 else "Each search ran once (search seed "
           f"{cfg['seed']}): a verdict compares single draws of the searches."))
    d.img("report_files/accuracy.png", "real test accuracy per algorithm and search data")

    d.h(2, "Architectures found per algorithm and data source")
    rows = []
    for r in res["searches"]:
        rows.append([r["algo"], r["space"], SOURCE_LABEL[r["source"]], str(r["search_seed"]),
                     _pm(r["final"]), mflops(r["flops"]), f"{r['params'] / 1e3:.1f} k" if r.get("params") else "n/a",
                     f"{r['search_seconds']:.0f}" if r.get("search_seconds") is not None else "n/a"])
    for a, zs in res["zeroshot"].items():
        for z in zs["repeats"]:
            rows.append([a, z["space"], f"zero-shot {z['proxy']} (no data, <= {mflops(z['max_flops'])})",
                         str(cfg["seed"] + z["repeat"]), _pm(z["final"]), mflops(z["flops"]),
                         f"{z['params'] / 1e3:.1f} k", f"{z['seconds']:.0f}"])
    d.table(["algorithm", "space", "search data", "search seed", "real test acc (mean ± std over training seeds)",
             "FLOPs", "params", "search s"], rows)
    _nb201_cells(d, res["searches"])
    if reps > 1:
        d.h(3, f"Pooled over the {reps} searches")
        kinds = [k for k in (*SOURCE_LABEL, "zeroshot") if any(k in p for p in res["pooled"].values())]
        d.table(["algorithm", *[SOURCE_LABEL.get(k, "zero-shot") for k in kinds]],
                [[a, *[_pm(p[k]) + " (" + ", ".join(pct(x) for x in p[k]["per_search"]) + ")" for k in kinds]]
                 for a, p in res["pooled"].items()])
        d.p("Mean ± std over every search's architecture and every training seed; in brackets, each search's mean.")
    if nb201:
        _published(d, res)
    d.h(3, "Verdicts")
    vrows = []
    for a, v in res["verdicts"].items():
        vrows.append([a, f"{100 * v['synthetic_minus_real']:+.2f}", _yes(v["synthetic_within_1std_of_real"]),
                      f"{100 * v.get('synthetic_minus_plain', float('nan')):+.2f}",
                      f"{100 * v.get('synthetic_minus_noise', float('nan')):+.2f} ({_yes(v.get('clearly_better_than_noise'))})",
                      f"{100 * v['synthetic_minus_zeroshot']:+.2f} ({_yes(v['clearly_better_than_zeroshot'])})",
                      "n/a" if v.get("margin_kept") is None else f"{100 * v['margin_kept']:.0f} %"])
    d.table(["algorithm", "synthetic − real (pts)", "within 1 std", "− plain", "− noise (clearly?)",
             "− zero-shot (clearly?)", "share of real − noise kept (real ahead by >= 2 pts)"], vrows)
    refs = {a: v["reference_real"] for a, v in res["verdicts"].items() if v.get("reference_real")}
    if refs:
        d.p("The same comparisons for the architectures found on **real** data: where real data is not clearly "
            "better either, the task cannot tell search data apart and a 'no' above says nothing against synthetic data.")
        d.table(["algorithm", "real − noise (clearly?)", "real − zero-shot (clearly?)"],
                [[a, *[f"{100 * r[f'real_minus_{o}']:+.2f} ({_yes(r[f'clearly_better_than_{o}'])})"
                       if f"real_minus_{o}" in r else "n/a" for o in ("noise", "zeroshot")]] for a, r in refs.items()])

    d.h(2, "Does the task separate architectures?")
    d.table(["space", "random archs", "mean", "std between archs", "best − worst", "mean std over seeds"],
            [[r["space"], len(r["accuracies"]), pct(r["mean"]), pct(r["std"]), pct(r["best_minus_worst"]),
              pct(r["mean_seed_std"])] for r in res["random"].values()])
    d.p("When the spread between architectures is not larger than the seed-to-seed spread, a space cannot "
        "tell search data apart on this task; read its rows with that in mind.")
    d.img("report_files/flops.png", "accuracy vs FLOPs of every trained architecture")

    if rk:
        d.h(2, "Ranking check")
        d.p(f"Two supernets of the {rk['space']} space (the {rk['algo']} recipe, trained single-path for "
            f"{rk['steps']} steps each with the same initial weights and paths), one on real data and one on the "
            f"dfnas synthetic set; {len(rk['archs'])} architectures scored by each (BN recalibration + "
            f"{SCORE_LABEL[rk['score']]} on its own val split)."
            + (" A third supernet, on real data with another seed, shows how well real data agrees with itself: "
               "the ceiling for synthetic vs real (one draw of it: it moves with the seed and the architectures "
               "scored). The synthetic and real supernets share initial weights and paths, which alone make "
               "rankings agree; the synthetic supernet against the other-seed real one differs in seed as the "
               "ceiling does, so that pair is the like-for-like comparison with it."
               if "tau_real_vs_real_reseeded" in rk else ""))
        rrows = [["synthetic vs real supernet", _tau(rk.get("tau_synthetic_vs_real"))],
                 ["synthetic weights scored on real val vs real supernet",
                  _tau(rk.get("tau_synthetic_weights_real_val_vs_real"))]]
        if "tau_real_vs_real_reseeded" in rk:
            rrows += [["real supernet vs real supernet with another seed (the ceiling)", _tau(rk["tau_real_vs_real_reseeded"])],
                      ["synthetic supernet vs that other-seed real supernet (same footing as the ceiling)",
                       _tau(rk["tau_synthetic_vs_real_reseeded"])]]
        if "tau_noise_vs_real" in rk:
            rrows.append(["teacher-labelled noise supernet vs real supernet", _tau(rk["tau_noise_vs_real"])])
        if rk.get("scratch"):
            truth = "NAS-Bench-201 truth" if nb201 else "from-scratch"
            rrows += [[f"{name.replace('_', ' ')} supernet vs {truth} ({len(rk['scratch'])} random archs)",
                       _tau(rk.get(f"tau_scratch_vs_{name}_supernet"))]
                      for name in ("real", "synthetic", "noise", "real_reseeded") if f"tau_scratch_vs_{name}_supernet" in rk]
        o = rk["other_score"]
        rrows.append([f"with {SCORE_LABEL[o['score']]} as the score instead: synthetic vs real"
                      + (" / the ceiling" if "tau_real_vs_real_reseeded" in o else ""),
                      _tau(o.get("tau_synthetic_vs_real"))
                      + (f" / {_tau(o['tau_real_vs_real_reseeded'])}" if "tau_real_vs_real_reseeded" in o else "")])
        d.table(["Kendall tau", "value"], rrows)
        d.img("report_files/ranking.png", "ranking scatter")

    d.h(2, "Search data")
    drows = []
    sets = _data_sets(res["data"])
    for key, label in sets:
        rounds = res["data"][key]["report"].get("rounds", [])
        last = rounds[-1] if rounds else {}
        drows.append([label, res["data"][key]["report"].get("images"), len(rounds),
                      f"{last.get('teacher_agreement', float('nan')):.3f}", f"{last.get('mean_max_prob', float('nan')):.3f}"])
    if "noise" in res["data"]:
        n = res["data"]["noise"]
        drows.append([SOURCE_LABEL["noise"], n["images"], "-", f"classes {n['per_class']}", f"{n['mean_max_prob']:.3f}"])
    d.table(["source", "images", "rounds", "teacher agreement (last round)", "mean max prob"], drows)
    for key, label in sets:
        for r in res["data"][key]["report"].get("rounds", []):
            d.img(f"data/{key}/previews/round-{r['round']:02d}.png", f"{label}, round {r['round']}")

    d.h(2, "Config")
    import yaml

    d.code(yaml.safe_dump(cfg, sort_keys=False), "yaml")
    d.p(f"Machine: {json.dumps(res['machine'])}")
    atomic_write_text(out / "report.md", d.markdown())
    atomic_write_text(out / "report.html", d.html("dfnas bench report"))


def _tau(v: float | None) -> str:
    return "n/a (constant ranking)" if v is None else f"{v:.3f}"


def format_summary(res: dict[str, Any], out: Path) -> str:
    lines = [f"dfnas bench: done ({out})"]
    for r in res["searches"]:
        lines.append(f"  {r['algo']:<9} {SOURCE_LABEL[r['source']]:<24} {_pm(r['final']):>18}  {mflops(r['flops'])}"
                     + (f"  (search seed {r['search_seed']})" if r.get("repeat") else ""))
    for a, zs in res["zeroshot"].items():
        for z in zs["repeats"]:
            lines.append(f"  {a:<9} {'zero-shot ' + z['proxy']:<24} {_pm(z['final']):>18}  {mflops(z['flops'])}")
    if res["config"]["search_repeats"] > 1:
        for a, p in res["pooled"].items():
            lines.append(f"  {a:<9} pooled: " + ", ".join(f"{SOURCE_LABEL.get(k, 'zero-shot')} {_pm(f)}" for k, f in p.items()))
    for a, r in res["random"].items():
        lines.append(f"  {a:<9} random ({r['space']}) mean {pct(r['mean'])}, spread {pct(r['best_minus_worst'])}")
    rk = res.get("ranking")
    if rk:
        lines.append(f"  ranking   Kendall tau synthetic vs real supernet: {_tau(rk.get('tau_synthetic_vs_real'))}"
                     + (f" (real vs reseeded real: {_tau(rk['tau_real_vs_real_reseeded'])})"
                        if "tau_real_vs_real_reseeded" in rk else ""))
    lines.append(f"  targets   {json.dumps(res['targets_met'])}")
    lines.append(f"  report    {out / 'report.md'} (and report.html); numbers in {out / 'results.json'}")
    return "\n".join(lines)


def _nb201_cells(d: Doc, searches: list[dict[str, Any]]) -> None:
    """The derived NB201 cells and their 3x3 depth: what tells a deep cell from a shallow one."""
    from dfnas.spaces.nb201 import nb201_depth, to_nb201_string

    rows = [[r["algo"], SOURCE_LABEL[r["source"]], str(r["search_seed"]), f"`{to_nb201_string(r['choices'])}`",
             str(nb201_depth(r["choices"])), _pm(r["final"])] for r in searches if r["space"] == "nb201"]
    if not rows:
        return
    d.h(3, "NB201 cells found")
    d.p("3×3 depth: how many 3×3 convs/pools the deepest path from the cell input to its output "
        "stacks (`dfnas.spaces.nb201.nb201_depth`); `benchmarks/darts_cells.py` measures it per search data.")
    d.table(["algorithm", "search data", "search seed", "cell", "3×3 depth", "real test acc"], rows)


def _data_sets(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(key in results' data, label) of every synthesized set: each source, then its further draws."""
    out = []
    for name in ("synthetic", "plain"):
        d = 0
        while (key := name + draw_suffix(d)) in data:
            out.append((key, SOURCE_LABEL[name] + (f" (draw {d})" if d else "")))
            d += 1
    return out


# real-data searches on the same table, as published (NAS-Bench-201 paper, Dong & Yang 2020: DARTS-V1,
# RSPS, GDAS, REA; NASWOT: Mellor et al. 2021); the best cell of the table
PUBLISHED_NB201_C10 = [("DARTS (first order)", 54.30), ("RSPS (random-sampling one-shot)", 87.66),
                       ("GDAS", 93.61), ("NASWOT (N = 100)", 92.96), ("REA", 93.92), ("optimum of the table", 94.37)]


def _published(d: Doc, res: dict[str, Any]) -> None:
    """Ours next to the published real-data searches on the same table (CIFAR-10 test accuracy)."""
    d.h(3, "Next to the published NAS-Bench-201 results (CIFAR-10, real data, full search budget)")
    rows = [[name, f"{v:.2f}"] for name, v in PUBLISHED_NB201_C10]
    for a, p in res["pooled"].items():
        for src in ("real", "synthetic"):
            if src in p:
                rows.append([f"dfnas {a} on {SOURCE_LABEL[src]} (this run, CPU proxy regime)", _pm(p[src])])
        if "zeroshot" in p:
            rows.append([f"dfnas zero-shot baseline, Gaussian input ({a}'s budget)", _pm(p["zeroshot"])])
    d.table(["search", "NB201 CIFAR-10 test accuracy (%)"], rows)
