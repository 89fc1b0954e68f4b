"""The settings of one `dfnas bench` run (SPEC section 4), loaded from YAML like every dfnas config.

The defaults are the documented benchmark regime on the bundled MNIST teacher; `QUICK`
holds the overrides of `dfnas bench --quick` (the same protocol at a tiny budget).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from dfnas.config import from_dict
from dfnas.strategies.config import SearchConfig
from dfnas.synth.config import SynthConfig
from dfnas.teachers.config import TeacherRefConfig
from dfnas.training.config import TrainConfig

SOURCES = ("real", "synthetic", "plain", "noise")

# small widths: the task has to separate architectures (see the regime in the README)
SPACE_ARGS: dict[str, dict[str, Any]] = {
    "nb201": {"channels": 8},
    "proxyless": {"stem_channels": 4, "first_channels": 4, "stage_channels": [8, 12, 16], "last_channels": 32},
    "spos": {"stem_channels": 4, "stage_channels": [8, 16, 32], "stage_repeats": [2, 2, 2], "last_channels": 32},
}


def _search(algo: str, space: str, **extra: Any) -> SearchConfig:
    base = {"algo": algo, "space": space, "space_args": SPACE_ARGS[space], "epochs": 30, "batch_size": 32,
            "lr": 0.05, "val_fraction": 0.5, "max_steps_per_epoch": 9, **extra}
    return from_dict(SearchConfig, base)


@dataclasses.dataclass
class RankingConfig:
    """Kendall tau of single-path supernets trained on synthetic vs real data (same paths, same init)."""

    enabled: bool = True
    # which entry of the bench's searches gives the space and the supernet recipe; NB201 (darts)
    # because its candidates differ (none/skip/pool vs conv): in the spos space here two real-data
    # supernets with different seeds rank 24 candidates with tau ~0.1, in NB201 with ~0.48
    algo: str = "darts"
    archs: int = 24  # architectures ranked by both supernets (>= 20 for the headline)
    steps: int = 4000  # single-path SGD steps of each supernet
    epochs: int = 5  # cosine epochs the steps are split into
    reseeded: bool = True  # also a real-data supernet with another seed: the noise ceiling of tau
    # train batches that recalibrate BN for each scored architecture (4 x 32 images left the
    # statistics noisy: real-vs-reseeded-real tau 0.51 at 4, 0.59 at 16, 0.57 at 64)
    bn_batches: int = 16
    val_batches: int = 0  # val batches that score it; 0 = the whole val split (128 images gave tau noise)
    # what scores an architecture: val loss ranked 30 NB201 cells more consistently than top-1
    # (real vs reseeded real 0.51-0.59 against 0.35-0.48, same supernets); both taus are reported
    score: Literal["top1", "loss"] = "loss"


@dataclasses.dataclass
class ZeroShotConfig:
    """Training-free baseline: best proxy score on Gaussian input under the synthetic search's FLOPs."""

    proxy: str = "naswot"  # naswot | zen
    samples: int = 100
    batch_size: int = 64


