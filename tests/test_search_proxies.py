"""The search proxies' teacher side (the probe) and their edge cases, on tiny modules and a few random images:
a frozen teacher, placeholder labels, repeated images, non-finite scores, the caller's training flags."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.errors import ConfigError, DataError, ModelError
from edgekd.search.proxies import PROXIES, Probe, make_probe, naswot
from edgekd.types import StudentSpec


def _net(seed: int, width: int = 4) -> nn.Module:
    """conv-bn-relu(inplace) twice, pool, linear: a teacher or a student at 8x8, four classes."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4))


def _images(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), (np.arange(n) % 4).astype(np.int64)


def test_a_frozen_teacher_gives_the_probe_of_the_same_trainable_teacher():
    teacher = _net(0, width=6).eval()
    frozen = copy.deepcopy(teacher).requires_grad_(False)
    x, y = _images()
    trainable, fixed = make_probe(teacher, x, y), make_probe(frozen, x, y)
    assert torch.allclose(fixed.cam, trainable.cam) and torch.allclose(fixed.relation, trainable.relation)
    assert not torch.allclose(fixed.cam, fixed.relation)  # a CAM relation, not the feature relation again
    students = [_net(seed) for seed in (1, 2, 3)]
    assert [PROXIES.get("diswot")(s, fixed) for s in students] == pytest.approx(
        [PROXIES.get("diswot")(s, trainable) for s in students], rel=1e-6)
    assert not any(p.requires_grad or p.grad is not None for p in frozen.parameters())
    assert not any(p.grad is not None for p in teacher.parameters())


def test_without_labels_the_probe_takes_the_teachers_predicted_classes():
    teacher = _net(0).eval()
    x, _ = _images()
    probe = make_probe(teacher, x, None)
    with torch.no_grad():
        predicted = teacher(torch.from_numpy(x)).argmax(1)
    assert torch.equal(probe.y, predicted)
    placeholders = make_probe(teacher, x, np.zeros(len(x), dtype=np.int64))
    student = _net(1)
    assert PROXIES.get("diswot")(student, probe) != pytest.approx(PROXIES.get("diswot")(student, placeholders))


def test_search_labels_its_probe_as_its_config_says(small_data, monkeypatch):
    from edgekd.search import SearchConfig, proxies, search
    from edgekd.types import Budget

    given: list = []

    def stop(teacher, x, y):
        given.append(y)
        raise DataError("stop here", "nothing to fix")

    monkeypatch.setattr(proxies, "make_probe", stop)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(small_data.input_shape[1] ** 2, 10))
    for labels in (True, False):
        with pytest.raises(DataError, match="stop here"):
            search(teacher, small_data, "host-cpu-1t", Budget(), SearchConfig(candidates=2, labels=labels),
                   progress=False)
    assert given[0] is not None and np.isin(given[0], small_data.y_train).all() and given[1] is None


def test_the_labels_setting_reaches_the_search_from_the_pipeline_and_the_cli(run_cli, monkeypatch):
    import edgekd.pipeline
    from edgekd.pipeline import CompressConfig
    from edgekd.search import SearchConfig

    assert SearchConfig().labels and not CompressConfig(labels=False).search_config().labels
    with pytest.raises(ConfigError, match="search setting labels is 'no', not true or false"):
        SearchConfig(labels="no")
    seen: list = []

    def stop(config, out, force=False, log=None):
        seen.append(config.search_config().labels)
        raise ConfigError("stop here", "nothing to fix")

    monkeypatch.setattr(edgekd.pipeline, "run_search", stop)
    for flag in ("--labels", "--no-labels"):
        code, _, err = run_cli("search", flag, "--out", "unused.json")
        assert code != 0 and "stop here" in err
    assert seen == [True, False]


def test_a_repeated_image_is_probed_once_and_naswot_stays_finite():
    teacher, student = _net(0), _net(1)
    x, y = _images()
    repeated, labels = np.concatenate([x, x[:2]]), np.concatenate([y, y[:2]])
    probe = make_probe(teacher, repeated, labels)
    assert torch.equal(probe.x, torch.from_numpy(x)) and torch.equal(probe.y, torch.from_numpy(y))
    assert naswot(student, probe) == pytest.approx(naswot(student, make_probe(teacher, x, y)))
    # A probe holding a repeat all the same (or two images the network codes alike): finite, and lower.
    raw = Probe(torch.from_numpy(repeated), torch.from_numpy(labels), None, None)
    assert np.isfinite(naswot(student, raw)) and naswot(student, raw) < naswot(student, probe)


def test_a_probe_batch_of_one_image_repeated_is_refused():
    x, y = _images()
    with pytest.raises(DataError, match="probe batch of 8 training images holds 1 distinct image"):
        make_probe(_net(0), np.repeat(x[:1], 8, axis=0), y)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_proxys_non_finite_score_is_an_error_not_an_infeasible_candidate(value):
    from edgekd.search.search import proxy_score

    spec = StudentSpec("mbv2", {"width": 8})
    with pytest.raises(ModelError, match=f"the naswot proxy scored the 'mbv2' candidate .* {value}, which ranks "
                                         "nothing; choose another --proxy"):
        proxy_score(lambda _m, _p: value, None, None, "naswot", spec)
    assert proxy_score(lambda _m, _p: 2.5, None, None, "naswot", spec) == 2.5


def test_a_proxys_own_lowest_score_ranks_last_and_stays_a_candidate():
    """synflow's log of a saliency of 0 is -inf, which the search reads as over the limits: the candidate
    was dropped as infeasible (and, after that, the whole search stopped with an error)."""
    import numpy as np

    from edgekd.search.search import LOWEST_SCORE, proxy_score

    score = proxy_score(lambda _m, _p: float("-inf"), None, None, "synflow", StudentSpec("mbv2", {"width": 8}))
    assert score == LOWEST_SCORE and np.isfinite(score) and score < -1e300


@pytest.mark.parametrize("name", ["diswot", "naswot", "diswot_init", "synflow", "grad_norm", "zico"])
def test_the_probe_and_the_proxies_leave_the_callers_training_flags(name):
    """...and score alike whatever the flags: each runs the models (or copies of them) in the mode it needs."""
    teacher, student = _net(0, width=6).train(), _net(1).train()
    x, y = _images()
    probe = make_probe(teacher, x, y)
    assert teacher.training
    score = PROXIES.get(name)(student, probe)
    assert student.training and teacher.training
    assert score == pytest.approx(PROXIES.get(name)(student.eval(), make_probe(teacher.eval(), x, y)), rel=1e-6)


def test_the_pruned_space_leaves_the_teachers_training_flag():
    from edgekd.search.pruned import prune_stages

    teacher = _net(0).train()
    assert prune_stages(teacher, (1, 8, 8)) and teacher.training
