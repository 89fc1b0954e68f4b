"""The synthetic-dataset folder: shards, manifest, previews; safe to kill at any moment.

    DIR/manifest.json                      format, teacher identity, spec, resolved config,
                                           seed, shard checksums, counts, status
    DIR/config.yaml                        the resolved config
    DIR/shards/round-RR/batch-BBBB.safetensors   images uint8 (N,C,H,W), logits float32
                                           (recomputed on the stored uint8 images),
                                           labels, rounds, slots (int64)
    DIR/previews/round-RR.png              one row per class
    DIR/report.json                        quality per round

Each shard is written atomically, then recorded in the manifest (also atomic). A folder
that is not ours, or ours with another fingerprint, or with a shard whose checksum fails,
is refused before any work; nothing is deleted unless the user passes --force on a folder
that is ours.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dfnas import __version__
from dfnas.data.synthetic import (
    FORMAT,
    FORMAT_VERSION,
    SHARD_KEYS,
    load_manifest,
    read_dataset,
    shard_path,
)
from dfnas.errors import DfnasError
from dfnas.io import atomic_save, atomic_write_json, clean_temp_files, read_json, sha256_file
from dfnas.io.folders import OutputFolder


def shard_name(round_: int, batch: int) -> str:
    return f"round-{round_:02d}/batch-{batch:04d}"


class DatasetWriter:
    """Owns one output folder during synthesis (rank 0 in a future multi-process run)."""

    def __init__(self, root: str | Path, header: dict[str, Any], force: bool = False) -> None:
        self.root = Path(root)
        self.header = header
        self.owner = True  # writes the manifest; other ranks leave a record beside each shard
        self.manifest = self._open(force)

    @classmethod
    def join(cls, root: str | Path, header: dict[str, Any]) -> DatasetWriter:
        """Another rank's view of a folder rank 0 has opened: same fingerprint, no manifest writes."""
        self = cls.__new__(cls)
        self.root, self.header, self.owner = Path(root), header, False
        self.manifest = load_manifest(self.root, fix="rerun the same command")
        if self.manifest.get("fingerprint") != header["fingerprint"]:
            raise DfnasError(f"{root} was opened by rank 0 for other settings; launch every rank with the same command")
        return self

    # ------------------------------------------------------------------ open / resume / refuse
    def _open(self, force: bool) -> dict[str, Any]:
        root = self.root
        mpath = root / "manifest.json"
        folder = OutputFolder(root, "synth", legacy=("manifest.json", "format"))
        if folder.claim() is not None:
            manifest = load_manifest(root, fix="move the folder away or choose another --out")
            same = manifest.get("fingerprint") == self.header["fingerprint"]
            # --force on the same settings starts over too: the way out of a damaged shard
            if folder.changed([] if same else ["the loss of an older dfnas, or"], force, "teacher or config") or force:
                self._wipe()
            else:
                clean_temp_files(root)
                self._verify(manifest)
                return manifest
        folder.save({"fingerprint": self.header["fingerprint"]})
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "dfnas_version": __version__,
            "status": "running", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **self.header, "shards": {},
        }
        atomic_write_json(mpath, manifest)
        return manifest

    def _wipe(self) -> None:
        for name in ("shards", "previews"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in ("manifest.json", "report.json", "config.yaml"):
            (self.root / name).unlink(missing_ok=True)

    def _verify(self, manifest: dict[str, Any]) -> None:
        for name, rec in manifest.get("shards", {}).items():
            path = shard_path(self.root, rec)
            if not path.is_file() or sha256_file(path) != rec["sha256"]:
                raise DfnasError(
                    f"shard {name} in {self.root} is missing or corrupted (checksum mismatch); "
                    "rerun with --force to start over, or restore the file"
                )

    # ------------------------------------------------------------------ writing
    def has(self, round_: int, batch: int) -> bool:
        """Done: in the manifest, or written by a rank whose record rank 0 has not registered yet."""
        return shard_name(round_, batch) in self.manifest["shards"] or self._recorded(round_, batch) is not None

    def _file(self, round_: int, batch: int) -> str:
        return f"shards/{shard_name(round_, batch)}.safetensors"

    def _recorded(self, round_: int, batch: int) -> dict[str, Any] | None:
        """A rank's record of a shard, when the shard on disk still matches it."""
        rel = self._file(round_, batch)
        rec = read_json(self.root / (rel + ".json"))
        if isinstance(rec, dict) and rec.get("file") == rel and (self.root / rel).is_file() \
                and sha256_file(self.root / rel) == rec.get("sha256"):
            return rec
        return None

    def write_shard(self, round_: int, batch: int, tensors: dict[str, torch.Tensor], seconds: float) -> None:
        from safetensors.torch import save_file

        name = shard_name(round_, batch)
        rel = self._file(round_, batch)
        data = {k: tensors[k].detach().cpu().contiguous() for k in SHARD_KEYS}
        # no metadata: its key order is not stable, and shard bytes must be (checksums, resume)
        atomic_save(self.root / rel, lambda p: save_file(data, p))
        rec = {"file": rel, "sha256": sha256_file(self.root / rel), "round": round_, "batch": batch,
               "count": len(data["labels"]), "seconds": round(seconds, 3)}
        if self.owner:
            self.manifest["shards"][name] = rec
            self.save_manifest()
        else:  # only rank 0 writes the manifest: it registers this record when every rank is done
            atomic_write_json(self.root / (rel + ".json"), rec)

    def register_all(self, jobs: list[tuple[int, int]]) -> None:
        """Rank 0, after every rank finished: every shard of `jobs` into the manifest, checked."""
        for r, b in jobs:
            name = shard_name(r, b)
            if name not in self.manifest["shards"]:
                rec = self._recorded(r, b)
                if rec is None:
                    raise DfnasError(f"shard {name} of {self.root} is missing or does not match its record after "
                                     "every process finished; rerun the same command to redo it")
                self.manifest["shards"][name] = rec
        self.save_manifest()
        for p in (self.root / "shards").rglob("*.safetensors.json"):
            p.unlink()

    def read_shard(self, round_: int, batch: int) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.root / self._file(round_, batch)))

    def save_manifest(self) -> None:
        atomic_write_json(self.root / "manifest.json", self.manifest)

    def finish(self, num_classes: int) -> None:
        shards = sorted(self.manifest["shards"].values(), key=lambda r: (r["round"], r["batch"]))
        labels, rounds = [], []
        for rec in shards:
            from safetensors import safe_open

            with safe_open(str(self.root / rec["file"]), "pt") as f:
                labels.append(f.get_tensor("labels"))
                rounds.append(f.get_tensor("rounds"))
        lab, rnd = torch.cat(labels), torch.cat(rounds)
        self.manifest["counts"] = {
            "total": len(lab),
            "per_class": torch.bincount(lab, minlength=num_classes).tolist(),
            "per_round": {str(r): int((rnd == r).sum()) for r in sorted(set(rnd.tolist()))},
        }
        self.manifest["dataset_sha256"] = hashlib.sha256("".join(r["sha256"] for r in shards).encode()).hexdigest()
        self.manifest["status"] = "complete"
        self.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.save_manifest()


