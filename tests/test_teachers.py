from __future__ import annotations

import json

import pytest
import torch

from dfnas.data.sources import mnist_split
from dfnas.data.spec import InputSpec
from dfnas.errors import DfnasError
from dfnas.teachers import bn_layers, load_teacher, validate_teacher


def test_bundled_teacher_is_accurate_on_the_real_test_split():
    t = load_teacher("mnist-cnn")
    x, y = mnist_split("test")
    with torch.inference_mode():
        acc = (t.module(t.spec.normalize(x.float() / 255)).argmax(1) == y).float().mean().item()
    assert acc >= 0.98
    assert abs(acc - t.info["test_accuracy"]) < 1e-6  # the shipped record matches the weights
    assert validate_teacher(t) == 5


def test_mnist_split_is_fixed_and_disjoint():
    xtr, ytr = mnist_split("train")
    xte, yte = mnist_split("test")
    assert len(xtr) == 4000 and len(xte) == 1000
    assert torch.bincount(ytr).tolist() == [400] * 10 and torch.bincount(yte).tolist() == [100] * 10
    tr = {bytes(a.numpy()) for a in xtr}
    assert not any(bytes(a.numpy()) in tr for a in xte[:200])
    assert torch.equal(mnist_split("train")[0], xtr)


@pytest.mark.parametrize("weights", ["safetensors", "pt"])
def test_factory_teacher_file_and_weights(user_teacher, weights):
    t = load_teacher(f"{user_teacher['py']}:build", user_teacher[weights], user_teacher["spec"])
    assert t.kind == "factory" and validate_teacher(t) == 2
    x = torch.rand(3, 3, 16, 16) * 255
    assert torch.allclose(t.module(x), user_teacher["module"](x))


def test_torchscript_teacher(user_teacher):
    t = load_teacher(str(user_teacher["ts"]), spec=user_teacher["spec"])
    assert t.is_torchscript and validate_teacher(t) == 2


def test_spec_maps_unit_images_to_teacher_input():
    s = InputSpec(3, 4, 4, 2, mean=[127.5], std=[64.0], pixel_range=(0, 255))
    x = torch.full((1, 3, 4, 4), 1.0)
    assert torch.allclose(s.normalize(x), torch.full_like(x, (255 - 127.5) / 64))


def _spec(tmp_path, **changes):
    from tests.conftest import USER_SPEC

    d = dict(USER_SPEC, **changes)
    p = tmp_path / "bad_spec.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize("changes,match", [
    ({"channels": 1, "mean": [127.5], "std": [64.0]}, "channels/height/width"),
    ({"height": 5, "width": 5}, None),
    ({"num_classes": 7, "class_names": None}, "outputs 4 classes but the spec says num_classes=7"),
    ({"std": [0, 1, 1]}, "std"),
    ({"mean": [1, 2]}, "one per channel"),
])
def test_spec_mismatch_errors(user_teacher, tmp_path, changes, match):
    if match is None:  # a global-pool teacher runs at other sizes: nothing to refuse
        t = load_teacher(f"{user_teacher['py']}:build", user_teacher["safetensors"], _spec(tmp_path, **changes))
        assert validate_teacher(t) == 2
        return
    with pytest.raises(DfnasError, match=match):
        t = load_teacher(f"{user_teacher['py']}:build", user_teacher["safetensors"], _spec(tmp_path, **changes))
        validate_teacher(t)


def test_missing_inputs_errors(user_teacher, tmp_path):
    with pytest.raises(DfnasError, match="not found"):
        load_teacher("nope/file.py:build", user_teacher["safetensors"], user_teacher["spec"])
    with pytest.raises(DfnasError, match="--weights"):
        load_teacher(f"{user_teacher['py']}:build", None, user_teacher["spec"])
    with pytest.raises(DfnasError, match="--spec"):
        load_teacher(f"{user_teacher['py']}:build", user_teacher["safetensors"], None)
    with pytest.raises(DfnasError, match="weights file not found"):
        load_teacher(f"{user_teacher['py']}:build", tmp_path / "missing.pt", user_teacher["spec"])
    with pytest.raises(DfnasError, match="has no attribute 'nothere'"):
        load_teacher(f"{user_teacher['py']}:nothere", user_teacher["safetensors"], user_teacher["spec"])
    with pytest.raises(DfnasError, match="spec file not found"):
        load_teacher(str(user_teacher["ts"]), spec=tmp_path / "nospec.json")
    with pytest.raises(DfnasError, match="not found: use a bundled name"):
        load_teacher("resnet-9000")


def test_weights_that_do_not_fit(user_teacher, tmp_path):
    sd = torch.load(user_teacher["pt"], weights_only=True)
    sd["head.weight"] = torch.zeros(5, 8)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(DfnasError, match="shape of 'head.weight'"):
        load_teacher(f"{user_teacher['py']}:build", tmp_path / "bad.pt", user_teacher["spec"])


def test_pickled_objects_are_not_loaded(user_teacher, tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    with pytest.raises(DfnasError, match="weights_only=True"):
        load_teacher(f"{user_teacher['py']}:build", tmp_path / "pickled.pt", user_teacher["spec"])


def test_no_batchnorm_with_feature_loss(user_teacher):
    from safetensors.torch import save_file

    net = __import__("torch").nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 4))
    path = user_teacher["py"].with_name("nobn.safetensors")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    t = load_teacher(f"{user_teacher['py']}:build_no_bn", path, user_teacher["spec"])
    with pytest.raises(DfnasError, match="no BatchNorm"):
        validate_teacher(t, need_bn=True)
    assert validate_teacher(t, need_bn=False) == 0
    assert bn_layers(t.module) == []


