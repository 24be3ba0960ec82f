"""Interleaved latency measurement: warm-up, repeats, p50/p90/p99 and coefficient of variation.

Models being compared are measured in one run, their repeats interleaved (rotating order), so
drift of the machine hits all of them alike and their ratios stay meaningful.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekd.latency.runtime import input_shape, open_session, random_input
from edgekd.profiles import DeviceProfile
from edgekd.types import LatencyStats


def measure(paths: Sequence[str | Path], profile: DeviceProfile,
            shape: Sequence[int] | None = None) -> list[LatencyStats]:
    """Measure every model in ``paths`` on ``profile``, interleaved; one LatencyStats per path."""
    m = profile.measure
    sessions = [open_session(p, profile) for p in paths]
    feeds = []
    for sess in sessions:
        concrete = input_shape(sess, m["batch_size"], shape)
        feeds.append({sess.get_inputs()[0].name: random_input(concrete)})
    for sess, feed in zip(sessions, feeds):
        for _ in range(m["warmup_runs"]):
            sess.run(None, feed)
    runs: list[list[float]] = [[] for _ in sessions]
    medians: list[list[float]] = [[] for _ in sessions]
    _repeat(sessions, feeds, m["repeats"], m["runs_per_repeat"], runs, medians)
    if max(_cv(med) for med in medians) > m["max_cv"]:
        # A noisy stretch: measure as much again and judge on all of it rather than on the noise.
        _repeat(sessions, feeds, m["repeats"], m["runs_per_repeat"], runs, medians)
    return [_stats(r, med) for r, med in zip(runs, medians)]


def _repeat(sessions: list, feeds: list, repeats: int, per_repeat: int,
            runs: list[list[float]], medians: list[list[float]]) -> None:
    n = len(sessions)
    for rep in range(repeats):
        for k in range(n):
            i = (rep + k) % n  # rotate so no model always runs first after a switch
            times = []
            sess, feed = sessions[i], feeds[i]
            for _ in range(per_repeat):
                start = time.perf_counter_ns()
                sess.run(None, feed)
                times.append((time.perf_counter_ns() - start) / 1e6)
            runs[i].extend(times)
            medians[i].append(float(np.median(times)))


def _cv(values: list[float]) -> float:
    arr = np.asarray(values)
    return float(arr.std() / arr.mean()) if arr.mean() > 0 else 0.0


def _stats(runs: list[float], medians: list[float]) -> LatencyStats:
    arr = np.asarray(runs)
    return LatencyStats(
        p50_ms=float(np.percentile(arr, 50)),
        p90_ms=float(np.percentile(arr, 90)),
        p99_ms=float(np.percentile(arr, 99)),
        mean_ms=float(arr.mean()),
        cv=_cv(medians),
        runs=len(runs),
        repeats=len(medians),
    )


def speedup(baseline: LatencyStats, candidate: LatencyStats) -> float:
    """How many times faster ``candidate`` is than ``baseline`` (p50 ratio)."""
    return baseline.p50_ms / candidate.p50_ms
