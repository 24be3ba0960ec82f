"""One loader interface over three sources: embedded digits, a ``.npz`` file, an image folder.

Everything becomes float32 NCHW arrays with a deterministic train/val/test split, so later
stages never care where the data came from. How raw pixels became those arrays (scale, mean, std,
resize) is kept as a ``Preprocess`` and recorded in the manifest: the shipped model expects exactly
that input, and a deployment pipeline has to reproduce it.
"""

from __future__ import annotations

import dataclasses
import math
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ConfigError, DataError
from edgekd.preprocess import (  # noqa: F401  (re-exported: where callers have always found them)
    NORMALIZE_FIX,
    Preprocess,
    check_channels,
    check_image_size,
    check_memory,
    convert_channels,
    describe_preprocess,
    normalize_images,
    orientation_notes,
    parse_normalize,
    parse_resolution,
    recorded_preprocess,
    resolution_value,
)

SPLIT = (0.7, 0.1, 0.2)  # train, val, test
TORCH_RESIZE = "bilinear, align_corners=False"  # torch.nn.functional.interpolate, as _resize calls it


@dataclass(frozen=True)
class RecordedData:
    """The data a manifest's accuracies were measured on, as ``load_data`` takes it again."""

    source: str | None  # None: the run's own data is not here (or the manifest does not say)
    named: str  # how the manifest names it, for messages
    resolution: Any  # one side, (height, width) or as the recipe recorded it (parse_resolution reads each form)
    seed: int  # the split the test accuracy was measured on


def with_notes(detail: str, data: Dataset) -> str:
    """A check's one-line ``detail`` followed by the loading's warnings (an orientation flip): validate and
    gate load data with a --resolution of their own, and a turned image fails accuracy with no other clue."""
    return detail + "".join(f"; warning: {note}" for note in data.notes)


def recorded_data(manifest: dict[str, Any]) -> RecordedData:
    """The run's own data (its recipe's --data and --resolution) while it is still where it was, or digits."""
    info, recipe = manifest.get("data") or {}, manifest.get("recipe") or {}
    own, shape, seed = recipe.get("data"), info.get("input_shape") or [], int(recipe.get("seed") or 0)
    if own and own != "digits":
        return RecordedData(own if Path(own).exists() else None, own, recipe.get("resolution"), seed)
    if own == "digits" or info.get("name") == "digits":
        return RecordedData("digits", "digits", resolution_value(shape[-2:]) if shape
                            else recipe.get("resolution"), seed)
    return RecordedData(None, info.get("name", "?"), None, seed)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Float32 NCHW images and int64 labels, split three ways."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    preprocess: Preprocess | None = None  # how raw pixels became these arrays (None: built by hand)
    notes: tuple[str, ...] = ()  # warnings about the loading the run should show (an orientation flip)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "train": len(self.y_train),
            "val": len(self.y_val),
            "test": len(self.y_test),
            "class_names": list(self.class_names),  # output index -> label, for whoever reads the logits
            **({"preprocess": self.preprocess.to_dict()} if self.preprocess else {}),
        }


MAX_SEED = 2 ** 63 - 1  # what torch, numpy and random all take


def check_seed(seed: Any) -> None:
    """A seed every generator edgekd seeds accepts (numpy refuses negative ones with its own traceback)."""
    import numbers

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed {seed} is not a whole number from 0 to {MAX_SEED}",
                          "pass e.g. --seed 0 (seed = 0 in a settings file)")


