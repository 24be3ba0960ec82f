"""An ONNX model as the teacher (``--teacher model.onnx``), run by onnxruntime on the CPU: a model exported
from another framework (TensorFlow and Keras through tf2onnx, JAX) teaches a PyTorch student. Distillation
reads the teacher's outputs only, so the losses on logits (kd, dkd, dist) work and the search's proxies
compare logit relations; what needs the teacher's layers in PyTorch (the feature losses, the ``pruned``
space) is refused by name. It is fed and read as ``validate`` feeds and reads a model: channels-last or flat
input, the output with the data's class count, a fixed batch padded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import DataError, ModelError, first_line


class OnnxTeacher:
    """Callable on an NCHW float tensor batch, returning (batch, classes) logits as a tensor, with the
    parts of nn.Module's interface the distillation loop and the search call (eval, train, no layers)."""

    training = False

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        from edgekd.onnxfile import load_model, output_ops

        model = load_model(path)  # a missing, truncated or non-ONNX file is an ArtifactError naming it
        self._output_ops = output_ops(model)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"teacher '{path}' does not load in onnxruntime ({first_line(exc, 160)})",
                             "pass a model onnxruntime runs (`edgekd validate` names what it lacks)") from None
        _check_input(self.session, path)
        self.path, self.sha256 = path, _weights_sha256(path, model)
        self.layout, self.output, self.log_of = "NCHW", 0, False

    def bind(self, data: Any) -> tuple[str, ...]:
        """Fit the teacher to ``data``: the layout it takes the images in, the output that scores the data's
        classes (and whether it is a softmax, distilled from its log); notes saying what was chosen."""
        from edgekd.latency.runtime import check_data_fits, scored_output

        self.output, notes = scored_output(self.session, data.num_classes, self.path)
        self.layout = check_data_fits(self.session, data, self.path, self.output)
        produced = self._output_ops.get(self.session.get_outputs()[self.output].name)
        if produced == "ArgMax" or "int" in self.session.get_outputs()[self.output].type:
            raise ModelError(f"teacher '{self.path}' outputs class indices, and distillation learns from scores",
                             "export the teacher without its final ArgMax")
        self.log_of = produced == "Softmax"
        if self.layout != "NCHW":
            notes = (*notes, f"'{self.path.name}' takes {self.layout} input, so the images are fed to it that way")
        if self.log_of:
            kind = "float16" if "float16" in self.session.get_outputs()[self.output].type else "float32"
            gap = -np.log(np.finfo(kind).smallest_subnormal)
            notes = (*notes, f"'{self.path.name}' ends in a softmax: distilled from the log of its probabilities, "
                             f"which are its logits up to a constant (a class about {gap:.0f} or more below the top "
                             f"one has a probability of 0 in {kind}, and is read as {gap:.0f} below)")
        return notes

    def __call__(self, x: Any) -> Any:
        import torch

        from edgekd.latency.runtime import class_scores, in_layout, run_batches

        images = in_layout(x.detach().cpu().numpy().astype(np.float32, copy=False), self.layout)
        out = class_scores(run_batches(self.session, images, output=self.output), self.path)
        if out.ndim != 2:
            raise DataError(f"teacher '{self.path}' gives {out.shape} for {len(images)} images, not (batch, classes)",
                            "export the teacher with its class scores as an output")
        if self.log_of:
            out = _log_of(out)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def eval(self) -> OnnxTeacher:
        return self

    def train(self, mode: bool = True) -> OnnxTeacher:
        return self

    def parameters(self) -> Iterator[Any]:
        return iter(())

    def named_modules(self) -> Iterator[tuple[str, Any]]:
        return iter(())


def _log_of(probabilities: np.ndarray) -> np.ndarray:
    """The log of a softmax's probabilities: its logits less a constant (their log-sum-exp). A probability that
    underflowed to 0 is read as the smallest its type holds above 0, which keeps every value the output can
    tell apart (a floor of 1e-12 flattened every gap past 27.6, distilled as 27.6)."""
    floor = np.finfo(probabilities.dtype).smallest_subnormal  # onnxruntime's Softmax does give subnormals
    return np.log(np.maximum(probabilities, floor).astype(np.float32))


def _check_input(session: Any, path: Path) -> None:
    """One float input, the image batch: what distillation feeds a teacher. Said here as a fault of the
    teacher, not later as onnxruntime's missing-input error read as data of the wrong shape, nor with
    validate's advice on measuring accuracy, which a teacher has no use for."""
    from edgekd.latency.runtime import takes_float

    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = f" ({', '.join(i.name for i in inputs)})" if inputs else ""
        raise ModelError(f"teacher '{path}' takes {len(inputs)} inputs{names}, and a teacher must take exactly one, "
                         "the image batch", "export the teacher with the images as its only input (its other "
                         "inputs fixed inside the graph)")
    dtype = inputs[0].type.removeprefix("tensor(").rstrip(")")
    if not takes_float(dtype):
        raise ModelError(f"teacher '{path}' takes {dtype} input, and a teacher is fed the normalised float images "
                         "the student trains on", "export the teacher with a float input, its own pixel scaling "
                         "left out of the graph, and pass the normalisation it was trained with as --normalize")


def _weights_sha256(path: Path, model: Any) -> str:
    """The sha256 a resumed run compares teachers by: of the file alone when it holds every weight (so
    its checkpoints from before external data was counted still resume; those of a teacher with external data
    are refused once, as of another teacher), else of the file and each external
    data file by name, since new weights written to a data file leave the .onnx file byte for byte the same."""
    import hashlib

    from edgekd.fsutil import sha256
    from edgekd.onnxfile import external_files

    files = external_files(path, model)
    if not files:
        return sha256(path)
    digest = hashlib.sha256(sha256(path).encode())
    for file in files:
        digest.update(f"{file.relative_to(path.parent).as_posix()}\0{sha256(file)}\0".encode())
    return digest.hexdigest()
