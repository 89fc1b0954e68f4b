"""`torchrun` scale-out of synthesis (gloo, 2 processes on the CPU): the set is byte-identical
to a one-process run, and a run killed under one process count resumes under another."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["synth", "--teacher", "mnist-cnn", "--per-class", "3", "--rounds", "2", "--batch-size", "10",
        "--steps", "12", "--seed", "5", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), "-m", "dfnas"]


def _shards(root: Path) -> dict[str, str]:
    m = json.loads((root / "manifest.json").read_text())
    assert m["status"] == "complete"
    return {k: v["sha256"] for k, v in m["shards"].items()}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("dist") / "one"
    subprocess.run([sys.executable, "-m", "dfnas", *ARGS, "--out", str(out)], check=True, env=ENV, capture_output=True)
    return _shards(out)


def test_two_processes_give_the_one_process_set(tmp_path: Path, one_process: dict[str, str]) -> None:
    out = tmp_path / "two"
    done = subprocess.run([*_torchrun(2), *ARGS, "--out", str(out)], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _shards(out) == one_process and len(one_process) == 6  # 3 batches x 2 rounds, uneven over 2 ranks
    assert not list(out.rglob("*.safetensors.json")) and not list(out.rglob(".*.tmp"))
    assert done.stdout.count("wrote 60 images") == 1  # one summary, from rank 0


def test_killed_two_process_run_resumes_with_one_process(tmp_path: Path, one_process: dict[str, str]) -> None:
    out = tmp_path / "killed"
    proc = subprocess.Popen([*_torchrun(2), *ARGS, "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "shards").rglob("*.safetensors")) and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # every rank and the launcher, mid-run
    proc.wait()
    assert not (out / "manifest.json").exists() or json.loads((out / "manifest.json").read_text())["status"] != "complete"
    subprocess.run([sys.executable, "-m", "dfnas", *ARGS, "--out", str(out)], check=True, env=ENV, capture_output=True)
    assert _shards(out) == one_process
