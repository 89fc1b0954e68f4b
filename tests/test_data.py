"""The bundled tasks: the cluttered MNIST split is fixed, built as documented, and refuses
a spec that does not fit; its bundled teacher matches its record; `dfnas teacher train`
reproduces a record for either task."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dfnas.cli import main
from dfnas.data.sources import (
    CLUTTER_SIZE,
    _paste_max,
    load_source,
    mnist_clutter_split,
    mnist_spec,
    mnist_split,
)
from dfnas.data.spec import InputSpec
from dfnas.errors import DfnasError
from dfnas.teachers import load_teacher
from dfnas.teachers.mnist_cnn import build


def test_paste_max_matches_a_per_image_loop():
    g = torch.Generator().manual_seed(0)
    canvas = torch.randint(0, 256, (5, 12, 12), generator=g, dtype=torch.uint8)
    pieces = torch.randint(0, 256, (5, 4, 6), generator=g, dtype=torch.uint8)
    top, left = torch.tensor([0, 8, 3, 5, 1]), torch.tensor([0, 6, 2, 0, 6])
    want = canvas.clone()
    for i in range(5):
        win = want[i, top[i]:top[i] + 4, left[i]:left[i] + 6]
        want[i, top[i]:top[i] + 4, left[i]:left[i] + 6] = torch.maximum(win, pieces[i])
    assert torch.equal(_paste_max(canvas, pieces, top, left), want)


def test_clutter_split_is_fixed_holds_each_digit_and_keeps_mnist_labels():
    x, y = mnist_clutter_split("train")
    xt, yt = mnist_clutter_split("test")
    assert x.shape == (4000, 1, CLUTTER_SIZE, CLUTTER_SIZE) and x.dtype == torch.uint8 and xt.shape[0] == 1000
    assert torch.equal(y, mnist_split("train")[1]) and torch.equal(yt, mnist_split("test")[1])
    assert torch.equal(mnist_clutter_split("train")[0], x)  # the same draws every call
    digits = mnist_split("train")[0][:50, 0]
    for i in range(50):  # max-combined: some 28x28 window is at least the digit everywhere
        win = x[i, 0].unfold(0, 28, 1).unfold(1, 28, 1)  # (9, 9, 28, 28) windows
        assert (win >= digits[i]).all(-1).all(-1).any(), f"digit {i} not found on its canvas"
        assert not (x[i + 1, 0].unfold(0, 28, 1).unfold(1, 28, 1) >= digits[i]).all(-1).all(-1).any()
    # there is clutter outside the digit: the canvas has more ink than the digit alone
    assert (x[:50] > 0).sum() > (digits > 0).sum() * 1.2


def test_clutter_task_refuses_a_spec_of_another_shape_and_takes_a_fitting_one():
    with pytest.raises(DfnasError, match="mnist-clutter is 1x36x36.*use a teacher/spec made for it"):
        load_source("mnist-clutter", mnist_spec())
    t = load_teacher("mnist-clutter-cnn")
    src = load_source("mnist-clutter", t.spec, "test")
    assert src.spec is t.spec and len(src) == 1000
    with pytest.raises(DfnasError, match="data mnist is 1x28x28"):
        load_source("mnist", t.spec)


def test_bundled_clutter_teacher_matches_its_record():
    t = load_teacher("mnist-clutter-cnn")
    x, y = mnist_clutter_split("test")
    with torch.inference_mode():
        acc = (t.module(t.spec.normalize(x.float() / 255)).argmax(1) == y).float().mean().item()
    assert abs(acc - t.info["test_accuracy"]) < 1e-6  # the split and the weights are the shipped ones
    assert acc >= 0.9
    # the same teacher on the uncluttered task's images cannot even run: the spec keeps them apart
    assert (t.spec.height, t.spec.width) == (CLUTTER_SIZE, CLUTTER_SIZE)


def test_teacher_train_writes_a_loadable_record(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["teacher", "train", "mnist-clutter", "--out", str(out), "--epochs", "1", "--set", "width=4"]) == 0
    rec = json.loads((out / "mnist-clutter-cnn.json").read_text())
    assert rec["task"] == "mnist-clutter" and rec["factory_kwargs"] == {"width": 4}
    assert not list(out.glob("*.ckpt"))  # the resume checkpoint is gone once done
    model = build(**rec["factory_kwargs"])  # the record names the factory and its arguments
    model.load_state_dict(load_file(str(out / "mnist-clutter-cnn.safetensors")))
    x, y = mnist_clutter_split("test")
    with torch.inference_mode():
        acc = (model.eval()(InputSpec.from_dict(rec["spec"]).normalize(x.float() / 255)).argmax(1) == y).float().mean()
    assert abs(acc.item() - rec["test_accuracy"]) < 1e-6
    with pytest.raises(SystemExit):
        main(["teacher", "train", "cifar", "--out", str(out)])
    assert "invalid choice: 'cifar'" in capsys.readouterr().err


def _write_cifar_batches(root, n: int = 12, seed: int = 0):
    """A tiny `cifar-10-batches-py` folder in the real format (pickled dicts, bytes keys)."""
    import pickle

    root.mkdir()
    g = np.random.default_rng(seed)
    want = {}
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        data = g.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in g.integers(0, 10, n)]
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f, protocol=2)
        want[name] = (data, labels)
    return want


def test_cifar10_folder_reads_the_standard_format(tmp_path):
    from dfnas.data.sources import load_source

    want = _write_cifar_batches(tmp_path / "cifar-10-batches-py")
    train = load_source(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", split="train")
    test = load_source(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", split="test")
    assert train.x.shape == (24, 3, 32, 32) and test.x.shape == (12, 3, 32, 32)
    # row-major 3072 = 3 planes of 32x32 (R, G, B), batches in order
    assert torch.equal(train.x[12], torch.from_numpy(want["data_batch_2"][0][0].reshape(3, 32, 32)))
    assert train.y.tolist() == want["data_batch_1"][1] + want["data_batch_2"][1]
    assert train.spec.class_names[3] == "cat" and train.spec.mean == [0.485, 0.456, 0.406]


def test_cifar10_folder_refuses_what_is_not_one(tmp_path):
    import os
    import pickle

    from dfnas.data.sources import load_source
    from dfnas.errors import DfnasError

    with pytest.raises(DfnasError, match="CIFAR-10 folder not found"):
        load_source(f"cifar10:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DfnasError, match="holds no data_batch_1"):
        load_source(f"cifar10:{tmp_path / 'empty'}")
    evil = tmp_path / "evil"
    evil.mkdir()
    with open(evil / "data_batch_1", "wb") as f:  # a pickle that would run a command
        pickle.dump({b"data": os.system}, f)
    with pytest.raises(DfnasError, match="refusing to load"):
        load_source(f"cifar10:{evil}")
    (evil / "data_batch_1").write_bytes(b"\x80\x02}q\x00")  # cut off
    with pytest.raises(DfnasError, match="not a CIFAR-10 python batch"):
        load_source(f"cifar10:{evil}")


def test_random_translate_is_pad_and_crop_per_image():
    """Each image moved by its own integer offset, the vacated band zero: checked against
    padding and cropping each image by hand with the same draw of offsets."""
    import torch.nn.functional as F

    from dfnas.data.transforms import random_translate

    x = torch.rand(9, 3, 7, 6) + 0.1
    out = random_translate(x, 2, torch.Generator().manual_seed(4))
    shifts = torch.randint(-2, 3, (9, 2), generator=torch.Generator().manual_seed(4))
    p = F.pad(x, (2, 2, 2, 2))
    for i, (dx, dy) in enumerate(shifts.tolist()):
        assert torch.equal(out[i], p[i, :, 2 + dy:2 + dy + 7, 2 + dx:2 + dx + 6])
    assert len({tuple(s) for s in shifts.tolist()}) > 1


def test_color_shift_is_one_gain_and_offset_per_image_and_channel():
    """Every pixel of an image's channel moves by the same gain in [e^-c, e^c] and offset in
    [-c, c]; images and channels draw their own."""
    from dfnas.data.transforms import color_shift

    x = torch.rand(8, 3, 5, 5)
    out = color_shift(x, 0.2, torch.Generator().manual_seed(0))
    flat_x, flat_o = x.flatten(2), out.flatten(2)
    # fit out = a x + b per (image, channel) from two pixels, then check every pixel
    a = (flat_o[..., 1] - flat_o[..., 0]) / (flat_x[..., 1] - flat_x[..., 0])
    b = flat_o[..., 0] - a * flat_x[..., 0]
    assert torch.allclose(flat_o, a[..., None] * flat_x + b[..., None], atol=1e-4)
    assert (a >= math.exp(-0.2) - 1e-4).all() and (a <= math.exp(0.2) + 1e-4).all() and (b.abs() <= 0.2 + 1e-4).all()
    assert a.std() > 0.02 and b.std() > 0.02


def test_npz_with_arrays_per_split_reads_the_split_asked_for(tmp_path) -> None:
    """An .npz of x_train/y_train + x_test/y_test (as the CIFAR-10 sample ships) serves both splits."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (12, 1, 8, 8), dtype=np.uint8), "y_train": np.arange(12) % 3,
              "x_test": rng.integers(0, 256, (6, 1, 8, 8), dtype=np.uint8), "y_test": np.arange(6) % 3}
    np.savez(tmp_path / "d.npz", **arrays)
    spec = InputSpec(1, 8, 8, 3, [0.5], [0.25])
    for split in ("train", "test"):
        src = load_source(f"npz:{tmp_path / 'd.npz'}", spec, split)
        assert np.array_equal(src.x.numpy(), arrays[f"x_{split}"]) and src.y.tolist() == arrays[f"y_{split}"].tolist()
    with pytest.raises(DfnasError, match="x_val"):
        load_source(f"npz:{tmp_path / 'd.npz'}", spec, "val")