def load_data(source: str | Mapping[str, Any] | tuple[Any, Any] | None = None, *, resolution: Any = None, seed: int = 0,
              normalize: Any = None, channels: int | None = None) -> Dataset:
    """Load ``source``: ``None``/``"digits"`` (embedded), a ``.npz`` file, an image folder, a ``.csv`` file
    listing images and labels (``edgekd.image_list``), or arrays already in memory, ``(x, y)`` or a mapping
    with a ``.npz`` file's keys (``load_arrays``).

    ``resolution`` resizes images: one side (square) or height and width ("240x320", (240, 320));
    digits default: 32. ``normalize``: "dataset"
    (default: standardise with the data's own mean and std), "none" (scaled pixels as they are), a
    "MEAN/STD" string or a recorded ``Preprocess`` (the same numbers a model was trained with).
    ``channels`` 3 repeats grayscale images to RGB, 1 turns RGB into luminance (default: as stored, or
    as a recorded ``Preprocess`` converted them).
    """
    parse_normalize(normalize)  # a malformed spec is refused before any data is read
    check_seed(seed)
    hw = parse_resolution(resolution)
    if channels is None and isinstance(normalize, Preprocess):
        channels = normalize.to_channels
    check_channels(channels)  # before any data is read
    if isinstance(source, (tuple, Mapping)):
        return load_arrays(source, resolution=hw, seed=seed, normalize=normalize, channels=channels)
    if source is None or source == "digits":
        return load_digits(resolution=hw or 32, seed=seed, normalize=normalize, channels=channels)
    check_data_source(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data '{source}' does not exist", "pass a .npz file, an image folder, or 'digits'")
    if path.is_dir():
        from edgekd.images import load_image_folder  # here: it builds on this module

        return load_image_folder(path, resolution=hw, seed=seed, normalize=normalize, channels=channels)
    if path.suffix.lower() == ".npz":
        return load_npz(path, resolution=hw, seed=seed, normalize=normalize, channels=channels)
    if path.suffix.lower() in (".csv", ".tsv"):
        from edgekd.image_list import load_image_list  # builds on this module too

        return load_image_list(path, resolution=hw, seed=seed, normalize=normalize, channels=channels)
    raise DataError(f"data '{source}' is neither a .npz file, a .csv list of images nor a folder",
                    "pass a .npz file (x, y arrays), a .csv file (path,label rows) or an image folder")


def check_data_source(source: Any) -> None:
    """An empty --data (an unset shell variable) would otherwise be read as the current folder."""
    if isinstance(source, str) and not source.strip():
        raise DataError("--data is empty", "pass a .npz file, an image folder, or 'digits'")


def load_digits(resolution: Any = 32, seed: int = 0, normalize: Any = None, channels: int | None = None) -> Dataset:
    """scikit-learn's 1,797 real 8x8 digit scans (values 0-16), upsampled so convolutions have work to do."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    hw = parse_resolution(resolution) or (32, 32)
    x = _resize(x, hw, "digits")
    y = bunch.target.astype(np.int64)
    x, to = convert_channels(x, channels, "digits")
    side = hw if hw != (8, 8) else None
    return split_normalized("digits", x, y, tuple(str(i) for i in range(10)), seed, normalize, "digits",
                            lambda mean, std: Preprocess(1 / 16, mean, std, "grayscale", side,
                                                         TORCH_RESIZE if side else None, to))


def load_npz(path: Path, resolution: Any = None, seed: int = 0, normalize: Any = None,
             channels: int | None = None) -> Dataset:
    resolution = parse_resolution(resolution)
    fix = "write it with numpy.savez(path, x=..., y=...)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot be read as .npz ({exc or type(exc).__name__})", fix) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array, not a .npz archive", fix)
    with archive:
        arrays = {}
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError:  # an object array: unpickling it could run code
                raise DataError(f"{path}: array '{key}' holds Python objects, which edgekd does not unpickle",
                                "store numbers, and names as a string array: np.array(names, dtype=str)") from None
    return _from_arrays(path, arrays, resolution, seed, normalize, channels)


def load_arrays(arrays: Mapping[str, Any] | tuple[Any, Any], *, resolution: Any = None, seed: int = 0,
                normalize: Any = None, channels: int | None = None) -> Dataset:
    """Arrays a notebook already holds, as a ``.npz`` file would hold them: ``(x, y)``, or a mapping with
    the same keys (``x``/``y``, or ``x_train``/``y_train``/``x_test``/``y_test``, ``class_names``);
    numpy arrays, or anything ``numpy.asarray`` reads (CPU tensors, lists). Named "arrays" in records."""
    if isinstance(arrays, tuple):
        if len(arrays) != 2:
            raise DataError(f"data arrays: a tuple of {len(arrays)} items, not (x, y)",
                            "pass (images, labels), or a mapping such as {'x_train': ..., 'y_train': ..., ...}")
        arrays = {"x": arrays[0], "y": arrays[1]}
    parse_normalize(normalize)
    check_seed(seed)
    check_channels(channels)
    taken = {}
    for key, value in arrays.items():
        taken[str(key)] = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        if taken[str(key)].dtype == object and all(isinstance(v, str) for v in taken[str(key)].flat):
            taken[str(key)] = taken[str(key)].astype(str)  # a pandas column of names arrives as objects
        if taken[str(key)].dtype == object:
            raise DataError(f"data arrays: '{key}' holds Python objects", "pass numbers (and names as strings)")
    return _from_arrays(Path("arrays"), taken, parse_resolution(resolution), seed, normalize, channels)


def _from_arrays(path: Path, arrays: dict[str, np.ndarray], resolution: tuple[int, int] | None, seed: int,
                 normalize: Any, channels: int | None) -> Dataset:
    """The dataset in ``arrays`` (an archive's, or a caller's); ``path`` names them in errors and records."""
    _check_images(path, arrays)
    arrays = _splits_named(path, arrays)
    arrays = _numbered_labels(path, arrays)
    if {"x_test", "y_test"} <= arrays.keys() and not {"x", "x_train"} & arrays.keys():
        return _test_only(path, arrays, resolution, normalize, channels)
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        parts = {k: arrays[k] for k in arrays if k.startswith(("x_", "y_"))}
        if "x_val" not in parts:  # carve validation from train, deterministic
            xt, yt, xv, yv = holdout(parts["x_train"], parts["y_train"], 0.125, seed)
            parts.update(x_train=xt, y_train=yt, x_val=xv, y_val=yv)
        scale = _scale(parts["x_train"])
        xs = {k: _to_nchw(path, parts[f"x_{k}"], resolution, f"x_{k}") for k in ("train", "val", "test")}
        shapes = {k: v.shape[1:] for k, v in xs.items()}
        if len(set(shapes.values())) > 1:
            raise DataError(f"{path}: the splits' images differ in shape ({shapes})",
                            "store every split at one shape, or pass --resolution to resize them")
        ys = {k: _labels(path, parts[f"y_{k}"], len(xs[k]), f"y_{k}") for k in ("train", "val", "test")}
        names = _class_names(path, arrays, int(max(y.max() for y in ys.values())))
        check_classes(path, ys["train"], len(names))
        converted = {k: convert_channels(v, channels, str(path)) for k, v in xs.items()}
        xs, to = {k: v[0] for k, v in converted.items()}, converted["train"][1]
        norm = {k: normalize_images(v, xs["train"], normalize, str(path)) for k, v in xs.items()}
        mean, std = norm["train"][1:]
        pre = Preprocess(scale, mean, std, "as stored", resolution, TORCH_RESIZE if resolution else None, to)
        return Dataset(
            path.name, norm["train"][0], ys["train"], norm["val"][0], ys["val"], norm["test"][0], ys["test"],
            names, pre, _orientation(parts["x_train"], resolution) + _scale_notes(path, parts["x_train"], normalize),
        )
    if not {"x", "y"} <= arrays.keys():
        raise DataError(
            f"{path}: has arrays {sorted(arrays)}, not 'x' and 'y'",
            "save images as x (N,C,H,W or N,H,W) and labels as y (N,), or x_train/y_train/x_test/y_test, or "
            "x_test/y_test alone (a test set for validate and gate)",
        )
    scale = _scale(arrays["x"])
    x = _to_nchw(path, arrays["x"], resolution)
    y = _labels(path, arrays["y"], len(x))
    names = _class_names(path, arrays, int(y.max()) if len(y) else 0)
    check_classes(path, y, len(names))
    x, to = convert_channels(x, channels, str(path))
    data = split_normalized(path.name, x, y, names, seed, normalize, str(path),
                            lambda mean, std: Preprocess(scale, mean, std, "as stored", resolution,
                                                         TORCH_RESIZE if resolution else None, to))
    return dataclasses.replace(data, notes=_orientation(arrays["x"], resolution) + _scale_notes(path, arrays["x"],
                                                                                              normalize))


def _splits_named(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with every split's images and labels paired: x and y beside x_test/y_test (Keras' (x, y),
    (x_test, y_test)) are the training pool, so the test images given are the ones measured, never re-split
    away; an x_val without its y_val, or x beside x_train, is refused rather than read some other way."""
    keys = arrays.keys()
    for split in ("", "_train", "_val", "_test"):
        if (f"x{split}" in keys) != (f"y{split}" in keys):
            has, lacks = (f"x{split}", f"y{split}") if f"x{split}" in keys else (f"y{split}", f"x{split}")
            raise DataError(f"{path}: has {has} but no {lacks}", f"store {lacks} beside {has}, or leave {has} out")
    if "x" in keys and "x_train" in keys:
        raise DataError(f"{path}: has both x and x_train, so which images train is unclear",
                        "keep x/y (split 70/10/20 by edgekd) or x_train/y_train with x_test/y_test, not both")
    if "x" in keys and "x_test" in keys:
        out = {k: v for k, v in arrays.items() if k not in ("x", "y")}
        return {**out, "x_train": arrays["x"], "y_train": arrays["y"]}
    if "x" in keys and "x_val" in keys:
        raise DataError(f"{path}: has x/y and x_val/y_val but no x_test/y_test",
                        "store the training images as x_train/y_train beside x_val/y_val and x_test/y_test")
    return arrays


def _test_only(path: Path, arrays: dict[str, np.ndarray], resolution: tuple[int, int] | None, normalize: Any,
               channels: int | None) -> Dataset:
    """A held-out test set (x_test, y_test and nothing to train on): every image is the test split, for
    validate and gate; the training stages refuse it."""
    scale = _scale(arrays["x_test"])
    x = _to_nchw(path, arrays["x_test"], resolution, "x_test")
    y = _labels(path, arrays["y_test"], len(x), "y_test")
    if not len(y):
        raise DataError(f"{path}: x_test holds no images", "store the test images and their labels")
    x, to = convert_channels(x, channels, str(path))
    x, mean, std = normalize_images(x, x, normalize, str(path))
    pre = Preprocess(scale, mean, std, "as stored", resolution, TORCH_RESIZE if resolution else None, to)
    none_x, none_y = x[:0], y[:0]
    return Dataset(path.name, none_x, none_y, none_x, none_y, x, y, _class_names(path, arrays, int(y.max())), pre,
                   _scale_notes(path, arrays["x_test"], normalize))


def _class_names(path: Path, arrays: dict[str, np.ndarray], highest: int) -> tuple[str, ...]:
    """The archive's own ``class_names`` (the label of each output, in label order, carried into the
    manifest and every .onnx file), or the label numbers."""
    names = arrays.get("class_names")
    if names is None:
        check_label_range(path, highest)
        return tuple(str(i) for i in range(highest + 1))
    fix = "store them in label order as a string array: np.savez(..., class_names=np.array(['cat', 'dog']))"
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(f"{path}: class_names is not a list of strings (shape {names.shape}, dtype {names.dtype})",
                        fix)
    decoded = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
    if len(set(decoded)) != len(decoded):
        raise DataError(f"{path}: class_names repeats a name", fix)
    if len(decoded) <= highest:
        raise DataError(f"{path}: class_names names {len(decoded)} classes, but the labels run to {highest}", fix)
    return decoded


# Stored pixel type -> the top value, which becomes 1 (as 8- and 16-bit image files are read); any other
# type is taken as stored.
_PIXEL_TOPS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _scale(x: np.ndarray) -> float:
    return 1 / _PIXEL_TOPS.get(x.dtype, 1.0)


def _scale_notes(path: Path, x: np.ndarray, normalize: Any) -> tuple[str, ...]:
    """A note when integer pixels of another type than uint8/uint16 (pandas' int64) are taken as stored while
    the normalisation asked for expects pixels in [0, 1] (none, or numbers such as ImageNet's); the data's own
    statistics, or those a model recorded on the same kind of data, fit them as they are."""
    if x.dtype.kind not in "iu" or x.dtype in _PIXEL_TOPS or not isinstance(normalize, str) or \
            normalize.strip().lower() == "dataset":
        return ()
    return (f"{path}: images stored as {x.dtype} are taken as they are (up to {int(x.max(initial=0))}), not scaled "
            "to [0, 1] as uint8 (/ 255) and uint16 (/ 65535) are; store them as uint8, or as floats in [0, 1]",)


def _orientation(stored: np.ndarray, resolution: tuple[int, int] | None) -> tuple[str, ...]:
    """The orientation warning for images stored as ``stored``, resized to ``resolution``."""
    view = _nchw_view(stored)
    return orientation_notes((int(view.shape[2]), int(view.shape[3])), resolution) if view.ndim == 4 else ()


def _nchw_view(x: np.ndarray) -> np.ndarray:
    """``x`` (N,C,H,W, N,H,W,C or N,H,W) viewed as N,C,H,W without copying; other ranks as they are.
    Channels last are told by their count: 1 to 4 (gray, gray + alpha, RGB, RGBA) where the second
    dimension is more than that (an image 4 pixels wide is no image)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] <= 4 < x.shape[1]:  # NHWC
        return x.transpose(0, 3, 1, 2)
    return x


def _to_nchw(path: Path, x: np.ndarray, resolution: tuple[int, int] | None, key: str = "x") -> np.ndarray:
    if x.dtype.kind not in "fiu":
        raise DataError(f"{path}: {key} has dtype {x.dtype}", "store images as numbers (uint8 or float)")
    view = _nchw_view(x)
    if view.ndim == 4:  # the whole array becomes float32 before anything else: checked at its stored size
        check_memory(path, len(view), int(view.shape[1]), (int(view.shape[2]), int(view.shape[3])), None, stored=True)
    x = _nchw_view(x.astype(np.float32) / _PIXEL_TOPS.get(x.dtype, 1.0))
    if x.ndim != 4:
        raise DataError(f"{path}: {key} has shape {x.shape}", "store images as (N, C, H, W) or (N, H, W)")
    if resolution:
        return _resize(x, resolution, path)
    check_image_size(path, (int(x.shape[2]), int(x.shape[3])))
    return np.ascontiguousarray(x)


def _check_images(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Each image array as stored (before a validation split is carved from it): not empty, and finite.
    One NaN or infinity makes the dataset's mean, and so every normalised pixel, NaN: the run would train
    and measure on nothing, reporting chance accuracy as if it meant something."""
    for key in ("x", "x_train", "x_val", "x_test"):
        x = arrays.get(key)
        if x is None or x.dtype.kind not in "fiu" or x.ndim < 1:
            continue  # refused with its dtype or shape when it is read
        if not len(x):
            raise DataError(f"{path}: {key} holds no images (shape {x.shape})", "store the images and their labels")
        if x.dtype.kind == "f":
            _check_finite(path, x, key)


def _check_finite(path: Path, x: np.ndarray, key: str) -> None:
    if np.isfinite(x).all():
        return
    nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    if nan or inf:
        what = " and ".join(f"{n:,} {kind}" for n, kind in ((nan, "NaN"), (inf, "infinite")) if n)
        raise DataError(f"{path}: {key} holds {what} value{'s' if nan + inf > 1 else ''} (of {x.size:,})",
                        "replace them (e.g. np.nan_to_num(x)) or drop those images, then save the .npz again")


_LABEL_KEYS = ("y", "y_train", "y_val", "y_test")


def _numbered_labels(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with labels as class numbers where they came as class names (strings, numbered in the
    order of ``class_names`` if given, else sorted, as class folders are) or as one-hot rows (Keras'
    ``to_categorical``). Every split is numbered together, so a name means one class throughout."""
    keys = [k for k in _LABEL_KEYS if k in arrays]
    named = [k for k in keys if arrays[k].dtype.kind in "US"]
    out = dict(arrays)
    if named:
        if len(named) != len(keys):
            numbers = next(k for k in keys if k not in named)
            raise DataError(f"{path}: {named[0]} holds class names but {numbers} holds numbers",
                            "store every split's labels the same way")
        texts = {k: _texts(arrays[k]) for k in keys}
        if "class_names" not in arrays and all(whole_numbers(np.unique(t)) for t in texts.values()):
            # "3" (numbers saved as text) means class 3: sorting them as names would put "10" before "2"
            return {**arrays, **{k: t.astype(np.float64).astype(np.int64) for k, t in texts.items()}}
        if "class_names" in arrays:
            names = _class_names(path, arrays, 0)
        else:
            names = tuple(sorted(set().union(*(np.unique(t).tolist() for t in texts.values()))))
        number = {name: i for i, name in enumerate(names)}
        for key, text in texts.items():
            if text.ndim != 1:
                continue  # refused with its shape when it is read
            seen, where = np.unique(text, return_inverse=True)
            unknown = [str(s) for s in seen if s not in number]
            if unknown:
                raise DataError(f"{path}: {key} has label '{unknown[0]}', which class_names does not list",
                                "list every class in class_names, or leave class_names out (names are then "
                                "numbered in sorted order)")
            out[key] = np.array([number[s] for s in seen], dtype=np.int64)[where.reshape(-1)]
        out["class_names"] = np.array(names, dtype=str)
        return out
    widths = {k: arrays[k].shape[1] for k in keys if arrays[k].ndim == 2 and arrays[k].shape[1] > 1}
    for key in widths:
        out[key] = _one_hot(path, key, arrays[key])
    if widths and len(set(widths.values())) == 1 and "class_names" not in arrays:
        # the columns are the classes: a last class no image has is a missing class, not one fewer output
        out["class_names"] = np.array([str(i) for i in range(next(iter(widths.values())))], dtype=str)
    return out


def whole_numbers(labels: Any) -> bool:
    """Every label a whole number written as text ("3", or "3.0" as pandas writes a column with gaps)."""
    import re

    return all(re.fullmatch(r"\s*\d+(\.0*)?\s*", str(v)) for v in labels)


def _texts(y: np.ndarray) -> np.ndarray:
    y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    return np.char.decode(y, "utf-8") if y.dtype.kind == "S" else y


def _one_hot(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    """The class numbers of one-hot rows; rows of probabilities (soft labels) or several classes each
    are refused by name rather than rounded to a class."""
    if y.dtype.kind not in "biuf":
        return y  # refused with its dtype when it is read
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{path}: {key} holds NaN or infinite values", "store one class number per image")
    binary = bool(((y == 0) | (y == 1)).all())
    counts = (y == 1).sum(axis=1) if binary else None
    if binary and (counts == 1).all():
        return y.argmax(axis=1).astype(np.int64)
    if binary:
        row = int(np.flatnonzero(counts != 1)[0])
        raise DataError(f"{path}: {key} row {row} marks {int(counts[row])} classes, not one "
                        f"(one-hot labels of {y.shape[1]} classes)",
                        "give each image exactly one class (multi-label data is not supported)")
    raise DataError(f"{path}: {key} holds soft labels (rows of class scores, shape {y.shape}), not one-hot rows "
                    "or class numbers", f"store each image's class: {key}.argmax(axis=1)")


def _labels(path: Path, y: np.ndarray, n: int, key: str = "y") -> np.ndarray:
    """Class labels as int64. What converts without loss is taken as it comes from numpy pipelines: a
    column of shape (N, 1), whole numbers stored as floats (a pandas column), booleans (0 and 1)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1 and y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.ndim == 1 and y.dtype.kind == "f" and len(y) == n:
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            raise DataError(f"{path}: {key} holds values that are not class numbers, e.g. {y[~whole][0].item()!r}",
                            "store integer class labels 0..K-1, one per image")
        y = y.astype(np.int64)
    if y.ndim != 1 or len(y) != n or y.dtype.kind not in "iu":
        raise DataError(
            f"{path}: {key} has shape {y.shape} and dtype {y.dtype} for {n} images",
            "store one label per image: a class number 0..K-1, a class name, or a one-hot row",
        )
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: {key} has negative labels", "use class labels 0..K-1")
    return y.astype(np.int64)


def with_class_order_note(data: Dataset, names: tuple[str, ...] | None) -> Dataset:
    """``data`` with a note when a model that numbers its classes (0..K-1, trained on numbered labels), or
    records no names at all, is scored on data that names its own: ``labels_for`` then takes the names in
    sorted order as the numbers, which is right only if the model was trained in that order, and a wrong
    order reads as a bad model."""
    numbered = tuple(str(i) for i in range(data.num_classes))
    if data.class_names == numbered or names and (names != tuple(str(i) for i in range(len(names))) or
                                                  data.class_names == names or whole_numbers(data.class_names)):
        return data  # matched by name, or by number (``_by_number``)
    shown = ", ".join(data.class_names[:4]) + (", ..." if data.num_classes > 4 else "")
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


def labels_for(data: Dataset, names: tuple[str, ...] | None) -> np.ndarray:
    """``data``'s test labels as indices of a model's outputs ``names``. Class folders are numbered in
    sorted order, so a test folder without one of the training classes would shift every later label:
    named classes are matched by name. Numbered classes (labels as stored) are taken as they are."""
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
    return DataError(f"data '{data.name}' has class '{name}', which the model does not predict (its classes: "
                     f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''})",
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


MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; a label past this is an id, not a class


def check_label_range(path: Any, highest: int) -> None:
    """Refuse a label too high to be a class number before one name per number up to it is made (an id
    column taken for the label would fill the memory before check_classes could say so)."""
    if highest >= MAX_CLASSES:
        raise DataError(f"{path}: has label {highest}, and labels are class numbers 0..K-1 (at most "
                        f"{MAX_CLASSES:,} classes)", "check the label column holds classes, not ids; number "
                        "the classes 0..K-1")


def check_classes(path: Any, y: np.ndarray, num_classes: int | None = None) -> None:
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"{path}: all labels belong to a single class", "provide images of at least two classes")
    # A label no training image has would still get an output of the model, and nothing would ever train it;
    # most often the labels start at 1.
    unused = sorted(set(range(num_classes or int(present[-1]) + 1)) - set(present.tolist()))
    if unused:
        fix = "subtract 1 from every label" if unused == [0] else "number the classes 0..K-1 with none left out"
        raise DataError(f"{path}: no training image has label {unused[0]}"
                        + (f" ({len(unused)} labels unused)" if len(unused) > 1 else "")
                        + f"; labels run 0..{num_classes - 1 if num_classes else int(present[-1])}", fix)


