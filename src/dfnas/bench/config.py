"""The settings of one `dfnas bench` run, built and checked before anything is loaded or written.

The bench reproduces the paper's protocol with one config: this module holds its schema
(`BenchConfig`, whose defaults are the documented regime on the bundled MNIST teacher), the
`--quick` budget, how a YAML mapping, `--quick` and `key=value` overrides combine into one
checked config (`build_config`, `validate`), and which part of it the results depend on
(`measured_part`, what a rerun in the same folder is compared against). Why the defaults are
what they are is measured in docs/bench.md ("The regime") and docs/bench-history.md.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal

from dfnas.config import apply_overrides, check_devices, from_dict, neutral_dict, to_dict
from dfnas.errors import DfnasError
from dfnas.strategies.config import SearchConfig
from dfnas.synth.config import SynthConfig
from dfnas.teachers.config import TeacherRefConfig
from dfnas.training.config import TrainConfig

SOURCES = ("real", "synthetic", "plain", "noise")
# the searches a bench can run, one section each (named as the algorithm but for zeroshot, whose
# name is the Gaussian-input baseline's section)
ALGOS = ("darts", "gdas", "drnas", "proxyless", "spos", "random", "zeroshot")
SECTION = {a: a for a in ALGOS} | {"zeroshot": "zeroshot_search"}

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
    # the search whose space and supernet recipe are ranked: NB201's candidates (none/skip/pool vs conv) differ most
    algo: str = "darts"
    archs: int = 24  # architectures ranked by both supernets (>= 20 for the headline)
    steps: int = 4000  # single-path SGD steps of each supernet
    epochs: int = 5  # cosine epochs the steps are split into
    reseeded: bool = True  # also a real-data supernet with another seed: the noise ceiling of tau
    noise: bool = False  # also a supernet on the teacher-labelled noise source: what no information ranks like
    bn_batches: int = 16  # train batches that recalibrate BN per architecture (fewer: noisy ranks)
    val_batches: int = 0  # val batches that score it; 0 = the whole val split (a few batches: noisy ranks)
    # val loss ranks more consistently than top-1 (docs/bench-history.md); both taus are reported
    score: Literal["top1", "loss"] = "loss"


@dataclasses.dataclass
class ZeroShotConfig:
    """Training-free baseline: best proxy score on Gaussian input under the FLOPs the searches found."""

    proxy: str = "naswot"  # naswot | zen
    samples: int = 100
    batch_size: int = 64


@dataclasses.dataclass
class BenchConfig:
    """`dfnas bench`: does NAS on synthetic data find architectures as good as NAS on real data?"""

    teacher: TeacherRefConfig = dataclasses.field(default_factory=TeacherRefConfig)
    train_data: str = "mnist"  # real labelled data: the real search source and final training
    test_data: str = "mnist"  # real held-out data every architecture is tested on
    algos: list[str] = dataclasses.field(default_factory=lambda: ["darts", "proxyless", "spos"])
    sources: list[str] = dataclasses.field(default_factory=lambda: list(SOURCES))
    # plain and noise get the same image budget; fewer images starve the students (docs/bench-history.md)
    # lr 0.25 and jitter_mode roll: the documented MNIST runs predate the defaults by input size
    synth: SynthConfig = dataclasses.field(default_factory=lambda: SynthConfig(per_class=67, rounds=3, steps=200,
                                                                               lr=0.25, jitter_mode="roll"))
    search_online_teacher: bool = False  # teacher-labelled sources: KD to the live teacher on each view
    darts: SearchConfig = dataclasses.field(default_factory=lambda: _search("darts", "nb201"))
    gdas: SearchConfig = dataclasses.field(default_factory=lambda: _search("gdas", "nb201"))
    drnas: SearchConfig = dataclasses.field(default_factory=lambda: _search("drnas", "nb201"))
    random: SearchConfig = dataclasses.field(default_factory=lambda: _search("random", "nb201"))
    # zero-shot search scored on a batch of each data source (the `zeroshot` section is the
    # Gaussian-input baseline every algorithm is compared with)
    zeroshot_search: SearchConfig = dataclasses.field(default_factory=lambda: _search(
        "zeroshot", "nb201", zeroshot={"input": "data", "samples": 100}))
    # more steps: single-path supernets learn slower than DARTS's mixed ops (docs/bench-history.md)
    # hw_mode abs: every search pulled to one FLOPs budget, so the data sources compare at equal cost
    proxyless: SearchConfig = dataclasses.field(default_factory=lambda: _search(
        "proxyless", "proxyless", max_steps_per_epoch=30, proxyless={"hw_mode": "abs"}))
    spos: SearchConfig = dataclasses.field(default_factory=lambda: _search(
        "spos", "spos", max_steps_per_epoch=30, spos={"population": 12, "generations": 3, "topk": 4, "mutation": 4, "crossover": 4,
                              "bn_batches": 4, "val_batches": 0}))
    # runs of every search (seeds seed, seed+1, ...): one search is one draw, so verdicts pool them (docs/bench.md)
    search_repeats: int = 3
    # synthetic/plain sets drawn; search repeat r reads draw r mod synth_draws: verdicts pool sets too
    synth_draws: int = 3
    random_archs: int = 8  # per space, trained like the found ones (their spread says if the task separates)
    zeroshot: ZeroShotConfig = dataclasses.field(default_factory=ZeroShotConfig)
    # real train images per class for every final training (None = all): separates archs beyond seed noise (docs/bench.md)
    final_per_class: int | None = 200
    final: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=10, batch_size=32,
                                                                               warmup_epochs=1.0))
    # how an architecture is scored: "train" = from scratch on the real train subset, tested on
    # test_data, with every seed; "nb201" = its NAS-Bench-201 ground truth (200 epochs on the full
    # real dataset; every search in the nb201 space, a teacher of one of the benchmark's tasks)
    score: Literal["train", "nb201"] = "train"
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
    seed: int = 0  # synthesis, searches, sampling of random architectures
    threads: int | None = None  # torch CPU threads; None = torch's default
    device: str | None = None  # when set, synthesis, searches, ranking and final training run there
    out: str = "runs/bench"

    def search_config(self, algo: str, repeat: int = 0) -> SearchConfig:
        """The algorithm's recipe; search repeat r runs with seed `seed + r`."""
        return dataclasses.replace(getattr(self, SECTION[algo]), seed=self.seed + repeat)


