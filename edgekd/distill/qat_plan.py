"""Where onnxruntime's QDQ quantizer quantizes a student, read off the student's torch.fx graph.

``plan_qat`` traces the student, gives each node its role in onnxruntime's QDQ quantization (convolution,
folded BatchNorm, removable ReLU, generic quantized operator, pooling, fp32, alias), marks the tensors the
quantizer quantizes with its own rules, and names the module whose output each one is: a ``QATPlan`` that
``edgekd.distill.qat.prepare_qat`` applies and ``exporters/onnx_int8_qat.py`` checks the quantized ONNX
against. Operations it cannot mirror are refused here, before any module is changed.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import ConfigError, first_line

WEIGHT_QMAX = 127  # symmetric int8 weights in [-127, 127] (onnxruntime's default)
REDUCED_WEIGHT_QMAX = 64  # onnxruntime's reduce_range: 7-bit weights, no int16 saturation on AVX2 u8s8 kernels
# The way out of every refusal: the flag a CLI user passed, with the field an API caller set.
DROP_QAT = "drop --qat-epochs (qat_epochs=0 in Python) to ship post-training int8 (onnx-int8)"
ORT_OP_TYPES = ("Conv", "Relu", "Clip", "Add", "Mul", "Sigmoid", "LeakyRelu", "ReduceMean", "GlobalAveragePool")
ORT_NO_OUTPUT_QUANT = ("ReduceMean", "GlobalAveragePool")  # pooled vectors feed fp32 or re-quantize anyway


@dataclass(frozen=True)
class Site:
    """One activation quantizer: it quantizes the output of ``module``'s ``call``-th call (the model's
    input when ``module`` is ""), and lives at ``name`` in the model."""

    name: str
    module: str
    call: int
    tensor: str  # the traced value, for messages


@dataclass(frozen=True)
class QATPlan:
    """Where a student is fake-quantized; kept on the prepared model (``qat_plan``)."""

    convs: tuple[tuple[str, str, str], ...]  # (conv, BatchNorm folded into it or "", its input's quantizer)
    sites: tuple[Site, ...]
    weight_qmax: int = WEIGHT_QMAX

    def to_dict(self) -> dict[str, Any]:
        return {"convs": [list(c) for c in self.convs], "weight_qmax": self.weight_qmax,
                "sites": [vars(s) for s in self.sites]}


_FP32_MODULES = (nn.Linear, nn.Flatten, nn.Hardswish, nn.Hardsigmoid, nn.MaxPool2d, nn.AvgPool2d, nn.Upsample,
                 nn.Tanh, nn.Softmax)
_ALIAS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d)
_FUNCTIONS = {operator.add: "add", torch.add: "add", operator.iadd: "add", operator.mul: "mul", torch.mul: "mul",
              operator.imul: "mul", torch.relu: "relu", F.relu: "relu", F.relu6: "relu", torch.sigmoid: "unary",
              torch.mean: "pool", torch.flatten: "fp32", torch.reshape: "fp32", F.dropout: "alias",
              getattr: "fp32", operator.getitem: "fp32", F.hardswish: "fp32", F.hardsigmoid: "fp32",
              F.max_pool2d: "fp32", F.avg_pool2d: "fp32", torch.cat: "fp32", F.interpolate: "fp32",
              torch.tanh: "fp32", F.leaky_relu: "unary", F.softmax: "fp32"}
_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "unary", "add": "add", "add_": "add", "mul": "mul",
            "mul_": "mul", "mean": "pool", "flatten": "fp32", "view": "fp32", "reshape": "fp32", "size": "fp32",
            "contiguous": "alias", "permute": "fp32", "transpose": "fp32", "softmax": "fp32"}


class _Graph:
    """The student's fx graph with each node's role in onnxruntime's QDQ quantization."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.gm = _trace(model, example)
        self.nodes = list(self.gm.graph.nodes)
        self.kind = {n: self._kind(n) for n in self.nodes}
        self.folded = self._fold_bn()

    def _kind(self, n: Any) -> str:
        if n.op in ("placeholder", "output", "get_attr"):
            return {"placeholder": "input", "output": "output", "get_attr": "fp32"}[n.op]
        if not _is_tensor(n):
            return "fp32"  # python values: sizes, shapes
        if n.op == "call_module":
            return _module_kind(self.gm.get_submodule(n.target))
        kind = _FUNCTIONS.get(n.target) if n.op == "call_function" else _METHODS.get(n.target)
        if n.target is F.adaptive_avg_pool2d:
            kind = "pool" if n.args[1:2] in ((1,), ((1, 1),)) else None
        if kind in ("add", "mul") and not all(_is_tensor(a) for a in n.args[:2]):
            kind = None  # a constant operand: onnxruntime would quantize it as an activation
        return kind or "unknown"

    def _fold_bn(self) -> dict[Any, Any]:
        """{bn node: conv node} for every BatchNorm whose input is a conv used by nothing else."""
        folded = {}
        for n in self.nodes:
            if self.kind[n] == "bn":
                src = self.canon(n.args[0])
                if self.kind[src] == "conv" and self.users(src) == [n]:
                    folded[n] = src
                else:
                    self.kind[n] = "fp32"  # a standalone BN stays an fp32 BatchNormalization
        return folded

    def canon(self, n: Any) -> Any:
        while self.kind.get(n) == "alias":
            n = n.args[0]
        return n

    def users(self, n: Any) -> list[Any]:
        out: list[Any] = []
        for u in n.users:
            out += self.users(u) if self.kind[u] == "alias" else [u]
        return list(dict.fromkeys(out))

    def scope(self, n: Any) -> list[str]:
        return list((n.meta.get("nn_module_stack") or {}).keys())


