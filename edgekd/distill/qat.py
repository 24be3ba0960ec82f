"""Quantization-aware training that mirrors the int8 ONNX onnxruntime will run.

``prepare_qat`` plans, checks and then applies fake quantization to a student, in place:

- every ``Conv2d`` (the first one included: every convolution runs as an int8 kernel) fake-quantizes its
  weight per output channel, symmetric, as onnxruntime's QDQ quantizer will: scale = max|w| / 64 (the
  default ``reduce_range``, [-64, 64]; see ``DistillConfig.qat_reduce_range``) or / 127, on the weight with
  the following ``BatchNorm2d`` folded in; the BN still runs (batch statistics while they are trained,
  running statistics once frozen), so the conv uses ``fq(w * s) / s``. The folded bias is rounded to
  int32 steps of input scale x weight scale, as onnxruntime stores it;
- activations are fake-quantized to uint8 (affine, min/max observers: calibrated, then a moving average) at
  exactly the tensors onnxruntime's QDQ quantizer quantizes for the operator types
  ``qat_plan.ORT_OP_TYPES``, found with its rules: the input and the output of every convolution (after the
  BatchNorm folded into it), the inputs and outputs of Add, Mul, Sigmoid and LeakyReLU, the input of global
  average pooling, the output of a ReLU/ReLU6 whose input is quantized already (onnxruntime then drops that
  ReLU and gives its input the ReLU's range: one quantizer here too). Activations onnxruntime has no int8
  kernel for (HardSwish, HardSigmoid, Tanh, ...) stay fp32 between the quantized tensors around them: a
  convolution's output is quantized whatever consumes it, and the next convolution quantizes its input
  again. Linear layers (the classifier) stay fp32, as in the onnx-int8 exporter: a negligible share of the
  compute, and the logits keep their precision.

The places come from the student's torch.fx graph (``edgekd.distill.qat_plan``); each becomes a forward hook
on the module that produces the tensor (or a pre-hook on the model for its input), so the student keeps its
class, module paths, parameters (an optimizer over them goes on) and state_dict keys (plus the observers'
buffers). ``exporters/onnx_int8_qat.py`` carries the learned activation scales into onnxruntime's quantizer
and checks that onnxruntime quantized the same tensors.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edgekd.distill.qat_plan import WEIGHT_QMAX, QATPlan, Site, plan_qat  # noqa: F401  (Site: re-exported with the plan)
from edgekd.errors import ConfigError

ACT_QMAX = 255  # uint8 activations
EMA = 0.01  # moving-average constant of the activation observers (torch's MovingAverageMinMaxObserver)


# ---------------------------------------------------------------------------------------------- modules

def fake_quant_weight(w: torch.Tensor, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric fake quantization as onnxruntime quantizes the weight (scale =
    max|w| / qmax, x / scale rounded half to even, clipped), and the scales; the gradient passes straight
    through."""
    absmax = w.detach().abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    q = torch.clamp(torch.round(w.detach() / scale), -qmax, qmax)
    return w + (q * scale - w).detach(), scale.reshape(-1)


def fold_factor(bn: nn.BatchNorm2d) -> torch.Tensor:
    """gamma / sqrt(running_var + eps): the per-channel factor folding ``bn`` multiplies a weight by."""
    std = torch.sqrt(bn.running_var + bn.eps)
    return bn.weight / std if bn.weight is not None else 1.0 / std


