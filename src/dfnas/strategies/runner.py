"""One search run end to end: checks, supernet, resume, artifacts.

    DIR/run.json      what this folder is for (config + data identity); a rerun must match
    DIR/config.yaml   the resolved SearchConfig
    DIR/checkpoint.pt the last completed epoch / generation / sample (atomic)
    DIR/search.log    JSON lines: epochs, generations, start/end
    DIR/arch.json     the result (dfnas.spaces.arch format + algo, metrics, seed, data identity)
    DIR/arch.png      drawing of the architecture (when dfnas.report.draw is available)
    DIR/alphas.png    DARTS / ProxylessNAS: architecture weights over epochs

Kill the process at any moment and rerun the same command: it continues from the last
checkpoint and, because every random draw is derived from (seed, phase, epoch), ends
with the same architecture.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfnas.config import check_device, dump_yaml, result_keys, to_dict
from dfnas.data.sources import Source
from dfnas.dist import Group, sync_batchnorm
from dfnas.errors import DfnasError
from dfnas.io import (
    atomic_write_json,
    atomic_write_text,
    clean_temp_files,
    derive_seed,
)
from dfnas.io.folders import OutputFolder, differing_keys
from dfnas.spaces import to_memory_format
from dfnas.spaces.base import fix, set_mixers, validate_arch
from dfnas.strategies import SearchResult, compatible_spaces, create_strategy, list_strategies
from dfnas.strategies.config import SearchConfig
from dfnas.strategies.context import Hook, SearchContext
from dfnas.strategies.search_data import SearchData
from dfnas.teachers import Teacher
from dfnas.teachers.online import OnlineTeacher, check_teacher_fits

OUR_FILES = ("run.json", "config.yaml", "checkpoint.pt", "search.log", "arch.json", "arch.png", "alphas.png")


def check_config(cfg: SearchConfig) -> None:
    if cfg.epochs < 1:
        raise DfnasError("search.epochs must be >= 1")
    if cfg.batch_size < 2:
        raise DfnasError("search.batch_size must be >= 2 (BatchNorm needs more than one image)")
    if cfg.darts.order not in (1, 2):
        raise DfnasError(f"darts.order must be 1 or 2, got {cfg.darts.order}")
    if not 0 < cfg.gdas.tau_min <= cfg.gdas.tau_max:
        raise DfnasError("gdas.tau_min and gdas.tau_max must satisfy 0 < tau_min <= tau_max")
    if cfg.algo in ("gdas", "drnas") and cfg.darts.order != 1:
        raise DfnasError(f"--algo {cfg.algo} is first order (sampled op weights); set darts.order to 1")
    if not 0 <= cfg.darts.warmup_epochs < cfg.epochs and cfg.algo in ("darts", "gdas", "drnas"):
        raise DfnasError(f"darts.warmup_epochs must be in [0, epochs={cfg.epochs}): the alphas need an epoch to move")
    if cfg.drnas.reg_scale < 0:
        raise DfnasError("drnas.reg_scale must be >= 0")
    if cfg.spos.flops_range is not None and cfg.spos.flops_range[0] > cfg.spos.flops_range[1]:
        raise DfnasError("spos.flops_range must be [low, high] with low <= high (MFLOPs)")
    if cfg.spos.topk < 1 or cfg.spos.population < 1 or cfg.random.samples < 1:
        raise DfnasError("spos.population, spos.topk and random.samples must be >= 1")
    if cfg.zeroshot.samples < 1 or cfg.zeroshot.batch_size < 2:
        raise DfnasError("zeroshot.samples must be >= 1 and zeroshot.batch_size >= 2 (a proxy compares samples)")
    if not 0 <= cfg.zeroshot.refine <= cfg.zeroshot.samples:
        raise DfnasError(f"zeroshot.refine must be in [0, zeroshot.samples={cfg.zeroshot.samples}] "
                         "(how many of the proxy's best to train); 0 keeps the proxy's pick")
    if cfg.zeroshot.refine and cfg.zeroshot.refine_steps < 1:
        raise DfnasError("zeroshot.refine trains each shortlisted cell zeroshot.refine_steps steps; set it >= 1")
    check_device(cfg.device)


def check_algo_space(cfg: SearchConfig, key: str | None = None) -> None:
    """The algorithm exists, the space exists, and the one can search the other. Errors name
    the config keys (`key`.algo, `key`.space) or, without `key`, the flags."""
    from dfnas.spaces import list_spaces

    algo, space = (f"config key '{key}.algo'", f"config key '{key}.space'") if key else ("--algo", "--space")
    if cfg.algo not in list_strategies():
        raise DfnasError(f"{algo}: unknown search algorithm '{cfg.algo}'; choose one of {list_strategies()}")
    if cfg.space not in list_spaces():
        raise DfnasError(f"{space}: unknown search space '{cfg.space}'; choose one of {list_spaces()}")
    if cfg.space not in compatible_spaces(cfg.algo):
        raise DfnasError(f"{algo} {cfg.algo} cannot search {space} {cfg.space}; "
                         f"it supports {compatible_spaces(cfg.algo)}")


def validate_search(cfg: SearchConfig, key: str = "search") -> None:
    """One search section checked before any work; errors name the config key (`key`.field)."""
    from dfnas.spaces import resolve_space_cfg

    check_algo_space(cfg, key)
    try:
        resolve_space_cfg(cfg.space, cfg.space_args)
    except DfnasError as e:
        raise DfnasError(f"config key '{key}.space_args': {e}") from e
    check_config(cfg)


def fit_args(spec: Any) -> dict[str, Any]:
    """The space sizes an input spec fixes: classes, channels, image size."""
    return {"num_classes": spec.num_classes, "in_channels": spec.channels,
            "image_size": spec.height if spec.height == spec.width else [spec.height, spec.width]}


def build_supernet(cfg: SearchConfig, source: Source) -> tuple[nn.Module, dict[str, Any]]:
    """The space sized for the data: classes, channels and image size come from the spec."""
    from dfnas.spaces import create_space, resolve_space_cfg

    check_algo_space(cfg)
    fit = fit_args(source.spec)
    for k, v in fit.items():
        given = cfg.space_args.get(k)
        if given is not None and given != v and not (isinstance(given, (list, tuple)) and list(given) == v):
            raise DfnasError(f"space_args.{k}={given!r} does not fit the data ({source.name} has {k}={v}); drop the setting")
    space_cfg = resolve_space_cfg(cfg.space, {**cfg.space_args, **fit})
    torch.manual_seed(derive_seed(cfg.seed, "supernet-init"))
    return create_space(cfg.space, **space_cfg), space_cfg


def _comparable(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity minus execution settings (older folders recorded `device` too)."""
    return {**identity, "config": result_keys(identity.get("config", {}), "search")}


