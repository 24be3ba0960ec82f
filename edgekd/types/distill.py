"""What distillation takes (DistillConfig, its losses) and what it hands on (DistillResult)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from edgekd.errors import ConfigError


def parse_losses(spec: Any) -> tuple[tuple[str, float], ...]:
    """A loss combination as ``((name, weight), ...)``, from ``"kd"``, ``"kd:1,hint:0.5"``, a mapping
    ``{"kd": 1.0, "hint": 0.5}`` or a sequence of ``(name, weight)`` pairs (as JSON/TOML give them back).

    Names are checked against the registered losses; weights must be positive and finite.
    """
    from edgekd.distill.losses import LOSSES

    fix = 'write it like "kd:1,hint:0.5" or {"kd": 1.0, "hint": 0.5}'
    if isinstance(spec, str):
        pairs = [part.split(":", 1) if ":" in part else (part, 1.0) for part in spec.split(",") if part.strip()]
    elif isinstance(spec, dict):
        pairs = list(spec.items())
    elif isinstance(spec, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in spec):
        pairs = [tuple(p) for p in spec]
    else:
        raise ConfigError(f"cannot read the loss combination {spec!r}", fix)
    out: dict[str, float] = {}
    for name, weight in pairs:
        name = str(name).strip()
        if name not in LOSSES:
            raise ConfigError(f"unknown loss '{name}' in {spec!r}", f"choose from: {', '.join(LOSSES.names())}")
        try:
            value = float(weight) if not isinstance(weight, bool) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if math.isnan(value) and not (isinstance(weight, float) and math.isnan(weight)):
            raise ConfigError(f"loss '{name}' has weight {weight!r}, not a number", fix)
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"loss '{name}' has weight {value:g}", "give every loss a positive, finite weight")
        if name in out:
            raise ConfigError(f"loss '{name}' appears twice in {spec!r}", "list each loss once")
        out[name] = value
    if not out:
        raise ConfigError(f"the loss combination {spec!r} names no loss", fix)
    return tuple(out.items())


def _as_names(value: Any, field_name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{field_name} must be a list of module paths, got {value!r}",
                          'pass module paths like ["layer3", "layer4"] (see model.named_modules())')
    return tuple(v.strip() for v in value)


KEEP_RULES = ("best", "near-best")


@dataclass(frozen=True)
class DistillConfig:
    """One training recipe. ``teacher`` absent means plain supervised training.

    ``losses`` combines registered losses with weights, e.g. ``{"kd": 1.0, "hint": 0.5}`` or
    ``"kd:1,hint:0.5"`` (kept as ``(("kd", 1.0), ("hint", 0.5))``); empty means the ``loss`` argument of
    ``distill`` (default ``kd``). The weighted sum of the teacher losses gets ``alpha``, the label
    cross-entropy ``1 - alpha``. ``student_taps``/``teacher_taps`` pair feature layers by module path
    for ``hint``, ``at`` and ``rkd`` (default: each model's last 4-D feature map). ``use_labels=False``
    (or labels of -1) trains on the teacher's soft labels alone.

    ``qat_epochs > 0`` makes the last ``qat_epochs`` of the ``epochs`` quantization-aware (see
    ``edgekd.distill.qat``): the student is fake-quantized as its int8 ONNX will run (per-channel symmetric
    int8 weights, uint8 activations, where onnxruntime quantizes them) and distillation goes on; the best
    validation epoch is chosen among the QAT epochs. The fp32 epochs have their own one-cycle schedule, so
    they converge as a run without QAT would; QAT then fine-tunes the best fp32 epoch with a fresh AdamW,
    its learning rate ``qat_lr`` (default ``lr / 10``) annealed to 0 (cosine). The calibrated student
    before any QAT step is a candidate too (``best_epoch == qat_start - 1``): QAT keeps it when no QAT
    epoch validates better, so it never ends below post-training quantization of the same weights on
    the validation set. The folded BatchNorms' statistics are frozen for the
    last ``qat_freeze_bn_epochs`` QAT epochs and the activation observers for the last
    ``qat_freeze_observer_epochs`` (0: never). ``qat_reduce_range`` (default) keeps weights in [-64, 64]:
    onnxruntime's x86 u8s8 kernels without VNNI add pairs of products in 16 bits, which saturate with full
    [-127, 127] weights so the int8 model no longer computes what the QAT model learned (top-1 agreement
    fell to 95-97% here, 100% with the reduced range); ``False`` suits ARM and VNNI targets.

    ``keep`` names the epoch whose weights the run returns. ``"best"``: the best validation accuracy, ties
    broken by the lower validation loss. ``"near-best"``: the latest epoch whose validation accuracy is
    within one binomial standard error of the best (at least one validation image), since a validation
    set of a few hundred images tells epochs apart by chance, and the one-cycle schedule's last epochs are
    the converged ones. QAT epochs are always kept on ``"best"``: they replace the calibrated student only
    when they validate better.
    """

    # The CLI's defaults (`edgekd distill`, `compress`; CompressConfig takes these): a run rebuilt stage by stage
    # from Python trained with twice the learning rate, 5x the weight decay and 10 fewer epochs.
    epochs: int = 40
    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 1e-4
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the teacher terms; 1 - alpha goes to the label loss
    seed: int = 0
    augment: bool = True
    losses: tuple[tuple[str, float], ...] = ()
    student_taps: tuple[str, ...] = ()
    teacher_taps: tuple[str, ...] = ()
    use_labels: bool = True
    dkd_alpha: float = 1.0  # DKD: weight of target-class KD (TCKD)
    dkd_beta: float = 8.0  # DKD: weight of non-target-class KD (NCKD)
    qat_epochs: int = 0
    qat_freeze_bn_epochs: int = 1
    qat_freeze_observer_epochs: int = 1
    qat_reduce_range: bool = True
    qat_lr: float | None = None  # peak learning rate of the QAT fine-tuning; None: lr / 10
    keep: str = "best"  # which epoch's weights are returned: "best" or "near-best" (see above)

    def __post_init__(self) -> None:
        self._check_types()
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}", "pass --epochs 1 or more")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}", "pass a positive batch size")
        if self.lr <= 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}", "pass a positive --lr")
        if self.weight_decay < 0:
            raise ConfigError(f"weight decay must be at least 0, got {self.weight_decay}", "pass 0 or more")
        from edgekd.data import check_seed

        check_seed(self.seed)
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}", "pass a positive temperature")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be within [0, 1], got {self.alpha}", "pass a value between 0 and 1")
        for name in ("dkd_alpha", "dkd_beta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}", "pass a number >= 0")
        self._check_qat()
        if self.keep not in KEEP_RULES:
            raise ConfigError(f"unknown keep rule {self.keep!r}; choose one of: {', '.join(KEEP_RULES)}",
                              "pass --keep-epoch best or --keep-epoch near-best")
        object.__setattr__(self, "losses", parse_losses(self.losses) if self.losses else ())
        object.__setattr__(self, "student_taps", _as_names(self.student_taps, "student_taps"))
        object.__setattr__(self, "teacher_taps", _as_names(self.teacher_taps, "teacher_taps"))
        if len(self.student_taps) != len(self.teacher_taps) and self.student_taps and self.teacher_taps:
            raise ConfigError(f"{len(self.student_taps)} student taps but {len(self.teacher_taps)} teacher taps",
                              "pair every student layer with one teacher layer")
        if bool(self.student_taps) != bool(self.teacher_taps):
            raise ConfigError("feature taps given for only one of student and teacher",
                              "give student_taps and teacher_taps together, or neither for the defaults")

    def _check_types(self) -> None:
        """Before the range checks: a string compares with nothing, and 1.5 epochs passes them to crash the
        learning-rate schedule only after the search."""
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{name} must be a whole number, got {value!r}", f"pass {name} as an integer")
        for name in ("lr", "weight_decay", "temperature", "alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}", f"pass {name} as a number")
        for name in ("augment", "use_labels"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}", "pass a boolean")

    def _check_qat(self) -> None:
        for name in ("qat_epochs", "qat_freeze_bn_epochs", "qat_freeze_observer_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}", f"pass {name} = 0 or more")
        if not isinstance(self.qat_reduce_range, bool):
            raise ConfigError(f"qat_reduce_range must be true or false, got {self.qat_reduce_range!r}",
                              "pass a boolean")
        if self.qat_lr is not None and (isinstance(self.qat_lr, bool) or not isinstance(self.qat_lr, (int, float))
                                        or not math.isfinite(self.qat_lr) or self.qat_lr <= 0):
            raise ConfigError(f"qat_lr must be a positive number, got {self.qat_lr!r}",
                              "pass a positive --qat-lr, or leave it out for lr / 10")
        if self.qat_epochs >= self.epochs:
            raise ConfigError(f"qat_epochs ({self.qat_epochs}) must be fewer than epochs ({self.epochs}): "
                              "quantization-aware training fine-tunes a student trained in fp32 first",
                              f"raise epochs above {self.qat_epochs} or lower qat_epochs")
        if self.qat_epochs:
            for name in ("qat_freeze_bn_epochs", "qat_freeze_observer_epochs"):
                if getattr(self, name) > self.qat_epochs:
                    raise ConfigError(f"{name} ({getattr(self, name)}) is more than qat_epochs ({self.qat_epochs})",
                                      f"freeze for at most the {self.qat_epochs} QAT epochs")

    @property
    def qat_peak_lr(self) -> float:
        """The learning rate QAT fine-tuning starts from."""
        return float(self.qat_lr) if self.qat_lr is not None else self.lr / 10

    @property
    def qat_start(self) -> int:
        """The first quantization-aware epoch (1-based); 0 without QAT."""
        return self.epochs - self.qat_epochs + 1 if self.qat_epochs else 0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["losses"] = dict(self.losses)
        data["student_taps"], data["teacher_taps"] = list(self.student_taps), list(self.teacher_taps)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        return cls(**data)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_accuracy: float  # on the validation labels, or agreement with the teacher without them
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochRecord:
        return cls(**data)


def kept_calibrated(best_epoch: int | None, qat_start: int | None) -> bool:
    """The epoch selected is the one before QAT: the calibrated student before any QAT step was kept."""
    return best_epoch is not None and qat_start is not None and best_epoch == qat_start - 1


@dataclass(frozen=True, eq=False)
class DistillResult:
    """The trained model (best validation epoch) and its history."""

    model: Any  # torch.nn.Module, kept untyped so this module imports without torch
    best_epoch: int
    best_val_accuracy: float
    history: tuple[EpochRecord, ...]
    selected_on: str = "val_labels"  # or "teacher_agreement" when the validation split has no labels
    checkpoint: str | None = None  # the last checkpoint written, when checkpointing was on
    qat_start: int | None = None  # the first quantization-aware epoch, None without QAT
    keep: str = "best"  # the rule that chose best_epoch (DistillConfig.keep)
    # Pruning-aware KD: the target, what was measured, the plan and each step, and the pruned student's
    # parameter count (PruneResult.to_dict); None when nothing was pruned toward a target.
    pruning: dict[str, Any] | None = field(default=None, hash=False)
    # The layers the feature losses tapped, {"student": [...], "teacher": [...]} paired in order, as given or
    # chosen by default (each model's last feature map); None without a feature loss.
    taps: dict[str, list[str]] | None = field(default=None, hash=False)
    # How many processes trained it (torchrun --nproc-per-node), and torch's threads in each: both change the
    # weights a seed gives, and the record kept no word of them to explain two runs or reproduce one. None: a
    # record written before they were kept.
    processes: int | None = None
    threads: int | None = None

    @property
    def kept_calibrated(self) -> bool:
        """QAT kept the calibrated student: no QAT epoch validated better than post-training quantization of
        the best fp32 weights. ``best_epoch`` then names those weights' fp32 epoch, whose history record is
        the fp32 accuracy; ``best_val_accuracy`` is the quantized student's."""
        return kept_calibrated(self.best_epoch, self.qat_start)

    def selection(self) -> str:
        """Which student was kept, in words: 'epoch N', or the calibrated student before QAT."""
        if self.kept_calibrated:
            return f"epoch {self.best_epoch}'s weights quantized before QAT (no QAT epoch validated better)"
        return f"epoch {self.best_epoch}"

    def kept_line(self) -> str:
        """Which weights were kept and how they validated, in one line."""
        if self.keep == "best" or self.kept_calibrated:
            return f"best validation accuracy {self.best_val_accuracy * 100:.2f}% at {self.selection()}"
        return (f"validation accuracy {self.best_val_accuracy * 100:.2f}% at {self.selection()}, the latest "
                "epoch within one standard error of the best (--keep-epoch near-best)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "selected_on": self.selected_on,
            "checkpoint": self.checkpoint,
            "qat_start": self.qat_start,
            "keep": self.keep,
            "history": [h.to_dict() for h in self.history],
            **({"pruning": self.pruning} if self.pruning is not None else {}),
            **({"taps": self.taps} if self.taps is not None else {}),
            "processes": self.processes,
            "threads": self.threads,
        }
