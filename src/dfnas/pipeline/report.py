"""The report of one `dfnas run`: report.md, a self-contained report.html, and the printed summary.

    dfnas run --out runs/demo   # then open runs/demo/report.html (or report.md next to its images)

Both files are rendered from one list of blocks, so they always say the same; the Markdown
references images by relative path, the HTML embeds them (base64) so it can be mailed alone.
Written atomically: a reader never sees half a report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dfnas.config import dump_yaml
from dfnas.io import atomic_write_text
from dfnas.pipeline.config import RunConfig
from dfnas.report.doc import Doc, kparams, mflops, num, pct, ratio
from dfnas.report.plots import line_panels


def plot_search_curves(log: Path, path: Path, algo: str) -> bool:
    """Loss / score per epoch (or per sample, per generation) from search.log."""
    if not log.is_file():
        return False
    epochs: dict[int, dict[str, float]] = {}
    gens: dict[int, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        nums = {k: float(v) for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and k not in ("time", "epoch", "generation")}
        if "generation" in rec:
            gens[int(rec["generation"])] = nums
        elif "epoch" in rec:
            epochs[int(rec["epoch"])] = nums  # a resumed run may repeat an epoch: last wins
    xlabel = "sample" if algo == "random" else "epoch"
    series: list[tuple[str, str, list[float], list[float]]] = []
    for src, x in ((epochs, xlabel), (gens, "generation")):
        keys = sorted({k for v in src.values() for k in v})
        for k in keys:
            xs = [float(i) for i in sorted(src) if k in src[i]]
            ys = [src[int(i)][k] for i in xs]
            panel = "loss" if "loss" in k else ("cost" if "cost" in k or "flops" in k else "score / accuracy")
            series.append((f"{panel} per {x}", k, xs, ys))
    return line_panels(path, series, f"{algo} search curves")


def plot_train_curves(train_dir: Path, path: Path) -> bool:
    """Distillation loss and real test accuracy per epoch, every seed."""
    series: list[tuple[str, str, list[float], list[float]]] = []
    for res in sorted(train_dir.glob("seed*/result.json")):
        hist = json.loads(res.read_text()).get("history", [])
        xs = [float(h["epoch"]) for h in hist]
        name = res.parent.name
        series.append(("training loss", name, xs, [h["loss"] for h in hist]))
        if hist and "test_accuracy" in hist[0]:
            series.append(("test accuracy (real data)", name, xs, [h["test_accuracy"] for h in hist]))
    return line_panels(path, series, "final training (distillation on the synthetic set)")


# ----------------------------------------------------------------------------- summary


def summarize(cfg: RunConfig, out: Path, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The numbers the printed summary and summary.json carry."""
    t = results["teacher"]["result"]
    train = results["train"]["result"]
    search = results["search"]["result"]
    return {
        "out": str(out),
        "teacher": {"name": cfg.teacher.ref, "test_accuracy": t.get("test_accuracy"), "flops": t.get("flops"),
                    "params": t.get("params"), "test_data": t.get("test_data")},
        "network": {"algo": cfg.search.algo, "space": cfg.search.space, "choices": search.get("choices"),
                    "test_accuracy": train.get("test_accuracy_mean"), "test_accuracy_std": train.get("test_accuracy_std"),
                    "seeds": train.get("seeds"), "flops": train.get("flops"), "params": train.get("params")},
        "images": results["synth"]["result"].get("images"),
        "exports": [f for f in results["export"]["result"]["files"] if f.get("out")],
        "seconds": {k: v["seconds"] for k, v in results.items()},
        "skipped": [k for k, v in results.items() if v.get("skipped")],
        "report": str(out / "report.md"),
        "report_html": str(out / "report.html"),
    }


