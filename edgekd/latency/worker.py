"""edgekd latency worker: measures ONNX models interleaved, on the machine it runs on.

Standalone on purpose (stdlib, numpy and onnxruntime only; no edgekd), because runners copy this
one file to remote devices and run it there::

    python3 worker.py spec.json

The spec is a JSON object::

    {"models": ["a.onnx", "b.onnx"],          # paths on this machine
     "labels": ["a.onnx", "b.onnx"],          # optional: names for messages (the user's own paths)
     "shape": [1, 3, 224, 224] or null,       # input shape; null: the model's own, dynamic batch = batch_size
     "shapes": [[1, 3, 32, 32], null],        # optional: one input shape (or null) per model, instead of "shape"
     "runtime": {...},                        # a profile's [runtime] table
     "measure": {...},                        # a profile's [measure] table
     "timeout_s": 600}                        # optional: the worker stops itself after this many seconds

It prints exactly one JSON line on stdout and nothing else there::

    {"ok": true, "results": [{"p50_ms": ..., "p90_ms": ..., "p99_ms": ..., "mean_ms": ..., "cv": ...,
                              "runs": ..., "repeats": ..., "repeat_p50_ms": [...], "input_shape": [...]}, ...],
     "onnxruntime": "1.20.0"}
    {"ok": false, "error": "...", "fix": "...", "kind": "artifact" | "runner"}   (exit code 1)

Each model is warmed up, then the models take turns in rotating order for ``repeats`` repeats of
``runs_per_repeat`` timed runs; if the per-repeat medians of any model vary (coefficient of
variation) more than ``max_cv``, as much again is measured and everything is judged together.

Past ``timeout_s`` the worker answers with an error and exits (code 1) wherever it is: a runner that
gives up on a remote run can only kill its own ssh or adb, which leaves this process running on the
device, sharing its cores with the next measurement.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time

_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}
_RUNTIME_KEYS = ("intra_op_threads", "inter_op_threads", "execution_mode", "graph_optimization", "allow_spinning",
                 "providers")
_MEASURE_KEYS = ("batch_size", "warmup_runs", "repeats", "runs_per_repeat", "max_cv")
# Taken by the one answer a run gives: the measurement's, or the watchdog's once past timeout_s.
_ANSWER = threading.Lock()


class WorkerError(Exception):
    """A failure reported as {"ok": false, ...}; ``kind`` is "artifact" for a bad model file."""

    def __init__(self, problem: str, fix: str, kind: str = "runner") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.kind = kind


def main(argv: list | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if len(args) != 1:
            raise WorkerError("the worker takes exactly one argument", "run it as: python3 worker.py spec.json")
        spec = load_spec(args[0])
        _stop_after(spec["timeout_s"])
        results, version = run(spec)
    except WorkerError as exc:
        _emit({"ok": False, "error": exc.problem, "fix": exc.fix, "kind": exc.kind})
        return 1
    except Exception as exc:  # anything unforeseen still answers with one JSON line
        _emit({"ok": False, "error": f"the latency worker failed: {type(exc).__name__}: {exc}",
               "fix": "check the device's numpy and onnxruntime installation", "kind": "runner"})
        return 1
    return 0 if _emit({"ok": True, "results": results, "onnxruntime": version}) else 1  # else: too late


def _emit(payload: dict) -> bool:
    """Print ``payload`` unless the run has answered already; whether it was printed."""
    if not _ANSWER.acquire(blocking=False):
        return False
    _write(payload)
    return True


def _write(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _stop_after(seconds) -> None:
    """End this process, with its answer, once it has run ``seconds`` (None: never), even inside a run."""
    if seconds is None:
        return

    def stop() -> None:
        if not _ANSWER.acquire(blocking=False):
            return  # the measurement is answering: it is over
        try:
            _write({"ok": False, "error": f"the measurement took longer than runner.timeout_s ({seconds:g} s), so "
                    "the worker stopped itself", "fix": "raise runner.timeout_s in the profile, or measure fewer runs "
                    "(measure.repeats, measure.runs_per_repeat) or fewer models at once", "kind": "runner"})
        finally:  # even when nobody reads any more (a runner that gave up closed the pipe): the point is to stop
            os._exit(1)  # from this thread: sys.exit would end only the thread

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()


def load_spec(path: str) -> dict:
    """Read and check the spec file."""
    try:
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
    except (OSError, ValueError) as exc:
        raise WorkerError(f"cannot read the worker spec '{path}' ({exc})",
                          "pass the path of the JSON spec the runner wrote") from None
    if not isinstance(spec, dict):
        raise WorkerError(f"the worker spec '{path}' is not a JSON object", "write the spec as a JSON object")
    models = spec.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise WorkerError("the worker spec has no list of model paths", 'add "models": ["model.onnx", ...]')
    labels = spec.get("labels") or models
    if not isinstance(labels, list) or len(labels) != len(models):
        raise WorkerError("the worker spec's labels do not match its models", "give one label per model")
    shape = spec.get("shape")
    if shape is not None and (not isinstance(shape, list) or not all(isinstance(d, int) for d in shape)):
        raise WorkerError(f"the worker spec's shape {shape!r} is not a list of integers",
                          'write it as e.g. "shape": [1, 3, 224, 224] or null')
    shapes = spec.get("shapes")
    if shapes is not None and (not isinstance(shapes, list) or len(shapes) != len(models) or not all(
            s is None or isinstance(s, list) and all(isinstance(d, int) for d in s) for s in shapes)):
        raise WorkerError(f"the worker spec's shapes {shapes!r} are not one list of integers (or null) per model",
                          'write them as e.g. "shapes": [[1, 3, 224, 224], null], or leave them out')
    for table, keys in (("runtime", _RUNTIME_KEYS), ("measure", _MEASURE_KEYS)):
        missing = [k for k in keys if k not in (spec.get(table) or {})]
        if missing:
            raise WorkerError(f"the worker spec's {table} table lacks {', '.join(missing)}",
                              f"write the full [{table}] table of the profile into the spec")
    limit = spec.get("timeout_s")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0):
        raise WorkerError(f"the worker spec's timeout_s {limit!r} is not a positive number of seconds",
                          'write it as e.g. "timeout_s": 600, or leave it out')
    return {"models": models, "labels": [str(x) for x in labels], "shapes": shapes or [shape] * len(models),
            "runtime": spec["runtime"], "measure": spec["measure"], "timeout_s": limit}


def _import_runtime() -> tuple:
    try:
        import numpy
        import onnxruntime
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise WorkerError(f"{missing} is not installed for {sys.executable}",
                          "install numpy and onnxruntime for that Python (pip install numpy onnxruntime) or "
                          "set runner.python in the profile to a Python that has them") from None
    return numpy, onnxruntime


def run(spec: dict) -> tuple:
    """Measure the spec's models; returns (one stats dict per model, onnxruntime version)."""
    np, ort = _import_runtime()
    m = spec["measure"]
    check_providers(ort, spec["runtime"]["providers"])
    options = _session_options(ort, spec["runtime"])
    sessions = [_open(ort, path, label, options, spec["runtime"]["providers"])
                for path, label in zip(spec["models"], spec["labels"])]
    feeds = []
    for sess, label, given in zip(sessions, spec["labels"], spec["shapes"]):
        shape = _input_shape(sess, label, int(m["batch_size"]), given)
        feeds.append({sess.get_inputs()[0].name: _random_input(np, sess.get_inputs()[0], label, shape)})
    for sess, feed, label, given in zip(sessions, feeds, spec["labels"], spec["shapes"]):
        try:
            for _ in range(int(m["warmup_runs"])):
                sess.run(None, feed)
        except Exception as exc:  # onnxruntime raises several unrelated exception types here
            raise WorkerError(*run_failure(exc, label, feed, bool(given)), "artifact") from None
    runs = [[] for _ in sessions]
    medians = [[] for _ in sessions]
    timing = (np, sessions, feeds, int(m["repeats"]), int(m["runs_per_repeat"]), runs, medians)
    try:
        _repeat(*timing)
        if max(_cv(np, med) for med in medians) > float(m["max_cv"]):
            # A noisy stretch: measure as much again and judge on all of it rather than on the noise.
            _repeat(*timing)
    except _RunFailed as failed:  # only without warm-up runs does a failing model get this far
        raise WorkerError(*run_failure(failed.exc, spec["labels"][failed.index], feeds[failed.index],
                                       bool(spec["shapes"][failed.index])), "artifact") from None
    return [{**_stats(np, r, med), "input_shape": [int(d) for d in next(iter(feed.values())).shape]}
            for r, med, feed in zip(runs, medians, feeds)], ort.__version__


