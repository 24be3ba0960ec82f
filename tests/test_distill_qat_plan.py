"""plan_qat: where onnxruntime's QDQ quantizer quantizes a student, and what it refuses before changing one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekd.distill.qat_plan import REDUCED_WEIGHT_QMAX, WEIGHT_QMAX, plan_qat
from edgekd.errors import ConfigError
from edgekd.types import DistillConfig

X = torch.zeros(2, 1, 8, 8)


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.bn(self.conv(x)))).flatten(1))


def test_a_conv_bn_relu_student_is_planned_as_onnxruntime_quantizes_it() -> None:
    model = ConvBnRelu()
    plan = plan_qat(model, X)
    # BN folds into the conv; the conv's input is the model's input; the ReLU takes over the conv's output
    # quantizer (onnxruntime drops that ReLU), and the pooling needs no output quantizer of its own.
    assert plan.convs == (("conv", "bn", "input_quant"),)
    assert [(s.name, s.module) for s in plan.sites] == [("input_quant", ""), ("act.act_quant", "act")]
    assert plan.weight_qmax == REDUCED_WEIGHT_QMAX
    assert plan_qat(model, X, reduce_range=False).weight_qmax == WEIGHT_QMAX
    assert not any("quant" in name for name, _ in model.named_modules())  # planning changes nothing


def test_a_student_torch_fx_cannot_trace_is_refused() -> None:
    class Branchy(ConvBnRelu):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow
                x = -x
            return super().forward(x)

    with pytest.raises(ConfigError, match=r"needs a student torch.fx can trace.*drop --qat-epochs \(qat_epochs=0 in "
                                          r"Python\) to ship post-training int8"):
        plan_qat(Branchy(), X)


def test_a_quantized_value_no_module_returns_is_refused() -> None:
    class TwoBranches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3)
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(self.a(x) + self.b(x)).flatten(1))  # the sum lives in the model's forward

    with pytest.raises(ConfigError, match=r"cannot fake-quantize 'add'.*no module returns it.*in a submodule.*, or "
                                          r"drop --qat-epochs \(qat_epochs=0 in Python\)"):
        plan_qat(TwoBranches(), X)


def test_a_sequential_whose_input_is_quantized_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ConfigError, match="a Sequential model cannot host its quantizer.*wrap the Sequential"):
        plan_qat(model, X)


@pytest.mark.parametrize("space, message", [
    # with --space pruned alone the teacher's forward is at fault, and another space is the way out
    ("pruned", r"^the model's input is quantized, and a Sequential model cannot host its quantizer: with --space "
               r"pruned every student is the teacher's own layers, so the teacher's forward is what "
               r"quantization-aware training cannot follow; choose --space mbv2 or resnet, or wrap the Sequential"),
    ("mbv2,pruned", r"^the model's input is quantized, and a Sequential model cannot host its quantizer, and --space "
                    r"mbv2,pruned may choose a 'pruned' student, which is the teacher's own layers; leave pruned "
                    r"out of --space, or wrap the Sequential"),
])
def test_a_teacher_qat_cannot_mirror_is_refused_before_a_search_that_may_choose_its_layers(space, message) -> None:
    """With --space mbv2,pruned the whole search ran, chose a pruned student, and only then was it refused."""
    from edgekd.pipeline import CompressConfig
    from edgekd.pipeline.stages import _check_teacher_before_search

    teacher = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ConfigError, match=message):
        _check_teacher_before_search(CompressConfig(space=space, epochs=2, qat_epochs=1), teacher, X)
    _check_teacher_before_search(CompressConfig(space="mbv2", epochs=2, qat_epochs=1), teacher, X)  # never its own


def test_a_search_file_whose_student_is_pruned_is_refused_for_qat_in_the_words_of_the_pruned_space(
        small_data, fast_profile_path, tmp_path, monkeypatch) -> None:
    """The same teacher and QAT given a search file that chose a pruned student: the trainer's "wrap the
    Sequential", which names nothing a user of edgekd's own pruned student can do."""
    import edgekd.pipeline.stages as stages
    from edgekd.pipeline import CompressConfig, run_distill, run_search

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    found = tmp_path / "search.json"
    # labels=False: an untrained teacher at chance is then a warning, not a refusal
    run_search(CompressConfig(teacher=teacher, data=small_data, profile=str(fast_profile_path), budget_ms=50.0,
                              space="pruned", candidates=2, labels=False, progress=False), found)
    monkeypatch.setattr(stages, "train_student", lambda *a, **k: pytest.fail("trained before the refusal"))
    config = CompressConfig(teacher=teacher, data=small_data, profile=str(fast_profile_path), search_file=str(found),
                            epochs=2, qat_epochs=1, labels=False, progress=False)
    with pytest.raises(ConfigError, match=rf"^the model's input is quantized, and a Sequential model cannot host its "
                                          rf"quantizer: the student of '{found}' is a 'pruned' one, the teacher's own "
                                          r"layers, .*; drop --qat-epochs, train a student of another space .*, or "
                                          r"wrap the Sequential"):
        run_distill(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class _AddBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return x + self.relu(x)  # the add is quantized, and the block returns it


class _ConvBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.relu = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()

    def forward(self, x):
        return x + self.relu(self.bn(self.conv(x)))


class _Twice(torch.nn.Module):
    """One block applied twice (module reuse)."""

    def __init__(self, block):
        super().__init__()
        self.c1, self.r1, self.block = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), block
        self.pool, self.fl, self.fc = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.fl(self.pool(self.block(self.block(self.r1(self.c1(x)))))))


def test_a_block_called_twice_quantizes_what_each_call_returns():
    from edgekd.distill import qat

    model = _Twice(_AddBlock())
    x = torch.randn(8, 1, 8, 8)
    plan = qat.prepare_qat(model, x[:2])
    assert [(s.name, s.module, s.call) for s in plan.sites if s.module == "block"] == [
        ("block.act_quant", "block", 0), ("block.act_quant_1", "block", 1)]
    qat.calibrate(model, x)
    assert model(x).shape == (8, 4)
    assert model.block.act_quant_1.max_val > model.block.act_quant.max_val  # its own range: the second call's


def test_a_convolution_called_on_differently_quantized_inputs_is_refused_before_training():
    from test_distill import tiny_data

    from edgekd.distill.trainer import distill

    with pytest.raises(ConfigError, match="cannot mirror the convolution 'block.conv': it runs 2 times"):
        distill(_Twice(_ConvBlock()), tiny_data(), DistillConfig(epochs=2, qat_epochs=1, augment=False),
                progress=False)
