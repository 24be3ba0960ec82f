"""How a raw image becomes a model's input (scale, channels, resize, mean and std), as one record.

The record is what the manifest and every shipped ``.onnx`` file carry: a deployment pipeline feeds the
model exactly that, and gate and validate apply it again to the data they measure on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ConfigError, DataError

NORMALIZE_FIX = ("pass --normalize dataset (standardise with the data's own mean and std), none (pixels "
                 "scaled to [0, 1] only) or MEAN/STD, e.g. 0.5/0.25 or 0.485,0.456,0.406/0.229,0.224,0.225")

RESOLUTION_FIX = "pass one side for square images (e.g. 224) or HEIGHTxWIDTH (e.g. 240x320)"
# Sides a model is trained at: below 4 px the students' strided stems have nothing left to convolve; above
# 4096 px one image takes 200 MiB as float32 and a batch of them no machine edgekd targets can train on.
MIN_SIDE, MAX_SIDE = 4, 4096
CHANNELS_FIX = "pass --channels 3 (grayscale repeated to RGB) or 1 (RGB to luminance), as your teacher takes them"
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, the weights PIL converts RGB to grayscale with
LUMA_TEXT = "0.299 R + 0.587 G + 0.114 B"
# How image files are resized (images.read_images), said exactly: "bicubic" alone reads as torch's or OpenCV's
# kernel, which does not antialias when shrinking and works on floats, and fed inputs about 2 std off.
PIL_BICUBIC = "PIL BICUBIC (antialiased when shrinking), on 8-bit pixels, after EXIF orientation"
PIL_BICUBIC_16 = "PIL BICUBIC (antialiased when shrinking), on 16-bit pixels as 32-bit floats, after EXIF orientation"
# What records written before the exact wording said for the same operation: equal when records are compared.
_SAME_RESIZE = {PIL_BICUBIC: "bicubic", PIL_BICUBIC_16: "bicubic"}


@dataclass(frozen=True)
class Preprocess:
    """How a raw image becomes the model's input: resized to ``resize`` (when set) with ``resize_method``,
    then ``(pixel * scale - mean[c]) / std[c]`` per channel (one value: every channel), NCHW float32.
    ``resize`` is one side for a square size, ``(height, width)`` otherwise."""

    scale: float  # 1/255 for 8-bit images, 1/16 for digits, 1 for float arrays
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: str  # "grayscale", "rgb", or "as stored" (a .npz)
    resize: int | tuple[int, int] | None = None
    resize_method: str | None = None
    to_channels: int | None = None  # --channels: grayscale repeated to 3, or RGB to luminance (None: as loaded)

    def __post_init__(self) -> None:
        # Loaders pass (height, width), a record an integer or a list: one form, so records compare equal.
        object.__setattr__(self, "resize", resolution_value(self.resize))

    def to_dict(self) -> dict[str, Any]:
        # to_channels only when set: records from before it existed stay equal to today's for the same data.
        return {"layout": "NCHW", "dtype": "float32", "channels": self.channels, "scale": self.scale,
                "mean": list(self.mean), "std": list(self.std), "resize": _resize_record(self.resize),
                "resize_method": self.resize_method, **({"to_channels": self.to_channels} if self.to_channels else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(float(d["scale"]), tuple(map(float, d["mean"])), tuple(map(float, d["std"])), str(d["channels"]),
                   d.get("resize"), d.get("resize_method"), d.get("to_channels"))


def comparable(described: dict[str, Any]) -> dict[str, Any]:
    """A data record (``Dataset.describe()``, or one a run folder recorded) with its resize method as records
    from before the exact wording name it, for comparing records of runs edgekd versions apart and for keys
    (a cached teacher's) that must not change: the operation is the same, only its name is exact now."""
    pre = described.get("preprocess")
    if not isinstance(pre, dict) or pre.get("resize_method") not in _SAME_RESIZE:
        return described
    return {**described, "preprocess": {**pre, "resize_method": _SAME_RESIZE[pre["resize_method"]]}}


def parse_resolution(value: Any) -> tuple[int, int] | None:
    """--resolution as (height, width): one side (224, "224") is square; "HEIGHTxWIDTH" ("240x320") or a
    pair ([240, 320], as a recipe or a manifest records it) is not. Height first, as in NCHW shapes."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts: list[Any] = list(value)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        parts = [value, value]
    else:
        text = str(value).strip().lower().replace("×", "x")
        parts = text.split("x") if "x" in text else [text, text]
    try:
        hw = tuple(int(str(v).strip()) for v in parts)
    except ValueError:
        hw = ()
    if len(hw) != 2 or min(hw) < 1:
        raise ConfigError(f"--resolution {value} is not a positive side or HEIGHTxWIDTH", RESOLUTION_FIX)
    if min(hw) < MIN_SIDE:
        raise ConfigError(f"--resolution {value} is too small", f"pass {MIN_SIDE} or more for each side")
    if max(hw) > MAX_SIDE:
        raise ConfigError(f"--resolution {value} is too large: edgekd trains at most {MAX_SIDE} pixels a side",
                          f"pass {MAX_SIDE} or less for each side (e.g. 224)")
    return hw  # type: ignore[return-value]


def parse_shape(value: Any) -> tuple[int, ...]:
    """An input shape as "1,3,224,224" (or "1x3x224x224") or a list of positive integers."""
    parts = value if isinstance(value, (list, tuple)) else str(value).replace("x", ",").split(",")
    try:
        dims = tuple(int(str(d).strip()) for d in parts)
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        raise ConfigError(f"--input-shape '{text}' is not a list of positive integers", "write it as 1,3,224,224")
    from edgekd.validate import check_input_size

    check_input_size(dims)  # before a worker process tries to allocate it
    return dims


def check_image_size(source: Any, hw: tuple[int, int]) -> None:
    """Images kept at their stored size (no --resolution) must have a side --resolution would accept."""
    if MIN_SIDE <= min(hw) and max(hw) <= MAX_SIDE:
        return
    said = "too small" if min(hw) < MIN_SIDE else "too large"
    raise DataError(f"{source}: images are {hw[0]}x{hw[1]} (height x width), {said} to use as stored",
                    f"pass --resolution to resize them ({MIN_SIDE} to {MAX_SIDE} pixels a side, e.g. 32)")


def resolution_value(value: Any) -> int | tuple[int, int] | None:
    """Any --resolution form as it is kept and recorded: one side when square (as it always was), else
    (height, width)."""
    hw = parse_resolution(value)
    if hw is None:
        return None
    return hw[0] if hw[0] == hw[1] else hw


def resolution_text(value: Any) -> str:
    """'224' or '240x320' (height x width), for messages and --resolution suggestions."""
    hw = parse_resolution(value)
    return "" if hw is None else (str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}")


def _resize_record(resize: int | tuple[int, int] | None) -> int | list[int] | None:
    # JSON (manifest, ONNX metadata) gets a list for a non-square size; a square one stays one integer,
    # so records and readers from before non-square sizes existed are unchanged.
    return list(resize) if isinstance(resize, tuple) else resize


def orientation_notes(stored_hw: tuple[int, int], resolution: tuple[int, int] | None) -> tuple[str, ...]:
    """A warning when ``resolution`` turns landscape images portrait, or the reverse: a camera's WIDTHxHEIGHT
    (640x480) typed where edgekd reads HEIGHTxWIDTH is the likely cause, and it distorts every image."""
    if resolution is None:
        return ()
    (h0, w0), (h, w) = stored_hw, resolution
    if h0 == w0 or h == w or (h0 > w0) == (h > w):
        return ()
    turned = "portrait" if h > w else "landscape"
    return (f"--resolution {h}x{w} is HEIGHTxWIDTH and makes the images, stored {h0} high x {w0} wide, {turned}; "
            f"pass --resolution {w}x{h} to keep their orientation",)


def describe_preprocess(d: dict[str, Any]) -> str:
    """One line for people: what to feed the shipped model."""
    pixel = pixel_text(d["scale"])
    hw = parse_resolution(d.get("resize"))
    size = "" if not hw else f"{hw[0]}x{hw[1]}" if hw[0] == hw[1] else f"{hw[0]} high x {hw[1]} wide"
    # The schema leaves resize_method optional (null without a resize): a manifest without it is still valid.
    resize = f"resized to {size} ({d.get('resize_method') or 'method not recorded'}), " if hw else ""
    convert = {3: "repeated to 3 channels, ", 1: f"to 1 channel of {LUMA_TEXT}, "}.get(d.get("to_channels"), "")
    return (f"{d['channels']} {d['layout']} {d['dtype']}, {convert}{resize}({pixel} - {_per_channel(d['mean'])}) / "
            f"{_per_channel(d['std'])}")


def pixel_text(scale: float) -> str:
    """How a stored pixel value is scaled before the mean and std, for people: "pixel / 255"."""
    return "pixel" if scale == 1 else (f"pixel / {1 / scale:g}" if scale < 1 else f"pixel * {scale:g}")


def _per_channel(values: list[float]) -> str:
    return f"{values[0]:.4g}" if len(values) == 1 else "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def recorded_preprocess(manifest: dict[str, Any]) -> Preprocess | None:
    """The preprocessing a manifest records for its data (None: a manifest from before it was recorded)."""
    recorded = (manifest.get("data") or {}).get("preprocess")
    return Preprocess.from_dict(recorded) if recorded else None


def parse_normalize(spec: Any) -> str | tuple[tuple[float, ...], tuple[float, ...]]:
    """'dataset' (default), 'none', or 'MEAN/STD' with comma-separated per-channel values."""
    if spec is None or spec == "dataset":
        return "dataset"
    if spec == "none":
        return "none"
    if isinstance(spec, Preprocess):
        return spec.mean, spec.std
    text = str(spec)
    try:
        mean_text, std_text = text.split("/")
        mean = tuple(float(v) for v in mean_text.split(","))
        std = tuple(float(v) for v in std_text.split(","))
    except ValueError:
        raise DataError(f"--normalize '{text}' is not dataset, none or MEAN/STD", NORMALIZE_FIX) from None
    if not all(v > 0 and math.isfinite(v) for v in std) or not all(math.isfinite(v) for v in mean):
        raise DataError(f"--normalize '{text}' has a standard deviation that is not positive and finite",
                        NORMALIZE_FIX)
    return mean, std


def normalize_images(x: np.ndarray, stats_from: np.ndarray, normalize: Any, source: str, in_place: bool = False,
                     ) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """``x`` normalised as ``normalize`` says; the mean and std used (the data's own are one value over
    every pixel of ``stats_from``). ``in_place``: ``x`` is edgekd's own float32 array (never one a caller
    passed in), overwritten rather than copied, so loading holds one copy of the images, not two."""
    mean, std = normalization(stats_from, normalize, x.shape[1], source)
    return apply_normalization(x, mean, std, in_place), mean, std


def normalization(stats_from: np.ndarray, normalize: Any, channels: int, source: str,
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std ``normalize`` says for ``channels``-channel images (the data's own: one value over
    every pixel of ``stats_from``), before any split is normalised, so normalising one in place cannot
    change the statistics the others get."""
    spec = parse_normalize(normalize)
    if spec == "dataset":
        # numpy's own mean and std, not a chunked sum: records (a cached teacher's key, a distilled folder's
        # data) compare them exactly, and another rounding would make every earlier run's data "different"
        mean, std = (float(stats_from.mean()),), (float(stats_from.std()) or 1.0,)
    elif spec == "none":
        mean, std = (0.0,), (1.0,)
    else:
        mean, std = spec  # type: ignore[misc]
    for what, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise DataError(f"--normalize gives {len(values)} {what} values for the {channels}-channel images of "
                            f"{source}", "give one value, or one per channel")
    return tuple(mean), tuple(std)


