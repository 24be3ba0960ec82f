"""Feature taps (forward hooks by module path), default tap layers, projectors, and how the trainer
uses them: projectors trained but never part of the student, hooks gone afterwards."""

from __future__ import annotations

import pytest
import torch
from test_distill import FAST, TinyNet, student, tiny_data, trained_teacher
from torch import nn

from edgekd.distill.taps import Projector, Taps, default_tap, find_module, output_shapes
from edgekd.distill.trainer import distill
from edgekd.errors import ConfigError
from edgekd.types import DistillConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def teacher(data):
    return trained_teacher(data)


def test_taps_keep_outputs_only_while_capturing():
    model = TinyNet().eval()
    taps = Taps(model, ["features.0", "features"])
    x = torch.randn(2, 1, 8, 8)
    model(x)
    with taps.capture():
        model(x)
        first, last = taps.features()
    assert first.shape == (2, 4, 8, 8) and last.shape == (2, 8, 4, 4)
    taps.remove()
    assert not any(m._forward_hooks for m in model.modules())


def test_a_tapped_output_is_not_changed_by_a_later_in_place_op():
    model = TinyNet().eval()
    taps = Taps(model, ["features.1"])  # BatchNorm, followed by ReLU(inplace=True)
    with taps.capture():
        model(torch.randn(2, 1, 8, 8))
        (bn_out,) = taps.features()
    assert (bn_out < 0).any()


def test_unknown_tap_path_lists_candidates():
    model = TinyNet()
    _, seen = output_shapes(model, torch.randn(2, 1, 8, 8))
    maps = [n for n, (shape, _) in seen.items() if len(shape) == 4]
    with pytest.raises(ConfigError, match=r"student has no module 'feature'.*did you mean features.*features\.0"):
        find_module(model, "feature", "student", maps)


def test_default_tap_is_the_last_feature_map_before_pooling():
    _, seen = output_shapes(TinyNet(), torch.randn(2, 1, 8, 8))
    assert default_tap(seen, "student") == "features"


