"""What every exporter does after writing a file: check it and describe it."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError, ExportError, did_you_mean, first_line
from edgekd.fsutil import sha256
from edgekd.types import Artifact


def tidy_for_device(path: Path, name_batch: bool = False) -> None:
    """Drop what a device has no use for: the exporter's per-node debug metadata (source names, stack
    traces; on a small model more than half the file), opset imports of domains no node uses (the
    quantizer's pre-processing leaves eight, such as com.microsoft.nchwc and org.pytorch.aten, which a
    strict runtime or converter may refuse to load), and an IR version newer than the opsets need. With
    ``name_batch``, the batch dimension is named ``batch``, as in every file edgekd exports from torch
    (a torch.export program keeps its own symbol for it)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    if name_batch:
        _name_batch(graph)
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        del value.metadata_props[:]
    for init in graph.initializer:
        del init.metadata_props[:]
    del graph.metadata_props[:]
    used = _domains(graph.node) | {"", "ai.onnx"}
    for function in model.functions:  # local functions: their own domain and whatever their bodies call
        used |= {function.domain} | _domains(function.node)
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    # The oldest IR version that carries these opsets: onnx stamps its newest (10), which runtimes before
    # onnxruntime 1.16 (still in many mobile apps) refuse to load, while opset 18 needs only IR 8.
    lowest = onnx.helper.find_min_ir_version_for(model.opset_import, ignore_unknown=True)
    if not model.functions and lowest < model.ir_version:
        model.ir_version = lowest
    onnx.save(model, str(path))


def _name_batch(graph: Any) -> None:
    """The symbol torch gave a program's batch (``s77``) named the ONNX file's batch dimension: a device app
    reading the input's shape met ``s77`` where edgekd's other files say ``batch``. Renamed wherever that
    symbol appears, so the outputs' batch stays the input's."""
    dims = graph.input[0].type.tensor_type.shape.dim if len(graph.input) else ()
    symbol = dims[0].dim_param if len(dims) else ""
    if not symbol or symbol == "batch":
        return
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    shapes = [v.type.tensor_type.shape for v in values if v.type.HasField("tensor_type")]
    if any(d.dim_param == "batch" for shape in shapes for d in shape.dim):  # "batch" already names another size
        return
    for shape in shapes:
        for dim in shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = "batch"


def _domains(nodes: object) -> set[str]:
    """Domains of these nodes, their subgraphs' (If, Loop, Scan bodies) included."""
    found = set()
    for node in nodes:  # type: ignore[attr-defined]
        found.add(node.domain)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                found |= _domains(sub.node)
    return found


def require_dynamo_opset(request: object, exporter: str) -> None:
    """Exporters built on torch's dynamo exporter write opset 18 and later only."""
    from edgekd.export import DYNAMO_MIN_OPSET

    opset = request.opset  # type: ignore[attr-defined]
    if opset < DYNAMO_MIN_OPSET:
        raise ExportError(f"{exporter} exports at opset {DYNAMO_MIN_OPSET} or later, not {opset}",
                          f"pass --opset {DYNAMO_MIN_OPSET}, or use onnx-fp32 and onnx-int8 (post-training "
                          "quantization), which write older opsets")


def check_options(options: dict[str, Any], valid: Iterable[str], exporter: str) -> None:
    """Refuse option keys ``exporter`` does not read: a misspelt one would otherwise be ignored in silence."""
    known = sorted(valid)
    unknown = sorted(set(options) - set(known))
    if unknown:
        names = ", ".join(f"'{k}'" for k in unknown)
        raise ConfigError(f"unknown {exporter} option{'s' if len(unknown) > 1 else ''} {names}",
                          f"{did_you_mean(unknown[0], known)}valid: {', '.join(known)}" if known else
                          f"{exporter} takes no options: leave them out")


@contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """``model`` in eval mode while exporting, then every submodule's own mode back (not just the top
    module's: a model training with frozen BatchNorms must not have them thawed); no copy of the weights."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A path in a temporary folder to write ``path``'s model to, copied onto ``path`` only when the block
    completes: a failed export leaves a file of that name from before the call as it was, and a refused one
    (an invalid model, another opset) never reaches ``path``."""
    with tempfile.TemporaryDirectory(prefix="edgekd-export-") as tmp:
        written = Path(tmp) / path.name
        yield written
        beside = path.with_name(f".{path.name}.edgekd-part")  # copied whole, then renamed onto path at once
        path.parent.mkdir(parents=True, exist_ok=True)  # an out_dir the caller named, once there is a file for it
        try:
            shutil.copyfile(written, beside)
            os.replace(beside, path)
        finally:
            beside.unlink(missing_ok=True)


