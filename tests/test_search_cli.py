"""`dfnas search` end to end on a tiny setting, and every bad input it must refuse (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dfnas.cli import main

TINY = ["--quiet", "--epochs", "1", "--set", "max_steps_per_epoch=2", "--set", "batch_size=16",
        "--set", "space_args.channels=4"]


def search(*args: str) -> int:
    return main(["search", *args])


def test_search_writes_outputs_and_rerun_resumes(tmp_path, capsys) -> None:
    from dfnas.spaces.arch import load_arch

    out = tmp_path / "run"
    cmd = ["--algo", "darts", "--space", "nb201", "--data", "mnist", "--out", str(out), *TINY]
    assert search(*cmd) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "nb201_string" in summary
    for f in ("arch.json", "config.yaml", "search.log", "alphas.png", "run.json", "checkpoint.pt"):
        assert (out / f).is_file(), f
    rec = load_arch(out / "arch.json")
    d = json.loads((out / "arch.json").read_text())
    assert rec.space == "nb201" and d["algo"] == "darts" and d["seed"] == 0 and d["flops"] > 0 and d["params"] > 0
    assert d["data"]["source"] == "mnist:train"
    first = rec.choices
    # the same command again: resumes from the finished checkpoint, same architecture
    assert search(*cmd) == 0
    assert load_arch(out / "arch.json").choices == first


def test_search_config_file_and_spos(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("search:\n  algo: spos\n  space: spos\n  spos:\n    population: 3\n    generations: 1\n"
                   "    topk: 2\n    mutation: 1\n    crossover: 1\n    bn_batches: 1\n    val_batches: 1\n")
    out = tmp_path / "spos"
    assert search("--config", str(cfg), "--data", "mnist", "--out", str(out), "--quiet", "--epochs", "1",
                  "--set", "max_steps_per_epoch=2", "--set", "batch_size=16") == 0
    assert json.loads((out / "arch.json").read_text())["algo"] == "spos"


@pytest.mark.parametrize("args,needle", [
    (["--algo", "evolve", "--space", "nb201"], "unknown search algorithm"),
    (["--algo", "proxyless", "--space", "darts"], "cannot search --space darts"),
    (["--algo", "darts", "--space", "resnet"], "unknown search space"),
    (["--algo", "darts", "--space", "nb201", "--set", "space_args.in_channels=3"], "does not fit the data"),
    (["--algo", "darts", "--space", "nb201", "--set", "nonsense=1"], "unknown config key"),
    (["--algo", "darts", "--space", "nb201", "--set", "space_args.depth=3"], "has no setting"),
    (["--algo", "darts", "--space", "nb201", "--epochs", "0"], "epochs must be >= 1"),
    (["--algo", "darts", "--space", "nb201", "--set", "darts.order=3"], "darts.order"),
    (["--algo", "darts", "--space", "nb201", "--set", "val_fraction=1.5"], "val_fraction"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, args: list[str], needle: str) -> None:
    out = tmp_path / "o"
    assert search(*args, "--data", "mnist", "--out", str(out), "--quiet") == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (out / "checkpoint.pt").exists()


def test_bad_data_exit_2(tmp_path, capsys) -> None:
    out = str(tmp_path / "o")
    base = ["--algo", "darts", "--space", "nb201", "--out", out, "--quiet"]
    assert search(*base, "--data", "npz:" + str(tmp_path / "missing.npz")) == 2
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 3, 28, 28), np.uint8), y=np.zeros(8, np.int64))
    assert search(*base, "--data", "npz:" + str(tmp_path / "d.npz")) == 2  # no spec
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"channels": 1, "height": 28, "width": 28, "num_classes": 10,
                                "mean": [0.5], "std": [0.5]}))
    assert search(*base, "--data", "npz:" + str(tmp_path / "d.npz"), "--spec", str(spec)) == 2  # 3 channels
    np.savez(tmp_path / "tiny.npz", x=np.zeros((2, 1, 28, 28), np.uint8), y=np.zeros(2, np.int64))
    assert search(*base, "--data", "npz:" + str(tmp_path / "tiny.npz"), "--spec", str(spec)) == 2  # too few
    spec3 = tmp_path / "spec3.json"
    spec3.write_text(json.dumps({"channels": 3, "height": 28, "width": 28, "num_classes": 10,
                                 "mean": [0.5], "std": [0.5]}))
    assert search(*base, "--data", "mnist", "--spec", str(spec3)) == 2  # MNIST is 1-channel
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("dfnas: error:") for line in err)


def test_out_dir_of_another_run_is_refused_unless_force(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    cmd = ["--algo", "random", "--space", "nb201", "--data", "mnist", "--out", str(out), *TINY,
           "--set", "random.samples=1", "--set", "random.train_steps=1", "--set", "random.val_batches=1"]
    assert search(*cmd) == 0
    assert search(*cmd, "--seed", "5") == 2
    assert "--force" in capsys.readouterr().err
    assert search(*cmd, "--seed", "5", "--force") == 0
    assert json.loads((out / "arch.json").read_text())["seed"] == 5


# ----------------------------------------------------------------------------- online teacher


class RecordingTeacher(torch.nn.Module):
    """A linear 'teacher' on 1x28x28 input that remembers every input it was given."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(784, 10)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.lin(x.flatten(1))