def folded_bias(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> torch.Tensor | None:
    """The bias of ``conv`` with ``bn`` folded in (running statistics); None for no bias at all."""
    if bn is None:
        return conv.bias
    s = fold_factor(bn)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(s)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(s)
    return (bias - bn.running_mean) * s + beta


class QATConv2d(nn.Conv2d):
    """A Conv2d (the same object, its class swapped) that computes what onnxruntime's int8 kernel will:
    the weight fake-quantized after folding the BatchNorm that follows (it convolves with
    ``fq(w * s) / s``, and the BN then applies ``s``), and the folded bias rounded to int32 steps of
    input scale x weight scale, as onnxruntime stores it."""

    weight_qmax: int = WEIGHT_QMAX
    _bn: tuple[nn.BatchNorm2d, ...] = ()  # in tuples: references, not second registrations
    _in: tuple[ActQuant, ...] = ()  # the quantizer of this conv's input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self._bn[0] if self._bn else None
        s = fold_factor(bn).reshape(-1, 1, 1, 1) if bn is not None else None
        w, w_scale = fake_quant_weight(self.weight if s is None else self.weight * s, self.weight_qmax)
        safe = None if s is None else torch.where(s == 0, torch.ones_like(s), s)
        y = self._conv_forward(x, w if safe is None else w / safe, self.bias)
        if not self._in or (bn is None and self.bias is None):
            return y
        error = self._bias_error(bn, w_scale).reshape(1, -1, 1, 1)
        return y + (error if safe is None else error / safe.reshape(1, -1, 1, 1))

    @torch.no_grad()
    def _bias_error(self, bn: nn.BatchNorm2d | None, w_scale: torch.Tensor) -> torch.Tensor:
        """int32-quantized folded bias minus the folded bias (onnxruntime: scale = x_scale * w_scale)."""
        bias = folded_bias(self, bn)
        scale = self._in[0].qparams()[0] * w_scale
        q = torch.clamp(torch.round(bias.double() / scale.double()), -2**31, 2**31 - 1)
        return q.float() * scale - bias


class ActQuant(nn.Module):
    """uint8 affine fake quantization with a min/max observer: the running min/max while calibrating,
    a moving average while training (until frozen), fixed in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self.observe = True  # False once the observers are frozen
        self.calibrating = False
        self.export_qparams: tuple[float, int] | None = None  # set on export copies: emit Q/DQ
        self.enabled = True  # False on fp32 copies

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero point) as onnxruntime derives them: the range widened to include 0, 255 steps."""
        if not (torch.isfinite(self.min_val) and torch.isfinite(self.max_val)):
            raise ConfigError("an activation quantizer has observed no data", "calibrate the QAT model first")
        lo, hi = torch.clamp(self.min_val, max=0.0), torch.clamp(self.max_val, min=0.0)
        scale = (hi - lo) / ACT_QMAX
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.clamp(torch.round(-lo / scale), 0, ACT_QMAX).to(torch.int32)
        return scale.reshape(1), zero.reshape(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.export_qparams is not None:
            return _qdq(x, *self.export_qparams)
        if self.training and (self.observe or self.calibrating):
            self._observe(x.detach())
        scale, zero = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, ACT_QMAX)

    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = torch.aminmax(x)
        if self.calibrating or not torch.isfinite(self.min_val):
            self.min_val.copy_(torch.minimum(self.min_val, lo))
            self.max_val.copy_(torch.maximum(self.max_val, hi))
        else:
            self.min_val.add_(EMA * (lo - self.min_val))
            self.max_val.add_(EMA * (hi - self.max_val))


def _qdq(x: torch.Tensor, scale: float, zero: int) -> torch.Tensor:
    """QuantizeLinear -> DequantizeLinear as torch.export and the ONNX exporter understand them."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the quantized_decomposed ops)

    ops = torch.ops.quantized_decomposed
    q = ops.quantize_per_tensor(x, scale, zero, 0, ACT_QMAX, torch.uint8)
    return ops.dequantize_per_tensor(q, scale, zero, 0, ACT_QMAX, torch.uint8)


class _OutputHook:
    """Forward hook: the output of the module's k-th call goes through the quantizer child ``names[k]``."""

    def __init__(self, names: list[str | None]) -> None:
        self.names = names
        self.calls = 0

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        name = self.names[self.calls % len(self.names)]
        self.calls += 1
        return module.get_submodule(name)(output) if name else None


class _RootHook:
    """Forward pre-hook on the model: restarts the call counts and quantizes the input when planned."""

    def __init__(self, hooks: list[_OutputHook], input_quant: str | None) -> None:
        self.hooks = hooks
        self.input_quant = input_quant

    def __call__(self, module: nn.Module, args: Any) -> Any:
        for hook in self.hooks:
            hook.calls = 0
        if self.input_quant is None:
            return None
        return (module.get_submodule(self.input_quant)(args[0]), *args[1:])


# ---------------------------------------------------------------------------------------------- public API

def prepare_qat(model: nn.Module, example: torch.Tensor, reduce_range: bool = True) -> QATPlan:
    """Fake-quantize ``model`` in place as planned by ``plan_qat``; returns the plan (also kept on the
    model, see ``qat_plan``). Parameters stay the same objects, so an optimizer over them goes on.
    The observers start empty: ``calibrate`` the model, or load a QAT state_dict into it."""
    if qat_plan(model) is not None:
        raise ConfigError("the model is already prepared for quantization-aware training",
                          "prepare a fresh fp32 model")
    plan = plan_qat(model, example, reduce_range)
    hooks = []
    for path in dict.fromkeys(s.module for s in plan.sites if s.module):
        mine = [s for s in plan.sites if s.module == path]
        names: list[str | None] = [None] * (max(s.call for s in mine) + 1)
        for s in mine:
            leaf = s.name.rpartition(".")[2]
            model.get_submodule(path).add_module(leaf, ActQuant())
            names[s.call] = leaf
        hooks.append(_OutputHook(names))
        model.get_submodule(path).register_forward_hook(hooks[-1])
    has_input = any(s.module == "" for s in plan.sites)
    if has_input:
        model.add_module("input_quant", ActQuant())
    model.register_forward_pre_hook(_RootHook(hooks, "input_quant" if has_input else None))
    for conv_path, bn_path, in_path in plan.convs:
        conv = model.get_submodule(conv_path)
        conv.__class__ = QATConv2d
        conv.weight_qmax = plan.weight_qmax
        conv._bn = (model.get_submodule(bn_path),) if bn_path else ()
        conv._in = (model.get_submodule(in_path),) if in_path else ()
    model._edgekd_qat = plan
    return plan


def qat_plan(model: Any) -> QATPlan | None:
    """The plan of a model prepared by ``prepare_qat``; None for any other model."""
    return getattr(model, "_edgekd_qat", None)


def quantizers(model: nn.Module) -> dict[str, ActQuant]:
    """The activation quantizers by their path in the model."""
    plan = qat_plan(model)
    return {s.name: model.get_submodule(s.name) for s in plan.sites} if plan else {}


def calibrate(model: nn.Module, x: torch.Tensor, batch: int = 256, limit: int = 1024, seed: int = 0) -> None:
    """Set the observers' ranges from the running min/max over ``limit`` images of ``x`` drawn with ``seed``
    (eval-mode BN, no grad): the splits are in class order, so ``x[:limit]`` would leave whole classes out."""
    from edgekd.run_inputs import sampled

    x = x[torch.from_numpy(sampled(len(x), limit, seed))]
    was = model.training
    model.eval()
    quants = quantizers(model).values()
    try:
        for q in quants:
            q.train()
            q.calibrating = True
        with torch.no_grad():
            for start in range(0, len(x), batch):
                model(x[start:start + batch])
    finally:
        for q in quants:
            q.calibrating = False
        model.train(was)


def set_frozen(model: nn.Module, bn: bool, observers: bool) -> None:
    """Freeze (or thaw) the folded BNs' statistics and the observers. Call it after ``model.train()``,
    which puts the BNs back in training mode."""
    plan = qat_plan(model)
    for _, bn_path, _ in plan.convs:
        if bn_path:
            model.get_submodule(bn_path).train(model.training and not bn)
    for q in quantizers(model).values():
        q.observe = not observers


def qparams(model: nn.Module) -> dict[str, tuple[float, int]]:
    """{quantizer path: (scale, zero point)} as the model uses them now."""
    out = {}
    for name, q in quantizers(model).items():
        scale, zero = q.qparams()
        out[name] = (float(scale.item()), int(zero.item()))
    return out


def export_copy(model: nn.Module, fake_quant: bool = True) -> nn.Module:
    """A deep copy for export: each BN folded into its conv (a plain Conv2d with the folded fp32 weight
    that onnxruntime will quantize exactly as ``QATConv2d`` fake-quantizes it), and the activation
    quantizers emitting QuantizeLinear/DequantizeLinear with their current (scale, zero point) as
    constants (``fake_quant=False``: left out, the fp32 twin)."""
    plan = qat_plan(model)
    if plan is None:
        raise ConfigError("the model was not prepared for quantization-aware training",
                          "train it with qat_epochs > 0")
    copied = copy.deepcopy(model).eval()
    with torch.no_grad():
        for conv_path, bn_path, _ in plan.convs:
            _fold(copied, conv_path, bn_path)
    for q in quantizers(copied).values():
        scale, zero = q.qparams()
        q.export_qparams = (float(scale.item()), int(zero.item())) if fake_quant else None
        q.enabled = fake_quant
    return copied


def _fold(model: nn.Module, conv_path: str, bn_path: str) -> None:
    conv = model.get_submodule(conv_path)
    conv.__class__ = nn.Conv2d
    conv.__dict__.pop("_in", None)
    bn = conv.__dict__.pop("_bn", ())
    if not bn:
        return
    conv.weight = nn.Parameter(conv.weight * fold_factor(bn[0]).reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter(folded_bias(conv, bn[0]))
    _replace(model, bn_path, nn.Identity())


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at ``path``, with the old module's hooks and quantizers."""
    old = model.get_submodule(path)
    for attr in ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                 "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs"):
        setattr(new, attr, getattr(old, attr))
    for name, child in old.named_children():
        new.add_module(name, child)
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent), leaf, new)
