"""End-to-end synthesis runs: outputs, RLC wiring, user teachers, resume, refusal, export."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import kill_when

from dfnas.cli import main
from dfnas.data.sources import SyntheticDataset, load_source
from dfnas.data.synthetic import read_dataset
from dfnas.errors import DfnasError
from dfnas.synth import synthesize
from dfnas.synth.engine import Inverter
from dfnas.synth.writer import export_imagefolder
from dfnas.teachers import load_teacher


def test_bundled_run_outputs_and_rlc_targets(tmp_path, tiny_cfg, monkeypatch):
    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    original = Inverter.invert

    def spy(self, hard, soft, gen, on_step=None):
        seen.append((hard.clone(), None if soft is None else soft.clone()))
        return original(self, hard, soft, gen, on_step)

    monkeypatch.setattr(Inverter, "invert", spy)
    t = load_teacher("mnist-cnn")
    rep = synthesize(t, tiny_cfg, tmp_path / "s", progress=False)
    manifest, data = read_dataset(tmp_path / "s")
    assert manifest["status"] == "complete" and manifest["counts"]["per_class"] == [4] * 10
    assert manifest["counts"]["per_round"] == {"0": 20, "1": 20}
    assert data["images"].dtype == torch.uint8 and data["images"].shape == (40, 1, 28, 28)
    assert (tmp_path / "s" / "previews" / "round-01.png").is_file()
    assert [r["round"] for r in rep["rounds"]] == [0, 1] and json.loads((tmp_path / "s" / "report.json").read_text())

    # soft labels are the teacher on the stored uint8 images, not on a jittered float view
    with torch.inference_mode():
        fresh = t.module(t.spec.normalize(data["images"].float() / 255))
    assert torch.allclose(fresh, data["logits"], atol=1e-4)

    # round 0: hard labels only; round 1: targets = softmax of round 0's stored logits, same slots
    # (a slot whose round-0 image the teacher gave another class gets its hard label back)
    r0 = data["rounds"] == 0
    assert all(s is None for _, s in seen[:2]) and all(s is not None for _, s in seen[2:])
    want = torch.softmax(data["logits"][r0], 1)
    strays = data["logits"][r0].argmax(1) != data["labels"][r0]
    want[strays] = torch.nn.functional.one_hot(data["labels"][r0][strays], 10).float()
    got = torch.cat([s for _, s in seen[2:]])
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(data["slots"][r0], data["slots"][~r0])

    ds = SyntheticDataset(tmp_path / "s")
    x, logit, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == int(data["labels"][3])
    assert torch.allclose(x, t.spec.normalize(data["images"][3:4].float() / 255)[0])


@pytest.mark.parametrize("keep", [True, False])
def test_rlc_rounds_keep_each_slots_class_unless_asked_not_to(tmp_path, tiny_cfg, monkeypatch, keep):
    seen: list[torch.Tensor] = []
    original = Inverter.invert

    def swap_round0(self, hard, soft, gen, on_step=None):
        x = original(self, hard, soft, gen, on_step)
        if soft is None:  # round 0: each slot stores its neighbour's image, of another class
            return x.roll(1, 0)
        seen.append(soft.clone())
        return x

    monkeypatch.setattr(Inverter, "invert", swap_round0)
    synthesize(load_teacher("mnist-cnn"), dataclasses.replace(tiny_cfg, rlc_keep_class=keep), tmp_path / "s",
               progress=False)
    _, data = read_dataset(tmp_path / "s")
    r0 = data["rounds"] == 0
    strays = data["logits"][r0].argmax(1) != data["labels"][r0]
    assert strays.sum() >= 10  # the swap made most round-0 images another class's
    got = torch.cat(seen)
    soft = torch.softmax(data["logits"][r0], 1)
    if keep:
        assert torch.equal(got[strays], torch.nn.functional.one_hot(data["labels"][r0][strays], 10).float())
        assert torch.allclose(got[~strays], soft[~strays], atol=1e-6)
    else:
        assert torch.allclose(got, soft, atol=1e-6)


def test_same_seed_same_data_other_seed_other_data(tmp_path, tiny_cfg):
    t = load_teacher("mnist-cnn")
    cfg = dataclasses.replace(tiny_cfg, rounds=1)
    synthesize(t, cfg, tmp_path / "a", progress=False)
    synthesize(t, cfg, tmp_path / "b", progress=False)
    synthesize(t, dataclasses.replace(cfg, seed=1), tmp_path / "c", progress=False)
    a, b, c = (read_dataset(tmp_path / n)[1]["images"] for n in "abc")
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kind", ["factory", "torchscript"])
def test_user_teacher_run(tmp_path, tiny_cfg, user_teacher, kind):
    if kind == "factory":
        t = load_teacher(f"{user_teacher['py']}:build", user_teacher["safetensors"], user_teacher["spec"])
    else:
        t = load_teacher(str(user_teacher["ts"]), spec=user_teacher["spec"])
    cfg = dataclasses.replace(tiny_cfg, per_class=3, batch_size=6, canvas_scale=1.25)
    rep = synthesize(t, cfg, tmp_path / "u", progress=False)
    m, data = read_dataset(tmp_path / "u")
    # a 20 px canvas (1.25 x 16), stored at the input size so every trainer can use it, with
    # the teacher's logits on exactly the stored images
    assert data["images"].shape == (24, 3, 16, 16)
    from dfnas.data.sources import load_source
    from dfnas.teachers.online import OnlineTeacher

    src = load_source(str(tmp_path / "u"))
    fresh = OnlineTeacher(t)(src.normalize(src.x.float() / 255)).detach()
    assert torch.allclose(src.logits, fresh, atol=1e-4)
    assert m["spec"]["class_names"] == ["cat", "dog", "cup", "mug"]
    assert len(rep["rounds"]) == 2 and m["teacher"]["kind"] == kind


def _shard_hashes(root: Path) -> dict[str, str]:
    m = json.loads((root / "manifest.json").read_text())
    return {k: v["sha256"] for k, v in m["shards"].items()}


def test_resume_after_kill_gives_identical_dataset(tmp_path):
    args = ["synth", "--teacher", "mnist-cnn", "--per-class", "3", "--rounds", "2", "--batch-size", "10",
            "--steps", "40", "--seed", "3", "--quiet"]
    # every run in a fresh process: CPU float sums depend on the thread count, which other
    # tests in this process may have changed
    cli = [sys.executable, "-m", "dfnas.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*cli, "--out", str(tmp_path / "ref")], check=True, env=env)
    out = tmp_path / "killed"
    def one_shard_landed() -> bool:
        try:
            return len(_shard_hashes(out)) >= 1
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    kill_when([*cli, "--out", str(out)], one_shard_landed, env)  # kill -9 mid-run
    partial = _shard_hashes(out)
    assert 0 < len(partial) < 6, "the kill should land mid-run"
    subprocess.run([*cli, "--out", str(out)], check=True, env=env)
    assert _shard_hashes(out) == _shard_hashes(tmp_path / "ref")
    assert not list(out.rglob(".*.tmp"))


def test_refuses_foreign_other_config_and_corrupt(tmp_path, tiny_cfg):
    t = load_teacher("mnist-cnn")
    cfg = dataclasses.replace(tiny_cfg, rounds=1, per_class=1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DfnasError, match="not a dfnas synth output"):
        synthesize(t, cfg, foreign, progress=False, force=True)
    assert (foreign / "notes.txt").read_text() == "keep me"

    synthesize(t, cfg, tmp_path / "s", progress=False)
    before = _shard_hashes(tmp_path / "s")
    with pytest.raises(DfnasError, match="another teacher or config"):
        synthesize(t, dataclasses.replace(cfg, steps=13), tmp_path / "s", progress=False)
    assert _shard_hashes(tmp_path / "s") == before

    shard = next((tmp_path / "s" / "shards").rglob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-7] + b"garbage")
    with pytest.raises(DfnasError, match="corrupted"):
        read_dataset(tmp_path / "s")
    with pytest.raises(DfnasError, match="corrupted"):
        synthesize(t, cfg, tmp_path / "s", progress=False)
    synthesize(t, dataclasses.replace(cfg, steps=13), tmp_path / "s", progress=False, force=True)
    assert read_dataset(tmp_path / "s")[0]["config"]["steps"] == 13


def test_export_imagefolder_round_trip(tmp_path, tiny_cfg):
    t = load_teacher("mnist-cnn")
    synthesize(t, dataclasses.replace(tiny_cfg, rounds=1), tmp_path / "s", progress=False)
    n = export_imagefolder(tmp_path / "s", tmp_path / "png")
    folders = sorted(p.name for p in (tmp_path / "png").iterdir() if p.is_dir())
    assert n == 20 and folders == [f"{k:03d}_{k}" for k in range(10)]
    src = load_source(str(tmp_path / "png"), spec=t.spec)
    _, data = read_dataset(tmp_path / "s")
    order = torch.argsort(data["labels"] * 1000 + data["slots"], stable=True)
    assert torch.equal(src.x, data["images"][order]) and torch.equal(src.y, data["labels"][order])
    with pytest.raises(DfnasError, match="not empty"):
        export_imagefolder(tmp_path / "s", tmp_path / "png")


def test_cli_errors_exit_2(tmp_path, capsys, user_teacher):
    assert main(["synth", "--teacher", "mnist-cnn", "--out", str(tmp_path / "x"), "--set", "stepz=3"]) == 2
    assert "unknown config key 'synth.stepz'" in capsys.readouterr().err
    assert main(["synth", "--teacher", "nope.ts", "--out", str(tmp_path / "x"), "--spec", str(user_teacher["spec"])]) == 2
    assert main(["synth", "--teacher", f"{user_teacher['py']}:build_no_bn", "--weights", str(user_teacher["safetensors"]),
                 "--spec", str(user_teacher["spec"]), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()  # refused before any folder was made
    assert main(["synth", "export", str(tmp_path / "missing"), "--imagefolder", str(tmp_path / "o")]) == 2