def _resize(x: np.ndarray, hw: tuple[int, int], source: Any) -> np.ndarray:
    if x.shape[-2:] == tuple(hw):
        return np.ascontiguousarray(x, dtype=np.float32)
    check_memory(source, len(x), int(x.shape[1]), hw, hw)
    import torch
    import torch.nn.functional as F

    out = F.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=tuple(hw), mode="bilinear",
                        align_corners=False)
    return out.numpy().astype(np.float32)


def holdout(x: np.ndarray, y: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    cut = max(1, int(round(len(y) * frac)))
    return x[order[cut:]], y[order[cut:]], x[order[:cut]], y[order[:cut]]


def split_normalized(name: str, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], seed: int, normalize: Any,
                     source: str, preprocess: Callable[[tuple[float, ...], tuple[float, ...]], Preprocess]) -> Dataset:
    """A stratified, seeded split, normalised with statistics of the training part alone ("dataset"):
    test images must not shape the preprocessing they are then scored through. ``preprocess(mean, std)``
    makes the record of it."""
    sel = split_indices(name, y, seed)
    x, mean, std = normalize_images(x, x[sel["train"]], normalize, source)
    return Dataset(name, x[sel["train"]], y[sel["train"]], x[sel["val"]], y[sel["val"]],
                   x[sel["test"]], y[sel["test"]], classes, preprocess(mean, std))


