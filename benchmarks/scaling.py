"""Synthesis on 1 and on N `torchrun` processes (1 CPU thread each), same run: images/s.

    python benchmarks/scaling.py                      # 2 processes, bundled MNIST teacher
    python benchmarks/scaling.py --nproc 2 --per-class 20 --steps 100 --device cuda

Both runs synthesize the same set with the same seed into fresh folders; the benchmark checks
that the shards are byte-identical and reports wall time including process start-up (what a
user waits for). Search, training and bench still run in one process (README), so only
synthesis is measured. Last line: JSON {metric, value, reference, ratio, identical}; goal
ratio >= 1.8 on 2 processes.
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
    print(json.dumps({"metric": f"synthesis images/s with {a.nproc} processes", "value": round(images / many, 3),
                      "reference": round(images / one, 3), "ratio": round(one / many, 3), "identical": same,
                      "nproc": a.nproc, "device": a.device}))


if __name__ == "__main__":
    main()
