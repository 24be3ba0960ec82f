"""The exporter registry. Exporters live in the top-level ``exporters`` package (and in any
package exposing the ``edgekd.exporters`` entry point); the core reaches them only by name."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ConfigError, DataError, ExportError, OutputError
from edgekd.registry import Registry
from edgekd.types import Artifact

DEFAULT_OPSET = 18  # the lowest the dynamo exporter emits
MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear, which every int8 export writes
DYNAMO_MIN_OPSET = 18  # below it, torch's dynamo exporter still writes 18: the TorchScript exporter is used


@dataclass(frozen=True, eq=False)
class ExportRequest:
    """What an exporter needs. ``source`` is the fp32 ONNX file for exporters that start from one."""

    name: str
    role: str
    out_dir: Path
    model: Any = None  # torch.nn.Module or torch.export program
    sample: np.ndarray | None = None  # one input batch, NCHW float32
    calibration: np.ndarray | None = None  # representative inputs for int8 calibration
    source: Artifact | None = None
    opset: int = DEFAULT_OPSET
    options: dict[str, Any] = field(default_factory=dict)  # exporter-specific, e.g. {"calibration": "entropy"}
    force: bool = False  # replace an existing out_dir/<name>.onnx

    def __post_init__(self) -> None:
        check_new_export(Path(self.out_dir) / f"{self.name}.onnx", self.force,
                         self.source.path if self.source is not None else None)
        # int8 exporters take calibration inputs or an fp32 source; fp32 ones neither, and need no Q/DQ kernel
        check_opset(self.opset, int8=self.calibration is not None or self.source is not None)
        _check_calibration(self.calibration)
        if self.sample is not None and not isinstance(self.sample, np.ndarray):  # a tensor, as calibration takes
            sample = self.sample.detach().cpu().numpy() if hasattr(self.sample, "detach") else self.sample
            object.__setattr__(self, "sample", np.asarray(sample, dtype=np.float32))
        elif self.sample is not None and self.sample.dtype.kind == "f" and self.sample.dtype != np.float32:
            # float64, numpy's default, as a tensor or a list is: torch refuses a double input to float weights
            object.__setattr__(self, "sample", self.sample.astype(np.float32))


def check_new_export(path: Path, force: bool, source: str | Path | None = None) -> None:
    """Refuse to replace an existing ``path`` unless ``force``, before any export: a run's shipped file (which its
    manifest records by sha256) was replaced without a word. The source itself is left to its exporter, whose
    refusal to write over it holds even with ``force``."""
    import os

    if not isinstance(force, bool):  # "false" is truthy: the file it asks to keep would be replaced
        raise ConfigError(f"force must be true or false, got {force!r}", "pass a boolean")
    if force or not path.exists():
        return
    if source is not None and Path(source).exists() and os.path.samefile(path, source):
        return
    raise OutputError(f"'{path}' already exists", "choose another name or output folder, or pass force=True to "
                      "replace it")


def _check_calibration(calibration: np.ndarray | None) -> None:
    """Every int8 export is requested here: one NaN or infinity among the calibration inputs gives an activation
    range that quantizes every value to one level, and a model that predicts a single class."""
    from edgekd.array_data import nonfinite

    x = None if calibration is None else np.asarray(calibration)
    what = "" if x is None else nonfinite(x)
    if what:
        raise DataError(f"the calibration inputs hold {what}",
                        "replace them (e.g. np.nan_to_num(x)) or drop those samples before calibrating")
    # one value everywhere (blank images, a buffer never filled) gives the same: an int8 file predicting one class
    if x is not None and x.size and x.dtype.kind in "biuf" and x.min() == x.max():
        raise DataError(f"the calibration inputs are constant (every value is {x.flat[0]:g}), which gives activation "
                        "ranges that quantize real inputs to a model predicting a single class",
                        "calibrate with representative inputs, e.g. a few hundred training images")


def check_calibration_method(method: str) -> None:
    """Refuse a calibration method this onnxruntime cannot apply. Entropy ranges reach ``quantize_static``
    through its calibration cache (onnx-int8); an onnxruntime without one (1.20 has none) would run its own
    128-bin entropy search, which returns the min/max range: minmax recorded as entropy. Checked where compress
    reads its settings too, not only after the search and the training."""
    if method != "entropy":
        return
    import inspect

    from onnxruntime.quantization import quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        import onnxruntime

        raise ConfigError(f"onnxruntime {onnxruntime.__version__} cannot apply entropy calibration (its "
                          "quantize_static takes no calibration cache, and its own entropy search returns the "
                          "min/max range)", "use calibration minmax or percentile, or upgrade onnxruntime")


def check_opset(opset: int, int8: bool = True) -> None:
    """An opset edgekd can write: int8 needs per-channel Q/DQ (13), onnx must know it, and the local onnxruntime,
    which quantizes and validates every file, must run its Q/DQ (onnx may know an opset before onnxruntime does:
    1.32 has no QuantizeLinear at 28, which surfaced only after search and distillation)."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= newest:
        raise ConfigError(f"--opset {opset} is outside {MIN_OPSET}..{newest}",
                          f"pass {DEFAULT_OPSET} (the default), or down to {MIN_OPSET} for an older runtime")
    if int8 and not runs_qdq(int(opset)):
        import onnxruntime

        runnable = next((o for o in range(int(opset) - 1, MIN_OPSET, -1) if runs_qdq(o)), MIN_OPSET)
        raise ConfigError(f"--opset {opset} is newer than onnxruntime {onnxruntime.__version__} here can run int8 at "
                          f"(no QuantizeLinear/DequantizeLinear kernel); the newest it runs is {runnable}",
                          f"pass --opset {runnable} or lower ({DEFAULT_OPSET} is the default)")