def check_providers(ort, providers: list) -> None:
    """onnxruntime drops a listed provider it lacks and runs on the CPU without a word: the latency of
    another device. A profile's providers must all be there (the CPU is always there)."""
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise WorkerError(f"onnxruntime {ort.__version__} here has no {', '.join(missing)} (it has "
                          f"{', '.join(available)}), so the profile's device cannot be measured",
                          "install the onnxruntime build with that provider on the device, or set "
                          "runtime.providers in the profile to the ones it has")


def _session_options(ort, rt: dict):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(rt["intra_op_threads"])
    opts.inter_op_num_threads = int(rt["inter_op_threads"])
    opts.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if rt["execution_mode"] == "parallel"
                           else ort.ExecutionMode.ORT_SEQUENTIAL)
    level = _OPT_LEVELS.get(rt["graph_optimization"], "ORT_ENABLE_ALL")
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if rt["allow_spinning"] else "0")
    opts.log_severity_level = 3
    return opts


def _open(ort, path: str, label: str, options, providers: list):
    if not os.path.isfile(path):
        raise WorkerError(f"model file '{label}' does not exist", "check the path", "artifact")
    try:
        return ort.InferenceSession(path, options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises several unrelated exception types here
        raise WorkerError(*load_failure(exc, label, ort.__version__), "artifact") from None


# onnxruntime's own words when a model is newer than it: a board's runtime is often older than the onnx
# package that wrote the model, and the message's first 200 characters are a C++ source location.
_IR_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
_OPSET_TOO_NEW = re.compile(r"Opset (\d+) is under development.*?domain (\S+) is till opset (\d+)", re.S)
_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\((\d+)\) node")
_ORT_FORMAT_TOO_NEW = re.compile(r"ORT format model version \[(\d+)\] is not supported")
_ORT_NOISE = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : |Load model from .*? failed: ?|"
                        r"\S*onnxruntime_src/\S+:\d+ .*?\) (?=[A-Z])|"
                        r"\S+\.(?:cc|cpp|h):\d+ (?:[\w:~<>]+\([^\n]*?\) (?:const )?|[\w:~]+ )")
