"""A CSV file listing images and their labels, as Kaggle-style datasets come: a header names the image column
(path, file, filename, image, ...) and the label column (label, class, target, ...), and optionally a split
column (train, val, test). Paths are read relative to the CSV's folder. Labels are class numbers 0..K-1, or
class names numbered in sorted order as class folders are (as written; matched in composed Unicode, NFC)."""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import (
    NO_LABELS_FIX,
    Dataset,
    check_classes,
    check_label_range,
    nfc,
    order_digest,
    whole_numbers,
)
from edgekd.errors import DataError
from edgekd.images import IMAGE_SUFFIXES, SPLIT_FOLDERS, Log, from_parts, held_out_set, read_images, split_whole
from edgekd.preprocess import parse_resolution

FILE_COLUMNS = ("path", "file", "filename", "file_name", "filepath", "image", "image_path", "img")
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "target", "y", "category")
SPLIT_COLUMN = "split"


def load_image_list(path: Path, resolution: Any = None, seed: int = 0, normalize: Any = None,
                    channels: int | None = None, log: Log | None = None) -> Dataset:
    """The images ``path`` lists, read as an image folder's are (grayscale unless any has colour, resized to
    ``resolution`` or the first image's size); split 70/10/20 unless a split column gives the splits. ``log``:
    where a long read says how far it is (``read_images``)."""
    resolution = parse_resolution(resolution)
    files, written, roles, numbers = _rows(path)
    labels, spelled = _composed(written)
    files, labels, roles, notes = _without_repeats(path, files, labels, roles, numbers)
    notes = (*_label_notes(path, labels, numbers), *notes)
    data = _listed_data(path, files, labels, roles, resolution, seed, normalize, channels, log, spelled)
    return dataclasses.replace(data, notes=(*data.notes, *notes))


def _composed(written: list[str]) -> tuple[list[str], dict[str, str]]:
    """The labels in composed Unicode (``nfc``: a name typed on macOS and one typed elsewhere are one class), and
    {label: as written (the first in sorted order, where both forms are)}: labels listed from a macOS folder's
    names come decomposed, and are numbered as that folder's classes are, by the names as written."""
    labels, spelled = [nfc(label) for label in written], {}
    for label, spelling in zip(labels, written):
        spelled[label] = min(spelled.get(label, spelling), spelling)
    return labels, spelled


def _listed_data(path: Path, files: list[Path], labels: list[str], roles: list[str] | None,
                 resolution: tuple[int, int] | None, seed: int, normalize: Any, channels: int | None,
                 log: Log | None = None, spelled: dict[str, str] | None = None) -> Dataset:
    classes, y = _classes(path, labels, spelled)
    x, read = read_images(path, files, resolution, channels, log=log)
    if roles is None:
        # the split deals by row, so reordered rows deal another split: the model records the order (each image
        # as its class and file name, as a class folder's listing names it: the same images read from their
        # folders, or listed with other paths to them, are the same order)
        order = order_digest(f"{classes[label]}/{f.name}" for f, label in zip(files, y.tolist()))
        return split_whole(path, x, y, classes, read, resolution, seed, normalize, channels, order)
    part = {role: np.array([r == role for r in roles]) for role in sorted(set(roles))}
    if "train" not in part:  # a held-out test set for validate and gate, its classes matched by name
        return held_out_set(path, x, y, classes, read, normalize, channels)
    xs, ys = {r: x[m] for r, m in part.items()}, {r: y[m] for r, m in part.items()}
    check_classes(path, ys["train"], len(classes))
    held_out = ("training images alone", "mark some rows test (or val) in its split column, or leave the split "
                                         "column out to have the images split 70/10/20")
    return from_parts(path, xs, ys, classes, read, resolution, seed, normalize, channels, held_out)