@dataclasses.dataclass
class BenchConfig:
    """`dfnas bench`: does NAS on synthetic data find architectures as good as NAS on real data?"""

    teacher: TeacherRefConfig = dataclasses.field(default_factory=TeacherRefConfig)
    train_data: str = "mnist"  # real labelled data: search source (a) and final training
    test_data: str = "mnist"  # real held-out data every architecture is tested on
    algos: list[str] = dataclasses.field(default_factory=lambda: ["darts", "proxyless", "spos"])
    sources: list[str] = dataclasses.field(default_factory=lambda: list(SOURCES))
    # the dfnas synthetic set (b); plain inversion (c) is the same budget as one round, no
    # regional update, no RLC; noise (d) has as many images as (b), labelled by the teacher
    # 67 x 3 = 2,010 images (600 left every student and supernet data-starved: see synth_quality)
    synth: SynthConfig = dataclasses.field(default_factory=lambda: SynthConfig(per_class=67, rounds=3, steps=200))
    search_online_teacher: bool = False  # teacher-labelled sources: KD to the live teacher on each view
    darts: SearchConfig = dataclasses.field(default_factory=lambda: _search("darts", "nb201"))
    # single-path supernets learn far slower than DARTS's mixed ops: 30 x 9 steps left SPOS's at
    # 15-30 % val top-1, so they get 30 x 30 (DARTS's reaches 75 % in 30 x 9)
    # hw_mode abs: every search pulled to the same FLOPs budget (the uniform start's expected
    # cost), so real and teacher-labelled searches compare at equal cost; with `add` real-data
    # CE searches settled at half the FLOPs of KD ones (clutter bench: 0.84-0.97 vs 1.6-1.8 MF)
    proxyless: SearchConfig = dataclasses.field(default_factory=lambda: _search(
        "proxyless", "proxyless", max_steps_per_epoch=30, proxyless={"hw_mode": "abs"}))
    spos: SearchConfig = dataclasses.field(default_factory=lambda: _search(
        "spos", "spos", max_steps_per_epoch=30, spos={"population": 12, "generations": 3, "topk": 4, "mutation": 4, "crossover": 4,
                              "bn_batches": 4, "val_batches": 0}))
    # every search (and the zero-shot baseline) runs this many times with seeds seed, seed+1, ...:
    # one search is one draw of a stochastic procedure (DARTS on the same synthetic set found a
    # 98.1 % cell with one seed and a 97.6 % one with another), so the verdicts pool them all
    search_repeats: int = 3
    # synthetic and plain sets drawn (synthesis seeds synth.seed, +1, ...): search repeat r uses
    # draw r mod synth_draws. One set is one draw too (DARTS on MNIST: 97.81 % with one default
    # set, 97.61 % with another), so with draws = repeats a verdict pools sets as well as searches
    synth_draws: int = 3
    random_archs: int = 8  # per space, trained like the found ones (their spread says if the task separates)
    zeroshot: ZeroShotConfig = dataclasses.field(default_factory=ZeroShotConfig)
    # final training of every architecture, from scratch on real data: `final_per_class` images
    # per class of the train split (None = all of it). Measured on NB201 cells (3 seeds each):
    # 50/class x 20 epochs spread the cells by 0.20 (std) under 0.37 of seed noise; 200/class x
    # 10 epochs by 0.29 over 0.28; all 4,000 x 10 by 0.25 over 0.24 at 2x the time
    final_per_class: int | None = 200
    final: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=10, batch_size=32,
                                                                               warmup_epochs=1.0))
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
    seed: int = 0  # synthesis, searches, sampling of random architectures
    threads: int | None = None  # torch CPU threads; None = torch's default
    device: str | None = None  # when set, synthesis, searches, ranking and final training run there
    out: str = "runs/bench"

    def search_config(self, algo: str, repeat: int = 0) -> SearchConfig:
        """The algorithm's recipe; search repeat r runs with seed `seed + r`."""
        return dataclasses.replace(getattr(self, algo), seed=self.seed + repeat)


def draw_suffix(d: int) -> str:
    """Folder/job/results suffix of synthesis draw d (none for the first: single-draw runs keep their names)."""
    return f"-d{d}" if d else ""


# `dfnas bench --quick`: same protocol, tiny budget (integration test, smoke check)
QUICK: dict[str, Any] = {
    "synth": {"per_class": 4, "rounds": 2, "steps": 20, "batch_size": 40},
    "darts": {"epochs": 2, "max_steps_per_epoch": 2, "batch_size": 8},
    "proxyless": {"epochs": 2, "max_steps_per_epoch": 2, "batch_size": 8},
    "spos": {"epochs": 2, "max_steps_per_epoch": 2, "batch_size": 8,
             "spos": {"population": 4, "generations": 1, "topk": 2, "mutation": 2, "crossover": 2,
                      "bn_batches": 1, "val_batches": 1}},
    "random_archs": 2,
    "search_repeats": 1,
    "synth_draws": 1,
    "zeroshot": {"samples": 4, "batch_size": 8},
    "final_per_class": 5,
    "final": {"epochs": 1, "batch_size": 16, "warmup_epochs": 0.0},
    "seeds": [0, 1],
    "ranking": {"archs": 6, "steps": 6, "epochs": 1},
}