@functools.cache
def runs_qdq(opset: int) -> bool:
    """Whether the local onnxruntime loads a one-layer QDQ model at ``opset`` as edgekd's int8 files hold it: uint8
    activations, per-channel int8 weights, int32 bias (about a millisecond, once per opset)."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    consts = {"s": np.float32(1), "z": np.uint8(0), "w": np.ones((2, 3), np.int8), "ws": np.ones(2, np.float32),
              "wz": np.zeros(2, np.int8), "b": np.zeros(2, np.int32)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "ws"], ["bf"], axis=0),
             helper.make_node("Gemm", ["xf", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    imports = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=imports,
                              ir_version=helper.find_min_ir_version_for(imports, ignore_unknown=True))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # the failure is the answer, not something to print
    try:
        onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # only a runtime that says it lacks the opset or the kernel answers no
        return not _NOT_RUNNABLE.search(str(exc))
    return True


# onnxruntime's words for an opset it does not run: no kernel at it, or an opset newer than it knows
_NOT_RUNNABLE = re.compile(r"NOT_IMPLEMENTED|Could not find an implementation|is under development|is till opset")


def check_source_opset(source: str | Path, opset: int) -> None:
    """An fp32 file int8 can be made from: QDQ with per-channel scales needs opset 13, and the quantizer keeps its
    source's opset."""
    if opset < MIN_OPSET:
        raise ExportError(f"'{source}' is at opset {opset}, and int8 needs opset {MIN_OPSET} or later "
                          "(per-channel QuantizeLinear), which the quantizer keeps from its source",
                          f"export the fp32 model again at opset {MIN_OPSET} or later")


Exporter = Callable[[ExportRequest], Artifact]
EXPORTERS: Registry[Exporter] = Registry("exporter")
_loaded = False


def get_exporter(name: str) -> Exporter:
    _load()
    return EXPORTERS.get(name)


def exporter_names() -> list[str]:
    _load()
    return EXPORTERS.names()


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from importlib.metadata import entry_points

    _import_builtin()
    for ep in entry_points(group="edgekd.exporters"):
        if ep.name not in EXPORTERS:
            loaded = ep.load()  # a module that registers itself on import, or the exporter function itself
            if ep.name not in EXPORTERS and callable(loaded):
                EXPORTERS.register(ep.name)(loaded)


def _import_builtin() -> None:
    """Import edgekd.exporters, which registers the built-in exporters. Installed (editable or not), it is the
    repository's top-level exporters/ folder under that name; a checkout put on sys.path without installing
    has no such mapping, so the folder is loaded from beside the package."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    try:
        importlib.import_module("edgekd.exporters")
    except ModuleNotFoundError as exc:
        folder = Path(__file__).resolve().parent.parent / "exporters"
        if exc.name != "edgekd.exporters" or not (folder / "__init__.py").is_file():
            raise
        spec = importlib.util.spec_from_file_location("edgekd.exporters", folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["edgekd.exporters"] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