def prepare_out(out: Path, identity: dict[str, Any], force: bool) -> None:
    """Refuse a folder that is not a search of ours, or ours for another config, data or version
    unless `force` (which clears only our files; `force` on the same search starts it over)."""
    folder = OutputFolder(out, "search", legacy=("run.json", "space_cfg"))
    prev = folder.claim()
    if prev is not None:
        old, new = _comparable(prev), _comparable(identity)
        if folder.changed(differing_keys(old, new), force, "config, data or version") or force:
            for f in OUR_FILES:
                (out / f).unlink(missing_ok=True)
        clean_temp_files(out)
    folder.save(identity)
    atomic_write_json(out / "run.json", identity)


def plot_history(result: SearchResult, path: Path, title: str) -> None:
    """One small panel per choice: each candidate's probability over epochs."""
    from dfnas.report.plots import choice_probabilities

    choice_probabilities(result.history, result.names, path, title)


def _draw(space: str, choices: dict[str, Any], path: Path, title: str) -> str | None:
    """The architecture drawing from dfnas.report.draw; a warning string if it is absent or fails."""
    try:
        from dfnas.report.draw import draw_arch
    except ImportError:
        return "dfnas.report.draw not available"
    try:
        draw_arch(space, choices, path, title)
    except Exception as e:  # noqa: BLE001 - a drawing must never lose a finished search
        return f"drawing failed: {type(e).__name__}: {e}"
    return None


