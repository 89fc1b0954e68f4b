"""The synthetic-set format, as read by every later stage (search, training, bench).

`dfnas synth` (synth/writer.py) writes it; this module only reads, so data never depends on
the synthesis stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dfnas.data.spec import InputSpec
from dfnas.errors import DfnasError
from dfnas.io import sha256_file

FORMAT = "dfnas-synthetic"
FORMAT_VERSION = 1
SHARD_KEYS = ("images", "logits", "labels", "rounds", "slots")


def load_manifest(root: Path, fix: str) -> dict[str, Any]:
    """The manifest of a dfnas synthetic set; one-line errors for a corrupt or foreign one."""
    mpath = root / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise DfnasError(f"{mpath} is corrupted ({e.msg}); {fix}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise DfnasError(f"{root} is not a dfnas synthetic set (format {found!r}); {fix}")
    return manifest


def shard_path(root: Path, rec: dict[str, Any]) -> Path:
    """Where a manifest's shard lies: a relative name inside the set, or the set is corrupt
    (a manifest must never lead a reader elsewhere on the disk)."""
    rel = rec.get("file") if isinstance(rec, dict) else None
    path = (root / rel).resolve() if isinstance(rel, str) and rel else None
    if path is None or Path(rel).is_absolute() or not path.is_relative_to(root.resolve()):
        raise DfnasError(f"synthetic set {root} is corrupted: its manifest names a shard outside the set ({rel!r}); "
                         "regenerate the set")
    return path


def read_dataset(root: str | Path, verify: bool = True) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Manifest and all shard tensors concatenated in (round, batch) order."""
    from safetensors.torch import load_file

    root = Path(root)
    if not (root / "manifest.json").is_file():
        raise DfnasError(f"{root} is not a dfnas synthetic set (no manifest.json); run `dfnas synth` first")
    manifest = load_manifest(root, fix="regenerate the set")
    if manifest.get("status") != "complete":
        raise DfnasError(f"synthetic set {root} is not finished; rerun the same `dfnas synth` command to complete it")
    shards = sorted(manifest["shards"].values(), key=lambda r: (r["round"], r["batch"]))
    if not shards:
        raise DfnasError(f"synthetic set {root} is empty")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in SHARD_KEYS}
    for rec in shards:
        path = shard_path(root, rec)
        if not path.is_file():
            raise DfnasError(f"synthetic set {root} lacks shard {rec['file']}; regenerate the set")
        if verify and sha256_file(path) != rec["sha256"]:
            raise DfnasError(f"shard {rec['file']} of {root} is corrupted (checksum mismatch); regenerate the set")
        t = load_file(str(path))
        for k in SHARD_KEYS:
            parts[k].append(t[k])
    return manifest, {k: torch.cat(v) for k, v in parts.items()}


class SyntheticDataset(torch.utils.data.Dataset):
    """A `dfnas synth` output folder: (normalized float image, teacher logits, class).

    Images are stored as uint8 in shards; the logits were recomputed by the teacher on
    exactly these uint8 images. All shards are loaded into memory (uint8 is small).
    Attributes: `images` (N,C,H,W) uint8, `logits` (N,K) float32, `labels` (N,) int64,
    `rounds` (N,) int64, `spec`, `manifest`.
    """

    def __init__(self, root: str | Path, rounds: list[int] | None = None, verify: bool = True) -> None:
        self.root = Path(root)
        self.manifest, tensors = read_dataset(self.root, verify=verify)
        self.spec = InputSpec.from_dict(self.manifest["spec"])
        keep = torch.ones(len(tensors["labels"]), dtype=torch.bool)
        if rounds is not None:
            keep = torch.isin(tensors["rounds"], torch.tensor(rounds, dtype=torch.int64))
        self.images = tensors["images"][keep]
        self.logits = tensors["logits"][keep]
        self.labels = tensors["labels"][keep]
        self.rounds = tensors["rounds"][keep]
        self._scale, self._shift = self.spec.affine()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x = self.images[i].float().div(255).unsqueeze(0) * self._scale + self._shift
        return x[0], self.logits[i], int(self.labels[i])
