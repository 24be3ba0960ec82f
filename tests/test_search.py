import numpy as np
import pytest

from edgekd.errors import BudgetError, ConfigError
from edgekd.search import SPACES, SearchConfig, build_student, search
from edgekd.search.proxies import PROXIES, make_probe
from edgekd.types import Budget, StudentSpec

CFG = SearchConfig(candidates=12, measure_top=2, rounds=1, probe_batch=16)


def test_space_samples_build_and_run(small_data):
    import torch

    space = SPACES.get("mbv2")
    rng = np.random.default_rng(0)
    for _ in range(3):
        model = build_student(StudentSpec("mbv2", space.sample(rng)), small_data.input_shape, 10)
        assert model(torch.zeros(2, *small_data.input_shape)).shape == (2, 10)


def test_diswot_prefers_a_copy_of_the_teacher(teacher, small_data):
    """A student identical to the (trained) teacher must score the maximum similarity, 0."""
    probe = make_probe(teacher.module, small_data.x_train[:16], small_data.y_train[:16])
    same = PROXIES.get("diswot")(teacher.module, probe)
    other = PROXIES.get("diswot")(build_student(StudentSpec("mbv2", SPACES.get("mbv2").smallest()),
                                                small_data.input_shape, 10), probe)
    assert same == pytest.approx(0.0, abs=1e-5) and other < same


def test_search_chooses_best_scored_candidate_within_budget(teacher, small_data, fast_profile):
    result = search(teacher.module, small_data, fast_profile, Budget(latency_ms=50, max_size_kb=60), CFG,
                    progress=False)
    assert result.chosen.latency_ms is not None and result.chosen.latency_ms <= 50
    assert result.chosen.size_bytes <= 60 * 1024
    measured = [c for c in result.candidates if c.latency_ms is not None]
    assert result.chosen.score == max(c.score for c in measured)
    assert result.evaluated == 12


def test_unmeetable_latency_names_the_fastest(teacher, small_data, fast_profile):
    with pytest.raises(BudgetError, match=r"fastest candidate measured \d+\.\d+ ms"):
        search(teacher.module, small_data, fast_profile, Budget(latency_ms=1e-5), CFG, progress=False)


def test_unmeetable_size_names_the_smallest(teacher, small_data, fast_profile):
    with pytest.raises(BudgetError, match=r"smallest needs about \d+\.\d KB"):
        search(teacher.module, small_data, fast_profile, Budget(max_size_kb=1), CFG, progress=False)


def test_unknown_space_and_proxy(teacher, small_data, fast_profile):
    with pytest.raises(ConfigError, match="unknown search space 'nope'; choose one of: mbv2"):
        search(teacher.module, small_data, fast_profile, Budget(), SearchConfig(space="nope"), progress=False)
    with pytest.raises(ConfigError, match="unknown proxy 'nope'; choose one of: diswot, params"):
        search(teacher.module, small_data, fast_profile, Budget(), SearchConfig(proxy="nope"), progress=False)