def placed(artifact: Artifact, path: Path) -> Artifact:
    """``artifact``, checked where it was written (``staged``), as the copy at ``path``."""
    return dataclasses.replace(artifact, path=str(path))


def finish(path: Path, name: str, role: str, precision: str, exporter: str,
           details: dict | None = None, opset: int | None = None) -> Artifact:
    """Run the ONNX checker on ``path`` and return its Artifact record; ``opset``: the one asked for, which
    the file must carry (an exporter that wrote another is not passed off as having written it)."""
    import onnx

    from edgekd.onnxfile import describe, opset_of

    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{exporter} wrote an invalid model '{path.name}': {first_line(exc)}",
                          "report this with the model that triggered it") from None
    if opset is not None and opset_of(model) != opset:
        path.unlink(missing_ok=True)
        raise ExportError(f"{exporter} wrote opset {opset_of(model)} for '{name}', not the {opset} asked for",
                          f"pass the opset it writes ({opset_of(model)}), or export with another exporter")
    return Artifact(name=name, role=role, precision=precision, path=str(path), exporter=exporter,
                    opset=opset_of(model), sha256=sha256(path), size_bytes=path.stat().st_size,
                    details={**describe(model), **(details or {})})


_USER_CALL = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in \w+\n\s*(?P<code>[^\n]+)')


def failure_text(exc: BaseException) -> str:
    """One line for a library's failure: the innermost cause's first line (torch.export wraps the reason in
    a page of advice whose first line says only that export failed), the next line too when the first only
    announces it ("The following inconsistencies were found:"), and the line of the user's own code that
    raised it when the message names one."""
    inner = _innermost(exc)
    first = first_line(inner)
    if first.endswith(":"):
        rest = [line.strip() for line in str(inner).strip().splitlines()[1:] if line.strip()]
        first = f"{first} {rest[0]}" if rest else first
    seen = "\n".join(str(e) for e in (exc, inner))
    user = next((m for m in _USER_CALL.finditer(seen) if f"{os.sep}site-packages{os.sep}" not in m["file"]), None)
    return f"{first} (at {user['file']}:{user['line']}: {user['code'].strip()[:80]})" if user else first


def runs_one_not_two(model: Any, sample: Any) -> bool:
    """Whether ``model`` (an nn.Module) runs ``sample``'s first row alone but not ``sample``, a batch of 2: a
    forward that fixes its batch size."""
    import torch

    from edgekd.distill.taps import runs_on

    return (isinstance(model, torch.nn.Module) and len(sample) > 1 and runs_on(model, sample[:1])
            and not runs_on(model, sample))


def _innermost(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


# A batch size written into the model (x.view(1, -1)): the only dimension edgekd exports free is the batch, so
# any symbol torch.export finds pinned to a number is it.
_FIXED_BATCH = re.compile(r"Eq\(s\d+, \d+\) is inconsistent|Constraints violated \(batch\)")
_SHAPE_MISMATCH = re.compile(r"to have \d+ channels|shapes cannot be multiplied|size mismatch|must match the size "
                             r"of tensor|Expected \d+D .*input")


# torch's TorchScript exporter (below opset 18) on an operator it writes only from a later opset.
_NEWER_OPSET = re.compile(r"Exporting the operator '[^']+' to ONNX opset version \d+ is not supported"
                          r"(?:\. Support for this operator was added in version (?P<added>\d+))?")


def export_fix(exc: BaseException, sample_shape: tuple[int, ...] | None, fixed_batch: bool = False) -> str:
    """The fix for a failed torch.export of a model fed ``sample_shape``, by what went wrong; ``fixed_batch``: the
    model runs one sample but not the batch it was exported with (the TorchScript exporter below opset 18 says
    only that shapes do not match)."""
    from edgekd.export import DEFAULT_OPSET

    text = "\n".join(str(e) for e in (exc, _innermost(exc)))
    newer = _NEWER_OPSET.search(text)
    if newer and newer["added"]:
        return f"pass --opset {newer['added']} or later (or leave --opset out for {DEFAULT_OPSET})"
    if newer:  # no older exporter writes it: the dynamo exporter at the default opset may
        return f"leave --opset out to export at {DEFAULT_OPSET}, which torch's newer exporter writes"
    if fixed_batch or _FIXED_BATCH.search(text):  # before the shape: its mismatch is the batch's
        return ("the model fixes its batch size (e.g. x.view(1, -1)); write it for any batch (x.flatten(1) or "
                "x.view(x.size(0), -1))")
    if _SHAPE_MISMATCH.search(text):
        shape = "x".join(str(d) for d in sample_shape[1:]) if sample_shape else "?"
        return (f"the example input is {shape} per sample (NCHW), which is not the layout or size the model "
                "takes: export with inputs of the model's own channels and resolution")
    return "make the model traceable by torch.export (no data-dependent control flow)"
