"""The training loop: seeded, backward compatible, unlabelled data, bad input.

Tiny synthetic data (8x8, 4 classes) and tiny CNNs keep every run here well under a second; the
helpers are shared with the other test_distill_* files and the resume script.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.data import Dataset
from edgekd.distill.targets import accuracy, predict
from edgekd.distill.trainer import distill
from edgekd.errors import ConfigError, DataError, ModelError
from edgekd.types import DistillConfig


class TinyNet(nn.Module):
    """conv-bn-relu, strided conv-relu (``features``), global pool, linear: a few hundred parameters."""

    def __init__(self, width: int = 4, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny_data(n: int = 240, classes: int = 4, side: int = 8, seed: int = 0) -> Dataset:
    """Noisy copies of one random prototype image per class, split 60/20/20."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(classes, 1, side, side)).astype(np.float32)
    y = rng.permutation(np.arange(n) % classes).astype(np.int64)
    x = (protos[y] + 0.5 * rng.normal(size=(n, 1, side, side))).astype(np.float32)
    a, b = int(n * 0.6), int(n * 0.8)
    return Dataset("tiny", x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], tuple(str(i) for i in range(classes)))


def with_labels(data: Dataset, y_train: np.ndarray | None = None, y_val: np.ndarray | None = None,
                x_train: np.ndarray | None = None) -> Dataset:
    return Dataset(data.name, data.x_train if x_train is None else x_train,
                   data.y_train if y_train is None else y_train, data.x_val,
                   data.y_val if y_val is None else y_val, data.x_test, data.y_test, data.class_names)


