"""Teacher settings: the recipe of the bundled teachers, and which teacher a run inverts."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class TeacherTrainConfig:
    """Training recipe of the bundled teachers (`dfnas teacher train mnist|mnist-clutter`)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    seed: int = 0
    width: int = 32


@dataclasses.dataclass
class TeacherRefConfig:
    """Which teacher `dfnas run` inverts: a bundled name, a factory + weights, or TorchScript."""

    ref: str = "mnist-cnn"
    weights: str | None = None  # state dict for a factory teacher (.safetensors / .pt)
    spec: str | dict[str, Any] | None = None  # input spec: JSON path or an inline mapping
