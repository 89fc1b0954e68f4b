"""Which search strategies find good NAS-Bench-201 cells from CIFAR-10 data on a CPU? Each
found cell is scored by the NB201 lookup (its real CIFAR-10 test accuracy after 200 epochs).

    python benchmarks/nb201_search.py --algos darts,gdas --seeds 0 --epochs 100      # ~40 min, 2 idle cores
    python benchmarks/nb201_search.py --algos gdas --data runs/synth --teacher cifar10-resnet20

`--data real` (default): the kit's 5,085 real CIFAR-10 images (`../shared/cifar10`), cross-
entropy; a `dfnas synth` folder: KD to its stored logits. The search regime is the one chosen
by `benchmarks/cifar_regime.py` (NB201 with C = 8, one cell per stage, batch 64, half the data
for the arch / scoring split) unless `--space-args` says otherwise. Each (algo, seed) search
keeps its folder under `--workdir`, so a killed run resumes.

Reference in the same run: the mean NB201 accuracy of 100 random cells (seed 0), i.e. what a
search must beat to have learnt anything. Published real-data results on the same table
(NB201 paper, full CIFAR-10 search budget): DARTS-V1 54.30, GDAS 93.61, RSPS 87.66, REA 93.92;
DrNAS 94.36 (its paper).
Last line: JSON {metric, value (best algorithm's mean), reference (random cells' mean), ratio, per_algo}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from synth_quality import CIFAR_SAMPLE, cifar10_sample

from dfnas.config import from_dict
from dfnas.data.sources import load_source
from dfnas.spaces import create_space
from dfnas.spaces.base import sample_arch
from dfnas.spaces.nb201_bench import lookup
from dfnas.strategies.config import SearchConfig
from dfnas.strategies.runner import run_search

# real data, full budget: NB201 paper (RSPS for spos, REA for random), DrNAS paper for drnas
PUBLISHED = {"darts": 54.30, "gdas": 93.61, "drnas": 94.36, "spos": 87.66, "random": 93.92}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algos", default="darts,gdas")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--data", default="real", help="'real' (the kit's sample) or a dfnas synth folder")
    ap.add_argument("--teacher", default="cifar10-resnet20", help="the teacher of a synthetic --data")
    ap.add_argument("--space-args", default='{"channels": 8, "cells_per_stage": 1}')
    ap.add_argument("--set", action="append", default=[], help="search config override, dotted.key=JSON")
    ap.add_argument("--workdir", type=Path, default=Path("runs/nb201_search"))
    ap.add_argument("--cifar-sample", type=Path, default=CIFAR_SAMPLE)
    args = ap.parse_args()
    if args.data == "real":
        source = cifar10_sample(args.cifar_sample)[0]
    else:
        source = load_source(args.data)
    space_args = json.loads(args.space_args)
    per_algo: dict[str, dict] = {}
    for algo in args.algos.split(","):
        accs, runs = [], []
        for seed in (int(s) for s in args.seeds.split(",")):
            d: dict = {"algo": algo, "space": "nb201", "space_args": space_args, "epochs": args.epochs,
                       "batch_size": 64, "seed": seed}
            for kv in args.set:
                key, value = kv.split("=", 1)
                node = d
                *path, leaf = key.split(".")
                for p in path:
                    node = node.setdefault(p, {})
                node[leaf] = json.loads(value)
            cfg = from_dict(SearchConfig, d)
            t0 = time.time()
            res = run_search(cfg, source, args.workdir / f"{args.data.replace('/', '_')}-{algo}-s{seed}", progress=True)
            acc = res["nb201_benchmark"]["test_accuracy"]
            accs.append(acc)
            runs.append({"seed": seed, "cell": res["nb201_string"], "acc": acc, "seconds": round(time.time() - t0, 1)})
            print(f"{algo} seed {seed}: {res['nb201_string']} -> {acc:.2f} % ({runs[-1]['seconds']:.0f} s)", flush=True)
        per_algo[algo] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                          "runs": runs, "published_real": PUBLISHED.get(algo)}
    space = create_space("nb201", channels=4, cells_per_stage=1, num_classes=10, in_channels=3, image_size=32)
    rng = random.Random(0)
    rand = [lookup(sample_arch(space, rng))["cifar10_test"] for _ in range(100)]
    ref = statistics.mean(rand)
    best = max(per_algo, key=lambda a: per_algo[a]["mean"])
    for a, r in per_algo.items():
        print(f"{a:10s} {r['mean']:6.2f} ± {r['std']:.2f}   (published, real data, full budget: {r['published_real']})")
    print(f"random cells (100): {ref:.2f}")
    print(json.dumps({"metric": f"nb201_cifar10_test_acc_{best}", "value": round(per_algo[best]["mean"], 2),
                      "reference": round(ref, 2), "ratio": round(per_algo[best]["mean"] / ref, 4),
                      "data": args.data, "epochs": args.epochs, "space_args": space_args, "per_algo": per_algo}))


if __name__ == "__main__":
    main()
