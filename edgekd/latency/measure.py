"""Interleaved latency measurement: warm-up, repeats, p50/p90/p99 and coefficient of variation.

Models being compared are measured in one run, their repeats interleaved (rotating order), so
drift of the machine hits all of them alike and their ratios stay meaningful. The measurement runs
on the profile's own runtime through its runner (``[runner] kind``: local, ssh or adb); see
``edgekd.latency.runners`` and the standalone ``edgekd/latency/worker.py`` that does the timing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgekd.profiles import DeviceProfile
from edgekd.types import LatencyStats


def measure(paths: Sequence[str | Path], profile: DeviceProfile,
            shape: Sequence[int] | None = None) -> list[LatencyStats]:
    """Measure every model in ``paths`` on ``profile``, interleaved; one LatencyStats per path, in order."""
    from edgekd.latency.runners import get_runner

    if isinstance(paths, (str, Path)):  # one model: a string is no list of its characters
        paths = [paths]
    return get_runner(profile).measure(list(paths), shape)


def speedup(baseline: LatencyStats, candidate: LatencyStats) -> float:
    """How many times faster ``candidate`` is than ``baseline`` (p50 ratio)."""
    return baseline.p50_ms / candidate.p50_ms
