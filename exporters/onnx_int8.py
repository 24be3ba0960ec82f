"""int8 QDQ ONNX through onnxruntime's static quantizer, calibrated on representative inputs.

U8 activations / per-channel S8 weights in QDQ format is the combination onnxruntime's x86 CPU
kernels fuse fully (see STACK.md); other combinations ran slower than fp32 here.

The first convolution (it sees the raw image, often one or three channels) and the classifier
stay in fp32: quantizing them cost a student 1.1 accuracy points on digits, keeping them cost
0.3, and they hold a negligible share of the compute. A first layer that is fully connected (an MLP
over the flattened image) is quantized: it holds most of such a model's weights, so keeping it fp32
kept the int8 file nearly as large as the fp32 one. A model with two or fewer Conv/Gemm/MatMul nodes is
quantized whole: keeping those fp32 would leave nothing in int8.

``options["quantize_first_conv"] = True`` quantizes the first convolution too (every convolution then
runs as an int8 kernel, as in a quantization-aware student); the classifier stays fp32.

``options["nodes_to_exclude"]`` keeps more nodes in fp32 on top of those: a list of node names, or a
mapping of node name to the reason (recorded in ``details["excluded_nodes"]``). Names are those of the
fp32 file, which onnxruntime's pre-processing keeps; ``edgekd.int8_fallback`` picks them from a profile.

The int8 file keeps the source's opset, which must be ``request.opset``. A source whose input has a fixed
batch size is calibrated in batches of that size; ``details["calibration_samples"]`` counts the inputs fed (and
``details["calibration_note"]`` says when some were dropped or repeated to fill a batch).

``calibration="entropy"`` runs onnxruntime's entropy (KL-divergence) calibrator with ``ENTROPY_BINS`` histogram
bins. ``quantize_static`` builds that calibrator with as many histogram bins as quantized ones (128), which leaves
the full min/max range as its only candidate threshold: its "entropy" file was byte-identical to minmax's. So the
ranges are computed here with ``create_calibrator`` and handed to ``quantize_static`` as its calibration cache.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from edgekd.exporters._common import check_options, finish, placed, staged, tidy_for_device

from edgekd.errors import ConfigError, DataError, ExportError, first_line
from edgekd.export import EXPORTERS, ExportRequest, check_calibration_method, check_source_opset
from edgekd.fsutil import refuse_overwriting_source
from edgekd.input_shape import fixed_dim
from edgekd.onnxfile import describe, load_model, one_file, opset_of, quantized_ops
from edgekd.quiet import PRE_PROCESS, ROOT, quiet
from edgekd.types import Artifact

CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_OPTIONS = {"calibration", "quantize_first_conv", "nodes_to_exclude"}
DEFAULT_BATCH = 32  # calibration batch for an input whose batch dimension is free
# onnxruntime's own default for its other histogram calibrators (percentile, distribution), and TensorRT's choice
# for the KL search; the search tries every width from 128 bins to all of them
ENTROPY_BINS = 2048


@EXPORTERS.register("onnx-int8")
def export_int8(request: ExportRequest) -> Artifact:
    if request.source is None or request.calibration is None or len(request.calibration) == 0:
        raise ExportError("onnx-int8 needs an fp32 ONNX source and calibration inputs",
                          "export onnx-fp32 first and pass training images for calibration")
    check_options(request.options, _OPTIONS, "onnx-int8")
    method = CALIBRATION_METHODS.get(str(request.options.get("calibration", "minmax")).lower())
    if method is None:
        raise ConfigError(f"unknown calibration method '{request.options.get('calibration')}'",
                          f"choose one of: {', '.join(CALIBRATION_METHODS)}")
    source = load_model(request.source.path)
    _check_opset(request, opset_of(source))
    _refuse_quantized(source, request.source.path)
    path = Path(request.out_dir) / f"{request.name}.onnx"
    refuse_overwriting_source(path, request.source.path, "onnx-int8")
    with staged(path) as written, tempfile.TemporaryDirectory() as scratch, quiet(ROOT):
        inputs = describe(source)["inputs"]
        reader = _Reader.for_input(request.calibration, inputs[0] if inputs else None,  # type: ignore[arg-type]
                                   request.source.path)
        excluded, extra = _quantize(request, method, Path(scratch), written, reader)
        tidy_for_device(written)
        details = {"format": "QDQ", "activations": "uint8", "weights": "int8 per-channel", "calibration": method,
                   "calibration_samples": reader.rows, "excluded_nodes": {**excluded, **extra}}
        if reader.note:
            details["calibration_note"] = reader.note
        art = finish(written, request.name, request.role, "int8", "onnx-int8", details, opset=request.opset)
    return placed(art, path)


def _quantize(request: ExportRequest, method: str, scratch: Path, out: Path,
              reader: _Reader) -> tuple[dict[str, str], dict[str, str]]:
    """Pre-process and quantize the source into ``out``, calibrated on what ``reader`` feeds; returns (default
    exclusions, requested ones)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = request.source.path  # type: ignore[union-attr]
    pre = scratch / "pre.onnx"
    cache = method == "Entropy"
    if cache:
        check_calibration_method("entropy")
    try:
        # quiet: it logs a traceback for each optimization it gives up on
        with one_file(source) as whole, quiet(PRE_PROCESS, stderr=True):
            quant_pre_process(str(whole), str(pre), skip_symbolic_shape=True)
        excluded = _first_and_last(pre, _flag(request.options.get("quantize_first_conv", False),
                                              "quantize_first_conv"))
        extra = _extra_exclusions(request.options.get("nodes_to_exclude"), pre, list(excluded))
        ranges: dict[str, str] = {}
        if cache:
            ranges = {"calibration_cache_path": str(_entropy_ranges(pre, reader, scratch))}
        quantize_static(str(pre), str(out), None if cache else reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method),
                        nodes_to_exclude=sorted({*excluded, *extra}), **ranges)
    except (ConfigError, DataError):
        raise
    except Exception as exc:
        raise ExportError(f"onnxruntime could not quantize '{source}': {first_line(exc)}",
                          "check that the fp32 model runs in onnxruntime") from None
    return excluded, extra


