"""`dfnas synth` (make a synthetic set) and `dfnas synth export` (ImageFolder of PNGs)."""

from __future__ import annotations

import argparse

from dfnas.config import add_config_args, config_from_args
from dfnas.dist import from_env
from dfnas.errors import DfnasError
from dfnas.synth.config import SynthConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="synthesize a labelled image set from a teacher (model inversion + RLC)",
        description="Synthesize a labelled image set from a teacher. `dfnas synth export DIR --imagefolder OUT` "
        "writes an existing set as PNG class folders.",
    )
    p.add_argument("--teacher", help="mnist-cnn | file.py:factory | package.module:factory | model.ts")
    p.add_argument("--weights", help="state dict for a factory teacher (.safetensors or .pt)")
    p.add_argument("--spec", help="input spec JSON (needed for user teachers)")
    p.add_argument("--per-class", type=int, dest="per_class", help="images per class per round")
    p.add_argument("--rounds", type=int, help="label-calibration rounds (1 = plain inversion)")
    p.add_argument("--steps", type=int, help="optimisation steps per batch")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--no-regional", action="store_true", help="update the whole image every step (ablation)")
    p.add_argument("--seed", type=int)
    add_config_args(p, "synth", out_help="output folder (created; an unfinished run there is resumed)")
    p.set_defaults(func=_synth)
    esub = p.add_subparsers(dest="synth_command", metavar="export")
    e = esub.add_parser("export", help="write a synthetic set as an ImageFolder tree of PNGs")
    e.add_argument("dir", help="a dfnas synth output folder")
    e.add_argument("--imagefolder", required=True, help="new folder for class subfolders 000_name/ ...")
    e.set_defaults(func=_export)


def synth_config_from_args(args: argparse.Namespace) -> SynthConfig:
    flags = {k: getattr(args, k) for k in ("per_class", "rounds", "steps", "batch_size", "seed", "device")}
    return config_from_args(SynthConfig, args, "synth", {**flags, "regional": False if args.no_regional else None})


def _synth(args: argparse.Namespace) -> int:
    from dfnas.synth import synthesize
    from dfnas.teachers import load_teacher

    if not args.teacher or not args.out:
        raise DfnasError("dfnas synth needs --teacher and --out (e.g. --teacher mnist-cnn --out runs/synth)")
    cfg = synth_config_from_args(args)  # config errors before loading anything heavy
    group = from_env(cfg.device)
    cfg.device = group.device(cfg.device)
    teacher = load_teacher(args.teacher, args.weights, args.spec)
    rep = synthesize(teacher, cfg, args.out, force=args.force, progress=not args.quiet and group.is_main,
                     rank=group.rank, world_size=group.world_size, barrier=group.barrier)
    if group.is_main:
        print(f"wrote {rep['images']} images to {args.out} (report: {args.out}/report.json, "
              f"previews: {args.out}/previews/)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dfnas.synth.writer import export_imagefolder

    n = export_imagefolder(args.dir, args.imagefolder)
    print(f"exported {n} images to {args.imagefolder}")
    return 0
