"""Registered distillation losses and how a weighted combination of them becomes one training loss.

Every loss is a function ``(batch, config, part) -> scalar tensor`` over one :class:`Batch` (student and
teacher logits, labels, tapped feature pairs). Losses that learn something of their own (the ``hint``
projectors) register a ``build`` that makes that part; the trainer optimises it with the student and
keeps it out of the student. torch is imported inside the functions so the names can be validated
without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekd.registry import Registry
from edgekd.types import DistillConfig

if TYPE_CHECKING:
    import torch

# Scales from the papers' experiments, so that weight 1.0 is a sensible start for every loss.
AT_SCALE = 1000.0  # Zagoruyko & Komodakis: beta = 1e3
RKD_DISTANCE, RKD_ANGLE = 25.0, 50.0  # Park et al.


@dataclass(frozen=True, eq=False)
class Batch:
    """What the losses see for one training batch. ``labels`` holds -1 where a label is unknown."""

    student: torch.Tensor  # logits (N, K)
    teacher: torch.Tensor | None  # logits (N, K), None when training without a teacher
    labels: torch.Tensor  # int64 (N,)
    student_feats: tuple[torch.Tensor, ...] = ()  # tapped maps, paired by position with teacher_feats
    teacher_feats: tuple[torch.Tensor, ...] = ()

    def targets(self) -> torch.Tensor:
        """The labels, with the teacher's top class where a label is unknown."""
        if self.teacher is None:
            return self.labels
        return self.labels.where(self.labels >= 0, self.teacher.argmax(1))


LossFn = Callable[[Batch, DistillConfig, Any], "torch.Tensor"]
Shapes = Sequence[tuple[tuple[int, ...], tuple[int, ...]]]  # (student shape, teacher shape) per tap pair


@dataclass(frozen=True)
class LossDef:
    """A registered loss: the function, whether it needs tapped features and a teacher, and its learned part."""

    fn: LossFn
    features: bool = False
    teacher: bool = True
    build: Callable[[Shapes], Any] | None = None  # (pair shapes) -> nn.Module, trained with the student
    ranks: tuple[int, ...] = ()  # the dimensions its tapped features may have (none: any)
    softens: bool = False  # reads DistillConfig.temperature (the logit losses)
    spatial: bool = False  # compares positions within a map: a 1x1 map gives it nothing (a constant)


LOSSES: Registry[LossDef] = Registry("loss")


def _register(name: str, features: bool = False, teacher: bool = True,
              build: Callable[[Shapes], Any] | None = None, ranks: tuple[int, ...] = (),
              softens: bool = False, spatial: bool = False) -> Callable[[LossFn], LossFn]:
    def add(fn: LossFn) -> LossFn:
        LOSSES.register(name)(LossDef(fn, features, teacher, build, ranks, softens, spatial))
        return fn

    return add


_RANK_NAMES = {4: "4-D feature maps (N, C, H, W)", 2: "vectors (N, C)"}


def check_tap_ranks(terms: Sequence[tuple[str, float]], shapes: Sequence[tuple[int, ...]], role: str) -> None:
    """The shapes of one model's tapped layers (``role``: teacher or student) against the dimensions each
    loss in ``terms`` takes. One rule for both times it applies: to the teacher's taps before a search, and to
    both models' once a student is chosen."""
    from edgekd.distill.taps import per_sample
    from edgekd.errors import ConfigError

    given = f"[{', '.join(per_sample(s) for s in shapes)}]"
    flags = f"--hint-{role}, {role}_taps in the Python API"
    for name, _ in terms:
        loss = LOSSES.get(name)
        if loss.ranks and any(len(s) not in loss.ranks for s in shapes):
            needs = " or ".join(_RANK_NAMES.get(r, f"{r}-D tensors") for r in loss.ranks)
            raise ConfigError(f"'{name}' needs {needs}; the {role}'s tapped layers give {given}",
                              f"tap {role} layers that give {needs} ({flags})")
        if loss.spatial and any(len(s) == 4 and s[2] * s[3] == 1 for s in shapes):
            # its normalised attention over one position is 1 for both models: the loss is 0 whatever they learn
            raise ConfigError(f"'{name}' compares where in a feature map the activations are, and the {role}'s "
                              f"tapped layers give {given}, a 1x1 map: one position, whose attention is 1 "
                              "for any model",
                              f"tap {role} layers that give maps wider than 1x1 ({flags})")