def _extra_strings(space: str, arch: dict[str, Any], spec: Any = None) -> dict[str, Any]:
    try:
        if space == "darts":
            from dfnas.spaces.darts import genotype_string

            return {"genotype": genotype_string(arch)}
        if space == "nb201":
            from dfnas.spaces.nb201 import to_nb201_string

            return {"nb201_string": to_nb201_string(arch), **_nb201_truth(arch, spec)}
    except Exception:  # noqa: BLE001 - a convenience string only
        pass
    return {}


# the benchmark's own tasks: input (C, H, W) and classes -> its dataset in the table
NB201_TASKS = {((3, 32, 32), 10): "cifar10_test", ((3, 32, 32), 100): "cifar100_test",
               ((3, 16, 16), 120): "imagenet16_120_test"}


def nb201_task(spec: Any) -> str | None:
    """The NAS-Bench-201 dataset whose task has this input spec's shape and classes, if any."""
    return NB201_TASKS.get(((spec.channels, spec.height, spec.width), spec.num_classes))


def _nb201_truth(arch: dict[str, Any], spec: Any) -> dict[str, Any]:
    """On a task of the benchmark's shape, the found cell's NAS-Bench-201 accuracy: ground truth
    of the benchmark (the cell trained 200 epochs on the full real dataset), not of this run."""
    dataset = None if spec is None else nb201_task(spec)
    if dataset is None:
        return {}
    from dfnas.spaces.nb201_bench import lookup

    truth = lookup(arch)
    return {"nb201_benchmark": {"dataset": dataset, "test_accuracy": truth[dataset], **truth,
                                "note": "NAS-Bench-201 ground truth: this cell trained 200 epochs on the full "
                                        "real dataset (benchmark lookup, not this run)"}}


