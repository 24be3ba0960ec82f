"""benchmarks/latency_predictor.py: a rerun of some (profile, space) rows keeps the others and stamps its own."""

import json
from pathlib import Path

import pytest


@pytest.fixture()
def bench(load_benchmark, tmp_path, monkeypatch):
    module = load_benchmark("latency_predictor")
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    return module


def test_a_rerun_keeps_the_rows_it_did_not_measure(bench, tmp_path):
    old = {"results": {"p1": {"a": {"v": 1}, "b": {"v": 2}}, "p2": {"a": {"v": 3}, "b": {"v": 4}}},
           "meta": {"run": "day 1", "total_seconds": 60.0}}
    (tmp_path / "latency_predictor.json").write_text(json.dumps(old))
    results, meta = bench._keep_other_rows({"p1": {"a": {"v": 10}}}, {"run": "day 2"}, ["p1"], ["a"])
    assert results["p1"]["a"]["v"] == 10 and "day 2, commit " in results["p1"]["a"]["measured_in"]
    assert results["p1"]["b"] == {"v": 2} and results["p2"] == old["results"]["p2"]  # p2 / a was not rerun
    assert meta["base_meta"]["run"] == "day 1" and meta["rerun"] == {"profiles": ["p1"], "spaces": ["a"]}


def test_a_run_of_another_draw_keeps_nothing_of_the_file(bench, tmp_path):
    """Rows measured on other students (another --seed) are never mixed into a run's file."""
    old = {"results": {"p1": {"a": {"v": 1}, "b": {"v": 2}}}, "meta": {"run": "day 1", "seed": 777}}
    (tmp_path / "fresh.json").write_text(json.dumps(old))
    results, meta = bench._keep_other_rows({"p1": {"a": {"v": 10}}}, {"run": "day 2", "seed": 778}, ["p1"], ["a"],
                                           tmp_path / "fresh.json")
    assert results == {"p1": {"a": {"v": 10}}} and meta == {"run": "day 2", "seed": 778}
    old["meta"]["seed"] = 778  # the same draw: kept, as above
    (tmp_path / "fresh.json").write_text(json.dumps(old))
    results, _ = bench._keep_other_rows({"p1": {"a": {"v": 10}}}, {"run": "day 2", "seed": 778}, ["p1"], ["a"],
                                        tmp_path / "fresh.json")
    assert results["p1"]["b"] == {"v": 2}


def test_a_full_run_replaces_everything_unstamped(bench, tmp_path):
    (tmp_path / "latency_predictor.json").write_text(json.dumps({"results": {"p1": {"a": {"v": 1}}}, "meta": {}}))
    results, meta = bench._keep_other_rows({"p1": {"a": {"v": 2}}}, {"run": "day 2"}, ["p1"], ["a"])
    assert results == {"p1": {"a": {"v": 2}}} and meta == {"run": "day 2"}


def test_several_passes_measure_every_chunk_once_per_pass_and_keep_the_median(bench, monkeypatch):
    from edgekd.types import LatencyStats

    order, pass_speed = [], iter([1.0] * 3 + [2.0] * 3 + [1.1] * 3)  # the second pass: everything 2x slower

    def fake_rotated(paths, profile, ref, rounds):
        order.extend(paths)
        speed = next(pass_speed)
        return [[LatencyStats(speed, 0, 0, 0, 0.0, 10, 1, p10_ms=1.0),
                 *(LatencyStats(speed * p, 0, 0, 0, 0.0, 10, 1, p10_ms=p) for p in paths)]]

    monkeypatch.setattr(bench, "measure_rotated", fake_rotated)
    paths = [0.1 * (i + 1) for i in range(20)]
    units, ms = bench._measure(paths, None, None, chunk=8, passes=3)
    assert order == paths * 3  # chunk by chunk, all students once per pass
    assert units == pytest.approx(paths) and ms == pytest.approx([1.1 * p for p in paths])


def test_the_prediction_rate_is_the_median_pass_so_one_stall_does_not_set_it(bench):
    import time

    calls = []

    def predict_all():
        calls.append(1)
        time.sleep(0.5 if len(calls) == 1 else 0.01)  # the first pass stalls
        return [1.0] * 100

    predicted, rate = bench._timed_predictions(predict_all, repeats=5)
    assert len(calls) == 5 and list(predicted) == [1.0] * 100
    assert 1500 < rate < 10_000  # about 100 / 0.01 s; the first pass alone would give 200, the mean pass 926


def test_a_rerun_of_another_n_or_noise_subset_keeps_nothing_of_the_file(bench, tmp_path, capsys):
    """The header states one n and one re-measured subset for every row: a quick --n 5 rerun of one row once
    kept the 200-student rows under a header saying 5."""
    old = {"results": {"p1": {"a": {"v": 1}, "b": {"v": 2}}}, "meta": {"run": "day 1", "seed": 777, "n": 200}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    meta = {"run": "day 2", "seed": 777, "n": 5, "noise_subset": 30}
    results, got = bench._keep_other_rows({"p1": {"a": {"v": 10}}}, dict(meta), ["p1"], ["a"], tmp_path / "old.json")
    assert results == {"p1": {"a": {"v": 10}}} and got == meta
    assert "drew other students (n 200); its other rows are not kept" in capsys.readouterr().out
    meta.update(n=200, noise_subset=10)  # a recorded run without noise_subset re-measured 30
    results, _ = bench._keep_other_rows({"p1": {"a": {"v": 10}}}, meta, ["p1"], ["a"], tmp_path / "old.json")
    assert "b" not in results["p1"]


def test_the_results_keep_a_dot_in_the_out_name_and_are_not_replaced_without_force(bench, tmp_path, monkeypatch,
                                                                                  capsys):
    import sys

    for name in ("run.2026-12-07.json", "run.2026-12-07.md"):
        (tmp_path / name).write_text("{}")
    monkeypatch.setattr(sys, "argv", ["latency_predictor.py", "--out", str(tmp_path / "run.2026-12-07")])
    with pytest.raises(SystemExit) as stop:
        bench.main()
    assert stop.value.code == 2
    assert f"error: {tmp_path / 'run.2026-12-07.json'} holds earlier results; pass --force" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["latency_predictor", "latency_predictor_seed778", "latency_predictor_seed779"])
def test_the_recorded_results_render_as_recorded(load_benchmark, name):
    """A recorded table's text named a function the script no longer has: each renders from its JSON as kept."""
    import json

    module = load_benchmark("latency_predictor")
    results = Path(module.__file__).parent / "results"
    recorded = json.loads((results / f"{name}.json").read_text())
    assert module._markdown(recorded["results"], recorded["meta"]) == (results / f"{name}.md").read_text()
