"""What edgekd writes into a model file's own metadata (the input it expects, the label of each output, the
seed that split the run's data) and reads back from a user's file, for a deployment pipeline holding the .onnx
alone and for validate and gate."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

# Keys of the model-file metadata edgekd writes (onnxruntime: session.get_modelmeta().custom_metadata_map).
PREPROCESS_KEY, CLASS_NAMES_KEY, VERSION_KEY = "edgekd.preprocess", "edgekd.class_names", "edgekd.version"
SPLIT_SEED_KEY = "edgekd.split_seed"  # the seed that split the data of the run that wrote it: validate reads that
# run's test split, unseen in its training
SPLIT_DATA_KEY = "edgekd.split_data"  # what that seeded split was dealt from (data.split_fingerprint)


def stamp_metadata(art: Any, props: dict[str, str]) -> Any:
    """Write ``props`` into the model file's metadata (``metadata_props``, which onnxruntime hands back as
    ``session.get_modelmeta().custom_metadata_map``) and return the Artifact with its new hash and size.
    A deployment pipeline holding only the .onnx file can then read what input the model expects."""
    import dataclasses

    import onnx

    from edgekd.fsutil import sha256
    from edgekd.onnxfile import external_files

    path = Path(art.path)
    model = onnx.load(str(path), load_external_data=False)
    _set_props(model, props)
    onnx.save(model, str(path))
    _metadata.cache_clear()  # a rewrite within the clock's tick may keep the file's mtime
    # Weights kept beside the model are untouched, and still count towards what ships.
    beside = sum(f.stat().st_size for f in external_files(path, model))
    return dataclasses.replace(art, sha256=sha256(path), size_bytes=path.stat().st_size + beside)


def _set_props(model: Any, props: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def stamped_bytes(path: str | Path, props: dict[str, str]) -> int:
    """The bytes the model at ``path`` (with its external data) would ship as once ``props`` are stamped into
    it, as ``stamp_metadata`` writes them; the file is left as it is."""
    import onnx

    from edgekd.onnxfile import external_files

    model = onnx.load(str(path), load_external_data=False)
    _set_props(model, props)
    return model.ByteSize() + sum(f.stat().st_size for f in external_files(path, model))


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
    return stamp_metadata(art, data_metadata(data, seed, layout))


def data_metadata(data: Any, seed: int | None = None, layout: str = "NCHW") -> dict[str, str]:
    """The metadata ``stamp_data_metadata`` writes."""
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
    return props
