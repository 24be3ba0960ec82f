"""benchmarks/calibration_rounds.py: scoring a table on measured students, the per-turn means, the tables."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("calibration_rounds")


def _row(turn, rounds, space, fp32, int8, seconds=100.0):
    def cell(within):
        return {"within_5pct": within / 2, "within_10pct": within, "median_abs_err_pct": 4.0}

    return {"turn": turn, "rounds": rounds, "space": space, "seconds": seconds, "fp32": cell(fp32), "int8": cell(int8)}


def _record():
    runs = [_row(0, 3, "mbv2", 0.8, 0.9), _row(0, 3, "resnet", 0.7, 0.6, seconds=50.0),
            _row(1, 5, "mbv2", 1.0, 1.0, seconds=300.0), _row(1, 5, "resnet", 0.9, 0.9)]
    return {"profile": "host-cpu-1t", "order": [3, 5], "spaces": ["mbv2", "resnet"], "source_seed": 779, "n": 200,
            "runs": runs}


def test_a_prediction_counts_within_a_band_by_its_error_relative_to_the_measurement(bench):
    got = bench.score(np.array([1.04, 0.89, 1.0, 2.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    assert got["within_5pct"] == pytest.approx(0.5)
    assert got["within_10pct"] == pytest.approx(0.5)  # 11% and 100% off are not within 10%
    assert got["median_abs_err_pct"] == pytest.approx(7.5)


def test_each_turn_is_scored_over_its_spaces_and_precisions(bench):
    first, second = bench.turn_scores(_record())
    assert (first["rounds"], first["within_10pct"], first["seconds_max"]) == (3, pytest.approx(0.75), 100.0)
    assert (second["rounds"], second["within_10pct"], second["seconds_max"]) == (5, pytest.approx(0.95), 300.0)


def test_the_tables_have_a_row_per_calibration_and_per_turn(bench):
    table = bench.markdown(_record())
    assert "| 1 | 5 | mbv2 | 100.0% (50.0%) | 100.0% (50.0%) | 300 |" in table
    assert "| 0 | 3 | 75.0% | 100 |" in table
    assert "order 3, 5" in table


def test_the_students_are_the_latency_benchmarks_draw_less_the_calibration_networks(bench):
    from edgekd.latency.calibrate import sample_specs
    from edgekd.search.spaces import resolve_space

    space = resolve_space("resnet", None, bench.SHAPE)
    first = sample_specs(space, 3, 779)
    drawn = bench.students(space, 779, 2, {first[0].key()})
    assert [s.key() for s in drawn] == [first[1].key(), first[2].key()]


def test_a_source_measured_on_another_cpu_is_refused(bench):
    """The recorded seed-779 source is a Xeon's: scored against this machine's calibrations it would grade
    them by how much the two CPUs differ."""
    here = {"meta": {"cpu": bench.cpu_label(), "seed": 779}}
    bench.check_measured_here(here, "here.json")
    elsewhere = {"meta": {"cpu": "Intel(R) Xeon(R) Processor amx_int8", "seed": 779}}
    with pytest.raises(SystemExit, match=r"^error: there.json was measured on Intel\(R\) Xeon\(R\) Processor "
                                         r"amx_int8, not on this machine's .*; run benchmarks/latency_predictor.py "
                                         r"--seed 779 here first"):
        bench.check_measured_here(elsewhere, "there.json")


def test_a_profile_without_a_table_is_one_line_naming_the_calibration(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_PROFILE_DIR", str(tmp_path))
    source = {"meta": {"seed": 779, "n": 2, "cpu": bench.cpu_label()}, "results": {"host-cpu-1t": {}}}
    with pytest.raises(SystemExit, match=r"^error: profile 'host-cpu-1t' has no latency table for space 'mbv2'.*; "
                                         r"run `edgekd profiles calibrate host-cpu-1t --space mbv2` here first"):
        bench.run(source, [3], ["mbv2"])