def reads(terms: Sequence[tuple[str, float]], labels: bool) -> dict[str, bool]:
    """Whether a run with the losses ``terms`` (and labels, or ``labels`` off) reads the temperature and alpha:
    only the logit losses soften by the temperature, and alpha weighs the teacher's losses against the labels'
    cross-entropy, so it needs both. A setting nothing reads trained the same student as without it."""
    defs = [LOSSES.get(name) for name, _ in terms or (("kd", 1.0),)]
    return {"temperature": any(d.softens for d in defs), "alpha": labels and any(d.teacher for d in defs)}


def softening() -> list[str]:
    """The losses that read the temperature."""
    return [name for name in LOSSES.names() if LOSSES.get(name).softens]


def label_loss(batch: Batch) -> torch.Tensor | None:
    """Cross-entropy over the labelled samples; ``None`` when the batch has none."""
    import torch.nn.functional as F

    if not bool((batch.labels >= 0).any()):
        return None
    return F.cross_entropy(batch.student, batch.labels, ignore_index=-1)


def total_loss(terms: Sequence[tuple[str, float]], batch: Batch, config: DistillConfig,
               parts: Any = None) -> torch.Tensor:
    """``alpha * sum(weight * loss) + (1 - alpha) * cross-entropy``; the cross-entropy alone without a
    teacher, the teacher terms alone without labels. ``parts`` maps loss names to their learned parts."""
    labels = label_loss(batch)
    if batch.teacher is None:
        if labels is None:
            raise ValueError("a batch without teacher outputs needs labels")
        return labels
    value = None
    for name, weight in terms:
        part = parts[name] if parts is not None and name in parts else None
        term = weight * LOSSES.get(name).fn(batch, config, part)
        value = term if value is None else value + term
    if labels is None or config.alpha >= 1.0:
        return value
    return config.alpha * value + (1.0 - config.alpha) * labels


@_register("ce", teacher=False)
def cross_entropy(batch: Batch, config: DistillConfig, part: Any = None) -> torch.Tensor:
    """Labels only: training without a teacher."""
    value = label_loss(batch)
    return batch.student.sum() * 0.0 if value is None else value