# ---------------------------------------------------------------------- previews / export
def save_grid(path: Path, images: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int = 10) -> None:
    """PNG grid, one row per class (teacher index order), up to `per_class` images a row."""
    from PIL import Image

    n, c, h, w = images.shape
    scale = max(1, 56 // max(h, w))
    pad = 2
    grid = np.full((num_classes * (h + pad) + pad, per_class * (w + pad) + pad, 3), 64, dtype=np.uint8)
    for k in range(num_classes):
        idx = torch.nonzero(labels == k).flatten()[:per_class]
        for j, i in enumerate(idx.tolist()):
            im = images[i].permute(1, 2, 0).numpy()
            im = np.repeat(im, 3, axis=2) if c == 1 else im[..., :3]
            y0, x0 = pad + k * (h + pad), pad + j * (w + pad)
            grid[y0 : y0 + h, x0 : x0 + w] = im
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    atomic_save(path, lambda p: img.save(p, format="PNG"))


def export_imagefolder(root: str | Path, out: str | Path) -> int:
    """PNG files in zero-padded class folders (`000_name/`) in teacher index order."""
    from PIL import Image

    manifest, t = read_dataset(root)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DfnasError(f"export folder {out} is not empty; choose a new folder")
    names = manifest["spec"].get("class_names") or [str(i) for i in range(manifest["spec"]["num_classes"])]
    width = max(3, len(str(len(names) - 1)))
    images, labels, rounds, slots = t["images"], t["labels"], t["rounds"], t["slots"]
    for k, name in enumerate(names):
        (out / f"{k:0{width}d}_{_safe(name)}").mkdir(parents=True, exist_ok=True)
    for i in range(len(labels)):
        k = int(labels[i])
        im = images[i].permute(1, 2, 0).numpy()
        pil = Image.fromarray(im[..., 0] if im.shape[2] == 1 else im)
        pil.save(out / f"{k:0{width}d}_{_safe(names[k])}" / f"r{int(rounds[i]):02d}_s{int(slots[i]):06d}.png")
    atomic_write_json(out / "labels.json", {"classes": names, "source": str(Path(root).resolve().name), "count": len(labels)})
    return len(labels)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:64]
