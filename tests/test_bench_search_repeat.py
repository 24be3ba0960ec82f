"""benchmarks/search_repeat.py: the per-version summary of repeated searches and its table."""

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("search_repeat")


def _run(label, keep, params, search_ms):
    return {"label": label, "space": "pruned", "budget_ms": 0.7, "seed": 2, "candidates": 300,
            "profile": "host-cpu-1t", "seconds": 20.0, "spec": {"space": "pruned", "config": {"keep": keep}},
            "params": params, "search_ms": search_ms, "predicted_ms": 0.6, "measured": 6, "log": []}


def _record():
    failed = {"label": "old", "space": "pruned", "budget_ms": 0.7, "seed": 2, "candidates": 300,
              "profile": "host-cpu-1t", "seconds": 30.0, "error": "no candidate meets ...", "log": []}
    runs = [_run("old", [1.0], 300, 0.6), _run("old", [0.5], 200, 0.4), failed,
            _run("new", [1.0], 300, 0.8), _run("new", [1.0], 300, 0.8)]
    students = {'pruned:{"keep": [1.0]}': {"ms": 0.8, "units": 8.0},
                'pruned:{"keep": [0.5]}': {"ms": 0.5, "units": 5.0}}
    return {"runs": runs, "remeasured": {"date": "2026-12-05", "rounds": 5, "profile": "host-cpu-1t",
                                         "students": students}}


def test_each_version_is_summarised_on_the_re_measured_latency_of_what_it_chose(bench):
    old, new = bench.summary(_record())
    assert (old["label"], old["searches"], old["failed"], old["students"]) == ("old", 3, 1, 2)
    assert old["median_ms"] == pytest.approx(0.65) and old["range_ms"] == pytest.approx(0.3)
    assert old["over_budget"] == pytest.approx(0.5)  # the 0.8 ms student of two that chose
    assert old["search_vs_remeasured"] == pytest.approx(0.225)  # 0.6 vs 0.8 and 0.4 vs 0.5: the median of 25% and 20%
    assert (new["searches"], new["failed"], new["students"], new["range_ms"]) == (2, 0, 1, 0.0)
    assert new["over_budget"] == 1.0


def test_the_table_has_a_row_per_space_and_version(bench):
    table = bench.markdown(_record())
    rows = [line for line in table.splitlines() if line.startswith("| pruned")]
    assert len(rows) == 2
    assert rows[0].startswith("| pruned | 0.7 | old | 3 | 1 | 2 | 0.650 [0.500, 0.800] | 0.300 | 50% |")