def _entropy_ranges(pre: Path, reader: _Reader, scratch: Path) -> Path:
    """onnxruntime's entropy calibrator run on ``pre`` with ``ENTROPY_BINS`` bins; returns the ranges saved as a
    calibration cache for ``quantize_static``."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    calibrator = create_calibrator(pre, augmented_model_path=str(scratch / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": 128})
    calibrator.collect_data(reader)
    cache = scratch / "entropy-ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _flag(value: object, option: str) -> bool:
    """A yes/no option as a bool: the string "false" is truthy, and would have done the opposite of what it says."""
    if not isinstance(value, bool):
        raise ConfigError(f"onnx-int8 {option} {value!r} is not True or False", f"pass {option}=True or False")
    return value


def _refuse_quantized(model: Any, path: str) -> None:
    """A source already quantized is refused before any work: the quantizer's output failed the ONNX checker
    ("Graph must be in single static assignment (SSA) form"), and the error said to report it."""
    found = quantized_ops(model)
    if found:
        raise ExportError(f"'{Path(path).name}' is already quantized (it holds {', '.join(found)} nodes)",
                          "pass the fp32 model it was made from as the source")


def _check_opset(request: ExportRequest, have: int) -> None:
    """The quantizer keeps the source's opset (``have``), so another one asked for is refused before any work."""
    source = request.source.path  # type: ignore[union-attr]
    check_source_opset(source, have)
    if have != request.opset:
        raise ExportError(f"onnx-int8 keeps the opset of its source, and '{source}' is at opset {have}, not the "
                          f"{request.opset} asked for", f"pass opset={have}, or export the fp32 model at opset "
                          f"{request.opset} first")