def _trace(model: nn.Module, example: torch.Tensor) -> Any:
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:
        raise ConfigError(f"quantization-aware training needs a student torch.fx can trace: {first_line(exc)}",
                          f"use a student from a search space (or a traceable model), or {DROP_QAT}") from None
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    finally:
        model.train(was)
    return gm


def _is_tensor(n: Any) -> bool:
    return hasattr(n, "meta") and "tensor_meta" in n.meta and hasattr(n.meta["tensor_meta"], "shape")


def _module_kind(m: nn.Module) -> str:
    if type(m) is nn.Conv2d:
        return "conv"
    if isinstance(m, nn.BatchNorm2d):
        return "bn"
    if isinstance(m, (nn.ReLU, nn.ReLU6)):
        return "relu"
    if isinstance(m, (nn.Sigmoid, nn.LeakyReLU)):
        return "unary"  # quantized input and output: onnxruntime fuses them into QLinearSigmoid/QLinearLeakyRelu
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return "pool" if m.output_size in (1, (1, 1)) else "unknown"
    if isinstance(m, _ALIAS_MODULES):
        return "alias"
    return "fp32" if isinstance(m, _FP32_MODULES) else "unknown"



def _marked(g: _Graph) -> list[Any]:
    """The tensors onnxruntime's QDQ quantizer quantizes, found with its own rules, in its node order:
    QDQConv quantizes a convolution's input and output (whatever consumes it: a HardSwish too), the
    generic QDQ operator the inputs and outputs of Add, Mul, Sigmoid and LeakyRelu, QDQRemovableActivation
    a Relu/Clip's output when its input is quantized (and drops the Relu when it is that input's only
    consumer), and the pooling its input only (``ORT_NO_OUTPUT_QUANT``)."""
    marked: dict[Any, None] = {}
    folded = set(g.folded.values())
    for n in g.nodes:
        kind, ins = g.kind[n], [g.canon(a) for a in n.args[:2] if _is_tensor(a)]
        if kind == "conv":
            marked[ins[0]] = None
            if n not in folded:
                marked[n] = None
        elif kind == "bn":  # folded: its output is the convolution's output in the exported graph
            marked[n] = None
        elif kind == "pool":
            marked[ins[0]] = None
        elif kind == "relu" and ins[0] in marked:
            src = ins[0]  # quantized already: onnxruntime removes the ReLU and gives src the ReLU's range
            if len(g.users(src)) == 1 and src.op != "placeholder":
                del marked[src]
            marked[n] = None
        elif kind in ("add", "mul", "unary"):
            marked.update(dict.fromkeys([*ins, n]))
    return list(marked)


