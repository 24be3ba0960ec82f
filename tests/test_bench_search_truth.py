"""benchmarks/search_truth.py: recipe parsing, the training subset, and the ground-truth summary."""

import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("search_truth")


def test_recipes_parse_and_bad_ones_say_the_format(bench):
    assert bench.parse_recipes("2@1, 15@0.2,5") == [(2, 1.0), (15, 0.2), (5, 1.0)]
    for bad in ("two@1", "2@x", "0@1", "2@1.5", "2@0"):
        with pytest.raises(SystemExit, match="EPOCHS@FRACTION|epochs >= 1"):
            bench.parse_recipes(bad)


def test_subset_keeps_a_fraction_of_training_images_only(bench):
    from edgekd.data import load_data

    data = load_data(None, seed=0)
    small = bench.subset(data, 0.2)
    assert len(small.y_train) == int(0.2 * len(data.y_train)) and len(set(small.y_train.tolist())) == 10
    assert small.x_test is data.x_test and small.x_val is data.x_val
    assert bench.subset(data, 1.0) is data


def test_summary_ranks_seeds_and_proxies_against_the_mean(bench):
    names = bench.PROXY_NAMES
    acc = [[0.90, 0.91], [0.93, 0.92], [0.95, 0.96], [0.97, 0.98]]
    scores = [{p: float(i if p == "params" else -i) for p in names} for i in range(4)]
    s = bench.summary(acc, scores)
    assert s["seed_tau"] == [pytest.approx(1.0)] and s["seed_tau_mean"] == pytest.approx(1.0)
    assert s["tau"]["params"] == pytest.approx(1.0) and s["tau"]["diswot"] == pytest.approx(-1.0)
    assert s["accuracy_min"] == pytest.approx(0.905) and s["accuracy_max"] == pytest.approx(0.975)
    noisy = bench.summary([[0.9, 0.95], [0.95, 0.9], [0.92, 0.96]], scores[:3])
    assert noisy["seed_tau"][0] < 0 and np.isfinite(noisy["tau"]["params"])


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--source", "missing.json"], "not found; run benchmarks/search_quality.py first"),
    (["--spaces", "vit"], "has no students of vit; choose from mbv2"),
])
def test_bad_arguments_stop_before_any_training(bench, tmp_path, monkeypatch, argv, message):
    source = tmp_path / "sq.json"
    source.write_text('{"spaces": [{"space": "mbv2", "candidates": []}], "epochs": 5, "per_space": 0}')
    argv = [a if a != "missing.json" else str(tmp_path / a) for a in argv]
    monkeypatch.setattr(sys, "argv", ["search_truth.py", "--source", str(source), "--out", str(tmp_path / "o"),
                                      *argv])
    with pytest.raises(SystemExit, match=message):
        bench.main()
    assert not list(tmp_path.glob("o.*"))


def test_the_recorded_results_render_as_recorded(bench):
    """The recorded JSON could no longer be rendered (a proxy added since had no tau in it: KeyError)."""
    import json

    results = Path(bench.__file__).parent / "results"
    recorded = json.loads((results / "search_truth.json").read_text())
    assert bench._markdown(recorded) == (results / "search_truth.md").read_text()
