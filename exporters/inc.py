"""int8 ONNX through Intel Neural Compressor 3.x: accuracy-aware tuning of PT2E static quantization on a
``neural_compressor.torch.export``-ed model, then torch's dynamo ONNX exporter (one file, checker run).

Tuning stops at the first configuration (see ``_tuning_space``) whose metric is within ``tolerable_loss``
(relative: 0.01 = 1% of the fp32 metric) of fp32. The metric is top-1 accuracy on ``options["eval_data"]``
= (x, y) when given, else top-1 agreement with the fp32 model on the calibration inputs, and each trial is
scored on its exported ONNX graph in onnxruntime: on an AVX2 CPU without VNNI, onnxruntime's fused
uint8 x int8 kernels lost up to 13 points that torch's reference int8 arithmetic did not show.

The exported graph quantizes weights at run time (fp32 weight -> QuantizeLinear -> Clip -> DequantizeLinear);
those chains are folded into int8 initializers here (about 4x smaller, bit-identical outputs). onnxruntime
fuses most uint8 convolutions (QLinearConv) but keeps those feeding a residual Add in fp32
(X86InductorQuantizer leaves their output unquantized for Inductor's conv+add fusion), and fuses few
int8-activation ones. On a digits MobileNetV2 student (host-cpu-1t, AVX2) this artifact ran at 0.67x the
speed of fp32 (uint8, first/last layer fp32) or 0.17x (int8 activations), where onnx-int8 ran at 0.81x.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from edgekd.exporters._common import (
    check_options,
    eval_mode,
    export_fix,
    failure_text,
    finish,
    placed,
    require_dynamo_opset,
    staged,
    tidy_for_device,
)

from edgekd.errors import ConfigError, DataError, ExportError
from edgekd.export import EXPORTERS, ExportRequest
from edgekd.quiet import TORCH_EXPORT, quiet
from edgekd.types import Artifact

DEFAULT_TOLERABLE_LOSS = 0.01
INPUT_NAME, OUTPUT_NAME = "input", "logits"
_OPTIONS = {"tolerable_loss", "eval_data", "max_trials"}
TUNING_CONFIGS = 4  # the most configurations _tuning_space offers: the max_trials default


@EXPORTERS.register("inc")
def export_inc(request: ExportRequest) -> Artifact:
    import torch

    if not isinstance(request.model, torch.nn.Module) or request.sample is None or request.calibration is None \
            or len(request.calibration) == 0:
        raise ExportError("inc needs a torch model, a sample input and calibration inputs",
                          "pass model, sample and calibration (training images) in the ExportRequest")
    require_dynamo_opset(request, "inc")
    # The caller's module goes back to the mode it was in (it may be mid-training); the fp32 metric is
    # taken in eval mode too, as the exported graph runs.
    with eval_mode(request.model):
        return _export(request)


def _export(request: ExportRequest) -> Artifact:
    import torch

    loss, max_trials, metric = _options(request)
    path = Path(request.out_dir) / f"{request.name}.onnx"
    sample = torch.from_numpy(np.repeat(request.sample[:1], 2, axis=0))  # batch 2: size-1 dims get specialised
    # staged: the file is folded and rewritten in place before the checker runs; a step that fails leaves no
    # half-written file, nor one over an earlier good file of that name, and out_dir is made as the others make it
    with staged(path) as written:
        with _quiet(), tempfile.TemporaryDirectory() as tmp:
            exported = _inc_export(request.model, sample)
            trial = Path(tmp) / "trial.onnx"
            tuning = _tune(exported, request, metric, (loss, max_trials),
                           lambda model: _to_onnx(model, sample, trial, request.opset), trial)
            shutil.copyfile(trial, written)  # the winner is the last trial, already exported
        folded = fold_weight_quantization(written)
        tidy_for_device(written)
        details = {"format": "QDQ (INC PT2E, X86InductorQuantizer)", "tolerable_loss": loss,
                   "folded_weight_quantizers": folded, **tuning}
        art = finish(written, request.name, request.role, "int8", "inc", details, opset=request.opset)
    return placed(art, path)


def _options(request: ExportRequest) -> tuple[float, int, tuple[str, np.ndarray, np.ndarray]]:
    check_options(request.options, _OPTIONS, "inc")
    loss = request.options.get("tolerable_loss", DEFAULT_TOLERABLE_LOSS)
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss) or not 0 <= loss < 1:
        raise ConfigError(f"inc tolerable_loss {loss!r} is outside [0, 1)",
                          "pass a relative accuracy loss, e.g. 0.01 for 1%")
    trials = request.options.get("max_trials", TUNING_CONFIGS)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"inc max_trials {trials!r} is not a positive integer", f"pass 1 to {TUNING_CONFIGS}")
    return float(loss), trials, _metric(request)


def _metric(request: ExportRequest) -> tuple[str, np.ndarray, np.ndarray]:
    """(description, inputs, expected top-1): eval_data's labels, else the fp32 model's own predictions."""
    # the calibration inputs are fed in every case (run_fn), so they are checked whether or not they are scored
    calibration = np.asarray(request.calibration, dtype=np.float32)
    _check_fits(calibration, request.sample, "calibration inputs")
    eval_data = request.options.get("eval_data")
    if eval_data is not None:
        try:
            x, y = (np.asarray(a) for a in eval_data)
        except (TypeError, ValueError):
            raise ConfigError("inc eval_data must be a pair (x, y) of arrays", "pass (x_val, y_val)") from None
        if len(x) == 0 or len(x) != len(y):
            raise ConfigError(f"inc eval_data has {len(x)} inputs and {len(y)} labels",
                              "pass matching, non-empty arrays")
        _check_fits(x, request.sample, "eval_data inputs")
        return "top-1 accuracy on eval_data", x.astype(np.float32), y
    return ("top-1 agreement with fp32 on the calibration inputs", calibration,
            _logits(request.model, calibration).argmax(1))


def _check_fits(x: np.ndarray, sample: np.ndarray, what: str) -> None:
    """Inputs shaped unlike the sample the model is exported with, refused before tuning: inside the metric a
    mismatch surfaces as a torch error, or one from neural-compressor's export guards blamed on quantization."""
    want = tuple(np.asarray(sample).shape[1:])
    if tuple(x.shape[1:]) != want:
        raise DataError(f"inc {what} of shape {tuple(x.shape[1:])} per sample do not fit the model's input "
                        f"{want}", f"pass {what} of the size the model takes")