def test_non_finite_outputs(user_teacher, tmp_path):
    sd = torch.load(user_teacher["pt"], weights_only=True)
    sd["head.bias"] = torch.full((4,), float("nan"))
    torch.save(sd, tmp_path / "nan.pt")
    t = load_teacher(f"{user_teacher['py']}:build", tmp_path / "nan.pt", user_teacher["spec"])
    with pytest.raises(DfnasError, match="non-finite"):
        validate_teacher(t)


def test_logits_of_images_batches_and_leaves_its_input_alone() -> None:
    """Batched logits equal one full pass, and a float input is not scaled in place."""
    from dfnas.teachers.online import OnlineTeacher, logits_of_images, teacher_logits

    t = load_teacher("mnist-cnn")
    net = OnlineTeacher(t).eval()
    x = torch.randint(0, 256, (70, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float()
    keep = x.clone()
    got = logits_of_images(net, x, t.spec, batch=32)
    assert torch.equal(x, keep)
    assert torch.allclose(got, teacher_logits(net, t.spec.normalize(keep / 255)), atol=1e-5)


def _info(capsys, *args: str) -> tuple[int, dict, str]:
    from dfnas.cli import main

    code = main(["teacher", "info", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_teacher_info_checks_the_spec_units_on_real_data_and_noise(capsys):
    code, rep, err = _info(capsys, "--teacher", "mnist-cnn", "--data", "mnist")
    inp = rep["input"]
    assert code == 0 and err == "" and "warning" not in inp
    assert inp["teacher_accuracy"] >= 0.95 and 0.5 < inp["first_bn"]["ratio"] < 2
    code, rep, err = _info(capsys, "--teacher", "mnist-cnn")  # no data: smooth noise, same verdict
    assert code == 0 and err == "" and 0.1 < rep["input"]["first_bn"]["ratio"] < 10


@pytest.mark.parametrize("units", [{"pixel_range": [0, 255], "mean": [0], "std": [1]},  # raw pixels: 78x too large
                                   {"mean": [33.3], "std": [78.6]}])  # 0-255 mean/std on [0, 1] pixels
def test_teacher_info_warns_in_one_line_about_a_spec_in_the_wrong_units(capsys, tmp_path, units):
    spec = {**load_teacher("mnist-cnn").spec.to_dict(), **units}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code, rep, err = _info(capsys, "--teacher", "mnist-cnn", "--spec", str(tmp_path / "spec.json"))
    ratio = rep["input"]["first_bn"]["ratio"]
    assert code == 0 and not 0.2 < ratio < 5
    assert err.count("\n") == 1 and err.startswith("dfnas: warning:") and "pixel_range" in err


@pytest.mark.parametrize("wrap", ["state_dict", "model_state_dict", "model"])
def test_checkpoints_as_users_hold_them(user_teacher, tmp_path, wrap):
    """A training checkpoint: the state dict under a key beside epoch/accuracy, saved from
    DataParallel (`module.` prefix), without BN's `num_batches_tracked` (pre-0.4.1 PyTorch)."""
    sd = torch.load(user_teacher["pt"], weights_only=True)
    kept = {f"module.{k}": v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert len(kept) < len(sd)
    torch.save({"best_prec1": 91.7, "epoch": 199, wrap: kept}, tmp_path / "ckpt.th")
    t = load_teacher(f"{user_teacher['py']}:build", tmp_path / "ckpt.th", user_teacher["spec"])
    x = torch.rand(3, 3, 16, 16) * 255
    assert torch.allclose(t.module(x), user_teacher["module"](x))
    # a real missing weight is still refused, by name
    del kept["module.head.bias"]
    torch.save({wrap: kept}, tmp_path / "short.th")
    with pytest.raises(DfnasError, match="missing.*head.bias"):
        load_teacher(f"{user_teacher['py']}:build", tmp_path / "short.th", user_teacher["spec"])


def test_bundled_cifar10_resnet20() -> None:
    """The real CIFAR-10 ResNet-20 ships as safetensors with its record and licence notice;
    the project's own ResNet definition loads it (ResNet-56 is the same code at depth 56)."""
    from dfnas.io import sha256_tensors
    from dfnas.teachers import WEIGHTS_DIR, bundled_record
    from dfnas.teachers.resnet_cifar import build

    t = load_teacher("cifar10-resnet20")
    rec = bundled_record("cifar10-resnet20")
    assert validate_teacher(t) == 19 and t.spec.num_classes == 10 and t.spec.class_names[0] == "airplane"
    assert t.weights_hash == rec["weights_sha256"] == sha256_tensors(t.module.state_dict())
    assert 0.9 < t.info["test_accuracy"] < 0.93 and (WEIGHTS_DIR / "LICENSE-resnet-cifar10").is_file()
    assert sum(p.numel() for p in t.module.parameters()) == 269_722  # ResNet-20's published 0.27M
    assert sum(p.numel() for p in build(56).parameters()) == 853_018  # ResNet-56: 0.85M
    with pytest.raises(ValueError, match="6n"):
        build(21)
