"""One loader interface over three sources: embedded digits, a ``.npz`` file, an image folder.

Everything becomes float32 NCHW arrays with a deterministic train/val/test split, so later
stages never care where the data came from.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import DataError

SPLIT = (0.7, 0.1, 0.2)  # train, val, test
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


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
        }


def load_data(source: str | None = None, *, resolution: int | None = None, seed: int = 0) -> Dataset:
    """Load ``source``: ``None``/``"digits"`` (embedded), a ``.npz`` file, or an image folder.

    ``resolution`` resizes images to a square side (digits default: 32).
    """
    if source is None or source == "digits":
        return load_digits(resolution=resolution or 32, seed=seed)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data '{source}' does not exist", "pass a .npz file, an image folder, or 'digits'")
    if path.is_dir():
        return load_image_folder(path, resolution=resolution, seed=seed)
    if path.suffix.lower() == ".npz":
        return load_npz(path, resolution=resolution, seed=seed)
    raise DataError(
        f"data '{source}' is neither a .npz file nor a folder", "pass a .npz file (x, y arrays) or an image folder"
    )


def load_digits(resolution: int = 32, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 real 8x8 digit scans, upsampled so convolutions have work to do."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    x = _resize(x, resolution)
    y = bunch.target.astype(np.int64)
    return _split("digits", _standardize(x), y, tuple(str(i) for i in range(10)), seed)


def load_npz(path: Path, resolution: int | None = None, seed: int = 0) -> Dataset:
    fix = "write it with numpy.savez(path, x=..., y=...)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot be read as .npz ({exc or type(exc).__name__})", fix) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array, not a .npz archive", fix)
    with archive:
        arrays = {k: archive[k] for k in archive.files}
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        parts = {k: arrays[k] for k in arrays if k.startswith(("x_", "y_"))}
        if "x_val" not in parts:  # carve validation from train, deterministic
            xt, yt, xv, yv = _holdout(parts["x_train"], parts["y_train"], 0.125, seed)
            parts.update(x_train=xt, y_train=yt, x_val=xv, y_val=yv)
        xs = {k: _to_nchw(path, parts[f"x_{k}"], resolution) for k in ("train", "val", "test")}
        shapes = {k: v.shape[1:] for k, v in xs.items()}
        if len(set(shapes.values())) > 1:
            raise DataError(f"{path}: the splits' images differ in shape ({shapes})",
                            "store every split at one shape, or pass --resolution to resize them")
        ys = {k: _labels(path, parts[f"y_{k}"], len(xs[k])) for k in ("train", "val", "test")}
        num_classes = int(max(y.max() for y in ys.values())) + 1
        _check_classes(path, ys["train"])
        mean, std = float(xs["train"].mean()), float(xs["train"].std()) or 1.0
        norm = {k: ((v - mean) / std).astype(np.float32) for k, v in xs.items()}
        return Dataset(
            path.name, norm["train"], ys["train"], norm["val"], ys["val"], norm["test"], ys["test"],
            tuple(str(i) for i in range(num_classes)),
        )
    if not {"x", "y"} <= arrays.keys():
        raise DataError(
            f"{path}: has arrays {sorted(arrays)}, not 'x' and 'y'",
            "save images as x (N,C,H,W or N,H,W) and labels as y (N,), optionally x_train/y_train/x_test/y_test",
        )
    x = _to_nchw(path, arrays["x"], resolution)
    y = _labels(path, arrays["y"], len(x))
    _check_classes(path, y)
    num_classes = int(y.max()) + 1
    return _split(path.name, _standardize(x), y, tuple(str(i) for i in range(num_classes)), seed)


def load_image_folder(path: Path, resolution: int | None = None, seed: int = 0) -> Dataset:
    """One sub-folder per class, PNG/JPEG files inside; grayscale unless any image has colour."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((path / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or not files:
        raise DataError(
            f"{path}: found {len(classes)} class folders and {len(files)} images",
            "use one sub-folder per class (at least two) holding .png/.jpg files",
        )
    images = []
    for file, _ in files:
        try:
            with Image.open(file) as img:
                images.append(img.copy())
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{file}: cannot be read as an image ({exc})", "remove or replace that file") from None
    mode = "L" if all(img.mode in ("L", "1", "I;16", "I", "LA") for img in images) else "RGB"
    side = resolution or max(images[0].size)
    arrays = [np.asarray(img.convert(mode).resize((side, side)), dtype=np.float32) / 255.0 for img in images]
    x = np.stack(arrays)
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    y = np.array([label for _, label in files], dtype=np.int64)
    _check_classes(path, y)
    return _split(path.name, _standardize(x), y, tuple(classes), seed)


def _to_nchw(path: Path, x: np.ndarray, resolution: int | None) -> np.ndarray:
    if x.dtype.kind not in "fiu":
        raise DataError(f"{path}: x has dtype {x.dtype}", "store images as numbers (uint8 or float)")
    x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{path}: x has shape {x.shape}", "store images as (N, C, H, W) or (N, H, W)")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # NHWC
        x = x.transpose(0, 3, 1, 2)
    return _resize(x, resolution) if resolution else np.ascontiguousarray(x)


def _labels(path: Path, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n or y.dtype.kind not in "iu":
        raise DataError(
            f"{path}: y has shape {y.shape} and dtype {y.dtype} for {n} images",
            "store integer class labels 0..K-1, one per image",
        )
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: y has negative labels", "use class labels 0..K-1")
    return y.astype(np.int64)


def _check_classes(path: Any, y: np.ndarray) -> None:
    if len(np.unique(y)) < 2:
        raise DataError(f"{path}: all labels belong to a single class", "provide images of at least two classes")


def _resize(x: np.ndarray, side: int) -> np.ndarray:
    if x.shape[-2:] == (side, side):
        return np.ascontiguousarray(x, dtype=np.float32)
    import torch
    import torch.nn.functional as F

    out = F.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=(side, side), mode="bilinear",
                        align_corners=False)
    return out.numpy().astype(np.float32)


def _standardize(x: np.ndarray) -> np.ndarray:
    std = float(x.std()) or 1.0
    return ((x - float(x.mean())) / std).astype(np.float32)


def _holdout(x: np.ndarray, y: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    cut = max(1, int(round(len(y) * frac)))
    return x[order[cut:]], y[order[cut:]], x[order[:cut]], y[order[:cut]]


def _split(name: str, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], seed: int) -> Dataset:
    """Stratified, seeded split: every class keeps its share in each part."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(idx) * SPLIT[2]))
        n_val = int(round(len(idx) * SPLIT[1]))
        parts["test"] += idx[:n_test].tolist()
        parts["val"] += idx[n_test:n_test + n_val].tolist()
        parts["train"] += idx[n_test + n_val:].tolist()
    if min(len(v) for v in parts.values()) == 0:
        raise DataError(f"{name}: too few images ({len(y)}) to split into train/val/test",
                        "provide at least a handful of images per class")
    sel = {k: np.sort(np.array(v)) for k, v in parts.items()}
    return Dataset(name, x[sel["train"]], y[sel["train"]], x[sel["val"]], y[sel["val"]],
                   x[sel["test"]], y[sel["test"]], classes)
