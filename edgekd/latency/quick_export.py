"""Exports made only to be timed (calibration blocks, search candidates), not shipped.

torch's TorchScript exporter is 20-60x quicker than the dynamo exporter on small models, and after
onnxruntime's graph optimisation it runs the same fused Conv/Relu/Add graph: side by side here the
two exports of one student measured within 1% of each other. Shipped artifacts still go through the
``onnx-fp32`` exporter.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def export_fixed(module: Any, shape: tuple[int, ...], path: Path, dynamic_batch: bool = False) -> Path:
    """``module`` at the input ``shape`` as ONNX (opset 18) at ``path``; the batch dimension stays
    free with ``dynamic_batch`` (int8 calibration feeds whole batches)."""
    import torch

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(*shape),), str(path), dynamo=False, input_names=["input"],
                          opset_version=18, dynamic_axes={"input": {0: "batch"}} if dynamic_batch else None)
    return path


def measure_modules(models: list[Any], profile: Any, precision: str, calibration: np.ndarray) -> list[float]:
    """Export ``models`` as they would run (fp32, or int8 QDQ quantized as the onnx-int8 exporter does) and
    measure them interleaved: p50 ms each."""
    from edgekd.export import ExportRequest, get_exporter
    from edgekd.latency.measure import measure
    from edgekd.validate import artifact_from_file

    shape = (1, *calibration.shape[1:])
    with tempfile.TemporaryDirectory(prefix="edgekd-search-") as tmp:
        paths = []
        for i, model in enumerate(models):
            path = export_fixed(model, shape, Path(tmp) / f"cand{i}.onnx", dynamic_batch=precision == "int8")
            if precision == "int8":
                source = artifact_from_file(path, role="student")
                path = Path(get_exporter("onnx-int8")(ExportRequest(
                    name=f"cand{i}-int8", role="student", out_dir=Path(tmp), calibration=calibration,
                    source=source)).path)
            paths.append(path)
        return [s.p50_ms for s in measure(paths, profile, shape)]
