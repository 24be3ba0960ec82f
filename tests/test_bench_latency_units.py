"""benchmarks/latency_units.py: the two readings of interleaved runs, the record/replay that gives both the same
runs, and the tables."""

import numpy as np
import pytest

from edgekd.types import LatencyStats


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("latency_units")


def _stats(p10, repeats):
    return LatencyStats(sorted(repeats)[len(repeats) // 2], 0, 0, 0, 0.0, 40 * len(repeats), len(repeats),
                        p10_ms=p10, repeat_p50_ms=tuple(repeats))


def test_the_fastest_state_can_pair_moments_apart_while_the_paired_median_cannot(bench):
    # Run 2 caught the reference alone in a fast stretch (its p10 0.08 ms) while the student ran as before:
    # the fastest state divides the student's fast moment by the reference's faster one from another moment.
    runs = [[_stats(0.10, [0.11] * 7), _stats(0.20, [0.22] * 7)],
            [_stats(0.08, [0.12] * 7), _stats(0.20, [0.24] * 7)]]
    assert bench.fastest_state(runs) == pytest.approx([2.5])
    assert bench.paired_median(runs) == pytest.approx([2.0])
    # both read a runner without repeats (onnxruntime_perf_test) on its medians
    no_repeats = [[LatencyStats(2.0, 0, 0, 0, 0.0, 10, 1), LatencyStats(1.0, 0, 0, 0, 0.0, 10, 1)]]
    assert bench.fastest_state(no_repeats) == bench.paired_median(no_repeats) == [0.5]


def test_a_replay_hands_back_the_recorded_runs_and_refuses_other_measurements(bench):
    calls = []

    def measure(paths, profile, ref, rounds):
        calls.append(len(paths))
        return [[_stats(1.0, [1.0]), *[_stats(float(i + 1), [float(i + 1)]) for i in range(len(paths))]]]

    record = bench.Record(measure)
    first = record(["a", "b"], None, None, 1)
    record.replay()
    assert record(["x", "y"], None, None, 1) is first and calls == [2]
    with pytest.raises(RuntimeError, match="other measurements"):
        record(["a"], None, None, 1)


def test_with_a_second_reference_every_run_carries_both_and_an_arm_reads_one(bench):
    def measure(paths, profile, ref, rounds):
        return [[_stats(1.0, [1.0]), *[_stats(float(i + 2), [float(i + 2)]) for i in range(len(paths))]]]

    record = bench.Record(measure, second="second.onnx")
    (run,) = record(["a", "b"], None, None, 1)
    assert [s.p50_ms for s in run] == [1.0, 3.0, 4.0]  # edgekd's reference, then the models: the second left out
    record.replay()
    record.reference = 1
    (run,) = record(["a", "b"], None, None, 1)
    assert [s.p50_ms for s in run] == [2.0, 3.0, 4.0]  # the second reference leads instead


def test_both_readings_are_scored_on_one_recorded_set_of_runs(bench, fast_profile, tmp_path):
    import test_calibrate  # registers its tiny space

    calls = []

    def measure(paths, profile, ref, rounds):
        # latency in proportion to file size, the machine 10% slower every other call: both readings agree
        calls.append(len(paths))
        slow = 1.0 + 0.1 * (len(calls) % 2)
        return [[_stats(t * slow, [t * slow] * 3) for t in (p.stat().st_size / 1e5 for p in [ref, *paths])]
                for _ in range(rounds)]

    # two arms (the replay and the second reference are what this checks; the readings are checked above)
    arms = ("fastest_state", "resnet_reference")
    res = bench.space_run(fast_profile, test_calibrate.TINY, 4, 3, 2, tmp_path, log=lambda _m: None,
                          shape=test_calibrate.SHAPE, measure=measure, arms=arms, networks=16, chunk=8, rounds=1)
    assert res["runs_recorded"] == len(calls)  # the second arm measured nothing
    for reading in arms:
        for p in ("fp32", "int8"):
            assert len(res[reading][p]["measured_units"]) == 4
            assert res[reading][p]["remeasured"]["within_10pct"] == 1.0
    fastest, other = (np.asarray(res[r]["int8"]["measured_units"]) for r in arms)
    # over another reference every student's units change by one factor: the two references' ratio
    assert np.ptp(other / fastest) < 1e-9 and not np.allclose(other, fastest)


def test_the_tables_have_a_row_per_space_precision_and_reading_and_the_means(bench):
    def cell(pred, again):
        return {"predicted": {"within_5pct": pred / 2, "within_10pct": pred, "median_abs_err_pct": 4.0},
                "remeasured": {"within_5pct": again, "within_10pct": again, "median_abs_err_pct": 1.0}}

    record = {"profile": "host-cpu-1t", "cpu": "Some CPU", "date": "2026-12-05", "n": 120, "seed": 781,
              "arms": ["fastest_state", "paired_median"],
              "noise_subset": 30,
              "spaces": {"mbv2": {"fastest_state": {"fp32": cell(0.8, 0.9), "int8": cell(0.6, 0.7)},
                                  "paired_median": {"fp32": cell(0.9, 1.0), "int8": cell(0.9, 1.0)}}}}
    s = bench.summary(record)
    assert s["fastest_state"]["predicted_within_10pct"] == pytest.approx(0.7)
    assert s["paired_median"]["remeasured_within_10pct"] == pytest.approx(1.0)
    md = bench.markdown(record)
    assert "| mbv2 | int8 | fastest_state | 60.0% (30.0%) | 4.0% | 70.0% |" in md
    assert "| paired_median | 90.0% | 100.0% |" in md
