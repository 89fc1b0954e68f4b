"""Ranking fidelity of a data-free supernet: does synthetic data rank architectures like real
data does, and how well does real data agree with itself? (SPEC section 4, the ranking check.)

    python benchmarks/ranking_fidelity.py                      # NB201, default (~15 min on 2 idle cores)
    python benchmarks/ranking_fidelity.py --space spos         # the SPOS space
    python benchmarks/ranking_fidelity.py --quick              # smoke version (~2 min)
    python benchmarks/ranking_fidelity.py --synthetic runs/s   # reuse a `dfnas synth` folder

`dfnas.bench.ranking.ranking_check`, standalone: single-path supernets trained with the same
seed, initial weights, sampled paths and number of SGD steps, one on the real MNIST train split
(cross-entropy), one on a dfnas synthetic set from the bundled `mnist-cnn` teacher (KD to the
stored logits, T = 3), and a third on real data with another seed (the ceiling: how well real
data agrees with itself). A fixed-seed sample of architectures is scored by each as SPOS scores
evolution candidates (BN recalibration, then --score: minus the loss by default, or top-1, on
its own whole val split; the taus of the other score are printed too). Reported:
Kendall tau-b synthetic vs real (the headline), real vs reseeded real, the synthetic weights
scored on real val, and, for a subset, tau against short from-scratch training on real data.
Last line: JSON {metric, value, reference, ratio} with value = tau(synthetic, real) and
reference = 0.7 (the target).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from dfnas.bench.ranking import ranking_check, tau
from dfnas.config import from_dict
from dfnas.data.sources import Source, load_source
from dfnas.spaces.base import Arch
from dfnas.strategies.config import SearchConfig
from dfnas.synth.config import SynthConfig
from dfnas.training.config import TrainConfig

SPACE_ARGS = {  # small widths, as in `dfnas bench`
    "nb201": {"channels": 8},
    "spos": {"stem_channels": 8, "stage_channels": [16, 32, 64], "stage_repeats": [2, 2, 2], "last_channels": 64},
}


def short(arch: Arch) -> str:
    """The choices in label order, shortened (one token per choice)."""
    return " ".join(str(arch[k]).replace("nor_conv_", "c").replace("shuffle", "s")[:6] for k in sorted(arch))


def synthetic_set(args: argparse.Namespace, work: Path) -> tuple[Path, float]:
    """The `--synthetic` folder, or a fresh set from the bundled teacher (seconds spent)."""
    if args.synthetic:
        return Path(args.synthetic), 0.0
    from dfnas.synth import synthesize
    from dfnas.teachers import load_teacher

    out = work / "synth"
    t0 = time.perf_counter()
    synthesize(load_teacher("mnist-cnn"), SynthConfig(per_class=args.per_class, rounds=args.rounds,
                                                      steps=args.synth_steps, seed=args.seed), out, progress=False)
    return out, time.perf_counter() - t0


def scratch_accuracy(space: str, arch: Arch, space_cfg: dict[str, Any], real: Source, test: Source, epochs: int,
                     seed: int, out: Path) -> float:
    """Short from-scratch training on the real train split; real test accuracy."""
    from dfnas.spaces import space_class
    from dfnas.spaces.arch import make_record
    from dfnas.training.train import train_arch

    rec = make_record(space, space_class(space).version, space_cfg, arch, {})
    m = train_arch(rec, real, test, seeds=(seed,), out=out, cfg=TrainConfig(epochs=epochs), progress=False)
    assert m is not None
    return float(m["test_accuracy_mean"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke version")
    ap.add_argument("--space", default="nb201", choices=sorted(SPACE_ARGS))
    ap.add_argument("--synthetic", default=None, help="an existing dfnas synth folder (else one is made)")
    ap.add_argument("--archs", type=int, default=None, help="architectures sampled (>= 20)")
    ap.add_argument("--steps", type=int, default=None, help="SGD steps of each supernet")
    ap.add_argument("--epochs", type=int, default=None, help="cosine epochs the steps are split into")
    ap.add_argument("--scratch", type=int, default=None, help="architectures also trained from scratch (0 = off)")
    ap.add_argument("--scratch-epochs", type=int, default=None)
    ap.add_argument("--per-class", type=int, default=None, help="synthetic images per class per round")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--synth-steps", type=int, default=None)
    ap.add_argument("--score", default="loss", choices=["loss", "top1"],
                    help="what scores an architecture on a supernet's val split (the other is reported too)")
    ap.add_argument("--bn-batches", type=int, default=16, help="train batches that recalibrate BN per architecture")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="keep the synthetic set and scratch runs here")
    args = ap.parse_args()
    q = args.quick
    args.archs = args.archs or (20 if q else 30)
    args.steps = args.steps or (600 if q else 4000)
    args.epochs = args.epochs or (3 if q else 5)
    args.scratch = (3 if q else 8) if args.scratch is None else args.scratch
    args.scratch_epochs = args.scratch_epochs or (1 if q else 4)
    args.per_class = args.per_class or (10 if q else 67)
    args.rounds = args.rounds or (2 if q else 3)
    args.synth_steps = args.synth_steps or (60 if q else 150)
    if args.archs < 20:
        ap.error("--archs must be >= 20")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dfnas-rank-"))
    work.mkdir(parents=True, exist_ok=True)

    real = load_source("mnist", split="train")
    test = load_source("mnist", split="test")
    syn_dir, synth_s = synthetic_set(args, work)
    syn = load_source(str(syn_dir))
    cfg = from_dict(SearchConfig, {"algo": "spos", "space": args.space, "space_args": SPACE_ARGS[args.space],
                                   "epochs": args.epochs, "batch_size": 32, "lr": 0.05, "seed": args.seed,
                                   "spos": {"bn_batches": args.bn_batches, "val_batches": 0,
                                                                             "score": args.score}})
    res = ranking_check(real, syn, cfg, args.archs, args.steps, args.epochs, reseeded=True)
    archs, scores = res["archs"], res["scores"]
    print(f"supernets trained: {args.steps} steps each, seconds {res['train_seconds']}, synthetic set {len(syn)} "
          f"images ({synth_s:.0f} s to make)", file=sys.stderr)
    for i, a in enumerate(archs):
        print(f"{i:>3} {short(a):<40} real {scores['real'][i]:.4f}  reseeded {scores['real_reseeded'][i]:.4f}  "
              f"synthetic {scores['synthetic'][i]:.4f}  synthetic@real-val {scores['synthetic_on_real_val'][i]:.4f}",
              file=sys.stderr)
    result: dict[str, Any] = {k: v for k, v in res.items() if k.startswith("tau_")}
    result["other_score"] = res["other_score"]
    result.update({"real_score_range": [min(scores["real"]), max(scores["real"])],
                   "synthetic_score_range": [min(scores["synthetic"]), max(scores["synthetic"])]})
    if args.scratch:
        sub = archs[:args.scratch]
        scratch = [scratch_accuracy(args.space, a, res["space_cfg"], real, test, args.scratch_epochs, args.seed,
                                    work / f"scratch{i}") for i, a in enumerate(sub)]
        result.update({
            "scratch_test_acc": scratch,
            "tau_scratch_vs_real_supernet": tau(scratch, scores["real"][:args.scratch]),
            "tau_scratch_vs_synthetic_supernet": tau(scratch, scores["synthetic"][:args.scratch]),
        })
    value = result["tau_synthetic_vs_real"]
    settings = {k: getattr(args, k) for k in ("quick", "space", "archs", "steps", "epochs", "scratch", "scratch_epochs",
                                              "per_class", "rounds", "synth_steps", "score", "bn_batches", "seed",
                                              "threads")}
    print(json.dumps({"settings": settings, "space_args": SPACE_ARGS[args.space], "synthetic_images": len(syn),
                      "synthetic_dir": str(syn_dir), "train_seconds": res["train_seconds"],
                      "score_seconds": res["score_seconds"],
                      "synth_seconds": round(synth_s, 1), **result}, indent=1), file=sys.stderr)
    print(json.dumps({"metric": f"kendall_tau_{args.space}_synthetic_vs_real", "value": round(value, 4), "reference": 0.7,
                      "ratio": round(value / 0.7, 4), "n_archs": len(archs),
                      **{k: round(v, 4) for k, v in result.items() if k.startswith("tau_")},
                      "seconds": round(time.perf_counter() - t_start, 1)}))


if __name__ == "__main__":
    main()
