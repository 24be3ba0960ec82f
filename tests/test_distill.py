import numpy as np
import pytest
import torch

from edgekd.distill.losses import LOSSES
from edgekd.distill.trainer import accuracy, distill, predict
from edgekd.errors import ModelError
from edgekd.search import SPACES, build_student
from edgekd.types import DistillConfig, StudentSpec


def test_kd_loss_is_zero_soft_term_for_identical_logits():
    cfg = DistillConfig(alpha=1.0, temperature=4.0)
    logits = torch.randn(8, 10)
    assert LOSSES.get("kd")(logits, logits.clone(), torch.zeros(8, dtype=torch.long), cfg).item() == \
        pytest.approx(0.0, abs=1e-6)


def test_kd_loss_matches_hand_computation():
    cfg = DistillConfig(alpha=0.5, temperature=2.0)
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    y = torch.tensor([0])
    ps, pt = torch.softmax(s / 2, 1), torch.softmax(t / 2, 1)
    kl = (pt * (pt.log() - ps.log())).sum() * 4
    ce = -torch.log_softmax(s, 1)[0, 0]
    assert LOSSES.get("kd")(s, t, y, cfg).item() == pytest.approx((0.5 * kl + 0.5 * ce).item(), rel=1e-5)


def _student(data):
    torch.manual_seed(0)
    return build_student(StudentSpec("mbv2", SPACES.get("mbv2").smallest()), data.input_shape, data.num_classes)


def test_distillation_learns_and_is_seeded(teacher, small_data):
    cfg = DistillConfig(epochs=3, lr=1e-2, seed=1, augment=False)
    a = distill(_student(small_data), small_data, cfg, teacher=teacher.module, progress=False)
    b = distill(_student(small_data), small_data, cfg, teacher=teacher.module, progress=False)
    assert accuracy(predict(a.model, small_data.x_test), small_data.y_test) > 0.5
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert a.best_epoch == max(a.history, key=lambda h: h.val_accuracy).epoch or a.best_val_accuracy == max(
        h.val_accuracy for h in a.history)


def test_nan_loss_stops_with_a_clear_error(small_data):
    cfg = DistillConfig(epochs=1, augment=False)
    bad = small_data.__class__(small_data.name, np.full_like(small_data.x_train, np.nan), small_data.y_train,
                               small_data.x_val, small_data.y_val, small_data.x_test, small_data.y_test,
                               small_data.class_names)
    with pytest.raises(ModelError, match="loss became nan"):
        distill(_student(small_data), bad, cfg, progress=False)
