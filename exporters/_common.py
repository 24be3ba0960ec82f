"""What every exporter does after writing a file: check it and describe it."""

from __future__ import annotations

from pathlib import Path

from edgekd.errors import ExportError
from edgekd.fsutil import sha256
from edgekd.types import Artifact


def finish(path: Path, name: str, role: str, precision: str, exporter: str) -> Artifact:
    """Run the ONNX checker on ``path`` and return its Artifact record."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{exporter} wrote an invalid model '{path.name}': {str(exc).splitlines()[0][:200]}",
                          "report this with the model that triggered it") from None
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return Artifact(name=name, role=role, precision=precision, path=str(path), exporter=exporter, opset=opset,
                    sha256=sha256(path), size_bytes=path.stat().st_size)
