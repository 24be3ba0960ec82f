"""Open an ONNX file safely and describe it. Every command that takes a user's .onnx file (validate,
gate, bench) goes through ``load_model`` first, so a truncated, corrupt or foreign file, or external
data that points outside the model's folder, is one clear ArtifactError before anything runs it.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekd.errors import ArtifactError, first_line

_REEXPORT = "pass a complete .onnx file (re-export it if it was truncated or damaged)"
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
LFS_HOW = "actions/checkout's `lfs: true`, or git lfs pull"


def lfs_pointer(model: Path) -> bool:
    """Whether ``model`` is the pointer a checkout without Git LFS leaves in place of the file."""
    with open(model, "rb") as fh:
        return fh.read(len(_LFS_POINTER)) == _LFS_POINTER


def load_model(path: str | Path) -> Any:
    """The ModelProto of ``path`` without its external data; checks that the file is a whole ONNX model
    and that every external-data reference stays inside the model's folder and exists."""
    import onnx

    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"model '{path}' is a folder, not an .onnx file", "pass one of the .onnx files in it")
    if not path.is_file():
        raise ArtifactError(f"model file '{path}' does not exist", "check the path")
    if path.suffix.lower() == ".ort":
        refuse_misnamed_onnx(path)
        # onnxruntime's own format holds an optimised graph, without the operators and opset read here
        onnx_twin = path.with_suffix(".onnx")
        raise ArtifactError(f"'{path}' is an ORT-format model, not an .onnx file",
                            f"pass {onnx_twin} (compress --ort checked the .ort against it)" if onnx_twin.is_file()
                            else "pass the .onnx model it was converted from")
    if lfs_pointer(path):  # a CI checkout without LFS: "re-export it" would send the user the wrong way
        raise ArtifactError(f"'{path}' is a Git LFS pointer, not the model", f"check it out with LFS ({LFS_HOW})")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        _refuse_json(path)
        _refuse_torch(path)
        _refuse_misnamed_ort(path)
        first = first_line(exc, 120)
        raise ArtifactError(f"'{path}' is not a readable ONNX model ({first})", _REEXPORT) from None
    if model.ir_version < 1 or not model.graph.node or not model.opset_import:
        raise ArtifactError(f"'{path}' is not a readable ONNX model (it holds no ONNX graph)", _REEXPORT)
    _check_complete(path, model)
    for tensor in _external_tensors(model):
        _check_external(path, tensor)
    return model


ORT_IDENTIFIER = b"ORTM"  # the flatbuffer file identifier of onnxruntime's ORT format, at bytes 4..8


def is_ort_format(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(8)[4:8] == ORT_IDENTIFIER
    except OSError:
        return False


def _refuse_misnamed_ort(path: Path) -> None:
    """An ORT-format file named .onnx: protobuf's "wire format was corrupt" would send the user to re-export a
    file that is whole."""
    if is_ort_format(path):
        raise ArtifactError(f"'{path}' is an ORT-format model, not an ONNX model",
                            f"rename it to {path.with_suffix('.ort')}: edgekd reads a model's format from its name")


def refuse_misnamed_onnx(path: Path) -> None:
    """An ONNX model named .ort, said as such rather than as a damaged ORT-format file."""
    import onnx

    if is_ort_format(path):
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 (neither format: the ORT check that follows says so)
        return
    if model.ir_version >= 1 and model.graph.node and model.opset_import:  # protobuf parses much junk as empty
        raise ArtifactError(f"'{path}' is an ONNX model, not an ORT-format file, though named .ort",
                            f"rename it to {path.with_suffix('.onnx')}: edgekd reads a model's format from its name")


def _refuse_torch(path: Path) -> None:
    """A PyTorch file (torch.save's zip, or an older pickle) given where an ONNX model goes, named as one: protobuf's
    "wire format was corrupt" says nothing of the file a user mixed up."""
    import zipfile

    try:
        with path.open("rb") as f:
            head = f.read(2)
        torch_zip = zipfile.is_zipfile(path) and any(n.endswith("/data.pkl") or n == "data.pkl"
                                                     for n in zipfile.ZipFile(path).namelist())
    except (OSError, zipfile.BadZipFile):
        return
    if not torch_zip and not (head[:1] == b"\x80" and path.suffix.lower() in (".pt", ".pth")):
        return
    run = path.parent if (path.parent / "distill.json").is_file() else None
    raise ArtifactError(f"'{path}' is a PyTorch file (torch.save), not an ONNX model",
                        f"export it first: `edgekd compress --distilled {run}` exports and validates this distill "
                        "run's student" if run else "export it to .onnx first (torch.onnx.export), or pass the "
                        ".onnx file edgekd wrote beside it")


def _refuse_json(path: Path) -> None:
    """A JSON file given where a model goes is usually a manifest or report edgekd wrote: say which model to pass."""
    import json

    from edgekd.report import MANIFEST_SCHEMA

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError):
        return
    if isinstance(data, dict) and data.get("schema") == MANIFEST_SCHEMA and data.get("primary"):
        entry = next((a["artifact"] for a in data.get("artifacts", []) if a.get("artifact", {}).get("name")
                      == data["primary"]), None)
        model = path.parent / entry["path"] if entry and entry.get("path") else "one of its .onnx files"
        raise ArtifactError(f"'{path}' is an edgekd manifest, not an ONNX model",
                            f"pass a model it lists, e.g. its primary '{model}' (or give the manifest to "
                            "`edgekd gate`, or to `edgekd validate --manifest`)")
    raise ArtifactError(f"'{path}' is a JSON file, not an ONNX model", "pass an .onnx file")