def run_search(cfg: SearchConfig, source: Source, out: str | Path | None, *, hooks: Sequence[Hook] = (),
               progress: bool = True, force: bool = False, supernet: nn.Module | None = None,
               space_cfg: dict[str, Any] | None = None, teacher: Teacher | None = None,
               group: Group | None = None) -> dict[str, Any]:
    """Search, write DIR's files, return the arch.json content. Resumes from DIR/checkpoint.pt.

    `group`: the processes of a torchrun launch (`dfnas.dist`); supernet steps split every batch
    over them, candidate scoring spreads candidates; rank 0 writes DIR, every rank returns the
    same record.

    `supernet` (with `space_cfg`) replaces the registered space (tests, custom spaces); its
    arch.json then carries `space: cfg.space` but is not validated against the registry.
    `teacher`: an online teacher; the search loss becomes KD (T = cfg.kd_temperature) to its
    logits on each augmented view, for real and synthetic data alike.
    """
    from dfnas import __version__

    check_config(cfg)
    if teacher is not None:
        check_teacher_fits(teacher, source.spec, f"data {source.name}")
    create_strategy(cfg.algo, cfg)  # unknown algo: refuse before building anything
    if supernet is None:
        supernet, space_cfg = build_supernet(cfg, source)
        cfg = dataclasses.replace(cfg, space_args=dict(space_cfg))  # config.yaml: every size resolved
    strategy = create_strategy(cfg.algo, cfg)
    strategy.check(supernet, cfg.space)
    group = group or Group()
    to_memory_format(supernet, cfg.channels_last)
    if group.distributed and cfg.sync_bn:
        sync_batchnorm(supernet)
    data = SearchData(source, cfg, cfg.device, OnlineTeacher(teacher, source.spec) if teacher is not None else None,
                      group)
    out_path = Path(out) if out is not None else None
    identity = {"config": to_dict(cfg), "data": source.identity, "space_cfg": space_cfg, "dfnas": __version__}
    if teacher is not None:  # only then: folders of teacher-less runs keep their identity
        identity["teacher"] = teacher.identity()
    if out_path is not None and group.is_main:
        prepare_out(out_path, json.loads(json.dumps(identity)), force)
        atomic_write_text(out_path / "config.yaml", dump_yaml(cfg))
    group.barrier()  # the folder is checked (and cleared by --force) before any rank reads a checkpoint
    ctx = SearchContext(cfg, data, out_path, list(hooks), progress)
    t0 = time.time()
    ctx.log({"event": "start", "algo": cfg.algo, "space": cfg.space, "seed": cfg.seed})
    result = strategy.search(supernet, ctx)
    set_mixers(supernet, None, None)
    validate_arch(supernet, result.arch, cfg.space)
    group.check_same(json.dumps(result.arch, sort_keys=True), "architectures")
    if not group.is_main:  # rank 0 writes the folder; every rank returns the same record
        out_path = None
    wall = time.time() - t0
    extra = {"algo": cfg.algo, "seed": cfg.seed, "search": _jsonable(result.metrics), "data": source.identity,
             "data_synthetic": source.is_synthetic, "search_loss": data.loss_kind,
             **({"teacher": teacher.identity()} if teacher is not None else {}),
             "search_seconds": round(ctx.seconds, 2), "search_seconds_last_run": round(wall, 2),
             **_extra_strings(cfg.space, result.arch, source.spec)}
    record = _write_arch(out_path, cfg, supernet, space_cfg, result, extra,
                         (source.spec.channels, source.spec.height, source.spec.width))
    if out_path is not None:
        if result.history:
            plot_history(result, out_path / "alphas.png", f"{cfg.algo} on {cfg.space}: architecture weights per epoch")
        title = f"{cfg.algo} on {cfg.space} ({'synthetic' if source.is_synthetic else 'real'} data, seed {cfg.seed})"
        if (err := _draw(cfg.space, result.arch, out_path / "arch.png", title)) is not None:
            ctx.log({"event": "draw", "warning": err})
        ctx.log({"event": "done", "seconds": round(wall, 2), "arch": result.arch})
    record.pop("_record", None)
    group.barrier()
    return record


def _write_arch(out: Path | None, cfg: SearchConfig, supernet: nn.Module, space_cfg: dict[str, Any] | None,
                result: SearchResult, extra: dict[str, Any], shape: tuple[int, int, int]) -> dict[str, Any]:
    from dfnas.spaces import list_spaces
    from dfnas.spaces.arch import make_record, save_arch

    version = getattr(supernet, "space_version", None)
    if version is not None and cfg.space in list_spaces() and space_cfg is not None:
        if out is not None:
            rec = save_arch(out / "arch.json", cfg.space, version, space_cfg, result.arch, extra)
        else:
            from dfnas.spaces.arch import build_network
            from dfnas.spaces.profile import profile

            rec = make_record(cfg.space, version, space_cfg, result.arch, extra)
            p = profile(build_network(rec), rec.input_shape)
            rec.extra.update(flops=p["flops"], params=p["params"])
        return {**rec.to_dict(), "_record": rec}
    # a custom supernet: same format, counted on a fixed copy
    from dfnas.spaces.profile import profile

    d = {"format": "dfnas-arch", "format_version": 1, "space": cfg.space, "space_version": version or 0,
         "space_cfg": space_cfg or {}, "choices": result.arch, **extra}
    d.update(profile(fix(copy.deepcopy(supernet), result.arch), shape))
    if out is not None:
        atomic_write_json(out / "arch.json", d)
    return d


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
