"""`dfnas synth`: invert a teacher into a labelled synthetic dataset, resumably.

    dfnas synth --teacher mnist-cnn --out runs/synth --per-class 20 --rounds 3 --seed 0

Work is split into (round, batch) units. Slot i of every round has class i % K, so every
batch is class-balanced; round r >= 1 restarts the same slots from fresh noise with the
teacher's softmax on round r-1's *stored* image as target (recursive label calibration).
Each unit draws all its randomness from `derive_seed(seed, round, batch)`, so a resumed run
(or a run split over ranks) produces exactly the shards of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dfnas import __version__
from dfnas.config import check_device, dump_yaml, result_keys, to_dict
from dfnas.data.synthetic import read_dataset
from dfnas.errors import DfnasError
from dfnas.io import atomic_write_json, atomic_write_text, derive_seed, tune_cpu_allocator
from dfnas.synth.config import SynthConfig
from dfnas.synth.engine import Inverter, quantize
from dfnas.synth.report import format_report, quality_report
from dfnas.synth.writer import DatasetWriter, save_grid
from dfnas.teachers import Teacher, validate_teacher
from dfnas.teachers.inputs import input_report
from dfnas.teachers.probe import FeatureProbe

# Bumped when the same config makes other images: 2 = loss terms free of the teacher's units
# (docs/synth-units.md); 3 = the stored image is the last-quarter candidate the teacher gives its
# slot's class, before the lowest loss, and RLC rounds keep each slot's class (`rlc_keep_class`).
# A set begun by an older dfnas is then refused instead of resumed with shards of two different losses.
LOSS_VERSION = 3


def fingerprint(teacher: Teacher, cfg: SynthConfig) -> str:
    """What decides the dataset: config (minus execution settings), teacher weights, spec, loss."""
    c = result_keys(to_dict(cfg), "synth")
    blob = json.dumps({"config": c, "teacher": teacher.weights_hash, "spec": teacher.spec.to_dict(),
                       "format": 1, "loss": LOSS_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


LONG_PLAN_STEPS = 200_000  # teacher steps above which the plan is printed before it starts


def check_plan(cfg: SynthConfig, spec: Any, say: bool = True) -> None:
    """Refuse a plan whose images alone would not fit in this machine's memory (a typo such as
    --per-class 1000000000), and print the size of a long one before it starts."""
    images = cfg.per_class * spec.num_classes * cfg.rounds
    need = images * (spec.channels * spec.height * spec.width + 4 * spec.num_classes + 24)  # uint8, logits, ids
    ram = _machine_memory()
    if ram is not None and need > ram // 2:
        raise DfnasError(f"synth: {images:,} images (per_class {cfg.per_class} x {spec.num_classes} classes x "
                         f"{cfg.rounds} rounds) need about {need / 2**30:.1f} GiB to read back, more than half of "
                         f"this machine's {ram / 2**30:.0f} GiB; lower synth.per_class or synth.rounds")
    batches = math.ceil(cfg.per_class * spec.num_classes / cfg.batch_size) * cfg.rounds
    if say and batches * cfg.steps > LONG_PLAN_STEPS:
        print(f"dfnas synth: a long plan: {images:,} images = {batches:,} batches x {cfg.steps} steps = "
              f"{batches * cfg.steps:,} teacher forward+backward passes; the progress bar shows the time left, "
              "and Ctrl-C then the same command resumes", file=sys.stderr)


def _machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def plan(cfg: SynthConfig, num_classes: int) -> list[torch.Tensor]:
    """Slot classes of each batch of one round (class i % K for slot i)."""
    slots = torch.arange(cfg.per_class * num_classes)
    return [slots[i : i + cfg.batch_size] for i in range(0, len(slots), cfg.batch_size)]


def synthesize(
    teacher: Teacher, cfg: SynthConfig, out: str | Path, force: bool = False, progress: bool = True,
    rank: int = 0, world_size: int = 1, barrier: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) synthesis into `out`; returns the quality report (on rank 0; {} elsewhere).

    With `world_size` > 1 (one call per process, `barrier` waiting for all of them), batch b
    goes to rank b % world_size in every round, so the labels of round r-1 that round r reads
    stay in one process; each rank writes its own shards, and rank 0 registers them all once
    every rank is done. The set is byte-identical whatever the number of processes."""
    spec = teacher.spec
    cfg = cfg.resolve(spec.height, spec.width, spec.channels)
    cfg.validate(spec.num_classes)
    check_plan(cfg, spec, progress and rank == 0)
    n_bn = validate_teacher(teacher, need_bn=cfg.bn_weight > 0, device="cpu")
    if n_bn and rank == 0:  # a spec in the wrong units fails silently: say so before the long work
        warning = input_report(teacher).get("warning")
        if warning:
            print(f"dfnas: warning: {warning}", file=sys.stderr)
    check_device(cfg.device, "synth.device")
    device = torch.device(cfg.device)
    home = next(iter(teacher.module.parameters()), torch.empty(0)).device
    teacher.to(device)
    if device.type == "cpu":
        tune_cpu_allocator()
    if cfg.channels_last:
        teacher.module.to(memory_format=torch.channels_last)
    try:
        probe = FeatureProbe(teacher.module)
    except ValueError as e:
        raise DfnasError(str(e)) from e
    try:
        return _synthesize(teacher, cfg, out, force, progress, rank, world_size, probe, n_bn, device,
                           barrier or (lambda: None))
    finally:  # the teacher object may be reused: leave no hooks behind, put it back where it was
        probe.close()
        teacher.to(home)
        if cfg.channels_last:
            teacher.module.to(memory_format=torch.contiguous_format)


