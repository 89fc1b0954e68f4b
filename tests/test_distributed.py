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
from conftest import kill_one_worker

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


# -- search: N processes follow one process ---------------------------------------------------
ALGOS = "darts,darts2,spos,proxyless,random"


def _found(cmd: list[str], out: Path) -> dict:
    done = subprocess.run([*cmd, str(Path(__file__).with_name("dist_exact.py")), ALGOS, str(out)], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_process_searches_and_training_equal_one_process_in_float64(tmp_path: Path) -> None:
    """Every strategy and `train`, uneven shards (15 and 63 rows over 2 ranks): the same
    architecture and the same losses to float64 rounding, so sharded BatchNorm and the weighted
    gradient sum are exact (a wrong weighting or local BatchNorm differs by ~1e-3)."""
    one = _found([sys.executable], tmp_path / "one")
    two = _found([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
                 tmp_path / "two")
    assert set(one) == {*ALGOS.split(","), "train"}
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert a["per_seed"][0]["test_accuracy"] == b["per_seed"][0]["test_accuracy"]
    assert (tmp_path / "two" / "seed0" / "weights.safetensors").is_file()
    for algo in one:
        assert two[algo].get("choices") == one[algo].get("choices"), algo
        assert one[algo]["losses"] and two[algo]["losses"].keys() == one[algo]["losses"].keys(), algo
        for k, v in one[algo]["losses"].items():
            assert two[algo]["losses"][k] == pytest.approx(v, rel=1e-10, abs=1e-12), (algo, k)


SEARCH = ["search", "--algo", "darts", "--space", "nb201", "--data", "mnist", "--quiet", "--epochs", "2",
          "--set", "max_steps_per_epoch=3", "--set", "batch_size=16", "--set", "space_args.channels=4"]


def test_torchrun_search_writes_one_folder_like_one_process(tmp_path: Path) -> None:
    one = subprocess.run([sys.executable, "-m", "dfnas", *SEARCH, "--out", str(tmp_path / "one")], env=ENV,
                         capture_output=True, text=True, timeout=300)
    two = subprocess.run([*_torchrun(2), *SEARCH, "--out", str(tmp_path / "two")], env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count('"arch"') == 1  # one summary, from rank 0
    a, b = (json.loads((tmp_path / d / "arch.json").read_text()) for d in ("one", "two"))
    assert a["choices"] == b["choices"]
    # float32: NHWC BatchNorm (this space's default layout) sums each shard in its own order, and
    # six DARTS steps on 4 channels amplify that to ~1e-3; exactness is dist_exact.py's, in float64
    assert b["search"]["val_loss"] == pytest.approx(a["search"]["val_loss"], rel=1e-2)
    log = [json.loads(line) for line in (tmp_path / "two" / "search.log").read_text().splitlines()]
    assert [r["epoch"] for r in log if "epoch" in r] == [0, 1]  # rank 0 alone writes the log
    # rerun under one process: the finished checkpoint is resumed, same architecture
    again = subprocess.run([sys.executable, "-m", "dfnas", *SEARCH, "--out", str(tmp_path / "two")], env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads((tmp_path / "two" / "arch.json").read_text())["choices"] == a["choices"]


RUN = ["run", "--quiet", "--set", "threads=1", "--set", "synth.per_class=2", "--set", "synth.rounds=2",
       "--set", "synth.batch_size=20", "--set", "synth.steps=8", "--set", "search.space=nb201",
       "--set", "search.space_args.channels=4", "--set", "search.epochs=1", "--set", "search.batch_size=8",
       "--set", "search.max_steps_per_epoch=2", "--set", "train.epochs=1"]


def test_torchrun_pipeline_matches_one_process(tmp_path: Path) -> None:
    """`dfnas run` under torchrun: synthesis, search and training spread over 2 processes give
    the one-process images, network and accuracy; rank 0 alone reports."""
    one = subprocess.run([sys.executable, "-m", "dfnas", *RUN, "--out", str(tmp_path / "one")], env=ENV,
                         capture_output=True, text=True, timeout=300)
    two = subprocess.run([*_torchrun(2), *RUN, "--out", str(tmp_path / "two")], env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("report.md") == 1
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert a["images"] == b["images"] and a["network"]["choices"] == b["network"]["choices"]
    assert _shards(tmp_path / "one" / "synth") == _shards(tmp_path / "two" / "synth")


def test_one_killed_rank_stops_the_launch_and_a_rerun_gives_the_same_set(tmp_path: Path) -> None:
    """kill -9 of rank 1 alone: the launch ends (no rank waits forever), the folder is not
    complete, and a 2-process rerun resumes to the one-process set."""
    out = tmp_path / "killed-rank"
    args = [*ARGS[:ARGS.index("--steps") + 1], "60", *ARGS[ARGS.index("--steps") + 2:]]  # slower: time to kill
    assert kill_one_worker([*_torchrun(2), *args, "--out", str(out)], ENV,
                           lambda: bool(list((out / "shards").rglob("*.safetensors")))) != 0
    assert not (out / "manifest.json").exists() or json.loads((out / "manifest.json").read_text())["status"] != "complete"
    done = subprocess.run([*_torchrun(2), *args, "--out", str(out)], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    full = subprocess.run([sys.executable, "-m", "dfnas", *args, "--out", str(tmp_path / "ref")], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0 and _shards(out) == _shards(tmp_path / "ref")


def test_commands_without_a_multi_process_path_refuse_torchrun(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from dfnas.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["teacher", "info", "--teacher", "mnist-cnn"]) == 2
    assert "runs in one process" in capsys.readouterr().err
