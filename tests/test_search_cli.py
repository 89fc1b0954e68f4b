"""`dfnas search` end to end on a tiny setting, and every bad input it must refuse (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dfnas.cli import main

torch.set_num_threads(1)

TINY = ["--quiet", "--epochs", "1", "--set", "max_steps_per_epoch=2", "--set", "batch_size=16",
        "--set", "space_args.channels=4"]


def search(*args: str) -> int:
    return main(["search", *args])


def test_search_writes_outputs_and_rerun_resumes(tmp_path, capsys) -> None:
    from dfnas.arch import load_arch

    out = tmp_path / "run"
    cmd = ["--algo", "darts", "--space", "nb201", "--data", "mnist", "--out", str(out), *TINY]
    assert search(*cmd) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "nb201_string" in summary
    for f in ("arch.json", "config.yaml", "search.log", "alphas.png", "run.json", "checkpoint.pt"):
        assert (out / f).is_file(), f
    rec = load_arch(out / "arch.json")
    d = json.loads((out / "arch.json").read_text())
    assert rec.space == "nb201" and d["algo"] == "darts" and d["seed"] == 0 and d["flops"] > 0 and d["params"] > 0
    assert d["data"]["source"] == "mnist:train"
    first = rec.choices
    # the same command again: resumes from the finished checkpoint, same architecture
    assert search(*cmd) == 0
    assert load_arch(out / "arch.json").choices == first


def test_search_config_file_and_spos(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("search:\n  algo: spos\n  space: spos\n  spos:\n    population: 3\n    generations: 1\n"
                   "    topk: 2\n    mutation: 1\n    crossover: 1\n    bn_batches: 1\n    val_batches: 1\n")
    out = tmp_path / "spos"
    assert search("--config", str(cfg), "--data", "mnist", "--out", str(out), "--quiet", "--epochs", "1",
                  "--set", "max_steps_per_epoch=2", "--set", "batch_size=16") == 0
    assert json.loads((out / "arch.json").read_text())["algo"] == "spos"


@pytest.mark.parametrize("args,needle", [
    (["--algo", "evolve", "--space", "nb201"], "unknown search algorithm"),
    (["--algo", "proxyless", "--space", "darts"], "cannot search --space darts"),
    (["--algo", "darts", "--space", "resnet"], "unknown search space"),
    (["--algo", "darts", "--space", "nb201", "--set", "space_args.in_channels=3"], "does not fit the data"),
    (["--algo", "darts", "--space", "nb201", "--set", "nonsense=1"], "unknown config key"),
    (["--algo", "darts", "--space", "nb201", "--set", "space_args.depth=3"], "has no setting"),
    (["--algo", "darts", "--space", "nb201", "--epochs", "0"], "epochs must be >= 1"),
    (["--algo", "darts", "--space", "nb201", "--set", "darts.order=3"], "darts.order"),
    (["--algo", "darts", "--space", "nb201", "--set", "val_fraction=1.5"], "val_fraction"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, args: list[str], needle: str) -> None:
    out = tmp_path / "o"
    assert search(*args, "--data", "mnist", "--out", str(out), "--quiet") == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (out / "checkpoint.pt").exists()


def test_bad_data_exit_2(tmp_path, capsys) -> None:
    out = str(tmp_path / "o")
    base = ["--algo", "darts", "--space", "nb201", "--out", out, "--quiet"]
    assert search(*base, "--data", "npz:" + str(tmp_path / "missing.npz")) == 2
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 3, 28, 28), np.uint8), y=np.zeros(8, np.int64))
    assert search(*base, "--data", "npz:" + str(tmp_path / "d.npz")) == 2  # no spec
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"channels": 1, "height": 28, "width": 28, "num_classes": 10,
                                "mean": [0.5], "std": [0.5]}))
    assert search(*base, "--data", "npz:" + str(tmp_path / "d.npz"), "--spec", str(spec)) == 2  # 3 channels
    np.savez(tmp_path / "tiny.npz", x=np.zeros((2, 1, 28, 28), np.uint8), y=np.zeros(2, np.int64))
    assert search(*base, "--data", "npz:" + str(tmp_path / "tiny.npz"), "--spec", str(spec)) == 2  # too few
    spec3 = tmp_path / "spec3.json"
    spec3.write_text(json.dumps({"channels": 3, "height": 28, "width": 28, "num_classes": 10,
                                 "mean": [0.5], "std": [0.5]}))
    assert search(*base, "--data", "mnist", "--spec", str(spec3)) == 2  # MNIST is 1-channel
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("dfnas: error:") for line in err)


def test_out_dir_of_another_run_is_refused_unless_force(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    cmd = ["--algo", "random", "--space", "nb201", "--data", "mnist", "--out", str(out), *TINY,
           "--set", "random.samples=1", "--set", "random.train_steps=1", "--set", "random.val_batches=1"]
    assert search(*cmd) == 0
    assert search(*cmd, "--seed", "5") == 2
    assert "--force" in capsys.readouterr().err
    assert search(*cmd, "--seed", "5", "--force") == 0
    assert json.loads((out / "arch.json").read_text())["seed"] == 5
