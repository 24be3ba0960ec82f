"""The state of one distillation run: what it trains with (RunState) and what each epoch changes
besides the weights (Progress, which a checkpoint stores)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.types import DistillConfig, EpochRecord


@dataclass(eq=False)
class Progress:
    """What an epoch changes besides the weights; a checkpoint stores it."""

    epoch: int = 0
    best_state: dict[str, Any] | None = None
    best_acc: float = -1.0
    best_loss: float = math.inf
    best_epoch: int = 0
    peak_acc: float = -1.0  # the best validation accuracy so far, which "near-best" keeps within reach of
    history: list[EpochRecord] = field(default_factory=list)


@dataclass(eq=False)
class RunState:
    """Everything one ``distill`` call trains with."""

    student: Any
    teacher: Any
    config: DistillConfig
    terms: tuple[tuple[str, float], ...]
    x: Any  # torch tensors of the training split
    y: Any  # int64, -1 where the label is unknown or unused
    rng: np.random.Generator
    val_index: np.ndarray
    val_targets: np.ndarray
    selected_on: str
    x_val: np.ndarray
    parts: Any = None  # nn.ModuleDict of learned loss parts (hint projectors)
    student_taps: Any = None
    teacher_taps: Any = None
    cache: Any = None  # (teacher logits, teacher features) over the training split
    opt: Any = None
    sched: Any = None
    arch: str = ""
    run_info: dict[str, Any] = field(default_factory=dict)
    world: Any = None  # ddp.World: this process's rank among the training processes
    step: Any = None  # (index, inputs) -> loss; a DistributedDataParallel module with several processes

    def close(self) -> None:
        for taps in (self.student_taps, self.teacher_taps):
            if taps is not None:
                taps.remove()
