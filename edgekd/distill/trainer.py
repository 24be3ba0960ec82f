"""The one training loop: supervised training (no teacher) and distillation are the same loop with a
different loss. Seeded, keeping the best validation epoch (or the latest near it, ``DistillConfig.keep``), with
a progress bar, feature taps for the feature losses, and an atomic checkpoint after every epoch that a killed run
resumes from bit for bit. With ``qat_epochs`` the last epochs are quantization-aware: the student is
fake-quantized in place (see ``edgekd.distill.qat``) at the start of the first QAT epoch, from the kept fp32
epoch's weights, and fine-tuned with its own optimizer and schedule."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import Dataset
from edgekd.distill.run_state import Progress, RunState
from edgekd.distill.targets import accuracy, check_labels, nll, predict, train_labels, val_targets
from edgekd.distill.teacher_side import attach_features, teacher_cache, teacher_forward
from edgekd.errors import ConfigError, ModelError
from edgekd.heartbeat import Heartbeat
from edgekd.types import DistillConfig, DistillResult, EpochRecord, parse_losses


def distill(student: Any, data: Dataset, config: DistillConfig, teacher: Any = None,
            loss: str | dict[str, float] | None = None, progress: bool = True, desc: str = "distill",
            checkpoint: str | Path | None = None, resume: bool | str | Path = False,
            log: Callable[[str], None] | None = None,
            on_checkpoint: Callable[[Path], None] | None = None) -> DistillResult:
    """Train ``student`` on ``data``; with a ``teacher``, learn from it through the configured losses.

    The losses are ``config.losses`` or, when that is empty, ``loss`` (``"kd"``, ``"kd:1,hint:0.5"``,
    ``{"kd": 1.0, "hint": 0.5}``; default ``kd``). Without a teacher it is plain cross-entropy.
    ``checkpoint`` is a file written atomically after every epoch; ``resume=True`` continues from it
    (``resume=PATH`` from that file) and, with the same config and seed, ends with the same weights as
    an uninterrupted run. Started by ``torchrun --nproc-per-node N``, the N processes train one model
    data-parallel (see ``edgekd.distill.ddp``). Returns the student with the weights of the epoch
    ``config.keep`` chooses (its best validation epoch by default); with ``config.qat_epochs`` the student
    is the fake-quantized QAT model (prepared in place) and its best epoch is the best QAT epoch, or
    ``qat_start - 1`` when the calibrated student before any QAT step validated best. Without a progress
    bar, ``log`` hears how the epochs go (a heartbeat, ``edgekd.heartbeat``), and a resumed run from which epoch.
    ``on_checkpoint(path)`` is called after each checkpoint is written (by the process that writes it).
    """
    import torch

    from edgekd.api_args import require_config, require_dataset, require_student
    from edgekd.distill import ddp
    from edgekd.distill.taps import evaluating
    from edgekd.teacher import api_teacher

    require_student(student)
    require_dataset(data)
    require_config("config", config, DistillConfig)
    teacher = api_teacher(teacher, data)  # a Teacher as default_teacher()/load_teacher() give it, or a module

    terms = _resolve_losses(config, loss)
    if config.qat_epochs:  # a student QAT cannot mirror is refused before its fp32 epochs, not after them
        from edgekd.distill.qat_plan import plan_qat

        plan_qat(student, torch.as_tensor(data.x_train[:2]), reduce_range=config.qat_reduce_range)
    save_to, load_from = _checkpoint_paths(checkpoint, resume)
    world = ddp.join(student)
    try:
        # The teacher teaches in eval mode, and goes back to its caller in the mode it came in. The run seeds
        # torch's generator (and the student's GPUs') on a fork: the caller's comes back as it was, or every
        # student a loop of build_student + distill builds after the first would start from the same weights.
        cuda = sorted({p.device.index or 0 for p in student.parameters() if p.is_cuda})
        with evaluating(teacher), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(config.seed)
            run = _setup(student, teacher, data, config, terms, np.random.default_rng(config.seed), world)
            try:
                state = _restore(run, load_from) if load_from else Progress()
                if load_from and log is not None and world.main:
                    log(f"{desc}: resuming from epoch {state.epoch} of {config.epochs} ({load_from})")
                with ddp.lost_process(world, save_to, lambda: state.epoch):  # the collectives, said in one line
                    run.step = ddp.wrap(world, student, run.parts, lambda index, xb: _loss(run, index, xb))
                    beat = Heartbeat(log if world.main and not progress else None)
                    _train(run, state, save_to, progress and world.main, desc, beat, on_checkpoint)
            finally:
                run.close()
    finally:
        ddp.leave(world)
    student.load_state_dict(state.best_state)
    student.eval()
    s_taps, t_taps = run.run_info["taps"]
    return DistillResult(student, state.best_epoch, state.best_acc, tuple(state.history), run.selected_on,
                         str(save_to) if save_to else None, config.qat_start if config.qat_epochs else None,
                         config.keep, taps={"student": s_taps, "teacher": t_taps} if s_taps else None,
                         processes=world.size, threads=torch.get_num_threads())


def _train(run: RunState, state: Progress, save_to: Path | None, progress: bool, desc: str,
           beat: Heartbeat, on_checkpoint: Callable[[Path], None] | None = None) -> None:
    """The epochs left: train, validate, keep the best, checkpoint (rank 0 only)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=run.config.epochs, initial=state.epoch, desc=desc, disable=not progress, leave=False,
               unit="epoch")
    try:
        for epoch in range(state.epoch + 1, run.config.epochs + 1):
            if epoch == run.config.qat_start:
                _begin_qat(run, state)
            start = time.perf_counter()
            train_loss = _train_epoch(run, epoch, state, save_to)
            _record(run, state, epoch, train_loss, time.perf_counter() - start)
            if save_to is not None and run.world.main:
                from edgekd.distill.checkpoint import interrupts_held

                with interrupts_held():
                    _save(run, state, save_to)
                    if on_checkpoint is not None:
                        on_checkpoint(save_to)
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{state.history[-1].val_accuracy:.3f}",
                            best=f"{state.best_acc:.3f}")
            metric = "validation" if run.selected_on == "val_labels" else "agreement with the teacher"
            beat.tick(f"{desc}: epoch {epoch}/{run.config.epochs}, loss {train_loss:.3f}, {metric} "
                      f"{state.history[-1].val_accuracy:.1%} (best {state.best_acc:.1%} at epoch {state.best_epoch}), "
                      f"{state.history[-1].seconds:.1f} s per epoch", done=epoch == run.config.epochs)
    finally:
        bar.close()


