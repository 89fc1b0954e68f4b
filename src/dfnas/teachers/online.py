"""An online teacher for distillation on augmented views (`dfnas train` and `dfnas search`).

* `load_online_teacher` loads a teacher reference (as `load_teacher`), runs one dummy
  forward against its spec and checks that the spec fits the data (channels, size,
  classes), so a mismatch is a one-line error before any training starts.
* `OnlineTeacher` wraps the module so it takes input normalised with the *data's* spec
  (what trainers feed students) and maps it to the teacher's own normalisation.
* `teacher_logits` runs it under `torch.inference_mode` and returns an ordinary tensor,
  usable as the target of a loss that autograd records.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dfnas.data.spec import InputSpec
from dfnas.errors import DfnasError
from dfnas.teachers import BUNDLED, Teacher, load_teacher, validate_teacher


def check_teacher_fits(teacher: Teacher, spec: InputSpec, what: str = "data") -> None:
    """The teacher's input spec must have the data's channels, image size and class count."""
    if teacher.spec.signature != spec.signature:
        raise DfnasError(f"teacher {teacher.name} takes {teacher.spec.describe()}, the {what} has {spec.describe()}; "
                         "use a teacher for this data or pass its --spec")


def load_online_teacher(ref: str, weights: str | Path | None, spec: str | Path | InputSpec | None,
                        data_spec: InputSpec, what: str = "data") -> Teacher:
    """Load, validate with one dummy forward, and check the fit to `data_spec`.

    `spec` is the data's spec file on the command line, so a bundled teacher keeps its own
    spec; a factory or TorchScript teacher uses `spec`, or without it the data's spec.
    """
    teacher = load_teacher(ref, weights, None if ref in BUNDLED else spec or data_spec)
    validate_teacher(teacher, need_bn=False)
    check_teacher_fits(teacher, data_spec, what)
    return teacher


class OnlineTeacher(nn.Module):
    """The teacher module fed with input normalised by `data_spec` (remapped to its own spec)."""

    def __init__(self, teacher: Teacher | nn.Module, data_spec: InputSpec | None = None) -> None:
        super().__init__()
        module = teacher.module if isinstance(teacher, Teacher) else teacher
        self.teacher = module
        t_spec = teacher.spec if isinstance(teacher, Teacher) else None
        self.remap = t_spec is not None and data_spec is not None and not all(
            torch.equal(a, b) for a, b in zip(t_spec.affine(), data_spec.affine(), strict=True))
        if self.remap:
            assert t_spec is not None and data_spec is not None
            ds, dh = data_spec.affine()
            ts, th = t_spec.affine()
            # teacher_input = x01 * ts + th with x01 = (x - dh) / ds
            self.register_buffer("scale", ts / ds, persistent=False)
            self.register_buffer("shift", th - dh * ts / ds, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.remap:
            x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        out = self.teacher(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def teacher_logits(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The teacher's logits on `x`, computed under inference mode, as an ordinary float tensor."""
    with torch.inference_mode():
        out = teacher(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
    return out.float().clone()  # clone outside inference mode: inference tensors cannot be saved for backward


def logits_of_images(teacher: nn.Module, x: torch.Tensor, spec: InputSpec, batch: int = 256,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """The teacher's logits on stored uint8 images `x` (spec's pixel mapping), a batch at a time
    so that memory stays one batch whatever the set's size."""
    chunks = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        if device is not None:
            xb = xb.to(device)
        # out of place: a float `x` must come back untouched (`.float()` would alias it)
        chunks.append(teacher_logits(teacher, spec.normalize(xb.float().div(255))))
    return torch.cat(chunks)