def _mnist_subset(n: int = 64, synthetic: bool = False):
    from dfnas.data.sources import load_source

    src = load_source("mnist")
    src.x, src.y = src.x[:n], src.y[:n]
    if synthetic:
        src.logits = torch.randn(n, 10, generator=torch.Generator().manual_seed(1))
    return src


@pytest.mark.parametrize("synthetic", [False, True])
def test_online_teacher_targets_are_its_logits_on_the_same_view(synthetic: bool) -> None:
    from dfnas.strategies.config import SearchConfig
    from dfnas.strategies.search_data import SearchData
    from dfnas.training.losses import kd_loss, target_loss

    cfg = SearchConfig(batch_size=8, seed=3)
    src = _mnist_subset(synthetic=synthetic)
    plain = SearchData(src, cfg)
    assert plain.loss_kind == ("kd-stored" if synthetic else "ce")
    teacher = RecordingTeacher()
    data = SearchData(src, cfg, teacher=teacher)
    assert data.loss_kind == "kd-online"
    for (x, t), (x0, _) in zip(data.batches("train", "k"), plain.batches("train", "k"), strict=True):
        assert torch.equal(x, x0)  # the teacher does not change the student's stream
        assert torch.equal(teacher.seen[-1], x)  # the teacher saw exactly the augmented view
        assert t.dtype == torch.float32 and not t.is_inference()
        assert torch.allclose(t, teacher.lin(x.flatten(1)).detach(), atol=1e-6)
        student = torch.zeros(len(x), 10, requires_grad=True)
        loss = target_loss(student, t, cfg.kd_temperature)
        loss.backward()  # usable as a target under autograd
        assert torch.allclose(loss, kd_loss(student, t, cfg.kd_temperature))
    n_calls = len(teacher.seen)
    clean = list(data.batches("val", "score", train_aug=False))
    clean += list(data.batches("val", "score", train_aug=False))
    assert len(teacher.seen) == n_calls + 1  # un-augmented targets computed once per split
    for x, t in clean:
        assert torch.allclose(t, teacher.lin(x.flatten(1)).detach(), atol=1e-5)


def test_online_teacher_is_fed_its_own_normalisation() -> None:
    from dfnas.data.sources import mnist_spec
    from dfnas.data.spec import InputSpec
    from dfnas.teachers import Teacher
    from dfnas.teachers.online import OnlineTeacher

    t_spec = InputSpec(1, 28, 28, 10, mean=[127.5], std=[50.0], pixel_range=(0, 255), allow_flip=False)
    rec = RecordingTeacher()
    wrapped = OnlineTeacher(Teacher(rec, t_spec, "rec", "factory"), mnist_spec())
    x01 = torch.rand(2, 1, 28, 28)
    wrapped(mnist_spec().normalize(x01))
    assert torch.allclose(rec.seen[-1], t_spec.normalize(x01), atol=1e-4)
    same = OnlineTeacher(Teacher(rec, mnist_spec(), "rec", "factory"), mnist_spec())
    assert not same.remap