def _resolve_losses(config: DistillConfig, loss: str | dict[str, float] | None) -> tuple[tuple[str, float], ...]:
    if loss is None:
        return config.losses or (("kd", 1.0),)
    terms = parse_losses(loss)
    if config.losses and terms != config.losses:
        raise ConfigError(f"distill() got loss={loss!r} and config.losses={dict(config.losses)}",
                          "give the loss combination in one place (config.losses)")
    return terms


def _checkpoint_paths(checkpoint: str | Path | None, resume: bool | str | Path) -> tuple[Path | None, Path | None]:
    """(where to write checkpoints, where to resume from)."""
    save_to = Path(checkpoint) if checkpoint else None
    if resume is False or resume is None:
        return save_to, None
    if resume is True:
        if save_to is None:
            raise ConfigError("resume needs a checkpoint to resume from", "pass checkpoint=PATH (or resume=PATH)")
        return save_to, save_to
    return save_to or Path(resume), Path(resume)


def _setup(student: Any, teacher: Any, data: Dataset, config: DistillConfig, terms: tuple[tuple[str, float], ...],
           rng: np.random.Generator, world: Any) -> RunState:
    import torch

    from edgekd.distill.checkpoint import arch_fingerprint
    from edgekd.distill.ddp import check_batch
    from edgekd.distill.losses import LOSSES
    from edgekd.distill.taps import output_shapes

    guide = teacher if any(LOSSES.get(name).teacher for name, _ in terms) else None
    labels = train_labels(data, config, guide, unused_teacher=teacher is not None and guide is None, terms=terms)
    x = torch.from_numpy(data.x_train)
    s_shape, s_seen = output_shapes(student, x[:2])
    check_labels(labels, s_shape)
    val_index, targets, selected_on = val_targets(data, teacher)
    check_batch(config.batch_size, world.size)
    run = RunState(student, guide, config, terms, x, torch.from_numpy(labels), rng, val_index, targets,
               selected_on, data.x_val, parts=torch.nn.ModuleDict(), world=world)
    try:
        if guide is not None:
            guide.eval()
            t_shape, t_seen = output_shapes(guide, x[:2])
            if t_shape != s_shape:
                raise ModelError(f"teacher and student outputs differ in shape: teacher {t_shape}, student "
                                 f"{s_shape}", f"build the student with the teacher's {t_shape[-1]} outputs")
            attach_features(run, s_seen, t_seen)
            run.cache = teacher_cache(run) if not config.augment else None
        # The fp32 epochs get a whole one-cycle of their own; QAT fine-tunes afterwards (_qat_optimizer).
        steps = (config.epochs - config.qat_epochs) * batches_per_epoch(len(labels), config.batch_size)
        run.opt = torch.optim.AdamW(_trained(run), lr=config.lr, weight_decay=config.weight_decay)
        run.sched = torch.optim.lr_scheduler.OneCycleLR(run.opt, max_lr=config.lr, total_steps=steps,
                                                        pct_start=0.15)
        run.arch = arch_fingerprint(student)
        run.run_info = _run_info(run, data)
    except BaseException:
        run.close()
        raise
    return run


