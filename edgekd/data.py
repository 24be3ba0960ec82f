"""One loader interface over three sources: embedded digits, a ``.npz`` file, an image folder.

Everything becomes float32 NCHW arrays with a deterministic train/val/test split, so later
stages never care where the data came from. How raw pixels became those arrays (scale, mean, std,
resize) is kept as a ``Preprocess`` and recorded in the manifest: the shipped model expects exactly
that input, and a deployment pipeline has to reproduce it.
"""

from __future__ import annotations

import functools
import os
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
    apply_normalization,
    check_channels,
    check_image_size,
    check_memory,
    convert_channels,
    describe_preprocess,
    normalization,
    normalize_images,
    orientation_notes,
    parse_normalize,
    parse_resolution,
    recorded_channels,
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
    missing: str = "is not here"  # why ``source`` is None, said after the data's name


def with_notes(detail: str, data: Dataset) -> str:
    """A check's one-line ``detail`` followed by the loading's warnings (an orientation flip): validate and
    gate load data with a --resolution of their own, and a turned image fails accuracy with no other clue."""
    return detail + "".join(f"; warning: {note}" for note in data.notes)


def recorded_data(manifest: dict[str, Any]) -> RecordedData:
    """The run's own data (its recipe's --data and --resolution) while it is still where it was, unchanged, or
    digits. Found where compress read it (``data.source``, its resolved path), never from the folder gate or
    validate runs in: a copied folder checked from elsewhere would score on whatever file has the same name."""
    info, recipe = manifest.get("data") or {}, manifest.get("recipe") or {}
    own, shape, seed = recipe.get("data"), info.get("input_shape") or [], int(recipe.get("seed") or 0)
    if own and own != "digits":
        path, missing = _recorded_source(info.get("source"), own)
        return RecordedData(path, path or _recorded_path(info.get("source")) or own, recipe.get("resolution"), seed,
                            missing or "is not here")
    if own == "digits" or info.get("name") == "digits":
        return RecordedData("digits", "digits", resolution_value(shape[-2:]) if shape
                            else recipe.get("resolution"), seed)
    return RecordedData(None, info.get("name", "?"), None, seed)


def _recorded_path(source: Any) -> str | None:
    path = source.get("path") if isinstance(source, dict) else None
    return path if isinstance(path, str) and path else None


def _recorded_source(source: Any, typed: str) -> tuple[str | None, str]:
    """The recorded data's path while it is there and unchanged, else None and why. A manifest from before the
    resolved path was recorded has only the path as typed: an absolute one is taken, a relative one named the
    folder compress ran in, which the manifest does not say."""
    where = _recorded_path(source) or (typed if Path(typed).expanduser().is_absolute() else None)
    if where is None:
        return None, "was recorded relative to the folder compress ran in, which the manifest does not say"
    path = Path(where).expanduser()
    if not path.exists():
        return None, "is not here"
    digest = source.get("sha256") if isinstance(source, dict) else None
    if isinstance(digest, str) and not _same_data(path, digest, source.get("sha256_of")):
        return None, ("has changed since the run (its sha256 is not the one recorded), so the recorded accuracies "
                      "do not apply to it")
    return str(path), ""


def _same_data(path: Path, digest: str, of: Any) -> bool:
    """Whether ``path`` is the data a manifest recorded by ``digest``: a digest of every file walked (``of``
    WALKED, manifests before LISTED) matches as made, or as the listing makes it, which is the same where the
    folder held images alone (a .DS_Store Finder added since is not a change of the data)."""
    return data_digest(path) == digest or (of == WALKED and data_digest(path, legacy=True) == digest)


def data_source(source: Any) -> dict[str, Any] | None:
    """Where the run's --data was read, resolved (gate and validate --manifest may run from another folder), with
    a digest that tells a different file of the same name; None for digits or data passed in memory."""
    if not isinstance(source, (str, os.PathLike)) or str(source) == "digits":
        return None
    path = Path(source).expanduser().resolve()
    if not path.exists():
        return None
    return {"path": str(path), "sha256": data_digest(path), "sha256_of": LISTED if path.is_dir() else "the file"}


