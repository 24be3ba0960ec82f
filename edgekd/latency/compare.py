"""How much slower one model is than another, measured interleaved, with a confidence interval.

A ratio of two whole-run p50s rests on few independent numbers: on a loaded 2-core CI runner a 0.1 ms
model came out 1.21x slower than *itself* as the median of three such ratios. The models' repeats take turns, so
the k-th repeat of each ran moments apart under the same load; their ratios are many paired samples
whose median shrugs off a noisy stretch that hits one side. The interval around that median is
distribution-free (order statistics), so it holds for the skewed, bursty timings a shared machine gives.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

from edgekd.types import LatencyStats, Ratio

CONFIDENCE = 0.95


def paired_ratios(runs: Sequence[Sequence[LatencyStats]], a: int = 0, b: int = 1) -> list[float]:
    """Repeat-by-repeat ratios of model ``a`` to model ``b`` over interleaved runs (each a measure() result)."""
    out: list[float] = []
    for stats in runs:
        x, y = stats[a].repeat_p50_ms, stats[b].repeat_p50_ms
        if x and len(x) == len(y) and all(v > 0 for v in y):
            out += [p / q for p, q in zip(x, y)]
        elif stats[b].p50_ms > 0:
            out.append(stats[a].p50_ms / stats[b].p50_ms)
    return out


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(median, low, high): the order statistics x(k) and x(n+1-k) bracket the median with at least
    ``confidence`` for any continuous distribution; below 6 values no k qualifies and the range is used."""
    xs = sorted(values)
    n = len(xs)
    if not n:
        raise ValueError("no values")
    k, tail = 0, 0.0
    while k < n // 2:
        tail_next = tail + math.comb(n, k) / 2 ** n  # P(fewer than k+1 values below the median)
        if tail_next > (1 - confidence) / 2:
            break
        tail, k = tail_next, k + 1
    low, high = (xs[k - 1], xs[n - k]) if k else (xs[0], xs[-1])
    return float(statistics.median(xs)), float(low), float(high)


def ratio(runs: Sequence[Sequence[LatencyStats]], a: int = 0, b: int = 1, scale: float = 1.0) -> Ratio:
    """``a`` over ``b`` (divided by ``scale``, e.g. a recorded ratio) from interleaved runs."""
    values = [r / scale for r in paired_ratios(runs, a, b)]
    median, low, high = median_interval(values)
    return Ratio(median, low, high, len(values))


def measure_until_clear(take: Callable[[], list[LatencyStats]], rounds: int, limit: float,
                        scale: float = 1.0) -> tuple[Ratio, list[list[LatencyStats]], int]:
    """Measure ``rounds`` interleaved runs; when the ratio's interval still holds ``limit``, as many again
    (once), so that a verdict near the line rests on twice the data. Returns (ratio, runs, extra rounds)."""
    runs = [take() for _ in range(rounds)]
    found = ratio(runs, scale=scale)
    if not found.straddles(limit):
        return found, runs, 0
    runs += [take() for _ in range(rounds)]
    return ratio(runs, scale=scale), runs, rounds