def apply_normalization(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
                        in_place: bool = False) -> np.ndarray:
    """``(x - mean) / std`` per channel as float32: one new array, or ``x`` itself when ``in_place`` (and
    it is float32 already). The same float32 operations either way, so both give the same values."""
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    out = x if in_place and x.dtype == np.float32 else np.subtract(x, m, dtype=np.float32)
    if out is x:
        np.subtract(out, m, out=out)
    np.divide(out, s, out=out)  # into the same array: ``(x - m) / s`` made a second full-size one
    return out


def parse_channels(value: Any) -> int | None:
    """--channels as the CLI ("3"), a recipe or pyproject (3) or the API gives it: 1, 3 or None."""
    if value is None:
        return None
    if str(value) not in ("1", "3"):
        raise ConfigError(f"--channels {value} is not 1 or 3",
                          "pass 3 to repeat grayscale images to RGB, 1 to take RGB images' luminance")
    return int(value)


READ_AS = {"grayscale": 1, "rgb": 3}  # a recorded ``Preprocess.channels`` of image files, as a channel count


def recorded_channels(recorded: Preprocess | None) -> int | None:
    """The channels a model recorded as trained on, for the data it is scored on: its --channels conversion,
    else how its image files were read (one colour file reads a whole folder as RGB, its grayscale images
    repeated, as a grayscale test set then must be); None for arrays taken as stored, or no record."""
    if recorded is None:
        return None
    return recorded.to_channels or READ_AS.get(recorded.channels)


