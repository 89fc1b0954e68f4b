"""Run by tests/test_distributed.py, alone or under torchrun: every search strategy, and the
training of what DARTS found (into OUT), on a tiny setting in float64 with uneven batches (15
and 63 rows over 2 processes), printing what each found and its losses as one JSON line from
rank 0. float64 makes "equal to one process" a sharp test:
exact sharding agrees to ~1e-15, a wrong BatchNorm or gradient weighting differs by ~1e-3."""

from __future__ import annotations

import json
import sys

import torch

from dfnas.config import from_dict, set_key
from dfnas.data.sources import load_source
from dfnas.dist import from_env
from dfnas.strategies.config import SearchConfig
from dfnas.strategies.runner import run_search

RUNS = {"darts": ("darts", "nb201", {}), "darts2": ("darts", "nb201", {"darts.order": 2}),
        "spos": ("spos", "spos", {}), "proxyless": ("proxyless", "proxyless", {"proxyless.warmup_epochs": 0}),
        "random": ("random", "nb201", {})}


def main(names: list[str], out: str) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    group = from_env()
    source = load_source("mnist", None, "train")
    found = {}
    for name in names:
        algo, space, extra = RUNS[name]
        d: dict = {}
        for k, v in {"algo": algo, "space": space, "epochs": 2, "max_steps_per_epoch": 3, "batch_size": 15,
                     **({"space_args.channels": 4} if space == "nb201" else {}),
                     "spos.population": 4, "spos.generations": 2, "spos.topk": 2, "spos.bn_batches": 1,
                     "spos.val_batches": 1, "random.samples": 3, "random.train_steps": 2, "random.val_batches": 1,
                     **extra}.items():
            set_key(d, k, v)
        rec = run_search(from_dict(SearchConfig, d), source, None, progress=False, group=group)
        found[name] = {"choices": rec["choices"],
                       "losses": {k: v for k, v in rec["search"].items() if isinstance(v, float)}}
    from dfnas.spaces.arch import make_record
    from dfnas.training.config import TrainConfig
    from dfnas.training.train import train_arch

    rec = make_record("nb201", 1, {"channels": 4, "num_classes": 10, "in_channels": 1, "image_size": 28},
                      found["darts"]["choices"])
    cfg = TrainConfig(epochs=2, batch_size=63)
    metrics = train_arch(rec, source, load_source("mnist", None, "test"), seeds=(0,), out=out, cfg=cfg,
                         progress=False, group=group)
    found["train"] = {"losses": {k: metrics["per_seed"][0][k] for k in ("test_accuracy", "final_train_loss")}}
    if group.is_main:
        print(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1].split(","), sys.argv[2])
