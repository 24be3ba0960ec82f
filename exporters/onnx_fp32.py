"""fp32 ONNX through torch's dynamo exporter (its TorchScript exporter below opset 18, which the dynamo one
does not write): one self-contained file, dynamic batch."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from edgekd.exporters._common import (
    check_options,
    eval_mode,
    export_fix,
    failure_text,
    finish,
    placed,
    runs_one_not_two,
    staged,
    tidy_for_device,
)

from edgekd.errors import ExportError
from edgekd.export import DYNAMO_MIN_OPSET, EXPORTERS, ExportRequest
from edgekd.quiet import TORCH_EXPORT, native_stdout, quiet
from edgekd.types import Artifact

INPUT_NAME, OUTPUT_NAME = "input", "logits"


@EXPORTERS.register("onnx-fp32")
def export_fp32(request: ExportRequest) -> Artifact:
    import torch

    if request.model is None or request.sample is None:
        raise ExportError("onnx-fp32 needs a model and a sample input", "pass both in the ExportRequest")
    check_options(request.options, (), "onnx-fp32")
    _check_batch_dimension(request)
    path = Path(request.out_dir) / f"{request.name}.onnx"
    model = getattr(request.model, "program", request.model)  # a .pt2 teacher exports its program
    # Batch 2, not 1: torch.export specialises size-1 dimensions, which would fix the batch.
    sample = torch.from_numpy(np.repeat(request.sample[:1], 2, axis=0))
    kwargs: dict = {}
    if isinstance(model, torch.nn.Module):
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=1024)},)
    legacy = request.opset < DYNAMO_MIN_OPSET
    if legacy:
        if not isinstance(model, torch.nn.Module):
            raise ExportError(f"'{request.name}' is a torch.export program, which exports at opset "
                              f"{DYNAMO_MIN_OPSET} or later, not {request.opset}",
                              f"pass --opset {DYNAMO_MIN_OPSET}, or the model as file.py:factory with --weights")
    # The caller's module goes back to the mode it was in: it may be mid-training.
    training = eval_mode(model) if isinstance(model, torch.nn.Module) else contextlib.nullcontext()
    with staged(path) as written, training:
        model, outputs = _by_name(model, sample)  # in eval mode: a training forward would move BatchNorm's statistics
        if legacy:
            kwargs = {"dynamic_axes": {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}}}
        try:
            with quiet(*TORCH_EXPORT, stderr=True), native_stdout():
                torch.onnx.export(model, (sample,), str(written), dynamo=not legacy, opset_version=request.opset,
                                  input_names=[INPUT_NAME], output_names=outputs, verbose=False,
                                  **({} if legacy else {"external_data": False}), **kwargs)
        except Exception as exc:
            raise ExportError(f"torch could not export '{request.name}' to ONNX: {failure_text(exc)}",
                              export_fix(exc, tuple(sample.shape), runs_one_not_two(model, sample))) from None
        if isinstance(model, torch.nn.Module):
            _check_batch_of_one(written, model, sample, request.name)
        tidy_for_device(written, name_batch=not isinstance(model, torch.nn.Module))
        art = finish(written, request.name, request.role, "fp32", "onnx-fp32", opset=request.opset)
    return placed(art, path)


def _check_batch_dimension(request: ExportRequest) -> None:
    """Refuse one image without its batch dimension, (C, H, W) for a model whose first convolution takes
    (N, C, H, W): torch convolutions take an unbatched image too, so the export failed later with "False !=
    True", and the batch of 2 made from its first row made two channels of one. Only when the sample as given
    fails and with a batch dimension runs: a model adding its channel axis itself (x.unsqueeze(1)) takes (N, L)."""
    import torch

    convs = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    model = request.model
    first = next((m for m in model.modules() if isinstance(m, convs)), None) \
        if isinstance(model, torch.nn.Module) else None
    shape = tuple(request.sample.shape)
    if first is None or len(shape) != len(first.kernel_size) + 1 or shape[0] != first.in_channels:
        return
    from edgekd.distill.taps import runs_on

    sample = torch.as_tensor(request.sample)
    with quiet(*TORCH_EXPORT, stderr=True):
        # refused only when it fails as given and runs batched; neither running, the export says why
        if runs_on(model, sample) or not runs_on(model, sample[None]):
            return
    raise ExportError(f"the sample input of shape {shape} for '{request.name}' has no batch dimension",
                      f"pass it as a batch of one, of shape {(1, *shape)} (e.g. sample[None])")


def _by_name(model: object, sample: object) -> tuple[object, list[str]]:
    """``model`` to export and its outputs' names, by what its forward returns: a dict holding its logits under
    ``logits`` exports them alone (as compress takes such a teacher), another dict of tensors each under its key,
    and anything else its first output as ``logits``. Naming only the first output ``logits`` gave that name to
    whatever came first (a dict's 1024-wide features), and a device app reading ``logits`` got the features."""
    import torch

    from edgekd.teacher_logits import LogitsOf, gives_logits_mapping

    if not isinstance(model, torch.nn.Module):  # a .pt2 program: its teacher was made to give the logits alone
        return model, [OUTPUT_NAME]
    try:
        with torch.no_grad(), quiet(*TORCH_EXPORT, stderr=True):
            out = model(sample[:1])
    except Exception:  # the export fails on it too, and says why
        return model, [OUTPUT_NAME]
    if gives_logits_mapping(out):
        return LogitsOf(model).eval(), [OUTPUT_NAME]
    if isinstance(out, Mapping) and out and all(isinstance(v, torch.Tensor) for v in out.values()):
        return model, [str(key) for key in out]
    if isinstance(out, (tuple, list)) and len(out) > 1 and all(isinstance(v, torch.Tensor) for v in out):
        return model, [OUTPUT_NAME] + [f"output_{i}" for i in range(1, len(out))]
    return model, [OUTPUT_NAME]


def _check_batch_of_one(written: Path, model: object, sample: object, name: str) -> None:
    """Refuse a file that answers one image otherwise than torch does while it matches at the traced batch of 2:
    a forward that branches on the batch size keeps the traced branch, silently, and a phone runs batch 1."""
    import onnxruntime as ort
    import torch

    gaps = []
    try:
        session = ort.InferenceSession(str(written), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        for batch in (sample[:1], sample):
            with torch.no_grad():
                ours = model(batch)
            if not isinstance(ours, torch.Tensor) or not ours.is_floating_point():
                return  # several outputs, or not scores: validate's parity compares them
            theirs = session.run(None, {feed: batch.numpy()})[0]
            same = theirs.shape == tuple(ours.shape)
            gaps.append(float(np.abs(theirs.astype(np.float64) - ours.double().numpy()).max()) if same else np.inf)
    except Exception:  # a runtime here that cannot run the file (an opset or operator it lacks): validate says so
        return
    scale = 1e-3 * (1.0 + float(np.abs(ours.numpy()).max()))
    if gaps[0] > 10 * scale and gaps[1] <= scale:  # well apart: kernels chosen per batch size differ in rounding
        raise ExportError(f"'{name}' exported to ONNX answers one image otherwise than torch (largest difference "
                          f"{gaps[0]:.3g}) though it matches at a batch of 2: its forward branches on the batch size, "
                          "and the export keeps the branch it was traced with",
                          "compute the same thing for any batch size (no `if x.shape[0] ...` in forward)")