def test_search_with_online_teacher_cli(tmp_path, capsys) -> None:
    out = tmp_path / "kd"
    cmd = ["--algo", "darts", "--space", "nb201", "--data", "mnist", "--teacher", "mnist-cnn",
           "--out", str(out), *TINY]
    assert search(*cmd) == 0
    d = json.loads((out / "arch.json").read_text())
    assert d["search_loss"] == "kd-online" and d["teacher"]["name"] == "mnist-cnn"
    assert json.loads((out / "run.json").read_text())["teacher"]["name"] == "mnist-cnn"
    # without a teacher the same folder is another run; with one, the loss on real data is CE
    assert search(*cmd[:6], *cmd[8:]) == 2
    assert "--force" in capsys.readouterr().err
    plain = tmp_path / "ce"
    assert search(*cmd[:6], "--out", str(plain), *TINY) == 0
    assert json.loads((plain / "arch.json").read_text())["search_loss"] == "ce"


def test_search_with_torchscript_teacher_and_spec(tmp_path, user_teacher) -> None:
    g = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=g.integers(0, 256, (40, 3, 16, 16), dtype=np.uint8),
             y=np.arange(40, dtype=np.int64) % 4)
    out = tmp_path / "ts"
    assert search("--algo", "random", "--space", "nb201", "--data", "npz:" + str(tmp_path / "d.npz"),
                  "--spec", str(user_teacher["spec"]), "--teacher", str(user_teacher["ts"]), "--out", str(out),
                  *TINY, "--set", "random.samples=1", "--set", "random.train_steps=1",
                  "--set", "random.val_batches=1") == 0
    assert json.loads((out / "arch.json").read_text())["search_loss"] == "kd-online"


