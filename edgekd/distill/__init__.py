"""The one training loop and the registered distillation losses."""

from edgekd.distill.losses import LOSSES
from edgekd.distill.trainer import distill, predict

__all__ = ["LOSSES", "distill", "predict"]