def student(width: int = 4, classes: int = 4, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(width, classes)


def trained_teacher(data: Dataset) -> TinyNet:
    model = student(width=8, seed=1)
    distill(model, data, DistillConfig(epochs=6, lr=2e-2, batch_size=32, augment=False), progress=False)
    model.eval()
    return model


FAST = DistillConfig(epochs=4, lr=5e-2, batch_size=32, augment=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> Dataset:
    return tiny_data()


@pytest.fixture(scope="module")
def teacher(data) -> TinyNet:
    return trained_teacher(data)


def test_supervised_training_learns(data):
    # 6 steps an epoch: 4 (FAST's batches of 32) anneal to the floor before this net has learnt the classes
    result = distill(student(), data, replace(FAST, batch_size=24), progress=False)
    assert accuracy(predict(result.model, data.x_test), data.y_test) > 0.8
    assert [h.epoch for h in result.history] == [1, 2, 3, 4]
    assert result.selected_on == "val_labels" and result.checkpoint is None


def test_the_learning_rate_anneals_to_its_floor_by_the_last_step(data):
    """The one-cycle is as long as the steps taken: 144 images in batches of about 100 are one step an epoch,
    not the two a rounded-up count made, which ended training at half the peak rate."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    rates: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda opt, _a, _k: rates.append(opt.param_groups[0]["lr"]))
    try:
        distill(student(), data, replace(FAST, epochs=3, batch_size=100), progress=False)
    finally:
        handle.remove()
    assert len(rates) == 3 and max(rates) > 0.5 * FAST.lr and rates[-1] < 0.01 * FAST.lr


def test_without_a_progress_bar_the_log_hears_the_epochs(data, monkeypatch):
    """A CI log has no progress bar: the first epoch, the last and one every EVERY_S seconds are said."""
    from edgekd import heartbeat

    lines: list[str] = []
    distill(student(), data, FAST, progress=False, log=lines.append)
    assert len(lines) == 2 and lines[0].startswith("distill: epoch 1/4, loss ")
    assert lines[1].startswith("distill: epoch 4/4") and " validation " in lines[1] and "s per epoch" in lines[1]
    monkeypatch.setattr(heartbeat, "EVERY_S", 0.0)
    lines.clear()
    distill(student(), data, FAST, progress=False, log=lines.append)
    assert [line.split(",")[0] for line in lines] == [f"distill: epoch {e}/4" for e in (1, 2, 3, 4)]
    lines.clear()
    distill(student(), data, FAST, progress=True, log=lines.append)  # the bar says it instead
    assert lines == []


def test_distillation_is_seeded_and_keeps_the_best_epoch(data, teacher):
    a = distill(student(), data, FAST, teacher=teacher, progress=False)
    b = distill(student(), data, FAST, teacher=teacher, loss="kd", progress=False)
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    best = max(a.history, key=lambda h: h.val_accuracy)
    assert a.best_val_accuracy == best.val_accuracy
    assert accuracy(predict(a.model, data.x_test), data.y_test) > 0.45  # chance: 0.25


def _epochs_kept(history, images):
    """(best, near-best) computed from a run's history, as the two rules define them."""
    from edgekd.distill.trainer import near_best_margin

    peak = max(h.val_accuracy for h in history)
    near = max(h.epoch for h in history if h.val_accuracy >= peak - near_best_margin(peak, images))
    return next(h.epoch for h in history if h.val_accuracy == peak), near


def test_near_best_keeps_the_latest_epoch_within_a_standard_error_of_the_best(data, teacher):
    config = replace(FAST, epochs=10, lr=2e-2)  # its validation peaks at epoch 8 and ends within reach of it
    best = distill(student(), data, config, teacher=teacher, progress=False)
    near = distill(student(), data, replace(config, keep="near-best"), teacher=teacher, progress=False)
    assert [(h.train_loss, h.val_accuracy) for h in best.history] == \
        [(h.train_loss, h.val_accuracy) for h in near.history]  # the rule only chooses; training is the same
    first_best, latest_near = _epochs_kept(near.history, len(data.y_val))
    assert near.best_epoch == latest_near and near.keep == "near-best"
    assert near.best_val_accuracy == near.history[latest_near - 1].val_accuracy
    assert best.best_val_accuracy == max(h.val_accuracy for h in best.history) and best.keep == "best"
    # Whether a later epoch comes within reach of the peak depends on the CPU's arithmetic (epoch 8 was both on
    # an AMD EPYC); the synthetic history below holds the rule to a later epoch whatever the machine.
    assert near.best_epoch >= best.best_epoch >= first_best
    assert "within one standard error" in near.kept_line() and "best validation" in best.kept_line()


def test_near_best_keeps_a_later_epoch_within_the_margin_and_best_the_peak():
    """The two rules on one history of validation accuracies (20 images: a margin of 0.089 below a peak of
    0.8), as _record applies them epoch by epoch."""
    from types import SimpleNamespace

    from edgekd.distill.trainer import _keeps

    kept = {}
    for rule in ("best", "near-best"):
        run = SimpleNamespace(config=SimpleNamespace(keep=rule, qat_epochs=0, qat_start=0), val_targets=[0] * 20)
        state = SimpleNamespace(peak_acc=0.0, best_acc=-1.0, best_loss=float("inf"))
        for epoch, acc in enumerate([0.5, 0.8, 0.75, 0.7], start=1):
            state.peak_acc = max(state.peak_acc, acc)
            if _keeps(run, state, epoch, acc, 1.0):
                state.best_acc, state.best_loss, kept[rule] = acc, 1.0, epoch
    assert kept == {"best": 2, "near-best": 3}  # 0.75 is within one standard error of 0.8, 0.7 is not


def test_the_near_best_margin_is_a_standard_error_and_at_least_one_image():
    from edgekd.distill.trainer import near_best_margin

    assert 1 / 179 < near_best_margin(1.0, 179) < 1 / 179 + 1e-9  # 178/179 is within it despite rounding
    assert 1.0 - near_best_margin(1.0, 179) <= 178 / 179
    assert near_best_margin(0.9, 10_000) == pytest.approx(0.003)  # sqrt(0.9 * 0.1 / 10000)
    assert near_best_margin(0.5, 100) == pytest.approx(0.05)


def test_an_unknown_keep_rule_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown keep rule 'last'; choose one of: best, near-best"):
        DistillConfig(keep="last")


@pytest.mark.parametrize("losses", ["kd", "dkd", "dist", "hint", "rkd", "at", "kd:1,hint:0.5", "dkd:1,at:1,rkd:1"])
def test_every_loss_trains_the_student(data, teacher, losses):
    cfg = DistillConfig(epochs=3, lr=5e-2, batch_size=32, augment=False, losses=losses)
    result = distill(student(), data, cfg, teacher=teacher, progress=False)
    losses = [h.train_loss for h in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_feature_losses_with_augmentation_run_the_teacher_per_batch(data, teacher):
    cfg = DistillConfig(epochs=1, lr=5e-2, batch_size=32, augment=True, losses={"hint": 1.0, "at": 1.0})
    assert np.isfinite(distill(student(), data, cfg, teacher=teacher, progress=False).history[0].train_loss)


def test_unlabelled_data_learns_from_the_teacher_alone(data, teacher):
    unlabelled = with_labels(data, y_train=np.full_like(data.y_train, -1))
    a = distill(student(), unlabelled, FAST, teacher=teacher, progress=False)
    b = distill(student(), data, DistillConfig(**{**FAST.to_dict(), "use_labels": False}), teacher=teacher,
                progress=False)
    for va, vb in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(va, vb)  # labels of -1 and use_labels=False are the same run
    assert a.selected_on == "val_labels"
    assert accuracy(predict(a.model, data.x_test), data.y_test) > 0.45


def test_without_validation_labels_the_best_epoch_agrees_most_with_the_teacher(data, teacher):
    blind = with_labels(data, y_train=np.full_like(data.y_train, -1), y_val=np.full_like(data.y_val, -1))
    result = distill(student(), blind, FAST, teacher=teacher, progress=False)
    agreement = accuracy(predict(result.model, data.x_val), predict(teacher, data.x_val).argmax(1))
    assert result.selected_on == "teacher_agreement"
    assert result.best_val_accuracy == pytest.approx(agreement)


def test_partly_labelled_data_trains(data, teacher):
    y = data.y_train.copy()
    y[::2] = -1
    result = distill(student(), with_labels(data, y_train=y), FAST, teacher=teacher, progress=False)
    assert all(np.isfinite(h.train_loss) for h in result.history)


def test_loss_argument_and_config_losses_must_agree(data, teacher):
    cfg = DistillConfig(epochs=1, losses="dkd")
    with pytest.raises(ConfigError, match="give the loss combination in one place"):
        distill(student(), data, cfg, teacher=teacher, loss="kd", progress=False)


def test_teacher_and_student_output_shapes_must_match(data):
    wide = TinyNet(8, classes=6)
    # the teacher is checked against the data first, as compress checks it
    with pytest.raises(DataError, match="the teacher predicts 6 classes but the data has 4"):
        distill(student(), data, FAST, teacher=wide, progress=False)
    with pytest.raises(ModelError, match=r"differ in shape: teacher \(2, 4\), student \(2, 6\)"):
        distill(wide, data, FAST, teacher=student(), progress=False)


def test_single_class_training_data_is_refused(data):
    one = with_labels(data, y_train=np.full_like(data.y_train, 2))
    with pytest.raises(DataError, match="training data has a single class"):
        distill(student(), one, FAST, progress=False)


def test_no_labels_and_no_teacher_is_refused(data):
    with pytest.raises(DataError, match="no labels .* and there is no teacher"):
        distill(student(), data, DistillConfig(epochs=1, use_labels=False), progress=False)


def test_no_labels_and_only_label_losses_beside_a_teacher_names_the_losses(data, teacher):
    """It said 'there is no teacher' to a user who had given one, with --losses ce."""
    with pytest.raises(DataError, match=r"losses \(ce\) learn from labels alone.*add a teacher loss"):
        distill(student(), data, DistillConfig(epochs=1, use_labels=False, losses="ce"), teacher=teacher,
                progress=False)


@pytest.mark.parametrize("losses", ["hint", "at:1,rkd:1", "ce:1,hint:1"])
def test_feature_losses_without_labels_are_refused_as_training_no_classifier(data, teacher, losses):
    """They trained the tapped layers only: the classifier kept its initial weights, and the run shipped a
    student at chance with the advice to train longer."""
    with pytest.raises(DataError, match=r"train only the layers they tap, and the training data has no labels .*"
                                        r"nothing trains the student's classifier; add a logit loss "
                                        r"\(kd, dkd or dist\)"):
        distill(student(), data, DistillConfig(epochs=1, use_labels=False, losses=losses), teacher=teacher,
                progress=False)


def test_feature_losses_with_alpha_1_are_refused_as_training_no_classifier(data, teacher):
    with pytest.raises(ConfigError, match=r"losses \(hint\) .* alpha 1 leaves no weight to the label cross-entropy.*"
                                          r"e\.g\. --losses kd,hint \(losses='kd,hint' in the Python API\), or "
                                          r"lower --alpha below 1"):
        distill(student(), data, DistillConfig(epochs=1, alpha=1.0, losses="hint"), teacher=teacher, progress=False)


@pytest.mark.parametrize("kwargs", [dict(use_labels=False, losses="kd:1,hint:1"), dict(alpha=1.0, losses="ce:1,at:1"),
                                    dict(alpha=0.5, losses="rkd")])
def test_feature_losses_beside_a_classifier_signal_train(data, teacher, kwargs):
    cfg = DistillConfig(epochs=1, batch_size=32, augment=False, **kwargs)
    assert distill(student(), data, cfg, teacher=teacher, progress=False).history


def test_labels_beyond_the_student_outputs_are_refused(data):
    with pytest.raises(DataError, match="labels go up to 3 but the student has 3 outputs"):
        distill(student(classes=3), data, FAST, progress=False)


def test_nan_loss_stops_with_a_clear_error(data):
    bad = with_labels(data, x_train=np.full_like(data.x_train, np.nan))
    with pytest.raises(ModelError, match="loss became nan at epoch 1"):
        distill(student(), bad, FAST, progress=False)


def test_cached_teacher_features_match_per_batch_ones(data, teacher, monkeypatch):
    import edgekd.distill.teacher_side as teacher_side

    cfg = DistillConfig(epochs=2, lr=5e-2, batch_size=32, augment=False, losses="kd:1,hint:1,rkd:1")
    cached = distill(student(), data, cfg, teacher=teacher, progress=False)
    monkeypatch.setattr(teacher_side, "CACHE_LIMIT_BYTES", 0)
    per_batch = distill(student(), data, cfg, teacher=teacher, progress=False)
    for a, b in zip(cached.history, per_batch.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)


def test_a_teacher_handed_to_distill_is_taken_and_checked_as_compress_takes_one(data):
    """distill() used the module as given: a float64 teacher was a raw dtype error, one taking other channels a
    raw shape error, and one returning probabilities distilled a near-uniform target in silence."""
    double = student(width=8, seed=1).double()
    distill(student(), data, replace(FAST, epochs=1), teacher=double, progress=False)
    assert next(double.parameters()).dtype == torch.float64  # the caller's own is left as it was
    rgb = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    with pytest.raises(DataError, match=r"data images of shape \(1, 8, 8\) do not fit the teacher"):
        distill(student(), data, FAST, teacher=rgb, progress=False)
    with pytest.raises(ModelError, match="the teacher's forward returns probabilities"):
        distill(student(), data, FAST, teacher=nn.Sequential(student(), nn.Softmax(1)), progress=False)
    with pytest.raises(ConfigError, match=r"the teacher 'f.py:build' is a spec.*; pass load_teacher\('f.py:build'"):
        distill(student(), data, FAST, teacher="f.py:build", progress=False)


def test_distill_hands_the_callers_torch_generator_back_as_it_was():
    """distill seeded the global generator with config.seed and left it so: whatever the caller seeded before,
    torch.rand after was the same, and a loop of build_student + distill started every student alike."""
    data = tiny_data(n=60)
    after = []
    for seed in (1, 2):
        model = student()
        torch.manual_seed(seed)
        distill(model, data, replace(FAST, epochs=1), progress=False)
        after.append(torch.rand(2))
        torch.manual_seed(seed)
        assert torch.equal(after[-1], torch.rand(2)), seed  # the caller's sequence goes on where it was
    assert not torch.equal(after[0], after[1])
