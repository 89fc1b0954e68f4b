"""Bad input across every command: exit 2, one line on stderr naming the problem, no traceback,
and nothing on disk changed (files before == files after), before any long work starts."""

from __future__ import annotations

import datetime
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dfnas.cli import main
from dfnas.spaces import create_space, sample_arch
from dfnas.spaces.arch import save_arch

SPEC = {"channels": 1, "height": 28, "width": 28, "num_classes": 10, "mean": [0.5], "std": [0.5]}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace of bad and good inputs shared by the cases (none of them writes here)."""
    d = tmp_path_factory.mktemp("bad")
    (d / "foreign").mkdir()
    (d / "foreign" / "notes.txt").write_text("mine")
    (d / "afile").write_text("a file, not a folder")
    (d / "empty.yaml").write_text("")
    (d / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01" * 50)
    (d / "spec.json").write_text(json.dumps(SPEC))
    (d / "garbage.npz").write_bytes(b"\x00garbage" * 100)
    np.savez(d / "objects.npz", x=np.array([object()] * 3, dtype=object), y=np.arange(3))
    np.savez(d / "floaty.npz", x=np.zeros((3, 1, 28, 28), np.uint8), y=np.array([0.0, 1.0, 2.0]))
    np.savez(d / "flat.npz", x=np.zeros((3, 784), np.uint8), y=np.arange(3))
    (d / "emptydir").mkdir()
    (d / "orphan" / "shards").mkdir(parents=True)  # a synthetic set whose manifest was deleted
    escape = d / "escape"  # a synthetic set whose manifest points outside it
    escape.mkdir()
    (escape / "manifest.json").write_text(json.dumps({
        "format": "dfnas-synthetic", "status": "complete", "spec": SPEC,
        "shards": {"r0": {"file": "../../../../etc/passwd", "round": 0, "batch": 0, "sha256": "0"}}}))
    (d / "net.py").write_text(
        "from torch import nn\n\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
        "                         nn.Flatten(), nn.Linear(4, 10))\n")
    torch.save({"w": datetime.date(2020, 1, 1)}, d / "pickled.pt")  # a Python object weights_only refuses
    net = create_space("nb201", channels=4)
    save_arch(d / "arch.json", "nb201", 1, {"channels": 4}, sample_arch(net, random.Random(0)))
    (d / "broken.json").write_text("{not json")
    (d / "other.json").write_text(json.dumps({"format": "something-else"}))
    torch.save({"conv.weight": torch.zeros(3)}, d / "wrong.pt")
    (d / "model.onnx").write_bytes(b"an existing file")
    (d / "outdir").mkdir()
    return d


# (id, argv with {w} for the workspace, a word the one-line error must contain)
CASES = [
    # teacher
    ("teacher-unknown", ["teacher", "info", "--teacher", "nope-cnn"], "nope-cnn"),
    ("teacher-missing-data", ["teacher", "info", "--teacher", "mnist-cnn", "--data", "npz:{w}/missing.npz"], "not found"),
    ("teacher-pickled-weights", ["teacher", "info", "--teacher", "{w}/net.py:build", "--weights", "{w}/pickled.pt",
                                 "--spec", "{w}/spec.json"], "state dict"),
    ("teacher-train-into-file", ["teacher", "train", "mnist", "--out", "{w}/afile"], "is a file"),
    ("teacher-train-foreign", ["teacher", "train", "mnist", "--out", "{w}/foreign", "--force"], "not a dfnas"),
    ("teacher-train-empty-config", ["teacher", "train", "mnist", "--out", "{w}/new", "--config", "{w}/empty.yaml"], "empty"),
    # synth
    ("synth-foreign", ["synth", "--teacher", "mnist-cnn", "--out", "{w}/foreign"], "not a dfnas synth"),
    ("synth-foreign-force", ["synth", "--teacher", "mnist-cnn", "--out", "{w}/foreign", "--force"], "not a dfnas synth"),
    ("synth-into-file", ["synth", "--teacher", "mnist-cnn", "--out", "{w}/afile"], "is a file"),
    ("synth-device", ["synth", "--teacher", "mnist-cnn", "--out", "{w}/new", "--device", "tpu"], "unknown device"),
    ("synth-huge", ["synth", "--teacher", "mnist-cnn", "--out", "{w}/new", "--per-class", "1000000000"], "GiB"),
    ("synth-unknown-key", ["synth", "--teacher", "mnist-cnn", "--out", "{w}/new", "--set", "bogus=1"], "bogus"),
    ("synth-missing-config", ["synth", "--teacher", "mnist-cnn", "--out", "{w}/new", "--config", "{w}/no.yaml"], "not found"),
    ("synth-binary-config", ["synth", "--teacher", "mnist-cnn", "--out", "{w}/new", "--config", "{w}/binary.yaml"], "YAML"),
    ("synth-missing-teacher-file", ["synth", "--teacher", "{w}/none.py:build", "--spec", "{w}/spec.json", "--out", "{w}/new"],
     "none.py"),
    ("synth-bad-steps", ["synth", "--teacher", "mnist-cnn", "--out", "{w}/new", "--steps", "0"], "steps"),
    # search
    ("search-garbage-npz", ["search", "--data", "npz:{w}/garbage.npz", "--spec", "{w}/spec.json", "--out", "{w}/new"], "npz"),
    ("search-object-npz", ["search", "--data", "npz:{w}/objects.npz", "--spec", "{w}/spec.json", "--out", "{w}/new"], "npz"),
    ("search-float-labels", ["search", "--data", "npz:{w}/floaty.npz", "--spec", "{w}/spec.json", "--out", "{w}/new"], "integer"),
    ("search-flat-images", ["search", "--data", "npz:{w}/flat.npz", "--spec", "{w}/spec.json", "--out", "{w}/new"], "NxCxHxW"),
    ("search-empty-folder", ["search", "--data", "{w}/emptydir", "--out", "{w}/new"], "empty"),
    ("search-orphan-set", ["search", "--data", "{w}/orphan", "--out", "{w}/new"], "manifest"),
    ("search-escaping-manifest", ["search", "--data", "{w}/escape", "--out", "{w}/new"], "outside the set"),
    ("search-algo-space", ["search", "--algo", "proxyless", "--space", "darts", "--data", "mnist", "--out", "{w}/new"],
     "cannot search"),
    ("search-foreign", ["search", "--data", "mnist", "--out", "{w}/foreign", "--force"], "not a dfnas search"),
    ("search-no-data", ["search", "--algo", "darts", "--out", "{w}/new"], "only --algo zeroshot"),
    ("search-zeroshot-no-shape", ["search", "--algo", "zeroshot", "--out", "{w}/new"], "--spec"),
    ("search-refine-no-data", ["search", "--algo", "zeroshot", "--spec", "{w}/spec.json", "--out", "{w}/new",
                               "--set", "zeroshot.refine=2"], "--data"),
    ("search-refine-too-many", ["search", "--algo", "zeroshot", "--data", "mnist", "--out", "{w}/new",
                                "--set", "zeroshot.samples=4", "--set", "zeroshot.refine=5"], "zeroshot.refine"),
    ("search-device", ["search", "--data", "mnist", "--out", "{w}/new", "--device", "tpu"], "unknown device"),
    ("search-bad-type", ["search", "--data", "mnist", "--out", "{w}/new", "--set", "epochs=many"], "integer"),
    # train
    ("train-missing-arch", ["train", "--arch", "{w}/none.json", "--data", "mnist", "--out", "{w}/new"], "none.json"),
    ("train-broken-arch", ["train", "--arch", "{w}/broken.json", "--data", "mnist", "--out", "{w}/new"], "broken.json"),
    ("train-foreign-arch", ["train", "--arch", "{w}/other.json", "--data", "mnist", "--out", "{w}/new"], "architecture"),
    ("train-foreign-out", ["train", "--arch", "{w}/arch.json", "--data", "mnist", "--out", "{w}/foreign", "--force"],
     "not a dfnas train"),
    ("train-device", ["train", "--arch", "{w}/arch.json", "--data", "mnist", "--out", "{w}/new", "--device", "tpu"],
     "unknown device"),
    ("train-seeds", ["train", "--arch", "{w}/arch.json", "--data", "mnist", "--out", "{w}/new", "--seeds", "0,0"], "seeds"),
    # export
    ("export-existing-file", ["export", "--arch", "{w}/arch.json", "--weights", "{w}/wrong.pt", "--format", "onnx",
                              "--out", "{w}/model.onnx"], "exists"),
    ("export-into-folder", ["export", "--arch", "{w}/arch.json", "--weights", "{w}/wrong.pt", "--format", "onnx",
                            "--out", "{w}/outdir"], "is a folder"),
    ("export-wrong-weights", ["export", "--arch", "{w}/arch.json", "--weights", "{w}/wrong.pt", "--format", "torchscript",
                              "--out", "{w}/new.ts"], "wrong.pt"),
    ("export-pickled-weights", ["export", "--arch", "{w}/arch.json", "--weights", "{w}/pickled.pt", "--format",
                                "torchscript", "--out", "{w}/new.ts"], "state dict"),
    # run
    ("run-empty-config", ["run", "--config", "{w}/empty.yaml", "--out", "{w}/new"], "empty"),
    ("run-foreign-force", ["run", "--out", "{w}/foreign", "--force"], "not a dfnas run"),
    ("run-device", ["run", "--out", "{w}/new", "--device", "tpu"], "unknown device"),
    ("run-bad-algo", ["run", "--out", "{w}/new", "--set", "search.algo=bayes"], "search.algo"),
    ("run-unknown-config-name", ["run", "--config", "nosuchconfig"], "shipped config"),
    # bench
    ("bench-foreign-force", ["bench", "--quick", "--out", "{w}/foreign", "--force"], "not a dfnas bench"),
    ("bench-device", ["bench", "--quick", "--out", "{w}/new", "--device", "tpu"], "unknown device"),
    ("bench-bad-algos", ["bench", "--quick", "--out", "{w}/new", "--set", "algos=[nope]"], "algos"),
    ("bench-empty-config", ["bench", "--config", "{w}/empty.yaml", "--out", "{w}/new"], "empty"),
]


def test_the_table_covers_every_command() -> None:
    assert len(CASES) >= 30
    assert {c[1][0] for c in CASES} == {"teacher", "synth", "search", "train", "export", "run", "bench"}


@pytest.mark.parametrize("argv, word", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_touches_nothing(w: Path, argv: list[str], word: str, capsys,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(w)
    before = _snapshot(w)
    rc = main([a.replace("{w}", str(w)) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("dfnas: error:"), err
    assert "Traceback" not in err[0] and word.lower() in err[0].lower(), err[0]
    assert _snapshot(w) == before
