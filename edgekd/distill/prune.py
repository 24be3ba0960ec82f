"""Pruning-aware KD toward a latency target in milliseconds, measured on the profile.

torch-pruning's dependency graph removes whole channel groups (residual and depthwise couplings stay
consistent). The plan comes first, from the device's clock: the share of channels whose one-shot
pruned copy *measures* within the target on the profile (bisection), refined stage by stage where
latency's staircase left slack. The student then reaches the plan in small iterative steps, learning
from the teacher in the one training loop (``distill``) between them, each step measured, and KD
fine-tunes. Users keep reporting MACs-pruned models that are not faster: the target here is the
device's milliseconds, not a MACs ratio. The student stays a plain nn.Module that exports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgekd.data import Dataset
from edgekd.distill.prune_layers import (
    IMPORTANCES,
    check_prunable,
    check_runs_pruned,
    ignored_layers,
    importance,
    stage_ratio_dict,
)
from edgekd.errors import BudgetError, ConfigError, api_log, require_number
from edgekd.types import DistillConfig


@dataclass(frozen=True)
class PruneConfig:
    """Pruning-aware KD toward ``target_ms``. Its defaults are the Python API's own, not the CLI's:
    ``precision`` is "fp32" here, while `edgekd compress --target-ms` (``CompressConfig.prune_config()``) prunes
    toward the latency of the precision that ships, ``--precision`` (default "int8"); and ``finetune_epochs`` is
    5 here, ``--epochs`` there. Pass ``precision="int8", finetune_epochs=40`` to prune as the CLI does."""

    target_ms: float
    precision: str = "fp32"  # the latency that must reach the target: of the fp32 or the int8 export
    steps: int = 8  # iterative pruning steps to the planned ratio, with KD between them
    max_ratio: float = 0.9  # the most of each layer's channels pruning may remove
    epochs_per_step: int = 1  # KD epochs between pruning steps
    finetune_epochs: int = 5  # KD epochs after the target is reached
    importance: str = "l2"
    regularize: float = 0.0  # group-norm sparsity strength during the KD between steps; 0 turns it off
    round_to: int | None = None  # keep channel counts multiples of this (friendlier to some kernels)

    def __post_init__(self) -> None:
        # Types before the range checks: a string from Python ("1") failed them as a raw TypeError.
        require_number("--target-ms", self.target_ms)
        for flag, value in (("--prune-steps", self.steps), ("epochs_per_step", self.epochs_per_step),
                            ("finetune_epochs", self.finetune_epochs)):
            require_number(flag, value, whole=True)
        if self.round_to is not None:
            require_number("--prune-round-to", self.round_to, whole=True)
        if not self.target_ms > 0:
            raise ConfigError(f"--target-ms must be positive, got {self.target_ms}", "pass a latency in ms")
        if self.precision not in ("fp32", "int8"):
            raise ConfigError(f"unknown precision '{self.precision}'", "choose one of: fp32, int8")
        if self.steps < 1:
            raise ConfigError(f"--prune-steps must be at least 1, got {self.steps}", "pass 8 (the default)")
        if self.epochs_per_step < 0 or self.finetune_epochs < 0:
            raise ConfigError("pruning epoch counts must be >= 0", "fix the pruning settings")
        if self.round_to is not None and self.round_to < 1:
            raise ConfigError(f"--prune-round-to must be a positive channel count, got {self.round_to}",
                              "pass e.g. 8, or leave it out to keep any channel count")
        if not 0.0 < self.max_ratio < 1.0:
            raise ConfigError(f"max_ratio must be within (0, 1), got {self.max_ratio}", "pass e.g. 0.9")
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"unknown pruning importance '{self.importance}'",
                              f"choose one of: {', '.join(IMPORTANCES)}")
        if self.regularize < 0:
            raise ConfigError(f"regularize must be >= 0, got {self.regularize}", "pass 0 to turn it off")


@dataclass(frozen=True)
class PruneStep:
    step: int
    params: int
    macs: float  # millions
    measured_ms: float


@dataclass(frozen=True, eq=False)
class PruneResult:
    model: Any
    target_ms: float
    measured_ms: float
    reached: bool
    steps: tuple[PruneStep, ...]
    history: tuple[Any, ...]  # EpochRecords of every KD phase, in order
    last: Any = None  # the DistillResult of the last KD phase (fine-tuning, or the last step's)
    ratio: float = 0.0  # the planned share of each layer's channels removed (0: the start already met the target)
    stage_ratios: tuple[float, ...] = ()  # per stage of convolutions, when the plan refined ``ratio`` by stage
    scale_ms: float = 0.0  # the unpruned student's p50 that turned measured units into ms (the run's ruler)
    # What every latency above was measured on: compress --distilled may validate on another profile or batch
    profile: str | None = None
    profile_digest: str | None = None
    batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.model.parameters()) if hasattr(self.model, "parameters") else None
        return {"target_ms": self.target_ms, "measured_ms": self.measured_ms, "reached": self.reached,
                "ratio": self.ratio, "stage_ratios": list(self.stage_ratios), "scale_ms": self.scale_ms,
                "profile": self.profile, "profile_digest": self.profile_digest, "batch": self.batch,
                "params": params,
                "steps": [s.__dict__ for s in self.steps],
                "history": [h.__dict__ if hasattr(h, "__dict__") else h for h in self.history]}


def make_pruner(model: Any, input_shape: tuple[int, ...], config: PruneConfig,
                stage_ratios: tuple[float, ...] = ()) -> Any:
    """torch-pruning's pruner removing ``config.max_ratio`` of every layer's channels in ``config.steps``
    steps, or ``stage_ratios[i]`` of the channels of the i-th stage (``prune_stages``)."""
    import torch
    import torch_pruning as tp

    from edgekd.quiet import quiet

    check_prunable(model)
    kind = tp.pruner.GroupNormPruner if config.regularize > 0 else tp.pruner.MetaPruner
    extra: dict[str, Any] = {"reg": config.regularize} if config.regularize > 0 else {}
    if stage_ratios:
        extra["pruning_ratio_dict"] = _by_stage(model, input_shape, stage_ratios)
    with quiet():  # torch-pruning warns about every parameter outside a layer (a position embedding)
        return kind(model, torch.zeros(1, *input_shape), importance=importance(config.importance),
                    pruning_ratio=config.max_ratio, iterative_steps=config.steps,
                    ignored_layers=ignored_layers(model, input_shape), round_to=config.round_to, **extra)


def _by_stage(model: Any, input_shape: tuple[int, ...], stage_ratios: tuple[float, ...]) -> dict[Any, float]:
    from edgekd.search.pruned import prune_stages

    stages = prune_stages(model, input_shape)
    if len(stages) != len(stage_ratios):
        raise ConfigError(f"{len(stage_ratios)} stage ratios for a model with {len(stages)} stages",
                          "plan the ratios on this model")
    return stage_ratio_dict(model, stages, stage_ratios)


def check_one_process() -> None:
    """Refuse pruning-aware KD under torchrun: it runs one KD phase per pruning step, each of which would
    start and end the data-parallel group (the second one hangs), and every rank would measure latency and
    plan on its own."""
    from edgekd.distill.ddp import launched

    processes, _rank = launched()
    if processes > 1:
        raise ConfigError(f"pruning-aware KD (--target-ms) runs in one process, not under torchrun's {processes}",
                          "run it without torchrun (plain KD and QAT train data-parallel)")


def prune_distill(student: Any, data: Dataset, distill_config: DistillConfig, config: PruneConfig, profile: Any,
                  teacher: Any = None, loss: str | dict[str, float] | None = None,
                  log: Callable[[str], None] | None = None,
                  progress: bool = False) -> PruneResult:
    """Prune ``student`` during KD to a measured latency on ``profile`` within ``config.target_ms``: the
    channel ratio is planned first (bisection on measured one-shot pruned copies), then reached in
    ``config.steps`` steps with KD between them, then KD fine-tunes. Raises BudgetError up front when
    even the most pruned student cannot reach the target (nothing is trained in vain)."""
    import copy

    from edgekd.api_args import require_config, require_dataset, require_student
    from edgekd.distill.trainer import distill
    from edgekd.latency.quick_export import timing_batch
    from edgekd.profiles import load_profile
    from edgekd.search.cost_features import cost_features

    require_student(student)
    require_dataset(data)
    require_config("distill_config", distill_config, DistillConfig)
    require_config("config", config, PruneConfig, "target_ms=2.0")
    check_one_process()
    profile = load_profile(profile)  # a name or .toml path, as search takes one
    log = api_log(log)
    calib = data.x_train[np.random.default_rng(distill_config.seed).permutation(len(data.x_train))[:64]]
    reference = copy.deepcopy(student).eval()
    batch = _gradient_batch(data, distill_config.seed) if config.importance == "taylor" else None
    floor = _most_pruned(copy.deepcopy(student), data.input_shape, config, batch=batch)
    clock = _Clock(reference, profile, config.precision, calib)
    start_ms, floor_ms = clock.measure(student, floor)
    if start_ms > config.target_ms and floor_ms > config.target_ms:
        # One busy moment refused a target the next run reached (the suggested minimum moved 2x): look once more
        # before refusing, and the faster reading of each decides (slow stretches only add time).
        again = clock.measure(student, floor)
        start_ms, floor_ms = min(start_ms, again[0]), min(floor_ms, again[1])
    log(f"prune: {start_ms:.3f} ms now, {floor_ms:.3f} ms at the most pruning allows; target {config.target_ms:g} ms")
    # The floor matters only when there is something to prune: a most-pruned copy of a student already within
    # the target can measure slower than it (a narrow layer runs a slower kernel), which is no reason to refuse.
    if start_ms > config.target_ms and floor_ms > config.target_ms:
        raise _out_of_reach(student, floor, data.input_shape, config, profile.name, start_ms, floor_ms)
    steps: list[PruneStep] = []
    history: list[Any] = []
    last = None
    ratio = 0.0
    stage_ratios: tuple[float, ...] = ()
    if start_ms > config.target_ms:
        ratio, planned_ms = _plan_ratio(student, data.input_shape, config, clock, log, batch=batch)
        stage_ratios = _refine_by_stage(student, data.input_shape, config, clock, log, ratio, planned_ms,
                                        batch=batch)
        pruner = make_pruner(student, data.input_shape, replace(config, max_ratio=ratio), stage_ratios)
        step_cfg = replace(distill_config, epochs=max(1, config.epochs_per_step))
        for step in range(1, config.steps + 1):
            _step(pruner, student, batch)
            if config.epochs_per_step:
                last = _numbered(_distill_with_regularizer(distill, pruner, config, student, data, step_cfg,
                                                           teacher, loss, progress, f"prune step {step}"), history)
                history += list(last.history)
            (measured,) = clock.measure(student)
            macs = cost_features(student, data.input_shape)[0]
            steps.append(PruneStep(step, sum(p.numel() for p in student.parameters()), macs, measured))
            log(f"prune: step {step}/{config.steps}: {macs:.2f} MMACs, {measured:.3f} ms")
    if config.finetune_epochs:
        last = _numbered(distill(student, data, replace(distill_config, epochs=config.finetune_epochs),
                                 teacher=teacher, loss=loss, progress=progress, desc="prune fine-tune"), history)
        history += list(last.history)
    # The result users read: twice the runs, so a slow stretch of the machine has to last through all of
    # them to move it (it did through three here once, +50% on a model whose last step measured in range).
    (final,) = clock.measure(student, rounds=6)
    return PruneResult(student.eval(), config.target_ms, final, final <= config.target_ms * 1.1, tuple(steps),
                       tuple(history), last, ratio, stage_ratios, clock.scale_ms, profile.name, profile.digest(),
                       timing_batch(profile))


def _out_of_reach(student: Any, floor: Any, input_shape: tuple[int, ...], config: PruneConfig, profile: str,
                  start_ms: float, floor_ms: float) -> BudgetError:
    """The refusal of a target the most-pruned copy misses, with the share of channels it really removed:
    --prune-round-to or grouped convolutions can leave far less than ``max_ratio`` to remove, and a copy no
    faster than the student means pruning cannot help at all (a target above the student was suggested)."""
    from edgekd.distill.prune_layers import fixed_text

    before, after = _channels(student, input_shape), _channels(floor, input_shape)
    removed = 1 - sum(after.values()) / max(1, sum(before.values()))
    fixed = fixed_text(student, input_shape)
    rounded = f" in multiples of --prune-round-to {config.round_to}" if config.round_to else ""
    what = f"removing {removed:.0%} of its channels{rounded} (the most pruning allows)"
    measures = f"measures {floor_ms:.3f} ms ({config.precision})"
    suggested = floor_ms * 1.1
    if floor_ms < start_ms and suggested < start_ms:
        return BudgetError(f"--target-ms {config.target_ms:g} is below what pruning can reach on '{profile}': "
                           f"{what} still {measures}" + (f"; {fixed}" if fixed else ""),
                           f"raise --target-ms to at least {suggested:.3f}, or start from a smaller student")
    head = (f"--target-ms {config.target_ms:g} cannot be reached by pruning on '{profile}': pruning cannot make this "
            f"student faster than the {start_ms:.3f} ms it measures now")
    smaller = "start from a smaller student (a lower --budget-ms, or another --space)"
    if removed <= 0 and config.round_to and config.round_to >= max(before.values(), default=0):
        return BudgetError(f"{head}: --prune-round-to {config.round_to} is above every layer's channel count "
                           f"(at most {max(before.values())}), so no channel can be removed",
                           f"use a smaller --prune-round-to, e.g. 8, or leave it out; or {smaller}")
    if fixed:  # the cause, rather than the latency of the little left to prune
        return BudgetError(f"{head}: {fixed}; {what} {measures}", smaller)
    if removed <= 0:
        return BudgetError(f"{head}: no layer has channels pruning may remove", smaller)
    why = f"its latency on this profile {'does not fall' if floor_ms >= start_ms else 'falls little'} with its channels"
    if config.round_to:
        return BudgetError(f"{head}: {what} {measures}; {why} in those multiples",
                           f"leave --prune-round-to out (or pass one that divides the channel counts), or {smaller}")
    return BudgetError(f"{head}: {what} {measures}; {why}", smaller)


def _channels(model: Any, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Output channels of each layer pruning may narrow (the classifier's are the classes), by name."""
    import torch

    from edgekd.distill.prune_layers import output_layers

    outputs = {id(m) for m in output_layers(model, input_shape)}
    return {name: m.out_channels if isinstance(m, torch.nn.modules.conv._ConvNd) else m.out_features
            for name, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)) and id(m) not in outputs}


