"""benchmarks/search_quality.py: resuming an interrupted run, and a searched student that misses its budget."""

import argparse
import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("search_quality")


def _args(tmp_path, **changes):
    base = {"spaces": "mbv2,resnet", "per_space": 30, "epochs": 5, "seed": 1, "out": str(tmp_path / "sq"),
            "resume": True, "rescore": False}
    return argparse.Namespace(**{**base, **changes})


def test_resume_keeps_finished_spaces_only_under_the_same_settings(bench, tmp_path):
    lines: list[str] = []
    args = _args(tmp_path)
    partial, done = bench._resumed(args, lines.append)
    assert partial == tmp_path / "sq.partial.json" and done == {}
    partial.write_text(json.dumps({"settings": bench._settings(args), "spaces": [{"space": "mbv2", "tau": {}}]}))
    assert list(bench._resumed(args, lines.append)[1]) == ["mbv2"] and "resuming: mbv2" in lines[-1]
    assert bench._resumed(_args(tmp_path, resume=False), lines.append)[1] == {}
    assert bench._resumed(_args(tmp_path, seed=2), lines.append)[1] == {}
    assert "other settings; starting again" in lines[-1]


def test_a_search_that_finds_nothing_under_the_budget_is_a_table_cell_not_a_crash(bench):
    assert bench._cell({"error": "no candidate can meet --budget-ms 0.14"}) == "none under the budget when measured"
    assert bench._cell({"accuracy_mean": 0.9712, "accuracy_std": 0.0041}) == "97.12 ± 0.41"
    assert bench._cell(None) == "n/a"


def test_add_searched_adds_a_proxys_searched_student_under_the_recorded_budget_and_keeps_the_rest(bench, monkeypatch):
    calls = []

    def searched(name, proxy, budget_ms, args, *_rest):
        calls.append((name, proxy, budget_ms, args.seed, args.precision, args.epochs, args.seeds))
        return 1.5, 0.12, {"accuracy_mean": 0.98, "accuracy_std": 0.0, "accuracies": [0.98]}

    monkeypatch.setattr(bench, "_searched", searched)
    kept = {"searched:params": {"accuracy_mean": 0.97}}
    out = {"seed": 2, "precision": "int8", "epochs": 5, "seeds": 3,
           "spaces": [{"space": "mbv2", "budget_ms": 0.17, "search_seconds": {"params": 9.0},
                       "search_chosen_measured_ms": {"params": 0.16}, "compare": dict(kept)}]}
    args = argparse.Namespace(seed=0, precision="fp32", epochs=1, seeds=1, search_candidates=300)
    result = bench._add_searched(out, ["zico"], args, None, None, None, print)
    assert calls == [("mbv2", "zico", 0.17, 2, "int8", 5, 3)]  # the record's settings, not the command line's
    study = result["spaces"][0]
    assert study["compare"]["searched:params"] == kept["searched:params"]
    assert study["compare"]["searched:zico"]["accuracy_mean"] == 0.98
    assert study["search_seconds"] == {"params": 9.0, "zico": 1.5} and "zico" in result["added_searched"]


def test_add_searched_refuses_an_unknown_proxy_before_any_work(bench, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "argv", ["search_quality.py", "--add-searched", "params,nope"])
    monkeypatch.setattr(bench, "_add_searched", lambda *a: pytest.fail("searched before the check"))
    with pytest.raises(SystemExit, match="unknown proxy 'nope' in --add-searched; choose from: diswot, "):
        bench.main()


def test_retime_times_the_search_again_with_the_records_seed_and_keeps_the_rest(bench, monkeypatch):
    calls = []

    def timed(args, *_rest):
        import os

        calls.append((args.seed, args.precision, os.environ["EDGEKD_CACHE_DIR"]))
        seconds = 30.0 if len(calls) == 1 else 75.0 if len(calls) == 2 else 36.0
        return {"candidates": 1000, "seconds": seconds, "proxy": "params", "latency_source": "latency table",
                "pareto_size": 5}

    monkeypatch.setattr(bench, "_timed_search", timed)
    out = {"profile": "host-cpu-1t", "seed": 2, "precision": "int8", "machine": "x86_64, 2 cores",
           "spaces": [{"space": "mbv2", "tau": {"params": 0.5}}],
           "search_1000": {"candidates": 1000, "seconds": 47.0, "latency_source": "fit", "pareto_size": 16}}
    args = argparse.Namespace(seed=0, precision="fp32", out="sq", timed_candidates=1000)
    result = bench._retime(out, args, None, None, argparse.Namespace(name="host-cpu-1t"), print)
    import os

    cache = os.environ["EDGEKD_CACHE_DIR"]
    # the record's settings, not the command line's; then twice with a cache (and profile folder) of their own
    assert [c[:2] for c in calls] == [(2, "int8")] * 3 and calls[0][2] == cache
    assert calls[1][2] == calls[2][2] != cache and os.environ["EDGEKD_CACHE_DIR"] == cache
    assert result["spaces"] == out["spaces"] and result["search_1000"]["seconds"] == 30.0 and result["retimed"]
    line = bench._timed_line(result)
    assert line.startswith("Search over 1000 mbv2 candidates scored by `params`: 30.0 s on x86_64, 2 cores")
    assert f"timed again on {result['retimed']} (`--retime`)" in line
    assert "as on a user's first search: 75.0 s, the fit's networks measured inside that time; 36.0 s" in line
    assert "scored by" not in bench._timed_line(out)  # an older record does not say which proxy it used
    with pytest.raises(SystemExit, match="timed on profile 'host-cpu-1t', not 'host-cpu': pass --profile host-cpu-1t"):
        bench._retime(out, args, None, None, argparse.Namespace(name="host-cpu"), print)
