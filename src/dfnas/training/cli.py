"""`dfnas train` (train a found architecture on real or synthetic data), `dfnas export`, and
`dfnas teacher train` (reproduce a bundled teacher).

    dfnas train --arch runs/s/arch.json --data mnist --epochs 20 --seeds 0,1,2 --out runs/t
    dfnas train --arch arch.json --data runs/synth --test-data mnist --out runs/t-kd
    dfnas export --arch arch.json --weights runs/t/seed0/weights.safetensors --format onnx --out m.onnx
"""

from __future__ import annotations

import argparse
import json

from dfnas.config import add_config_args, config_from_args, to_dict
from dfnas.data.sources import task_names
from dfnas.errors import DfnasError
from dfnas.teachers.config import TeacherTrainConfig
from dfnas.training.config import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a fixed architecture (arch.json) from scratch or by distillation")
    t.add_argument("--arch", required=True, help="arch.json written by dfnas search")
    t.add_argument("--data", required=True,
                   help="mnist, mnist-clutter, npz:PATH, an ImageFolder directory (real: cross-entropy) or a dfnas synth directory (KD)")
    t.add_argument("--spec", default=None, help="input spec JSON for npz:/ImageFolder data")
    t.add_argument("--test-data", default=None,
                   help="real test set, same forms as --data (default: the bundled test split for mnist or mnist-clutter)")
    t.add_argument("--teacher", default=None, help="online teacher for KD on augmented views (bundled name, file.py:factory, TorchScript)")
    t.add_argument("--teacher-weights", default=None, help="state dict for a factory teacher")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    add_config_args(t, "train", out_help="output folder (metrics.json, seed*/weights.safetensors)", out_required=True)
    t.set_defaults(func=_train)

    from dfnas.teachers import cli as teachers_cli

    t = teachers_cli.ACTIONS.add_parser("train", help="train a bundled teacher from scratch (reproduces the shipped weights)")
    t.add_argument("task", choices=task_names(), help="the bundled task whose train split it learns")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    add_config_args(t, "teacher", out_help="output folder for <name>.safetensors and <name>.json", out_required=True,
                    device=False)
    t.set_defaults(func=_train_teacher)

    e = sub.add_parser("export", help="export a trained architecture to ONNX or TorchScript (outputs checked)")
    e.add_argument("--arch", required=True)
    e.add_argument("--weights", required=True, help=".safetensors (or .pt state dict) trained for this arch")
    e.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    e.add_argument("--out", required=True)
    e.add_argument("--no-check", action="store_true", help="skip comparing the exported model's outputs")
    e.add_argument("--force", action="store_true", help="replace an existing --out file")
    e.set_defaults(func=_export)


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise DfnasError(f"--seeds must be comma-separated integers, got {text!r}") from e
    if not seeds or len(set(seeds)) != len(seeds):
        raise DfnasError(f"--seeds must list distinct integers, got {text!r}")
    return seeds


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    return config_from_args(TrainConfig, args, "train",
                            {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "device")})


def _train(args: argparse.Namespace) -> int:
    from dfnas.data.sources import TASKS, load_source
    from dfnas.dist import from_env
    from dfnas.spaces.arch import load_arch
    from dfnas.training.train import train_arch

    cfg = train_config_from_args(args)
    seeds = _parse_seeds(args.seeds)
    group = from_env(cfg.device)
    cfg.device = group.device(cfg.device)
    record = load_arch(args.arch)
    source = load_source(args.data, args.spec, "train")
    test_ref = args.test_data or (args.data if args.data in TASKS else None)
    test_source = load_source(test_ref, args.spec, "test") if test_ref else None
    teacher = None
    if args.teacher:
        from dfnas.teachers.online import OnlineTeacher, load_online_teacher

        t = load_online_teacher(args.teacher, args.teacher_weights, args.spec, source.spec, f"data {source.name}")
        teacher = OnlineTeacher(t, source.spec)
    if test_source is None and group.is_main:
        print("dfnas: note: no --test-data given; metrics.json will have no test accuracy")
    metrics = train_arch(record, source, test_source, seeds=seeds, out=args.out, teacher=teacher, cfg=cfg,
                         progress=not args.quiet, force=args.force, group=group)
    assert metrics is not None
    if not group.is_main:
        return 0
    print(json.dumps({k: metrics[k] for k in ("test_accuracy_mean", "test_accuracy_std", "flops", "params", "wall_seconds")}))
    print(f"resolved config: {to_dict(cfg)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dfnas.training.export import export_model

    res = export_model(args.arch, args.weights, args.format, args.out, check=not args.no_check, force=args.force)
    print(json.dumps(res))
    return 0


def _train_teacher(args: argparse.Namespace) -> int:
    from dfnas.training.teacher import train_teacher

    cfg = config_from_args(TeacherTrainConfig, args, "teacher", {"epochs": args.epochs, "seed": args.seed})
    rec = train_teacher(cfg, args.out, args.task, progress=not args.quiet, force=args.force)
    print(json.dumps({k: rec[k] for k in ("test_accuracy", "train_accuracy", "train_seconds")}))
    print(f"resolved config: {to_dict(cfg)}")
    return 0