def prune_epochs_text(config: PruneConfig) -> str:
    """The epochs pruning-aware KD trains, in words: --epochs counts the fine-tuning after the pruning steps
    only, and a run said to train 2 epochs trained 4."""
    steps = f"{config.steps} pruning step{'s' * (config.steps != 1)}"
    each = max(1, config.epochs_per_step) if config.epochs_per_step else 0
    per = f" with {each} KD epoch{'s' * (each != 1)} each" if each else " without KD between them"
    total = config.steps * each + config.finetune_epochs
    return (f"{steps}{per}, then {config.finetune_epochs} fine-tune epoch{'s' * (config.finetune_epochs != 1)} "
            f"(--epochs) = {total} epoch{'s' * (total != 1)} in all ({config.finetune_epochs} if the student is "
            "under the target already)")


def _numbered(phase: Any, before: list[Any]) -> Any:
    """``phase``'s DistillResult with its epochs counted on from the phases ``before`` it: each KD phase
    counts from 1, and a history of several would name one epoch 1 several times."""
    offset = len(before)
    return replace(phase, best_epoch=phase.best_epoch + offset,
                   history=tuple(replace(h, epoch=h.epoch + offset) for h in phase.history),
                   qat_start=None if phase.qat_start is None else phase.qat_start + offset)


