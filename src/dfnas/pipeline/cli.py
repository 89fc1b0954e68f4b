"""`dfnas run`: the whole data-free pipeline from one YAML config (or the embedded demo).

    dfnas run                                         # demo: bundled MNIST teacher -> runs/demo
    dfnas run --config configs/spos.yaml --out runs/spos --set search.epochs=4 --set train.seeds=[0,1]

Precedence: defaults < the config file (the embedded demo when none is given) < --out/--device
< --set. The config is checked completely (unknown keys, wrong types, impossible
combinations) before anything is loaded or written; errors exit with code 2.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys

from dfnas.config import add_config_args, config_from_args
from dfnas.pipeline.config import RunConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="teacher -> synthesize -> search -> distil -> evaluate -> export -> report",
                       description="Run the whole data-free NAS pipeline into one output folder. Without a config "
                       "it runs the embedded demo (bundled MNIST teacher; same as configs/demo.yaml).")
    add_config_args(p, "", out_help="output folder (default: the config's `out`)")
    p.set_defaults(func=_run)


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """Build and check the RunConfig; raises DfnasError before any work."""
    from dfnas.pipeline.run import DEMO, resolve, validate

    cfg = config_from_args(RunConfig, args, "", {"device": args.device}, base=copy.deepcopy(DEMO))
    validate(resolve(cfg))
    return cfg


def _run(args: argparse.Namespace) -> int:
    from dfnas.pipeline.report import format_summary
    from dfnas.pipeline.run import run_pipeline

    cfg = run_config_from_args(args)
    command = "dfnas " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["run"] else None
    from dfnas.dist import from_env

    group = from_env(cfg.search.device)
    summary = run_pipeline(cfg, args.out, force=args.force, progress=not args.quiet,
                           command=command or _command(args), group=group)
    if group.is_main:
        print(format_summary(summary))
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line rebuilt from the parsed arguments (when not called from a shell)."""
    parts = ["dfnas", "run"] + (["--config", args.config] if args.config else [])
    if args.out:
        parts += ["--out", args.out]
    for s in args.set:
        parts += ["--set", s]
    if args.device:
        parts += ["--device", args.device]
    parts += ["--force"] if args.force else []
    parts += ["--quiet"] if args.quiet else []
    return " ".join(shlex.quote(p) for p in parts)