# What a folder's digest covers, as a manifest records it. Manifests before "LISTED" hashed every file os.walk
# found (a .DS_Store too, and nothing under a linked class folder); such a digest is still checked as it was made.
WALKED = "the file names and sizes"
LISTED = "the image files' names and sizes"


def data_digest(path: Path, legacy: bool = False) -> str:
    """The sha256 of a data file's bytes; of a folder, of the names and sizes of the image files its loader reads
    (through linked class folders; not a .DS_Store or notes.txt it skips): decoding every image again to hash it
    would double the cost of loading a large folder, and a different data set differs in those. ``legacy``: a
    folder's digest as manifests recording ``sha256_of`` WALKED made it."""
    import hashlib

    if not path.is_dir():
        st = path.stat()
        return _file_digest(str(path.resolve()), st.st_mtime_ns, st.st_size)
    digest = hashlib.sha256()
    for name, size in _walked(path) if legacy else _listed(path):
        digest.update(f"{name}\0{size}\n".encode(errors="surrogateescape"))  # a name not UTF-8: its own bytes
    return digest.hexdigest()


def _listed(path: Path) -> list[tuple[str, int]]:
    """(name inside ``path``, size) of each image the folder loader reads; a folder it cannot read (changed
    since) is hashed as walked, which a digest of the listed files does not match."""
    from edgekd.images import image_files  # builds on this module

    try:
        files = image_files(path)
    except DataError:
        return [("(unreadable as data)", -1), *_walked(path)]
    return [(f.relative_to(path).as_posix(), f.stat().st_size if f.exists() else -1) for f in files]


def _walked(path: Path) -> list[tuple[str, int]]:
    found = []
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = Path(folder, name)
            size = file.stat().st_size if file.exists() else -1  # a broken link counts as one
            found.append((file.relative_to(path).as_posix(), size))
    return found


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    """Keyed by the file's time and size too: gate asks once per check, and a large .npz is read once."""
    from edgekd.fsutil import sha256

    return sha256(path)


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
    seeded_split: bool = False  # the seed dealt its test split (rather than the data giving one)
    # The seed that dealt that split (None: unknown, or the data gave its splits). A model records this one, not
    # the run's --seed: a Dataset passed in was split before the run, and re-splitting it with another seed
    # would score the model partly on its training images.
    split_seed: int | None = None
    # Which image sat where when the seed dealt the split (``order_digest``; None: not known): the split deals by
    # position, so the same images listed in another order (a CSV's rows shuffled) are dealt another split.
    split_order: str | None = None

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
        shown = seed if isinstance(seed, numbers.Integral) else repr(seed)  # '1', a string, not the number 1
        raise ConfigError(f"seed {shown} is not a whole number from 0 to {MAX_SEED}",
                          "pass e.g. --seed 0 (seed = 0 in a settings file)")


