"""The input spec every teacher comes with: shape, classes, normalisation, pixel range.

Synthesis keeps images in [0, 1] and maps them through the spec to the teacher's input, so
one set of defaults serves a teacher that takes [0, 1] floats and one that takes raw 0-255.
`mean` and `std` are in the units of `pixel_range`: teacher_input = (pixel - mean) / std.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from dfnas.errors import DfnasError


@dataclasses.dataclass
class InputSpec:
    channels: int
    height: int
    width: int
    num_classes: int
    mean: list[float]
    std: list[float]
    pixel_range: tuple[float, float] = (0.0, 1.0)
    class_names: list[str] | None = None
    allow_flip: bool = True

    def __post_init__(self) -> None:
        for name in ("channels", "height", "width", "num_classes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise DfnasError(f"input spec: '{name}' must be a positive integer, got {v!r}")
        self.mean = [float(m) for m in _per_channel(self.mean, self.channels, "mean")]
        self.std = [float(s) for s in _per_channel(self.std, self.channels, "std")]
        if any(s <= 0 for s in self.std):
            raise DfnasError("input spec: every 'std' value must be > 0")
        lo, hi = (float(v) for v in self.pixel_range)
        if not hi > lo:
            raise DfnasError(f"input spec: 'pixel_range' must be [low, high] with high > low, got {self.pixel_range!r}")
        self.pixel_range = (lo, hi)
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise DfnasError(
                f"input spec: {len(self.class_names)} class_names for num_classes={self.num_classes}; give one name per class"
            )

    # -- mapping from the [0, 1] image space to the teacher input --------------------------
    def affine(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) of shape (1, C, 1, 1) with teacher_input = x01 * scale + shift."""
        lo, hi = self.pixel_range
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return (hi - lo) / std, (lo - mean) / std

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        scale, shift = self.affine(x01.device)
        return x01 * scale.to(x01.dtype) + shift.to(x01.dtype)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return self.channels, self.height, self.width

    @property
    def signature(self) -> tuple[int, int, int, int]:
        """What two specs must share for one model to read both: image shape and class count."""
        return self.channels, self.height, self.width, self.num_classes

    def describe(self) -> str:
        return f"{self.channels}x{self.height}x{self.width} images of {self.num_classes} classes"

    @property
    def names(self) -> list[str]:
        return self.class_names or [str(i) for i in range(self.num_classes)]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pixel_range"] = list(self.pixel_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "spec") -> InputSpec:
        required = ["channels", "height", "width", "num_classes", "mean", "std"]
        missing = [k for k in required if k not in d]
        if missing:
            raise DfnasError(f"{source}: missing key(s) {missing}; an input spec needs {required} (+ optional pixel_range, class_names, allow_flip)")
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise DfnasError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> InputSpec:
        p = Path(path)
        if not p.is_file():
            raise DfnasError(f"spec file not found: {p}; pass --spec with a JSON input spec")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise DfnasError(f"spec file {p} is not valid JSON ({e.msg} at line {e.lineno})") from e
        if not isinstance(d, dict):
            raise DfnasError(f"spec file {p} must hold a JSON object")
        return cls.from_dict(d, source=f"spec file {p}")


def _per_channel(v: Any, channels: int, name: str) -> list[float]:
    if isinstance(v, (int, float)):
        return [float(v)] * channels
    if not isinstance(v, (list, tuple)) or len(v) not in (1, channels):
        count = "1 value" if channels == 1 else f"1 or {channels} values (one per channel)"
        raise DfnasError(f"input spec: '{name}' needs {count}, got {v!r}")
    return list(v) * channels if len(v) == 1 else list(v)
