"""Losses of every trainer (searches, candidates, found networks): distillation to teacher
logits (data-free training) or cross-entropy to labels, decided by the target.

`kd_loss` is Hinton et al.'s soft-target loss: KL(softmax(t/T) || softmax(s/T)) scaled by
T^2 so its gradient magnitude does not shrink with the temperature (default T = 3, as in
the released SPOS supernet code the paper builds on). Logits are computed in at least
float32 (half / bfloat16 outputs of autocast are upcast); float64 stays float64, so the
search strategies' float64 gradient checks see exact double-precision losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 3.0) -> torch.Tensor:
    """Batch-mean KL divergence from the teacher's to the student's tempered softmax, x T^2."""
    log_p_teacher = F.log_softmax(_at_least_float32(teacher_logits) / T, dim=1)
    log_p_student = F.log_softmax(_at_least_float32(student_logits) / T, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (T * T)


def target_loss(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """CE for int labels (real data), KD for float logits (synthetic data)."""
    if target.dtype.is_floating_point:
        return kd_loss(logits, target, temperature)
    return F.cross_entropy(logits, target)


def correct(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Number of correct predictions; for soft targets, agreement with the teacher's top-1."""
    label = target.argmax(1) if target.dtype.is_floating_point else target
    return (logits.argmax(1) == label).sum()
