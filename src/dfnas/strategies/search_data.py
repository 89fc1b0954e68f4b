"""The data of a search: one `Source` (real or synthetic) split into a seeded train/val pair.

`SearchData` serves augmented, normalised batches. Batch order and augmentation come from
generators seeded by `derive_seed(seed, split, key)`, so a resumed run replays exactly the
batches the killed run would have seen. With an online teacher it serves the teacher's logits
on the very augmented view of each batch (real or synthetic data), so the loss is KD in every
strategy without any change to the strategies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from dfnas.data.sources import Source
from dfnas.data.transforms import augment
from dfnas.dist import Group
from dfnas.errors import DfnasError
from dfnas.io import derive_seed
from dfnas.strategies.config import SearchConfig
from dfnas.teachers.online import logits_of_images, teacher_logits


def check_fits(source: Source) -> None:
    """Images, labels and stored logits must agree with the input spec the space is built from."""
    s = source.spec
    if source.x.dtype != torch.uint8 or source.x.dim() != 4 or tuple(source.x.shape[1:]) != (s.channels, s.height, s.width):
        raise DfnasError(f"data {source.name} has images {tuple(source.x.shape[1:])} ({source.x.dtype}), "
                         f"the input spec says {(s.channels, s.height, s.width)} uint8; pass the matching --spec")
    if len(source.y) != len(source.x) or len(source.y) == 0:
        raise DfnasError(f"data {source.name} has {len(source.x)} images and {len(source.y)} labels")
    if int(source.y.min()) < 0 or int(source.y.max()) >= s.num_classes:
        raise DfnasError(f"data {source.name} has labels outside [0, {s.num_classes}); check num_classes in the spec")
    if source.logits is not None and tuple(source.logits.shape) != (len(source.x), s.num_classes):
        raise DfnasError(f"data {source.name}: stored logits have shape {tuple(source.logits.shape)}, "
                         f"expected ({len(source.x)}, {s.num_classes})")


class SearchData:
    """A seeded train/val split of one Source, served as augmented normalised batches."""

    def __init__(self, source: Source, cfg: SearchConfig, device: torch.device | str = "cpu",
                 teacher: nn.Module | None = None, group: Group | None = None) -> None:
        """`teacher`: an online teacher taking input normalised like `source` (see OnlineTeacher).
        `group`: the torchrun processes; while `sharded`, each serves its rows of every batch."""
        check_fits(source)
        n = len(source)
        n_val = int(round(n * cfg.val_fraction))
        if not 0 < n_val < n:
            raise DfnasError(f"search.val_fraction={cfg.val_fraction} leaves an empty split of {n} images; use a value in (0, 1)")
        if min(n - n_val, n_val) < 2:
            raise DfnasError(f"data source {source.name} has only {n} images: too few to split into train and val")
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "split"))
        perm = torch.randperm(n, generator=g)
        self.source = source
        self.spec = source.spec
        self.device = torch.device(device)
        self.batch_size = min(cfg.batch_size, n - n_val, n_val)
        self.seed = cfg.seed
        self.max_shift = cfg.max_shift if cfg.max_shift is not None else max(1, source.spec.height // 14)
        self.flip = bool(cfg.flip and source.spec.allow_flip)
        target = source.logits.float() if source.logits is not None else source.y
        self.x = {"val": source.x[perm[:n_val]], "train": source.x[perm[n_val:]]}
        self.t = {"val": target[perm[:n_val]], "train": target[perm[n_val:]]}
        self.max_steps = cfg.max_steps_per_epoch
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        self._clean_logits: dict[str, torch.Tensor] = {}
        self.group = group or Group()
        self.sharded = False
        # this rank's rows of every sharded batch, and their fraction: the weight of its loss
        self.rows, self.share = self.group.split(self.batch_size, "search.batch_size")

    @property
    def is_synthetic(self) -> bool:
        return self.source.is_synthetic

    @property
    def loss_kind(self) -> str:
        """`kd-online` (teacher on each view), `kd-stored` (synthetic logits) or `ce` (labels)."""
        if self.teacher is not None:
            return "kd-online"
        return "kd-stored" if self.source.logits is not None else "ce"

    def clean_logits(self, split: str) -> torch.Tensor:
        """The online teacher's logits on the un-augmented images of `split` (computed once:
        without augmentation the view of an image is fixed, and eval-mode BN is per image)."""
        assert self.teacher is not None
        if split not in self._clean_logits:
            self._clean_logits[split] = logits_of_images(self.teacher, self.x[split], self.source.spec,
                                                         device=self.device)
        return self._clean_logits[split]

    def steps(self, split: str) -> int:
        """Batches per epoch of `split` (last partial batch dropped: BN needs full batches)."""
        s = len(self.x[split]) // self.batch_size
        return min(s, self.max_steps) if self.max_steps else s

    def batches(self, split: str, key: Any, train_aug: bool = True, limit: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches of `split`; the same (seed, split, key) always gives the same stream.
        While `sharded`, this rank's rows of each (augmented once, identically on every rank).

        `limit`: None = one epoch (capped by max_steps_per_epoch), 0 = every full batch of the
        split (scoring "on the whole val split" must not be capped), k = at most k batches."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, split, str(key)))
        x_all, t_all = self.x[split], self.t[split]
        perm = torch.randperm(len(x_all), generator=g)
        whole = len(x_all) // self.batch_size
        n = self.steps(split) if limit is None else min(limit or whole, whole)
        for i in range(n):
            idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
            x = x_all[idx].to(self.device, non_blocking=True).to(torch.get_default_dtype()).div_(255)
            if train_aug:
                x = augment(x, self.max_shift, self.flip, g)
            x = self.source.normalize(x)
            if self.sharded and self.group.distributed:
                x, idx = x[self.rows], idx[self.rows]
            if self.teacher is None:
                t = t_all[idx].to(self.device, non_blocking=True)
            elif train_aug:
                t = teacher_logits(self.teacher, x)  # the same augmented view the student sees
            else:
                t = self.clean_logits(split)[idx.to(self.device)]
            yield x, t

    def fixed_batch(self, split: str, n: int) -> torch.Tensor:
        """The first `n` images (fewer in a smaller split) of a seeded shuffle of `split`, not
        augmented, normalised, whole on every rank: the one batch a training-free proxy sees."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, split, "fixed-batch"))
        idx = torch.randperm(len(self.x[split]), generator=g)[:n]
        return self.source.normalize(self.x[split][idx].to(self.device).to(torch.get_default_dtype()).div_(255))

    def cycle(self, split: str, key: Any, train_aug: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless stream over `split` (the val split of a bilevel search is shorter than train)."""
        r = 0
        while True:
            yield from self.batches(split, f"{key}/{r}", train_aug)
            r += 1
