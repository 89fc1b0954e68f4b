"""Train a fixed architecture: from scratch on real data, or data-free by distillation.

* real data (labels only) -> cross-entropy;
* a synthetic set (stored teacher logits) -> KD at temperature T to those logits;
* an online `teacher` -> KD to the teacher's logits on the same augmented view.

SGD with Nesterov momentum and a per-step cosine schedule; batched augmentation (random
translation, horizontal flip only where the spec allows it). Several seeds, each in
`out/seed{K}/` with a checkpoint after every epoch (atomic), so a killed run resumes where
it stopped and ends with the same weights; `out/metrics.json` collects test accuracy per
seed and mean +- std, FLOPs, params and wall time. Weights are saved as safetensors.

Under torchrun (`group`), every process takes its rows of each batch, BatchNorm and gradients
are reduced over all of them (`dfnas.dist`), the test set is split for evaluation, and rank 0
writes the folder: the same weights and metrics as one process, to float rounding.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dfnas import __version__
from dfnas.config import result_keys, to_dict
from dfnas.data.sources import Source
from dfnas.data.transforms import augment
from dfnas.dist import Group, sync_batchnorm, synced
from dfnas.errors import DfnasError
from dfnas.io import atomic_save, atomic_write_json, derive_seed, sha256_tensors
from dfnas.io.folders import OutputFolder, differing_keys
from dfnas.spaces import to_memory_format
from dfnas.spaces.arch import ArchRecord, build_network, load_arch
from dfnas.spaces.profile import profile
from dfnas.teachers.online import teacher_logits
from dfnas.training.config import TrainConfig
from dfnas.training.loop import accuracy, optimizer_step, warmup_cosine
from dfnas.training.losses import kd_loss


def check_compatible(record: ArchRecord, source: Source, what: str = "data") -> None:
    """The data must have the shape and class count the architecture was built for."""
    c, h, w = record.input_shape
    n_cls = record.space_cfg.get("num_classes")
    if source.spec.signature != (c, h, w, n_cls):
        raise DfnasError(f"{what} {source.name} is {source.spec.describe()}, the architecture was built for "
                         f"{c}x{h}x{w} images of {n_cls} classes; search with matching space settings")


def _same_run(old: dict[str, Any] | None, run_key: dict[str, Any]) -> bool:
    """Whether a seed folder's key is this run's, ignoring execution settings (older folders kept them)."""
    return old is not None and {**old, "config": result_keys(old.get("config", {}), "train")} == run_key


def evaluate(model: nn.Module, source: Source, device: torch.device | str = "cpu", batch_size: int = 500,
             group: Group | None = None) -> float:
    """Top-1 accuracy against the source's labels (`group`: each process scores its part)."""
    group = group or Group()
    if not group.distributed:
        return accuracy(model, source.x, source.y, source.normalize, device, batch_size)
    part = group.rows(len(source.y))
    n_part = part.stop - part.start
    acc = accuracy(model, source.x[part], source.y[part], source.normalize, device, batch_size) if n_part else 0.0
    hits = torch.tensor([acc * n_part], dtype=torch.float64)
    group.reduce_([hits])
    return round(float(hits)) / len(source.y)


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(statistics.fmean(values)), float(statistics.stdev(values)) if len(values) > 1 else 0.0


