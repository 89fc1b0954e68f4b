"""Failures from outside: a write that fails (full disk, read-only file system), a process
killed with -9. Each gives one line and exit 2 (or simply stops), leaves the folder resumable,
and a rerun ends identical to an uninterrupted run; a foreign folder or file survives
byte-identical whatever a command was asked to do with it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_when

from dfnas.cli import main

SYNTH = ["synth", "--teacher", "mnist-cnn", "--per-class", "2", "--rounds", "2", "--batch-size", "10",
         "--steps", "6", "--seed", "1", "--quiet"]


def _shards(root: Path) -> dict[str, str]:
    return {k: v["sha256"] for k, v in json.loads((root / "manifest.json").read_text())["shards"].items()}


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_failed_write_is_one_line_and_the_rerun_finishes_identical(tmp_path: Path, capsys, code: int, words: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    assert main([*SYNTH, "--out", str(tmp_path / "ref")]) == 0
    real = safetensors.torch.save_file
    calls = {"n": 0}

    def failing(tensors, path, *a, **k):  # the third shard's write fails as the OS would fail it
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(code, os.strerror(code), path)
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    capsys.readouterr()
    out = tmp_path / "faulty"
    assert main([*SYNTH, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dfnas: error:") and words in err[0], err
    assert not list(out.rglob(".*.tmp"))
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert main([*SYNTH, "--out", str(out)]) == 0
    assert _shards(out) == _shards(tmp_path / "ref")


def test_safetensors_error_around_a_full_disk_reads_as_the_os_error(tmp_path: Path) -> None:
    from dfnas.io import atomic_save

    class SafetensorError(Exception):
        pass

    def write(_tmp: str) -> None:
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })')

    with pytest.raises(OSError) as e:
        atomic_save(tmp_path / "x.safetensors", write)
    assert e.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv", [
    ["synth", "--teacher", "mnist-cnn"],
    ["search", "--data", "mnist"],
    ["train", "--arch", "{arch}", "--data", "mnist"],
    ["run"],
    ["bench", "--quick"],
    ["teacher", "train", "mnist"],
], ids=lambda a: a[0] if a[0] != "teacher" else "teacher-train")
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_foreign_folder_survives_byte_identical(tmp_path: Path, argv: list[str], force: bool, capsys) -> None:
    """Files a user keeps in a folder, including ones named like ours, are never touched."""
    import random

    from dfnas.spaces import create_space, sample_arch
    from dfnas.spaces.arch import save_arch

    arch = tmp_path / "arch.json"
    save_arch(arch, "nb201", 1, {"channels": 4}, sample_arch(create_space("nb201", channels=4), random.Random(0)))
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("notes.txt", "metrics.json", "arch.json", "config.yaml", "run.json", "checkpoint.pt"):
        (mine / name).write_text(f"the user's {name}")
    before = _tree(mine)
    args = [a.replace("{arch}", str(arch)) for a in argv] + ["--out", str(mine)] + (["--force"] if force else [])
    assert main(args) == 2
    assert "not a dfnas" in capsys.readouterr().err
    assert _tree(mine) == before


def test_export_never_overwrites_a_file_without_force(tmp_path: Path, capsys) -> None:
    import random

    import torch

    from dfnas.spaces import create_space, sample_arch
    from dfnas.spaces.arch import save_arch

    net = create_space("nb201", channels=4)
    arch = tmp_path / "arch.json"
    rec = save_arch(arch, "nb201", 1, {"channels": 4}, sample_arch(net, random.Random(0)))
    from safetensors.torch import save_file

    from dfnas.spaces.arch import build_network

    save_file({k: v.contiguous() for k, v in build_network(rec).state_dict().items()}, str(tmp_path / "w.safetensors"))
    target = tmp_path / "model.ts"
    target.write_bytes(b"the user's model")
    base = ["export", "--arch", str(arch), "--weights", str(tmp_path / "w.safetensors"), "--format", "torchscript",
            "--out", str(target)]
    assert main(base) == 2 and target.read_bytes() == b"the user's model"
    assert "--force" in capsys.readouterr().err
    assert main([*base, "--force"]) == 0 and torch.jit.load(str(target)) is not None


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def test_killed_train_resumes_to_the_same_weights(tmp_path: Path) -> None:
    import random

    from dfnas.spaces import create_space, sample_arch
    from dfnas.spaces.arch import save_arch

    arch = tmp_path / "arch.json"
    save_arch(arch, "nb201", 1, {"channels": 4}, sample_arch(create_space("nb201", channels=4), random.Random(0)))
    cli = [sys.executable, "-m", "dfnas", "train", "--arch", str(arch), "--data", "mnist", "--epochs", "3",
           "--seeds", "0", "--quiet", "--set", "batch_size=128"]
    subprocess.run([*cli, "--out", str(tmp_path / "ref")], check=True, env=ENV, capture_output=True)
    out = tmp_path / "killed"
    kill_when([*cli, "--out", str(out)], out / "seed0" / "checkpoint.pt", ENV)
    assert not (out / "metrics.json").exists()
    subprocess.run([*cli, "--out", str(out)], check=True, env=ENV, capture_output=True)
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "ref", out))
    assert a["per_seed"][0]["weights_sha256"] == b["per_seed"][0]["weights_sha256"]
    assert a["test_accuracy_mean"] == b["test_accuracy_mean"]


def test_killed_run_resumes_inside_a_stage_to_the_same_result(tmp_path: Path) -> None:
    from test_pipeline import TINY_ARGS

    cli = [sys.executable, "-m", "dfnas", "run", *TINY_ARGS]
    subprocess.run([*cli, "--out", str(tmp_path / "ref")], check=True, env=ENV, capture_output=True)
    out = tmp_path / "killed"
    kill_when([*cli, "--out", str(out)], out / "synth" / "shards" / "round-00", ENV)  # inside the synth stage
    assert not (out / "stages" / "synth.json").exists()
    subprocess.run([*cli, "--out", str(out)], check=True, env=ENV, capture_output=True)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (tmp_path / "ref", out))
    assert a["network"]["choices"] == b["network"]["choices"]
    weights = [json.loads((d / "train" / "metrics.json").read_text())["per_seed"][0]["weights_sha256"]
               for d in (tmp_path / "ref", out)]
    assert weights[0] == weights[1]


def test_a_folder_holding_only_a_half_written_marker_counts_as_empty(tmp_path: Path) -> None:
    """Killed while writing its marker, a run leaves only `.dfnas.json.*.tmp`: the rerun claims
    the folder (the bench's kill test met this), while any other file still makes it foreign."""
    from dfnas.errors import DfnasError
    from dfnas.io.folders import OutputFolder

    out = tmp_path / "search"
    out.mkdir()
    (out / ".dfnas.json.k2j3.tmp").write_text("{")
    assert OutputFolder(out, "search").claim() is None
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DfnasError, match="not a dfnas search output"):
        OutputFolder(out, "search").claim()
