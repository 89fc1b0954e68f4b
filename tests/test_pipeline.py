"""`dfnas run` end to end on a tiny setting: outputs, skipping finished stages, refusals, configs.

    pytest tests/test_pipeline.py
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import shutil
import time
from pathlib import Path

import pytest
import torch

from dfnas.cli import main
from dfnas.config import from_dict, load_yaml
from dfnas.errors import DfnasError
from dfnas.pipeline.config import RunConfig
from dfnas.pipeline.run import DEMO, STAGES, default_test_data, resolve, run_pipeline, validate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER = ("darts-cifar10.yaml", "spos-imagenet.yaml", "proxyless-imagenet.yaml")

TINY = {
    "teacher": {"ref": "mnist-cnn"},
    "synth": {"per_class": 2, "rounds": 2, "batch_size": 20, "steps": 8, "best_every": 2, "log_every": 4},
    "search": {"algo": "darts", "space": "nb201", "space_args": {"channels": 4}, "epochs": 1,
               "batch_size": 8, "max_steps_per_epoch": 2},
    "train": {"epochs": 1, "batch_size": 16, "seeds": [0]},
    "threads": 1,
}
TINY_ARGS = ["--quiet", "--set", "threads=1", "--set", "synth.per_class=2", "--set", "synth.rounds=2",
             "--set", "synth.batch_size=20", "--set", "synth.steps=8", "--set", "search.space=nb201",
             "--set", "search.space_args.channels=4", "--set", "search.epochs=1", "--set", "search.batch_size=8",
             "--set", "search.max_steps_per_epoch=2", "--set", "train.epochs=1"]


def tiny(**changes: object) -> RunConfig:
    d = copy.deepcopy(TINY)
    for key, value in changes.items():
        section, field = key.split("__")
        d[section][field] = value
    return from_dict(RunConfig, d)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pipeline") / "run"
    summary = run_pipeline(tiny(), out, progress=False, command="pytest tiny run")
    return out, summary


def forbid_stages(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make the named stages' underlying work functions fail if they are called at all."""
    import dfnas.strategies.runner
    import dfnas.synth
    import dfnas.training.train

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a finished stage ran again")

    targets = {"synth": (dfnas.synth, "synthesize"), "search": (dfnas.strategies.runner, "run_search"),
               "train": (dfnas.training.train, "train_arch")}
    for n in names:
        monkeypatch.setattr(*targets[n], boom)


