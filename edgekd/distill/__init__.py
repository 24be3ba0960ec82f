"""The one training loop and the registered distillation losses.

Calling the package runs ``distill`` (``from edgekd import distill`` gives this package: see
``edgekd.callable_module``).
"""

from edgekd.callable_module import make_callable
from edgekd.distill.losses import LOSSES
from edgekd.distill.targets import predict
from edgekd.distill.trainer import distill

__all__ = ["LOSSES", "distill", "predict"]

make_callable(__name__, distill)
