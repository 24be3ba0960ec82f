"""Golden-ish checks of the registered losses: zero where student and teacher agree, positive, finite
and differentiable otherwise, hand-computed values, and how weighted combinations add up."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from edgekd.distill.losses import LOSSES, Batch, total_loss
from edgekd.distill.taps import Projector
from edgekd.errors import ConfigError
from edgekd.types import DistillConfig, parse_losses

CFG = DistillConfig(temperature=2.0)
FEATURE_LOSSES = ("hint", "at", "rkd")
LOGIT_LOSSES = ("kd", "dkd", "dist")


def _batch(student: torch.Tensor, teacher: torch.Tensor, labels=None, fs=(), ft=()) -> Batch:
    labels = torch.zeros(len(student), dtype=torch.long) if labels is None else labels
    return Batch(student, teacher, labels, tuple(fs), tuple(ft))


def _loss(name: str, batch: Batch, cfg: DistillConfig = CFG, part=None) -> torch.Tensor:
    return LOSSES.get(name).fn(batch, cfg, part)


def _features(seed: int = 0, shape=(6, 4, 5, 5)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _identity_projector(channels: int, size: int) -> Projector:
    proj = Projector((2, channels, size, size), (2, channels, size, size))
    with torch.no_grad():
        proj.map[0].weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
    return proj.eval()  # BN with fresh running stats: x / sqrt(1 + eps)


def test_every_registered_loss_is_listed():
    assert set(LOSSES.names()) == {"ce", "kd", "dkd", "dist", "hint", "rkd", "at"}


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_logit_losses_vanish_when_student_equals_teacher(name):
    logits = torch.randn(8, 5) * 3
    assert _loss(name, _batch(logits, logits.clone())).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_logit_losses_are_positive_finite_and_differentiable(name):
    s = torch.randn(8, 5, requires_grad=True)
    value = _loss(name, _batch(s, torch.randn(8, 5) * 2, torch.arange(8) % 5))
    value.backward()
    assert math.isfinite(value.item()) and value.item() > 1e-3
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_feature_losses_vanish_when_student_equals_teacher():
    f = _features()
    logits = torch.randn(6, 3)
    batch = _batch(logits, logits, fs=[f], ft=[f.clone()])
    assert _loss("at", batch).item() == pytest.approx(0.0, abs=1e-6)
    assert _loss("rkd", batch).item() == pytest.approx(0.0, abs=1e-6)
    assert _loss("hint", batch, part=[_identity_projector(4, 5)]).item() == pytest.approx(0.0, abs=1e-8)


def test_attention_and_relations_ignore_the_scale_of_the_features():
    f = _features()
    batch = _batch(torch.zeros(6, 3), torch.zeros(6, 3), fs=[f], ft=[3.0 * f])
    assert _loss("at", batch).item() == pytest.approx(0.0, abs=1e-6)
    assert _loss("rkd", batch).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", FEATURE_LOSSES)
def test_feature_losses_bridge_different_shapes_and_have_gradients(name):
    fs = _features(0, (6, 4, 6, 6)).requires_grad_()
    ft = _features(1, (6, 8, 3, 3))
    part = LOSSES.get(name).build([(tuple(fs.shape), tuple(ft.shape))]) if LOSSES.get(name).build else None
    value = _loss(name, _batch(torch.zeros(6, 3), torch.zeros(6, 3), fs=[fs], ft=[ft]), part=part)
    value.backward()
    assert math.isfinite(value.item()) and value.item() > 1e-3
    assert fs.grad.abs().sum() > 0
    if part is not None:  # the projector learns too
        assert all(p.grad is not None for p in part.parameters())


def test_feature_losses_average_over_tap_pairs():
    a, b, c, d = (_features(i) for i in range(4))
    one = _loss("at", _batch(torch.zeros(6, 3), None, fs=[a], ft=[b]))
    two = _loss("at", _batch(torch.zeros(6, 3), None, fs=[c], ft=[d]))
    both = _loss("at", _batch(torch.zeros(6, 3), None, fs=[a, c], ft=[b, d]))
    assert both.item() == pytest.approx((one.item() + two.item()) / 2, rel=1e-6)


def test_kd_matches_hand_computation():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    ps, pt = torch.softmax(s / 2, 1), torch.softmax(t / 2, 1)
    kl = (pt * (pt.log() - ps.log())).sum() * 4
    assert _loss("kd", _batch(s, t)).item() == pytest.approx(kl.item(), rel=1e-5)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((p * np.log(p / q)).sum())


def test_dkd_matches_its_definition_on_a_hand_made_example():
    s, t, target, temp = np.array([2.0, 1.0, 0.0]), np.array([1.0, 3.0, 0.5]), 0, 2.0
    ps, pt = _softmax(s / temp), _softmax(t / temp)
    tckd = _kl(np.array([pt[0], 1 - pt[0]]), np.array([ps[0], 1 - ps[0]])) * temp ** 2
    nckd = _kl(pt[1:] / pt[1:].sum(), ps[1:] / ps[1:].sum()) * temp ** 2
    cfg = DistillConfig(temperature=temp, dkd_alpha=1.0, dkd_beta=8.0)
    batch = _batch(torch.tensor([s], dtype=torch.float32), torch.tensor([t], dtype=torch.float32),
                   torch.tensor([target]))
    assert tckd == pytest.approx(0.6822, abs=1e-4) and nckd == pytest.approx(0.2205, abs=1e-4)  # by hand
    assert _loss("dkd", batch, cfg).item() == pytest.approx(tckd + 8.0 * nckd, rel=1e-5)


def test_dkd_recombines_into_kd():
    """Zhao et al.'s decomposition: KD = TCKD + (1 - p_t(target)) * NCKD."""
    s, t = torch.tensor([[0.3, -1.0, 2.0, 0.1]]), torch.tensor([[1.5, 0.2, -0.3, 0.9]])
    labels = torch.tensor([0])
    pt_target = torch.softmax(t / CFG.temperature, 1)[0, 0].item()
    cfg = DistillConfig(temperature=CFG.temperature, dkd_alpha=1.0, dkd_beta=1.0 - pt_target)
    kd = _loss("kd", _batch(s, t, labels))
    assert _loss("dkd", _batch(s, t, labels), cfg).item() == pytest.approx(kd.item(), rel=1e-5)


