"""`dfnas teacher ...`: train the bundled teacher, inspect a teacher."""

from __future__ import annotations

import argparse
import json

import torch

from dfnas.config import add_config_args, config_from_args, to_dict
from dfnas.data.sources import task_names
from dfnas.teachers.config import TeacherTrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="train a bundled teacher or inspect a teacher")
    tsub = p.add_subparsers(dest="teacher_command", metavar="ACTION")
    tsub.required = True

    t = tsub.add_parser("train", help="train a bundled teacher from scratch (reproduces the shipped weights)")
    t.add_argument("task", choices=task_names(), help="the bundled task whose train split it learns")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    add_config_args(t, "teacher", out_help="output folder for <name>.safetensors and <name>.json", out_required=True,
                    device=False)
    t.set_defaults(func=_train)

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


def _train(args: argparse.Namespace) -> int:
    from dfnas.teachers.train import train_teacher

    cfg = config_from_args(TeacherTrainConfig, args, "teacher", {"epochs": args.epochs, "seed": args.seed})
    rec = train_teacher(cfg, args.out, args.task, progress=not args.quiet, force=args.force)
    print(json.dumps({k: rec[k] for k in ("test_accuracy", "train_accuracy", "train_seconds")}))
    print(f"resolved config: {to_dict(cfg)}")
    return 0


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
