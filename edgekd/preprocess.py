"""How a raw image becomes a model's input (scale, channels, resize, mean and std), as one record.

The record is what the manifest and every shipped ``.onnx`` file carry: a deployment pipeline feeds the
model exactly that, and gate and validate apply it again to the data they measure on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.errors import DataError

NORMALIZE_FIX = ("pass --normalize dataset (standardise with the data's own mean and std), none (pixels "
                 "scaled to [0, 1] only) or MEAN/STD, e.g. 0.5/0.25 or 0.485,0.456,0.406/0.229,0.224,0.225")


@dataclass(frozen=True)
class Preprocess:
    """How a raw image becomes the model's input: resized to ``resize`` (when set) with ``resize_method``,
    then ``(pixel * scale - mean[c]) / std[c]`` per channel (one value: every channel), NCHW float32."""

    scale: float  # 1/255 for 8-bit images, 1/16 for digits, 1 for float arrays
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: str  # "grayscale", "rgb", or "as stored" (a .npz)
    resize: int | None = None
    resize_method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"layout": "NCHW", "dtype": "float32", "channels": self.channels, "scale": self.scale,
                "mean": list(self.mean), "std": list(self.std), "resize": self.resize,
                "resize_method": self.resize_method}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(float(d["scale"]), tuple(map(float, d["mean"])), tuple(map(float, d["std"])), str(d["channels"]),
                   d.get("resize"), d.get("resize_method"))


def describe_preprocess(d: dict[str, Any]) -> str:
    """One line for people: what to feed the shipped model."""
    scale = d["scale"]
    pixel = "pixel" if scale == 1 else (f"pixel / {1 / scale:g}" if scale < 1 else f"pixel * {scale:g}")
    resize = f"resized to {d['resize']}x{d['resize']} ({d['resize_method']}), " if d.get("resize") else ""
    return (f"{d['channels']} {d['layout']} {d['dtype']}, {resize}({pixel} - {_per_channel(d['mean'])}) / "
            f"{_per_channel(d['std'])}")


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


def normalize_images(x: np.ndarray, stats_from: np.ndarray, normalize: Any, source: str,
               ) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """``x`` normalised as ``normalize`` says; the mean and std used (the data's own are one value over
    every pixel of ``stats_from``)."""
    spec = parse_normalize(normalize)
    if spec == "dataset":
        mean, std = (float(stats_from.mean()),), (float(stats_from.std()) or 1.0,)
    elif spec == "none":
        mean, std = (0.0,), (1.0,)
    else:
        mean, std = spec  # type: ignore[misc]
    channels = x.shape[1]
    for what, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise DataError(f"--normalize gives {len(values)} {what} values for the {channels}-channel images of "
                            f"{source}", "give one value, or one per channel")
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).astype(np.float32), tuple(mean), tuple(std)