def test_teacher_that_does_not_fit_the_data_exit_2(tmp_path, capsys, user_teacher) -> None:
    out = tmp_path / "o"
    base = ["--algo", "darts", "--space", "nb201", "--data", "mnist", "--out", str(out), "--quiet"]
    # a 3x16x16, 4-class factory teacher on 1x28x28 MNIST
    assert search(*base, "--teacher", f"{user_teacher['py']}:build", "--teacher-weights",
                  str(user_teacher["safetensors"])) == 2  # no --spec: fed MNIST's spec, its forward fails
    assert search(*base, "--teacher", "nope-teacher") == 2
    assert search(*base, "--teacher-weights", str(user_teacher["safetensors"])) == 2
    # the bundled 1x28x28 MNIST teacher on 3x16x16 data
    np.savez(tmp_path / "d.npz", x=np.zeros((40, 3, 16, 16), np.uint8), y=np.arange(40, dtype=np.int64) % 4)
    npz = ["--data", "npz:" + str(tmp_path / "d.npz"), "--spec", str(user_teacher["spec"])]
    assert search(*base[:4], *base[6:], *npz, "--teacher", "mnist-cnn") == 2
    # a factory teacher with 4 outputs on data whose spec says 5 classes
    spec5 = tmp_path / "spec5.json"
    spec5.write_text(json.dumps({**json.loads(user_teacher["spec"].read_text()), "num_classes": 5, "class_names": None}))
    assert search(*base[:4], *base[6:], *npz[:2], "--spec", str(spec5), "--teacher", f"{user_teacher['py']}:build",
                  "--teacher-weights", str(user_teacher["safetensors"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("dfnas: error:") for line in err)
    assert "teacher" in err[0] and not (out / "checkpoint.pt").exists()
    assert "takes 1x28x28 images" in err[3] and "4 classes" in err[4]


def test_zero_limit_scores_the_whole_val_split_despite_the_epoch_cap() -> None:
    """`val_batches: 0` means the whole val split, also when max_steps_per_epoch caps training epochs."""
    from dfnas.strategies.config import SearchConfig
    from dfnas.strategies.search_data import SearchData

    src = _mnist_subset(synthetic=False)
    data = SearchData(src, SearchConfig(batch_size=4, seed=0, max_steps_per_epoch=1))
    whole = len(data.x["val"]) // data.batch_size
    assert whole > 2
    assert len(list(data.batches("val", "k", train_aug=False))) == 1  # one (capped) epoch
    assert len(list(data.batches("val", "k", train_aug=False, limit=0))) == whole
    assert len(list(data.batches("val", "k", train_aug=False, limit=2))) == 2


def test_resumed_search_counts_the_seconds_of_earlier_calls(tmp_path) -> None:
    import time

    from dfnas.strategies.config import SearchConfig
    from dfnas.strategies.context import SearchContext
    from dfnas.strategies.search_data import SearchData

    cfg = SearchConfig(batch_size=4, seed=0)
    data = SearchData(_mnist_subset(synthetic=False), cfg)
    first = SearchContext(cfg, data, tmp_path, progress=False, started=time.time() - 30.0)  # ran 30 s, then killed
    first.save_checkpoint({"epoch": 1})
    again = SearchContext(cfg, data, tmp_path, progress=False)
    assert again.seconds < 5
    again.load_checkpoint()
    assert 30.0 <= again.seconds < 35.0


def test_nb201_search_on_a_cifar_shaped_task_records_the_benchmark_truth(tmp_path, capsys) -> None:
    """3x32x32, 10 classes: the found cell's NAS-Bench-201 CIFAR-10 accuracy is recorded and
    printed, labelled as the benchmark's; on MNIST (28x28x1) there is no such figure."""
    from dfnas.spaces.nb201_bench import lookup

    g = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=g.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8), y=np.arange(40) % 10)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"channels": 3, "height": 32, "width": 32, "num_classes": 10,
                                "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}))
    out = tmp_path / "run"
    assert search("--algo", "random", "--space", "nb201", "--data", f"npz:{tmp_path / 'c.npz'}", "--spec", str(spec),
                  "--out", str(out), *TINY) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    d = json.loads((out / "arch.json").read_text())
    want = lookup(d["nb201_string"])["cifar10_test"]
    assert d["nb201_benchmark"]["dataset"] == "cifar10_test" and d["nb201_benchmark"]["test_accuracy"] == want
    assert "ground truth" in d["nb201_benchmark"]["note"] and 10 <= want <= 94.38
    assert summary["nb201_benchmark_test_accuracy"] == {"cifar10_test": want}
    mnist = tmp_path / "mnist"
    assert search("--algo", "random", "--space", "nb201", "--data", "mnist", "--out", str(mnist), *TINY) == 0
    assert "nb201_benchmark" not in json.loads((mnist / "arch.json").read_text())


def test_zeroshot_without_data_scores_noise_of_the_spec_shape(tmp_path, capsys) -> None:
    """No --data: zero-shot on Gaussian noise shaped by --spec (3x32x32 here), and the found NB201
    cell comes with its benchmark accuracy as for any 32x32, 10-class search."""
    from dfnas.data.sources import cifar10_spec

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(cifar10_spec().to_dict()))
    out = tmp_path / "zs"
    assert search("--algo", "zeroshot", "--space", "nb201", "--spec", str(spec), "--out", str(out), "--quiet",
                  "--set", "zeroshot.samples=3", "--set", "zeroshot.batch_size=8", "--set", "space_args.channels=4") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 10 < summary["nb201_benchmark_test_accuracy"]["cifar10_test"] < 95
    d = json.loads((out / "arch.json").read_text())
    assert d["search"]["input"] == "gaussian" and d["space_cfg"]["in_channels"] == 3 and d["data"]["source"] == "none"