_NODE_FAILED = re.compile(r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' "
                          r"Status Message: ")


def load_failure(exc: BaseException, label: str, ort_version: str) -> tuple[str, str]:
    """(message, fix) for a model onnxruntime ``ort_version`` could not load: a model newer than the runtime
    is named as such, with both versions; anything else is onnxruntime's reason without its source location."""
    text = str(exc).strip()
    ir = _IR_TOO_NEW.search(text)
    if ir:
        return (f"'{label}' is ONNX IR version {ir[1]}, and onnxruntime {ort_version} reads up to {ir[2]}",
                f"upgrade onnxruntime where the model runs, or save the model with IR version {ir[2]} "
                "(the onnx package that wrote it is newer than that onnxruntime)")
    opset = _OPSET_TOO_NEW.search(text)
    if opset:
        ours = f" (edgekd compress --opset {opset[3]})" if opset[2] == "ai.onnx" and int(opset[3]) >= 13 else ""
        return (f"'{label}' uses opset {opset[1]} of {opset[2]}, and onnxruntime {ort_version} supports up to "
                f"{opset[3]}", f"upgrade onnxruntime where the model runs, or export the model at opset {opset[3]} or "
                f"lower{ours}")
    kernel = _NO_KERNEL.search(text)
    if kernel and kernel[1] in ("QuantizeLinear", "DequantizeLinear"):
        # an opset onnxruntime knows, but not int8 at: 1.32 loads opset 28, yet has no Q/DQ at it
        return (f"'{label}' uses {kernel[1]} at opset {kernel[2]}, which onnxruntime {ort_version} has no kernel for",
                "export the model at a lower opset (edgekd compress --opset 18, the default), or "
                "upgrade onnxruntime where the model runs")
    if kernel:  # the number is the operator's version; most often its input types are what has no kernel
        return (f"onnxruntime {ort_version} has no CPU kernel for {kernel[1]} (version {kernel[2]}) with the input "
                f"types '{label}' gives it", "export the model in float32 (or the types its runtime runs), or "
                "upgrade onnxruntime where the model runs")
    ort_format = _ORT_FORMAT_TOO_NEW.search(text)
    if ort_format:
        return (f"'{label}' is in ORT format {ort_format[1]}, which onnxruntime {ort_version} cannot load",
                "load it with the onnxruntime release its converter belongs to or a later one (edgekd's manifest "
                "records both), or ship the .onnx file")
    reason = " ".join(_ORT_NOISE.sub("", text).split())[:200] if text else type(exc).__name__
    return (f"onnxruntime cannot load '{label}': {reason or type(exc).__name__}",
            "pass a complete, valid ONNX model (re-export it)")


