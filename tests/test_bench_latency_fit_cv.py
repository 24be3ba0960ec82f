"""benchmarks/latency_fit_cv.py: the anchors cross-validation scores a fit, not the data it was given."""

import sys

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("latency_fit_cv")


def _records(rng, count):
    return [[(int(rng.integers(1, 9)) * 8, int(rng.integers(1, 9)) * 8, 1, 9, int(rng.choice([16, 64, 256])))
             for _ in range(int(rng.integers(2, 6)))] for _ in range(count)]


def test_linear_latency_is_predicted_exactly_and_noise_is_not(bench):
    from edgekd.search.cost_features import layout_features

    rng = np.random.default_rng(0)
    records = _records(rng, 60)
    y = np.asarray([float(np.dot([3.0, 0.2], layout_features(r, "macs"))) for r in records])
    exact = bench.cross_validate(records, y, anchors=12, activations=False, draws=5)
    assert exact["within_10pct_mean"] == pytest.approx(1.0) and exact["within_10pct_p10"] == pytest.approx(1.0)
    assert sum(exact["layouts"].values()) == 5
    noisy = bench.cross_validate(records, y * rng.uniform(0.5, 1.5, len(y)), anchors=12, activations=False, draws=5)
    assert noisy["within_10pct_mean"] < 0.6


def test_the_im2col_layouts_can_be_left_out(bench):
    """Latencies that carry unblocked convolutions' im2col cost: only the fit offered that term predicts them
    exactly, and the restricted fit never picks an im2col layout."""
    from edgekd.search.cost_features import layout_features

    rng = np.random.default_rng(1)
    widths = [6, 8, 12, 16, 21, 24, 30, 32, 42, 48]  # some block, some do not
    records = [[(1, int(rng.choice(widths)), 1, 9, 256), (int(rng.choice(widths)), int(rng.choice(widths)), 1, 9, 64),
                (int(rng.choice(widths)), int(rng.choice(widths)), 1, 9, 16)] for _ in range(60)]
    y = np.asarray([float(np.dot([2.0, 5.0, 30.0, 0.3], layout_features(r, "nchwc8+im2col"))) for r in records])
    offered = bench.cross_validate(records, y, anchors=16, activations=False, draws=4)
    assert offered["within_10pct_mean"] == pytest.approx(1.0) and offered["layouts"] == {"nchwc8+im2col": 4}
    without = bench.cross_validate(records, y, anchors=16, activations=False, draws=4, im2col=False)
    assert not any(layout.endswith("+im2col") for layout in without["layouts"])


@pytest.mark.parametrize("argv, message", [
    (["--anchors", "8,x"], "is not a list of integers"),
    (["--anchors", "2,16"], "anchors must lie in 3..199"),
    (["--draws", "0"], "--draws be positive"),
    (["--source", "missing.json"], "not found; run benchmarks/latency_predictor.py"),
    (["--source", "mbv2-only.json"], "has no 'pruned' rows"),
])
def test_bad_arguments_stop_before_any_fit(bench, tmp_path, monkeypatch, argv, message):
    import json

    good = {"results": {"host-cpu-1t": {"pruned": {}}}, "meta": {"n": 200}}
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "mbv2-only.json").write_text(json.dumps({"results": {"host-cpu-1t": {"mbv2": {}}}, "meta": {"n": 200}}))
    argv = [str(tmp_path / a) if a.endswith(".json") else a for a in argv]
    if "--source" not in argv:
        argv += ["--source", str(tmp_path / "good.json")]
    monkeypatch.setattr(sys, "argv", ["latency_fit_cv.py", "--out", str(tmp_path / "o"), *argv])
    with pytest.raises(SystemExit, match=message):
        bench.main()
    assert not list(tmp_path.glob("o.*"))


def test_rebuilt_students_must_rank_as_the_recorded_macs_baseline(bench):
    """A draw that differs from the measured one (a calibration network not skipped, say) is caught: plain
    MACs would rank the rebuilt students otherwise than the recorded baseline ranked the measured ones."""
    records = [[(8, 8 * (i + 1), 1, 9, 64)] for i in range(10)]
    units = [float(i) for i in range(10)]
    run = {"fp32": {"measured_units": units, "linear_in_macs": {"spearman": 1.0}}}
    assert bench.aligned(records, run)
    assert not bench.aligned(records[::-1], run)
    assert bench.aligned(records[::-1], {"fp32": {"measured_units": units}})  # pruned rows record no baseline


def test_the_students_follow_the_recorded_draw(bench):
    """students() rebuilds the draw a results file names (its seed): another seed, other students."""
    from edgekd.search.spaces import resolve_space

    space = resolve_space("resnet", None, (1, 16, 16))
    default = [s.key() for s in bench.students(space, 20)]
    assert default == [s.key() for s in bench.students(space, 20, 777)]
    assert len(set(default) & {s.key() for s in bench.students(space, 20, 778)}) < 10


def test_a_source_whose_rows_hold_another_n_than_its_header_is_refused_in_one_line(bench, tmp_path, monkeypatch):
    """A partial latency_predictor.py rerun with another --n once merged its rows into the file: the fit
    then met rows of 5 students under a header of 200 (a misleading anchors error, then a traceback)."""
    import json

    def row(k):
        return {p: {"measured_units": [1.0] * k, "predicted_units": [1.0] * k} for p in ("fp32", "int8")}

    mixed = {"results": {"host-cpu": {"mbv2": row(200)}, "host-cpu-1t": {"mbv2": row(200), "pruned": row(5)}},
             "meta": {"n": 5}}
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    monkeypatch.setattr(sys, "argv", ["latency_fit_cv.py", "--source", str(tmp_path / "mixed.json"), "--out",
                                      str(tmp_path / "o")])
    with pytest.raises(SystemExit, match=r"^error: .*mixed.json says n 5 but its 'host-cpu' 'mbv2' row holds 200 "
                                         r"students; rerun benchmarks/latency_predictor.py with one --n"):
        bench.main()
    assert not bench.aligned([[(8, 8, 1, 9, 64)]] * 5, {"fp32": {"measured_units": [1.0] * 200,
                                                                 "linear_in_macs": {"spearman": 1.0}}})