def test_a_model_without_feature_maps_needs_explicit_taps():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    _, seen = output_shapes(mlp, torch.randn(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="no module that outputs a 4-D feature map"):
        default_tap(seen, "teacher")


def test_without_feature_maps_the_refusal_names_the_flags_and_says_at_cannot_apply():
    """It named the Python API's teacher_taps to a CLI user, and for at (which needs 4-D maps) advised taps
    that cannot exist on an MLP."""
    _, seen = output_shapes(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), torch.randn(2, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"no default layer to tap; name the layers to tap with --hint-student and "
                                          r"--hint-teacher together \(student_taps and teacher_taps in the Python"):
        default_tap(seen, "teacher", (("rkd", 1.0),))
    with pytest.raises(ConfigError, match=r"'at' compares where in a feature map .* the teacher has no module that "
                                          r"outputs a 4-D feature map; drop at from --losses"):
        default_tap(seen, "teacher", (("kd", 1.0), ("at", 1.0)))


class ConvHeadNet(nn.Module):
    """timm/MobileNetV3 style: the global mean pool in forward(), then a 1x1 conv head on the pooled map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()
        self.conv_head, self.act_head = nn.Conv2d(4, 8, 1), nn.Hardswish()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x)).mean((2, 3), keepdim=True)
        return self.fc(self.act_head(self.conv_head(x)).flatten(1))


def test_the_default_tap_skips_1x1_maps_after_global_pooling():
    """The 1x1 head was the default: at on it is identically 0, and hint resized the student's map to its centre."""
    _, seen = output_shapes(ConvHeadNet(), torch.randn(2, 1, 8, 8))
    assert seen["act_head"][0] == (2, 8, 1, 1)
    assert default_tap(seen, "teacher", (("at", 1.0),)) == "act"


def test_a_model_with_only_1x1_maps_has_no_default_tap():
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4, 4))
    _, seen = output_shapes(head, torch.randn(2, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"the student has no 4-D feature map wider than 1x1 \(its 4-D outputs, "
                                          r"1, 2, come after global pooling\), so there is no default layer to tap"):
        default_tap(seen, "student", (("hint", 1.0),))
    with pytest.raises(ConfigError, match=r"'at' compares where .* the student has no 4-D feature map wider than 1x1"):
        default_tap(seen, "student", (("at", 1.0),))


def test_at_on_a_1x1_tap_is_refused():
    from edgekd.distill.teacher_side import teacher_taps

    teacher = ConvHeadNet()
    _, seen = output_shapes(teacher, torch.randn(2, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"'at' compares where in a feature map the activations are, and the "
                                          r"teacher's tapped layers give \[\(N, 8, 1, 1\)\], a 1x1 map: one position, "
                                          r"whose attention is 1 for any model; tap teacher layers that give maps "
                                          r"wider than 1x1 \(--hint-teacher"):
        teacher_taps(teacher, seen, ("act_head",), (("at", 1.0),))
    assert teacher_taps(teacher, seen, ("act_head",), (("hint", 1.0),)) == ("act_head",)  # a vector compare


def test_output_shapes_restores_the_training_flag():
    model = TinyNet().train()
    shape, _ = output_shapes(model, torch.randn(2, 1, 8, 8))
    assert shape == (2, 4) and model.training


def test_projector_maps_channels_and_size():
    proj = Projector((2, 4, 8, 8), (2, 16, 4, 4))
    assert proj(torch.randn(2, 4, 8, 8)).shape == (2, 16, 4, 4)
    assert Projector((2, 4), (2, 9))(torch.randn(2, 4)).shape == (2, 9)
    # the shapes are per sample: the probe's 2 images read as 2 channels or 2 samples
    with pytest.raises(ConfigError, match=r"cannot project a student feature of shape \(N, 4\) onto a teacher "
                                          r"feature of shape \(N, 8, 4, 4\)"):
        Projector((2, 4), (2, 8, 4, 4))


def test_a_larger_student_map_is_averaged_onto_the_teachers_size_not_sampled():
    """Bilinear sampling at a quarter of the size read one pixel in 16: activity in the others was unseen."""
    from edgekd.distill.losses import _attention
    from edgekd.distill.taps import resized

    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0, 0] = 16.0
    assert resized(x, (2, 2))[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert resized(x, (8, 8)) is x and resized(x, (16, 16)).shape == (1, 1, 16, 16)  # grown: bilinear
    assert _attention(x, (2, 2)).tolist() == [[1.0, 0.0, 0.0, 0.0]]  # at's maps too


def test_hint_projectors_are_trained_and_stay_out_of_the_student(data, teacher, tmp_path):
    cfg = DistillConfig(epochs=2, lr=5e-2, batch_size=32, augment=False, losses="kd:1,hint:1")
    model = student()
    keys = set(model.state_dict())
    result = distill(model, data, cfg, teacher=teacher, progress=False, checkpoint=tmp_path / "run.pt")
    assert set(result.model.state_dict()) == keys
    assert not any(m._forward_hooks for m in list(model.modules()) + list(teacher.modules()))
    parts = torch.load(tmp_path / "run.pt", weights_only=True)["parts"]
    fresh = Projector((2, 8, 4, 4), (2, 16, 4, 4)).state_dict()
    assert parts["hint.0.map.0.weight"].shape == fresh["map.0.weight"].shape == (16, 8, 1, 1)
    assert not torch.equal(parts["hint.0.map.1.weight"], fresh["map.1.weight"])  # BN gamma moved off 1


def test_the_result_records_the_layers_tapped_default_or_given(data, teacher):
    """distill.json (the result's to_dict) named no tapped layer: the defaults were kept in the checkpoint only."""
    cfg = DistillConfig(epochs=1, batch_size=32, augment=False, losses="kd:1,hint:1")
    result = distill(student(), data, cfg, teacher=teacher, progress=False)
    assert result.to_dict()["taps"] == {"student": ["features"], "teacher": ["features"]}
    given = DistillConfig(epochs=1, batch_size=32, augment=False, losses="at", student_taps=("features.0",),
                          teacher_taps=("features.2",))
    assert distill(student(), data, given, teacher=teacher, progress=False).taps == {
        "student": ["features.0"], "teacher": ["features.2"]}
    plain = DistillConfig(epochs=1, batch_size=32, augment=False)
    assert "taps" not in distill(student(), data, plain, teacher=teacher, progress=False).to_dict()


def test_explicit_taps_pair_layers_by_position(data, teacher):
    cfg = DistillConfig(epochs=1, lr=5e-2, batch_size=32, augment=False, losses="at:1,hint:1,rkd:1",
                        student_taps=("features.2", "features"), teacher_taps=("features.2", "features"))
    assert distill(student(), data, cfg, teacher=teacher, progress=False).history[0].train_loss > 0


def test_unknown_hint_layer_is_refused_with_candidates(data, teacher):
    cfg = DistillConfig(**{**FAST.to_dict(), "losses": {"hint": 1.0}, "student_taps": ["features.9"],
                           "teacher_taps": ["features"]})
    with pytest.raises(ConfigError, match=r"student has no module 'features\.9'.*tap one of: features\.0"):
        distill(student(), data, cfg, teacher=teacher, progress=False)
    assert not any(m._forward_hooks for m in teacher.modules())


def test_attention_transfer_needs_feature_maps(data, teacher):
    cfg = DistillConfig(epochs=1, losses="at", student_taps=("fc",), teacher_taps=("fc",))
    with pytest.raises(ConfigError, match="'at' needs 4-D feature maps"):
        distill(student(), data, cfg, teacher=teacher, progress=False)


def test_a_torch_export_teacher_teaches_logits_but_cannot_be_tapped(data, teacher, tmp_path):
    from edgekd.teacher import load_teacher

    x = torch.from_numpy(data.x_train[:2])
    program = torch.export.export(teacher, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, tmp_path / "teacher.pt2")
    exported = load_teacher(str(tmp_path / "teacher.pt2")).module
    kd = DistillConfig(epochs=1, lr=5e-2, batch_size=32, augment=False)
    assert distill(student(), data, kd, teacher=exported, progress=False).history[0].train_loss > 0
    with pytest.raises(ConfigError, match="a torch.export program or an ONNX teacher has none to tap; use kd, dkd or "
                                          "dist"):
        distill(student(), data, DistillConfig(epochs=1, losses="hint"), teacher=exported, progress=False)


class SharedReluNet(nn.Module):
    """torchvision's style: one ReLU module applied after each BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))


def test_the_default_tap_of_a_reused_relu_is_the_activated_map():
    _, seen = output_shapes(SharedReluNet(), torch.randn(2, 1, 8, 8))
    assert list(seen) == ["conv1", "bn1", "conv2", "bn2", "relu", "pool", "fc"]
    assert default_tap(seen, "teacher") == "relu"


class TokenNet(nn.Module):
    """A (N, tokens, dim) layer ('tokens') between a convolution and the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.tokens = nn.Flatten(2)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.tokens(self.conv(x)).mean(2))


@pytest.mark.parametrize("losses, tap, message", [
    ("at", "fc", r"'at' needs 4-D feature maps \(N, C, H, W\); the teacher's tapped layers give \[\(N, 4\)\]; tap "
                 "teacher layers that give 4-D feature maps"),
    ("hint", "tokens", r"'hint' needs 4-D feature maps \(N, C, H, W\) or vectors \(N, C\); the teacher's tapped "
                       r"layers give \[\(N, 4, 64\)\]"),
])
def test_the_teachers_tap_shapes_are_checked_before_the_search(losses, tap, message):
    from edgekd.distill.teacher_side import teacher_taps
    from edgekd.pipeline import CompressConfig
    from edgekd.pipeline.stages import _check_teacher_before_search

    teacher, x = TokenNet(), torch.randn(2, 1, 8, 8)
    _, seen = output_shapes(teacher, x)
    with pytest.raises(ConfigError, match=message):
        teacher_taps(teacher, seen, (tap,), ((losses, 1.0),))
    config = CompressConfig(losses=losses, hint_student="features", hint_teacher=tap)
    with pytest.raises(ConfigError, match=message):
        _check_teacher_before_search(config, teacher, x)
    assert teacher_taps(teacher, seen, (tap,), (("rkd", 1.0),)) == (tap,)  # rkd pools any shape


def test_the_students_tap_shapes_follow_the_same_rule_once_it_is_chosen(data, teacher):
    cfg = DistillConfig(epochs=1, losses="at", student_taps=("fc",), teacher_taps=("features",))
    with pytest.raises(ConfigError, match=r"'at' needs 4-D feature maps \(N, C, H, W\); the student's tapped layers "
                                          r"give \[\(N, 4\)\]; tap student layers"):
        distill(student(), data, cfg, teacher=teacher, progress=False)


@pytest.mark.parametrize("losses", ["kd", "hint"])
def test_distill_hands_the_teacher_back_in_the_mode_it_came_in(data, teacher, losses):
    cfg = DistillConfig(epochs=1, batch_size=32, augment=False, losses=losses)
    teacher.train()
    try:
        distill(student(), data, cfg, teacher=teacher, progress=False)
        assert teacher.training
    finally:
        teacher.eval()
    distill(student(), data, cfg, teacher=teacher, progress=False)
    assert not teacher.training


def test_a_model_training_with_frozen_batchnorms_gets_each_module_s_mode_back():
    """evaluating() and predict() restored only the top module's mode (train(True) thaws every BatchNorm of a
    teacher fine-tuned with them frozen), and predict() left a caller's model in eval mode."""
    import numpy as np

    from edgekd.distill.taps import evaluating
    from edgekd.distill.targets import predict

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    model.train()
    model[1].eval()  # frozen
    modes = [m.training for m in model.modules()]
    with evaluating(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == modes
    predict(model, np.zeros((2, 1, 8, 8), np.float32))
    assert [m.training for m in model.modules()] == modes