def format_summary(s: dict[str, Any]) -> str:
    t, n = s["teacher"], s["network"]
    acc = pct(n["test_accuracy"])
    if n.get("seeds") and len(n["seeds"]) > 1 and n.get("test_accuracy_std") is not None:
        acc += f" +- {100 * n['test_accuracy_std']:.2f} ({len(n['seeds'])} seeds)"
    on = f" on {t['test_data']}" if t.get("test_data") else " (no real test data given)"
    stages = " | ".join(f"{k} {v:.1f} s{' (earlier run)' if k in s['skipped'] else ''}" for k, v in s["seconds"].items())
    total = sum(v for k, v in s["seconds"].items() if k not in s["skipped"])
    lines = [
        f"dfnas run: done ({s['out']})",
        f"  teacher   {t['name']}: test accuracy {pct(t['test_accuracy'])}{on}; {mflops(t['flops'])}, {kparams(t['params'])} params",
        f"  network   {n['algo']} on {n['space']}, distilled on {s['images']} synthetic images: test accuracy {acc}; "
        f"{mflops(n['flops'])} ({ratio(n['flops'], t['flops'])} of the teacher), "
        f"{kparams(n['params'])} params ({ratio(n['params'], t['params'])})",
        f"  time      {stages}; this call {total:.1f} s",
        f"  exported  {', '.join(f['out'] for f in s['exports']) or 'nothing'}",
        f"  report    {s['report']} (and {Path(s['report_html']).name})",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- report


def write_report(cfg: RunConfig, out: Path, results: dict[str, dict[str, Any]], summary: dict[str, Any],
                 command: str) -> None:
    files = out / "report_files"
    files.mkdir(exist_ok=True)
    has_search_curves = plot_search_curves(out / "search" / "search.log", files / "search_curves.png", cfg.search.algo)
    has_train_curves = plot_train_curves(out / "train", files / "train_curves.png")

    d = Doc(out)
    t, n = summary["teacher"], summary["network"]
    d.h(1, "dfnas run report")
    d.p(f"Data-free NAS: teacher {t['name']} -> {summary['images']} synthetic images -> {n['algo']} search on the "
        f"{n['space']} space -> distillation of the found network on the synthetic images -> evaluation -> export.")
    d.h(2, "Final metrics")
    rows = [["teacher", pct(t["test_accuracy"]), mflops(t["flops"]), kparams(t["params"]), "1.00x", "1.00x"],
            ["found network", pct(n["test_accuracy"]) + (f" +- {100 * n['test_accuracy_std']:.2f}" if n.get("test_accuracy_std") else ""),
             mflops(n["flops"]), kparams(n["params"]), ratio(n["flops"], t["flops"]), ratio(n["params"], t["params"])]]
    d.table(["model", "test accuracy", "FLOPs", "params", "FLOPs vs teacher", "params vs teacher"], rows)
    d.p(f"Test data: {t['test_data'] or 'none (give test_data in the config to measure accuracy)'}; "
        f"no real image was used for synthesis, search or training.")
    d.h(3, "Time per stage")
    d.table(["stage", "seconds", "status"],
            [[k, f"{v:.1f}", "done in an earlier call" if k in summary["skipped"] else "ran in this call"]
             for k, v in summary["seconds"].items()])

    synth = results["synth"]["result"]
    d.h(2, "Synthesis")
    d.p(f"{synth.get('images')} images, {cfg.synth.rounds} round(s) of recursive label calibration, "
        f"{cfg.synth.steps} steps per batch, regional update {'on' if cfg.synth.regional else 'off'}.")
    d.table(["round", "images", "teacher agreement", "mean max prob", "entropy", "BN distance", "diversity", "seconds"],
            [[r["round"], r["images"], num(r["teacher_agreement"]), num(r["mean_max_prob"]), num(r["mean_entropy"]),
              num(r["bn_distance"]), num(r["diversity"]), num(r["seconds"], 1)] for r in synth.get("rounds", [])])
    for r in synth.get("rounds", []):
        d.img(f"synth/previews/round-{r['round']:02d}.png", f"synthetic images, round {r['round']} (rows: classes)")

    search = results["search"]["result"]
    d.h(2, "Search")
    d.p(f"{cfg.search.algo} on the {cfg.search.space} space, {cfg.search.epochs} epoch(s), "
        f"{search.get('search_seconds', search.get('search_seconds_last_run', 'n/a'))} s of search "
        f"(all calls, if it was resumed); "
        f"found network: {mflops(search.get('flops'))}, {kparams(search.get('params'))} params.")
    for key in ("genotype", "nb201_string"):
        if key in search:
            d.code(str(search[key]))
    d.img("search/arch.png", "the found architecture")
    if (out / "search" / "alphas.png").is_file():
        d.img("search/alphas.png", "architecture weights per epoch")
    if has_search_curves:
        d.img("report_files/search_curves.png", "search curves")
    d.code(json.dumps(search.get("choices", {}), indent=1), "json")

    train = results["train"]["result"]
    d.h(2, "Final training")
    what = {"kd-stored": "distillation to the teacher logits stored with the synthetic images",
            "kd-online": "distillation to the teacher's logits on each augmented synthetic view",
            "ce": "cross-entropy to the labels"}.get(str(train.get("loss")), "")
    d.p(f"Loss: {train.get('loss')} ({what}), {cfg.train.epochs} epoch(s), seeds {train.get('seeds')}.")
    d.table(["seed", "test accuracy", "train agreement", "final loss", "seconds"],
            [[r["seed"], pct(r.get("test_accuracy")), pct(r.get("train_accuracy")), num(r.get("final_train_loss")),
              num(r.get("wall_seconds"), 1)] for r in train.get("per_seed", [])])
    if has_train_curves:
        d.img("report_files/train_curves.png", "training curves")

    exp = results["export"]["result"]
    d.h(2, "Export")
    d.p(f"Seed {exp['seed']}: {exp['arch']} + {exp['weights']}.")
    d.table(["format", "file", "checked with", "max abs diff"],
            [[f["format"], f.get("out") or f.get("skipped", ""), f.get("checked_with") or "-",
              f"{f['max_abs_diff']:.2g}" if isinstance(f.get("max_abs_diff"), float) else "-"] for f in exp["files"]])

    d.h(2, "Reproduce")
    d.code(command, "sh")
    d.h(3, "Resolved config")
    d.code(dump_yaml(cfg), "yaml")

    atomic_write_text(out / "report.md", d.markdown())
    atomic_write_text(out / "report.html", d.html(f"dfnas run report: {out.name}"))