class _Clock:
    """Latency measured interleaved with the unpruned student, in units of it, times the unpruned
    student's p50 (its fastest run) measured by the first call and kept from then on. Units are what repeat: measured
    as calibration measures them (``calibrate.measure_relative``: three rotated runs, each model's
    fastest 10th percentile), ten measurements of one pruned copy here stayed within 3.6% of each
    other, while the reference's p50 in the same runs moved by 12%. Rescaling every call with a fresh
    or running p50 let the plan and the final check disagree by that much; one fixed scale keeps
    every decision of a run on the same ruler, and the ruler is the unpruned student's p50 in ms."""

    def __init__(self, reference: Any, profile: Any, precision: str, calib: np.ndarray) -> None:
        self.reference, self.profile, self.precision, self.calib = reference, profile, precision, calib
        self.scale_ms = 0.0

    def measure(self, *models: Any, rounds: int = 3) -> list[float]:
        import tempfile
        from pathlib import Path

        from edgekd.latency.calibrate import measure_rotated, relative_units
        from edgekd.latency.quick_export import export_for_timing, timing_batch

        with tempfile.TemporaryDirectory(prefix="edgekd-prune-") as tmp:
            # at the profile's batch, as validate checks --target-ms
            ref, *paths = export_for_timing([self.reference, *models], self.precision, self.calib, Path(tmp),
                                            batch=timing_batch(self.profile))
            runs = measure_rotated(paths, self.profile, ref, rounds)
        # The scale is the reference's p50 in its fastest run, for the reason units keep each model's fastest
        # state: slow stretches only add time, and the median of three runs' p50 moved 0.135-0.17 ms here.
        self.scale_ms = self.scale_ms or min(r[0].p50_ms for r in runs)
        return [u * self.scale_ms for u in relative_units(runs)]


