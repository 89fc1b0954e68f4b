"""`dfnas bench [config.yaml] [--quick] [--set key=value] [--out DIR] [--force]`.

Precedence: the bench defaults < the config file < the --quick budget < --set. The config
is checked completely before anything is loaded or written (errors exit with code 2).
"""

from __future__ import annotations

import argparse
import shlex
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="search on real / synthetic / plain-inversion / noise data and compare (SPEC 4)",
                       description="Run the SPEC section 4 benchmark: every NAS algorithm on real data, dfnas "
                       "synthetic data, plain inversion and teacher-labelled noise, plus random architectures and "
                       "a zero-shot proxy; every architecture trained from scratch on real data with several seeds.")
    p.add_argument("config", nargs="?", default=None, help="YAML overriding any bench setting")
    p.add_argument("--quick", action="store_true", help="the same protocol at a tiny budget (minutes)")
    p.add_argument("--out", default=None, help="output folder (default: the config's `out`, runs/bench)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set algos=[spos] --set seeds=[0,1,2,3]")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:1 ... for synthesis, searches, ranking and "
                   "final training (zero-shot scoring stays on the CPU); a bench resumes on another device")
    p.add_argument("--force", action="store_true", help="reuse a folder of another config: redo the jobs it changes")
    p.add_argument("--quiet", action="store_true", help="no progress output; only the final summary")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dfnas.bench import build_config, run_bench
    from dfnas.bench.report import format_summary
    from dfnas.config import load_yaml

    data = load_yaml(args.config) if args.config else {}
    cfg = build_config(data, quick=args.quick, overrides=args.set + ([f"device={args.device}"] if args.device else []))
    out = Path(args.out or cfg.out)
    argv = sys.argv[1:] if sys.argv[1:2] == ["bench"] else ["bench"]
    command = "dfnas " + " ".join(shlex.quote(a) for a in argv)
    res = run_bench(cfg, out, force=args.force, progress=not args.quiet, command=command)
    print(format_summary(res, out))
    return 0
