"""`dfnas teacher info`: load a teacher, check its spec and input units. (`dfnas teacher train`,
which reproduces a bundled teacher, is registered by the training stage.)"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

ACTIONS: Any = None  # the `dfnas teacher` subcommands, once registered


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="train a bundled teacher or inspect a teacher")
    tsub = p.add_subparsers(dest="teacher_command", metavar="ACTION")
    tsub.required = True
    global ACTIONS
    ACTIONS = tsub  # `dfnas teacher train` is added by the training stage (dfnas.training.cli)

    i = tsub.add_parser("info", help="load and validate a teacher, print its spec, BN count and a check of the spec's input units")
    _add_teacher_args(i)
    i.add_argument("--data", default=None,
                   help="real images to check the spec with (npz:PATH, an ImageFolder, a bundled task); "
                        "default: smooth noise")
    i.set_defaults(func=_info)


def _add_teacher_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--teacher", required=required, default=None if required else "mnist-cnn",
                   help="bundled name (mnist-cnn, mnist-clutter-cnn), file.py:factory, package.module:factory, or a TorchScript file")
    p.add_argument("--weights", default=None, help="state dict for a factory teacher (.safetensors or .pt)")
    p.add_argument("--spec", default=None, help="input spec JSON (required for user teachers)")


def _info(args: argparse.Namespace) -> int:
    import sys

    from dfnas.teachers import load_teacher, validate_teacher
    from dfnas.teachers.inputs import input_report

    t = load_teacher(args.teacher, args.weights, args.spec)
    n_bn = validate_teacher(t, need_bn=False)
    x = y = name = None
    if args.data is not None:
        from dfnas.data.sources import load_source

        src = load_source(args.data, t.spec)
        idx = torch.randperm(len(src), generator=torch.Generator().manual_seed(0))[:256]
        x, y, name = src.x[idx].float() / 255, src.y[idx], src.name
    rep = input_report(t, x, y, name)
    print(json.dumps({"teacher": t.identity(), "spec": t.spec.to_dict(), "bn_layers": n_bn, "input": rep}, indent=2))
    if "warning" in rep:
        print(f"dfnas: warning: {rep['warning']}", file=sys.stderr)
    return 0
