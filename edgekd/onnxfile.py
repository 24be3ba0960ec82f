"""Open an ONNX file safely and describe it. Every command that takes a user's .onnx file (validate,
gate, bench) goes through ``load_model`` first, so a truncated, corrupt or foreign file, or external
data that points outside the model's folder, is one clear ArtifactError before anything runs it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgekd.errors import ArtifactError, first_line

_REEXPORT = "pass a complete .onnx file (re-export it if it was truncated or damaged)"
# Keys of the model-file metadata edgekd writes (onnxruntime: session.get_modelmeta().custom_metadata_map).
PREPROCESS_KEY, CLASS_NAMES_KEY, VERSION_KEY = "edgekd.preprocess", "edgekd.class_names", "edgekd.version"
SPLIT_SEED_KEY = "edgekd.split_seed"  # the seed that split the data of the run that wrote it: validate reads that
# run's test split, unseen in its training
SPLIT_DATA_KEY = "edgekd.split_data"  # what that seeded split was dealt from (data.split_fingerprint)


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
        # onnxruntime's own format holds an optimised graph, without the operators and opset read here
        onnx_twin = path.with_suffix(".onnx")
        raise ArtifactError(f"'{path}' is an ORT-format model, not an .onnx file",
                            f"pass {onnx_twin} (compress --ort checked the .ort against it)" if onnx_twin.is_file()
                            else "pass the .onnx model it was converted from")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        _refuse_json(path)
        _refuse_torch(path)
        first = first_line(exc, 120)
        raise ArtifactError(f"'{path}' is not a readable ONNX model ({first})", _REEXPORT) from None
    if model.ir_version < 1 or not model.graph.node or not model.opset_import:
        raise ArtifactError(f"'{path}' is not a readable ONNX model (it holds no ONNX graph)", _REEXPORT)
    _check_complete(path, model)
    for tensor in _external_tensors(model):
        _check_external(path, tensor)
    return model


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


def is_int8(model: Any) -> bool:
    return any(n.op_type in ("QuantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger")
               for n in model.graph.node)


def precision_of(model: Any) -> str:
    """"int8" for a quantized model, "fp16" for one whose weights are mostly float16 (converted for a GPU or
    NPU delegate), else "fp32"."""
    import onnx

    if is_int8(model):
        return "int8"
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


def check_input_shape(path: str | Path, details: dict[str, Any], shape: tuple[int, ...]) -> None:
    """``shape`` (from --input-shape) must have the model input's rank and agree with its fixed dimensions:
    said here in one line, not as the runtime's error from inside the measuring process."""
    from edgekd.errors import ConfigError

    if not details.get("inputs"):
        return
    dims = details["inputs"][0]["shape"]
    if dims is None:  # unknown rank: any shape may be what the model takes
        return
    given = ",".join(map(str, shape))
    wanted = "(" + ", ".join(str(d) if isinstance(d, int) and d > 0 else str(d or "?") for d in dims) + ")"
    example = shape_example(dims, shape[0] if shape else 1, image_sample(shape))  # the sizes given, if an image
    if len(dims) != len(shape):
        raise ConfigError(f"--input-shape {given} has {len(shape)} dimensions, and '{path}' takes {len(dims)} "
                          f"{wanted}", f"pass {len(dims)} numbers, e.g. {example}")
    for i, (d, s) in enumerate(zip(dims, shape)):
        if isinstance(d, int) and d > 0 and d != s:
            raise ConfigError(f"--input-shape {given} sets dimension {i} to {s}, and '{path}' fixes it at {d} "
                              f"{wanted}", f"keep the model's fixed dimensions, e.g. {example}")


def fixed_dim(dim: Any) -> bool:
    return isinstance(dim, int) and dim > 0


def shape_example(dims: Sequence[Any], batch: int = 1, sample: Sequence[int] | None = None) -> str:
    """An --input-shape for an input of ``dims``: its fixed dimensions kept, a dynamic batch ``batch`` (the
    profile's, where the caller knows it), open channels and sides the data's ``sample`` (C, H, W) where known,
    else 3 channels and 224 pixels (an example to edit; the worker's own, which runs on devices without edgekd)."""
    from edgekd.latency.worker import shape_example as example

    return example(list(dims), batch, tuple(sample) if sample else None)


def image_sample(shape: Sequence[int]) -> tuple[int, ...] | None:
    """The (channels, height, width) of an NCHW or NHWC image input ``shape``, by where its channel count is
    (NCHW when that does not tell); None for another rank."""
    from edgekd.latency.worker import CHANNEL_COUNTS

    if len(shape) != 4:
        return None
    last = shape[3] in CHANNEL_COUNTS and shape[1] not in CHANNEL_COUNTS
    return (shape[3], shape[1], shape[2]) if last else tuple(shape[1:])


