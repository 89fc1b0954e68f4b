from __future__ import annotations

import copy
import dataclasses

import pytest

from dfnas.config import apply_overrides, from_dict, to_dict
from dfnas.errors import DfnasError
from dfnas.synth.config import SynthConfig


def test_from_dict_types_and_round_trip():
    cfg = from_dict(SynthConfig, {"steps": 50, "region_area": [0.5, 1], "lr": 1})
    assert cfg.steps == 50 and cfg.region_area == (0.5, 1.0) and isinstance(cfg.lr, float)
    assert from_dict(SynthConfig, to_dict(cfg)) == cfg


def test_unknown_key_names_key_and_allowed():
    with pytest.raises(DfnasError, match=r"unknown config key 'synth.stpes'.*steps"):
        from_dict(SynthConfig, {"stpes": 3}, prefix="synth.")


@pytest.mark.parametrize("key,value", [("steps", "many"), ("regional", 1), ("region_area", [0.5]), ("lr", True)])
def test_wrong_type_is_refused(key, value):
    with pytest.raises(DfnasError, match=key):
        from_dict(SynthConfig, {key: value})


def test_overrides_parse_yaml_values():
    d = apply_overrides({}, ["synth.steps=7", "synth.regional=false", "synth.region_area=[0.3, 0.9]"])
    cfg = from_dict(SynthConfig, d["synth"])
    assert cfg.steps == 7 and cfg.regional is False and cfg.region_area == (0.3, 0.9)
    with pytest.raises(DfnasError, match="key=value"):
        apply_overrides({}, ["steps"])
    # YAML 1.1 reads 1e-4 (no dot) as a string: a float field takes it as the number meant
    cfg = from_dict(SynthConfig, apply_overrides({}, ["l2=1e-4", "lr=2E-1"]))
    assert (cfg.l2, cfg.lr) == (1e-4, 0.2)


def test_validate_ranges():
    with pytest.raises(DfnasError, match="region_area"):
        SynthConfig(region_area=(0.9, 0.2)).validate(10)
    with pytest.raises(DfnasError, match="affine_scale"):
        SynthConfig(affine_scale=1.5).validate(10)
    with pytest.raises(DfnasError, match="affine_rotate"):
        SynthConfig(affine_rotate=-5).validate(10)
    roll = SynthConfig(jitter_mode="roll")
    assert dataclasses.replace(roll, regional=False).resolve(28, 28, 1).jitter == 4  # H / 7 of the input
    assert roll.resolve(28, 28, 1).jitter == 5  # of the 8/7 canvas (32 px) the regional windows move on


def test_jitter_defaults_follow_the_input_size():
    """Small (CIFAR/MNIST-scale) teachers get per-image shifts with black bands of H / 16, and
    lr 0.1 for RGB images; ImageNet-scale ones DeepInversion's batch roll and lr 0.25; an
    explicit setting is kept."""
    small, large = SynthConfig().resolve(32, 32, 3), SynthConfig().resolve(224, 224, 3)
    assert (small.jitter_mode, small.jitter, small.lr) == ("shift", 2, 0.1)
    assert (large.jitter_mode, large.jitter, large.lr) == ("roll", 37, 0.25)
    assert SynthConfig(lr=0.3).resolve(32, 32, 3).lr == 0.3
    gray = SynthConfig().resolve(28, 28, 1)  # MNIST-like: shifts, but lr 0.25 (0.1 lost 1.6 points there)
    assert (gray.jitter_mode, gray.jitter, gray.lr) == ("shift", 2, 0.25)
    assert SynthConfig(jitter_mode="roll", jitter=3).resolve(32, 32, 3).jitter_mode == "roll"
    assert SynthConfig(jitter=6).resolve(32, 32, 3).jitter == 6
    with pytest.raises(DfnasError, match="jitter_mode"):
        SynthConfig(jitter_mode="wrap").validate(10)


def _later_paths(later: dict, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """(path, default) of every option in a LATER_OPTIONS section, nested ones included."""
    out: list[tuple[tuple[str, ...], object]] = []
    for k, v in later.items():
        out += _later_paths(v, (*prefix, k)) if isinstance(v, dict) else [((*prefix, k), v)]
    return out


def _without(d: dict, path: tuple[str, ...]) -> dict:
    d = copy.deepcopy(d)
    inner = d
    for k in path[:-1]:
        inner = inner[k]
    del inner[path[-1]]
    return d


def _get(d: dict, path: tuple[str, ...]) -> object:
    for k in path:
        d = d[k]
    return d


def test_options_added_later_leave_older_fingerprints_valid_at_their_default() -> None:
    """A result-changing option added after runs were fingerprinted (synth.color_shift,
    search.zeroshot.refine) is left out of fingerprints and job keys at its default, and
    counts once it is set."""
    from dfnas.config import LATER_OPTIONS, neutral_dict, result_keys, to_dict
    from dfnas.strategies.config import SearchConfig
    from dfnas.synth.config import SynthConfig

    made = {"synth": SynthConfig, "search": SearchConfig}
    assert set(LATER_OPTIONS) <= set(made)
    for section, later in LATER_OPTIONS.items():
        cfg = made[section]()
        for path, default in _later_paths(later):
            assert _get(to_dict(cfg), path) == default
            older = _without(to_dict(cfg), path)  # what an older dfnas saw
            assert result_keys(to_dict(cfg), section) == result_keys(older, section)
            changed = copy.deepcopy(cfg)
            owner = changed
            for k in path[:-1]:
                owner = getattr(owner, k)
            setattr(owner, path[-1], type(default)(default + 1) if not isinstance(default, bool) else not default)
            with pytest.raises(KeyError):
                _get(neutral_dict(cfg, section), path)
            assert _get(result_keys(to_dict(changed), section), path) == _get(to_dict(changed), path)
            assert _get(neutral_dict(changed, section), path) == _get(to_dict(changed), path)
