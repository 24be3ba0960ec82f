"""The exporter registry. Exporters live in the top-level ``exporters`` package (and in any
package exposing the ``edgekd.exporters`` entry point); the core reaches them only by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.registry import Registry
from edgekd.types import Artifact

DEFAULT_OPSET = 18  # the lowest the dynamo exporter emits; widest runtime reach


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