def _check_complete(path: Path, model: Any) -> None:
    """Every top-level node input is defined earlier: a cut-off file usually loses nodes or initializers."""
    graph = model.graph
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    known |= {t.values.name for t in graph.sparse_initializer}
    for node in graph.node:
        missing = next((name for name in node.input if name and name not in known), None)
        if missing is not None:
            raise ArtifactError(f"'{path}' is incomplete: node '{node.name or node.op_type}' reads '{missing}', "
                                "which nothing defines", _REEXPORT)
        known.update(node.output)
    undefined = [o.name for o in graph.output if o.name not in known]
    if undefined:
        raise ArtifactError(f"'{path}' is incomplete: output '{undefined[0]}' is never computed", _REEXPORT)


def _external_tensors(model: Any) -> list[Any]:
    import onnx

    return [t for t in _tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]


def _tensors(graph: Any) -> list[Any]:
    """Every tensor a graph stores: initializers and tensor attributes, subgraphs included."""
    out = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
    for node in graph.node:
        for attr in node.attribute:
            out += ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                out += _tensors(sub)
    return out


def external_files(path: str | Path, model: Any) -> list[Path]:
    """The files ``model`` (read from ``path``) keeps external tensors in, each once, as paths beside it
    (``load_model`` has checked that they exist inside its folder)."""
    files: list[Path] = []
    for tensor in _external_tensors(model):
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        file = Path(path).parent / Path(location)
        if file not in files:
            files.append(file)
    return files


PROTOBUF_LIMIT = 2**31  # bytes: a larger model can only be saved with external data