@_register("kd", softens=True)
def hinton_kd(batch: Batch, config: DistillConfig, part: Any = None) -> torch.Tensor:
    """Hinton et al. 2015: KL divergence to the temperature-softened teacher, scaled by T^2."""
    import torch.nn.functional as F

    t = config.temperature
    return F.kl_div(F.log_softmax(batch.student / t, dim=1), F.log_softmax(batch.teacher / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)


@_register("dkd", softens=True)
def decoupled_kd(batch: Batch, config: DistillConfig, part: Any = None) -> torch.Tensor:
    """Zhao et al. CVPR 2022: ``dkd_alpha * TCKD + dkd_beta * NCKD``.

    TCKD is the KL between the binary (target, rest) probabilities, NCKD the KL between the
    distributions over the non-target classes. The target is the label, or the teacher's top class
    for unlabelled samples.
    """
    import torch
    import torch.nn.functional as F

    t = config.temperature
    target = F.one_hot(batch.targets(), batch.student.shape[1]).bool()
    ps, pt = F.softmax(batch.student / t, dim=1), F.softmax(batch.teacher / t, dim=1)
    bs = torch.stack([(ps * target).sum(1), (ps * ~target).sum(1)], dim=1)
    bt = torch.stack([(pt * target).sum(1), (pt * ~target).sum(1)], dim=1)
    tckd = F.kl_div(bs.clamp_min(1e-12).log(), bt, reduction="batchmean") * (t * t)
    # A large negative offset removes the target class from both softmaxes (the authors' trick).
    masked_s = F.log_softmax(batch.student / t - 1000.0 * target, dim=1)
    masked_t = F.softmax(batch.teacher / t - 1000.0 * target, dim=1)
    nckd = F.kl_div(masked_s, masked_t, reduction="batchmean") * (t * t)
    return config.dkd_alpha * tckd + config.dkd_beta * nckd


def _pearson_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - Pearson correlation`` of the rows of ``a`` and ``b``, averaged."""
    import torch.nn.functional as F

    return (1.0 - F.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True), dim=1,
                                      eps=1e-8)).mean()


@_register("dist", softens=True)
def dist_kd(batch: Batch, config: DistillConfig, part: Any = None) -> torch.Tensor:
    """Huang et al. 2022 (DIST): inter-class (per sample, across classes) plus intra-class (per class,
    across the batch) Pearson correlation gaps of the softened probabilities, scaled by T^2."""
    import torch.nn.functional as F

    t = config.temperature
    ps, pt = F.softmax(batch.student / t, dim=1), F.softmax(batch.teacher / t, dim=1)
    return (t * t) * (_pearson_gap(ps, pt) + _pearson_gap(ps.T, pt.T))


def _build_projectors(shapes: Shapes) -> Any:
    from torch import nn

    from edgekd.distill.taps import Projector

    return nn.ModuleList(Projector(s, t) for s, t in shapes)


@_register("hint", features=True, build=_build_projectors, ranks=(4, 2))
def hint(batch: Batch, config: DistillConfig, part: Any) -> torch.Tensor:
    """Romero et al. (FitNets): MSE between each teacher map and the student map through a learned
    projector (1x1 conv to the teacher's channels, resized to its spatial size)."""
    import torch.nn.functional as F

    pairs = zip(part, batch.student_feats, batch.teacher_feats)
    return _mean(F.mse_loss(proj(fs), ft) for proj, fs, ft in pairs)


def _attention(f: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    import torch.nn.functional as F

    from edgekd.distill.taps import resized

    return F.normalize(resized(f.pow(2).mean(1, keepdim=True), size).flatten(1), dim=1)


@_register("at", features=True, ranks=(4,), spatial=True)
def attention_transfer(batch: Batch, config: DistillConfig, part: Any = None) -> torch.Tensor:
    """Zagoruyko & Komodakis 2017: squared distance of L2-normalised spatial attention maps (channel
    mean of squared activations), student maps resized to the teacher's size; scaled by 1e3."""
    pairs = zip(batch.student_feats, batch.teacher_feats)
    return AT_SCALE * _mean((_attention(fs, ft.shape[-2:]) - _attention(ft, ft.shape[-2:])).pow(2).mean()
                            for fs, ft in pairs)


def _pooled(f: torch.Tensor) -> torch.Tensor:
    """One vector per sample: a map (N, C, H, W) averaged over its positions, tokens (N, tokens, dim) over the
    tokens (over the embedding dim, after a LayerNorm, every sample's vector would be its bias's mean)."""
    if f.dim() == 3:
        return f.mean(1)
    return f.flatten(2).mean(2) if f.dim() > 2 else f


def _distances(e: torch.Tensor) -> torch.Tensor:
    import torch

    d = (e.unsqueeze(0) - e.unsqueeze(1)).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    d = d * (1 - torch.eye(len(e), dtype=d.dtype))
    positive = d[d > 0]
    return d / positive.mean() if positive.numel() else d


def _angles(e: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    v = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return (v @ v.transpose(1, 2)).flatten()


@_register("rkd", features=True)
def relational_kd(batch: Batch, config: DistillConfig, part: Any = None) -> torch.Tensor:
    """Park et al. CVPR 2019: distance (25x) and angle (50x) relations between the samples of a batch,
    on the tapped features average-pooled to vectors (by default each model's last feature map wider than 1x1;
    tap vectors, such as an MLP's hidden layer, by name)."""
    import torch.nn.functional as F

    def one(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        s, t = _pooled(fs), _pooled(ft)
        return (RKD_DISTANCE * F.smooth_l1_loss(_distances(s), _distances(t))
                + RKD_ANGLE * F.smooth_l1_loss(_angles(s), _angles(t)))

    return _mean(one(fs, ft) for fs, ft in zip(batch.student_feats, batch.teacher_feats))


def _mean(values: Any) -> torch.Tensor:
    values = list(values)
    if not values:
        raise ValueError("a feature loss got no tapped feature pairs")
    return sum(values[1:], values[0]) / len(values)
