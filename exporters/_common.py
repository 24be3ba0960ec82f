"""What every exporter does after writing a file: check it and describe it."""

from __future__ import annotations

from pathlib import Path

from edgekd.errors import ExportError
from edgekd.fsutil import sha256
from edgekd.types import Artifact


def strip_debug_metadata(path: Path) -> None:
    """Drop the exporter's per-node debug metadata (source names, stack traces): on a small model it is
    more than half the file, and a device has no use for it."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        del value.metadata_props[:]
    for init in graph.initializer:
        del init.metadata_props[:]
    del graph.metadata_props[:]
    onnx.save(model, str(path))


def finish(path: Path, name: str, role: str, precision: str, exporter: str,
           details: dict | None = None) -> Artifact:
    """Run the ONNX checker on ``path`` and return its Artifact record."""
    import onnx

    from edgekd.onnxfile import describe, opset_of

    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{exporter} wrote an invalid model '{path.name}': {str(exc).splitlines()[0][:200]}",
                          "report this with the model that triggered it") from None
    return Artifact(name=name, role=role, precision=precision, path=str(path), exporter=exporter,
                    opset=opset_of(model), sha256=sha256(path), size_bytes=path.stat().st_size,
                    details={**describe(model), **(details or {})})