def _synthesize(teacher: Teacher, cfg: SynthConfig, out: str | Path, force: bool, progress: bool,
                rank: int, world_size: int, probe: FeatureProbe, n_bn: int, device: torch.device,
                barrier: Callable[[], None]) -> dict[str, Any]:
    spec = teacher.spec
    header = {
        "fingerprint": fingerprint(teacher, cfg), "teacher": teacher.identity(), "spec": spec.to_dict(),
        "config": to_dict(cfg), "seed": cfg.seed, "bn_layers": n_bn,
    }
    if rank == 0:  # one process claims (or refuses, or clears) the folder; the others join it
        writer = DatasetWriter(out, header, force=force)
        atomic_write_text(writer.root / "config.yaml", dump_yaml(cfg))
    barrier()
    if rank != 0:
        writer = DatasetWriter.join(out, header)
    root = writer.root

    inverter = Inverter(probe, spec, cfg, device)
    batches = plan(cfg, spec.num_classes)
    jobs = [(r, b) for r in range(cfg.rounds) for b in range(len(batches)) if b % world_size == rank]
    done = {(r, b) for r, b in jobs if writer.has(r, b)}  # checked once: a rank's records cost a checksum
    bar = tqdm(total=len(jobs) * cfg.steps, initial=len(done) * cfg.steps, disable=not progress,
               desc="synth", unit="step", dynamic_ncols=True, mininterval=0.5)
    prev: dict[int, torch.Tensor] = {}  # logits of round r-1 per batch, kept while needed
    for r, b in jobs:
        if (r, b) in done:
            continue
        slots = batches[b]
        hard = slots % spec.num_classes
        soft = None
        if r > 0:
            prev_logits = prev.pop(b, None)
            if prev_logits is None:
                prev_logits = writer.read_shard(r - 1, b)["logits"]
            soft = torch.softmax(prev_logits.float() / cfg.label_temperature, dim=1)
            if cfg.rlc_keep_class:
                strays = prev_logits.argmax(1) != hard
                soft[strays] = F.one_hot(hard[strays], spec.num_classes).to(soft.dtype)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "synth", r, b))

        def on_step(step: int, terms: dict[str, torch.Tensor], r: int = r, b: int = b) -> None:
            bar.update(1)
            if step % cfg.log_every == 0:
                bar.set_postfix_str(f"r{r} b{b} " + " ".join(f"{k}={v.item():.3g}" for k, v in terms.items()), refresh=False)

        t0 = time.perf_counter()
        x = inverter.invert(hard, soft, gen, on_step=on_step)
        if x.shape[-2:] != (spec.height, spec.width):  # a larger canvas is stored at the input size,
            x = F.interpolate(x, size=(spec.height, spec.width), mode="bilinear",  # as scored for "best"
                              align_corners=False, antialias=True)
        images = quantize(x).cpu()
        _, logits = inverter.score_stored(images.float().div(255).to(device), hard.to(device), None)
        seconds = time.perf_counter() - t0
        writer.write_shard(r, b, {"images": images, "logits": logits.cpu(), "labels": hard,
                                  "rounds": torch.full_like(hard, r), "slots": slots}, seconds)
        if r + 1 < cfg.rounds:
            prev[b] = logits.cpu()
        if world_size == 1 and (b == len(batches) - 1 or (r, b) == jobs[-1]):
            _preview(writer, r, spec.num_classes)
    bar.close()
    barrier()  # every rank's shards are on disk
    if rank != 0:
        barrier()  # until rank 0 has registered them
        return {}
    writer.register_all([(r, b) for r in range(cfg.rounds) for b in range(len(batches))])
    writer.finish(spec.num_classes)
    for r in range(cfg.rounds):
        if not (root / "previews" / f"round-{r:02d}.png").is_file():
            _preview(writer, r, spec.num_classes)
    _, t = read_dataset(root)
    secs: dict[int, float] = {}
    for rec in writer.manifest["shards"].values():
        secs[rec["round"]] = secs.get(rec["round"], 0.0) + rec["seconds"]
    rep = quality_report(probe, spec, t["images"], t["logits"], t["labels"], t["rounds"], secs, device=str(device))
    rep.update({"dfnas_version": __version__, "seed": cfg.seed, "teacher": teacher.identity(),
                "images": len(t["labels"]), "steps_per_batch": cfg.steps,
                "seconds_per_step": sum(secs.values()) / max(1, len(writer.manifest["shards"]) * cfg.steps)})
    atomic_write_json(root / "report.json", rep)
    if world_size > 1:
        barrier()
    if progress:
        print(format_report(rep))
    return rep


def _preview(writer: DatasetWriter, r: int, num_classes: int) -> None:
    names = sorted(n for n in writer.manifest["shards"] if n.startswith(f"round-{r:02d}/"))
    if not names:
        return
    parts = [writer.read_shard(r, writer.manifest["shards"][n]["batch"]) for n in names]
    images = torch.cat([p["images"] for p in parts])
    labels = torch.cat([p["labels"] for p in parts])
    save_grid(writer.root / "previews" / f"round-{r:02d}.png", images, labels, num_classes,
              per_class=min(10, max(1, math.ceil(len(labels) / num_classes))))
