"""Output folders and the units of work recorded in them: one guard for every command.

A folder is *ours* when it holds the marker `.dfnas.json` (kind, dfnas version, identity), or
the identity file an older dfnas wrote there (`legacy`). Every command that writes a folder
claims it first:

    folder = OutputFolder(out, "search")
    prev = folder.claim()                  # None: new or empty; raises for a foreign folder
    if folder.changed(differing_keys(prev, now), force):
        ...clear our own files...
    folder.save(now)

A foreign folder (files dfnas did not make, or another command's output) is refused with
exit 2 and nothing touched, `--force` or not: `--force` only lets a command start over in a
folder it made itself for other settings. `JobStore` records finished units (the stages of
`dfnas run`, the jobs of `dfnas bench`) so a rerun skips them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dfnas.errors import DfnasError
from dfnas.io import atomic_write_json, atomic_write_text, read_json

MARKER = ".dfnas.json"
FORMAT = "dfnas-output"


class OutputFolder:
    """The output folder of one command `kind` (synth, search, train, run, bench, teacher)."""

    def __init__(self, root: str | Path, kind: str, legacy: tuple[str, str] | None = None) -> None:
        """`legacy`: (file, key) an older dfnas left as this kind's identity: a JSON mapping
        holding `key` in `file` (folders made before the marker existed still resume)."""
        self.root = Path(root)
        self.kind = kind
        self.legacy = legacy
        self.is_legacy = False  # set by claim(): the identity came from an older dfnas's file

    def owner(self) -> dict[str, Any] | None:
        """The marker of the dfnas command that made this folder, or None."""
        rec = read_json(self.root / MARKER)
        if isinstance(rec, dict) and rec.get("format") == FORMAT:
            return rec
        if self.legacy is not None:
            old = read_json(self.root / self.legacy[0])
            if isinstance(old, dict) and self.legacy[1] in old:
                return {"format": FORMAT, "kind": self.kind, "identity": old, "legacy": True}
        return None

    def claim(self) -> dict[str, Any] | None:
        """The identity this folder was made with (None when new or empty); a file, a foreign
        folder or another command's output is refused before anything is written."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise DfnasError(f"--out {root} is a file; pass a folder")
        # a run killed while writing its first file (the marker) leaves only our temp file: empty
        if not root.is_dir() or all(p.name.startswith(".") and p.name.endswith(".tmp") for p in root.iterdir()):
            return None
        rec = self.owner()
        if rec is None:
            raise DfnasError(f"--out {root} holds files that are not a dfnas {self.kind} output; choose a new or empty "
                             "folder (nothing was changed; --force never replaces a folder dfnas did not make)")
        if rec.get("kind") != self.kind:
            raise DfnasError(f"--out {root} holds the output of `dfnas {rec.get('kind')}`, not of `dfnas {self.kind}`; "
                             "choose another folder (nothing was changed)")
        self.is_legacy = bool(rec.get("legacy"))
        ident = rec.get("identity")
        return ident if isinstance(ident, dict) else {}

    def changed(self, differing: Iterable[str], force: bool, what: str = "configuration") -> bool:
        """True when the folder must start over (some keys differ and `force`); refuses without it."""
        diff = list(dict.fromkeys(differing))
        if diff and not force:
            raise DfnasError(f"--out {self.root} holds a {self.kind} made with another {what} ({', '.join(diff)} "
                             "differ); choose another folder, or pass --force to redo what they change")
        return bool(diff)

    def save(self, identity: dict[str, Any]) -> None:
        """Mark the folder ours, with the identity a rerun compares against."""
        from dfnas import __version__

        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / MARKER, {"format": FORMAT, "kind": self.kind, "dfnas": __version__,
                                               "identity": identity})


def claim_file(path: str | Path, force: bool) -> Path:
    """A single-file output (`dfnas export --out FILE`): a folder there is refused, an existing
    file only replaced with `force`; checked before any work."""
    path = Path(path)
    if path.is_dir():
        raise DfnasError(f"--out {path} is a folder; pass a file path such as {path / 'model.onnx'}")
    if path.exists() and not force:
        raise DfnasError(f"--out {path} exists; choose another file name, or pass --force to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise DfnasError(f"--out {path}: {path.parent} is a file, not a folder")
    return path


def differing_keys(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Top-level keys whose values differ (an absent `old` differs in nothing: a new folder)."""
    if old is None:
        return []
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class JobStore:
    """Finished units of work, one atomic JSON record each: `folder/<name>.json` holding the
    unit's key (a fingerprint of everything its result depends on), seconds and result."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def get(self, name: str, key: str) -> dict[str, Any] | None:
        """The record of `name` when it was made with `key`, else None."""
        rec = read_json(self.path(name))
        if isinstance(rec, dict) and rec.get("key", rec.get("fingerprint")) == key and "result" in rec:
            return rec
        return None

    def put(self, name: str, key: str, result: Any, seconds: float) -> dict[str, Any]:
        rec = {"job": name, "key": key, "seconds": round(seconds, 2),
               "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "result": result}
        atomic_write_json(self.path(name), rec)
        (self.folder / f".{name}.started").unlink(missing_ok=True)
        return rec

    def drop(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def start(self, name: str, key: str) -> str | None:
        """Note that `name` starts with `key` (the mark goes with its record); returns the key of
        an unfinished earlier start, None when there was none."""
        mark = self.folder / f".{name}.started"
        prev = mark.read_text() if mark.is_file() else None
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(mark, key)
        return prev

    # -- workers sharing the store: a job is run by whoever creates its claim first
    def claim(self, name: str) -> bool:
        """Atomically take `name` for this process (False: another worker has it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(self.folder / f".{name}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def release(self, name: str) -> None:
        (self.folder / f".{name}.claim").unlink(missing_ok=True)

    def clear_claims(self) -> None:
        """Drop every claim: at the start of a launch, claims are what killed workers left."""
        for f in self.folder.glob(".*.claim"):
            f.unlink(missing_ok=True)