def _train_one_seed(record: ArchRecord, source: Source, test_source: Source | None, cfg: TrainConfig,
                    seed: int, seed_dir: Path, teacher: nn.Module | None, run_key: dict[str, Any],
                    progress: bool, max_epochs_this_call: int | None, group: Group) -> dict[str, Any] | None:
    device = torch.device(cfg.device)
    main = group.is_main
    if main:
        seed_dir.mkdir(parents=True, exist_ok=True)
    group.barrier()  # the last seed's files are written before any rank looks for a checkpoint
    torch.manual_seed(derive_seed(seed, "init"))
    net = to_memory_format(build_network(record), cfg.channels_last).to(device)
    if group.distributed and cfg.sync_bn:
        sync_batchnorm(net)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    n = len(source)
    bs = min(cfg.batch_size, n)
    rows, share = group.split(bs, "train.batch_size")  # share: its weight in the global batch's mean loss
    steps_per_epoch = max(1, n // bs)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, round(cfg.warmup_epochs * steps_per_epoch),
                                                                    cfg.lr_min / cfg.lr))
    gen = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    shift = cfg.max_shift if cfg.max_shift is not None else source.spec.height // 14
    flip = cfg.flip and source.spec.allow_flip
    start, elapsed, history = 0, 0.0, []
    ckpt = seed_dir / "checkpoint.pt"
    if ckpt.is_file():  # our own file; still loaded with weights_only
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if not _same_run(state.get("run_key"), run_key):
            raise DfnasError(f"{seed_dir} holds a run with another architecture, data or config; use another --out")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.random.set_rng_state(state["torch_rng"])
        start, elapsed, history = int(state["epoch"]), float(state["elapsed"]), list(state["history"])
    if teacher is not None:
        teacher.to(device).eval()
    x_all, y_all = source.x, source.y
    logits_all = source.logits
    kind = "kd-online" if teacher is not None else ("kd-stored" if logits_all is not None else "ce")
    bar = tqdm(range(start, cfg.epochs), desc=f"train seed {seed}", disable=not progress or not main,
               initial=start, total=cfg.epochs, leave=False)
    epochs_done = 0
    for epoch in bar:
        if max_epochs_this_call is not None and epochs_done >= max_epochs_this_call:
            return None
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            xb = augment(x_all[idx].to(device).to(torch.get_default_dtype()).div_(255), shift, flip, gen)
            xb = source.normalize(xb)
            if group.distributed:  # augmented as one batch, identically on every rank; then split
                xb, idx = xb[rows], idx[rows]
            yb = y_all[idx].to(device)
            with synced(net, group.distributed):  # BatchNorm over the global batch
                out = net(xb)
            if teacher is not None:
                loss = kd_loss(out, teacher_logits(teacher, xb), cfg.kd_temperature)
            elif logits_all is not None:
                loss = kd_loss(out, logits_all[idx].to(device), cfg.kd_temperature)
            else:
                loss = F.cross_entropy(out, yb)
            if group.distributed:
                loss = loss * share
            stats = torch.stack([loss.detach().double(), (out.detach().argmax(1) == yb).sum().double()])
            optimizer_step(opt, loss, net, cfg.grad_clip,
                           (lambda grads, st=stats: group.reduce_([*grads, st])) if group.distributed else None)
            sched.step()
            loss_sum += float(stats[0]) * bs
            correct += int(stats[1])
            seen += bs
        if not math.isfinite(loss_sum):
            raise DfnasError(f"training diverged (loss {loss_sum}) at epoch {epoch + 1}; lower train.lr")
        entry = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                 "lr": sched.get_last_lr()[0]}
        if test_source is not None:
            entry["test_accuracy"] = evaluate(net, test_source, device, cfg.eval_batch_size, group)
        elapsed += time.perf_counter() - t0
        history.append(entry)
        bar.set_postfix({k: f"{v:.4f}" for k, v in entry.items() if k != "epoch"})
        state = {"model": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                 "gen": gen.get_state(), "torch_rng": torch.random.get_rng_state(), "epoch": epoch + 1,
                 "elapsed": elapsed, "history": history, "run_key": run_key}
        if main:
            atomic_save(ckpt, lambda p, s=state: torch.save(s, p))
        epochs_done += 1
    from safetensors.torch import save_file

    sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    digest = sha256_tensors(sd)
    group.check_same(digest, "weights")
    if main:
        atomic_save(seed_dir / "weights.safetensors", lambda p: save_file(sd, p))
    result = {
        "seed": seed,
        "loss": kind,
        "test_accuracy": (evaluate(net, test_source, device, cfg.eval_batch_size, group)
                          if test_source is not None else None),
        "train_accuracy": history[-1]["train_accuracy"] if history else None,
        "final_train_loss": history[-1]["loss"] if history else None,
        "wall_seconds": round(elapsed, 2),
        "weights": str(Path(seed_dir.name) / "weights.safetensors"),
        "weights_sha256": digest,
        "history": history,
        "run_key": run_key,
    }
    if main:
        atomic_write_json(seed_dir / "result.json", result)
        ckpt.unlink(missing_ok=True)
    return result


