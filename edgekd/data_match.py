"""Data matched to a model that records what it was trained on: its class names (which output is which
class) and its input scale; what does not match is said in notes beside the score, or refused."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import Dataset, nfc, whole_numbers
from edgekd.errors import ConfigError, DataError, kind_of
from edgekd.preprocess import Preprocess
from edgekd.textfmt import one_line


def with_class_order_note(data: Dataset, names: tuple[str, ...] | None) -> Dataset:
    """``data`` with a note when a model that numbers its classes (0..K-1, trained on numbered labels), or
    records no names at all, is scored on data that names its own: ``labels_for`` then takes the names in
    sorted order as the numbers, which is right only if the model was trained in that order, and a wrong
    order reads as a bad model."""
    numbered = tuple(str(i) for i in range(data.num_classes))
    if data.class_names == numbered or names and (names != tuple(str(i) for i in range(len(names))) or
                                                  data.class_names == names or whole_numbers(data.class_names)):
        return data  # matched by name, or by number (``_by_number``)
    shown = ", ".join(map(one_line, data.class_names[:4])) + (", ..." if data.num_classes > 4 else "")
    model = (f"the model numbers its classes 0..{len(names) - 1}" if names else
             "the model records no class names")  # one exported elsewhere
    note = (f"{model} and data '{data.name}' names its own ({shown}): class i is taken to be the i-th name in "
            "sorted order, so the accuracy holds only if the model was trained in that order, on all of them")
    return dataclasses.replace(data, notes=(*data.notes, note))


# How far the test pixels' range, once scaled, may stray from the training pixels' before it is called another
# scale. A mis-scale that a storage type makes is a factor of 16 (digits' 0..16 as floats) or more (255, 65535),
# while test images of the model's own kind differ from its training images by far less than 4x. So: a top
# above 1.5 leaves floats a little past 1 (colour corrections, rounding) alone; a top below 0.25 is a scale
# too small (8-bit values stored as uint16: 0.004) or images all but black; the mean + std, a brightness level
# any dataset has, may differ up to 4x either way.
UNIT_TOP_RANGE = (0.25, 1.5)  # the test pixels' max, for a model whose pixels were scaled into [0, 1]
TYPICAL_RATIO = 4.0  # test (mean + std) over the training's, either way, where only the mean and std are known
RANGE_SAMPLE = 1000  # test images whose range is compared


def with_scale_note(data: Dataset, recorded: Preprocess | None) -> Dataset:
    """``data`` with a note when its pixels, scaled as their storage type says (8-bit: / 255, floats: as
    stored), span another range than the model's training pixels did under ``recorded``: the recorded mean
    and std applied to pixels on another scale give an accuracy that is not the model's. Ranges, not scale
    factors, are compared: digits (0..16, / 16) saved as 8-bit (0..255, / 255) or as floats in [0, 1] are
    the same pixels. It is said, not corrected: which scale was meant cannot be known for sure."""
    if recorded is None or data.preprocess is None or not len(data.x_test):
        return data
    if recorded.scale < 1 and math.isclose(recorded.scale, data.preprocess.scale):
        return data  # integers of one depth on both sides: the same [0, 1], however dark the test images
    # A sample says where the pixels lie, and copies of the whole test set would cost memory on every check.
    sample = data.x_test[np.random.default_rng(0).permutation(len(data.x_test))[:RANGE_SAMPLE]]
    found = _range_mismatch(_scaled_pixels(sample, data.preprocess), recorded)
    if found is None:
        return data
    from edgekd.preprocess import pixel_text

    training, test, fix = found
    note = (f"the model was trained on pixels scaled as {pixel_text(recorded.scale)} ({training}) and data "
            f"'{data.name}' is scaled as {pixel_text(data.preprocess.scale)} (its storage type), {test}: this "
            f"accuracy is not the model's; {fix}")
    return dataclasses.replace(data, notes=(*data.notes, note))


def _scaled_pixels(x: np.ndarray, applied: Preprocess) -> np.ndarray:
    """Normalised NCHW images ``x`` as scaled pixels again, before the mean and std ``applied`` took off."""
    mean = np.asarray(applied.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(applied.std, np.float32).reshape(1, -1, 1, 1)
    return x * std + mean


def _range_mismatch(scaled: np.ndarray, recorded: Preprocess) -> tuple[str, str, str] | None:
    """(the training pixels' range, the test pixels', the fix) in words when they differ, else None.

    A recorded scale below 1 divided integer pixels by their top value (digits by 16, 8-bit by 255): the
    training pixels spanned [0, 1]. Floats taken as stored record no range, but their mean and std (the
    data's own by default, or numbers chosen for them) say where they typically lay; "none" (mean 0, std 1)
    says nothing, and nothing is noted."""
    if recorded.scale < 1:
        top = float(scaled.max())
        low, high = UNIT_TOP_RANGE
        return None if low <= top <= high else (
            "into [0, 1]", f"which puts its pixels up to {top:.3g}",
            "store the test images as uint8 0..255 or as floats in [0, 1]")
    mean, std = np.asarray(recorded.mean, np.float64), np.asarray(recorded.std, np.float64)
    trained = float((mean + std).max())
    if not mean.any() and (std == 1).all() or trained <= 0:
        return None
    channels = scaled.transpose(1, 0, 2, 3).reshape(scaled.shape[1], -1)
    typical = float((channels.mean(axis=1) + channels.std(axis=1)).max())
    if 1 / TYPICAL_RATIO <= typical / trained <= TYPICAL_RATIO:
        return None
    return (f"their mean + std: {trained:.3g}", f"which puts its pixels' mean + std at {typical:.3g}",
            "store the test images as floats on the training images' scale")


def present_classes(data: Dataset, names: tuple[str, ...] | None) -> Dataset:
    """``data`` without the classes none of its images has, where it is a held-out test set (nothing to train
    on) whose numbered classes are matched by number to a model's numbered ones: a CSV or .npz of labels 1..3
    is numbered 0..3, and its class 0, which no image has, is no class the model has to predict. A model that
    records no names keeps the numbers as its outputs: there labels 1..3 are class 1..3 of it."""
    if len(data.y_train) or not names or not whole_numbers(names) or not whole_numbers(data.class_names):
        return data
    present = np.unique(data.y_test)
    if len(present) == data.num_classes:
        return data
    renumbered = np.full(data.num_classes, -1, dtype=np.int64)
    renumbered[present] = np.arange(len(present))
    return dataclasses.replace(data, y_test=renumbered[data.y_test],
                               class_names=tuple(data.class_names[i] for i in present))


def labels_for(data: Dataset, names: tuple[str, ...] | None) -> np.ndarray:
    """``data``'s test labels as indices of a model's outputs ``names``. Class folders are numbered in
    sorted order, so a test folder without one of the training classes would shift every later label:
    named classes are matched by name. Numbered classes (labels as stored) are taken as they are."""
    names = tuple(nfc(n) for n in names) if names else names  # recorded as the system that trained it wrote them
    data = present_classes(data, names)
    numbered = tuple(str(i) for i in range(data.num_classes))
    if names and data.class_names != names and whole_numbers(names) and whole_numbers(data.class_names):
        return _by_number(data, names)
    if not names or data.class_names == names or data.class_names == numbered \
            or names == tuple(str(i) for i in range(len(names))):
        return data.y_test
    unknown = [n for n in data.class_names if n not in names]
    if unknown:
        raise _not_predicted(data, unknown[0], names, "named")
    index = np.array([names.index(n) for n in data.class_names], dtype=np.int64)
    return index[data.y_test]


def _not_predicted(data: Dataset, name: str, names: tuple[str, ...], how: str) -> DataError:
    return DataError(f"data '{data.name}' has class '{one_line(name)}', which the model does not predict (its "
                     f"classes: {', '.join(map(one_line, names[:12]))}{', ...' if len(names) > 12 else ''})",
                     f"pass test data with the model's classes, {how} as in training")


def _by_number(data: Dataset, names: tuple[str, ...]) -> np.ndarray:
    """``data``'s test labels as indices of a model's outputs ``names`` where both name their classes by
    number: class folders "0".."10" sort as text ("10" before "2"), as torchvision's ImageFolder numbers
    them, while numeric labels count; folder "10" is class 10 either way."""
    output = {int(float(n)): i for i, n in enumerate(names)}
    unknown = [n for n in data.class_names if int(float(n)) not in output]
    if unknown:
        raise _not_predicted(data, unknown[0], names, "numbered")
    index = np.array([output[int(float(n))] for n in data.class_names], dtype=np.int64)
    return index[data.y_test]


def with_split_note(data: Dataset, model: Any, seed: int) -> Dataset:
    """``data`` with a note when ``model``'s run dealt its test split, with this ``seed``, from other data
    (images added or removed since): the seed then deals another split, whose test images include some the
    model trained on. A seed other than the run's is said where it is chosen."""
    from edgekd.data import same_split, split_fingerprint
    from edgekd.onnx_metadata import embedded_split_data, embedded_split_seed

    then, now = embedded_split_data(model), split_fingerprint(data)
    if then is None or now is None or same_split(then, now) or embedded_split_seed(model) != seed:
        return data
    counts = (f"{now['images']:,} images now, {then['images']:,} then" if now["images"] != then.get("images")
              else "other images per class" if now["digest"] != then.get("digest")
              else "the same images, listed in another order or under other names")
    note = (f"data '{data.name}' is not the data '{Path(model).name}' was split on ({counts}): the seed deals "
            "another test split from it, which includes images the model trained on, so its accuracy reads high; "
            "score it on the data as it was, or on images kept apart (a test/ folder, or x_test in a .npz)")
    return dataclasses.replace(data, notes=(*data.notes, note))


def normalize_note(data: Dataset, model: Any) -> tuple[str, ...]:
    """The note for data normalised the default way for a model that records no preprocessing (one exported
    elsewhere): the data's own mean and std are a guess, and a model trained on raw [0, 1] pixels, or on
    ImageNet's statistics, scores as a bad model under it. The caller knows the default was taken."""
    if data.preprocess is None:
        return ()
    mean, std = (", ".join(f"{v:.3g}" for v in values) for values in (data.preprocess.mean, data.preprocess.std))
    return (f"'{Path(model).name}' records no preprocessing, so data '{data.name}' was normalised with its own mean "
            f"and std (mean {mean}, std {std}); pass --normalize none or MEAN/STD if the model expects otherwise",)


def foreign_split_note(data: Dataset, model: Any, seed: int) -> tuple[str, ...]:
    """The note for a model that records no split of edgekd's (one exported elsewhere) scored on data that gives
    no test split of its own: only the part a seeded split holds out was scored, a fifth of the user's images,
    which edgekd chooses for the models it trains, not for this one."""
    from edgekd.onnx_metadata import VERSION_KEY, embedded_metadata, embedded_split_seed

    # A file edgekd wrote without a split seed (a run's teacher) may have been trained on this very split's
    # training part: scoring every image, as the note advises, would score it on its training images.
    if not data.seeded_split or embedded_split_seed(model) is not None or VERSION_KEY in embedded_metadata(model):
        return ()
    total = len(data.y_train) + len(data.y_val) + len(data.y_test)
    return (f"'{Path(model).name}' records no split of edgekd's, and data '{data.name}' gives no test split of its "
            f"own: {len(data.y_test)} of its {total} images, the test split that seed {seed} deals, were "
            "scored; to score every image, give them as a held-out test set: an .npz of x_test/y_test alone, a "
            "folder holding only a test/ folder of class folders, or a CSV whose split column says test on every "
            "row",)


def split_seed(model: str | Path, seed: int | None = None) -> int:
    """The seed whose test split ``model`` is scored on: ``seed``, else the one its run recorded (another one
    would test it partly on images it was trained on), else 0."""
    from edgekd.onnx_metadata import embedded_split_seed

    recorded = embedded_split_seed(model)
    return seed if seed is not None else recorded if recorded is not None else 0


def load_data_for(model: str | Path, source: Any, *, resolution: Any = None, normalize: Any = None,
                  channels: Any = None, seed: int | None = None, log: Callable[[str], None] | None = None) -> Dataset:
    """``source`` loaded to score the ONNX ``model`` on, as ``edgekd validate`` loads it: fed the preprocessing
    the model records (``normalize`` overrides it), its classes matched to the model's by name, split as its
    run was (``seed`` picks another). What was assumed or does not match (a seed other than the run's, data
    changed since the run split it, the data's own statistics for a model recording none, a seeded fifth of
    the images scored) is said in the returned data's ``notes``. ``log``: how far a long read of images is
    (``load_data``)."""
    from edgekd.data import load_data
    from edgekd.onnx_metadata import embedded_class_names, embedded_preprocess, embedded_split_seed
    from edgekd.onnxfile import describe, load_model
    from edgekd.preprocess import loading_for_model, parse_channels, recorded_channels

    if not isinstance(model, (str, Path)):  # a torch module, say: its metadata was read as a path (TypeError)
        raise ConfigError(f"model is {kind_of(model)}, not the path of an ONNX file",
                          "pass the path of the exported .onnx model the data is to be scored on")
    # a missing, truncated or foreign file named as such (was FileNotFoundError from its metadata); read once
    inputs = describe(load_model(model))["inputs"]
    recorded, run_seed, split = embedded_preprocess(model), embedded_split_seed(model), split_seed(model, seed)
    # the model's fixed size known while loading: images of another size are refused before any is decoded
    with loading_for_model(model, inputs[0]["shape"] if inputs else None):
        data = load_data(source, resolution=resolution, normalize=recorded if normalize is None else normalize,
                         channels=parse_channels(channels) or recorded_channels(recorded), seed=split, log=log)
    said = ()
    if seed is not None and run_seed is not None and seed != run_seed:
        said = (f"'{model}' was trained on the split of seed {run_seed}: the test images of --seed {seed} include "
                "some of its training images, so its accuracy reads high",)
    data = dataclasses.replace(data, notes=(*said, *data.notes))
    data = with_split_note(with_scale_note(with_class_order_note(data, embedded_class_names(model)), recorded),
                           model, split)
    assumed = normalize_note(data, model) if recorded is None and normalize is None else ()
    data = numbered_as_outputs(dataclasses.replace(data, notes=(*data.notes, *assumed,
                                                                 *foreign_split_note(data, model, split))),
                               embedded_class_names(model))
    _check_fits(model, data)
    return data


def _check_fits(model: str | Path, data: Dataset) -> None:
    """Refuse data ``model`` cannot take (another size, channel count or class count), as validate does once it
    scores it: a Python caller was handed 8x8 images for a 16x16 model without a word."""
    from edgekd.latency.runtime import check_data_fits, open_session
    from edgekd.profiles import load_profile

    check_data_fits(open_session(model, load_profile("host-cpu-1t")), data, model)


def numbered_as_outputs(data: Dataset, names: tuple[str, ...] | None) -> Dataset:
    """``data`` with its labels (every split's) numbered as the outputs ``names`` of a model, matched as
    ``labels_for`` matches them, and the model's names as its class names: a Python user compares
    ``argmax(model(x))`` with ``y_test``, and in the data's own numbering a test folder holding classes "b" and "d"
    of a model's a..d would score 0% where validate says 100%. Data whose numbers already are the outputs (or a
    model that records no names, whose outputs are taken as the data's numbers) is returned as it is."""
    if not names:
        return data
    names = tuple(nfc(n) for n in names)
    present = present_classes(data, names)
    index = labels_for(dataclasses.replace(present, y_test=np.arange(present.num_classes)), names)
    if present is data and np.array_equal(index, np.arange(data.num_classes)):
        return data
    return dataclasses.replace(present, y_train=index[present.y_train], y_val=index[present.y_val],
                               y_test=index[present.y_test], class_names=names)
