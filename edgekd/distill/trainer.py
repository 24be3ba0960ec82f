"""The one training loop: supervised training (no teacher) and distillation are the same loop
with a different loss. Seeded, best-on-validation, with a progress bar."""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np

from edgekd.data import Dataset
from edgekd.errors import ModelError
from edgekd.types import DistillConfig, DistillResult, EpochRecord


def predict(model: Any, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Logits of ``model`` on ``x`` (eval mode, no grad), as float32 numpy."""
    import torch

    model.eval()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[start:start + batch]))).float().numpy())
    return np.concatenate(outs)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def distill(student: Any, data: Dataset, config: DistillConfig, teacher: Any = None,
            loss: str = "kd", progress: bool = True, desc: str = "distill") -> DistillResult:
    """Train ``student`` on ``data``; with a ``teacher``, learn from its logits through ``loss``.

    Returns the student with the weights of its best validation epoch.
    """
    import torch
    from tqdm.auto import tqdm

    from edgekd.distill.losses import LOSSES

    loss_fn = LOSSES.get(loss if teacher is not None else "ce")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    x_train = torch.from_numpy(data.x_train)
    y_train = torch.from_numpy(data.y_train)
    # Without augmentation the teacher sees the same inputs every epoch: run it once.
    cached = torch.from_numpy(predict(teacher, data.x_train)) if teacher is not None and not config.augment else None
    if teacher is not None:
        teacher.eval()
    steps = config.epochs * math.ceil(len(y_train) / config.batch_size)
    opt = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.15)
    best_state, best_acc, best_loss, best_epoch = None, -1.0, math.inf, 0
    history: list[EpochRecord] = []
    bar = tqdm(range(1, config.epochs + 1), desc=desc, disable=not progress, leave=False, unit="epoch")
    for epoch in bar:
        start = time.perf_counter()
        student.train()
        total, seen = 0.0, 0
        for idx in np.array_split(rng.permutation(len(y_train)), max(1, len(y_train) // config.batch_size)):
            index = torch.from_numpy(idx)
            xb, yb = x_train[index], y_train[index]
            if config.augment:
                xb = _shift(xb, rng)
            tb = None
            if teacher is not None:
                if cached is not None:
                    tb = cached[index]
                else:
                    with torch.inference_mode():
                        tb = teacher(xb).float()
            value = loss_fn(student(xb), tb, yb, config)
            if not torch.isfinite(value):
                raise ModelError(f"training loss became {value.item()} at epoch {epoch}",
                                 "lower the learning rate (--lr) or check the data for NaN/inf values")
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
            total += value.item() * len(idx)
            seen += len(idx)
        val_logits = predict(student, data.x_val)
        val_acc, val_loss = accuracy(val_logits, data.y_val), _nll(val_logits, data.y_val)
        history.append(EpochRecord(epoch, total / seen, val_acc, time.perf_counter() - start))
        # Small validation sets tie on accuracy often; the lower validation loss breaks the tie.
        if (val_acc, -val_loss) > (best_acc, -best_loss):
            best_acc, best_loss, best_epoch = val_acc, val_loss, epoch
            best_state = copy.deepcopy(student.state_dict())
        bar.set_postfix(loss=f"{total / seen:.3f}", val=f"{val_acc:.3f}", best=f"{best_acc:.3f}")
    bar.close()
    student.load_state_dict(best_state)
    student.eval()
    return DistillResult(student, best_epoch, best_acc, tuple(history))


def _nll(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def _shift(x: Any, rng: np.random.Generator, max_shift: int = 2) -> Any:
    """Random translation by up to ``max_shift`` pixels (zero padding), one shift per batch."""
    import torch.nn.functional as F

    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    if dx == 0 and dy == 0:
        return x
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    h, w = x.shape[-2:]
    return padded[..., max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]