def load_data(source: str | Mapping[str, Any] | tuple[Any, Any] | None = None, *, resolution: Any = None, seed: int = 0,
              normalize: Any = None, channels: int | None = None,
              log: Callable[[str], None] | None = None) -> Dataset:
    """Load ``source``: ``None``/``"digits"`` (embedded), a ``.npz`` file, an image folder, a ``.csv`` file
    listing images and labels (``edgekd.image_list``), or arrays already in memory, ``(x, y)`` or a mapping
    with a ``.npz`` file's keys (``load_arrays``).

    ``resolution`` resizes images: one side (square) or height and width ("240x320", (240, 320));
    digits default: 32. ``normalize``: "dataset"
    (default: standardise with the data's own mean and std), "none" (scaled pixels as they are), a
    "MEAN/STD" string or a recorded ``Preprocess`` (the same numbers a model was trained with).
    ``channels`` 3 repeats grayscale images to RGB, 1 turns RGB into luminance (default: as stored, or
    as a recorded ``Preprocess`` converted them). ``log`` (an image folder's or a .csv list's): where
    decoding that takes more than a few seconds says how far it is, a line at most every half minute.
    """
    parse_normalize(normalize)  # a malformed spec is refused before any data is read
    check_seed(seed)
    hw = parse_resolution(resolution)
    if channels is None and isinstance(normalize, Preprocess):
        channels = recorded_channels(normalize)
    if isinstance(channels, str) and channels.strip() in ("1", "3"):  # as CompressConfig and the CLI take it
        channels = int(channels)
    check_channels(channels)  # before any data is read
    if isinstance(source, list) and len(source) == 2:  # [x, y], as readily written as (x, y)
        source = tuple(source)
    if isinstance(source, (tuple, Mapping)):
        return load_arrays(source, resolution=hw, seed=seed, normalize=normalize, channels=channels)
    if not (source is None or isinstance(source, (str, os.PathLike))):
        raise DataError(f"data of type {type(source).__name__} is neither a path nor arrays edgekd reads",
                        "pass a path, 'digits', (x, y) arrays, or a mapping with a .npz file's keys (x_train, "
                        "y_train, ...)")
    if source is None or source == "digits":
        return load_digits(resolution=hw or 32, seed=seed, normalize=normalize, channels=channels)
    check_data_source(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data '{source}' does not exist", "pass a .npz file, an image folder, or 'digits'")
    if path.is_dir():
        from edgekd.images import load_image_folder  # here: it builds on this module

        if path.name in ("", ".."):  # --data . names no folder: the data is named by the folder it is
            path = path.resolve()
        return load_image_folder(path, resolution=hw, seed=seed, normalize=normalize, channels=channels, log=log)
    if path.suffix.lower() == ".npz":
        return load_npz(path, resolution=hw, seed=seed, normalize=normalize, channels=channels)
    if path.suffix.lower() in (".csv", ".tsv"):
        from edgekd.image_list import load_image_list  # builds on this module too

        return load_image_list(path, resolution=hw, seed=seed, normalize=normalize, channels=channels, log=log)
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
    x = _resize(x, hw, "digits", channels)
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
    from edgekd.array_data import from_arrays

    return from_arrays(path, arrays, resolution, seed, normalize, channels)


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
        taken[str(key)] = np.asarray(_numpy_readable(value))
        if taken[str(key)].dtype == object and all(isinstance(v, str) for v in taken[str(key)].flat):
            taken[str(key)] = taken[str(key)].astype(str)  # a pandas column of names arrives as objects
        if taken[str(key)].dtype == object:
            raise DataError(f"data arrays: '{key}' holds Python objects", "pass numbers (and names as strings)")
    from edgekd.array_data import from_arrays

    return from_arrays(Path("arrays"), taken, parse_resolution(resolution), seed, normalize, channels)


def _numpy_readable(value: Any) -> Any:
    """A tensor as numpy can read it: on the CPU, and a float dtype numpy has no counterpart for (bfloat16,
    float8) as float32, which numpy refused with a raw TypeError; anything else as it is."""
    if not hasattr(value, "detach"):
        return value
    import torch  # imported already: ``value`` is a tensor

    value = value.detach().cpu()
    if value.is_floating_point() and value.dtype not in (torch.float16, torch.float32, torch.float64):
        value = value.float()
    return value


def nfc(name: str) -> str:
    """A class name in Unicode's composed form (NFC): macOS names folders decomposed (NFD: "e" and an accent),
    Linux and Windows keep what was typed (composed, mostly), and a class is one name whichever system named it."""
    import unicodedata

    return unicodedata.normalize("NFC", name)


def whole_numbers(labels: Any) -> bool:
    """Every label a whole number written as text ("3", or "3.0" as pandas writes a column with gaps)."""
    import re

    return all(re.fullmatch(r"\s*\d+(\.0*)?\s*", str(v)) for v in labels)



MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; a label past this is an id, not a class


def check_label_range(path: Any, highest: int) -> None:
    """Refuse a label too high to be a class number before one name per number up to it is made (an id
    column taken for the label would fill the memory before check_classes could say so)."""
    if highest >= MAX_CLASSES:
        raise DataError(f"{path}: has label {highest}, and labels are class numbers 0..K-1 (at most "
                        f"{MAX_CLASSES:,} classes)", "check the label column holds classes, not ids; number "
                        "the classes 0..K-1")


# Placeholder labels (--no-labels) still set the class count, the student's outputs, and deal the split, so one
# label on every image cannot stand in: what they must be is said where they are refused.
NO_LABELS_FIX = ("with --no-labels too: the labels still number the classes, one per teacher output, and deal the "
                 "split; label each image with the class the teacher predicts for it")


def check_classes(path: Any, y: np.ndarray, num_classes: int | None = None) -> None:
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"{path}: all labels belong to a single class", "provide images of at least two classes"
                        f" ({NO_LABELS_FIX})")
    # A label no training image has would still get an output of the model, and nothing would ever train it;
    # most often the labels start at 1.
    unused = sorted(set(range(num_classes or int(present[-1]) + 1)) - set(present.tolist()))
    if unused:
        fix = "subtract 1 from every label" if unused == [0] else "number the classes 0..K-1 with none left out"
        raise DataError(f"{path}: no training image has label {unused[0]}"
                        + (f" ({len(unused)} labels unused)" if len(unused) > 1 else "")
                        + f"; labels run 0..{num_classes - 1 if num_classes else int(present[-1])}", fix)