def _plan_ratio(student: Any, input_shape: tuple[int, ...], config: PruneConfig, clock: _Clock,
                log: Callable[[str], None], rounds: int = 7, batch: Any = None) -> tuple[float, float]:
    """The smallest channel ratio whose one-shot pruned copy measures within the target (bisection on
    measured latency), and its latency as measured the second time. Planned before training, then
    reached gradually during KD: stepping until the target is crossed overshoots it by a whole step
    (20% was seen here)."""
    import copy

    def measure(ratio: float) -> float:
        trial = _most_pruned(copy.deepcopy(student), input_shape, replace(config, max_ratio=ratio, steps=1),
                             batch=batch)
        (ms,) = clock.measure(trial)
        log(f"prune: plan: removing {ratio:.1%} of each layer's channels measures {ms:.3f} ms")
        return ms

    lo, hi = 0.0, config.max_ratio
    for _ in range(3):
        for _ in range(rounds):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if measure(mid) > config.target_ms else (lo, mid)
        # The bisection keeps the first ratio that measured within the target, so one lucky measurement
        # can decide it (a plan that measured in range once ended 24% over the target here): measure the
        # choice again, and search above it if the second look says it is over.
        second = measure(hi)
        if hi >= config.max_ratio or second <= config.target_ms:
            break
        lo, hi = hi, config.max_ratio
    else:
        second = measure(hi)  # three choices over on their second look: the most pruning allows
    log(f"prune: plan: remove {hi:.1%} of each layer's channels (measured on one-shot pruned copies)")
    return hi, second


