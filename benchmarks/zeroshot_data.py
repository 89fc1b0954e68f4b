"""Zero-shot NAS on data: the NASWOT proxy scored on a batch of Gaussian noise, of a dfnas
synthetic set, or of real CIFAR-10 images, judged by the NAS-Bench-201 ground truth.

    python benchmarks/zeroshot_data.py --synthetic runs/synth-cifar10 [--seeds 0,1,2,3,4] [--samples 100]

`dfnas search --algo zeroshot` on NB201 (C = 16, one cell per stage, 3x32x32, the NASWOT
paper's setting) with `zeroshot.input` gaussian / data: per seed, the same 100 distinct cells are
drawn for every input (the draw depends on the seed only) and the best-scoring one is looked
up in the NB201 table (real CIFAR-10 test accuracy after 200 epochs). Also Kendall tau of the
score against the truth over every scored cell. Real images: the kit's 5,085-image sample
(`../shared/cifar10`, `--cifar-sample`); synthetic: a `dfnas synth` folder of the bundled
`cifar10-resnet20` teacher. Published NASWOT with real data: 92.96 +- 0.81.

Last line: JSON {metric, value (synthetic mean), reference (real mean), ratio, gaussian,
gap_closed / tau_gap_closed (the share of the Gaussian-to-real gap the synthetic batch closes,
in best-cell accuracy and in Kendall tau; null where real is not better), ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau
from synth_quality import CIFAR_SAMPLE, cifar10_sample  # the kit's sample, read the same way

from dfnas.config import from_dict
from dfnas.data.sources import Source, blank_source, load_source
from dfnas.spaces.nb201_bench import lookup
from dfnas.strategies.config import SearchConfig
from dfnas.strategies.runner import run_search


def search(source: Source, input_: str, seed: int, samples: int, batch: int) -> dict:
    cfg = from_dict(SearchConfig, {"algo": "zeroshot", "space": "nb201", "seed": seed,
                                   "space_args": {"channels": 16, "cells_per_stage": 1},
                                   "zeroshot": {"samples": samples, "batch_size": batch, "input": input_}})
    return run_search(cfg, source, None, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic", type=Path, required=True, help="a dfnas synth folder of a CIFAR-10 teacher")
    ap.add_argument("--cifar-sample", type=Path, default=CIFAR_SAMPLE)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seeds = [int(s) for s in a.seeds.split(",")]
    real, _ = cifar10_sample(a.cifar_sample)
    synth = load_source(str(a.synthetic))
    if synth.spec.signature != real.spec.signature:
        sys.exit(f"zeroshot_data: {a.synthetic} is {synth.spec.describe()}, not CIFAR-10 input")
    inputs = {"gaussian": (blank_source(real.spec, 2 * a.batch), "gaussian"), "synthetic": (synth, "data"),
              "real": (real, "data")}
    rows: dict[str, dict] = {}
    for name, (src, input_) in inputs.items():
        t0 = time.time()
        accs, taus = [], []
        for seed in seeds:
            rec = search(src, input_, seed, a.samples, a.batch)
            accs.append(rec["nb201_benchmark"]["test_accuracy"])
            # every scored cell against its true accuracy
            truth = [lookup(arch)["cifar10_test"] for arch in rec["search"]["all_archs"]]
            taus.append(float(kendalltau(rec["search"]["all_scores"], truth).statistic))
        rows[name] = {"accs": accs, "mean": round(statistics.mean(accs), 2),
                      "std": round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0,
                      "tau": round(statistics.mean(taus), 3) if taus else None, "seconds": round(time.time() - t0, 1)}
        r = rows[name]
        print(f"{name:10s} best-of-{a.samples} cell: {r['mean']:.2f} +- {r['std']:.2f} %  tau {r['tau']}  "
              f"({r['seconds']} s)  {accs}", flush=True)
    g, s, r = rows["gaussian"]["mean"], rows["synthetic"]["mean"], rows["real"]["mean"]
    closed = (s - g) / (r - g) if r > g else None  # only where real beats noise is there a gap
    tg, ts, tr = (rows[k]["tau"] for k in ("gaussian", "synthetic", "real"))
    tau_closed = (ts - tg) / (tr - tg) if tr > tg else None
    print(json.dumps({"metric": "zeroshot_nb201_cifar10_acc_synthetic", "value": s, "reference": r,
                      "ratio": round(s / r, 4), "gaussian": g, "gap_closed": None if closed is None else round(closed, 3),
                      "tau_gap_closed": None if tau_closed is None else round(tau_closed, 3),
                      "rows": rows, "seeds": seeds, "samples": a.samples, "batch": a.batch,
                      "synthetic": str(a.synthetic)}))


if __name__ == "__main__":
    main()
