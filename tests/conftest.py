"""Shared fixtures: tiny synthesis settings and a user teacher written to disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dfnas.synth.config import SynthConfig

# Tiny tensors: one intra-op thread is faster than two and keeps timings stable in CI.
torch.set_num_threads(1)

USER_TEACHER = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, channels=3, classes=4):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(8, classes)

        def forward(self, x):
            return self.head(self.body(x))

    def build():
        return Net()

    def build_no_bn():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    """
)

USER_SPEC = {"channels": 3, "height": 16, "width": 16, "num_classes": 4,
             "mean": [127.5, 127.5, 127.5], "std": [64.0, 64.0, 64.0], "pixel_range": [0, 255],
             "class_names": ["cat", "dog", "cup", "mug"], "allow_flip": True}


@pytest.fixture
def user_teacher(tmp_path: Path) -> dict[str, Path]:
    """A 3x16x16, 4-class teacher taking raw 0-255 pixels, as factory file + weights + spec."""
    py = tmp_path / "teacher_def.py"
    py.write_text(USER_TEACHER)
    import importlib.util

    spec = importlib.util.spec_from_file_location("teacher_def_fixture", py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.build()
    with torch.no_grad():  # non-trivial running statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    (tmp_path / "spec.json").write_text(json.dumps(USER_SPEC))
    net.eval()
    torch.jit.save(torch.jit.trace(net, torch.rand(2, 3, 16, 16)), str(tmp_path / "net.ts"))
    return {"py": py, "safetensors": tmp_path / "w.safetensors", "pt": tmp_path / "w.pt",
            "spec": tmp_path / "spec.json", "ts": tmp_path / "net.ts", "module": net}


@pytest.fixture
def tiny_cfg() -> SynthConfig:
    return SynthConfig(per_class=2, rounds=2, batch_size=10, steps=12, best_every=2, log_every=5)


def kill_when(cmd: list[str], ready: Path | Callable[[], bool], env: dict[str, str], timeout: float = 120.0) -> None:
    """Start `cmd` and kill -9 it as soon as `ready` (a path that exists, or a predicate) holds:
    a kill that lands mid-run, never after the command finished by itself."""
    check = ready.exists if isinstance(ready, Path) else ready
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline and not check():
        time.sleep(0.02)
    assert proc.poll() is None, "the command finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def torchrun_worker(launcher: int, rank: int) -> int | None:
    """The pid of worker `rank` that the torchrun process `launcher` started (Linux /proc), to
    kill one rank alone."""
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == launcher and \
                    f"RANK={rank}".encode() in (d / "environ").read_bytes().split(b"\0"):
                return int(d.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def kill_one_worker(cmd: list[str], env: dict[str, str], ready: Callable[[], bool], rank: int = 1,
                    wait: float = 240) -> int:
    """Launch the torchrun command `cmd`, kill -9 its worker `rank` alone once `ready()`, and return
    the launch's exit code: torchrun must stop the other workers instead of leaving them waiting."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + wait
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    victim = torchrun_worker(proc.pid, rank)
    assert victim is not None and proc.poll() is None, "the launch ended before the worker could be killed"
    os.kill(victim, signal.SIGKILL)
    try:
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