def check_channels(channels: int | None) -> None:
    if channels is not None and channels not in (1, 3):
        raise DataError(f"--channels {channels} is not 1 or 3", CHANNELS_FIX)


def convert_channels(x: np.ndarray, channels: int | None, source: str) -> tuple[np.ndarray, int | None]:
    """NCHW ``x`` with ``channels`` channels, and ``channels`` when that converted anything (None: as it was).
    Grayscale becomes RGB by repeating it (what a teacher trained on colour images needs to see grayscale
    data), RGB becomes grayscale by its luminance."""
    check_channels(channels)
    if channels is None or x.shape[1] == channels:
        return x, None
    if x.shape[1] == 1 and channels == 3:
        return np.ascontiguousarray(np.repeat(x, 3, axis=1)), 3
    if x.shape[1] == 3 and channels == 1:
        luma = np.asarray(LUMA, np.float32).reshape(1, 3, 1, 1)
        return (x * luma).sum(axis=1, keepdims=True, dtype=np.float32), 1
    raise DataError(f"{source}: --channels {channels} cannot convert {x.shape[1]}-channel images",
                    "store the images with 1 (grayscale) or 3 (RGB) channels")


# Memory at the peak of loading, over the float32 images': measured at 2.0x for a .npz (its stored array, the one
# float32 copy normalised and split in place, and numpy's std of the training part) and 2.7x for an image folder
# (read_images' channels-last array is copied once to NCHW). It was 4: a copy per step, which refused data that fit.
MEMORY_FACTOR = 3


