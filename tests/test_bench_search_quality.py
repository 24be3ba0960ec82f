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


def _record(compare, bench=None):
    tau = dict.fromkeys(bench.PROXY_NAMES, 0.1) if bench else {}
    return {"seed": 2, "precision": "int8", "epochs": 5, "seeds": 3, "per_space": 30, "quantile": 0.6,
            "profile": "host-cpu-1t", "truth_seeds": 2, "command": "make bench-search", "machine": "x86_64, 2 cores",
            "search_1000": {"candidates": 1000, "seconds": 26.0, "latency_source": "fit"},
            "spaces": [{"space": "pruned", "budget_ms": 0.7, "tau": tau, "seed_tau": None, "random_mean_accuracy": 0.98,
                        "proxy_s_median": {"diswot": 0.08}, "distill_s_median": 25.0, "compare": compare}]}


def _entry(keep, accuracies):
    return {"spec": {"space": "pruned", "config": {"keep": keep}}, "accuracies": accuracies,
            "accuracy_mean": sum(accuracies) / len(accuracies), "accuracy_std": 0.0}


def test_add_seeds_keeps_reproduced_seeds_distils_afresh_otherwise_and_measures_against_the_budget(bench,
                                                                                                    monkeypatch):
    distilled = []

    def distill(space, spec, data, teacher, epochs, seed):
        distilled.append((spec.config["keep"][0], seed, epochs))
        if spec.config["keep"][0] == 0.5:  # today's trainer no longer gives the recorded seed 0
            return 0.90 + seed / 1000, 1.0
        return {0.25: 0.98, 0.375: 0.99}[spec.config["keep"][0]] + (0.004 if seed % 2 else 0.0), 1.0

    monkeypatch.setattr(bench, "_distill", distill)
    monkeypatch.setattr(bench, "_measured_side_by_side", lambda space, specs, *a: [0.65, 0.72, 0.60])
    import edgekd.search.spaces as spaces

    monkeypatch.setattr(spaces, "resolve_space", lambda *a: None)
    out = _record({"searched:params": _entry([0.25], [0.98, 0.984, 0.98]),
                   "largest": _entry([0.375], [0.99, 0.994, 0.99]),
                   "random": _entry([0.5], [0.97, 0.97, 0.97])}, bench)
    args = argparse.Namespace(seed=0, precision="fp32", epochs=1, out="sq")
    result = bench._add_seeds(out, 6, args, argparse.Namespace(input_shape=(1, 32, 32)), None, None, print)
    more = result["spaces"][0]["more_seeds"]
    assert [s for k, s, e in distilled if k == 0.25] == [0, 3, 4, 5] and {e for *_, e in distilled} == {5}
    assert [s for k, s, e in distilled if k == 0.5] == [0, 1, 2, 3, 4, 5]  # not reproduced: all 6 afresh
    assert more["entries"]["searched:params"]["accuracies"] == [0.98, 0.984, 0.98, 0.984, 0.98, 0.984]
    assert more["entries"]["largest"]["reproduced"] and not more["entries"]["random"]["reproduced"]
    assert more["measured_ms"] == {"searched:params": 0.65, "largest": 0.72, "random": 0.60}
    d = more["differences"]["largest"]
    assert d["diff"] == pytest.approx(-0.01) and d["low"] < d["diff"] < d["high"] < 0
    assert result["spaces"][0]["compare"] == out["spaces"][0]["compare"]  # the 3-seed table stays as recorded
    md = bench._markdown(result)
    row = next(line for line in md.splitlines() if line.startswith("| pruned | 0.700 | 98.20"))
    assert "(0.720 ms, over budget)" in row and "(0.650 ms)" in row and row.endswith("| no |")
    assert "-1.00 [" in row and "6 seeds" in md


def test_add_seeds_refuses_a_record_without_the_default_proxys_student_or_with_enough_seeds(bench):
    args = argparse.Namespace(seed=0, precision="int8", epochs=5, out="sq")
    out = _record({"largest": _entry([0.375], [0.99]), "random": _entry([0.5], [0.97])})
    with pytest.raises(SystemExit, match="sq.json has no searched:params student in pruned: run --add-searched "
                                         "params first"):
        bench._add_seeds(out, 10, args, None, None, None, print)
    out = _record({"searched:params": _entry([0.25], [0.98]), "largest": _entry([0.375], [0.99]),
                   "random": _entry([0.5], [0.97])})
    with pytest.raises(SystemExit, match="--add-seeds 3: the record already has 3 seeds; ask for more"):
        bench._add_seeds(out, 3, args, None, None, None, print)


def test_a_difference_with_no_spread_has_a_zero_width_interval(bench):
    assert bench._difference([0.99, 0.99], [0.98, 0.98]) == pytest.approx({"diff": 0.01, "low": 0.01, "high": 0.01})


def test_add_seeds_distils_a_baseline_that_is_the_searched_student_once(bench, monkeypatch):
    distilled = []
    monkeypatch.setattr(bench, "_distill", lambda space, spec, d, t, e, seed: (distilled.append(seed) or 0.98, 1.0))
    monkeypatch.setattr(bench, "_measured_side_by_side", lambda space, specs, *a: [0.6, 0.6, 0.6])
    import edgekd.search.spaces as spaces

    monkeypatch.setattr(spaces, "resolve_space", lambda *a: None)
    same = _entry([0.375], [0.98, 0.98, 0.98])
    out = _record({"searched:params": same, "largest": dict(same), "random": dict(same)}, bench)
    args = argparse.Namespace(seed=0, precision="int8", epochs=5, out="sq")
    more = bench._add_seeds(out, 4, args, argparse.Namespace(input_shape=(1, 32, 32)), None, None, print)
    assert distilled == [0, 3] and more["spaces"][0]["more_seeds"]["entries"]["random"]["accuracies"] == [0.98] * 4
