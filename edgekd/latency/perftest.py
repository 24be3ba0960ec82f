"""onnxruntime_perf_test on a device: its command line for a profile, its output parsed, repeats aggregated.

Used by the adb runner's ``perf_test`` mode, for devices that have onnxruntime's C++ benchmark
binary but no Python. Each invocation is one repeat of ``runs_per_repeat`` runs; the models take
turns exactly as in the Python worker, and the per-repeat P50s play the part of its per-repeat medians.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekd.errors import ArtifactError, RunnerError, first_line
from edgekd.types import LatencyStats

_PROVIDERS = {"CPUExecutionProvider": "cpu", "XnnpackExecutionProvider": "xnnpack", "NnapiExecutionProvider": "nnapi",
              "QNNExecutionProvider": "qnn", "CoreMLExecutionProvider": "coreml"}
_OPT_LEVELS = {"disable": "0", "basic": "1", "extended": "2", "all": "99"}
_LINE = re.compile(r"^\s*(Average inference time cost|P50 Latency|P90 Latency|P99 Latency)\s*:\s*"
                   r"([-+0-9.eE]+)\s*(ms|us|s)?\s*$", re.MULTILINE)
_KEYS = {"Average inference time cost": "mean", "P50 Latency": "p50", "P90 Latency": "p90", "P99 Latency": "p99"}
_TO_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3}


def command(program: str, model: str, runtime: dict[str, Any], runs: int, free_dims: Sequence[str]) -> list[str]:
    """The argv (to run on the device) that times ``model`` ``runs`` times with the profile's runtime settings."""
    providers = list(runtime.get("providers") or ["CPUExecutionProvider"])
    if providers[0] not in _PROVIDERS:
        raise RunnerError(f"onnxruntime_perf_test has no option for execution provider '{providers[0]}'",
                          f"make runtime.providers start with one of {', '.join(_PROVIDERS)}, "
                          "or use runner.mode = \"python\"")
    argv = [program, "-e", _PROVIDERS[providers[0]], "-m", "times", "-r", str(runs),
            "-x", str(runtime["intra_op_threads"]), "-o", _OPT_LEVELS[runtime["graph_optimization"]]]
    if runtime["execution_mode"] == "parallel":
        argv += ["-P", "-y", str(runtime["inter_op_threads"])]
    if not runtime["allow_spinning"]:
        argv += ["-C", "session.intra_op.allow_spinning|0"]
    for dim in free_dims:
        argv += ["-f", dim]
    return argv + ["-I", model]


# Killing the local adb on a time-out leaves perf_test running on the device, and it cannot stop itself (the
# Python worker can: its spec's timeout_s), so the device's own `timeout` (coreutils; toybox on Android) stops
# it; a device without one runs it as before. The arguments pass through "$@", never re-split.
_BOUNDED = 'limit=$1; shift; if command -v timeout >/dev/null 2>&1; then exec timeout "$limit" "$@"; fi; exec "$@"'


def bounded(argv: list[str], seconds: float) -> list[str]:
    """``argv`` stopped on the device after ``seconds`` (rounded up to whole seconds, which every `timeout` takes)."""
    return ["sh", "-c", _BOUNDED, "sh", str(max(1, math.ceil(seconds))), *argv]


def free_dims(path: str | Path, batch: int, shape: Sequence[int] | None) -> list[str]:
    """``name:value`` overrides for the model input's dynamic dimensions (perf_test's ``-f``)."""
    return [f"{dim}:{size}" for dim, size in _sizes(path, batch, shape)[1].items()]


def fed_shape(path: str | Path, batch: int, shape: Sequence[int] | None) -> tuple[int, ...]:
    """The input shape perf_test runs ``path`` at with ``free_dims``' overrides: its fixed dimensions as
    they are (a fixed batch ignores ``batch``), the dynamic ones as set."""
    dims, sizes = _sizes(path, batch, shape)
    return tuple(d if isinstance(d, int) else sizes[str(d)] for d in dims)


