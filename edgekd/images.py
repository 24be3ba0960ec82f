"""Image folders: one sub-folder per class, or torchvision's split layout (``train/``, ``val/`` and
``test/``, each with one sub-folder per class), whose splits are kept as given; ``test/`` alone is a
held-out test set, measured whole by validate and gate. Or a CSV file listing the images with their labels
(and, optionally, their split), as Kaggle-style datasets come."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import (
    Dataset,
    check_classes,
    check_label_range,
    holdout,
    nfc,
    order_digest,
    split_normalized,
    whole_numbers,
)
from edgekd.errors import DataError
from edgekd.heartbeat import Heartbeat
from edgekd.preprocess import (
    MAX_SIDE,
    PIL_BICUBIC,
    PIL_BICUBIC_16,
    Preprocess,
    check_image_size,
    check_memory,
    convert_channels,
    normalize_images,
    orientation_notes,
    parse_resolution,
)
from edgekd.textfmt import one_line

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".tif", ".tiff", ".webp"}  # .jfif: a JPEG
IMAGE_KINDS = ".png/.jpg/.bmp/.tif/.webp"
WIDE_GRAY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # 16-bit grayscale, as Pillow opens it
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}  # read case-insensitively (Kaggle's Training/, Testing/)
HIDDEN_FOLDERS = {"__macosx"}  # what macOS's zip adds beside the data: resource forks, no images
# Files an OS adds to any folder it shows (Windows' thumbnail caches and folder settings, macOS's custom-icon
# file), read case-insensitively: skipped unsaid, as a .DS_Store is; counted as data not read, a warning on
# every run told the user to convert them.
OS_LITTER = {"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"}
VAL_SHARE = 0.125  # of the training images, when no val/ folder is given (as for a .npz's given splits)
QUIET_S = 5.0  # reading images says nothing before this: a small folder, read in seconds, adds no line
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class ImagesRead:
    """What ``read_images`` says of the images it read: their mode ("L" or "RGB"), the pixel scale, the
    (height, width) they were resized to, the (height, width) most of them are stored at (what a --resolution
    turning them is told of), and warnings about the reading for the run to show."""

    mode: str
    scale: float
    side: tuple[int, int]
    stored: tuple[int, int]
    notes: tuple[str, ...] = ()


def load_image_folder(path: Path, resolution: Any = None, seed: int = 0, normalize: Any = None,
                      channels: int | None = None, log: Log | None = None) -> Dataset:
    """Grayscale unless any image has colour; every image resized to ``resolution`` (one side, or height
    and width; default: the first image's height and width, so its aspect ratio is kept). A split layout
    keeps its splits; class folders alone are split 70/10/20. ``log``: where a long read says how far it is
    (``read_images``)."""
    resolution = parse_resolution(resolution)
    folders = _visible_dirs(path)
    splits = _split_layout(path, folders)
    if splits is None:
        classes = _class_order(path)
        files, repeats = _distinct(path, _class_files(path, classes, path), classes)
        x, read = read_images(path, [f for f, _ in files], resolution, channels, log=log)
        y = np.array([label for _, label in files], dtype=np.int64)
        data = split_whole(path, x, y, classes, read, resolution, seed, normalize, channels,
                           order_digest(f"{classes[label]}/{f.name}" for f, label in files))
        data = dataclasses.replace(data, notes=(*data.notes, *repeats))
    else:
        data = _load_splits(path, splits, resolution, seed, normalize, channels, log)
    roots = list(splits.values()) if splits else [path]
    loose = _loose_note(path, [path, *roots] if splits else roots)
    return dataclasses.replace(data, notes=(*data.notes, *loose, *_unread_note(path, roots)))


def image_files(path: Path) -> list[Path]:
    """The image files ``load_image_folder`` reads from the folder ``path``, as it finds them (through linked
    class folders, skipping hidden and non-image files), without decoding any: what a run's record of the
    folder hashes (``data.data_digest``); an image reached twice (a link beside its file) once, as it is read."""
    splits = _split_layout(path, _visible_dirs(path))
    if splits is None:
        classes = _class_order(path)
        found = _class_files(path, classes, path)
    elif "train" not in splits:
        folder = splits["test"]
        classes = _class_order(folder)
        found = _class_files(folder, classes, folder, fewest=1)
    else:
        return [f for _, f, _ in _split_files(path, splits, _class_order(splits["train"]))[0]]
    return [f for f, _ in _distinct(path, found, classes)[0]]


def _loose_note(path: Path, roots: list[Path]) -> tuple[str, ...]:
    """A note on the images lying directly in ``roots`` (the data folder, a split folder), beside the class
    folders: they belong to no class, so they are not read, and unsaid a user who unzipped half the images one
    level too high would never learn that they were left out."""
    loose = [f for root in roots for f in sorted(root.iterdir())
             if f.is_file() and not _litter(f.name) and f.suffix.lower() in IMAGE_SUFFIXES]
    if not loose:
        return ()
    many = len(loose) > 1
    return (f"{path}: {len(loose)} image{'s' if many else ''} {'lie' if many else 'lies'} beside the class folders, "
            f"in no class folder, and {'were' if many else 'was'} not read (e.g. {one_line(str(loose[0]))}); move "
            f"{'each' if many else 'it'} into the folder of its class to use {'them' if many else 'it'}",)


def _unread_note(path: Path, roots: list[Path]) -> tuple[str, ...]:
    """A note on the files in the class folders under ``roots`` that are not read as images (a .gif, a .heic):
    left out unsaid, a class could lose most of its images without anyone knowing."""
    kinds = Counter(one_line(f.suffix.lower()) or "(no suffix)" for root in roots for name in _visible_dirs(root)
                    for f in (root / name).iterdir()
                    if f.is_file() and not _litter(f.name) and f.suffix.lower() not in IMAGE_SUFFIXES)
    if not kinds:
        return ()
    count = sum(kinds.values())
    listed = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    return (f"{path}: {count} file{'s' if count > 1 else ''} in the class folders {'are' if count > 1 else 'is'} "
            f"not {IMAGE_KINDS} images and {'were' if count > 1 else 'was'} not read ({listed}); convert the images "
            "among them to PNG or JPEG to use them",)


def split_whole(path: Path, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...],
                read: ImagesRead, resolution: tuple[int, int] | None,
                seed: int, normalize: Any, channels: int | None, order: str | None = None) -> Dataset:
    """Images that come without splits, split 70/10/20; ``read`` is what ``read_images`` says of them, ``order``
    which image is where (``order_digest`` of their names)."""
    mode, scale, side = read.mode, read.scale, read.side
    check_classes(path, y, len(classes))
    x, to = convert_channels(x, channels, str(path))
    data = split_normalized(path.name, x, y, classes, seed, normalize, str(path),
                            lambda mean, std: Preprocess(scale, mean, std, "grayscale" if mode == "L" else "rgb",
                                                         side, resize_method(scale), to), order)
    return dataclasses.replace(data, notes=(*read.notes, *orientation_notes(read.stored, resolution)))


def _visible_dirs(path: Path) -> list[str]:
    # Hidden folders (.ipynb_checkpoints, .git, a zip's __MACOSX) are not classes.
    return sorted(p.name for p in path.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name.lower() not in HIDDEN_FOLDERS)


def _litter(name: str) -> bool:
    """A hidden file (.DS_Store, a ._ resource fork) or one an OS adds to the folders it shows (``OS_LITTER``)."""
    return name.startswith(".") or name.lower() in OS_LITTER


def _class_order(folder: Path) -> tuple[str, ...]:
    """The class names of ``folder``'s class folders, numbered as torchvision's ImageFolder (and Keras) number
    them: by the folders' names as stored, in Python's order. Sorted by their composed (NFC) forms instead,
    folders named on macOS (decomposed: "e" and an accent) were numbered otherwise than the teacher trained on
    that very folder numbers them."""
    return tuple(_class_dirs(folder))  # _visible_dirs lists them sorted as stored


def _class_dirs(folder: Path) -> dict[str, str]:
    """{class name: its folder's name} of ``folder``'s class folders, in the folders' sorted order, the names in
    composed Unicode (``nfc``): a training set named on macOS and a test set named on Linux name a class alike."""
    dirs: dict[str, str] = {}
    for name in _visible_dirs(folder):
        _refuse_undecoded(folder, name)
        if nfc(name) in dirs:
            raise DataError(f"{folder}: folders '{dirs[nfc(name)]}' and '{name}' are one name, written in two "
                            "Unicode forms (composed and decomposed accents)", "merge them into one class folder")
        dirs[nfc(name)] = name
    return dirs


def _refuse_undecoded(folder: Path, name: str) -> None:
    """A class folder whose name is not UTF-8 (cp1252 or cp437 bytes from a Windows zip or an old share) is
    refused by name: its name becomes a class name, recorded in the model's metadata and the manifest, which
    hold UTF-8 text only."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = one_line(str(folder))
        raise DataError(f"{shown}: class folder '{one_line(name)}' is not named in UTF-8 (its name becomes the class "
                        "name the model records)",
                        f"rename it in UTF-8, e.g. with convmv -f cp1252 -t utf8 -r --notest '{shown}'") from None


def _split_layout(path: Path, folders: list[str]) -> dict[str, Path] | None:
    """{split: folder} when ``path`` holds train/ (with val/ or test/) or test/ alone, each a folder of
    class folders; None for class folders."""
    roles = {name: SPLIT_FOLDERS.get(name.lower()) for name in folders}
    _refuse_strays(path, roles)
    found = set(roles.values())
    if not folders or None in found or not ("train" in found or found in ({"test"}, {"val"})):
        return None
    if found == {"val"}:  # held out alone, as test/ alone is
        roles = {name: "test" for name in roles}
    bare = [name for name in folders if not _visible_dirs(path / name)]
    if len(bare) == len(folders):
        return None  # classes that happen to be named "train" and "test", holding their images
    if bare:  # a split without class folders: its images (Kaggle's unlabelled test/) have no labels to read
        loose = sum(1 for f in (path / bare[0]).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        held = (f"holds {loose} images but no class folders, so they have no labels" if loose else
                "holds no class folders")
        raise DataError(f"{path / bare[0]}: the {roles[bare[0]]} split {held}",
                        f"sort its images into class folders named as the other splits' are, or move {bare[0]}/ "
                        "out of the data")
    seen: dict[str, str] = {}
    for name, role in roles.items():
        if role in seen:
            raise DataError(f"{path}: both '{seen[role]}' and '{name}' look like the {role} split",
                            "keep one folder per split (train, val, test)")
        seen[role] = name  # type: ignore[index]
    return {role: path / name for name, role in roles.items()}  # type: ignore[misc]


def _refuse_strays(path: Path, roles: dict[str, str | None]) -> None:
    """Split folders of class folders beside a folder that is no split (annotations/, a README folder): read
    as class folders, every split would be taken for one class."""
    strays = [name for name, role in roles.items() if role is None]
    splits = [name for name, role in roles.items() if role is not None and _holds_folders_only(path / name)]
    if strays and splits:
        raise DataError(f"{path}: holds split folders of class folders ({', '.join(splits)}) beside '{strays[0]}', "
                        f"which is not a split name", f"move {strays[0]}/ out of the data, or name it as a split: "
                        f"{', '.join(SPLIT_FOLDERS)} (in any case)")


def _holds_folders_only(folder: Path) -> bool:
    """Sub-folders and no images of its own, as a split folder is (a class named "train" holds its images)."""
    return bool(_visible_dirs(folder)) and not any(f.suffix.lower() in IMAGE_SUFFIXES for f in folder.iterdir())


def _class_files(path: Path, classes: tuple[str, ...], folder: Path, fewest: int = 2) -> list[tuple[Path, int]]:
    """(image file, class index) under ``folder``'s class folders (of ``classes``); a class folder there
    must hold images, and the root given (``path``) at least ``fewest`` classes (a held-out test set may
    hold one: its classes are matched to a model's by name)."""
    dirs = _class_dirs(folder)
    present = [c for c in classes if c in dirs]
    _refuse_nested(folder, [dirs[c] for c in present])
    files = [(f, classes.index(c)) for c in present for f in sorted((folder / dirs[c]).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES and not _litter(f.name)]
    if folder == path and (len(classes) < fewest or not files):
        least = "at least two" if fewest == 2 else f"at least {fewest}"
        other = _other_files(folder, [dirs[c] for c in present]) if not files else ""
        raise DataError(f"{path}: found {len(classes)} class folders and {len(files)} images{other}",
                        f"use one sub-folder per class ({least}) holding {IMAGE_KINDS} files"
                        + (" (convert the images to PNG or JPEG)" if other else ""))
    empty = sorted(set(present) - {classes[i] for _, i in files})
    if empty:
        # An empty class would still get an output of the model, and nothing would ever train it.
        raise DataError(f"{folder}: class folder '{empty[0]}' holds no {IMAGE_KINDS} images",
                        "add its images, or move the folder out of the data")
    return files


def _other_files(folder: Path, names: list[str]) -> str:
    """What the class folders ``names`` hold instead of images, counted by kind (" (400 .gif files, which are not
    read)"), or "" when nothing: a folder of GIFs was said to hold 0 images, and nothing more."""
    kinds = Counter(one_line(f.suffix.lower()) or "(no suffix)" for name in names for f in (folder / name).iterdir()
                    if f.is_file() and not _litter(f.name))
    if not kinds:
        return ""
    listed = ", ".join(f"{n} {kind} file{'s' * (n > 1)}" for kind, n in kinds.most_common(3))
    return f" ({listed}{', ...' if len(kinds) > 3 else ''}, which are not read)"


def _distinct(path: Path, files: list[tuple[Path, int]],
              classes: tuple[str, ...]) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """``files`` with an image reached twice in its class (a link beside the file it links to, as folders of
    links into a shared pool hold) read once, at the first of its names, and a note saying so, as a CSV row
    repeating an image is: read twice, one copy could train and its twin be scored. One image in two class
    folders is refused, as a CSV listing it under two labels is: which class it is cannot be told."""
    first: dict[Path, tuple[Path, int]] = {}
    kept, repeats = [], []
    for file, label in files:
        at, was = first.setdefault(file.resolve(), (file, label))
        if at == file:
            kept.append((file, label))
        elif was == label:
            repeats.append((file, at))
        else:
            raise DataError(f"{one_line(str(path))}: {one_line(str(at.relative_to(path)))} and "
                            f"{one_line(str(file.relative_to(path)))} are one image, in class folders "
                            f"'{one_line(classes[was])}' and '{one_line(classes[label])}'",
                            "keep it in the folder of its one class, and remove the other copy or link")
    if not repeats:
        return files, ()
    many, (twin, at) = len(repeats) > 1, repeats[0]
    return kept, (f"{one_line(str(path))}: {len(repeats)} image file{'s' if many else ''} "
                  f"{'repeat images' if many else 'repeats an image'} of {'their' if many else 'its'} class (e.g. "
                  f"{_shown(path, twin)} is {_shown(path, at)}, linked); each image is read once, at the first of "
                  "its names",)


def _refuse_nested(folder: Path, classes: list[str]) -> None:
    """Only a class folder's own files are read: images in a sub-folder of it would be left out unseen."""
    for name in classes:
        nested = [one_line(sub) for sub in _visible_dirs(folder / name)]
        if nested:
            raise DataError(f"{folder}: class folder '{name}' holds a sub-folder '{nested[0]}', whose images "
                            "edgekd would not read", f"move the images of '{nested[0]}' up into '{name}/', or "
                            "move the sub-folder out of the data")


def _load_splits(path: Path, splits: dict[str, Path], resolution: tuple[int, int] | None, seed: int, normalize: Any,
                 channels: int | None, log: Log | None = None) -> Dataset:
    if "train" not in splits:
        return _test_only(path, splits["test"], resolution, normalize, channels, log)
    classes = _class_order(splits["train"])  # one order, whichever Unicode form another split names a class in
    for folder in splits.values():
        extra = sorted(set(_class_dirs(folder)) - set(classes))
        if extra:
            raise DataError(f"{folder}: class folder '{extra[0]}' is not in {splits['train'].name}/",
                            "give every split the class folders of the training split")
    order, repeats = _split_files(path, splits, classes)
    x, read = read_images(path, [f for _, f, _ in order], resolution, channels, log=log)
    y = np.array([label for _, _, label in order], dtype=np.int64)
    part = {role: np.array([r == role for r, _, _ in order]) for role in splits}
    xs, ys = {r: x[m] for r, m in part.items()}, {r: y[m] for r, m in part.items()}
    check_classes(splits["train"], ys["train"], len(classes))
    held_out = (f"{splits['train'].name}/ alone", "add a test/ (or val/) folder with the same class folders, or put "
                "the class folders directly in the data folder to have them split 70/10/20")
    data = from_parts(path, xs, ys, classes, read, resolution, seed, normalize, channels, held_out)
    return dataclasses.replace(data, notes=(*data.notes, *repeats))


SPLIT_RANK = {"train": 0, "val": 1, "test": 2}  # where an image in two splits is read


def _split_files(path: Path, splits: dict[str, Path],
                 classes: tuple[str, ...]) -> tuple[list[tuple[str, Path, int]], tuple[str, ...]]:
    """(split, image file, class index) of each image of the splits, in the splits' listed order, and
    ``_distinct``'s note: an image in two splits too is read once, in train/ (else val/): kept in test/ as well,
    it was trained on and scored."""
    # train/ itself must hold at least two classes with images (checked where folder is the root given)
    order = [(role, f, label) for role, folder in splits.items()
             for f, label in _class_files(splits["train"], classes, folder)]
    ranked = sorted(order, key=lambda item: SPLIT_RANK[item[0]])  # stable: each split's files in their order
    kept, repeats = _distinct(path, [(f, label) for _, f, label in ranked], classes)
    read_once = {f for f, _ in kept}
    return [item for item in order if item[1] in read_once], repeats


def from_parts(path: Path, xs: dict[str, np.ndarray], ys: dict[str, np.ndarray], classes: tuple[str, ...],
                read: ImagesRead, resolution: tuple[int, int] | None,
                seed: int, normalize: Any, channels: int | None, held_out: tuple[str, str]) -> Dataset:
    """The dataset of given splits (train, and val and/or test): val alone is held out as the test split
    and validation carved from train; ``read`` is what ``read_images`` says of the images, ``held_out``
    what the data holds and the fix, when nothing is left to test on."""
    mode, scale, side = read.mode, read.scale, read.side
    if "test" not in xs:  # val/ alone is held out as the test split, as ImageNet's val/ is used
        if "val" not in xs:
            xs["test"], ys["test"] = np.empty_like(xs["train"][:0]), ys["train"][:0]
        else:
            xs["test"], ys["test"] = xs.pop("val"), ys.pop("val")
    if "val" not in xs:
        xs["train"], ys["train"], xs["val"], ys["val"] = holdout(xs["train"], ys["train"], VAL_SHARE, seed, path)
        check_classes(path, ys["train"], len(classes))  # what trains, once validation is carved from it
    if not len(ys["test"]):
        raise DataError(f"{path}: holds {held_out[0]}, so nothing is held out to test on", held_out[1])
    converted = {r: convert_channels(v, channels, str(path)) for r, v in xs.items()}
    xs, to = {r: v[0] for r, v in converted.items()}, converted["train"][1]
    norm = {r: normalize_images(v, xs["train"], normalize, str(path)) for r, v in xs.items()}
    mean, std = norm["train"][1:]
    pre = Preprocess(scale, mean, std, "grayscale" if mode == "L" else "rgb", side, resize_method(scale), to)
    return Dataset(path.name, norm["train"][0], ys["train"], norm["val"][0], ys["val"], norm["test"][0], ys["test"],
                   classes, pre, (*read.notes, *orientation_notes(read.stored, resolution)))


def _test_only(path: Path, folder: Path, resolution: tuple[int, int] | None, normalize: Any,
               channels: int | None, log: Log | None = None) -> Dataset:
    """A held-out test set: every image of ``folder``'s class folders, for validate and gate (the training
    stages refuse it). Its classes are matched to a model's by name (folders named by number: by number), so it may
    hold some of them only."""
    classes = _class_order(folder)
    files, repeats = _distinct(path, _class_files(folder, classes, folder, fewest=1), classes)
    y = np.array([label for _, label in files], dtype=np.int64)
    if whole_numbers(classes):
        classes, y = _numbered(folder, classes, y)
    x, read = read_images(path, [f for f, _ in files], resolution, channels, log=log)
    data = held_out_set(path, x, y, classes, read, normalize, channels)
    return dataclasses.replace(data, notes=(*data.notes, *repeats))


def _numbered(folder: Path, classes: tuple[str, ...], y: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Class folders named by number as the labels they are (folder "9" is class 9), numbered as a CSV's or a
    .npz's numeric labels are: numbered 0..K-1 in sorted order instead, folders 2/ and 9/ alone would be scored as
    a model's classes 0 and 1 wherever the model records no names to match them by."""
    numbers = [int(float(name)) for name in classes]
    for i, number in enumerate(numbers):
        if numbers.index(number) != i:
            raise DataError(f"{folder}: class folders '{classes[numbers.index(number)]}' and '{classes[i]}' are one "
                            f"class number ({number})", "merge them into one class folder")
    check_label_range(folder, max(numbers))
    return tuple(str(i) for i in range(max(numbers) + 1)), np.array(numbers, dtype=np.int64)[y]


def held_out_set(path: Path, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...],
             read: ImagesRead, normalize: Any, channels: int | None) -> Dataset:
    """Images held out whole as a test set (nothing to train on), standardised by their own statistics."""
    mode, scale, side = read.mode, read.scale, read.side
    x, to = convert_channels(x, channels, str(path))
    x, mean, std = normalize_images(x, x, normalize, str(path))
    pre = Preprocess(scale, mean, std, "grayscale" if mode == "L" else "rgb", side, resize_method(scale), to)
    none_x, none_y = x[:0], y[:0]
    return Dataset(path.name, none_x, none_y, none_x, none_y, x, y, classes, pre, read.notes)


def resize_method(scale: float) -> str:
    """How ``read_images`` resized images it scaled by ``scale``, as the record says it: Pillow's bicubic on
    8-bit pixels, or on 16-bit ones (scale 1/65535) read as floats."""
    return PIL_BICUBIC_16 if scale < 1 / 255 else PIL_BICUBIC


def read_images(path: Path, files: list[Path], resolution: tuple[int, int] | None, channels: int | None = None,
                log: Log | None = None) -> tuple[np.ndarray, ImagesRead]:
    """The images as NCHW floats in [0, 1], and what was read (``ImagesRead``). ``channels`` (--channels):
    what they are converted to afterwards, which the memory they need counts.

    Headers first (opening an image decodes nothing): they decide the mode and the size, and whether the
    result fits in memory. Then each image is decoded, converted and resized on its own into one array, so
    a folder of full-size photos never sits in memory whole.

    ``log`` hears how far a long read is (a ``Heartbeat``, from ``QUIET_S`` seconds in): decoding tens of
    thousands of photos takes minutes, which a CI job killed after minutes without output would not survive."""
    from PIL import Image

    modes, sizes, unread = [], [], []
    beat, total, named = Heartbeat(log, after_s=QUIET_S), f"{len(files):,}", path.name or str(path)
    for n, file in enumerate(files, 1):
        try:
            with _opened(file) as img:
                modes.append("L" if img.mode == "P" and _grey_palette(img) else img.mode)
                sizes.append(_upright_size(img) if not sizes else _header_size(img))
        except _Unreadable as exc:
            unread.append(exc)
        beat.tick(f"data: read {n:,} of {total} image headers of '{named}'")
    if unread:
        _refuse_unread(path, len(files), _undecodable(path, files, unread, log))
    size = sizes[0]
    h, w = resolution or (size[1], size[0])  # Pillow's size is (width, height)
    if resolution is None:
        check_image_size(path, (h, w))
    mode, levels = _depth(path, files, modes)
    depth = 3 if mode == "RGB" else 1
    check_memory(path, len(files), depth, (h, w), resolution, to_channels=channels)
    x = np.empty((len(files), h, w, depth), np.float32)
    # Bicubic named explicitly (Pillow's default for these modes) so the recorded method stays true.
    bicubic = Image.Resampling.BICUBIC
    for i, file in enumerate(files):
        try:
            with _opened(file) as img:  # a truncated file fails here, when decoded
                upright = _upright(img)
                if upright.mode == "P" and isinstance(upright.info.get("transparency"), bytes):
                    # Pillow warns, image by image, converting such a palette (one alpha per colour, as PNG
                    # optimisers write it) to anything but RGBA; through RGBA the colours are the same, unwarned.
                    upright = upright.convert("RGBA")
                converted = upright.convert("F" if mode == "I;16" else mode).resize((w, h), bicubic)
        except _Unreadable as exc:
            unread.append(exc)
        else:
            x[i] = np.asarray(converted, dtype=np.float32).reshape(h, w, depth)
        beat.tick(f"data: decoded {i + 1:,} of {total} images of '{named}'", done=i + 1 == len(files))
    _refuse_unread(path, len(files), unread)
    if mode == "I;16" and float(x.max(initial=0)) > 65535 * 1.01:  # bicubic overshoots a little; more: 32-bit
        raise DataError(f"{path}: holds integer pixels beyond 16 bits", "store 8- or 16-bit images")
    x /= np.float32(levels)
    counts = Counter(sizes)  # the size most images have, and (no --resolution) whether they differ
    notes = () if resolution else _size_notes(path, files, sizes, counts)
    most = counts.most_common(1)[0][0]
    return x.transpose(0, 3, 1, 2), ImagesRead("RGB" if mode == "RGB" else "L", 1 / levels, (h, w),
                                                (most[1], most[0]), notes)


def _undecodable(path: Path, files: list[Path], unread: list[_Unreadable], log: Log | None) -> list[_Unreadable]:
    """``unread`` (files whose headers failed) with every other file that fails when decoded, in the files'
    order: refused at the headers alone, the files whose pixels are cut short were found a whole run later, in a
    second error, while the first one's count read as the whole story."""
    failed = {u.file for u in unread}
    beat, total, named = Heartbeat(log, after_s=QUIET_S), f"{len(files):,}", path.name or str(path)
    for i, file in enumerate(files):
        if file not in failed:
            try:
                with _opened(file) as img:
                    img.load()
            except _Unreadable as exc:
                unread.append(exc)
        beat.tick(f"data: checked {i + 1:,} of {total} images of '{named}'", done=i + 1 == len(files))
    at = {file: i for i, file in enumerate(files)}
    return sorted(unread, key=lambda u: at[u.file])


def _size_notes(path: Path, files: list[Path], sizes: list[tuple[int, int]],
                counts: Counter[tuple[int, int]]) -> tuple[str, ...]:
    """A warning when images of several sizes were all resized to the first one's, with no --resolution:
    one odd image listed first (a screenshot among camera frames) set the size, and the aspect ratio, of
    every image the model is trained on and takes. Where the first one's size is the most common, the odd
    images are named instead, and --resolution, which would change nothing, is not suggested."""
    if len(counts) < 2:
        return ()
    (w0, h0), ((w, h), most) = sizes[0], counts.most_common(1)[0]
    said = (f"'{path.name or path}': its {len(files):,} images come in {len(counts):,} sizes and were all resized "
            f"to the first one's, {h0}x{w0} (height x width, {_shown(path, files[0])}, shared by {counts[sizes[0]]:,})")
    if (w, h) != (w0, h0):
        return (f"{said}; {most:,} of them are {h}x{w}, e.g. {_shown(path, files[sizes.index((w, h))])}; pass "
                f"--resolution (e.g. {h if h == w else f'{h}x{w}'}) to choose the size the model takes",)
    odd = [(size, n) for size, n in counts.most_common() if size != (w0, h0)]
    listed = "; ".join(f"{n:,} {'are' if n > 1 else 'is'} {oh}x{ow}{', e.g.' if n > 1 else ':'} "
                       f"{_shown(path, files[sizes.index((ow, oh))])}" for (ow, oh), n in odd[:3])
    those = "they belong" if len(files) - counts[sizes[0]] > 1 else "it belongs"
    return (f"{said}; {listed}{'; ...' if len(odd) > 3 else ''}; check that {those} in the data (an image of "
            "another aspect ratio is stretched to this one)",)


def _shown(path: Path, file: Path) -> str:
    """``file`` as a message names it: inside the data folder ``path``, from there (cat/rot.jpg, which finds
    it where two classes hold a 01.png), from a CSV's folder for the files it lists, else whole; on one line
    whatever bytes its name holds."""
    try:
        name = file.relative_to(path if path.is_dir() else path.parent).as_posix()
    except ValueError:
        name = str(file)
    return one_line(name)


# EXIF Orientation values that turn the stored image a quarter turn (or transpose it) to display it upright.
QUARTER_TURNS = {5, 6, 7, 8}


def _upright_size(img: Any) -> tuple[int, int]:
    """(width, height) as the image is shown, read from its header: a phone stores a portrait photo landscape
    with an EXIF Orientation tag, and viewers (and deployment pipelines using ``ImageOps.exif_transpose``)
    show it turned."""
    turned = img.getexif().get(0x0112) in QUARTER_TURNS
    return (img.size[1], img.size[0]) if turned else img.size


def _header_size(img: Any) -> tuple[int, int]:
    """``_upright_size`` where the header alone tells it: a PNG whose EXIF chunk (rare) follows its pixels would
    be decoded whole to find it, on every image of a folder read for the size warning alone."""
    return img.size if img.format == "PNG" and "exif" not in img.info else _upright_size(img)


def _upright(img: Any) -> Any:
    """The image turned as its EXIF Orientation says, as it is shown: trained as stored, a phone's photos
    would be learned sideways and the model fed upright ones where it is deployed."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(img)


def _grey_palette(img: Any) -> bool:
    """Whether a palette image's colours are all greys (r = g = b), as PNG optimisers and ImageMagick often
    save grayscale images: it reads as grayscale, and one such file does not turn a grayscale set to RGB."""
    palette = img.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


@contextmanager
def _opened(file: Path) -> Iterator[Any]:
    """``file`` opened with Pillow; one it cannot read, or one too large to decode safely, is a DataError
    naming it."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        # Pillow only warns between its pixel limit and twice it: such an image is refused like a larger one.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(file) as img:
                yield img
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            said = str(exc).split(", could be")[0]
            raise DataError(f"{one_line(str(file))}: is too large to decode safely ({said})",
                            f"downscale it (edgekd trains at most {MAX_SIDE} pixels a side) or remove it") from None
        except (OSError, UnidentifiedImageError) as exc:
            broken = file.is_symlink() and not file.exists()
            raise _Unreadable(file, f"a broken link to {os.readlink(file)}" if broken else str(exc)) from None


class _Unreadable(DataError):
    """A file Pillow cannot open or decode, and why; ``read_images`` gathers them over a pass."""

    def __init__(self, file: Path, reason: str) -> None:
        super().__init__(f"{one_line(str(file))}: cannot be read as an image ({one_line(reason)})",
                         "remove or replace that file")
        self.file, self.reason = file, reason


SHOWN_UNREAD = 3  # unreadable files named in the one error


def _refuse_unread(path: Path, total: int, unread: list[_Unreadable]) -> None:
    """One error for every file of a pass that could not be read: named one at a time, a folder of several
    broken files took a full decoding pass per file found."""
    if len(unread) == 1:
        raise unread[0]
    if unread:
        shown = ", ".join(f"{one_line(str(u.file))} ({one_line(u.reason)})" for u in unread[:SHOWN_UNREAD])
        more = f", and {len(unread) - SHOWN_UNREAD} more" if len(unread) > SHOWN_UNREAD else ""
        raise DataError(f"{path}: {len(unread)} of {total} files cannot be read as images: {shown}{more}",
                        "remove or replace those files")


def _depth(path: Path, files: list[Path], modes: list[str]) -> tuple[str, float]:
    """How the images are read: "I;16" (16-bit grayscale, at full depth: Pillow's conversion to 8-bit
    clips every value above 255 instead of scaling, leaving such images nearly white), "L" or "RGB"; and
    the top stored value, which becomes 1."""
    if "F" in modes:
        raise DataError(f"{one_line(str(files[modes.index('F')]))}: holds floating-point pixels",
                        "store 8- or 16-bit images, or a .npz of floats")
    wide = [m in WIDE_GRAY for m in modes]
    if any(wide) and not all(wide):
        first = files[wide.index(True)] if not wide[0] else files[wide.index(False)]
        raise DataError(f"{path}: mixes 16-bit grayscale with 8-bit images (e.g. {one_line(str(first))})",
                        "store every image at one bit depth")
    if all(wide):
        return "I;16", 65535.0
    return ("L" if all(m in ("L", "1", "LA") for m in modes) else "RGB"), 255.0
