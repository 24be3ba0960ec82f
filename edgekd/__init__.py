"""edgekd: turn a trained PyTorch model into a small, fast int8 ONNX student for an edge device.

The public API is listed in ``__all__``; names load lazily so ``edgekd --help`` stays instant.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "compress": "edgekd.pipeline",
    "CompressConfig": "edgekd.pipeline",
    "CompressResult": "edgekd.pipeline",
    "load_recipe": "edgekd.pipeline",
    "run_search": "edgekd.pipeline",
    "run_distill": "edgekd.pipeline",
    "prune_distill": "edgekd.distill.prune",
    "PruneConfig": "edgekd.distill.prune",
    "int8_with_fallback": "edgekd.int8_fallback",
    "FallbackConfig": "edgekd.int8_fallback",
    "recheck": "edgekd.manifest_check",
    "write_html_report": "edgekd.report_html",
    "run_gate": "edgekd.gate",
    "GateConfig": "edgekd.gate",
    "GateResult": "edgekd.gate",
    "GateIncomplete": "edgekd.gate",
    "RecheckConfig": "edgekd.manifest_check",
    "search": "edgekd",  # a module that calls its function (edgekd.callable_module)
    "SearchConfig": "edgekd.search.search",
    "distill": "edgekd",
    "validate": "edgekd",
    "artifact_from_file": "edgekd.validate",
    "measure": "edgekd.latency.measure",
    "load_profile": "edgekd.profiles",
    "list_profiles": "edgekd.profiles",
    "DeviceProfile": "edgekd.profiles",
    "load_data": "edgekd.data",
    "load_data_for": "edgekd.data_match",
    "Dataset": "edgekd.data",
    "default_teacher": "edgekd.teacher",
    "load_teacher": "edgekd.teacher",
    "build_student": "edgekd.search.spaces",
    "get_exporter": "edgekd.export",
    "ExportRequest": "edgekd.export",
    "Budget": "edgekd.types",
    "DistillConfig": "edgekd.types",
    "DistillResult": "edgekd.types",
    "StudentSpec": "edgekd.types",
    "Candidate": "edgekd.types",
    "SearchResult": "edgekd.types",
    "Artifact": "edgekd.types",
    "ValidationReport": "edgekd.types",
    "LatencyStats": "edgekd.types",
    "EdgeKDError": "edgekd.errors",
    "EdgeKDWarning": "edgekd.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if _EXPORTS.get(name) == __name__:
        return import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgekd' has no attribute '{name}'")


def __dir__() -> list[str]:
    return __all__
