"""NAS-Bench-201 ground truth: the real test accuracy of every cell of the space, shipped.

The benchmark trained all 15,625 cells for 200 epochs on CIFAR-10, CIFAR-100 and
ImageNet-16-120. A cell found by a search on 32x32 CIFAR-10-like data is then scored by a
lookup: no final training, no seed noise. Cite NAS-Bench-201 (Dong & Yang, ICLR 2020) and
NATS-Bench (Dong et al., TPAMI 2021). The values are `nats_bench` 1.8 (topology space,
`hp=200`, mean over the benchmark's seeds) as dumped in the public repository
`v-tao/nats-bench-landscape` (`nats_bench.csv`, commit 3126803).

The table ships as `nb201_acc.npz` (arrays indexed by `cell_code`, no pickle); it is made once
from that dump's JSON form by

    python -m dfnas.spaces.nb201_bench build path/to/nb201-acc.json
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dfnas.errors import DfnasError
from dfnas.spaces.base import Arch
from dfnas.spaces.nb201 import NB201_LABELS, NB201_OPS, from_nb201_string

TABLE = Path(__file__).with_name("nb201_acc.npz")
DATASETS = ("cifar10_test", "cifar100_test", "imagenet16_120_test")
N_CELLS = len(NB201_OPS) ** len(NB201_LABELS)


def cell_code(arch: Arch | str) -> int:
    """The cell as a number in [0, 15625): its six op indices, edge (1,0) the lowest digit."""
    if isinstance(arch, str):
        arch = from_nb201_string(arch)
    code = 0
    for k, label in enumerate(NB201_LABELS):
        op = arch.get(label)
        if op not in NB201_OPS:
            raise DfnasError(f"not an NB201 cell: {label}={op!r}; each of {NB201_LABELS} takes one of {NB201_OPS}")
        code += NB201_OPS.index(op) * len(NB201_OPS) ** k
    return code


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, np.ndarray]:
    if not TABLE.is_file():
        raise DfnasError(f"the NAS-Bench-201 table {TABLE} is missing; reinstall dfnas")
    with np.load(TABLE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def lookup(arch: Arch | str) -> dict[str, Any]:
    """Benchmark ground truth of one cell: test accuracy (%) per dataset, its benchmark index,
    and `iso`, the smallest index computing the same function (6,466 distinct cells)."""
    t = _table()
    c = cell_code(arch)
    return {**{d: round(float(t[d][c]), 4) for d in DATASETS}, "index": int(t["index"][c]), "iso": int(t["iso"][c])}


def accuracies(dataset: str = "cifar10_test") -> np.ndarray:
    """Every cell's test accuracy (%), indexed by `cell_code`."""
    if dataset not in DATASETS:
        raise DfnasError(f"unknown NB201 dataset {dataset!r}; choose one of {DATASETS}")
    return _table()[dataset]


def build(json_path: str | Path, out: str | Path = TABLE) -> None:
    """The shipped table from the JSON dump (cell string -> accuracies, index, iso)."""
    d = json.loads(Path(json_path).read_text())
    if len(d) != N_CELLS:
        raise DfnasError(f"{json_path}: {len(d)} cells, NB201 has {N_CELLS}")
    arrays = {k: np.zeros(N_CELLS, np.float32) for k in DATASETS}
    arrays.update(index=np.zeros(N_CELLS, np.int16), iso=np.zeros(N_CELLS, np.int16))
    for cell, rec in d.items():
        c = cell_code(cell)
        for k in arrays:
            arrays[k][c] = rec[k]
    tmp = Path(out).with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "build":
        sys.exit("usage: python -m dfnas.spaces.nb201_bench build path/to/nb201-acc.json")
    build(sys.argv[2])
