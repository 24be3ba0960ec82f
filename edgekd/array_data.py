"""Arrays as a dataset: a ``.npz`` archive's or a caller's, checked (pixels, layout, labels, names) and split;
what the archive holds decides the split (one ``x``/``y``, or given train and test splits)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import (
    TORCH_RESIZE,
    Dataset,
    _resize,
    check_classes,
    check_label_range,
    holdout,
    nfc,
    order_digest,
    split_normalized,
    whole_numbers,
)
from edgekd.errors import DataError
from edgekd.preprocess import (
    Preprocess,
    apply_normalization,
    check_image_size,
    check_memory,
    convert_channels,
    normalization,
    normalize_images,
    orientation_notes,
)

KEYS = ("x", "y", "x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "class_names")  # what is read


def from_arrays(path: Path, arrays: dict[str, np.ndarray], resolution: tuple[int, int] | None, seed: int,
                normalize: Any, channels: int | None) -> Dataset:
    """The dataset in ``arrays`` (an archive's, or a caller's); ``path`` names them in errors and records."""
    unread = _unread(path, arrays)
    data = _from_arrays(path, arrays, resolution, seed, normalize, channels)
    return dataclasses.replace(data, notes=(*data.notes, *unread)) if unread else data


def _unread(path: Path, arrays: dict[str, np.ndarray]) -> tuple[str, ...]:
    """Arrays under names edgekd does not read: images or labels by their name (x_valid, y_extra, X) are
    refused, since left out unsaid a split given under another spelling would be dropped and validation carved
    from the training images instead; anything else (ids, file names) is said to be left out."""
    other = sorted(k for k in arrays if k not in KEYS)
    if not other:
        return ()
    accepted = "x/y, x_train/y_train, x_val/y_val, x_test/y_test and class_names"
    split_like = [k for k in other if k.lower() in ("x", "y") or k.lower().startswith(("x_", "y_"))]
    if split_like:
        raise DataError(f"{path}: has arrays {', '.join(split_like)}, which edgekd does not read (it reads "
                        f"{accepted})", "store a validation split as x_val/y_val (not x_valid/y_valid), and remove "
                        "or rename the others")
    return (f"{path}: arrays {', '.join(other)} were not read (edgekd reads {accepted})",)


def _from_arrays(path: Path, arrays: dict[str, np.ndarray], resolution: tuple[int, int] | None, seed: int,
                 normalize: Any, channels: int | None) -> Dataset:
    _check_images(path, arrays)
    arrays = _splits_named(path, arrays)
    named = any(arrays[k].dtype.kind in "US" for k in _LABEL_KEYS if k in arrays)
    arrays = _numbered_labels(path, arrays)
    named = named and "class_names" in arrays  # not numbers written as text ("3"), which stay numbers
    if {"x_test", "y_test"} <= arrays.keys() and not {"x", "x_train"} & arrays.keys():
        return _test_only(path, arrays, resolution, normalize, channels)
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        parts = {k: arrays[k] for k in arrays if k.startswith(("x_", "y_"))}
        if "x_val" not in parts:  # carve validation from train, deterministic, by class: labels checked first
            given = parts["x_train"]
            y_train = _labels(path, parts["y_train"], len(given) if given.ndim else 0, "y_train")
            xt, yt, xv, yv = holdout(given, y_train, 0.125, seed, path)
            parts.update(x_train=xt, y_train=yt, x_val=xv, y_val=yv)
        scale = _scale(parts["x_train"])
        xs = {k: _to_nchw(path, parts[f"x_{k}"], resolution, f"x_{k}", channels) for k in ("train", "val", "test")}
        shapes = {k: v.shape[1:] for k, v in xs.items()}
        if len(set(shapes.values())) > 1:
            raise DataError(f"{path}: the splits' images differ in shape ({shapes})",
                            "store every split at one shape, or pass --resolution to resize them")
        ys = {k: _labels(path, parts[f"y_{k}"], len(xs[k]), f"y_{k}") for k in ("train", "val", "test")}
        names = _class_names(path, arrays, int(max(y.max() for y in ys.values())))
        if named:
            _check_named_classes(path, ys, names)
        check_classes(path, ys["train"], len(names))
        converted = {k: convert_channels(v, channels, str(path)) for k, v in xs.items()}
        xs, to = {k: v[0] for k, v in converted.items()}, converted["train"][1]
        # the statistics first: each split (edgekd's own copy) is then normalised in place
        mean, std = normalization(xs["train"], normalize, xs["train"].shape[1], str(path))
        norm = {k: apply_normalization(v, mean, std, in_place=True) for k, v in xs.items()}
        pre = Preprocess(scale, mean, std, "as stored", resolution, TORCH_RESIZE if resolution else None, to)
        return Dataset(
            path.name, norm["train"], ys["train"], norm["val"], ys["val"], norm["test"], ys["test"],
            names, pre, _orientation(parts["x_train"], resolution) + _scale_notes(path, parts["x_train"], normalize),
        )
    if not {"x", "y"} <= arrays.keys():
        raise DataError(
            f"{path}: has arrays {sorted(arrays)}, not 'x' and 'y'",
            "save images as x (N,C,H,W or N,H,W) and labels as y (N,), or x_train/y_train/x_test/y_test, or "
            "x_test/y_test alone (a test set for validate and gate)",
        )
    scale = _scale(arrays["x"])
    x = _to_nchw(path, arrays["x"], resolution, channels=channels)
    y = _labels(path, arrays["y"], len(x))
    names = _class_names(path, arrays, int(y.max()) if len(y) else 0)
    if named:
        _check_named_classes(path, {"train": y}, names)
    check_classes(path, y, len(names))
    x, to = convert_channels(x, channels, str(path))
    data = split_normalized(path.name, x, y, names, seed, normalize, str(path),
                            lambda mean, std: Preprocess(scale, mean, std, "as stored", resolution,
                                                         TORCH_RESIZE if resolution else None, to),
                            order_digest(y))  # the labels' order: the images have no names to tell theirs by
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
    x = _to_nchw(path, arrays["x_test"], resolution, "x_test", channels)
    y = _labels(path, arrays["y_test"], len(x), "y_test")
    if not len(y):
        raise DataError(f"{path}: x_test holds no images", "store the test images and their labels")
    x, to = convert_channels(x, channels, str(path))
    x, mean, std = normalize_images(x, x, normalize, str(path), in_place=True)  # _to_nchw's own copy
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
    decoded = tuple(nfc(n.decode() if isinstance(n, bytes) else str(n)) for n in names.tolist())
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


def _to_nchw(path: Path, x: np.ndarray, resolution: tuple[int, int] | None, key: str = "x",
             channels: int | None = None) -> np.ndarray:
    """``x`` as float32 NCHW, resized to ``resolution``; ``channels`` (--channels) is what it is converted to
    next, which the memory it needs counts."""
    if x.dtype.kind not in "fiu":
        raise DataError(f"{path}: {key} has dtype {x.dtype}", "store images as numbers (uint8 or float)")
    view = _nchw_view(x)
    if view.ndim == 4:  # the whole array becomes float32 before anything else: checked at its stored size
        check_memory(path, len(view), int(view.shape[1]), (int(view.shape[2]), int(view.shape[3])), None, stored=True,
                     to_channels=channels)
    # one float32 copy, already NCHW and contiguous, scaled in place: astype, the division and the layout
    # each made a full-size copy before (three times the float32 images, beside the stored ones)
    tops = _PIXEL_TOPS.get(x.dtype, 1.0)
    x = _nchw_view(x).astype(np.float32, order="C")
    if tops != 1.0:
        x /= np.float32(tops)
    if x.ndim != 4:
        raise DataError(f"{path}: {key} has shape {x.shape}", "store images as (N, C, H, W) or (N, H, W)")
    if resolution:
        return _resize(x, resolution, path, channels)
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
    what = nonfinite(x)
    if what:
        raise DataError(f"{path}: {key} holds {what}",
                        "replace them (e.g. np.nan_to_num(x)) or drop those images, then save the .npz again")


def nonfinite(x: np.ndarray) -> str:
    """"" for a finite array (or one of integers), else how many of its values are NaN and infinite, e.g.
    "2 NaN and 1 infinite values (of 768)"."""
    if x.dtype.kind not in "fc" or np.isfinite(x).all():
        return ""
    nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    what = " and ".join(f"{n:,} {kind}" for n, kind in ((nan, "NaN"), (inf, "infinite")) if n)
    return f"{what} value{'s' if nan + inf > 1 else ''} (of {x.size:,})"


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


def _check_named_classes(path: Path, ys: dict[str, np.ndarray], names: tuple[str, ...]) -> None:
    """With labels given as class names, a class no training image has is named by its name and where its
    images are: check_classes would say "label 3", the sorted number the user never saw, and tell them to
    number the classes 0..K-1, which is not what is wrong."""
    present = set(np.unique(ys["train"]).tolist())
    missing = [i for i in range(len(names)) if i not in present]
    if not missing:
        return
    name, more = names[missing[0]], f" ({len(missing)} classes have none)" if len(missing) > 1 else ""
    where = [f"y_{split}" for split in ("val", "test") if split in ys and np.any(ys[split] == missing[0])]
    if where:
        given = " and ".join(where)
        raise DataError(f"{path}: no training image has class '{name}' (it appears only in {given}){more}",
                        f"add training images of '{name}', or drop its images from {given}")
    images = "training image" if len(ys) > 1 else "image"
    raise DataError(f"{path}: class_names lists '{name}', which no {images} has{more}",
                    f"add {images}s of '{name}', or drop it from class_names")


def _texts(y: np.ndarray) -> np.ndarray:
    """Label names as text, composed as ``class_names`` are (``nfc``)."""
    y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    y = np.char.decode(y, "utf-8") if y.dtype.kind == "S" else y
    return np.vectorize(nfc, otypes=[str])(y) if y.size else y


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
