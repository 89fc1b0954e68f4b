"""arch.json: round trip to an identical network, one-line errors for bad files; drawings."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from dfnas.errors import DfnasError
from dfnas.report.draw import draw_arch
from dfnas.spaces import create_space, sample_arch
from dfnas.spaces.arch import build_network, load_arch, save_arch

CFG = {"darts": {"channels": 4, "layers": 3}, "nb201": {"channels": 4}, "proxyless": {}, "spos": {}}


@pytest.mark.parametrize("space", sorted(CFG))
def test_round_trip_gives_identical_network(space: str, tmp_path: Path) -> None:
    net = create_space(space, **CFG[space])
    arch = sample_arch(net, random.Random(3))
    rec = save_arch(tmp_path / "arch.json", space, net.space_version, CFG[space], arch, {"seed": 3})
    assert rec.extra["flops"] > 0 and rec.extra["params"] > 0 and rec.extra["seed"] == 3
    back = load_arch(tmp_path / "arch.json")
    assert back.choices == rec.choices and back.space_cfg == rec.space_cfg and back.extra == rec.extra
    a, b = build_network(rec), build_network(back)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(sa[k].shape == sb[k].shape for k in sa)
    b.load_state_dict(sa)
    x = torch.randn(2, *back.input_shape)
    a.eval()
    b.eval()
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))


def _write(tmp_path: Path, d: object) -> Path:
    p = tmp_path / f"bad{len(list(tmp_path.glob('bad*.json')))}.json"
    p.write_text(json.dumps(d) if not isinstance(d, str) else d)
    return p


def test_bad_arch_files_give_one_line_errors(tmp_path: Path) -> None:
    net = create_space("nb201", channels=4)
    good = save_arch(tmp_path / "arch.json", "nb201", 1, {"channels": 4}, sample_arch(net, random.Random(0))).to_dict()
    darts = create_space("darts", channels=4, layers=3)
    cases = {
        "not found": tmp_path / "missing.json",
        "not valid JSON": _write(tmp_path, '{"format": "dfnas-arch", '),
        "not a dfnas architecture": _write(tmp_path, {"hello": 1}),
        "version 99": _write(tmp_path, {**good, "space_version": 99}),
        "unknown search space": _write(tmp_path, {**good, "space": "resnet"}),
        "another space": _write(tmp_path, {**good, "choices": sample_arch(darts, random.Random(0))}),
        "unknown choice": _write(tmp_path, {**good, "choices": {**good["choices"], "cell/op_1_0": "conv9x9"}}),
        "lacks labels": _write(tmp_path, {**good, "choices": {"cell/op_1_0": "none"}}),
        "no setting": _write(tmp_path, {**good, "space_cfg": {"chanels": 4}}),
        "must be a dict": _write(tmp_path, {**good, "choices": [1, 2]}),
    }
    for expected, path in cases.items():
        with pytest.raises(DfnasError, match=expected) as e:
            load_arch(path)
        assert "\n" not in str(e.value)
    bad_input = sample_arch(darts, random.Random(0))
    bad_input["normal/input_3"] = [0, 7]
    with pytest.raises(DfnasError, match="input indices"):
        save_arch(tmp_path / "d.json", "darts", 1, {"channels": 4, "layers": 3}, bad_input)


@pytest.mark.parametrize("space", sorted(CFG))
def test_drawings_are_png(space: str, tmp_path: Path) -> None:
    arch = sample_arch(create_space(space, **CFG[space]), random.Random(1))
    out = draw_arch(space, arch, tmp_path / f"{space}.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
