"""What a student learns from and is judged by: its training labels (-1 where unknown), the validation
targets that choose the kept epoch (labels, or agreement with the teacher where there are none), and the
scores on them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgekd.data import Dataset
from edgekd.errors import ConfigError, DataError, ModelError
from edgekd.types import DistillConfig


def predict(model: Any, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Logits of ``model`` on ``x`` (eval mode, no grad), as float32 numpy; the model's modes are left as they
    were (a caller's reference model, a student mid-training)."""
    import torch

    from edgekd.distill.taps import evaluating

    outs = []
    with evaluating(model), torch.inference_mode():
        for start in range(0, len(x), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[start:start + batch]))).float().numpy())
    return np.concatenate(outs)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``logits`` against ``labels``, a fraction."""
    return float((logits.argmax(1) == labels).mean())


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(``logits``), computed stably."""
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def train_labels(data: Dataset, config: DistillConfig, teacher: Any, unused_teacher: bool = False,
                 terms: Sequence[tuple[str, float]] = ()) -> np.ndarray:
    """Training labels, -1 where unknown; refuses data that cannot teach anything, and losses ``terms`` that
    leave the student's classifier nothing to learn from."""
    y = data.y_train.astype(np.int64) if config.use_labels else np.full(len(data.y_train), -1, np.int64)
    labelled = np.unique(y[y >= 0])
    if teacher is not None and terms:
        check_classifier_taught(terms, bool(len(labelled)), config.alpha)
    if len(labelled) == 0 and unused_teacher:
        names = ", ".join(name for name, _ in config.losses) or "ce"
        raise DataError(f"the losses ({names}) learn from labels alone, and the training data has none "
                        "(or use_labels is off), so the teacher given has nothing to teach through",
                        "add a teacher loss, e.g. --losses kd")
    if len(labelled) == 0 and teacher is None:
        raise DataError("the training data has no labels (or use_labels is off) and there is no teacher",
                        "pass a teacher to learn from its soft labels, or labelled data")
    if len(labelled) == 1:
        raise DataError(f"training data has a single class (label {labelled[0]}) among its labelled images",
                        "provide images of at least two classes")
    return y


def check_classifier_taught(terms: Sequence[tuple[str, float]], labelled: bool, alpha: float) -> None:
    """The feature losses train the layers they tap, never the classifier after them: with no logit loss it
    learns from the label cross-entropy alone, and without labels, or with alpha 1 weighing it out, it keeps
    its initial weights and the run ends at chance, which no number of epochs changes."""
    from edgekd.distill.losses import LOSSES

    defs = {name: LOSSES.get(name) for name, _ in terms}
    if any(d.teacher and not d.features for d in defs.values()):
        return
    # with alpha 1 the label loss can still come in as a term of its own (ce), weighed as the others are
    if labelled and (alpha < 1.0 or any(not d.teacher for d in defs.values())):
        return
    names = ", ".join(defs)
    example = ",".join(["kd", *(name for name, d in defs.items() if d.features)])
    fix = f"add a logit loss (kd, dkd or dist), e.g. --losses {example} (losses='{example}' in the Python API)"
    if not labelled:
        raise DataError(f"the losses ({names}) train only the layers they tap, and the training data has no labels "
                        "(or use_labels is off), so nothing trains the student's classifier", fix)
    raise ConfigError(f"the losses ({names}) train only the layers they tap, and alpha 1 leaves no weight to the "
                      "label cross-entropy, so nothing trains the student's classifier",
                      f"{fix}, or lower --alpha below 1 (alpha in the Python API)")


def check_labels(labels: np.ndarray, s_shape: tuple[int, ...]) -> None:
    if len(s_shape) != 2:
        raise ModelError(f"the student outputs shape {s_shape}, not (batch, classes) logits",
                         "end the student with a classifier returning (N, classes)")
    top = int(labels.max()) if len(labels) else -1
    if top >= s_shape[1]:
        raise DataError(f"labels go up to {top} but the student has {s_shape[1]} outputs",
                        f"build the student with at least {top + 1} classes")


def val_targets(data: Dataset, teacher: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """(indices, targets, name): the labelled validation images, or all of them against the teacher."""
    labelled = np.flatnonzero(data.y_val >= 0)
    if len(labelled):
        return labelled, data.y_val[labelled].astype(np.int64), "val_labels"
    if teacher is None:
        raise DataError("the validation split has no labels and there is no teacher to agree with",
                        "label the validation images or pass a teacher")
    return np.arange(len(data.y_val)), predict(teacher, data.x_val).argmax(1), "teacher_agreement"