def test_dkd_uses_the_teachers_class_for_unlabelled_samples():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    unknown = _loss("dkd", _batch(s, t, torch.full((4,), -1)))
    assert unknown.item() == pytest.approx(_loss("dkd", _batch(s, t, t.argmax(1))).item(), rel=1e-6)


def test_dist_matches_pearson_correlations():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    ps = np.stack([_softmax(r / 2.0) for r in s])
    pt = np.stack([_softmax(r / 2.0) for r in t])
    inter = np.mean([1 - np.corrcoef(a, b)[0, 1] for a, b in zip(ps, pt)])
    intra = np.mean([1 - np.corrcoef(a, b)[0, 1] for a, b in zip(ps.T, pt.T)])
    batch = _batch(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32))
    assert _loss("dist", batch).item() == pytest.approx(4.0 * (inter + intra), rel=1e-4)


def test_combination_weights_add_up():
    s, t, y = torch.randn(6, 4), torch.randn(6, 4), torch.arange(6) % 4
    kd, dkd = _loss("kd", _batch(s, t, y)), _loss("dkd", _batch(s, t, y))
    ce = torch.nn.functional.cross_entropy(s, y)
    terms = (("kd", 1.0), ("dkd", 0.5))
    pure = DistillConfig(temperature=2.0, alpha=1.0)
    mixed = DistillConfig(temperature=2.0, alpha=0.7)
    assert total_loss(terms, _batch(s, t, y), pure).item() == pytest.approx((kd + 0.5 * dkd).item(), rel=1e-6)
    assert total_loss(terms, _batch(s, t, y), mixed).item() == pytest.approx(
        (0.7 * (kd + 0.5 * dkd) + 0.3 * ce).item(), rel=1e-6)


