"""The settings of `dfnas train` and of exporting a trained network."""

from __future__ import annotations

import dataclasses

from dfnas.errors import DfnasError


@dataclasses.dataclass
class TrainConfig:
    """Training one fixed architecture (`dfnas train`): SGD + cosine, batched augmentation."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    lr_min: float = 0.0
    warmup_epochs: float = 0.0  # linear warm-up from lr/100, then cosine (steadies tiny nets' first steps)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    grad_clip: float = 5.0  # 0 = off
    max_shift: int | None = None  # random translation in pixels; None = H // 14
    flip: bool = True  # horizontal flip, only where the input spec allows it
    kd_temperature: float = 3.0  # synthetic data / online teacher: KD at this T
    eval_batch_size: int = 500
    device: str = "cpu"
    # under torchrun: BatchNorm over the global batch (the one-process result, exactly) or over
    # each process's rows (faster where collectives are slow, as with gloo on CPU; DDP's default)
    sync_bn: bool = True
    # NHWC memory layout for the network; None: its space's measured preference (spaces.use_channels_last)
    channels_last: bool | None = None

    def validate(self, prefix: str = "train") -> None:
        """One-line errors naming the key, before any training starts."""
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise DfnasError(f"config keys '{prefix}.epochs', '{prefix}.batch_size' must be >= 1 and '{prefix}.lr' > 0")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise DfnasError(f"config key '{prefix}.warmup_epochs' must be in [0, epochs={self.epochs}); "
                             f"got {self.warmup_epochs}")


@dataclasses.dataclass
class ExportConfig:
    """Formats of the final network; onnx is skipped (with a note) when onnx is not installed."""

    formats: list[str] = dataclasses.field(default_factory=lambda: ["torchscript", "onnx"])
    check: bool = True  # compare the exported model's outputs with PyTorch
