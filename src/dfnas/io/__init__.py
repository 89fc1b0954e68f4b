"""Small file helpers shared by every stage: atomic writes, hashing, seeds.

Every file dfnas writes goes through `atomic_write_*` (temp file in the same folder, fsync,
rename) so a run killed at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path | str, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        code = _os_code(e)
        if code is not None:  # e.g. safetensors' SafetensorError around a full disk: say it as the OS does
            raise OSError(code, os.strerror(code), str(path)) from e
        raise


def _os_code(e: BaseException) -> int | None:
    """The OS error number inside a library's write error (safetensors reports `Os { code: 28 ...`)."""
    if isinstance(e, OSError):
        return None
    m = re.search(r"Os \{ code: (\d+)", str(e))
    return int(m.group(1)) if m else None


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    _atomic(path, w)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save(path: Path | str, save: Callable[[str], None]) -> None:
    """Atomic wrapper for writers that take a filename (safetensors, PIL, matplotlib)."""
    _atomic(path, save)


def read_json(path: Path | str) -> Any | None:
    """One of our own JSON records, or None when it is missing or unreadable (e.g. a foreign
    or damaged file): callers then treat the folder as not theirs, never crash on it."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def clean_temp_files(folder: Path | str) -> None:
    """Remove temp files a killed run may have left behind."""
    for p in Path(folder).rglob(".*.tmp"):
        p.unlink(missing_ok=True)


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict, independent of the file format it came in."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def derive_seed(base: int, *keys: int | str) -> int:
    """A seed for one unit of work, independent of run order, resumes and the number of ranks."""
    h = hashlib.sha256(repr((int(base),) + tuple(keys)).encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with `n` torch CPU threads (None: leave them), restoring the count after."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def tune_cpu_allocator(threshold: int = 1 << 30) -> bool:
    """Keep freed large CPU tensors in the heap instead of returning them to the OS.

    glibc serves every block above its mmap threshold with a fresh mmap, so each step of a
    CPU loop page-faults its ~10 MB activations in again: measured here as a quarter of a
    synthesis step. Raising the mmap and trim thresholds (what MALLOC_MMAP_THRESHOLD_ does)
    lets the blocks be reused. Returns False where mallopt is not available (non-glibc).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, threshold)) and bool(libc.mallopt(m_trim_threshold, threshold))
    except (OSError, AttributeError):
        return False
