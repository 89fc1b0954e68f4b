"""Synthesis and DARTS search on 1 and on N `torchrun` processes (1 CPU thread each), same run.

    python benchmarks/scaling.py                      # 2 processes, bundled MNIST teacher
    python benchmarks/scaling.py --nproc 2 --per-class 20 --steps 100 --device cuda

Synthesis: both runs make the same set with the same seed into fresh folders; the benchmark
checks that the shards are byte-identical and reports wall time including process start-up
(what a user waits for). DARTS: first-order supernet steps/s on NB201 (C = 16, 5 cells per
stage, batch 64, MNIST 28x28), timed from the search log's start to its first epoch record,
and the architectures of both runs compared; N processes run twice, with BatchNorm over the
global batch (the default, exact) and with `sync_bn=false` (each process's rows). Last line: JSON {metric, value, reference, ratio}
for synthesis plus the same four for DARTS under `darts`; goals on 2 processes: synthesis
ratio >= 1.8, DARTS >= 1.6.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _shards(root: Path) -> dict[str, str]:
    return {k: v["sha256"] for k, v in json.loads((root / "manifest.json").read_text())["shards"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--teacher", default="mnist-cnn")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--darts-steps", type=int, default=6, help="first-order DARTS steps timed per run")
    a = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = ["synth", "--teacher", a.teacher, "--per-class", str(a.per_class), "--rounds", "1", "--batch-size",
            str(a.batch_size), "--steps", str(a.steps), "--seed", "0", "--device", a.device, "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        one = _run([sys.executable, "-m", "dfnas", *args, "--out", f"{tmp}/one"], env)
        many = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(a.nproc),
                     "-m", "dfnas", *args, "--out", f"{tmp}/many"], env)
        same = _shards(Path(tmp) / "one") == _shards(Path(tmp) / "many")
        images = json.loads((Path(tmp) / "one" / "manifest.json").read_text())["counts"]["total"]
    print(f"{images} images x {a.steps} steps on {a.device}: 1 process {one:.1f} s, {a.nproc} processes {many:.1f} s; "
          f"shards identical: {same}")
    darts = _darts(a, env)
    print(json.dumps({"metric": f"synthesis images/s with {a.nproc} processes", "value": round(images / many, 3),
                      "reference": round(images / one, 3), "ratio": round(one / many, 3), "identical": same,
                      "nproc": a.nproc, "device": a.device, "darts": darts}))


def _steps_per_second(out: Path, steps: int) -> float:
    log = [json.loads(line) for line in (out / "search.log").read_text().splitlines()]
    start = next(r["time"] for r in log if r.get("event") == "start")
    epoch = next(r["time"] for r in log if "epoch" in r)
    return steps / (epoch - start)


def _darts(a: argparse.Namespace, env: dict[str, str]) -> dict[str, object]:
    args = ["search", "--algo", "darts", "--space", "nb201", "--data", "mnist", "--epochs", "1", "--quiet",
            "--device", a.device, "--set", f"max_steps_per_epoch={a.darts_steps}", "--set", "batch_size=64",
            "--set", "space_args.channels=16", "--set", "space_args.cells_per_stage=5"]
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-m", "dfnas", *args, "--out", f"{tmp}/one"], env)
        for name, extra in (("many", []), ("many-local-bn", ["--set", "sync_bn=false"])):
            _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(a.nproc),
                  "-m", "dfnas", *args, *extra, "--out", f"{tmp}/{name}"], env)
        one, many, local = (_steps_per_second(Path(tmp) / d, a.darts_steps) for d in ("one", "many", "many-local-bn"))
        same = json.loads((Path(tmp) / "many" / "arch.json").read_text())["choices"] == \
            json.loads((Path(tmp) / "one" / "arch.json").read_text())["choices"]
    print(f"DARTS NB201 C=16 N=5 batch 64, {a.darts_steps} steps on {a.device}: 1 process {one:.3f} steps/s, "
          f"{a.nproc} processes {many:.3f} steps/s (BatchNorm over the global batch; same architecture: {same}), "
          f"{local:.3f} steps/s with sync_bn=false")
    return {"metric": f"DARTS supernet steps/s with {a.nproc} processes", "value": round(many, 4),
            "reference": round(one, 4), "ratio": round(many / one, 3), "same_arch": same,
            "local_bn": {"value": round(local, 4), "ratio": round(local / one, 3)}}


if __name__ == "__main__":
    main()
