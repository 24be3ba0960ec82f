"""benchmarks/latency_fit_cv.py: the anchors cross-validation scores a fit, not the data it was given."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "latency_fit_cv.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("latency_fit_cv_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _records(rng, count):
    return [[(int(rng.integers(1, 9)) * 8, int(rng.integers(1, 9)) * 8, 1, 9, int(rng.choice([16, 64, 256])))
             for _ in range(int(rng.integers(2, 6)))] for _ in range(count)]


def test_linear_latency_is_predicted_exactly_and_noise_is_not(bench):
    from edgekd.search.latency_model import layout_features

    rng = np.random.default_rng(0)
    records = _records(rng, 60)
    y = np.asarray([float(np.dot([3.0, 0.2], layout_features(r, "macs"))) for r in records])
    exact = bench.cross_validate(records, y, anchors=12, activations=False, draws=5)
    assert exact["within_10pct_mean"] == pytest.approx(1.0) and exact["within_10pct_p10"] == pytest.approx(1.0)
    assert sum(exact["layouts"].values()) == 5
    noisy = bench.cross_validate(records, y * rng.uniform(0.5, 1.5, len(y)), anchors=12, activations=False, draws=5)
    assert noisy["within_10pct_mean"] < 0.6
