"""The `dfnas` command line. Each subcommand lives in the module that owns its concern and
registers itself here through `register(subparsers)`; user errors exit with code 2.

    dfnas teacher train mnist --out DIR
    dfnas synth --teacher mnist-cnn --out runs/synth
    dfnas synth export runs/synth --imagefolder runs/synth-png
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback

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


# Commands that spread their work over the processes of a `torchrun` launch (dfnas.dist).
DISTRIBUTED = ("synth", "search", "train", "run", "bench")


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
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.command not in DISTRIBUTED:
            raise DfnasError(f"dfnas {args.command} runs in one process for now; under torchrun only "
                             f"{', '.join(DISTRIBUTED)} is spread over processes (run this command without torchrun)")
        return int(args.func(args) or 0)
    except DfnasError as e:
        print(f"dfnas: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("dfnas: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # the machine, not the input: a full disk, a read-only or unwritable folder
        print(f"dfnas: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("dfnas: error: out of memory; lower --batch-size (or the sizes in the config) or use a machine "
              "with more memory, then rerun the same command to resume", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one boundary: what is left is a bug in dfnas
        if _is_out_of_memory(e):
            print("dfnas: error: the device ran out of memory; lower --batch-size (or the sizes in the config), "
                  "then rerun the same command to resume", file=sys.stderr)
            return 2
        traceback.print_exc()
        print("dfnas: internal error: this is a bug in dfnas; please report it with the traceback above "
              "(rerunning the same command resumes from the last finished step)", file=sys.stderr)
        return 1


def os_error_line(e: OSError) -> str:
    """One line for an operating-system failure: what failed, where, and what to do."""
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    fixes = {
        errno.ENOSPC: "no space left on the device; free some space, then rerun the same command to resume",
        errno.EDQUOT: "disk quota exceeded; free some space, then rerun the same command to resume",
        errno.EROFS: "the file system is read-only; choose an --out on a writable disk",
        errno.EACCES: "permission denied; choose an --out you can write to (or fix the folder's permissions)",
        errno.EPERM: "operation not permitted; choose an --out you can write to",
    }
    if e.errno in fixes:
        return f"{fixes[e.errno]}{where}"
    return f"{e.strerror or e}{where}; check the path, then rerun the same command to resume"


def _is_out_of_memory(e: BaseException) -> bool:
    oom = getattr(sys.modules.get("torch"), "OutOfMemoryError", None)
    return (oom is not None and isinstance(e, oom)) or "out of memory" in str(e).lower()


if __name__ == "__main__":
    sys.exit(main())