def _sizes(path: str | Path, batch: int,
           shape: Sequence[int] | None) -> tuple[list[int | str | None], dict[str, int]]:
    """The model input's dimensions and the size each named dynamic one is set to."""
    name, dims = _input_dims(Path(path))
    if dims is None:
        raise RunnerError(f"model input '{name}' of '{path}' has no shape recorded, and onnxruntime_perf_test "
                          "can only set named dimensions of one", "export the model with its input's shape, or "
                          "use runner.mode = \"python\" with --input-shape")
    if shape and len(shape) != len(dims):
        raise RunnerError(f"--input-shape {','.join(map(str, shape))} has {len(shape)} dimensions but model "
                          f"'{path}' takes {len(dims)}", "pass an input shape of the model's rank")
    sizes: dict[str, int] = {}
    for i, dim in enumerate(dims):
        if isinstance(dim, int):
            continue
        want = int(shape[i]) if shape else (batch if i == 0 else None)
        if want is None:
            from edgekd.input_shape import shape_example

            raise RunnerError(f"model input '{name}' has dynamic dimension {i} ({dim or '?'})",
                              f"pass --input-shape, e.g. --input-shape {shape_example(dims, batch)}")
        if not dim:
            raise RunnerError(f"dimension {i} of model input '{name}' is dynamic but unnamed, so "
                              "onnxruntime_perf_test cannot set it",
                              "export the model with a fixed shape or named dynamic axes, or use runner.mode = "
                              "\"python\"")
        if sizes.setdefault(dim, want) != want:
            # -f sets a name once for the whole model, so the shape asked for cannot be timed at all.
            raise RunnerError(f"model input '{name}' names two dimensions '{dim}', and --input-shape "
                              f"{','.join(map(str, shape or ()))} sets them to {sizes[dim]} and {want}: "
                              "onnxruntime_perf_test cannot set one named dimension to two sizes",
                              "use runner.mode = \"python\" (it feeds the shape as given), or export the model "
                              "with a distinct name for each dynamic dimension")
    return dims, sizes


def _input_dims(path: Path) -> tuple[str, list[int | str | None] | None]:
    """The single model input's name and dimensions (a fixed size, a dimension's name, or None for an unnamed
    dynamic one); None for dimensions when its rank is unknown."""
    if path.suffix.lower() == ".ort":  # a flatbuffer, not a protobuf: onnxruntime reads its inputs
        from edgekd.ort_format import check_ort_file, ort_inputs

        check_ort_file(path)
        try:
            inputs = ort_inputs(path)["inputs"]
        except Exception as exc:  # onnxruntime raises several unrelated types here
            raise ArtifactError(f"onnxruntime cannot read the inputs of '{path}': {first_line(exc, 200)}",
                                "convert the .onnx again (compress --ort)") from None
        found = [(i["name"], None if i["shape"] is None else
                  [d if isinstance(d, str) or d is None or d > 0 else None for d in i["shape"]]) for i in inputs]
    else:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf and onnx raise several unrelated types here
            raise ArtifactError(f"onnx cannot load '{path}': {str(exc).strip()[:200] or type(exc).__name__}",
                                "pass a complete, valid ONNX model (re-export it)") from None
        initializers = {i.name for i in model.graph.initializer}
        found = [(i.name, [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else d.dim_param or None
                           for d in i.type.tensor_type.shape.dim] if i.type.tensor_type.HasField("shape") else None)
                 for i in model.graph.input if i.name not in initializers]
    if len(found) != 1:
        raise RunnerError(f"model '{path}' has {len(found)} inputs", "edgekd measures single-input models")
    return found[0]


def parse(text: str) -> dict[str, float] | None:
    """Average/P50/P90/P99 in ms from perf_test's output; ``None`` if any of them is missing."""
    found: dict[str, float] = {}
    for name, value, unit in _LINE.findall(text):
        try:
            found[_KEYS[name]] = float(value) * _TO_MS[unit or "ms"]
        except ValueError:
            return None
    return found if len(found) == len(_KEYS) else None


def missing_lines(text: str) -> list[str]:
    """The latency lines ``parse`` needs that ``text`` lacks (or has with no number), named as perf_test prints
    them."""
    found = set()
    for name, value, _unit in _LINE.findall(text):
        try:
            float(value)
        except ValueError:
            continue
        found.add(name)
    return [name for name in _KEYS if name not in found]


def cv(values: Sequence[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean > 0 else 0.0


def aggregate(samples: Sequence[dict[str, float]], runs_per_repeat: int,
              input_shape: Sequence[int] = ()) -> LatencyStats:
    """One model's repeats (fed ``input_shape``): p50/p90/p99 are medians of the repeats' percentiles, cv that
    of their P50s."""
    p50s = [s["p50"] for s in samples]
    return LatencyStats(
        p50_ms=float(statistics.median(p50s)),
        p90_ms=float(statistics.median(s["p90"] for s in samples)),
        p99_ms=float(statistics.median(s["p99"] for s in samples)),
        mean_ms=float(statistics.fmean(s["mean"] for s in samples)),
        cv=cv(p50s),
        runs=runs_per_repeat * len(samples),
        repeats=len(samples),
        repeat_p50_ms=tuple(float(x) for x in p50s),
        input_shape=tuple(int(d) for d in input_shape),
    )
