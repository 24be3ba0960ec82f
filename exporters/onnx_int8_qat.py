"""int8 QDQ ONNX from a quantization-aware trained student (``DistillConfig(qat_epochs=...)``).

The route: export the QAT student with every BatchNorm folded into its convolution and its activation
quantizers written as QuantizeLinear/DequantizeLinear (torch's dynamo exporter); read the learned scale
and zero point of each quantized tensor off those nodes and remove them, which leaves the fp32 graph with
the same tensor names; then quantize that graph with onnxruntime's own QDQ quantizer (uint8 activations,
per-channel symmetric int8 weights, the format its x86 kernels fuse fully), with the learned activation
parameters passed as tensor quantization overrides. onnxruntime computes the weights' scales from the
folded fp32 weights exactly as the QAT convolutions fake-quantized them (max|w| / 127 per channel).

Afterwards the exporter checks that onnxruntime quantized exactly the tensors the QAT student
fake-quantized, with the same parameters (``edgekd.distill.qat`` mirrors its rules), and records which
operators onnxruntime's optimised graph runs, the convolutions left in fp32 (none for the built-in
search spaces) and the top-1 agreement with the torch QAT model on the calibration inputs.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from edgekd.exporters._common import (
    check_options,
    export_fix,
    failure_text,
    finish,
    placed,
    require_dynamo_opset,
    staged,
    tidy_for_device,
)

from edgekd.errors import ExportError
from edgekd.export import EXPORTERS, ExportRequest
from edgekd.quiet import ROOT, TORCH_EXPORT, quiet
from edgekd.types import Artifact

INPUT_NAME, OUTPUT_NAME = "input", "logits"
CHECK_SAMPLES = 512  # calibration inputs on which torch/onnxruntime agreement is recorded


@EXPORTERS.register("onnx-int8-qat")
def export_int8_qat(request: ExportRequest) -> Artifact:
    from edgekd.distill.qat import qat_plan

    require_dynamo_opset(request, "onnx-int8-qat")
    check_options(request.options, (), "onnx-int8-qat")
    plan = qat_plan(request.model)
    if plan is None:
        raise ExportError(f"onnx-int8-qat exports a quantization-aware trained student, and '{request.name}' "
                          "was not trained with quantization-aware training",
                          "distill it with qat_epochs > 0 (DistillConfig(qat_epochs=...)), or export it with "
                          "onnx-int8 (post-training quantization)")
    inputs = request.calibration if request.calibration is not None and len(request.calibration) else request.sample
    if inputs is None or len(inputs) == 0:
        raise ExportError("onnx-int8-qat needs a sample input", "pass sample (and calibration inputs) in the "
                          "ExportRequest")
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    path = Path(request.out_dir) / f"{request.name}.onnx"
    with staged(path) as written:
        art = _export_checked(request, plan, inputs, written)
    return placed(art, path)


def _export_checked(request: ExportRequest, plan: Any, inputs: np.ndarray, path: Path) -> Artifact:
    """The QAT student at ``path``, quantized with the scales it learned, checked against its plan."""
    with tempfile.TemporaryDirectory() as tmp:
        qdq, fp32 = Path(tmp) / "qat.onnx", Path(tmp) / "fp32.onnx"
        _export_qat(request.model, inputs[:1], qdq, request.opset)
        overrides = strip_qdq(qdq, fp32)
        _quantize(fp32, path, inputs, overrides, plan.weight_qmax)
    unmatched = check_overrides(path, overrides)
    if unmatched:
        raise ExportError(f"onnxruntime's quantizer and the QAT student disagree on {len(unmatched)} tensors "
                          f"({'; '.join(unmatched[:4])})",
                          "report this with the student's architecture; export it with onnx-int8 meanwhile")
    ops = optimized_op_types(path)
    details = {"format": "QDQ", "activations": "uint8 (QAT-learned scales)",
               # the calibration inputs only check agreement: no post-training calibration sets a scale
               "calibration": "none (QAT-learned scales)",
               "weights": f"int8 per-channel symmetric, [-{plan.weight_qmax}, {plan.weight_qmax}]",
               "scales_carried": len(overrides), "folded_batchnorms": sum(1 for _, bn, _ in plan.convs if bn),
               "kept_fp32": _kept_fp32(path), "optimized_op_types": dict(sorted(ops.items())),
               "fp32_convs": sum(n for op, n in ops.items() if op in ("Conv", "FusedConv", "ConvInteger")),
               "torch_agreement": _agreement(request.model, path, inputs[:CHECK_SAMPLES]),
               "agreement_samples": int(min(len(inputs), CHECK_SAMPLES))}
    return finish(path, request.name, request.role, "int8", "onnx-int8-qat", details, opset=request.opset)


def _export_qat(model: Any, sample: np.ndarray, path: Path, opset: int) -> None:
    """The QAT student with BNs folded and its activation quantizers as QuantizeLinear/DequantizeLinear."""
    import torch
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (its Q/DQ ops must exist before the export)

    from edgekd.distill.qat import export_copy

    deploy = export_copy(model)
    x = torch.from_numpy(np.repeat(sample, 2, axis=0))  # batch 2: torch.export specialises size-1 dims
    try:
        with quiet(*TORCH_EXPORT, ROOT, stderr=True):
            torch.onnx.export(deploy, (x,), str(path), dynamo=True, external_data=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    except Exception as exc:
        raise ExportError(f"torch could not export the QAT student: {failure_text(exc)}",
                          export_fix(exc, tuple(x.shape))) from None
    tidy_for_device(path)


def strip_qdq(source: Path, target: Path) -> dict[str, tuple[float, int]]:
    """Write ``source`` without its activation QuantizeLinear -> DequantizeLinear pairs to ``target``;
    returns {tensor name: (scale, zero point)} of the pairs removed."""
    import onnx

    model = onnx.load(str(source))
    graph = model.graph
    consts = _constants(graph)
    producers = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    rewire: dict[str, str] = {}
    params: dict[str, tuple[float, int]] = {}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or dq.output[0] in outputs:
            raise ExportError(f"unexpected {dq.op_type} '{dq.name}' in the exported QAT student",
                              "report this with the student's architecture")
        rewire[dq.output[0]] = q.input[0]
        params[q.input[0]] = (float(consts[q.input[1]].reshape(-1)[0]), int(consts[q.input[2]].reshape(-1)[0]))
    kept = [n for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = rewire.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused(graph)
    onnx.save(model, str(target))
    return params


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                values[node.output[0]] = numpy_helper.to_array(value)
    return values


def _drop_unused(graph: Any) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    live = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(live)
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _quantize(source: Path, target: Path, inputs: np.ndarray, overrides: dict[str, tuple[float, int]],
              weight_qmax: int) -> None:
    """onnxruntime's static QDQ quantizer with the QAT activation parameters as overrides."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgekd.distill.qat_plan import ORT_NO_OUTPUT_QUANT, ORT_OP_TYPES, REDUCED_WEIGHT_QMAX

    tensor_overrides = {name: [{"scale": np.array(scale, np.float32), "zero_point": np.array(zero, np.uint8)}]
                        for name, (scale, zero) in overrides.items()}
    try:
        with quiet(*TORCH_EXPORT, ROOT):
            quantize_static(str(source), str(target), _Reader(inputs[:64]), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(ORT_OP_TYPES), per_channel=True,
                            reduce_range=weight_qmax == REDUCED_WEIGHT_QMAX, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            extra_options={"TensorQuantOverrides": tensor_overrides,
                                           "OpTypesToExcludeOutputQuantization": list(ORT_NO_OUTPUT_QUANT),
                                           "QDQDisableWeightAdjustForInt32Bias": True})
    except Exception as exc:
        target.unlink(missing_ok=True)
        raise ExportError(f"onnxruntime could not quantize the QAT student: {failure_text(exc)}",
                          "check that the fp32 model runs in onnxruntime") from None


