"""plan_qat: where onnxruntime's QDQ quantizer quantizes a student, and what it refuses before changing one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekd.distill.qat_plan import REDUCED_WEIGHT_QMAX, WEIGHT_QMAX, plan_qat
from edgekd.errors import ConfigError

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

    with pytest.raises(ConfigError, match="needs a student torch.fx can trace.*train without qat_epochs"):
        plan_qat(Branchy(), X)


def test_a_quantized_value_no_module_returns_is_refused() -> None:
    class TwoBranches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3)
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(self.a(x) + self.b(x)).flatten(1))  # the sum lives in the model's forward

    with pytest.raises(ConfigError, match=r"cannot fake-quantize 'add'.*no module returns it.*in a submodule"):
        plan_qat(TwoBranches(), X)


def test_a_sequential_whose_input_is_quantized_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ConfigError, match="a Sequential model cannot host its quantizer.*wrap the Sequential"):
        plan_qat(model, X)