@contextlib.contextmanager
def one_file(path: str | Path) -> Iterator[Path]:
    """``path``, or where it keeps weights in external files, a single-file copy of it for the block: onnxruntime's
    quantization pre-processing optimizes the model from a temporary folder where those files are not ("Cannot
    parse data from external tensors"). A model too large for one file is given as it is."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    beside = external_files(path, model)
    if not beside or sum(f.stat().st_size for f in beside) + Path(path).stat().st_size >= PROTOBUF_LIMIT:
        yield Path(path)
        return
    onnx.load_external_data_for_model(model, str(Path(path).parent))
    with tempfile.TemporaryDirectory(prefix="edgekd-one-file-") as tmp:
        copy = Path(tmp) / Path(path).name
        onnx.save(model, str(copy))
        yield copy


def model_files(path: str | Path) -> list[Path]:
    """``path`` and the files its external weights live in, for outputs to keep clear of (a model that does
    not load has none to add: the check that reads it says why)."""
    path = Path(path)
    try:
        import onnx

        return [path, *external_files(path, onnx.load(str(path), load_external_data=False))]
    except Exception:  # noqa: BLE001 (a broken file is named by the check that reads it, not here)
        return [path]


def _check_external(path: Path, tensor: Any) -> None:
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    fix = "keep external data files beside the model (a plain relative file name), or re-export as one file"
    where = Path(location)
    if not location or where.is_absolute() or ".." in where.parts or location.startswith(("/", "\\")):
        raise ArtifactError(f"'{path}': tensor '{tensor.name}' keeps its data at '{location}', outside the model's "
                            "folder (absolute paths and '..' are refused)", fix)
    folder = path.parent.resolve()
    target = (folder / where).resolve()
    if not target.is_relative_to(folder):  # a symlink that leads out of the folder
        raise ArtifactError(f"'{path}': tensor '{tensor.name}' keeps its data at '{location}', which resolves "
                            f"outside the model's folder ({target})", fix)
    if not target.is_file():
        raise ArtifactError(f"'{path}': external data file '{location}' of tensor '{tensor.name}' is missing",
                            "copy the model's data files along with it")
    end = int(entries.get("offset", 0) or 0) + int(entries.get("length", 0) or 0)
    if end > target.stat().st_size:
        raise ArtifactError(f"'{path}': external data file '{location}' is shorter than tensor '{tensor.name}' "
                            "needs (truncated?)", "copy the model's data files again, whole")


def opset_of(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


# Nodes only a quantized model holds: QDQ pairs, the operator-oriented (QOperator) int8 kernels, and
# onnxruntime's weight-only kernel (MatMulNBits: 4- or 8-bit weights dequantized inside the MatMul).
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
                           "MatMulInteger", "MatMulNBits"})


def quantized_ops(model: Any) -> list[str]:
    """The op types of ``model`` that only a quantized model holds, sorted ([] for a float model)."""
    return sorted({node.op_type for node in model.graph.node
                   if node.op_type in QUANTIZED_OPS or node.op_type.startswith("QLinear")})


def is_int8(model: Any) -> bool:
    """Whether ``model`` is quantized: it quantizes its activations, runs integer kernels, or stores its weights
    as integers (weight-only quantization: int8 weights behind a DequantizeLinear, or MatMulNBits). The last
    computes in float, but its weights are the int8 ones, so it is not the float model it was made from."""
    if any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "MatMulNBits")
           or n.op_type.startswith("QLinear") for n in model.graph.node):
        return True
    stored = _integer_constants(model.graph)
    return any(n.op_type == "DequantizeLinear" and n.input and n.input[0] in stored for n in model.graph.node)


def _integer_constants(graph: Any) -> set[str]:
    """Names of the integer tensors ``graph`` stores (initializers and Constant nodes): a DequantizeLinear
    reading one dequantizes stored weights, not an activation quantized on the way."""
    return set(_stored_types(graph, set(_quant_bits())))


def _stored_types(graph: Any, types: set[int] | None = None) -> dict[str, int]:
    """{name: element type} of the tensors ``graph`` stores (initializers and Constant nodes), of ``types`` only
    when given."""
    stored = {t.name: t.data_type for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            stored |= {out: attr.t.data_type for attr in node.attribute if attr.HasField("t") for out in node.output}
    return {name: kind for name, kind in stored.items() if types is None or kind in types}


def _quant_bits() -> dict[int, int]:
    """Bits of the element types quantized tensors are stored in (int32 is a bias's, not a weight's)."""
    import onnx

    bits = {onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8, onnx.TensorProto.INT16: 16,
            onnx.TensorProto.UINT16: 16}
    return bits | {getattr(onnx.TensorProto, t): 4 for t in ("INT4", "UINT4") if hasattr(onnx.TensorProto, t)}


def quantized_bits(model: Any) -> tuple[int | None, int | None]:
    """(activation bits, weight bits) of a quantized ``model`` (None: none of that kind is quantized):
    activations by what their QuantizeLinear quantizes to (its zero point's type, else its ``output_dtype``,
    else uint8, the op's default), weights by the integer tensors a DequantizeLinear reads from storage. The
    operator-oriented kernels (QLinear*, ConvInteger, MatMulInteger) and DynamicQuantizeLinear are 8-bit."""
    bits = _quant_bits()
    stored = _stored_types(model.graph)
    acts, weights = [], []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in stored:  # one of stored floats is a weight's
            zero = stored.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            given = next((a.i for a in node.attribute if a.name == "output_dtype" and a.i), None)
            acts.append(bits.get(zero or given or 0, 8))
        elif node.op_type == "DequantizeLinear" and node.input and stored.get(node.input[0]) in bits:
            weights.append(bits[stored[node.input[0]]])
        elif node.op_type in ("DynamicQuantizeLinear", "ConvInteger", "MatMulInteger") or \
                node.op_type.startswith("QLinear"):
            acts.append(8)
    return max(acts, default=None), max(weights, default=None)


# Ops whose first output holds their first input's values, rearranged at most (Dropout: at inference).
VALUE_PRESERVING = frozenset({"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Dropout",
                              "Cast"})


def output_ops(model: Any) -> dict[str, str | None]:
    """{output name: the op that computes its values}, looking through the nodes after it that only move or
    relabel them (an exporter's trailing Identity, a Flatten or Reshape to (batch, classes)); None for an
    output no node computes (an input or initializer passed through)."""
    made_by = {out: node for node in model.graph.node for out in node.output}
    ops: dict[str, str | None] = {}
    for output in model.graph.output:
        node, seen = made_by.get(output.name), 0
        while node is not None and node.op_type in VALUE_PRESERVING and node.input and seen < len(made_by):
            node, seen = made_by.get(node.input[0]), seen + 1
        ops[output.name] = None if node is None else node.op_type
    return ops


def softmax_outputs(path: str | Path) -> set[str]:
    """Names of the outputs of the ONNX file at ``path`` that end in a Softmax (probabilities, not logits);
    empty where the file cannot be read as ONNX here (an ORT-format file), which its session has read."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 (the session that runs it reads it; the choice then goes by name alone)
        return set()
    return {name for name, op in output_ops(model).items() if op == "Softmax"}


def precision_of(model: Any) -> str:
    """For a quantized model, "int8", or where it quantizes to 16 bits (NPU recipes) "int16" (16-bit weights,
    or 16-bit activations with no quantized weights) or "a16w8" (16-bit activations, 8-bit weights): a CI step
    reading "int8" for those was told another model; "fp16" for one whose weights are mostly float16 (converted
    for a GPU or NPU delegate); else "fp32"."""
    import onnx

    if is_int8(model):
        acts, weights = quantized_bits(model)
        if weights == 16 or (acts == 16 and weights is None):
            return "int16"
        return "a16w8" if acts == 16 else "int8"
    counts = {onnx.TensorProto.FLOAT: 0, onnx.TensorProto.FLOAT16: 0}
    for tensor in _tensors(model.graph):
        if tensor.data_type in counts:
            counts[tensor.data_type] += math.prod(tensor.dims)
    return "fp16" if counts[onnx.TensorProto.FLOAT16] > counts[onnx.TensorProto.FLOAT] else "fp32"


def describe(model: Any) -> dict[str, Any]:
    """IR version, operator types and input/output signature, as the manifest records them. Inputs that are
    also initializers (older exports with keep_initializers_as_inputs, converted models) are weights with a
    default, not what the model is fed, and are left out as onnxruntime leaves them out."""
    weights = {t.name for t in model.graph.initializer}
    return {"ir_version": int(model.ir_version), "op_types": sorted({n.op_type for n in model.graph.node}),
            "inputs": [signature(v) for v in model.graph.input if v.name not in weights],
            "outputs": [signature(v) for v in model.graph.output]}


def signature(value: Any) -> dict[str, Any]:
    """Name, element type and shape (symbolic dims by name) of a graph input or output; shape None when its
    rank is unknown (no shape at all, which is not a scalar's empty one)."""
    import onnx

    tensor = value.type.tensor_type
    dims = [d.dim_param or d.dim_value for d in tensor.shape.dim] if tensor.HasField("shape") else None
    return {"name": value.name, "dtype": onnx.TensorProto.DataType.Name(tensor.elem_type).lower(), "shape": dims}


def input_dims(path: str | Path) -> list[Any] | None:
    """The first input's dims of the ONNX file at ``path`` (names for free ones), or None where it cannot be
    read here: it is then refused, naming its problem, where it is loaded to run."""
    try:
        import onnx

        inputs = describe(onnx.load(str(path), load_external_data=False))["inputs"]
    except Exception:  # noqa: BLE001  (any unreadable file: the run that follows says why)
        return None
    return inputs[0]["shape"] if inputs else None