def check_overrides(path: str | Path, overrides: dict[str, tuple[float, int]]) -> list[str]:
    """How the activation quantization of the int8 model at ``path`` differs from ``overrides``
    (tensor -> (scale, zero point)); empty when onnxruntime quantized exactly those tensors alike."""
    import onnx

    graph = onnx.load(str(path)).graph
    consts = _constants(graph)
    found = {}
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            found[node.input[0]] = (float(consts[node.input[1]].reshape(-1)[0]),
                                    int(consts[node.input[2]].reshape(-1)[0]))
    out = [f"'{t}' is quantized by onnxruntime only" for t in found if t not in overrides]
    out += [f"'{t}' is fake-quantized in torch only" for t in overrides if t not in found]
    out += [f"'{t}' has scale/zero point {found[t]} in onnxruntime, {overrides[t]} in torch"
            for t in found if t in overrides and (not np.isclose(found[t][0], overrides[t][0], rtol=1e-6)
                                                  or found[t][1] != overrides[t][1])]
    return out


def optimized_op_types(path: str | Path, level: str = "all") -> Counter[str]:
    """Operator types (with counts) of the graph onnxruntime actually runs for the model at ``path``, after
    its graph optimisations at ``level`` ("basic", "extended", "all"): fused int8 kernels show up as
    QLinearConv, QLinearAdd, ...; an fp32 convolution as Conv or FusedConv."""
    import onnx
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[level]
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.intra_op_num_threads = 1
        options.log_severity_level = 3  # saving an ORT_ENABLE_ALL graph warns that it is hardware specific
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    return Counter(n.op_type for n in graph.node)


def _kept_fp32(path: Path) -> list[str]:
    """Compute nodes whose input is not dequantized: they run in fp32."""
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [f"{n.op_type} {n.name}" for n in graph.node
            if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[0] not in dequantized]


def _agreement(model: Any, path: Path, x: np.ndarray) -> float:
    import onnxruntime as ort

    from edgekd.distill.trainer import predict

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: x})[0]
    return float((got.argmax(1) == predict(model, x).argmax(1)).mean())


class _Reader:
    """onnxruntime CalibrationDataReader over an array (the overrides make its ranges unused)."""

    def __init__(self, x: np.ndarray, batch: int = 32) -> None:
        self._batches = iter([{INPUT_NAME: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)
