"""onnxruntime sessions configured exactly as a device profile says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ArtifactError
from edgekd.profiles import DeviceProfile

_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}


def session_options(profile: DeviceProfile) -> Any:
    import onnxruntime as ort

    rt = profile.runtime
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = rt["intra_op_threads"]
    opts.inter_op_num_threads = rt["inter_op_threads"]
    opts.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if rt["execution_mode"] == "parallel"
                           else ort.ExecutionMode.ORT_SEQUENTIAL)
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[rt["graph_optimization"]])
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if rt["allow_spinning"] else "0")
    opts.log_severity_level = 3
    return opts


def open_session(path: str | Path, profile: DeviceProfile, options: Any = None) -> Any:
    """An InferenceSession for ``path``; unreadable or non-ONNX files become ArtifactError."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file '{path}' does not exist", "check the path")
    providers = providers_here(profile)  # outside the try: its refusal is not a bad model's
    try:
        return ort.InferenceSession(str(path), options or session_options(profile), providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated exception types here
        from edgekd.latency.worker import load_failure

        raise ArtifactError(*load_failure(exc, str(path), ort.__version__)) from None


def check_providers(profile: DeviceProfile) -> None:
    """A local profile's execution providers, checked as the latency worker checks them, in its words:
    onnxruntime drops a listed provider it lacks and runs on the CPU without a word (a raw UserWarning), so
    a CUDA profile's accuracy was scored on the CPU, and compress found out only at its first measurement,
    after the data and the teacher. A remote profile's device is checked by its own worker."""
    import onnxruntime as ort

    from edgekd.errors import RunnerError
    from edgekd.latency.worker import WorkerError
    from edgekd.latency.worker import check_providers as worker_check

    if not profile.is_local:
        return
    try:
        worker_check(ort, list(profile.runtime["providers"]))
    except WorkerError as exc:
        raise RunnerError(exc.problem, exc.fix) from None


def providers_here(profile: DeviceProfile) -> list[str]:
    """The providers a session in this process opens with: a local profile's, checked; those of a device's
    profile (ssh, adb) that this host has, since what runs here is this host's onnxruntime anyway (the gate
    says accuracy is computed here, not on the device) and the CPU is always among them."""
    import onnxruntime as ort

    check_providers(profile)
    listed = list(profile.runtime["providers"])
    if profile.is_local:
        return listed
    available = ort.get_available_providers()
    return [p for p in listed if p in available] or ["CPUExecutionProvider"]


def predictions_on_test_split(path: str | Path, profile: DeviceProfile,
                              data: Any) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The model's class scores on ``data``'s test split, the test labels numbered as its outputs (by the
    class names in the session's metadata) and notes on how it was fed and read (channels-last input,
    which of several outputs), after checking that the model takes the data's images and predicts at least
    its classes (a mismatch is a DataError naming both, not onnxruntime's)."""
    from edgekd.data_match import labels_for, present_classes
    from edgekd.onnx_metadata import CLASS_NAMES_KEY, parse_class_names

    session = open_session(path, profile)
    names = parse_class_names(session.get_modelmeta().custom_metadata_map.get(CLASS_NAMES_KEY))
    data = present_classes(data, names)  # a numbered test set's classes no image has are none to predict
    layout = check_input_fits(session, data, path)
    x = in_layout(data.x_test, layout)
    widths = output_widths(session, x[:1])
    output, notes = scored_output(session, len(names) if names else data.num_classes, path, widths)
    check_classes(widths[output], data, path)
    if layout != "NCHW":
        taken = "channels-last (NHWC) input" if layout == "NHWC" else f"flat input ({x.shape[1]} values an image)"
        notes = (*notes, f"'{Path(path).name}' takes {taken}: the test images were fed to it as {layout}")
    out, ran = scored_run(session, x, output, path)
    scores = class_scores(out, path)
    width = widths[output] if widths[output] is not None else scores.shape[1] if scores.ndim == 2 else None
    if widths[output] is None:  # the one-image probe failed where the whole run did not: its scores tell
        check_classes(width, data, path)
    if not names:
        notes = (*notes, *_more_classes(width, data, path))
    return scores, labels_for(data, names), (*notes, *ran)


def _more_classes(classes: int | None, data: Any, path: str | Path) -> tuple[str, ...]:
    """A note when a model that names no classes gives more (``classes``) than the data has: its outputs are
    taken to be the data's labels in order, and a prediction among the outputs beyond them counts as wrong, which
    reads as a weak model when the data is not the model's (fewer is refused in ``check_classes``)."""
    if classes is None or classes <= data.num_classes:
        return ()
    return (f"'{Path(path).name}' gives {classes} classes and data '{data.name}' has {data.num_classes}: its labels "
            f"0-{data.num_classes - 1} are compared with the model's top class among all {classes}, so a prediction "
            f"of {data.num_classes} or above counts as wrong; pass the data the model was built for",)


def check_classes(classes: int | None, data: Any, path: str | Path) -> None:
    """Refuse a model whose scored output gives fewer ``classes`` than the data has (None: not known)."""
    from edgekd.errors import DataError

    if classes is not None and classes < data.num_classes:
        raise DataError(f"'{path}' predicts {classes} classes, and data '{data.name}' has {data.num_classes}",
                        "pass the data the model was built for")


def output_widths(session: Any, image: np.ndarray) -> list[int | None]:
    """Each output's class count (``_class_dim``): as declared, and where a declared one is symbolic (['N', 'K'],
    from dynamic_axes or a head whose width depends on the input), as one image (``image``, in the model's
    layout) run through it gives it: read from the declared shape alone, a 5-class model was scored on 10-class
    data with classes 5-9 counted wrong and passed. None where that run fails too (the scoring run says why)."""
    outputs = session.get_outputs()
    widths = [_class_dim(o.shape) for o in outputs]
    if all(o.shape and all(isinstance(d, int) for d in o.shape[1:]) for o in outputs):
        return widths
    try:
        got = session.run(None, _feed(session, image), _silent())
    except Exception:  # noqa: BLE001 (onnxruntime raises several unrelated types; scored_run says it in one line)
        return widths
    return [w if w is not None else _class_dim(np.shape(g)) for w, g in zip(widths, got)]


def in_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """NCHW images ``x`` in the ``layout`` a model takes them (``input_shape.input_layout``)."""
    if layout == "NHWC":
        return x.transpose(0, 2, 3, 1)
    if layout == "flat":
        return x.reshape(len(x), -1)
    return x


def scored_output(session: Any, classes: int, path: str | Path,
                  widths: list[int | None] | None = None) -> tuple[int, tuple[str, ...]]:
    """Which output accuracy is read from, and a note when there is a choice: the one output whose class
    dimension is ``classes`` (a model may return its features beside, or before, its logits); of several, the
    one named as class scores (``_score_name_rank``: raw scores before a Softmax's probabilities, whose log
    flattens the gaps a float cannot hold, then a whole name before an ending, then the first); else the first.
    ``widths``: each output's class count as ``output_widths`` gives it (default: as declared)."""
    from edgekd.onnxfile import softmax_outputs

    outputs = session.get_outputs()
    if len(outputs) == 1:
        return 0, ()
    widths = widths if widths is not None else [_class_dim(o.shape) for o in outputs]
    fitting = [i for i, width in enumerate(widths) if width == classes]
    named = [i for i in fitting if _score_name_rank(outputs[i].name) is not None]
    softmax = softmax_outputs(path) if len(fitting) > 1 and len(named) > 1 else set()
    ranked = sorted((_score_name_rank(outputs[i].name, outputs[i].name in softmax), i) for i in named)
    if len(fitting) == 1:
        index, why = fitting[0], f"the only one of {classes} classes"
    elif named:  # a model's features may come first and be as wide as its logits (an embedding of K values)
        (rank, index), (next_rank, after) = ranked[0], ranked[1] if len(ranked) > 1 else (None, None)
        other = f"'{outputs[after].name}'" if after is not None else ""  # the runner-up, which the rule set aside
        of = f"of the {len(fitting)} that give {classes} classes"
        if next_rank is None:
            why = f"named as class scores, {of} (the only one named {', '.join(SCORE_NAMES)}, or ending in one)"
        elif next_rank[0] != rank[0]:
            why = f"named as class scores and not ending in a softmax, as {other} does, {of}"
        elif next_rank[1] != rank[1]:
            why = f"named as class scores in full, where {other} only ends in such a name, {of}"
        else:
            why = f"named as class scores, the first of those so named ({other} is too), {of}"
    else:
        index = 0
        why = f"the first, as {'several' if fitting else 'none'} of them give {classes} classes"
    # named by file name: a run's notes outlive the staging folder its models were checked in
    return index, (f"'{Path(path).name}' has {len(outputs)} outputs; accuracy is read from "
                   f"'{outputs[index].name}', {why}",)


# Output names exporters and users give class scores; matched case-insensitively, whole or as a name's ending.
SCORE_NAMES = ("logits", "probs", "probabilities", "scores", "output")


def _score_name_rank(name: str, softmax: bool = False) -> tuple[bool, int] | None:
    """For an output named as class scores, its rank among them (the lowest is read); None for any other name.
    One ending in a Softmax (``softmax``) comes after every other: its probabilities are read through their log,
    which loses the gaps a float cannot hold, where raw scores keep them. Then a name that is one of
    ``SCORE_NAMES`` comes before one that only ends in one ("class_logits"): a whole name is the surer sign."""
    lower = name.lower()
    if lower in SCORE_NAMES:
        return softmax, 0
    return (softmax, 1) if lower.endswith(SCORE_NAMES) else None


def _class_dim(shape: Any) -> int | None:
    """K of an output of shape (N, K), or of K among size-1 dimensions ((N, K, 1, 1)); None when unknown."""
    rest = [d for d in list(shape)[1:] if d != 1]
    return rest[0] if len(rest) == 1 and isinstance(rest[0], int) else None


def class_scores(out: np.ndarray, path: str | Path) -> np.ndarray:
    """A model's output as (batch, classes) scores, its other size-1 dimensions dropped (a convolution
    head's (N, K, 1, 1)); or as (batch,) class indices, from a model that ends in ArgMax."""
    from edgekd.errors import DataError

    classes = _class_dim(out.shape)
    if classes is not None:
        return out.reshape(len(out), classes)
    if all(d == 1 for d in out.shape[1:]) and np.issubdtype(out.dtype, np.integer):
        return out.reshape(len(out))
    shape = "(" + ", ".join(map(str, out.shape)) + ")"
    raise DataError(f"'{path}': its output has shape {shape} ({out.dtype}) for {len(out)} images, neither "
                    "(batch, classes) scores nor (batch,) class indices, so its accuracy cannot be read",
                    "export the model with its class scores (logits or probabilities) as its first output, "
                    "or leave out --data")


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy from ``class_scores``' output (scores, or class indices)."""
    predicted = scores if scores.ndim == 1 else scores.argmax(1)
    return float((predicted == labels).mean())


def labels_of_test_split(path: str | Path, data: Any) -> np.ndarray:
    """``data``'s test labels as the model at ``path`` numbers its outputs (by the class names it carries)."""
    from edgekd.data_match import labels_for
    from edgekd.onnx_metadata import embedded_class_names

    return labels_for(data, embedded_class_names(path))


# Input types the normalised test images are fed as (cast): float16 models (GPU and NPU delegates) hold
# them to about three digits, far within what a top-1 prediction notices.
_FLOAT_INPUTS = {"float": np.float32, "float16": np.float16, "double": np.float64}


def takes_float(dtype: str) -> bool:
    """Whether an input of onnxruntime's element type ``dtype`` ("float", "uint8", ...) takes the normalised
    images, cast to it."""
    return dtype in _FLOAT_INPUTS


def check_float_input(path: str | Path, dtype: str) -> None:
    """Accuracy is measured on normalised images, fed as the model's float type: a model taking another
    type (raw uint8 pixels, its preprocessing inside) is refused by name, before anything is measured where
    the caller can."""
    from edgekd.errors import DataError

    if not takes_float(dtype):
        raise DataError(f"'{path}' takes {dtype} input, and edgekd feeds test images as floats after the data's "
                        "normalisation", "export the model with a float input to measure its accuracy here (its "
                        "latency is measured either way), or leave out --data")


def check_takes_float(path: str | Path, details: dict[str, Any]) -> None:
    """check_float_input from a file's recorded signature (``Artifact.details``), before a session is opened."""
    for taken in (details.get("inputs") or [])[:1]:
        check_float_input(path, taken["dtype"])


def check_data_fits(session: Any, data: Any, path: str | Path, output: int | None = None) -> str:
    """Refuse data the model cannot take (``check_input_fits``), or whose classes its ``output`` (default: the
    one ``scored_output`` reads) cannot predict, counted as ``output_widths`` counts them; the layout it takes
    the images in (``input_shape.input_layout``)."""
    layout = check_input_fits(session, data, path)
    widths = output_widths(session, in_layout(data.x_test[:1], layout))
    if output is None:
        output = scored_output(session, data.num_classes, path, widths)[0]
    check_classes(widths[output], data, path)
    return layout


def check_input_fits(session: Any, data: Any, path: str | Path) -> str:
    """Refuse data the model cannot take (one input, of a float type, with a shape the images fit); the layout
    it takes them in (``input_shape.input_layout``)."""
    from edgekd.errors import DataError
    from edgekd.input_shape import input_layout

    inputs = session.get_inputs()
    if len(inputs) != 1:  # refused as the latency worker refuses it: fed the images alone, onnxruntime named the rest
        raise ArtifactError(f"model '{path}' has {len(inputs)} inputs ({', '.join(i.name for i in inputs)})",
                            "edgekd measures single-input models (one image tensor); export the model with one input")
    given = (len(data.x_test), *data.input_shape)
    taken = inputs[0]
    check_float_input(path, taken.type.removeprefix("tensor(").rstrip(")"))
    expected = taken.shape
    if not expected:  # onnxruntime's [] for an input of unknown rank (a scalar, its other [], takes no images either)
        raise DataError(f"input '{taken.name}' of '{path}' has no shape recorded, so edgekd cannot tell how to feed "
                        "it the data's images", "export the model with its input shape recorded, e.g. (batch, "
                        "channels, height, width): torch.onnx.export and tf2onnx record their example input's")
    if len(expected) == 1:  # no batch dimension and no image in it: "takes  inputs" said nothing
        from edgekd.input_shape import fixed_dim

        shown = str(expected[0]) if fixed_dim(expected[0]) else "?"
        what = "one vector with no batch dimension" if shown != "?" else "one value per batch item"
        raise ArtifactError(f"'{path}' takes input of shape ({shown},), {what}, not images, and edgekd feeds "
                            f"data '{data.name}' as batches of {'x'.join(map(str, data.input_shape))} images",
                            "re-export the model with a batch dimension first, e.g. an example input of shape "
                            f"(1, {shown if shown != '?' else 'N'}): edgekd scores image classifiers taking "
                            "(batch, channels, height, width), or (batch, values), one row of values an image")
    if len(expected) == len(given) - 1:
        from edgekd.input_shape import check_has_batch

        check_has_batch(path, {"inputs": [{"shape": list(expected)}]}, images=True)
    layout = input_layout(expected, data.input_shape)
    channels_last = layout == "NHWC"
    given = (given[0], *in_layout(data.x_test[:1], layout).shape[1:])
    fixed = [d if isinstance(d, int) and d > 0 else None for d in expected]
    if len(fixed) != len(given) or any(e is not None and e != g for e, g in zip(fixed[1:], given[1:])):
        want = "x".join(str(d) if d is not None else "?" for d in fixed[1:])
        from edgekd.preprocess import resolution_text

        spatial, channel = (fixed[1:3], 3) if channels_last else (fixed[2:], 1)
        sized = len(fixed) == len(given) == 4 and None not in spatial and fixed[channel] == given[channel]
        size = f" (--resolution {resolution_text(spatial)})" if sized else " (--resolution)"
        said = f"'{path}' takes {want} inputs, and data '{data.name}' has {'x'.join(map(str, given[1:]))} images"
        turned = _channels_fix(fixed, given, spatial, channel)
        raise DataError(said, turned or f"pass the data the model was built for, at its resolution{size}")
    return layout


def _channels_fix(fixed: list[Any], given: tuple[int, ...], spatial: list[Any], channel: int) -> str | None:
    """The fix when the channel count differs (grayscale data for a colour model, RGBA data, ...): --channels
    converts 1 and 3 channels, an alpha channel only the user can drop, and --resolution is added only where
    the size differs too (alone it would change nothing, so a channel mismatch is never told to resize)."""
    if len(fixed) != len(given) or len(given) != 4 or fixed[channel] is None or fixed[channel] == given[channel]:
        return None
    want, have = fixed[channel], given[channel]
    drop = ""
    if have in (2, 4):  # gray + alpha, RGBA (a PNG's): --channels converts 1 and 3 only
        have -= 1
        drop = (f"drop the alpha channel (x[..., :{have}] of (N, H, W, {have + 1}) images, x[:, :{have}] of "
                f"(N, {have + 1}, H, W)) before saving the .npz")
    flags = []
    if {want, have} == {1, 3}:
        flags.append(f"--channels {want} ({'grayscale repeated to RGB' if want == 3 else 'RGB to luminance'})")
    elif want != have:  # nothing edgekd converts: say what the model takes, never a resolution
        return (f"pass {want}-channel images, as the model takes (--channels converts 1-channel images to 3, and "
                "3 to 1, only)")
    sides = [given[i] for i in range(1, 4) if i != channel]
    resized = not all(e is None or e == g for e, g in zip(spatial, sides))
    if resized:
        from edgekd.preprocess import resolution_text

        flags.append(f"--resolution {resolution_text(spatial)}" if None not in spatial else "--resolution")
    if not drop:
        return f"pass {' and '.join(flags)}, the {'channels and size' if resized else 'channels'} the model takes"
    return drop + (f", and pass {' and '.join(flags)}" if flags else "") + f", as the model takes {want}-channel images"


def scored_run(session: Any, x: np.ndarray, output: int, path: str | Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """``run_batches`` for scoring, with a note on how it ran: a model that fails on a batch of images is run
    again one image at a time (exported with a dynamic batch, a model can still fix its batch inside, as a
    reshape to (1, ...) does), and one that fails on a single image too is an ArtifactError naming
    onnxruntime's reason, not its traceback."""
    from edgekd.latency.worker import run_reason

    name = Path(path).name
    fixed = session.get_inputs()[0].shape[0]
    batched = len(x) > 1 and not (isinstance(fixed, int) and fixed > 0)  # a fixed batch is fed as it is either way
    try:
        return run_batches(session, x, output=output), ()
    except Exception as exc:  # onnxruntime raises several unrelated exception types here
        failed = exc
    if batched:
        try:
            out = run_batches(session, x, batch=1, output=output)
        except Exception as exc:
            failed = exc
        else:
            return out, (f"'{name}' fails on a batch of several images ({run_reason(failed)}) and runs on one: "
                         "its test images were scored one at a time, as for a graph that fixes its batch at 1 "
                         "whatever its input says",)
    size = 1 if batched else fixed if isinstance(fixed, int) and fixed > 0 else len(x)
    fed = ",".join(map(str, (size, *x.shape[1:])))
    raise ArtifactError(f"'{name}' fails to run on the test images (fed as {fed}): {run_reason(failed)}",
                        "check that the model takes the data's images as edgekd feeds them (NCHW, unless its input's "
                        "recorded sizes say channels-last or flat) and at the data's resolution (--resolution), or "
                        "re-export it with its input's sizes recorded")


def run_batches(session: Any, x: np.ndarray, batch: int = 256, output: int = 0) -> np.ndarray:
    """Run ``x`` through the session in chunks, honouring a fixed batch dimension by padding; the
    ``output``-th output."""
    wanted = [session.get_outputs()[output].name]
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch
    silent = _silent()
    outs = []
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        outs.append(session.run(wanted, _feed(session, chunk), silent)[0][:len(chunk)])
    return np.concatenate(outs)


def _feed(session: Any, chunk: np.ndarray) -> dict[str, np.ndarray]:
    """``chunk`` as the session's input takes it: cast to its float type, and padded with its last image to a
    fixed batch."""
    taken = session.get_inputs()[0]
    dtype = _FLOAT_INPUTS.get(taken.type.removeprefix("tensor(").rstrip(")"), np.float32)
    fixed = taken.shape[0]
    if isinstance(fixed, int) and fixed > len(chunk):
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - len(chunk), axis=0)])
    return {taken.name: np.ascontiguousarray(chunk, dtype=dtype)}


def _silent() -> Any:
    """Run options that keep onnxruntime from logging a failed run to stderr besides raising it: the caller says
    it in one line, or retries."""
    import onnxruntime as ort

    silent = ort.RunOptions()
    silent.log_severity_level = 4
    return silent