class _RunFailed(Exception):
    """A timed run of model ``index`` raised ``exc``."""

    def __init__(self, index: int, exc: BaseException) -> None:
        super().__init__(index, exc)
        self.index = index
        self.exc = exc


def run_failure(exc: BaseException, label: str, feed: dict, given: bool) -> tuple:
    """(message, fix) for a model that loaded but failed to run on ``feed``: the model and the shape it was
    fed, and the first line of onnxruntime's reason without its source location. ``given``: the shape came
    from --input-shape, not from the model."""
    shape = ",".join(str(d) for d in next(iter(feed.values())).shape)
    reason = run_reason(exc)
    fix = ("check --input-shape against what the model takes" if given else
           "the model fails at its own input shape: pass --input-shape with the one it takes, or re-export it")
    return f"model '{label}' fails to run on input shape {shape}: {reason}", fix


def run_reason(exc: BaseException) -> str:
    """The first line of onnxruntime's reason for a failed run, without its source location, the failing node
    named as "Reshape node '/Reshape': "."""
    lines = [line for line in _ORT_NOISE.sub("", str(exc)).splitlines() if line.strip()]
    return _NODE_FAILED.sub(lambda n: f"{n[1]} node '{n[2]}': " if n[2] else f"{n[1]} node: ",
                            lines[0].strip())[:200] if lines else type(exc).__name__


# onnxruntime's input type -> (numpy dtype, integer range or None for normal noise). Integer inputs are
# images a deployment feeds as raw pixels (uint8) or indices; any value in range times the same kernels.
_INPUT_TYPES = {"tensor(float)": ("float32", None), "tensor(float16)": ("float16", None),
                "tensor(double)": ("float64", None), "tensor(uint8)": ("uint8", (0, 256)),
                "tensor(int8)": ("int8", (-128, 128)), "tensor(int32)": ("int32", (0, 2)),
                "tensor(int64)": ("int64", (0, 2))}


def _random_input(np, arg, label: str, shape: tuple):
    """Random data of the input's own type: a model taking uint8 pixels is timed on uint8."""
    if arg.type not in _INPUT_TYPES:
        fed = ", ".join(t[len("tensor("):-1] for t in _INPUT_TYPES)
        raise WorkerError(f"input '{arg.name}' of model '{label}' is {arg.type}, which edgekd cannot feed",
                          f"export the model with an input of one of the types edgekd measures: {fed}", "artifact")
    dtype, span = _INPUT_TYPES[arg.type]
    rng = np.random.default_rng(0)
    if span is None:
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(span[0], span[1], size=shape).astype(dtype)


def _input_shape(session, label: str, batch: int, override: list | None) -> tuple:
    """The concrete input shape: dynamic batch becomes ``batch``; other dynamic dims need ``override``."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise WorkerError(f"model '{label}' has {len(inputs)} inputs ({names})",
                          "edgekd measures single-input models (one image tensor); export the model with one input",
                          "artifact")
    if override:
        return _within_size(tuple(int(d) for d in override), label, None)
    if not inputs[0].shape:  # onnxruntime's [] for an input whose rank is unknown, not only for a scalar
        raise WorkerError(f"input '{inputs[0].name}' of model '{label}' has no shape recorded, so edgekd cannot "
                          "tell what to feed it", f"pass --input-shape with the shape it takes, e.g. --input-shape "
                          f"{shape_example([None] * 4, batch)}", "artifact")
    shape = []
    for i, dim in enumerate(inputs[0].shape):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        elif i == 0:
            shape.append(batch)
        else:
            # The profile's batch in the example, so following it measures what the profile asks.
            raise WorkerError(f"input '{inputs[0].name}' of model '{label}' has dynamic dimension {i} ({dim})",
                              f"pass --input-shape, e.g. --input-shape {shape_example(inputs[0].shape, batch)}")
    dynamic_batch = not (isinstance(inputs[0].shape[0], int) and inputs[0].shape[0] > 0)
    return _within_size(tuple(shape), label, batch if dynamic_batch else None)


# As edgekd.validate.MAX_INPUT_VALUES (this file runs alone on a device): an --input-shape past it is refused
# there, and a profile's measure.batch_size times a model's image got past that, to a MemoryError here or a
# machine swapping (10000 x 3x512x512 is 58.6 GiB as the float64 the random input is drawn in).
MAX_INPUT_VALUES = 2 ** 26


def _within_size(shape: tuple, label: str, batch) -> tuple:
    """``shape``, refused past MAX_INPUT_VALUES naming what made it: the profile's ``batch`` (measure.batch_size)
    where it filled a dynamic batch dimension, else the shape given or the model's own."""
    count = 1
    for dim in shape:
        count *= int(dim)
    if count <= MAX_INPUT_VALUES:
        return shape
    shown = ",".join(str(d) for d in shape)
    size = (f"{shown} is {count:,} values ({count * 4 / 2 ** 30:,.1f} GiB as float32), more than the "
            f"{MAX_INPUT_VALUES:,} edgekd measures with")
    image = count // max(int(batch or 1), 1)
    if batch is not None and image <= MAX_INPUT_VALUES:
        raise WorkerError(f"the input of model '{label}' at the profile's measure.batch_size {batch}: {size}",
                          f"lower measure.batch_size in the profile to at most {MAX_INPUT_VALUES // image} for this "
                          f"model's image of {image:,} values")
    raise WorkerError(f"the input of model '{label}', {size}",
                      "pass a smaller --input-shape, or export the model with a smaller input", "artifact")