def _run_info(run: RunState, data: Dataset) -> dict[str, Any]:
    """What makes two runs the same run; a checkpoint records it and resume compares it."""
    from edgekd.distill.checkpoint import (
        arch_fingerprint,
        config_record,
        data_fingerprint,
        images_fingerprint,
        weights_fingerprint,
    )

    info = {
        "config": config_record(run.config),
        "losses": [list(t) for t in run.terms],
        "taps": [list(t.paths) if t else None for t in (run.student_taps, run.teacher_taps)],
        "teacher": arch_fingerprint(run.teacher) if run.teacher is not None else None,
        "teacher_weights": weights_fingerprint(run.teacher) if run.teacher is not None else None,
        "data": data_fingerprint(data.x_train, run.y.numpy()),
        # validation chooses the kept epoch: another validation set would choose among the epochs on two rulers
        "val_data": data_fingerprint(data.x_val, data.y_val),
        "images": images_fingerprint(data.x_train, run.y.numpy()),
        "val_images": images_fingerprint(data.x_val, data.y_val),
        "processes": run.world.size,
    }
    return json.loads(json.dumps(info))


def batches_per_epoch(images: int, batch_size: int) -> int:
    """Optimizer steps in one epoch: the shuffled images split into this many batches of about
    ``batch_size`` (never fewer than one)."""
    return max(1, images // batch_size)


def _train_epoch(run: RunState, epoch: int, state: Progress, save_to: Path | None) -> float:
    import torch

    from edgekd.distill.ddp import global_mean, shard, sync_buffers

    run.student.train()
    run.parts.train()
    if run.config.qat_epochs and epoch >= run.config.qat_start:
        _freeze_qat(run.student, run.config, epoch)
    n, total = len(run.y), 0.0
    for batch in np.array_split(run.rng.permutation(n), batches_per_epoch(n, run.config.batch_size)):
        index = torch.from_numpy(shard(batch, run.world))
        xb = run.x[index]
        if run.config.augment:
            xb = _shift(xb, run.rng)
        value = run.step(index, xb)
        mean = global_mean(value, run.world)
        if not torch.isfinite(mean):
            kept = f"; the last good checkpoint (epoch {state.epoch}) is kept at {save_to}" \
                if save_to is not None and state.epoch else ""
            raise ModelError(f"training loss became {mean.item()} at epoch {epoch}{kept}",
                             "lower the learning rate (--lr) or check the data for NaN/inf values")
        run.opt.zero_grad(set_to_none=True)
        value.backward()
        run.opt.step()
        run.sched.step()
        total += mean.item() * len(batch)
    sync_buffers(run.world, run.student, run.parts)
    return total / n


def _loss(run: RunState, index: Any, xb: Any) -> Any:
    from edgekd.distill.losses import total_loss

    return total_loss(run.terms, _batch(run, index, xb), run.config, run.parts)


def _batch(run: RunState, index: Any, xb: Any) -> Any:
    from edgekd.distill.losses import Batch

    t_logits, t_feats = None, ()
    if run.teacher is not None:
        if run.cache is not None:
            t_logits, t_feats = run.cache[0][index], tuple(f[index] for f in run.cache[1])
        else:
            t_logits, t_feats = teacher_forward(run, xb)
    if run.student_taps is None:
        return Batch(run.student(xb), t_logits, run.y[index])
    with run.student_taps.capture() as taps:
        logits = run.student(xb)
        return Batch(logits, t_logits, run.y[index], taps.features(), t_feats)


def _record(run: RunState, state: Progress, epoch: int, train_loss: float, seconds: float) -> None:
    """Validate, append to the history and keep the best weights."""
    val_acc, val_loss = _validate(run)
    state.history.append(EpochRecord(epoch, train_loss, val_acc, seconds))
    state.epoch = epoch
    state.peak_acc = max(state.peak_acc, val_acc)
    if _keeps(run, state, epoch, val_acc, val_loss):
        state.best_acc, state.best_loss, state.best_epoch = val_acc, val_loss, epoch
        state.best_state = copy.deepcopy(run.student.state_dict())


def _keeps(run: RunState, state: Progress, epoch: int, val_acc: float, val_loss: float) -> bool:
    """Whether this epoch's weights replace the kept ones (``DistillConfig.keep``)."""
    qat = run.config.qat_epochs and epoch >= run.config.qat_start
    if run.config.keep == "best" or qat:
        # Small validation sets tie on accuracy often; the lower validation loss breaks the tie.
        return (val_acc, -val_loss) > (state.best_acc, -state.best_loss)
    return val_acc >= state.peak_acc - near_best_margin(state.peak_acc, len(run.val_targets))


def near_best_margin(peak: float, images: int) -> float:
    """How far below the best validation accuracy an epoch may be and still count as tied with it: one
    binomial standard error of the best, and at least one image (a hair under, so that exactly one image
    below is within it despite rounding)."""
    return max(1.0 / images, math.sqrt(max(peak * (1.0 - peak), 0.0) / images)) * (1 + 1e-9)


def _validate(run: RunState) -> tuple[float, float]:
    """(accuracy, negative log-likelihood) on the validation targets."""
    logits = predict(run.student, run.x_val)[run.val_index]
    return accuracy(logits, run.val_targets), nll(logits, run.val_targets)


def _save(run: RunState, state: Progress, path: Path) -> None:
    from edgekd.distill.checkpoint import rng_state, save_checkpoint

    save_checkpoint(path, {
        "arch": run.arch,
        "run": json.dumps(run.run_info, sort_keys=True),
        "epoch": state.epoch,
        "student": run.student.state_dict(),
        "parts": run.parts.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(),
        "rng": rng_state(run.rng),
        "best": {"state": state.best_state, "epoch": state.best_epoch, "accuracy": state.best_acc,
                 "loss": state.best_loss, "peak": state.peak_acc},
        "history": [h.to_dict() for h in state.history],
    })


def _restore(run: RunState, path: Path) -> Progress:
    from edgekd.distill.checkpoint import load_checkpoint, not_a_checkpoint

    data = load_checkpoint(path, run.arch, run.run_info)
    try:
        return _restored(run, data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # fields of the wrong kind, or nested ones missing
        why = f"it has no {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {str(exc)[:120]}"
        raise not_a_checkpoint(path, why) from None


def _restored(run: RunState, data: dict[str, Any]) -> Progress:
    from edgekd.distill.checkpoint import set_rng_state

    if run.config.qat_epochs and int(data["epoch"]) >= run.config.qat_start:
        _prepare_qat(run)  # the checkpoint holds the QAT student: its observers come from it
        _qat_optimizer(run)  # and the fine-tuning optimizer's state
    run.student.load_state_dict(data["student"])
    run.parts.load_state_dict(data["parts"])
    run.opt.load_state_dict(data["optimizer"])
    run.sched.load_state_dict(data["scheduler"])
    set_rng_state(data["rng"], run.rng)
    best = data["best"]
    return Progress(int(data["epoch"]), best["state"], float(best["accuracy"]), float(best["loss"]),
                    int(best["epoch"]), float(best.get("peak", best["accuracy"])),
                    [EpochRecord.from_dict(h) for h in data["history"]])


def _prepare_qat(run: RunState) -> None:
    from edgekd.distill import ddp
    from edgekd.distill.qat import prepare_qat

    prepare_qat(run.student, run.x[:2], reduce_range=run.config.qat_reduce_range)
    if run.world.size > 1:  # DistributedDataParallel must see the observers' buffers
        run.step = ddp.wrap(run.world, run.student, run.parts, lambda index, xb: _loss(run, index, xb))


def _begin_qat(run: RunState, state: Progress) -> None:
    """Fake-quantize the best fp32 epoch's student, set its observers from the training images, and
    choose the best epoch among the QAT student's from now on (an fp32 state does not fit it). The
    calibrated student before any QAT step is the first candidate: post-training quantization of the
    same weights, which QAT has to beat on validation to replace."""
    from edgekd.distill.qat import calibrate

    if state.best_state is not None:
        run.student.load_state_dict(state.best_state)
    _prepare_qat(run)
    calibrate(run.student, run.x, seed=run.config.seed)
    _qat_optimizer(run)
    state.best_acc, state.best_loss = _validate(run)
    state.best_epoch = run.config.qat_start - 1
    state.best_state = copy.deepcopy(run.student.state_dict())


def _qat_optimizer(run: RunState) -> None:
    """A fresh AdamW for the fake-quantized student (the fp32 phase's moments describe another loss
    surface), its learning rate annealed from ``qat_peak_lr`` to 0 over the QAT steps."""
    import torch

    cfg = run.config
    run.opt = torch.optim.AdamW(_trained(run), lr=cfg.qat_peak_lr, weight_decay=cfg.weight_decay)
    steps = cfg.qat_epochs * batches_per_epoch(len(run.y), cfg.batch_size)
    run.sched = torch.optim.lr_scheduler.CosineAnnealingLR(run.opt, T_max=steps)


def _trained(run: RunState) -> list[Any]:
    """What the optimizer trains: the student and the losses' learned parts (projectors)."""
    return list(run.student.parameters()) + list(run.parts.parameters())


def _freeze_qat(student: Any, config: DistillConfig, epoch: int) -> None:
    """BN statistics and observers frozen for the configured last QAT epochs."""
    from edgekd.distill.qat import set_frozen

    left = config.epochs - epoch + 1  # QAT epochs from this one to the end
    set_frozen(student, bn=left <= config.qat_freeze_bn_epochs, observers=left <= config.qat_freeze_observer_epochs)


def _shift(x: Any, rng: np.random.Generator, max_shift: int = 2) -> Any:
    """Random translation by up to ``max_shift`` pixels (zero padding), one shift per batch."""
    import torch.nn.functional as F

    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    if dx == 0 and dy == 0:
        return x
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    h, w = x.shape[-2:]
    return padded[..., max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]