def draw_suffix(d: int) -> str:
    """Folder/job/results suffix of synthesis draw d (none for the first: single-draw runs keep their names)."""
    return f"-d{d}" if d else ""


def repeat_suffix(r: int) -> str:
    """Name suffix of search repeat r (none for the first: folders of single-search runs keep their names)."""
    return f"-r{r}" if r else ""


def draw_read(cfg: BenchConfig, src: str, repeat: int) -> int:
    """The draw of `src` that search repeat `repeat` reads: synthetic and plain sets rotate through theirs."""
    return repeat % cfg.synth_draws if src in ("synthetic", "plain") else 0


# `dfnas bench --quick`: same protocol, tiny budget (integration test, smoke check)
QUICK: dict[str, Any] = {
    "synth": {"per_class": 4, "rounds": 2, "steps": 20, "batch_size": 40},
    "darts": {"epochs": 2, "max_steps_per_epoch": 2, "batch_size": 8},
    "gdas": {"epochs": 2, "max_steps_per_epoch": 2, "batch_size": 8},
    "drnas": {"epochs": 2, "max_steps_per_epoch": 2, "batch_size": 8},
    "random": {"batch_size": 8, "random": {"samples": 2, "train_steps": 2, "val_batches": 1}},
    "zeroshot_search": {"batch_size": 8, "zeroshot": {"samples": 4, "batch_size": 8}},
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


# ----------------------------------------------------------------------------- building one config

# settings that change how fast the bench runs, not what it measures
_EXECUTION_KEYS = ("threads", "out", "device")
# the bench's sections with a device, and what their execution settings are called in EXECUTION_KEYS
SECTIONS = {"synth": "synth", **{SECTION[a]: "search" for a in ALGOS}, "final": "train"}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Nested update: sections given partially keep the bench's own defaults for the rest."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("space_args",):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def build_config(data: dict[str, Any] | None = None, quick: bool = False, overrides: list[str] | None = None
                 ) -> BenchConfig:
    """Defaults < the YAML mapping < QUICK (when `quick`) < `key=value` overrides; checked.

    --quick wins over the file so that `dfnas bench --config my.yaml --quick` is a smoke test of my.yaml.
    """
    merged = _merge(to_dict(BenchConfig()), data or {})
    if quick:
        merged = _merge(merged, QUICK)
    over: dict[str, Any] = {}
    apply_overrides(over, overrides or [])
    merged = _merge(merged, over)
    cfg = from_dict(BenchConfig, merged)
    if cfg.device is not None:  # the saved config shows where each stage ran
        for name in SECTIONS:
            getattr(cfg, name).device = cfg.device
    validate(cfg)
    return cfg