# A plan measuring within this share of the target is kept: the middle of a ±10% band, so that the
# measurement noise of a small model (about 5% between calls here) lands it inside on either side.
CLOSE_ENOUGH = 0.95


def _refine_by_stage(student: Any, input_shape: tuple[int, ...], config: PruneConfig, clock: Any,
                     log: Callable[[str], None], ratio: float, planned_ms: float,
                     rounds: int = 5, batch: Any = None) -> tuple[float, ...]:
    """Per-stage ratios that give channels back where the uniform plan lands well under the target, or
    () to keep the uniform plan. Latency is a staircase in channel counts on CPUs whose kernels block
    channels (onnxruntime's NCHWc): on AVX-512 the uniform ratio had nothing between 0.071 and 0.10 ms
    for the study's student, so targets of 0.081-0.102 ms all landed at 0.071. Each stage in turn,
    deepest first (most parameters per ms: lowest resolution), is bisected toward keeping more while
    the copy still measures within the target; the result is measured again and dropped if over."""
    import copy

    from edgekd.search.pruned import prune_stages

    count = len(prune_stages(student, input_shape))
    if planned_ms >= CLOSE_ENOUGH * config.target_ms or count < 2:
        return ()

    def measure(ratios: list[float]) -> float:
        trial = _most_pruned(copy.deepcopy(student), input_shape, replace(config, max_ratio=ratio, steps=1),
                             tuple(ratios), batch)
        (ms,) = clock.measure(trial)
        log(f"prune: plan: by stage, removing {', '.join(f'{r:.1%}' for r in ratios)} measures {ms:.3f} ms")
        return ms

    ratios, best = [ratio] * count, planned_ms
    for stage in reversed(range(count)):
        lo, hi = 0.0, ratio
        for _ in range(rounds):
            mid = (lo + hi) / 2
            trial = [*ratios[:stage], mid, *ratios[stage + 1:]]
            ms = measure(trial)
            if ms <= config.target_ms:
                hi, best = mid, ms
            else:
                lo = mid
        ratios[stage] = hi
        if best >= CLOSE_ENOUGH * config.target_ms:
            break
    if ratios == [ratio] * count:
        return ()
    if measure(ratios) > config.target_ms:  # a lucky look decided it: keep the uniform plan, measured twice
        log("prune: plan: the per-stage plan measured over the target a second time; keeping the uniform one")
        return ()
    log(f"prune: plan: remove {', '.join(f'{r:.1%}' for r in ratios)} of the channels by stage")
    return tuple(ratios)


