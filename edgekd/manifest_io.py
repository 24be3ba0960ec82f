"""Reading manifest.json: the one loader `gate`, `validate --manifest` and `report` share.

It checks the structure those commands read, so a foreign or hand-edited file is refused in one line that
names the field, rather than failing with a KeyError deep inside a command. The full format is
edgekd/schemas/manifest-v1.schema.json; jsonschema is only a test dependency, so the part edgekd relies on
is checked here by a small table of field kinds.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from edgekd.errors import ArtifactError

NOT_OURS = "this is not a manifest edgekd wrote, or it was edited: restore the manifest.json `edgekd compress` wrote"


class _Bad(Exception):
    def __init__(self, where: str, what: str) -> None:
        super().__init__(what)
        self.where, self.what = where, what


Kind = Callable[[Any, str], None]  # raises _Bad(where, what) when the value does not fit


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(test: Callable[[Any], bool], text: str) -> Kind:
    def check(value: Any, where: str) -> None:
        if not test(value):
            raise _Bad(where, f"is {_show(value)}, not {text}")

    return check


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite JSON number (a bool is not one)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


ANY: Kind = _kind(lambda v: True, "anything")
STR = _kind(lambda v: isinstance(v, str), "a string")
NAME = _kind(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
BOOL = _kind(lambda v: isinstance(v, bool), "true or false")
INT = _kind(_is_int, "an integer")
# A file's size: a 0 (or negative) one made --max-size-growth's ratio infinite and report's sizes "-0.0 KB".
SIZE = _kind(lambda v: _is_int(v) and v > 0, "a size in bytes above zero")
NUMBER = _kind(is_number, "a number")
POSITIVE = _kind(lambda v: is_number(v) and v > 0, "a number above zero")
NON_NEGATIVE = _kind(lambda v: is_number(v) and v >= 0, "a number of at least zero")
FRACTION = _kind(lambda v: is_number(v) and 0 <= v <= 1, "a fraction from 0 to 1")
SHA256 = _kind(lambda v: isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) is not None,
               "a sha256 (64 lowercase hex digits)")
OBJECT = _kind(lambda v: isinstance(v, dict), "an object")
BUDGET_PART = _kind(lambda v: v in ("size", "latency"), "'size' or 'latency'")  # the parts a copy can miss


def nullable(kind: Kind) -> Kind:
    def check(value: Any, where: str) -> None:
        if value is not None:
            kind(value, where)

    return check


def list_of(item: Kind, empty: str | None = None) -> Kind:
    """A list of ``item``s; with ``empty``, what to say when it has none (else an empty list is fine)."""
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise _Bad(where, f"is {_show(value)}, not a list")
        if not value and empty:
            raise _Bad(where, empty)
        for i, v in enumerate(value):
            item(v, f"{where}[{i}]")

    return check


def obj(required: dict[str, Kind] | None = None, optional: dict[str, Kind] | None = None,
        values: Kind | None = None, paired: tuple[str, ...] = ()) -> Kind:
    """An object with ``required`` and ``optional`` keys (checked in order), or any keys whose ``values`` fit;
    the ``paired`` optional keys come all together or not at all."""
    def check(value: Any, where: str) -> None:
        OBJECT(value, where)
        present = [k for k in paired if k in value]
        if present and len(present) < len(paired):
            missing = next(k for k in paired if k not in value)
            raise _Bad(where, f"has '{present[0]}' but no '{missing}'")
        for key, kind in (required or {}).items():
            if key not in value:
                raise _Bad(where, f"has no '{key}'")
            kind(value[key], _field(where, key))
        for key, kind in (optional or {}).items():
            if key in value:
                kind(value[key], _field(where, key))
        if values is not None:
            for key, v in value.items():
                values(v, _field(where, key))

    return check


def _field(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


_LATENCY = obj({"p50_ms": POSITIVE}, {k: NON_NEGATIVE for k in ("p90_ms", "p99_ms", "mean_ms", "cv", "p10_ms")}
               | {"runs": INT, "repeats": INT, "repeat_p50_ms": list_of(NON_NEGATIVE), "input_shape": list_of(INT)})
_TENSOR = obj({"name": STR, "dtype": STR, "shape": nullable(list_of(ANY))})  # null: rank unknown
_ROUNDS = obj(optional={"rounds": list_of(obj({"quantized": INT})), "best_round": INT}, paired=("rounds", "best_round"))


def _int8_fallback(value: Any, where: str) -> None:
    """The rounds of an int8 fallback (``int8_with_fallback``): report reads ``rounds[best_round]``, so that index
    must name one of them."""
    _ROUNDS(value, where)
    rounds = value.get("rounds")
    if rounds and not 0 <= value["best_round"] < len(rounds):
        raise _Bad(_field(where, "best_round"), f"is {value['best_round']}, not the index of one of its "
                                                f"{len(rounds)} round(s)")


_ARTIFACT = obj({"name": NAME, "role": STR, "precision": STR, "path": NAME, "sha256": SHA256, "size_bytes": SIZE,
                 "opset": INT},
                {"details": nullable(obj(optional={"op_types": list_of(STR), "inputs": list_of(_TENSOR),
                                                   "outputs": list_of(_TENSOR), "int8_fallback": _int8_fallback}))})
# The ORT-format copy (compress --ort): the parts gate reads to check the copy and an app's reduced build,
# and report.md its platform and verdict. Manifests written before the operator list's hash, and the verdict's
# two parts, were recorded have none of the optional keys.
_ORT = obj({"path": NAME, "sha256": SHA256, "size_bytes": SIZE, "platform": NAME, "operators": NAME,
            "top1_agreement": FRACTION, "max_abs_diff": NON_NEGATIVE, "passed": BOOL},
           {"operators_sha256": nullable(SHA256), "agrees": BOOL, "over_budget": list_of(BUDGET_PART),
            # the copy's timing and the runtime that wrote it, which report.md prints as numbers
            "p50_ms": nullable(NON_NEGATIVE), "vs_onnx": nullable(NON_NEGATIVE), "format_version": nullable(INT),
            "converted_with": STR})
_ENTRY = obj({"artifact": _ARTIFACT, "accuracy": nullable(FRACTION), "latency": nullable(_LATENCY),
              "verdicts": obj(values=BOOL), "checker_ok": BOOL, "primary": BOOL},
             {"speedup_vs_teacher": NUMBER, "ort": nullable(_ORT), "class_accuracy": obj(values=FRACTION)})
_PROFILE = obj({"name": NAME, "measure": obj({"batch_size": INT, "warmup_runs": INT, "runs_per_repeat": INT})},
               {"digest": nullable(STR), "source": nullable(STR), "description": STR})
_BUDGET = obj(optional={"latency_ms": nullable(POSITIVE), "max_size_kb": nullable(POSITIVE),
                        "min_accuracy": nullable(FRACTION), "max_accuracy_drop": nullable(NON_NEGATIVE)})
# What report's preprocessing line reads (the schema requires layout and dtype too; resize_method is optional).
_PREPROCESS = obj({"layout": STR, "dtype": STR, "scale": POSITIVE, "mean": list_of(NUMBER, "is empty"),
                   "std": list_of(POSITIVE, "is empty"), "channels": STR},
                  {"to_channels": nullable(INT), "resize_method": nullable(STR)})
# Where compress read the data (resolved) and its digest: gate and validate --manifest score on it from there.
_SOURCE = obj({"path": NAME}, {"sha256": SHA256, "sha256_of": STR})
_DATA = obj(optional={"name": STR, "input_shape": list_of(INT), "class_names": list_of(STR),
                      "preprocess": nullable(_PREPROCESS), "source": nullable(_SOURCE)})
# The distillation record report.html plots: the training curves, the epoch kept and where QAT began.
_EPOCH = obj({"epoch": INT, "train_loss": NUMBER, "val_accuracy": FRACTION})
# Pruning toward --target-ms: the report's Student line says the target, whether it was reached and what ships.
_PRUNING = obj({"target_ms": POSITIVE}, {"measured_ms": nullable(POSITIVE), "reached": BOOL, "params": nullable(INT),
                                          "steps": list_of(OBJECT)})
_DISTILL = obj(optional={"history": list_of(_EPOCH), "best_epoch": nullable(INT),
                         "best_val_accuracy": nullable(FRACTION), "qat_start": nullable(INT), "selected_on": STR,
                         "pruning": nullable(_PRUNING)})
_STUDENT = obj({"spec": obj({"space": STR, "config": OBJECT}), "params": INT},
               {"distill": nullable(_DISTILL), "search_latency_ms": nullable(NUMBER),
                "predicted_latency_ms": nullable(NUMBER), "searched_params": INT, "weights": NAME,
                "weights_sha256": SHA256, "weights_size_bytes": INT})
MANIFEST = obj(
    {"primary": NAME, "artifacts": list_of(_ENTRY, "is empty, so there is no model to check"), "profile": _PROFILE,
     "budget": _BUDGET},
    {"passed": BOOL, "notes": list_of(STR), "tools": OBJECT, "data": nullable(_DATA),
     "recipe": nullable(obj(optional={"seed": nullable(INT), "data": nullable(STR)})), "teacher": nullable(OBJECT),
     "student": nullable(_STUDENT), "latency_rounds": INT,
     "int8_speedup": nullable(obj({"median": NUMBER, "runs": list_of(NUMBER)},
                                  {"pairs": INT, "low": NUMBER, "high": NUMBER}, paired=("pairs", "low", "high")))})


def check_manifest(data: dict[str, Any], path: Path) -> None:
    """Refuse (ArtifactError) a manifest whose structure is not what edgekd writes, naming the first bad field."""
    try:
        MANIFEST(data, "")
    except _Bad as bad:
        raise ArtifactError(f"manifest '{path}': {bad.where} {bad.what}" if bad.where
                            else f"manifest '{path}' {bad.what}",
                            NOT_OURS) from None


def load_manifest(path: Path) -> dict[str, Any]:
    """manifest.json as edgekd wrote it: its schema and version, and the structure gate, validate and report read."""
    from edgekd.report import MANIFEST_SCHEMA, MANIFEST_VERSION

    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"manifest '{path}' is a folder, not a file",
                            "pass the manifest.json file `edgekd compress` wrote")
    if not path.is_file():
        raise ArtifactError(f"manifest '{path}' does not exist", "check the path")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"'{path}' is not valid JSON ({exc})", "pass the manifest.json edgekd wrote") from None
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        raise ArtifactError(f"'{path}' is not an edgekd manifest (schema {found!r}, expected {MANIFEST_SCHEMA!r})",
                            "pass the manifest.json edgekd wrote")
    if data.get("schema_version") != MANIFEST_VERSION:
        raise _version_error(path, data.get("schema_version"), MANIFEST_VERSION)
    check_manifest(data, path)
    return data


def _version_error(path: Path, found: Any, reads: int) -> ArtifactError:
    """A newer manifest needs a newer edgekd (regenerating it would mean training again, and it may be another
    team's); an older one, this edgekd's compress. A value that is no version is shown as written ("1" is not 1)."""
    if not _is_int(found):
        return ArtifactError(f"manifest '{path}' has schema_version {_show(found)}, not an integer (this edgekd "
                             f"reads version {reads})", "restore the manifest.json `edgekd compress` wrote")
    said = f"manifest '{path}' has schema version {found}, this edgekd reads version {reads}"
    if found > reads:
        return ArtifactError(said, "upgrade edgekd to read it: a newer edgekd wrote it")
    return ArtifactError(said, "regenerate it with this edgekd version (edgekd compress)")


def inside(folder: Path, recorded: str) -> Path | None:
    """The file a manifest in ``folder`` records as ``recorded``, or None when that path leads out of the folder
    (absolute, or a '..' part once normalised, as only an edited manifest has). Judged on the path as written, not
    on where symlinks lead: git-annex, DVC and Bazel keep every file of a folder as a link into a store elsewhere,
    and the sha256 checks read the bytes through the link."""
    norm = os.path.normpath(recorded.replace("\\", "/"))
    if norm.startswith("/") or PureWindowsPath(recorded).drive or ".." in PurePosixPath(norm).parts:
        return None
    return folder / os.path.normpath(recorded)


def files_not_recorded(manifest: dict[str, Any], folder: Path) -> list[str]:
    """The files ``manifest`` lists in ``folder`` that are not the ones it records, each said as "NAME is gone"
    or "NAME changed since the manifest was written (sha256 differs)": each artifact's .onnx and the weights kept
    beside it, its ORT-format copy and that copy's operator list, by the sha256 gate's integrity checks compare,
    and the student's state dict (student.pt), by the sha256 recorded for it. Its figures and verdict are those
    files', not the ones here."""
    from edgekd.fsutil import sha256

    recorded: dict[str, str] = {}
    for entry in manifest["artifacts"]:
        art, ort = entry["artifact"], entry.get("ort") or {}
        external = (art.get("details") or {}).get("external_sha256")  # not in the loader's table: read with care
        recorded.update({art["path"]: art["sha256"], **({k: v for k, v in external.items() if isinstance(v, str)}
                                                        if isinstance(external, dict) else {})})
        recorded.update({ort[k]: ort[h] for k, h in (("path", "sha256"), ("operators", "operators_sha256"))
                         if ort.get(k) and ort.get(h)})
    student = manifest.get("student") or {}
    if student.get("weights") and student.get("weights_sha256"):
        recorded[student["weights"]] = student["weights_sha256"]
    said = []
    for name, digest in recorded.items():
        file = folder / name
        if not file.is_file():
            said.append(f"{name} is gone")
        elif sha256(file) != digest:
            said.append(f"{name} changed since the manifest was written (sha256 differs)")
    return said
