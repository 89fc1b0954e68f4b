"""`dfnas bench [--config FILE] [--quick] [--set key=value] [--out DIR] [--device D] [--force]`.

Precedence: the bench defaults < the config file < the --quick budget < --device < --set. The config
is checked completely before anything is loaded or written (errors exit with code 2).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from dfnas.config import add_config_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="search on real / synthetic / plain-inversion / noise data and compare (the paper's protocol)",
                       description="Run the paper's benchmark protocol: every NAS algorithm on real data, dfnas "
                       "synthetic data, plain inversion and teacher-labelled noise, plus random architectures and "
                       "a zero-shot proxy; every architecture trained from scratch on real data with several seeds, or "
                       "looked up in NAS-Bench-201 (score: nb201, configs/bench-cifar10.yaml).")
    p.add_argument("--quick", action="store_true", help="the same protocol at a tiny budget (minutes)")
    add_config_args(p, "", out_help="output folder (default: the config's `out`, runs/bench)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dfnas.bench import build_config, run_bench
    from dfnas.bench.report import format_summary
    from dfnas.config import load_yaml
    from dfnas.dist import from_env

    data = load_yaml(args.config) if args.config else {}
    overrides = ([f"device={args.device}"] if args.device else []) + args.set
    cfg = build_config(data, quick=args.quick, overrides=overrides)
    out = Path(args.out or cfg.out)
    argv = sys.argv[1:] if sys.argv[1:2] == ["bench"] else ["bench"]
    command = "dfnas " + " ".join(shlex.quote(a) for a in argv)
    group = from_env(cfg.device or "cpu")
    if cfg.device and group.device(cfg.device) != cfg.device:  # each worker's jobs on its own GPU
        cfg = build_config(data, quick=args.quick, overrides=[*overrides, f"device={group.device(cfg.device)}"])
    res = run_bench(cfg, out, force=args.force, progress=not args.quiet, command=command, group=group)
    if group.is_main:
        print(format_summary(res, out))
    return 0