# The model data is loaded for (validate, gate): its name, fixed (height, width), channels (None: free) and
# whether they come last. A context variable, not a parameter every loader between (image folders, lists,
# arrays) would have to carry: check_memory, which each calls before decoding, refuses images of another size
# there, and its advice names the model's size rather than a guess.
_FOR_MODEL: ContextVar[tuple[str, tuple[int, int], int | None, bool] | None] = ContextVar("edgekd_for_model",
                                                                                        default=None)


def model_image_size(dims: Sequence[Any] | None) -> tuple[tuple[int, int], int | None, bool] | None:
    """The fixed (height, width), channel count (None: free) and whether channels come last, of an image
    input of ``dims`` (batch first), told as ``input_shape.feeds_channels_last`` tells it; None unless both
    sides are fixed."""
    if not dims or len(dims) != 4:
        return None
    fixed = [d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None for d in dims]

    def few(d: int | None) -> bool:  # a channel count (RGBA's 4 included), not an image side
        return d is not None and d <= 4

    # 4 channels last too: an RGBA model (N, 16, 16, 4) read as NCHW was refused as 16x4 images
    last = few(fixed[3]) and not few(fixed[1])
    (h, w), c = (fixed[1:3], fixed[3]) if last else (fixed[2:4], fixed[1])
    return None if h is None or w is None else ((h, w), c, last)


