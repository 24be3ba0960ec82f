"""int8 QDQ ONNX through onnxruntime's static quantizer, calibrated on representative inputs.

U8 activations / per-channel S8 weights in QDQ format is the combination onnxruntime's x86 CPU
kernels fuse fully (see STACK.md); other combinations ran slower than fp32 here.

The first convolution (it sees the raw image, often one or three channels) and the classifier
stay in fp32: quantizing them cost a student 1.1 accuracy points on digits, keeping them cost
0.3, and they hold a negligible share of the compute. A first layer that is fully connected (an MLP
over the flattened image) is quantized: it holds most of such a model's weights, so keeping it fp32
kept the int8 file nearly as large as the fp32 one.

``options["quantize_first_conv"] = True`` quantizes the first convolution too (every convolution then
runs as an int8 kernel, as in a quantization-aware student); the classifier stays fp32.

``options["nodes_to_exclude"]`` keeps more nodes in fp32 on top of those: a list of node names, or a
mapping of node name to the reason (recorded in ``details["excluded_nodes"]``). Names are those of the
fp32 file, which onnxruntime's pre-processing keeps; ``edgekd.int8_fallback`` picks them from a profile.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgekd.errors import ConfigError, ExportError, first_line
from edgekd.export import EXPORTERS, ExportRequest
from edgekd.quiet import ROOT, quiet
from edgekd.types import Artifact
from exporters._common import finish, tidy_for_device

CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@EXPORTERS.register("onnx-int8")
def export_int8(request: ExportRequest) -> Artifact:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if request.source is None or request.calibration is None or len(request.calibration) == 0:
        raise ExportError("onnx-int8 needs an fp32 ONNX source and calibration inputs",
                          "export onnx-fp32 first and pass training images for calibration")
    method = CALIBRATION_METHODS.get(str(request.options.get("calibration", "minmax")).lower())
    if method is None:
        raise ConfigError(f"unknown calibration method '{request.options.get('calibration')}'",
                          f"choose one of: {', '.join(CALIBRATION_METHODS)}")
    path = Path(request.out_dir) / f"{request.name}.onnx"
    with tempfile.TemporaryDirectory() as tmp, quiet(ROOT):
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(request.source.path, str(pre), skip_symbolic_shape=True)
            excluded = _first_and_last(pre, bool(request.options.get("quantize_first_conv", False)))
            extra = _extra_exclusions(request.options.get("nodes_to_exclude"), pre, excluded)
            quantize_static(str(pre), str(path), _Reader(request.calibration, _input_name(pre)),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, method),
                            nodes_to_exclude=sorted({*excluded, *extra}))
        except ConfigError:
            raise
        except Exception as exc:
            path.unlink(missing_ok=True)
            first = first_line(exc)
            raise ExportError(f"onnxruntime could not quantize '{request.source.path}': {first}",
                              "check that the fp32 model runs in onnxruntime") from None
    tidy_for_device(path)
    details = {"format": "QDQ", "activations": "uint8", "weights": "int8 per-channel", "calibration": method,
               "calibration_samples": int(len(request.calibration)),
               "excluded_nodes": {**{name: "first conv / classifier kept fp32 for accuracy" for name in excluded},
                                  **extra}}
    return finish(path, request.name, request.role, "int8", "onnx-int8", details)


def _first_and_last(path: Path, quantize_first: bool = False) -> list[str]:
    import onnx

    compute = [n for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    if len(compute) <= 2:
        return []
    first_conv = compute[0].op_type == "Conv" and not quantize_first
    return sorted({compute[0].name, compute[-1].name}) if first_conv else [compute[-1].name]


def _extra_exclusions(option: object, path: Path, default: list[str]) -> dict[str, str]:
    """``nodes_to_exclude`` as {name: reason}, checked against the graph being quantized."""
    import onnx

    if not option:
        return {}
    if isinstance(option, str) or not isinstance(option, (list, tuple, dict)):
        raise ConfigError(f"nodes_to_exclude must be a list of node names or a mapping name -> reason, "
                          f"not {type(option).__name__}", 'pass e.g. {"nodes_to_exclude": ["node_Conv_12"]}')
    reasons = ({str(k): str(v) for k, v in option.items()} if isinstance(option, dict)
               else {str(k): "excluded on request" for k in option})
    names = {n.name for n in onnx.load(str(path), load_external_data=False).graph.node}
    unknown = sorted(set(reasons) - names)
    if unknown:
        raise ConfigError(f"nodes_to_exclude names {len(unknown)} node(s) the model does not have: "
                          f"{', '.join(unknown[:5])}", f"use node names of the fp32 model, e.g. "
                          f"{', '.join(sorted(names)[:5])}")
    return {k: v for k, v in reasons.items() if k not in default}


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


class _Reader:
    """onnxruntime CalibrationDataReader over an array, in small batches."""

    def __init__(self, x: np.ndarray, name: str, batch: int = 32) -> None:
        self._batches = iter([{name: np.ascontiguousarray(x[i:i + batch], dtype=np.float32)}
                              for i in range(0, len(x), batch)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)