def test_tiny_run_writes_everything(tiny_run: tuple[Path, dict]) -> None:
    out, s = tiny_run
    for f in ("run.json", "config.yaml", "summary.json", "report.md", "report.html", "synth/manifest.json",
              "synth/report.json", "synth/previews/round-00.png", "search/arch.json", "search/arch.png",
              "train/metrics.json", "train/seed0/weights.safetensors", "export/model.ts", "export/arch.json",
              "export/weights.safetensors", "report_files/search_curves.png", "report_files/train_curves.png"):
        assert (out / f).is_file(), f
    assert all((out / "stages" / f"{n}.json").is_file() for n in STAGES)
    metrics = json.loads((out / "train" / "metrics.json").read_text())
    assert metrics["loss"] == "kd-stored" and metrics["test_data"]["source"] == "mnist:test"
    assert 0.0 <= s["network"]["test_accuracy"] <= 1.0 and s["teacher"]["test_accuracy"] > 0.95
    assert s["network"]["flops"] > 0 and s["teacher"]["flops"] > s["network"]["flops"]
    assert set(s["seconds"]) == {*STAGES, "report"}
    exports = {f["format"]: f for f in json.loads((out / "stages" / "export.json").read_text())["result"]["files"]}
    assert exports["torchscript"]["checked_with"] == "torch.jit.load"
    import importlib.util

    if importlib.util.find_spec("onnx") is not None:
        assert (out / "export" / "model.onnx").is_file()
    else:
        assert "not installed" in exports["onnx"]["skipped"]
    md = (out / "report.md").read_text()
    for text in ("synth/previews/round-01.png", "search/arch.png", "search/alphas.png", "report_files/train_curves.png",
                 "| round |", "pytest tiny run", "algo: darts", "teacher agreement", "test accuracy"):
        assert text in md, text
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "pytest tiny run" in html and "<table>" in html
    loaded = torch.jit.load(str(out / "export" / "model.ts"))
    assert loaded(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_rerun_skips_finished_stages(tiny_run: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    out, first = tiny_run
    forbid_stages(monkeypatch, "synth", "search", "train")
    again = run_pipeline(tiny(), out, progress=False)
    assert set(again["skipped"]) == set(STAGES)
    assert again["network"] == first["network"]


def test_changed_later_stage_needs_force_and_keeps_earlier(tiny_run: tuple[Path, dict], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_run[0], out)
    with pytest.raises(DfnasError, match="another config.*train, export.*--force"):
        run_pipeline(tiny(train__epochs=2), out, progress=False)
    rc = main(["run", "--out", str(out), *TINY_ARGS, "--set", "train.epochs=2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--force" in err
    forbid_stages(monkeypatch, "synth", "search")
    s = run_pipeline(tiny(train__epochs=2), out, force=True, progress=False)
    assert s["skipped"] == ["teacher", "synth", "search"]
    assert json.loads((out / "train" / "metrics.json").read_text())["config"]["epochs"] == 2


def test_interrupted_run_resumes_at_the_unfinished_stage(tiny_run: tuple[Path, dict], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_run[0], out)
    (out / "stages" / "export.json").unlink()  # as if killed during the export
    shutil.rmtree(out / "export")
    forbid_stages(monkeypatch, "synth", "search", "train")
    s = run_pipeline(tiny(), out, progress=False)
    assert "export" not in s["skipped"] and (out / "export" / "model.ts").is_file()


def test_folder_of_other_files_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DfnasError, match="not a dfnas run"):
        run_pipeline(tiny(), tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "synth").exists()


@pytest.mark.parametrize("args, key", [
    (["--set", "synth.bogus=1"], "synth.bogus"),
    (["--set", "train.epochs=many"], "train.epochs"),
    (["--set", "search.algo=bayes"], "search.algo"),
    (["--set", "export.formats=[tflite]"], "export.formats"),
    (["--set", "search.space_args.depth=3"], "search.space_args"),
    (["--set", "colour=red"], "colour"),
])
def test_bad_config_exits_2_before_any_work(tmp_path: Path, capsys, args: list[str], key: str) -> None:
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err, err
    assert not out.exists()


def test_bad_config_file_names_key_and_allowed(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("teacher: {ref: mnist-cnn}\ntrain: {epoch: 3}\n")
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "train.epoch" in err and "allowed keys" in err and "epochs" in err


def test_demo_yaml_is_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --config, `--config demo` (a shipped name, from any folder) and the repository's
    configs/demo.yaml give one resolved config."""
    from dfnas.cli import build_parser
    from dfnas.pipeline.cli import run_config_from_args

    monkeypatch.chdir(tmp_path)
    parse = build_parser().parse_args
    cfgs = [run_config_from_args(parse(["run", *a])) for a in ([], ["--config", "demo"],
                                                              ["--config", str(CONFIGS / "demo.yaml")])]
    assert cfgs[0] == cfgs[1] == cfgs[2] and cfgs[0].synth.per_class == DEMO["synth"]["per_class"]
    with pytest.raises(DfnasError, match="shipped config name.*bench-clutter.*demo"):
        load_yaml("nosuchconfig")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("bench")))
def test_every_config_parses(name: str) -> None:
    cfg = resolve(from_dict(RunConfig, load_yaml(CONFIGS / name)))
    if name in PAPER:  # GPU recipes: check what needs no GPU
        cfg = dataclasses.replace(cfg, device="cpu")
    validate(resolve(cfg))  # configs/bench*.yaml are `dfnas bench` configs: tests/test_bench.py


def test_bundled_teachers_default_to_their_own_test_split() -> None:
    cfg = from_dict(RunConfig, {})
    assert default_test_data(cfg) == "mnist"
    cfg.teacher.ref = "mnist-clutter-cnn"
    assert default_test_data(cfg) == "mnist-clutter"
    cfg.teacher.ref = "my_teacher.py:build"
    assert default_test_data(cfg) is None  # a user's teacher: only the test data they name


def test_paper_scale_supernets_take_one_step() -> None:
    """Build each paper recipe's supernet from its YAML and run one search step on random input."""
    from dfnas.data.sources import Source
    from dfnas.data.spec import InputSpec
    from dfnas.spaces import create_space
    from dfnas.strategies import create_strategy
    from dfnas.strategies.context import SearchContext
    from dfnas.strategies.search_data import SearchData

    t0 = time.perf_counter()
    for name in PAPER:
        cfg = from_dict(RunConfig, load_yaml(CONFIGS / name))
        spec = InputSpec.from_dict(cfg.teacher.spec)
        s = cfg.search
        # ProxylessNAS: FLOPs instead of a latency table (timing every candidate is slow on CPU)
        s = dataclasses.replace(s, device="cpu", val_fraction=0.5,
                                proxyless=dataclasses.replace(s.proxyless, hw_metric="flops"))
        net = create_space(s.space, **{**s.space_args, "num_classes": spec.num_classes,
                                       "in_channels": spec.channels, "image_size": spec.height})
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (4, spec.channels, spec.height, spec.width), dtype=torch.uint8, generator=g)
        src = Source("random", x, torch.arange(4) % spec.num_classes, spec,
                     logits=torch.randn(4, spec.num_classes, generator=g))
        ctx = SearchContext(s, SearchData(src, s, "cpu"), None, [], False)
        strat = create_strategy(s.algo, s)
        strat.check(net, s.space)
        strat.setup(net, ctx)
        net.train()
        xb, tb = next(ctx.data.batches("train", "smoke"))
        if s.algo == "darts":
            losses = [strat.weight_step(net, xb, tb), strat.arch_step(net, xb, tb, xb, tb)]
        elif s.algo == "proxyless":
            losses = [strat.weight_step(net, xb, tb, g, True), strat.arch_step(net, xb, tb, g)]
        else:
            losses = [strat.train_step(net, xb, tb, random.Random(0))]
        assert all(torch.isfinite(torch.tensor(v)) for v in losses), name
    assert time.perf_counter() - t0 < 60
