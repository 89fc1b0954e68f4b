"""The `dfnas` command line. Each subcommand lives in the module that owns its concern and
registers itself here through `register(subparsers)`; user errors exit with code 2.

    dfnas teacher train mnist --out DIR
    dfnas synth --teacher mnist-cnn --out runs/synth
    dfnas synth export runs/synth --imagefolder runs/synth-png
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dfnas import __version__
from dfnas.errors import DfnasError

# Modules providing `register(subparsers)`; order = order in `dfnas --help`.
COMMAND_MODULES = [
    "dfnas.teachers.cli",
    "dfnas.synth.cli",
    "dfnas.strategies.cli",
    "dfnas.training.cli",
    "dfnas.pipeline.cli",
    "dfnas.bench.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfnas", description="Data-free neural architecture search.")
    parser.add_argument("--version", action="version", version=f"dfnas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DfnasError as e:
        print(f"dfnas: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("dfnas: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
