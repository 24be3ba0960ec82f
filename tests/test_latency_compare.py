"""latency.compare: paired repeat ratios, a distribution-free interval, and measuring longer near the line."""

import itertools

import pytest

from edgekd.latency.compare import measure_until_clear, median_interval, paired_ratios, ratio
from edgekd.types import LatencyStats


def _stats(p50: float, repeats: tuple[float, ...] = ()) -> LatencyStats:
    return LatencyStats(p50, p50, p50, p50, 0.0, 10 * max(len(repeats), 1), max(len(repeats), 1),
                        repeat_p50_ms=repeats)


def test_repeats_pair_up_and_a_burst_on_one_side_does_not_move_the_median():
    # Round 1: a noisy stretch slowed two of model a's three repeats; a whole-run p50 ratio would read 1.5x.
    slow = _stats(1.5, (1.5, 1.5, 1.0))
    runs = [[slow, _stats(1.0, (1.0, 1.0, 1.0))], [_stats(1.0, (1.0, 1.1, 0.9)), _stats(1.0, (1.0, 1.1, 0.9))],
            [_stats(1.0, (1.0, 1.0, 1.0)), _stats(1.0, (1.0, 1.0, 1.0))]]
    assert paired_ratios(runs) == pytest.approx([1.5, 1.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    found = ratio(runs)
    assert found.median == pytest.approx(1.0) and found.pairs == 9
    assert found.low == pytest.approx(1.0) and found.high == pytest.approx(1.5)


def test_a_runner_without_repeat_medians_falls_back_to_whole_run_p50s():
    runs = [[_stats(2.0), _stats(1.0)], [_stats(3.0), _stats(1.0)]]
    assert paired_ratios(runs) == [2.0, 3.0]
    assert ratio(runs, scale=2.0).median == pytest.approx(1.25)  # divided by a recorded ratio


def test_the_interval_is_the_order_statistics_that_bracket_the_median():
    values = list(range(1, 22))  # n = 21: x(6) and x(16) hold the median with >= 95% confidence
    assert median_interval(values) == (11.0, 6.0, 16.0)
    assert median_interval([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0)  # too few for 95%: the whole range
    with pytest.raises(ValueError):
        median_interval([])


def test_coverage_of_the_interval_is_at_least_its_confidence():
    # Exhaustive over which of n samples fall below the true median: the interval misses it at most 5% of the time.
    n = 12
    misses = 0
    for below in itertools.product((0, 1), repeat=n):
        values = [(-1.0 - i) if b else (1.0 + i) for i, b in enumerate(below)]  # true median is 0
        _, low, high = median_interval(values)
        misses += not low <= 0 <= high
    assert misses / 2 ** n <= 0.05


def test_a_near_call_is_measured_twice_as_long_and_a_clear_one_is_not():
    calls = []

    def take(a_repeats):
        def run():
            calls.append(1)
            return [_stats(1.0, a_repeats), _stats(1.0, (1.0,) * len(a_repeats))]
        return run

    found, runs, extra = measure_until_clear(take((1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0)), 3, 1.1)
    assert (extra, len(runs), len(calls)) == (0, 3, 3) and found.high < 1.1
    calls.clear()
    found, runs, extra = measure_until_clear(take((1.0, 1.2, 0.95, 1.15, 1.05, 1.12, 0.9)), 3, 1.1)
    assert (extra, len(runs), len(calls)) == (3, 6, 6) and found.pairs == 42 and found.straddles(1.1)