# Channel counts of the images edgekd feeds (--channels): a fixed dimension of this size is the channels one.
CHANNEL_COUNTS = (1, 3)


def shape_example(dims, batch=1, sample=None) -> str:
    """An --input-shape for an input of ``dims``: its fixed dimensions kept, a dynamic batch ``batch``; in an
    image input (rank 4, NCHW or NHWC as its fixed dimensions suggest) open channels and sides are filled from
    ``sample``, the data's (channels, height, width), else 3 channels and the other side where it is fixed, else
    224. Here, not in input_shape, because this file runs on devices without edgekd."""
    def fixed(d):
        return isinstance(d, int) and not isinstance(d, bool) and d > 0

    out = [d if fixed(d) else None for d in dims]
    if out and out[0] is None:
        out[0] = batch
    if len(dims) == 4:
        channel = _channel_axis(dims)
        sides = (2, 3) if channel == 1 else (1, 2)
        if out[channel] is None:
            out[channel] = sample[0] if sample else 3
        for k, i in enumerate(sides):
            if out[i] is None:
                other = dims[sides[1 - k]]
                out[i] = sample[1 + k] if sample else other if fixed(other) else 224
    elif len(dims) == 2 and out[1] is None and sample:  # flat rows of C*H*W values
        out[1] = sample[0] * sample[1] * sample[2]
    return ",".join(str(224 if d is None else d) for d in out)


def _channel_axis(dims) -> int:
    """1 (NCHW) or 3 (NHWC): where an image input of ``dims`` keeps its channels, by its fixed sizes; NCHW when
    they do not tell."""
    first, second, last = (d if isinstance(d, int) and d > 0 else None for d in (dims[1], dims[2], dims[3]))
    if first in CHANNEL_COUNTS:
        return 1
    if last in CHANNEL_COUNTS or (first is not None and first == second):
        return 3  # two equal sides first ([N, 32, 32, C]) leave the channels last; [N, 8, H, W] has 8 channels
    return 1


def _repeat(np, sessions: list, feeds: list, repeats: int, per_repeat: int, runs: list, medians: list) -> None:
    n = len(sessions)
    for rep in range(repeats):
        for k in range(n):
            i = (rep + k) % n  # rotate so no model always runs first after a switch
            sess, feed = sessions[i], feeds[i]
            times = []
            try:  # around the loop, not each run: nothing is added to what is timed
                for _ in range(per_repeat):
                    start = time.perf_counter_ns()
                    sess.run(None, feed)
                    times.append((time.perf_counter_ns() - start) / 1e6)
            except Exception as exc:
                raise _RunFailed(i, exc) from None
            runs[i].extend(times)
            medians[i].append(float(np.median(times)))


def _cv(np, values: list) -> float:
    arr = np.asarray(values)
    return float(arr.std() / arr.mean()) if arr.mean() > 0 else 0.0


def _stats(np, runs: list, medians: list) -> dict:
    arr = np.asarray(runs)
    return {"p10_ms": float(np.percentile(arr, 10)), "p50_ms": float(np.percentile(arr, 50)),
            "p90_ms": float(np.percentile(arr, 90)), "p99_ms": float(np.percentile(arr, 99)),
            "mean_ms": float(arr.mean()), "cv": _cv(np, medians), "runs": len(runs), "repeats": len(medians),
            "repeat_p50_ms": [float(x) for x in medians]}


if __name__ == "__main__":
    sys.exit(main())