def _most_pruned(model: Any, input_shape: tuple[int, ...], config: PruneConfig,
                 stage_ratios: tuple[float, ...] = (), batch: Any = None) -> Any:
    pruner = make_pruner(model, input_shape, replace(config, regularize=0.0), stage_ratios)
    for _ in range(config.steps):
        _step(pruner, model, batch)
    check_runs_pruned(model, input_shape, "the student", "or train without --target-ms")
    return model.eval()


# Images whose loss gradients score channels for Taylor importance: a few batches' worth, as its paper uses.
GRADIENT_IMAGES = 256


def _gradient_batch(data: Dataset, seed: int) -> tuple[Any, Any]:
    """Training images and labels drawn with the run's seed (the splits are in class order)."""
    import torch

    from edgekd.run_inputs import sampled

    picked = sampled(len(data.x_train), GRADIENT_IMAGES, seed)
    return torch.from_numpy(data.x_train[picked]), torch.from_numpy(data.y_train[picked]).long()


def _step(pruner: Any, model: Any, batch: Any) -> None:
    """One pruning step. With a ``batch`` (Taylor importance: weight times gradient), the model's gradients of
    the cross-entropy on it come first, for the model as this step finds it: pruning runs before any training
    (the plan, the floor) and between KD phases, whose gradients are gone or belong to removed channels."""
    if batch is None:
        pruner.step()
        return
    import torch

    from edgekd.distill.taps import evaluating

    model.zero_grad(set_to_none=True)
    with evaluating(model), torch.enable_grad():  # eval: the batch leaves BatchNorm's running statistics alone
        # -1 marks an unknown label (the trainer's ignore_index too)
        torch.nn.functional.cross_entropy(model(batch[0]), batch[1], ignore_index=-1).backward()
    try:
        pruner.step()
    finally:
        model.zero_grad(set_to_none=True)  # KD's optimizer starts from no gradients


def _distill_with_regularizer(distill: Any, pruner: Any, config: PruneConfig, student: Any, data: Dataset,
                              cfg: DistillConfig, teacher: Any, loss: str | dict[str, float] | None, progress: bool,
                              desc: str) -> Any:
    """KD epochs; with ``regularize`` > 0, torch-pruning's group-norm sparsity gradient is added before
    every optimizer step (a global optimizer hook, removed afterwards), so the one loop stays as is."""
    if config.regularize <= 0:
        return distill(student, data, cfg, teacher=teacher, loss=loss, progress=progress, desc=desc)
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    pruner.update_regularizer()  # the groups changed with the last step
    handle = register_optimizer_step_pre_hook(lambda _opt, _args, _kwargs: pruner.regularize(student))
    try:
        return distill(student, data, cfg, teacher=teacher, loss=loss, progress=progress, desc=desc)
    finally:
        handle.remove()
