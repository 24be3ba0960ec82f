"""The gate's accuracy checks: a floor overall and per class, and the drop below a baseline scored on the same
test split, each model fed the input it records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.gate_config import GateConfig
from edgekd.gate_result import Check
from edgekd.textfmt import figures, one_line


def accuracy_checks(model: Path, baseline: Path | None, config: GateConfig, notes: list[str],
                    log: Callable[[str], None] | None = None, which: str = "") -> tuple[list[Check], tuple[int, ...]]:
    """The accuracy floor, and the drop below ``baseline``'s accuracy, measured on the same test split; each
    model is fed the input it records (``--normalize`` overrides both). What was assumed in scoring them (the
    data's own normalisation, a seeded split of it) is added to ``notes``. Also the shape of ``model``'s test
    images (C, H, W), which a model of open size is timed at. ``log``: how far a long read of the images is;
    ``which``: the baseline manifest's artifact compared, said in the drop's row as the size growth's says it."""
    from edgekd.data import with_notes
    from edgekd.data_match import foreign_split_note

    loaded: dict[str, Any] = {}
    acc, data, read, by_class, classes = _accuracy(model, config, config.normalize, loaded, notes, log)
    notes.extend(foreign_split_note(data, model, int(config.seed)))  # one split for both: said once
    on = f"on {data.name} test split ({len(data.y_test)} images)"
    said = "".join(f"; {note}" for note in read) + _computed_here(config.profile)
    checks = []
    if config.min_accuracy is not None:
        ok = acc >= config.min_accuracy
        shown, line = figures(acc * 100, config.min_accuracy * 100, 2, ok, at_most=False)
        checks.append(Check("accuracy", ok, with_notes(f"{shown}% {on}, minimum {line}%{said}", data), acc))
    if config.min_class_accuracy is not None:
        checks.append(class_check(by_class, config.min_class_accuracy, on + said, data, notes, classes))
    if baseline is not None:
        own = config.normalize if isinstance(config.normalize, str) else None  # a flag, not the target's record
        size = _own_size(baseline, model, data, notes)
        base, base_data, base_read, _, _ = _accuracy(baseline, config, own, loaded, notes, log, size)
        drop = (base - acc) * 100
        limit = config.max_accuracy_drop or 0.0
        said += "".join(f"; baseline: {note}" for note in base_read if note not in read)
        ok = drop <= limit + 1e-9
        checks.append(Check("accuracy drop", ok, with_notes(
            f"{acc * 100:.2f}% vs the baseline's {base * 100:.2f}% {on}: {points(drop, limit, ok)} (at most "
            f"{limit:g} points lower){which}{said}", base_data), drop))
    return checks, tuple(data.input_shape)


def _computed_here(profile: Any) -> str:
    """Accuracy is computed in this host's onnxruntime whatever the profile: for a device's profile (ssh, adb),
    which the gate's notes name as the one measured on, said in the row."""
    from edgekd.profiles import computed_here, load_profile

    loaded = load_profile(profile)
    return "" if loaded.is_local else f"; {computed_here(loaded)}"


def class_check(by_class: dict[str, float], floor: float, on: str, data: Any, notes: list[str],
                classes: tuple[str, ...] | None = None) -> Check:
    """Every class of the test split at ``floor`` or above: an overall accuracy can hold while one class, a
    rare one most often, is lost. The classes below it past the five the row names, and the model's classes
    (``classes``; default: the data's) with no test image (a rare class is the likeliest to have none), are
    named in ``notes``."""
    from edgekd.data import with_notes

    ranked = sorted((acc, one_line(name)) for name, acc in by_class.items())
    below = [(acc, name) for acc, name in ranked if acc < floor]
    listed = [f"{name} {_class_percent(acc, floor)[0]}%" for acc, name in below]
    named = "; below it: " + ", ".join(listed[:5]) + (f" and {len(below) - 5} more (named in the notes)"
                                                      if len(below) > 5 else "") if below else ""
    lowest, line = _class_percent(ranked[0][0], floor)
    if len(below) > 5:
        notes.append(f"classes below the minimum of {line}% per class: {', '.join(listed)}")
    unchecked = [one_line(name) for name in classes or data.class_names if name not in by_class]
    if unchecked:
        # Not a failure (nothing was measured), but never a silent pass: the row and the notes both say it.
        classes = f"class{'es' * (len(unchecked) > 1)} {', '.join(unchecked)}"
        named += f"; not checked: {classes}, with no test images"
        them = "them" if len(unchecked) > 1 else "it"
        notes.append(f"not checked: {classes} of {data.name}, with no images in the test split, so the minimum per "
                     f"class does not cover {them}; give the data more images of {them} (or a test split holding some)")
    return Check("class accuracy", not below, with_notes(
        f"lowest class {ranked[0][1]} at {lowest}% {on}, minimum {line}% per class{named}", data), ranked[0][0])


def _class_percent(acc: float, floor: float) -> tuple[str, str]:
    return figures(acc * 100, floor * 100, 1, acc >= floor, at_most=False)


def points(drop: float, limit: float, passed: bool) -> str:
    """The accuracy drop in points, with the digits that tell it from ``limit`` when it fails on a hair."""
    shown = figures(abs(drop), limit, 2, passed)[0] if drop > 0 else f"{-drop:.2f}"
    return f"{shown} points lower" if drop > 0 else f"{shown} points higher" if drop < 0 else "the same"


def _accuracy(model: Path, config: GateConfig, normalize: Any, loaded: dict[str, Any],
              notes: list[str], log: Callable[[str], None] | None = None, resolution: Any = None,
              ) -> tuple[float, Any, tuple[str, ...], dict[str, float], tuple[str, ...]]:
    """``model``'s top-1 accuracy on ``config.data``'s test split, the data as loaded for it, what was noted in reading
    its outputs, its accuracy per class and its classes (``model_classes``); ``normalize`` None feeds the
    preprocessing the model's metadata records (without any, ``config.normalize``'s, the gated manifest's record,
    and without that the data's own statistics, each said in ``notes``). ``resolution``: the size to load the data
    at (default: ``config.resolution``). ``loaded`` keeps the data by how it was loaded: a baseline fed as the
    candidate is does not read the images again."""
    from edgekd.data import load_data
    from edgekd.data_match import normalize_note, with_class_order_note, with_scale_note, with_split_note
    from edgekd.latency.runtime import predictions_on_test_split, top1
    from edgekd.onnx_metadata import embedded_class_names, embedded_preprocess, embedded_split_seed
    from edgekd.preprocess import recorded_channels
    from edgekd.profiles import load_profile
    from edgekd.validate import class_accuracy

    recorded = embedded_preprocess(model)  # a --normalize given still keeps the recorded channel conversion
    how = {"normalize": normalize if normalize is not None else recorded or config.normalize,
           "channels": _channels(model, config.channels, recorded_channels(recorded), notes)}
    size = resolution if resolution is not None else config.resolution
    key = repr((how, size))
    if key not in loaded:
        from edgekd.onnxfile import input_dims
        from edgekd.preprocess import loading_for_model

        # the model's fixed size known while loading: images of another size are refused before any is decoded
        with loading_for_model(model, input_dims(model)):
            loaded[key] = load_data(config.data, resolution=size, seed=config.seed, log=log, **how)
    data = with_split_note(with_scale_note(with_class_order_note(loaded[key], embedded_class_names(model)), recorded),
                           model, int(config.seed))
    if how["normalize"] is None:
        notes.extend(normalize_note(data, model))
    elif normalize is None and recorded is None:  # a baseline exported elsewhere, fed the gated manifest's record
        notes.append(_fed_record_note(model, how["normalize"]))
    logits, labels, read = predictions_on_test_split(model, load_profile(config.profile), data)
    split = embedded_split_seed(model)
    if split is not None and split != int(config.seed):  # baseline and candidate share one split: said, not switched
        read = (*read, f"'{Path(model).name}' was trained on the split of seed {split}, and its accuracy here is on "
                f"seed {config.seed}'s test images, some of them its training images: pass --seed {split}")
    return (top1(logits, labels), data, read, class_accuracy(logits, labels, data),
            model_classes(embedded_class_names(model), data, int(logits.shape[1])))


def _fed_record_note(model: Path, record: Any) -> str:
    """The note for a baseline that records no preprocessing, fed the one the gated manifest records: gated or
    validated alone, the same file is fed the data's own statistics, so its accuracy depends on its role, and
    the drop verdict rested on a preprocessing nobody was told of."""
    from edgekd.preprocess import pixel_text

    mean, std = (", ".join(f"{v:.4g}" for v in values) for values in (record.mean, record.std))
    return (f"'{model.name}' records no preprocessing, so it was fed the one the gated manifest records "
            f"({pixel_text(record.scale)}, mean {mean}, std {std}), as a model trained on the same data would be "
            "(validated or gated alone it is fed the data's own mean and std); pass --normalize none, dataset or "
            "MEAN/STD to feed both models another")


def _own_size(baseline: Path, model: Path, data: Any, notes: list[str]) -> tuple[int, int] | None:
    """The size the baseline is fed at where its input is fixed at another than ``model``'s test images
    (``data``), said in ``notes``: one --resolution cannot serve two models of different fixed sizes (a release
    that changed its input size), and each refusal asked for the size the other model refuses. None: the
    gated model's size serves it."""
    from edgekd.onnxfile import input_dims
    from edgekd.preprocess import model_image_size

    fixed = model_image_size(input_dims(baseline))
    have = tuple(data.input_shape[1:])
    if fixed is None or tuple(fixed[0]) == have:
        return None
    (h, w), shown = fixed[0], "x".join(map(str, have))
    notes.append(f"the baseline '{baseline.name}' takes {h}x{w} images and '{model.name}' was scored on {shown}: the "
                 f"baseline was scored on the same test images at {h}x{w}, its own fixed size (one --resolution "
                 "cannot serve both)")
    return h, w


def _channels(model: Path, given: int | None, recorded: int | None, notes: list[str]) -> int | None:
    """The channels ``model`` is fed: those its metadata records, else ``--channels``. The gated model and its
    baseline share one --data, and one of them may be exported elsewhere, recording none: a --channels for that
    one, applied to both, was refused by the other (its hint then asked for the opposite)."""
    if recorded is None:
        return given
    if given is not None and given != recorded:
        notes.append(f"--channels {given} not applied to '{model.name}': it is fed the {recorded} channel"
                     f"{'s' * (recorded > 1)} its metadata records (--channels converts for a model recording none)")
    return recorded


def model_classes(names: tuple[str, ...] | None, data: Any, outputs: int) -> tuple[str, ...]:
    """The classes of a model with ``outputs`` outputs, named as ``data``'s per-class accuracy names them: its
    recorded names where the data's classes are among them (matched by name, or numbers alike); otherwise (a model
    recording none, or matched to the data in sorted order) the data's names, then the outputs past them by
    number. A test set may hold some classes only, and its labels say nothing of the model's classes past its
    highest."""
    if names and set(data.class_names) <= set(names):
        return tuple(names)
    return (*data.class_names, *(str(i) for i in range(len(data.class_names), outputs)))