def data_input_shape(details: dict[str, Any], sample: Sequence[int], batch: int) -> tuple[int, ...] | None:
    """The shape to measure a model at whose input has dynamic dimensions besides the batch: the data's
    ``sample`` shape at the model's batch (``batch`` when that is dynamic too); None when nothing beyond the
    batch is dynamic, or the data's images do not fit the model's input (another rank, channel count or size:
    scoring them says which, and how to fix it, where this shape could only be refused as an --input-shape
    nobody gave)."""
    dims = (details.get("inputs") or [{}])[0].get("shape")
    if not dims or all(fixed_dim(d) for d in dims[1:]) or len(dims) != len(sample) + 1:
        return None
    if feeds_channels_last(dims, sample):
        sample = (*sample[1:], sample[0])
    return (dims[0] if fixed_dim(dims[0]) else batch, *sample) if _fits(dims[1:], sample) else None


def check_has_batch(path: str | Path, details: dict[str, Any], images: bool = False) -> None:
    """Refuse a model whose input is one image with no batch dimension before it (channels, height, width):
    edgekd times and scores batches of images, and would read its channels as a batch (and a size mismatch
    into it). ``images``: the model is fed image data (--data), so any rank-3 input is one; without it only
    a first dimension of 3 says so, as [1, T, F] may be a sequence model's batch of one."""
    dims = (details.get("inputs") or [{}])[0].get("shape")
    if not dims or len(dims) != 3 or not (images or dims[0] == 3):
        return
    shown = ", ".join(str(d) if fixed_dim(d) else str(d or "?") for d in dims)
    if not fixed_dim(dims[0]):  # an open first dimension is a batch: a grayscale model without its channels
        sides = ", ".join(str(d) if fixed_dim(d) else "224" for d in dims[1:])
        raise ArtifactError(f"'{path}' takes input of shape ({shown}), a batch of images without a channel "
                            "dimension, and edgekd feeds images as (batch, channels, height, width)",
                            f"re-export the model taking a channel dimension, e.g. an example input of shape "
                            f"(1, 1, {sides})")
    example = ", ".join(str(d) if fixed_dim(d) else "224" for d in dims)
    raise ArtifactError(f"'{path}' takes input of shape ({shown}), one image with no batch dimension, and edgekd "
                        "feeds images in batches (batch, channels, height, width)",
                        f"re-export the model with a batch dimension first, e.g. torch.onnx.export with an example "
                        f"input of shape (1, {example})")


def feeds_channels_last(dims: Sequence[Any], sample: Sequence[int]) -> bool:
    """Whether a model input of ``dims`` (batch first) takes images of the NCHW ``sample`` shape (C, H, W)
    only as channels-last (H, W, C), the layout of models converted from TensorFlow or TFLite; also when
    only their size or channel count differs, its channels being last and not first (so a mismatch is told in
    its layout)."""
    from edgekd.latency.worker import CHANNEL_COUNTS

    if len(dims) != 4 or len(sample) != 3 or _fits(dims[1:], sample):
        return False
    channels = sample[0]
    first = not fixed_dim(dims[1]) or dims[1] == channels
    if _fits(dims[1:], (*sample[1:], channels)) or (dims[3] == channels and not first):
        return True
    # Another channel count than the data's (a colour model fed grayscale): a channel-sized last dimension, and
    # none first, is still channels-last, so the mismatch is told as one of channels (--channels), not of size.
    return dims[3] in CHANNEL_COUNTS and not (fixed_dim(dims[1]) and dims[1] in CHANNEL_COUNTS)


def input_layout(dims: Sequence[Any], sample: Sequence[int]) -> str:
    """How a model input of ``dims`` (batch first) takes images of the NCHW ``sample`` shape: "NCHW" as
    they are, "NHWC" channels-last (``feeds_channels_last``), or "flat", one row of C*H*W values an image (an
    MLP exported without its flatten)."""
    if feeds_channels_last(dims, sample):
        return "NHWC"
    if len(dims) == 2 and len(sample) == 3 and (not fixed_dim(dims[1]) or dims[1] == math.prod(sample)):
        return "flat"
    return "NCHW"


def _fits(dims: Sequence[Any], shape: Sequence[int]) -> bool:
    return all(not fixed_dim(d) or d == s for d, s in zip(dims, shape))


