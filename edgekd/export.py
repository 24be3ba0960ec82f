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
