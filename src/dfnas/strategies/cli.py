"""`dfnas search`: run a NAS algorithm on a real or synthetic dataset.

    dfnas search --algo darts --space nb201 --data mnist --out runs/darts-nb201 --epochs 10
    dfnas search --algo spos --space spos --data runs/synth --out runs/spos --set spos.flops_limit=2.0
    dfnas search --algo darts --space nb201 --data runs/synth --teacher mnist-cnn --out runs/darts-kd

Precedence: defaults < --config YAML (SearchConfig keys, flat or under `search:`) < the
explicit flags < --set. Everything is checked (algo/space pair, data vs. space, output folder)
before any training starts; rerunning the same command resumes an interrupted search.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from dfnas.config import add_config_args, config_from_args
from dfnas.dist import from_env
from dfnas.errors import DfnasError
from dfnas.strategies.config import SearchConfig

if TYPE_CHECKING:
    from dfnas.data.sources import Source


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search an architecture (darts, gdas, drnas, proxyless, spos, random, zeroshot)")
    p.add_argument("--algo", default=None, help="darts | gdas | drnas | proxyless | spos | random | zeroshot")
    p.add_argument("--space", default=None, help="darts | nb201 | proxyless | spos")
    p.add_argument("--data", default=None,
                   help="mnist, mnist-clutter, cifar10:DIR, npz:PATH, an ImageFolder directory or a dfnas synth "
                        "directory (--algo zeroshot without it scores on Gaussian noise of --spec's shape)")
    p.add_argument("--spec", default=None,
                   help="input spec JSON (needed for npz: and ImageFolder data; also the --teacher's spec)")
    p.add_argument("--teacher", default=None,
                   help="online teacher: search loss = KD to its logits on each augmented view "
                        "(bundled name, file.py:factory, TorchScript)")
    p.add_argument("--teacher-weights", default=None, help="state dict for a factory --teacher")
    p.add_argument("--epochs", type=int, default=None,
                   help="supernet epochs (darts, gdas, drnas, proxyless, spos); random search uses random.train_steps per sample")
    p.add_argument("--seed", type=int, default=None)
    add_config_args(p, "search", out_help="output folder (arch.json, config.yaml, log, drawings, checkpoint)",
                    out_required=True)
    p.set_defaults(func=_search)


def resolve_config(args: argparse.Namespace) -> SearchConfig:
    """Build the SearchConfig from file, flags and overrides; unknown keys refused."""
    return config_from_args(SearchConfig, args, "search",
                            {k: getattr(args, k) for k in ("algo", "space", "epochs", "seed", "device")})


def _noise_only(cfg: SearchConfig, args: argparse.Namespace) -> Source:
    """Zero-shot without data: blank images that only carry the input spec; the proxy sees noise."""
    from dfnas.data.sources import blank_source
    from dfnas.data.spec import InputSpec

    if cfg.algo != "zeroshot":
        raise DfnasError(f"--algo {cfg.algo} needs --data (real or synthetic images); only --algo zeroshot runs "
                         "without data, on Gaussian noise")
    if args.spec is None or args.teacher is not None:
        raise DfnasError("--algo zeroshot without --data needs the input's shape and classes: pass --spec SPEC.json "
                         "(no --teacher: zero-shot uses no labels)")
    if cfg.zeroshot.refine:
        raise DfnasError("zeroshot.refine trains the shortlist on data: pass --data, or set zeroshot.refine=0")
    cfg.zeroshot.input = "gaussian"
    return blank_source(InputSpec.load(args.spec), 2 * cfg.zeroshot.batch_size)


def _search(args: argparse.Namespace) -> int:
    from dfnas.data.sources import load_source
    from dfnas.strategies.runner import check_algo_space, check_config, run_search

    cfg = resolve_config(args)
    check_config(cfg)
    check_algo_space(cfg)
    group = from_env(cfg.device)
    cfg.device = group.device(cfg.device)
    if args.data is None:
        source = _noise_only(cfg, args)
    else:
        source = load_source(args.data, args.spec, "train")
    teacher = None
    if args.teacher:
        from dfnas.teachers.online import load_online_teacher

        teacher = load_online_teacher(args.teacher, args.teacher_weights, args.spec, source.spec,
                                      f"data {source.name}")
    elif args.teacher_weights:
        raise DfnasError("--teacher-weights needs --teacher")
    rec = run_search(cfg, source, args.out, progress=not args.quiet, force=args.force, teacher=teacher,
                     group=group)
    if not group.is_main:
        return 0
    summary = {"arch": f"{args.out}/arch.json", "flops": rec.get("flops"), "params": rec.get("params"),
               **{k: rec[k] for k in ("genotype", "nb201_string") if k in rec}}
    if "nb201_benchmark" in rec:  # labelled: the benchmark's figure for this cell, not a result of this run
        b = rec["nb201_benchmark"]
        summary["nb201_benchmark_test_accuracy"] = {b["dataset"]: b["test_accuracy"]}
    print(json.dumps(summary))
    return 0
