"""Registered losses. Each takes (student_logits, teacher_logits or None, labels, config)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from edgekd.registry import Registry
from edgekd.types import DistillConfig

if TYPE_CHECKING:
    import torch

LossFn = Callable[["torch.Tensor", "torch.Tensor | None", "torch.Tensor", DistillConfig], "torch.Tensor"]
LOSSES: Registry[LossFn] = Registry("loss")


@LOSSES.register("ce")
def cross_entropy(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
                  config: DistillConfig) -> torch.Tensor:
    """Labels only: training without a teacher."""
    import torch.nn.functional as F

    return F.cross_entropy(student, labels)


@LOSSES.register("kd")
def hinton_kd(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
              config: DistillConfig) -> torch.Tensor:
    """Hinton et al.: temperature-softened KL to the teacher, T^2-scaled, plus cross-entropy."""
    import torch.nn.functional as F

    if teacher is None:
        return F.cross_entropy(student, labels)
    t = config.temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    if config.alpha >= 1.0:
        return soft
    return config.alpha * soft + (1.0 - config.alpha) * F.cross_entropy(student, labels)