def stamp_metadata(art: Any, props: dict[str, str]) -> Any:
    """Write ``props`` into the model file's metadata (``metadata_props``, which onnxruntime hands back as
    ``session.get_modelmeta().custom_metadata_map``) and return the Artifact with its new hash and size.
    A deployment pipeline holding only the .onnx file can then read what input the model expects."""
    import dataclasses

    import onnx

    from edgekd.fsutil import sha256

    path = Path(art.path)
    model = onnx.load(str(path), load_external_data=False)
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    _metadata.cache_clear()  # a rewrite within the clock's tick may keep the file's mtime
    # Weights kept beside the model are untouched, and still count towards what ships.
    beside = sum(f.stat().st_size for f in external_files(path, model))
    return dataclasses.replace(art, sha256=sha256(path), size_bytes=path.stat().st_size + beside)


def embedded_preprocess(path: str | Path) -> Any:
    """The input preprocessing an edgekd-exported model carries in its metadata (a data.Preprocess), or
    None for a model without it."""
    import json

    from edgekd.data import Preprocess

    found = embedded_metadata(path).get(PREPROCESS_KEY)
    try:
        return Preprocess.from_dict(json.loads(found)) if found else None
    except (ValueError, KeyError, TypeError):
        return None  # edited by hand: fall back to the data's own statistics


def embedded_split_seed(path: str | Path) -> int | None:
    """The seed that split the data of the edgekd run that exported the model, or None for a model without it."""
    found = embedded_metadata(path).get(SPLIT_SEED_KEY, "")
    return int(found) if found.isdigit() else None  # edited by hand: as if not recorded


def embedded_split_data(path: str | Path) -> dict[str, Any] | None:
    """What the run's seeded split was dealt from (``data.split_fingerprint``), or None when not recorded."""
    import json

    try:
        found = json.loads(embedded_metadata(path).get(SPLIT_DATA_KEY, "null"))
    except ValueError:
        return None  # edited by hand: as if not recorded
    if not isinstance(found, dict) or not isinstance(found.get("digest"), str):
        return None
    images = found.get("images")
    return found if isinstance(images, int) and not isinstance(images, bool) and images >= 0 else None


def embedded_class_names(path: str | Path) -> tuple[str, ...] | None:
    """The label of each output an edgekd-exported model carries in its metadata, or None."""
    return parse_class_names(embedded_metadata(path).get(CLASS_NAMES_KEY))


def embedded_metadata(path: str | Path) -> Mapping[str, str]:
    """The model file's metadata (key -> value), parsed once per version of the file: validate and gate ask
    for its preprocessing and its class names in turn, and each read parses the whole protobuf."""
    stat = os.stat(path)
    return _metadata(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _metadata(path: str, _mtime_ns: int, _size: int) -> Mapping[str, str]:
    import onnx

    model = onnx.load(path, load_external_data=False)
    return MappingProxyType({p.key: p.value for p in model.metadata_props})


def parse_class_names(text: str | None) -> tuple[str, ...] | None:
    """The ``edgekd.class_names`` metadata value as names, or None when absent or edited out of shape."""
    import json

    try:
        names = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(names, list):
        return None
    from edgekd.data import nfc

    return tuple(nfc(str(n)) for n in names)  # a model trained on macOS's folder names matches them typed elsewhere


# How a model taking other than NCHW is fed the NCHW images (latency.runtime.in_layout), as its metadata says it.
LAYOUT_RECORDS = {"NHWC": "NHWC", "flat": "NCHW flattened to (N, C*H*W)"}


def stamp_data_metadata(art: Any, data: Any, seed: int | None = None, layout: str = "NCHW") -> Any:
    """The artifact carrying, in its own metadata, the input it expects (in ``layout``, as it is fed), the label
    of each output and the ``seed`` that split the run's data (validate reads the run's test split with it)."""
    import json

    from edgekd import __version__

    described = data.describe()
    props = {VERSION_KEY: __version__, CLASS_NAMES_KEY: json.dumps(described["class_names"])}
    if seed is not None:
        props[SPLIT_SEED_KEY] = str(int(seed))
        from edgekd.data import split_fingerprint

        dealt = split_fingerprint(data) if hasattr(data, "seeded_split") else None
        if dealt is not None:
            props[SPLIT_DATA_KEY] = json.dumps(dealt, sort_keys=True)
    if "preprocess" in described:
        pre = {**described["preprocess"], "layout": LAYOUT_RECORDS.get(layout, layout)}
        props[PREPROCESS_KEY] = json.dumps(pre, sort_keys=True)
    return stamp_metadata(art, props)