def _resize(x: np.ndarray, hw: tuple[int, int], source: Any, channels: int | None = None) -> np.ndarray:
    """``x`` resized to ``hw``; ``channels`` (--channels) is what it becomes next, which the memory counts."""
    if x.shape[-2:] == tuple(hw):
        return np.ascontiguousarray(x, dtype=np.float32)
    check_memory(source, len(x), int(x.shape[1]), hw, hw, to_channels=channels)
    import torch
    import torch.nn.functional as F

    out = F.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=tuple(hw), mode="bilinear",
                        align_corners=False)
    return out.numpy().astype(np.float32, copy=False)  # float32 already: no second copy


def holdout(x: np.ndarray, y: np.ndarray, frac: float, seed: int, name: Any = "data") -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val): about ``frac`` of a given training split held out for validation,
    class by class as ``split_indices`` splits, so a rare class is never carried off whole: each class keeps
    at least one training image (nothing would train its output otherwise). ``name`` names the data in errors."""
    rng = np.random.default_rng(seed)
    members = [rng.permutation(np.flatnonzero(y == label)) for label in np.unique(y)]
    sizes = np.array([len(m) for m in members])
    counts = np.minimum(np.round(sizes * frac).astype(np.int64), sizes - 1)
    if not counts.sum():  # classes too small to round to a validation image: the largest fractions give one
        counts = _holdout_remainders(sizes, frac, rng)
    if not counts.sum():
        raise DataError(f"{name}: its {len(y)} training images are one per class, so none can be held out for "
                        "validation (a class's last image trains)",
                        "provide more training images, or a validation split (a val/ folder, x_val/y_val, or val "
                        "rows in a split column)")
    val = np.sort(np.concatenate([m[:n] for m, n in zip(members, counts.tolist())]))
    train = np.sort(np.concatenate([m[n:] for m, n in zip(members, counts.tolist())]))
    return x[train], y[train], x[val], y[val]


def _holdout_remainders(sizes: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """Per class validation counts totalling the data's own share (at least one), handed one each to the
    classes with the largest fractions (ties in a seeded order), never a class's last image."""
    want = max(1, round(int(sizes.sum()) * frac))
    exact = sizes * frac
    order = rng.permutation(len(sizes))
    counts = np.zeros(len(sizes), dtype=np.int64)
    for i in order[np.argsort(-(exact - np.floor(exact))[order], kind="stable")]:
        if counts.sum() >= want:
            break
        counts[i] = 1 if sizes[i] > 1 else 0
    return counts