def test_without_labels_only_the_teacher_terms_count_and_without_teacher_only_the_labels():
    s, t, y = torch.randn(6, 4), torch.randn(6, 4), torch.arange(6) % 4
    unlabelled = _batch(s, t, torch.full((6,), -1))
    cfg = DistillConfig(temperature=2.0, alpha=0.5)
    assert total_loss((("kd", 2.0),), unlabelled, cfg).item() == pytest.approx(
        2.0 * _loss("kd", unlabelled).item(), rel=1e-6)
    no_teacher = total_loss((("kd", 1.0),), Batch(s, None, y), cfg)
    assert no_teacher.item() == pytest.approx(torch.nn.functional.cross_entropy(s, y).item(), rel=1e-6)


def test_kd_with_labels_keeps_the_historic_alpha_mix():
    cfg = DistillConfig(alpha=0.5, temperature=2.0)
    s, t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    ps, pt = torch.softmax(s / 2, 1), torch.softmax(t / 2, 1)
    kl = (pt * (pt.log() - ps.log())).sum() * 4
    ce = -torch.log_softmax(s, 1)[0, 0]
    assert total_loss((("kd", 1.0),), _batch(s, t, y), cfg).item() == pytest.approx(
        (0.5 * kl + 0.5 * ce).item(), rel=1e-5)


@pytest.mark.parametrize("spec", ["kd:1,hint:0.5", " kd : 1 , hint:0.5", {"kd": 1, "hint": 0.5},
                                  [["kd", 1.0], ["hint", 0.5]]])
def test_loss_combinations_parse_from_strings_mappings_and_pairs(spec):
    assert parse_losses(spec) == (("kd", 1.0), ("hint", 0.5))


def test_a_bare_name_has_weight_one():
    assert parse_losses("dkd") == (("dkd", 1.0),)


@pytest.mark.parametrize("spec, message", [
    ("kd,fitnet", r"unknown loss 'fitnet'.*choose from: at, ce, dist, dkd, hint, kd, rkd"),
    ("kd:0", "has weight 0"),
    ("kd:-1", "has weight -1"),
    ({"kd": math.nan}, "has weight nan"),
    ("kd:heavy", "weight 'heavy', not a number"),
    ("kd,kd:2", "appears twice"),
    (",", "names no loss"),
    (3, "cannot read the loss combination"),
])
def test_bad_loss_combinations_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig(losses=spec)


def test_distill_config_round_trips_through_json():
    cfg = DistillConfig(losses="kd:1,hint:0.5", student_taps=("features",), teacher_taps=("features.3",),
                        use_labels=False, dkd_beta=2.0)
    again = DistillConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.losses == (("kd", 1.0), ("hint", 0.5))
    assert cfg.to_dict()["losses"] == {"kd": 1.0, "hint": 0.5}
    assert DistillConfig.from_dict(DistillConfig().to_dict()) == DistillConfig()


@pytest.mark.parametrize("kwargs, message", [
    ({"student_taps": ("a",)}, "only one of student and teacher"),
    ({"student_taps": ("a", "b"), "teacher_taps": ("c",)}, "2 student taps but 1 teacher taps"),
    ({"student_taps": (3,), "teacher_taps": ("c",)}, "student_taps must be a list of module paths"),
    ({"dkd_beta": -1.0}, "dkd_beta must be a non-negative number"),
])
def test_bad_tap_and_dkd_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig(**kwargs)


def test_rkd_pools_tokens_over_the_tokens_and_maps_over_their_positions():
    from edgekd.distill.losses import _pooled

    tokens, maps, vectors = _features(0, (6, 10, 32)), _features(1), _features(2, (6, 5))
    assert torch.allclose(_pooled(tokens), tokens.mean(1)) and _pooled(tokens).shape == (6, 32)
    assert torch.allclose(_pooled(maps), maps.mean((2, 3))) and _pooled(vectors) is vectors
    # A student whose vectors are the teacher's token means relates the samples exactly as the teacher does.
    norm = torch.nn.LayerNorm(32)
    with torch.no_grad():
        norm.bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(3))
        teacher_tokens = norm(tokens)
    logits = torch.zeros(6, 4)
    batch = _batch(logits, logits, fs=(teacher_tokens.mean(1),), ft=(teacher_tokens,))
    assert _loss("rkd", batch).item() == pytest.approx(0.0, abs=1e-6)