def _sites(g: _Graph, marked: list[Any]) -> list[Site]:
    """Where each quantized tensor is produced: a module's output (the k-th call of a leaf module, or the
    value a submodule's forward returns), or the model's input."""
    sites = []
    for t in marked:
        if t.op == "placeholder":
            sites.append(Site("input_quant", "", 0, t.name))
            continue
        if t.op == "call_module":
            call = [n.target for n in g.nodes[:g.nodes.index(t)] if n.op == "call_module"].count(t.target)
            path = t.target
        else:
            path, call = _owner(g, t)
        sites.append(Site(f"{path}.act_quant" + (f"_{call}" if call else ""), path, call, t.name))
    return sites


def _owner(g: _Graph, t: Any) -> tuple[str, int]:
    """The innermost module whose forward returns ``t`` (every use of ``t`` lies outside it), and which of
    its calls returns it: fx names the k-th call of a module called more than once ``path@k``."""
    users = g.users(t)
    for key in reversed(g.scope(t)):
        if all(key not in g.scope(u) for u in users):
            path, _, call = key.partition("@")
            return path, int(call or 0)
    where = g.scope(t)[-1] if g.scope(t) else "the model"
    raise ConfigError(f"cannot fake-quantize '{t.name}' ({getattr(t.target, '__name__', t.target)}) inside "
                      f"{where}.forward: onnxruntime quantizes it, and no module returns it",
                      f"compute it in a submodule that returns it, or {DROP_QAT}")


def plan_qat(model: nn.Module, example: torch.Tensor, reduce_range: bool = True) -> QATPlan:
    """Where ``prepare_qat`` would fake-quantize ``model``; refuses operations it cannot mirror."""
    g = _Graph(model, example)
    unknown = sorted({_describe(g, n) for n in g.nodes if g.kind[n] == "unknown"})
    if unknown:
        raise ConfigError(f"quantization-aware training cannot mirror how onnxruntime quantizes: "
                          f"{', '.join(unknown)}",
                          "use ReLU/ReLU6, sigmoid, LeakyReLU, hardswish, hardsigmoid, tanh, tensor add/mul, "
                          f"pooling, conv, BN and linear layers, or {DROP_QAT}")
    marked = _marked(g)
    returned = [t for t in marked if any(u.op == "output" for u in g.users(t))]
    if returned:
        raise ConfigError(f"onnxruntime quantizes the model's output '{returned[0].name}' "
                          f"({_describe(g, returned[0])}), and the int8 model must return fp32 values",
                          "end the model with a Linear layer (or a flatten/pooling after the last convolution), "
                          f"or {DROP_QAT}")
    sites = _sites(g, marked)
    if any(s.module == "" for s in sites) and isinstance(model, (nn.Sequential, nn.ModuleList)):
        raise ConfigError("the model's input is quantized, and a Sequential model cannot host its quantizer",
                          "wrap the Sequential in a module whose forward calls it")
    bn_of = {conv.target: bn.target for bn, conv in g.folded.items()}
    quant_of = {s.tensor: s.name for s in sites}
    convs = tuple((n.target, bn_of.get(n.target, ""), quant_of.get(g.canon(n.args[0]).name, ""))
                  for n in g.nodes if g.kind[n] == "conv")
    _refuse_shared_convs(convs)
    return QATPlan(convs, tuple(sites), REDUCED_WEIGHT_QMAX if reduce_range else WEIGHT_QMAX)


def _refuse_shared_convs(convs: tuple[tuple[str, str, str], ...]) -> None:
    """A convolution called on differently quantized inputs (a block applied twice) has one bias scale per
    call in the int8 model, and its QAT copy models one: refused here, before any epoch, not after them."""
    inputs: dict[str, set[str]] = {}
    for conv, _bn, quant in convs:
        inputs.setdefault(conv, set()).add(quant)
    shared = [conv for conv, quants in inputs.items() if len(quants) > 1]
    if shared:
        raise ConfigError(f"quantization-aware training cannot mirror the convolution '{shared[0]}': it runs "
                          f"{sum(c == shared[0] for c, _, _ in convs)} times on differently quantized inputs",
                          f"give each call its own module (copy.deepcopy the block), or {DROP_QAT}")


def _describe(g: _Graph, n: Any) -> str:
    if n.op == "call_module":
        return f"{type(g.gm.get_submodule(n.target)).__name__} ('{n.target}')"
    return f"{getattr(n.target, '__name__', n.target)}"