def _first_and_last(path: Path, quantize_first: bool = False) -> dict[str, str]:
    """{node: reason} for the nodes kept fp32 by default: the first Conv/Gemm/MatMul when it is a convolution
    (unless ``quantize_first``) and the last one (the classifier); none when the model has two or fewer,
    since keeping those fp32 would leave nothing in int8."""
    import onnx

    compute = [n for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    if len(compute) <= 2:
        return {}
    kept = {compute[-1].name: "classifier kept fp32 for accuracy"}
    if compute[0].op_type == "Conv" and not quantize_first:
        kept[compute[0].name] = "first convolution kept fp32 for accuracy"
    return dict(sorted(kept.items()))


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


class _Reader:
    """onnxruntime CalibrationDataReader over an array, in batches the model accepts."""

    def __init__(self, x: np.ndarray, name: str, batch: int = DEFAULT_BATCH, dtype: Any = np.float32,
                 note: str = "") -> None:
        self._batches = iter([{name: np.ascontiguousarray(x[i:i + batch], dtype=dtype)}
                              for i in range(0, len(x), batch)])
        self.rows, self.note = len(x), note  # what calibration sees, and how it differs from what was given

    @classmethod
    def for_input(cls, x: np.ndarray, model_input: dict[str, Any] | None, source: str) -> _Reader:
        """A reader for ``model_input`` (``onnxfile.signature``'s name and shape; None: the file names none, and
        its first input is fed as "input"). A fixed batch size is fed as it is: the remainder that does not fill a
        batch is dropped (calibration statistics need no duplicate samples), and fewer samples than one batch are
        repeated to fill it. Raises DataError when the samples' other dimensions do not fit the input."""
        name = model_input["name"] if model_input else "input"
        dims = (model_input or {}).get("shape") or []
        x = np.asarray(x)
        if dims and (len(dims) != x.ndim or any(fixed_dim(d) and d != n for d, n in zip(dims[1:], x.shape[1:]))):
            wanted = ", ".join(str(d) if fixed_dim(d) else str(d or "?") for d in dims)
            raise DataError(f"calibration inputs of shape {tuple(x.shape[1:])} per sample do not fit input '{name}' "
                            f"({wanted}) of '{source}'", "calibrate with inputs of the size the model takes")
        dtype = _feed_dtype(x, model_input, source)
        if not dims or not fixed_dim(dims[0]):
            return cls(x, name, dtype=dtype)
        batch, given = dims[0], len(x)
        fed = np.resize(x, (batch, *x.shape[1:])) if given < batch else x[:given - given % batch]
        note = ("" if len(fed) == given else f"{given} input(s) repeated to fill one batch of {batch}, the "
                f"model's fixed batch size" if given < batch else f"{given - len(fed)} of {given} input(s) "
                f"dropped: the model's fixed batch size is {batch}")
        reader = cls(fed, name, batch, dtype, note)
        reader.rows = min(given, len(fed))  # repeats add no information to the ranges
        return reader

    def get_next(self) -> dict | None:
        return next(self._batches, None)




def _feed_dtype(x: np.ndarray, model_input: dict[str, Any] | None, source: str) -> Any:
    """The numpy type ``model_input`` takes (float32 when the file names none): a model with its preprocessing
    inside may take raw uint8 pixels. Raises ExportError for a type calibration cannot feed, DataError for samples
    an integer input cannot hold as they are (normalised floats given to a uint8 input)."""
    import onnx

    name = (model_input or {}).get("dtype") or "float"
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx.TensorProto.DataType.Value(name.upper())))
    if dtype.kind == "f":
        return dtype
    where = f"input '{model_input['name']}' of '{source}'"  # type: ignore[index]  (None is fed float32)
    if dtype.kind not in "iu":
        raise ExportError(f"{where} takes {name}, which onnx-int8 cannot calibrate with",
                          "give the model a float or integer image input")
    info = np.iinfo(dtype)
    if x.size and (x.min() < info.min or x.max() > info.max or (x.dtype.kind == "f" and (x != np.round(x)).any())):
        raise DataError(f"calibration inputs range from {x.min():g} to {x.max():g}, which {where} ({name}) cannot "
                        f"hold as they are", f"calibrate with the raw values the model takes ({name}, "
                        f"{info.min}..{info.max})")
    return dtype