def split_indices(name: str, y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The stratified, seeded split as sorted indices per part ("train", "val", "test").

    Each class is split on its own, its share of each part rounded. Where that leaves a part empty (many
    classes of a few images each: 5 images round to no validation image), the parts' sizes are set for the
    whole data instead and handed to the classes with the largest remainders, so small classes still
    contribute; data that splits the plain way keeps that split."""
    labels = np.unique(y)
    members = [np.flatnonzero(y == label) for label in labels]
    counts = np.array([[round(len(m) * SPLIT[2]), round(len(m) * SPLIT[1])] for m in members], dtype=np.int64)
    if counts.sum(axis=0).min() == 0:
        counts = _largest_remainders(np.array([len(m) for m in members]), np.random.default_rng([seed, 1]))
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for idx, (n_test, n_val) in zip(members, counts.tolist()):
        idx = rng.permutation(idx)
        parts["test"] += idx[:n_test].tolist()
        parts["val"] += idx[n_test:n_test + n_val].tolist()
        parts["train"] += idx[n_test + n_val:].tolist()
    if min(len(v) for v in parts.values()) == 0:
        raise DataError(f"{name}: {len(y)} images are too few to split into train/val/test (a class's last "
                        "image trains, and validation and test need one each)",
                        "provide more images, or the splits yourself (x_train/y_train/x_test/y_test in a .npz, "
                        "or train/ and val/ folders)")
    return {k: np.sort(np.array(v, dtype=np.int64)) for k, v in parts.items()}


def _largest_remainders(sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per class (test, val) counts whose totals are the data's own shares of test and validation images,
    each class getting the whole part of its share and the largest fractions the rest (ties in a seeded
    order), never its last image, which trains."""
    counts = np.zeros((len(sizes), 2), dtype=np.int64)
    order = rng.permutation(len(sizes))
    for col, share in ((0, SPLIT[2]), (1, SPLIT[1])):
        want = max(1, round(int(sizes.sum()) * share))
        exact = sizes * share
        room = sizes - 1 - counts.sum(axis=1)
        counts[:, col] = np.minimum(np.floor(exact).astype(np.int64), np.maximum(room, 0))
        # largest fraction first; a stable sort keeps the seeded order among equal fractions
        for i in order[np.argsort(-(exact - np.floor(exact))[order], kind="stable")]:
            if counts[:, col].sum() >= want:
                break
            if counts[i].sum() < sizes[i] - 1:
                counts[i, col] += 1
    return counts
