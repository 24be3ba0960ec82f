"""The exporter registry. Exporters live in the top-level ``exporters`` package (and in any
package exposing the ``edgekd.exporters`` entry point); the core reaches them only by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ConfigError, ExportError
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

    def __post_init__(self) -> None:
        check_opset(self.opset)


def check_opset(opset: int) -> None:
    """An opset edgekd can write: int8 needs per-channel Q/DQ (13), and onnx must know it."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= newest:
        raise ConfigError(f"--opset {opset} is outside {MIN_OPSET}..{newest}",
                          f"pass {DEFAULT_OPSET} (the default), or down to {MIN_OPSET} for an older runtime")


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

    import exporters  # noqa: F401  (registers the built-in exporters)

    for ep in entry_points(group="edgekd.exporters"):
        if ep.name not in EXPORTERS:
            ep.load()