def _without_repeats(path: Path, files: list[Path], labels: list[str], roles: list[str] | None,
                     numbers: list[int]) -> tuple[list[Path], list[str], list[str] | None, tuple[str, ...]]:
    """The rows with an image listed twice under one label read once (kept at its first row), and a note
    saying so: split apart, its copies would be trained on and scored on both. One image under two labels
    is refused: which is meant cannot be told."""
    first: dict[Path, int] = {}
    keep, repeats = [], []
    for i, file in enumerate(files):
        at = first.setdefault(file.resolve(), i)
        if at == i:
            keep.append(i)
        elif labels[at] != labels[i]:
            raise DataError(f"{path}: lists {file} as '{labels[at]}' (row {numbers[at]}) and as '{labels[i]}' "
                            f"(row {numbers[i]})", "keep one row per image, with its one label")
        else:
            repeats.append(numbers[i])
    if not repeats:
        return files, labels, roles, ()
    note = (f"{path}: {len(repeats)} row{'s' if len(repeats) > 1 else ''} repeat an image and label listed above "
            f"(e.g. row {repeats[0]}); each image is read once, at its first row")
    return ([files[i] for i in keep], [labels[i] for i in keep],
            [roles[i] for i in keep] if roles is not None else None, (note,))


def listed_folders(data: Any) -> list[Any]:
    """The folders holding the images the CSV ``data`` lists, read from its rows without decoding any: inputs of
    a run as much as the CSV itself. An output that is, or holds, one of them is refused (``--force`` would
    delete its images), and so is an existing file inside one; a new output inside one is not (a CSV names its
    images, so nothing written beside them is read as one: ``ListedFolder``). [] for other data, and for a CSV
    that cannot be read (loading it says why)."""
    if not isinstance(data, (str, Path)) or not str(data).strip():
        return []
    path = Path(data)
    if path.suffix.lower() not in (".csv", ".tsv") or not path.is_file():
        return []
    stat = path.stat()
    # each stage's output check asks again: a CSV of a million rows is read once per version of the file
    return list(_listed_folders(os.path.abspath(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _listed_folders(path: str, mtime_ns: int, size: int) -> tuple[Any, ...]:
    try:
        files = _rows(Path(path), check=False)[0]
    except DataError:
        return ()
    from edgekd.fsutil import ListedFolder

    folders = {file.parent for file in files}  # resolved per folder, not per image: a CSV may list a million
    return tuple(ListedFolder(folder) for folder in sorted({folder.resolve() for folder in folders}))


def _rows(path: Path, check: bool = True) -> tuple[list[Path], list[str], list[str] | None, list[int]]:
    """(image files, their labels as written, their splits or None, their row numbers) of the CSV at ``path``;
    ``check``: refuse a listed file that is missing or no image."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM, as spreadsheets save CSV, is not a column name
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as a CSV text file ({exc})", "save it as UTF-8 CSV") from None
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = [row for row in csv.reader(text.splitlines(), dialect) if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path}: is empty", "list one image per row under a header such as: path,label")
    header = [cell.strip().lower() for cell in rows[0]]
    file_col, label_col = _column(path, header, FILE_COLUMNS, "image"), _column(path, header, LABEL_COLUMNS, "label")
    split_col = header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header else None
    files, labels, roles, numbers = [], [], [], []
    for number, row in enumerate(rows[1:], start=2):
        cells = [c.strip() for c in row] + [""] * (len(header) - len(row))
        if not cells[file_col] or not cells[label_col]:
            what = "image path" if not cells[file_col] else "label"
            raise DataError(f"{path}: row {number} has no {what}", "give every row an image path and a label")
        files.append(_resolved(path, cells[file_col]))
        labels.append(cells[label_col])
        numbers.append(number)
        if split_col is not None:
            roles.append(_role(path, number, cells[split_col]))
    if not files:
        raise DataError(f"{path}: lists no images under its header", "list one image per row: path,label")
    if check:
        _check_files(path, files)
    return files, labels, roles if split_col is not None else None, numbers


def _column(path: Path, header: list[str], names: tuple[str, ...], what: str) -> int:
    found = [name for name in names if name in header]
    if not found:
        if _headerless(path, header):
            raise DataError(f"{path}: has no header row (its first row: {', '.join(header)})",
                            "add a header row naming its columns, such as: path,label")
        fix = f"name the {what} column one of: {', '.join(names)}"
        raise DataError(f"{path}: has no {what} column (its header: {', '.join(header)})",
                        fix + (f" ({NO_LABELS_FIX})" if what == "label" else ""))
    return header.index(found[0])


def _headerless(path: Path, header: list[str]) -> bool:
    """A first row that is data, not names: a cell naming an image file (or a label number) where a header names
    its columns."""
    return any(Path(cell).suffix.lower() in IMAGE_SUFFIXES or cell.isdigit() for cell in header)


def _resolved(path: Path, given: str) -> Path:
    file = Path(given).expanduser()
    file = file if file.is_absolute() else path.parent / file
    if not file.exists() and "\\" in given and os.sep == "/":  # a list written on Windows: imgs\\001.png
        return _resolved(path, given.replace("\\", "/"))
    return file


def _role(path: Path, number: int, value: str) -> str:
    role = SPLIT_FOLDERS.get(value.lower())
    if role is None:
        raise DataError(f"{path}: row {number} has split '{value}'",
                        f"use one of: {', '.join(sorted(SPLIT_FOLDERS))}")
    return role


def _check_files(path: Path, files: list[Path]) -> None:
    """Every listed file, before any is decoded: a wrong folder in the paths is one message, not the first
    of many."""
    missing = [f for f in files if not f.is_file()]
    if missing:
        # Paths that (nearly) all miss are written from another folder; where most resolve, the paths are
        # right and those files are gone: advice to rewrite every path would send the user the wrong way.
        fix = (f"write paths relative to the CSV's folder ({path.parent}), or absolute"
               if len(files) - len(missing) <= len(files) // 10 else
               f"restore those files, or remove their rows from {path.name}")
        raise DataError(f"{path}: {len(missing)} of {len(files)} listed images do not exist (e.g. {missing[0]})", fix)
    other = [f for f in files if f.suffix.lower() not in IMAGE_SUFFIXES]
    if other:
        raise DataError(f"{path}: lists {other[0].name}, which is not an image file",
                        f"list {', '.join(sorted(IMAGE_SUFFIXES))} files")


NUMBER = re.compile(r"\s*[-+]?\d+(\.\d*)?\s*")


def _label_notes(path: Path, labels: list[str], numbers: list[int]) -> tuple[str, ...]:
    """Labels that are numbers but not class numbers (-1, "ignore" in many lists; 2.5) are refused: read as names,
    each would be a class of its own, and the classes' order (-1 first) would no longer be their numbers. Numbers
    mixed with names ("3" and "three", or a "nan" among numbers) are said: each is then its own class."""
    distinct = set(labels)
    if whole_numbers(distinct):
        return ()
    numeric = sorted((v for v in distinct if NUMBER.fullmatch(v)), key=float)
    if not numeric:
        return ()
    names = sorted(distinct - set(numeric))
    if not names:
        odd = next(v for v in numeric if not whole_numbers([v]))
        row = numbers[labels.index(odd)]
        raise DataError(f"{path}: row {row} has label {odd}, and numbered labels are class numbers 0..K-1",
                        "remove the rows of images to leave out (a -1 label), and number the classes 0..K-1")
    shown = ", ".join(f"'{v}'" for v in names[:5]) + (", ..." if len(names) > 5 else "")
    first = numbers[labels.index(names[0])]
    return (f"{path}: its labels mix numbers ({', '.join(numeric[:5])}{', ...' if len(numeric) > 5 else ''}) and "
            f"names ({shown}, e.g. row {first}), so every label is read as a name, each its own class in sorted "
            f"order ({len(distinct)} classes); write every label as a class number 0..K-1, or every one as a name",)


def _classes(path: Path, labels: list[str],
             spelled: dict[str, str] | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """(class names, class number of each row): numbers as written, or names numbered in sorted order, sorted as
    written (``spelled``: each name's spelling) as class folders are, by their names as stored."""
    if whole_numbers(set(labels)):
        y = np.array([int(float(label)) for label in labels], dtype=np.int64)
        check_label_range(path, int(y.max()))
        return tuple(str(i) for i in range(int(y.max()) + 1)), y
    spelled = spelled or {}
    names = tuple(sorted(set(labels), key=lambda name: spelled.get(name, name)))
    number = {name: i for i, name in enumerate(names)}
    return names, np.array([number[label] for label in labels], dtype=np.int64)
