"""Train a bundled teacher on its task's fixed real split, reproducibly.

    dfnas teacher train mnist --out DIR           # DIR/mnist-cnn.safetensors + .json
    dfnas teacher train mnist-clutter --out DIR   # DIR/mnist-clutter-cnn.safetensors + .json

The shipped weights in `dfnas/teachers/weights/` were made by these commands with the
default `TeacherTrainConfig`. Resumable: a checkpoint after every epoch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dfnas import __version__
from dfnas.config import to_dict
from dfnas.data.sources import TASKS
from dfnas.data.transforms import augment
from dfnas.io import atomic_save, atomic_write_json, sha256_tensors
from dfnas.io.folders import OutputFolder, differing_keys
from dfnas.teachers.config import TeacherTrainConfig
from dfnas.teachers.mnist_cnn import MnistCNN
from dfnas.training.loop import accuracy, cosine, optimizer_step


def teacher_name(task: str) -> str:
    return f"{task}-cnn"


def train_teacher(cfg: TeacherTrainConfig, out: str | Path, task: str = "mnist", progress: bool = True,
                  force: bool = False) -> dict[str, Any]:
    """Train `MnistCNN` on `task`'s train split; writes <task>-cnn.safetensors and its record.
    `force`: start over in a folder this made for another task or recipe."""
    out = Path(out)
    spec_fn, split_fn, split_words = TASKS[task]
    name = teacher_name(task)
    identity = {"task": task, "recipe": to_dict(cfg)}
    folder = OutputFolder(out, "teacher", legacy=(f"{name}.json", "recipe"))
    prev = folder.claim()
    if prev is not None and folder.is_legacy:
        prev = {"task": prev.get("task"), "recipe": prev.get("recipe")}
    if prev is not None and folder.changed(differing_keys(prev, identity), force, "task or recipe"):
        for f in (f"{name}-train.ckpt", f"{name}.safetensors", f"{name}.json"):
            (out / f).unlink(missing_ok=True)
    folder.save(identity)
    spec = spec_fn()
    xtr, ytr = split_fn("train")
    xte, yte = split_fn("test")
    torch.manual_seed(cfg.seed)
    model = MnistCNN(width=cfg.width)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(xtr) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, total, 1.0, 0.0))
    gen = torch.Generator().manual_seed(cfg.seed)
    start_epoch = 0
    ckpt = out / f"{name}-train.ckpt"
    if ckpt.is_file():  # resume: our own file, still loaded with weights_only
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        start_epoch = int(state["epoch"])
    t0 = time.time()
    bar = tqdm(range(start_epoch, cfg.epochs), desc="teacher", disable=not progress, initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb = augment(xtr[idx].float() / 255, max_shift=2, flip=False, generator=gen)
            loss = F.cross_entropy(model(spec.normalize(xb)), ytr[idx])
            optimizer_step(opt, loss, model)
            sched.step()
        acc = accuracy(model, xte, yte, spec.normalize)
        bar.set_postfix(loss=f"{loss.item():.3f}", test_acc=f"{acc:.4f}")
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                 "gen": gen.get_state(), "epoch": epoch + 1}
        atomic_save(ckpt, lambda p, s=state: torch.save(s, p))
    acc = accuracy(model, xte, yte, spec.normalize)
    train_acc = accuracy(model, xtr, ytr, spec.normalize)
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_save(out / f"{name}.safetensors", lambda p: save_file(sd, p))
    record = {
        "name": name,
        "task": task,
        "factory": "dfnas.teachers.mnist_cnn:build",
        "factory_kwargs": {"width": cfg.width},
        "spec": spec.to_dict(),
        "test_accuracy": acc,
        "train_accuracy": train_acc,
        "split": split_words,
        "recipe": to_dict(cfg),
        "weights_sha256": sha256_tensors(sd),
        "dfnas_version": __version__,
        "train_seconds": round(time.time() - t0, 1),
        "command": f"dfnas teacher train {task} --out {out} --epochs {cfg.epochs} --seed {cfg.seed}",
    }
    atomic_write_json(out / f"{name}.json", record)
    ckpt.unlink(missing_ok=True)
    return record
