"""Interleaved latency measurement: warm-up, repeats, p50/p90/p99 and coefficient of variation.

Models being compared are measured in one run, their repeats interleaved (rotating order), so
drift of the machine hits all of them alike and their ratios stay meaningful. The measurement runs
on the profile's own runtime through its runner (``[runner] kind``: local, ssh or adb); see
``edgekd.latency.runners`` and the standalone ``edgekd/latency/worker.py`` that does the timing.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

from edgekd.profiles import DeviceProfile
from edgekd.types import LatencyStats

# One input shape for every model measured, or one (or None: the model's own) per model, in order: models of
# other layouts compared side by side (an NCHW model and its channels-last twin) take other shapes.
Shapes = Sequence[int] | Sequence[Sequence[int] | None] | None


def per_model(shape: Shapes, count: int) -> list[tuple[int, ...] | None]:
    """``shape`` as one input shape (or None) for each of ``count`` models."""
    if not shape:
        return [None] * count
    if all(isinstance(d, Integral) for d in shape):
        return [tuple(int(d) for d in shape)] * count  # type: ignore[arg-type]
    if len(shape) != count:
        from edgekd.errors import ConfigError

        raise ConfigError(f"{len(shape)} input shapes for {count} models",
                          "give one shape for every model, or one (or None) per model, in order")
    return [tuple(int(d) for d in s) if s else None for s in shape]  # type: ignore[union-attr]


def measure(paths: Sequence[str | Path], profile: DeviceProfile,
            shape: Shapes | str = None) -> list[LatencyStats]:
    """Measure every model in ``paths`` on ``profile``, interleaved; one LatencyStats per path, in order.
    ``shape``: one input shape for all (a list, or "1,3,224,224" as --input-shape takes it), or one (or None)
    per model."""
    from edgekd.latency.runners import get_runner

    if isinstance(paths, (str, Path)):  # one model: a string is no list of its characters
        paths = [paths]
    if isinstance(shape, str):  # read as --input-shape reads it: "1,16,16" was 7 shapes, one per character
        from edgekd.preprocess import parse_shape

        shape = parse_shape(shape)
    per_model(shape, len(paths))  # a count of shapes unlike the models', refused before anything is run
    return get_runner(profile).measure(list(paths), shape)


def speedup(baseline: LatencyStats, candidate: LatencyStats) -> float:
    """How many times faster ``candidate`` is than ``baseline`` (p50 ratio)."""
    return baseline.p50_ms / candidate.p50_ms