@contextmanager
def loading_for_model(model: str | Path, dims: Sequence[Any] | None) -> Iterator[None]:
    """Data loaded inside is for the model ``model``, whose first input is ``dims``: images of another size
    than its fixed one are refused from their headers, before any is decoded (20,000 photos took 19 s and
    2.5 GB to be told so), and a memory refusal suggests no other size."""
    size = model_image_size(dims)
    token = _FOR_MODEL.set((str(model), *size) if size else None)
    try:
        yield
    finally:
        _FOR_MODEL.reset(token)


def _check_model_size(path: Any, channels: int, hw: tuple[int, int], guessed: bool, to_channels: int | None) -> None:
    """Refuse images read at another size than the fixed one of the model they are loaded for, in the words
    (and the layout) latency.runtime.check_data_fits says it in once they are read."""
    model = _FOR_MODEL.get()
    if model is None or tuple(hw) == model[1]:
        return
    name, side, want, last = model
    have = to_channels or channels
    size = f"--resolution {resolution_text(side)}"
    if {want, have} == {1, 3}:
        how = "grayscale repeated to RGB" if want == 3 else "RGB to luminance"
        fix = f"pass --channels {want} ({how}) and {size}, the channels and size the model takes"
    else:
        fix = f"pass {size}, the model's size"
    takes = (*side, want) if last else (want, *side)
    has = (*hw, have) if last else (have, *hw)
    raise DataError(f"'{name}' takes {'x'.join(str(d) if d else '?' for d in takes)} inputs, and data "
                    f"'{Path(str(path)).name or path}' has {'x'.join(map(str, has))} images"
                    + (" (the first image's size, no --resolution given)" if guessed else ""), fix)


def check_memory(path: Any, count: int, channels: int, hw: tuple[int, int],
                 resolution: tuple[int, int] | None, stored: bool = False, to_channels: int | None = None) -> None:
    """Refuse, before decoding anything, images that would not fit in memory at this size; ``stored``: a
    .npz's arrays at the size they are stored at, which are read whole before any resizing. ``to_channels``
    (--channels): what the images become once read, which --channels 3 triples for grayscale ones. Loaded for
    a model (``loading_for_model``), images to be read at another size than its fixed one are refused first."""
    if not stored:  # a .npz is resized after it is read whole, so the size it is checked at here is not the last
        _check_model_size(path, channels, hw, resolution is None, to_channels)
    chosen = ("as stored" if stored else "--resolution" if resolution else
              "the first image's size (no --resolution given)")
    need = count * max(channels, to_channels or 0) * hw[0] * hw[1] * 4 * MEMORY_FACTOR
    free = available_memory()
    if free is not None and need > free:
        model = _FOR_MODEL.get()
        fix = ("store fewer or smaller images in the .npz" if stored else
               "pass fewer images: the model takes this size" if model and not stored else
               "pass a smaller --resolution (e.g. 224), or fewer images")
        raise DataError(f"{path}: {count} images at {hw[0]}x{hw[1]} (height x width, {chosen}) would take about "
                        f"{need / 2**30:.1f} GiB of memory, and {free / 2**30:.1f} GiB is available", fix)


def available_memory() -> int | None:
    """Bytes the system can still give (MemAvailable), or None where it does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
