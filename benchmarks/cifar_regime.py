"""Which proxy regime should a CIFAR-10 search on NAS-Bench-201 use on a CPU? Measured by how
well a single-path supernet trained in it ranks cells against the NB201 ground truth.

    python benchmarks/cifar_regime.py                                   # the default grid (~25 min, 2 idle cores)
    python benchmarks/cifar_regime.py --regimes 16x1x10,16x1x30 --cells 100

Each regime is WIDTHxCELLSxEPOCHS: NB201 with C = WIDTH channels and CELLS cells per stage,
trained single-path (SPOS, the supernet every strategy but DARTS and ProxylessNAS ranks with)
for EPOCHS epochs on the real 5,085-image CIFAR-10 sample of the kit (`../shared/cifar10`;
half train, half val, batch 64, cross-entropy). The same `--cells` distinct random cells are
then scored as SPOS scores an evolution candidate (BN recalibration, minus the val loss) and
compared with their real CIFAR-10 test accuracy after 200 epochs (the NB201 table): Kendall
tau (by minus the val loss, and by top-1), and the true accuracy of the cell the supernet ranks first. Reference in the same run:
NASWOT on the same cells and a real batch (no training at all).

Last line: JSON {metric: tau of the best regime, value, reference: NASWOT's tau, ratio, per_regime}.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from synth_quality import CIFAR_SAMPLE, cifar10_sample

from dfnas.bench.ranking import Supernet, sample_distinct, tau
from dfnas.config import from_dict
from dfnas.spaces.base import fix
from dfnas.spaces.nb201_bench import lookup
from dfnas.strategies.config import SearchConfig
from dfnas.strategies.spos import candidate_score
from dfnas.strategies.zeroshot import PROXIES


def regime_cfg(width: int, cells: int, seed: int) -> SearchConfig:
    return from_dict(SearchConfig, {"algo": "spos", "space": "nb201", "seed": seed, "batch_size": 64,
                                    "space_args": {"channels": width, "cells_per_stage": cells},
                                    "spos": {"bn_batches": 4, "score": "loss"}})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--regimes", default="8x1x10,16x1x10,16x1x30,16x2x10")
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cifar-sample", type=Path, default=CIFAR_SAMPLE)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    real, _ = cifar10_sample(a.cifar_sample)
    rows: dict[str, dict] = {}
    archs = truth = None
    for reg in a.regimes.split(","):
        try:
            width, cells, epochs = (int(v) for v in reg.split("x"))
        except ValueError:
            sys.exit(f"cifar_regime: regime {reg!r} is not WIDTHxCELLSxEPOCHS, e.g. 16x1x10")
        net = Supernet(real, regime_cfg(width, cells, a.seed))
        steps = epochs * max(1, net.data.steps("train"))
        train_s = net.train(steps, epochs)
        if archs is None:  # the same cells for every regime: the draw depends on the seed only
            archs = sample_distinct(net.model, a.cells, a.seed)
            truth = [lookup(arch)["cifar10_test"] for arch in archs]
        t0 = time.time()
        measured = [net.measure(arch) for arch in archs]
        scores = [candidate_score(m, "loss") for m in measured]
        best = max(range(len(archs)), key=scores.__getitem__)
        rows[reg] = {"width": width, "cells": cells, "epochs": epochs, "steps": steps, "train_s": round(train_s, 1),
                     "score_s": round(time.time() - t0, 1), "tau": round(tau(scores, truth), 3),
                     "tau_top1": round(tau([candidate_score(m, "top1") for m in measured], truth), 3),
                     "top1_cell_acc": truth[best]}
        r = rows[reg]
        print(f"{reg:10s} tau {r['tau']:+.3f} (top-1: {r['tau_top1']:+.3f})  ranked-first cell {r['top1_cell_acc']:.2f} %  "
              f"train {r['train_s']} s ({steps} steps)  score {r['score_s']} s", flush=True)
    # reference: NASWOT on one real batch, the same cells, no training
    net = Supernet(real, regime_cfg(16, 1, a.seed))
    x = net.data.fixed_batch("train", 64)
    t0 = time.time()
    nw = [PROXIES["naswot"](fix(copy.deepcopy(net.model), arch), tuple(x.shape[1:]), seed=a.seed, x=x) for arch in archs]
    nw_tau = round(tau(nw, truth), 3)
    print(f"{'NASWOT':10s} tau {nw_tau:+.3f}  ranked-first cell {truth[max(range(len(archs)), key=nw.__getitem__)]:.2f} %  "
          f"score {time.time() - t0:.1f} s", flush=True)
    best_reg = max(rows, key=lambda k: rows[k]["tau"])
    print(json.dumps({"metric": "nb201_supernet_tau_best_regime", "value": rows[best_reg]["tau"], "regime": best_reg,
                      "reference": nw_tau, "ratio": round(rows[best_reg]["tau"] / nw_tau, 3) if nw_tau else None,
                      "cells": a.cells, "seed": a.seed, "per_regime": rows,
                      "truth_best_of_sample": max(truth), "truth_mean_of_sample": round(sum(truth) / len(truth), 2)}))


if __name__ == "__main__":
    main()