def _logits(model: Any, x: np.ndarray, batch: int = 128) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32)))
                               .numpy() for i in range(0, len(x), batch)])


def _ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: x})[0]


def _inc_export(model: Any, sample: Any) -> Any:
    import torch
    from neural_compressor.torch.export import export

    try:
        return export(model, (sample,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    except Exception as exc:
        raise ExportError(f"neural_compressor.torch.export could not capture the model: {failure_text(exc)}",
                          export_fix(exc, tuple(sample.shape))) from None


def _tuning_space(model: Any) -> list[tuple[str, Any]]:
    """Configurations in the order tried: the one onnxruntime runs fastest first, then ones that trade speed
    for accuracy (first and last layer kept fp32, as onnx-int8 does; KL; int8 activations). A model with two
    or fewer Conv2d/Linear layers keeps none fp32 (nothing would be left in int8), so it has no first/last
    configurations and three to try."""
    import torch
    from neural_compressor.torch.quantization import StaticQuantConfig

    layers = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    ends = sorted({layers[0], layers[-1]}) if len(layers) > 2 else []
    suffix = ", first/last layer fp32" if ends else ""

    def keep_ends(config: Any) -> Any:
        for name in ends:
            config.set_local(name, StaticQuantConfig(w_dtype="fp32", act_dtype="fp32"))
        return config

    plain = [("uint8 activations, minmax", StaticQuantConfig())]
    if ends:  # without ends it would be the plain one again
        plain.append((f"uint8 activations, minmax{suffix}", keep_ends(StaticQuantConfig())))
    return [*plain, (f"uint8 activations, KL{suffix}", keep_ends(StaticQuantConfig(act_algo="kl"))),
            # onnxruntime's x86 kernels fuse few int8 x int8 convolutions: accurate, but slow (last resort)
            (f"int8 activations, minmax{suffix}", keep_ends(StaticQuantConfig(act_sym=True)))]


def _tune(exported: Any, request: ExportRequest, metric: tuple[str, np.ndarray, np.ndarray],
          limits: tuple[float, int], to_onnx: Callable[[Any], None], trial: Path) -> dict[str, Any]:
    """INC autotune; each trial is exported to ``trial`` and scored there in onnxruntime (the deployed kernels,
    which differ from torch's reference int8 arithmetic); the first within the tolerable loss of fp32 wins."""
    from neural_compressor.torch.quantization import TuningConfig, autotune

    description, x, expected = metric
    loss, max_trials = limits
    scores: list[float] = []

    def eval_fn(model: Any) -> float:
        if not scores:  # the fp32 baseline: torch and onnxruntime agree on it to ~1e-7
            logits = _logits(model, x)
        else:
            to_onnx(model)
            logits = _ort_logits(trial, x)
        scores.append(float((logits.argmax(1) == expected).mean()))
        if scores == [0.0]:  # a relative tolerance of nothing; INC would divide by it
            raise ExportError(f"the fp32 model scores 0 on the {description}", "check the eval_data labels")
        return scores[-1]

    space = _tuning_space(request.model)[:max_trials]
    try:
        quantized = autotune(exported, TuningConfig(config_set=[c for _, c in space], tolerable_loss=loss,
                                                    max_trials=len(space)),
                             eval_fn=eval_fn, run_fn=lambda model: _logits(model, request.calibration, batch=32))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"neural-compressor could not quantize the model: {failure_text(exc)}",
                          "use the onnx-int8 exporter for this model") from None
    baseline, trials = scores[0], scores[1:]
    if quantized is None or not trials or trials[-1] < baseline * (1 - loss):
        raise ExportError(f"no int8 configuration kept the {description} within {loss:.1%} of fp32 in onnxruntime "
                          f"(fp32 {baseline:.4f}; int8 {', '.join(f'{t:.4f}' for t in trials)})",
                          "raise tolerable_loss or use the onnx-int8 exporter")
    return {"metric": f"{description}, measured in onnxruntime", "fp32_metric": baseline, "int8_metric": trials[-1],
            "trials": len(trials), "config": space[len(trials) - 1][0],
            "tried": {name: score for (name, _), score in zip(space, trials)}}


def _to_onnx(quantized: Any, sample: Any, path: Path, opset: int) -> None:
    import torch

    try:
        torch.onnx.export(quantized, (sample,), str(path), dynamo=True, external_data=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise ExportError(f"torch could not export the INC-quantized model to ONNX: {failure_text(exc)}",
                          "use the onnx-int8 exporter for this model") from None


def fold_weight_quantization(path: Path) -> int:
    """Replace QuantizeLinear (and a following constant Clip) on constant weights by the integer tensor they
    compute, in place; returns how many were folded."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    dropped, added = set(), []
    for node in graph.node:
        q = _constant_quantize(node, inits, numpy_helper)
        if q is None:
            continue
        dropped.add(id(node))
        out = node.output[0]
        after = users.get(out, [])
        if len(after) == 1 and after[0].op_type == "Clip" and all(i in inits for i in after[0].input[1:] if i):
            clip = after[0]
            bounds = [numpy_helper.to_array(inits[i]) if i else None for i in list(clip.input[1:3]) + [""] * 2][:2]
            q = np.clip(q, bounds[0], bounds[1]).astype(q.dtype)
            dropped.add(id(clip))
            out = clip.output[0]
        added.append(numpy_helper.from_array(q, out))
    if not added:
        return 0
    kept = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(added)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    onnx.save(model, str(path))
    return len(added)


def _constant_quantize(node: Any, inits: dict[str, Any], numpy_helper: Any) -> np.ndarray | None:
    """QuantizeLinear(x, scale, zero_point) of constants, computed as onnxruntime does; None if not constant."""
    if node.op_type != "QuantizeLinear" or len(node.input) < 3 or not all(i in inits for i in node.input[:3]):
        return None
    attrs = {a.name: a for a in node.attribute}
    if "block_size" in attrs and attrs["block_size"].i or "output_dtype" in attrs:
        return None
    x, scale, zero = (numpy_helper.to_array(inits[i]) for i in node.input[:3])
    if zero.dtype not in (np.int8, np.uint8) or x.dtype != np.float32:
        return None
    if scale.ndim == 1 and scale.size > 1:
        axis = attrs["axis"].i if "axis" in attrs else 1
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    info = np.iinfo(zero.dtype)
    q = np.rint(x / scale) + zero.astype(np.int32)  # round half to even, like the ONNX spec
    return np.clip(q, info.min, info.max).astype(zero.dtype)


# torch's pytree warns once, when torchao is first imported (during tuning), that an enum it registers is deprecated.
_IMPORT_CHATTER = ("torch.utils._pytree", "torchao")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """INC and torch.export log every step at INFO; none of it means anything to our users."""
    from neural_compressor.common.utils.logger import Logger

    # INC sets its logger up (level INFO, a stderr handler of its own) at its first message, undoing a level set
    # before: its import's "Auto detect accelerator" warnings came through that way. Set up now, it stays quiet.
    Logger()
    # INC's fp8 (Habana) logger makes ~/.habana_logs/inc_log.txt when it is created, on this import, unless told
    # to stay off; edgekd never uses fp8, and a user who asked for its logs has set one of these. Set for the
    # import alone: child processes and the user's own INC use later inherit nothing.
    told = "LOG_LEVEL_INC" not in os.environ and "LOG_LEVEL_ALL" not in os.environ
    if told:
        os.environ["LOG_LEVEL_INC"] = "6"  # its "ignore" level: no log folder, no file
    try:
        with quiet("neural_compressor", *_IMPORT_CHATTER):
            import neural_compressor.torch.quantization  # noqa: F401
    finally:
        if told:
            os.environ.pop("LOG_LEVEL_INC", None)
    with quiet("neural_compressor", *_IMPORT_CHATTER, *TORCH_EXPORT):
        yield
