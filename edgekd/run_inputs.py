"""A run's teacher and data, from what its config names: files and specs (the CLI, recipes) or, through
the Python API, a ``torch.nn.Module`` and a ``Dataset`` already in memory; and the recipe a run records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgekd.errors import ConfigError, DataError

Log = Callable[[str], None]


def check_inputs(config: Any) -> None:
    """Refuse, before any work, a teacher or data of the wrong kind and options that cannot apply to them."""
    from edgekd.data import Dataset

    if config.teacher is not None and not isinstance(config.teacher, str):
        import torch

        if not isinstance(config.teacher, torch.nn.Module):
            raise ConfigError(f"teacher is a {type(config.teacher).__name__}, not a torch.nn.Module or a spec",
                              "pass the model itself, 'file.py:factory' with weights, or a .pt2 path")
        if config.weights is not None:
            raise ConfigError("weights are given for a teacher that is already a module",
                              "load them into the module (model.load_state_dict(...)) and drop weights")
    if config.data is not None and not isinstance(config.data, str):
        if not isinstance(config.data, Dataset):
            raise ConfigError(f"data is a {type(config.data).__name__}, not a path or an edgekd Dataset",
                              "pass a .npz path, an image folder, 'digits', or load_data(...)'s result")
        if config.resolution is not None or config.normalize != "dataset" or config.channels is not None:
            raise ConfigError("resolution, normalize and channels apply when edgekd loads the data, not to a "
                              "Dataset passed in", "pass them to load_data(..., resolution=..., normalize=...) "
                              "instead")


def run_data(config: Any, log: Log) -> Any:
    """The run's data, said in one line: every stage command shows what it trains and measures on."""
    from edgekd.data import Dataset, load_data

    if isinstance(config.data, Dataset):
        data = config.data
    else:
        data = load_data(config.data, resolution=config.resolution, seed=config.seed, normalize=config.normalize,
                         channels=config.channels)
    if not len(data.y_train):
        raise DataError(f"data '{data.name}' holds only a test split (x_test, y_test), nothing to train on",
                        "pass data with training images (x and y, or x_train/y_train as well); a test set alone "
                        "is for `edgekd validate` and `edgekd gate`")
    log(f"data: {data.name} {data.input_shape}, {data.num_classes} classes, "
        f"{len(data.y_train)}/{len(data.y_val)}/{len(data.y_test)} train/val/test")
    for note in data.notes:
        log(f"warning: {note}")
    return data


def run_teacher(config: Any, data: Any, log: Log) -> Any:
    from edgekd.teacher import check_fits, default_teacher, from_module, load_teacher

    if isinstance(config.teacher, str) and config.teacher:
        teacher = load_teacher(config.teacher, config.weights)
    elif config.teacher is not None and not isinstance(config.teacher, str):
        teacher = from_module(config.teacher)
    else:
        log("teacher: embedded default (trained once, then cached)")
        teacher = default_teacher(data, progress=config.progress, log=log)
    check_fits(teacher, data)
    if config.teacher is not None:  # the default one was trained on this very data
        _check_teacher_knows_the_data(teacher, data, config, log)
    return teacher


def near_chance(accuracy: float, num_classes: int) -> bool:
    """Within a tenth of the way from chance to perfect: a model that has learned nothing usable."""
    chance = 1.0 / num_classes
    return accuracy < chance + 0.1 * (1 - chance)


CHECKED_IMAGES = 512  # enough to tell a teacher at chance level from a working one, quick on any teacher


def _check_teacher_knows_the_data(teacher: Any, data: Any, config: Any, log: Log) -> None:
    """A user's teacher that scores near chance on the data was almost always fed other preprocessing
    (normalisation, resolution, channels, class order) than it was trained with; distilling from it
    would train for hours toward noise, so it is refused before any of that."""
    from edgekd.distill.trainer import accuracy, predict

    x, y = data.x_val[:CHECKED_IMAGES], data.y_val[:CHECKED_IMAGES]
    acc = accuracy(predict(teacher.module, x), y)
    chance = 1.0 / data.num_classes
    log(f"teacher: {acc * 100:.1f}% on {len(y)} validation images (chance: {chance * 100:.1f}%)")
    if not near_chance(acc, data.num_classes):
        return
    said = (f"the teacher scores {acc * 100:.1f}% on {len(y)} validation images of '{data.name}', about chance "
            f"({chance * 100:.1f}%)")
    fix = ("feed it what it was trained on: --normalize (mean/std), --resolution, --channels, and labels in the "
           "order of its outputs")
    if not config.labels:  # unlabelled data: its labels may be placeholders, so only say it
        log(f"warning: {said}; if the labels are real, {fix}")
        return
    raise DataError(said, fix)


def recipe(config: Any, fields: list[str]) -> dict[str, Any]:
    """What a manifest or distill.json records of the run's options. A teacher or data passed in memory
    has no path to record: null, beside the teacher's source and the data's own description."""
    out = {k: getattr(config, k) for k in fields if k not in ("force", "progress")}
    for key in ("teacher", "data"):
        if out.get(key) is not None and not isinstance(out[key], str):
            out[key] = None
    return out