def validate(cfg: BenchConfig) -> None:
    """Everything checkable before loading anything: one-line errors naming the key."""
    from dfnas.strategies.runner import validate_search
    from dfnas.strategies.zeroshot import PROXIES

    algos = ALGOS
    bad = [a for a in cfg.algos if a not in algos]
    if bad or not cfg.algos or len(set(cfg.algos)) != len(cfg.algos):
        raise DfnasError(f"config key 'algos': give distinct values from {list(algos)}; got {cfg.algos}")
    bad = [s for s in cfg.sources if s not in SOURCES]
    if bad or len(set(cfg.sources)) != len(cfg.sources) or not {"real", "synthetic"} <= set(cfg.sources):
        raise DfnasError(f"config key 'sources': distinct values from {list(SOURCES)}, including real and "
                         f"synthetic; got {cfg.sources}")
    for a in algos:
        sec = SECTION[a]
        s = getattr(cfg, sec)
        if s.algo != a:
            raise DfnasError(f"config key '{sec}.algo' must be {a} (each section configures its own algorithm)")
        validate_search(s, sec)
        if s.seed != 0:  # the bench seeds every search itself; a silently ignored key misleads
            raise DfnasError(f"config key '{sec}.seed' is not used by dfnas bench (search repeat r runs with "
                             f"seed 'seed' + r): set 'seed' instead, or leave '{sec}.seed' at 0")
    cfg.synth.validate(1)
    if cfg.ranking.noise and "noise" not in cfg.sources:
        raise DfnasError("config key 'ranking.noise' needs 'noise' in 'sources'")
    if cfg.ranking.algo not in algos:
        raise DfnasError(f"config key 'ranking.algo': choose one of {list(algos)}")
    rk = cfg.ranking
    if rk.enabled and (rk.archs < 2 or rk.steps < 1 or rk.epochs < 1 or rk.bn_batches < 1 or rk.val_batches < 0):
        raise DfnasError("config keys 'ranking.archs' (>= 2, 20+ for the headline), 'ranking.steps', "
                         "'ranking.epochs', 'ranking.bn_batches' (>= 1), 'ranking.val_batches' (>= 0, 0 = all)")
    if cfg.zeroshot.proxy not in PROXIES:
        raise DfnasError(f"config key 'zeroshot.proxy': {cfg.zeroshot.proxy!r} is not allowed; choose one of {list(PROXIES)}")
    if cfg.zeroshot.samples < 1 or cfg.random_archs < 0 or cfg.search_repeats < 1:
        raise DfnasError("config keys 'zeroshot.samples' and 'search_repeats' must be >= 1 and 'random_archs' >= 0")
    if not 1 <= cfg.synth_draws <= cfg.search_repeats:
        raise DfnasError(f"config key 'synth_draws' must be in [1, search_repeats={cfg.search_repeats}] (search "
                         f"repeat r uses draw r mod synth_draws); got {cfg.synth_draws}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise DfnasError(f"config key 'seeds': give distinct integers, e.g. [0, 1, 2]; got {cfg.seeds}")
    if cfg.final_per_class is not None and cfg.final_per_class < 1:
        raise DfnasError("config key 'final_per_class' must be >= 1 or null (the whole train split)")
    cfg.final.validate("final")
    if cfg.score not in ("train", "nb201"):
        raise DfnasError(f"config key 'score': 'train' or 'nb201', got {cfg.score!r}")
    if cfg.score == "nb201":
        off = [a for a in cfg.algos if cfg.search_config(a).space != "nb201"]
        if off:
            raise DfnasError(f"config key 'score': nb201 scores cells of the nb201 space, but {off} search "
                             f"{[cfg.search_config(a).space for a in off]}; set their space to nb201 or score: train")
    if cfg.threads is not None and cfg.threads < 1:
        raise DfnasError("config key 'threads' must be >= 1 (or null for torch's default)")
    check_devices(cfg)


def measured_part(cfg: BenchConfig) -> dict[str, Any]:
    """What the results depend on: not threads, folder or device (a bench resumes on another)."""
    d = {k: v for k, v in to_dict(cfg).items() if k not in _EXECUTION_KEYS}
    return {**d, **{k: neutral_dict(getattr(cfg, k), sec) for k, sec in SECTIONS.items()}}