def split_normalized(name: str, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], seed: int, normalize: Any,
                     source: str, preprocess: Callable[[tuple[float, ...], tuple[float, ...]], Preprocess],
                     listed: str | None = None) -> Dataset:
    """A stratified, seeded split, normalised with statistics of the training part alone ("dataset"): test images must
    not shape the preprocessing they are then scored through. ``preprocess(mean, std)`` makes the record of it;
    ``listed``: which image is where in ``x`` (``order_digest``). ``x`` is edgekd's own float32 array (every loader
    makes one; never a caller's), taken over: reordered and normalised in place, its splits returned as slices of
    it. Cutting them as copies, from an array kept beside them, held the images about four times over at once."""
    sel = split_indices(source, y, seed)  # errors name the data as given (ds/one), not its folder's name
    order = np.concatenate([sel["train"], sel["val"], sel["test"]])
    x = x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(x, dtype=np.float32)
    _permute_rows(x, order)
    n_train, n_val = len(sel["train"]), len(sel["val"])
    parts = x[:n_train], x[n_train:n_train + n_val], x[n_train + n_val:]
    # the training slice holds exactly what x[sel["train"]] did, so numpy's statistics are the same to the bit
    mean, std = normalization(parts[0], normalize, x.shape[1], source)
    apply_normalization(x, mean, std, in_place=True)
    return Dataset(name, parts[0], y[sel["train"]], parts[1], y[sel["val"]],
                   parts[2], y[sel["test"]], classes, preprocess(mean, std), seeded_split=True,
                   split_seed=int(seed), split_order=listed)


def _permute_rows(x: np.ndarray, order: np.ndarray) -> None:
    """``x[:] = x[order]`` in place, one row at a time along each cycle of the permutation (one row's copy
    held, not the whole array's)."""
    done = np.zeros(len(order), dtype=bool)
    for start in np.flatnonzero(order != np.arange(len(order))).tolist():
        if done[start]:
            continue
        held, i = x[start].copy(), start
        while True:
            done[i] = True
            nxt = int(order[i])
            if nxt == start:
                x[i] = held
                break
            x[i] = x[nxt]
            i = nxt


def split_fingerprint(data: Dataset) -> dict[str, Any] | None:
    """What a seeded split was dealt from, or None for data that gives its own test split: the images of each
    class, in which one image added or removed re-deals the whole split (the same seed then puts images the
    model trained on into the test split); and, where the loader knows it, the order they were listed in
    (``order``), in which the same images reordered are dealt another split too. Files replaced in place keep
    it."""
    if not data.seeded_split:
        return None
    import hashlib
    import json

    counts = sum(np.bincount(y, minlength=data.num_classes) for y in (data.y_train, data.y_val, data.y_test))
    digest = hashlib.sha256(json.dumps([list(data.class_names), counts.tolist()]).encode()).hexdigest()[:16]
    return {"images": int(counts.sum()), "digest": digest,
            **({"order": data.split_order} if data.split_order else {})}


def order_digest(items: Any) -> str:
    """A short digest of ``items`` (each image's name as listed, or a label array) in their order."""
    import hashlib

    digest = hashlib.sha256()
    if isinstance(items, np.ndarray):
        digest.update(np.ascontiguousarray(items, dtype=np.int64).tobytes())
    else:
        for item in items:
            # surrogateescape: a file name that is not UTF-8 (from a Windows zip) is hashed as its own bytes
            digest.update(f"{item}\n".encode(errors="surrogateescape"))
    return digest.hexdigest()[:16]


def same_split(then: Any, now: Any) -> bool:
    """Whether two ``split_fingerprint`` records deal one split: the same images per class and, where both record
    it (records before it did not), the same order."""
    if not isinstance(then, dict) or not isinstance(now, dict):
        return then == now
    return then.get("digest") == now.get("digest") and (
        then.get("order") is None or now.get("order") is None or then["order"] == now["order"])


def split_seed_of(data: Any) -> int | None:
    """The seed that dealt ``data``'s split, or None where it is unknown (a Dataset built by hand, or data that
    gives its own splits): recording none beats recording a seed that deals another split."""
    seed = getattr(data, "split_seed", None)
    return int(seed) if seed is not None and getattr(data, "seeded_split", False) else None


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


_MATCHING = ("labels_for", "with_class_order_note", "with_scale_note")  # in data_match since the split


def __getattr__(name: str) -> Any:
    """The names that moved to ``data_match``, still importable from here (that module builds on this one)."""
    if name in _MATCHING:
        from edgekd import data_match

        return getattr(data_match, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