def train_arch(record: ArchRecord | str | Path, source: Source, test_source: Source | None = None,
               epochs: int | None = None, seeds: Sequence[int] = (0,), out: str | Path = "train",
               teacher: nn.Module | None = None, cfg: TrainConfig | None = None, progress: bool = True,
               max_epochs_this_call: int | None = None, force: bool = False,
               group: Group | None = None) -> dict[str, Any] | None:
    """Train the architecture once per seed; returns (and writes) `metrics.json`'s content.

    `teacher`: an online teacher module (KD on each augmented view) taking normalised input.
    `max_epochs_this_call` stops early (returns None) and leaves checkpoints to resume from.
    `force`: start over in a folder this function made for another architecture, data or config.
    `group`: the processes of a torchrun launch; rank 0 writes the folder, all return the metrics.
    """
    group = group or Group()
    if not isinstance(record, ArchRecord):
        record = load_arch(record)
    cfg = cfg or TrainConfig()
    if epochs is not None:
        cfg.epochs = epochs
    cfg.validate("train")
    if not seeds:
        raise DfnasError("give at least one seed, e.g. --seeds 0,1,2")
    check_compatible(record, source, "training data")
    if test_source is not None:
        check_compatible(record, test_source, "test data")
    out = Path(out)
    run_key = {"choices": record.choices, "space": record.space, "space_cfg": record.space_cfg,
               "data": source.identity, "config": result_keys(to_dict(cfg), "train"), "teacher": teacher is not None}
    run_key = json.loads(json.dumps(run_key))  # as it reads back from the marker
    if group.is_main:
        _prepare(out, run_key, force)
    group.barrier()
    per_seed = []
    for seed in seeds:
        seed_dir = out / f"seed{seed}"
        done = seed_dir / "result.json"
        if done.is_file():
            res = json.loads(done.read_text())
            if _same_run(res.get("run_key"), run_key):
                per_seed.append(res)
                continue
            raise DfnasError(f"{seed_dir} holds a finished run with another architecture, data or config; use another --out")
        res = _train_one_seed(record, source, test_source, cfg, int(seed), seed_dir, teacher, run_key,
                              progress, max_epochs_this_call, group)
        if res is None:
            return None
        per_seed.append(res)
    prof = profile(build_network(record), record.input_shape)
    accs = [r["test_accuracy"] for r in per_seed if r["test_accuracy"] is not None]
    mean, std = _mean_std(accs)
    metrics = {
        "space": record.space, "space_version": record.space_version, "choices": record.choices,
        "arch_file": record.path, "flops": prof["flops"], "params": prof["params"],
        "data": source.identity, "test_data": test_source.identity if test_source is not None else None,
        "loss": per_seed[0]["loss"], "config": to_dict(cfg), "seeds": [int(s) for s in seeds],
        "test_accuracy_mean": mean if accs else None, "test_accuracy_std": std if accs else None,
        "per_seed": [{k: v for k, v in r.items() if k not in ("history", "run_key")} for r in per_seed],
        "wall_seconds": round(sum(r["wall_seconds"] for r in per_seed), 2),
        "dfnas_version": __version__,
    }
    if group.is_main:
        atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _prepare(out: Path, run_key: dict[str, Any], force: bool) -> None:
    """Claim `out`; in our own folder for another run, clear it only with `force`."""
    folder = OutputFolder(out, "train", legacy=("metrics.json", "per_seed"))
    prev = folder.claim()
    # an older dfnas's folder has no marker identity: its seed folders are checked one by one
    if prev is not None and not folder.is_legacy and folder.changed(differing_keys(prev, run_key), force,
                                                                    "architecture, data or config"):
        for d in out.glob("seed*"):
            if d.is_dir():
                shutil.rmtree(d)
        (out / "metrics.json").unlink(missing_ok=True)
    folder.save(run_key)
