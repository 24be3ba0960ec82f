"""Exports made only to be timed (calibration blocks, search candidates), not shipped.

torch's TorchScript exporter is 20-60x quicker than the dynamo exporter on small models, and after
onnxruntime's graph optimisation it runs the same fused Conv/Relu/Add graph: side by side here the
two exports of one student measured within 1% of each other. Shipped artifacts still go through the
``onnx-fp32`` exporter.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.quiet import TORCH_EXPORT, quiet


def export_fixed(module: Any, shape: tuple[int, ...], path: Path, dynamic_batch: bool = False) -> Path:
    """``module`` at the input ``shape`` as ONNX (opset 18) at ``path``; the batch dimension stays
    free with ``dynamic_batch`` (int8 calibration feeds whole batches)."""
    import torch

    with quiet(*TORCH_EXPORT, stderr=True):
        torch.onnx.export(module.eval(), (torch.randn(*shape),), str(path), dynamo=False, input_names=["input"],
                          opset_version=18, dynamic_axes={"input": {0: "batch"}} if dynamic_batch else None)
    return path


def timing_batch(profile: Any) -> int:
    """The batch every latency compared with a budget or target is measured at: the profile's ``[measure]
    batch_size``, the one validate and bench time at. A candidate timed at batch 1 for a profile that runs 8
    met --budget-ms in search and then missed it by 4x in validation."""
    return int(profile.measure.get("batch_size", 1))


def export_for_timing(models: list[Any], precision: str, calibration: np.ndarray, folder: Path,
                      prefix: str = "cand", batch: int = 1) -> list[Path]:
    """Export ``models`` into ``folder`` as they would run at ``batch`` (``timing_batch``): fp32, or int8
    QDQ quantized as the onnx-int8 exporter quantizes a shipped student."""
    from edgekd.export import ExportRequest, get_exporter
    from edgekd.validate import artifact_from_file

    shape = (batch, *calibration.shape[1:])
    paths = []
    for i, model in enumerate(models):
        path = export_fixed(model, shape, folder / f"{prefix}{i}.onnx", dynamic_batch=precision == "int8")
        if precision == "int8":
            source = artifact_from_file(path, role="student")
            path = Path(get_exporter("onnx-int8")(ExportRequest(
                name=f"{prefix}{i}-int8", role="student", out_dir=folder, calibration=calibration,
                source=source)).path)
        paths.append(path)
    return paths


def measure_modules(models: list[Any], profile: Any, precision: str, calibration: np.ndarray) -> list[Any]:
    """Export ``models`` as they would run (see ``export_for_timing``) and measure them interleaved:
    one LatencyStats each."""
    from edgekd.latency.measure import measure

    batch = timing_batch(profile)
    with tempfile.TemporaryDirectory(prefix="edgekd-search-") as tmp:
        paths = export_for_timing(models, precision, calibration, Path(tmp), batch=batch)
        return measure(paths, profile, (batch, *calibration.shape[1:]))
