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

        from edgekd.fsutil import sha256
        from edgekd.onnxfile import load_model

        graph = load_model(path).graph  # a missing, truncated or non-ONNX file is an ArtifactError naming it
        self._made_by = {out: node.op_type for node in graph.node for out in node.output}
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"teacher '{path}' does not load in onnxruntime ({first_line(exc, 160)})",
                             "pass a model onnxruntime runs (`edgekd validate` names what it lacks)") from None
        self.path, self.sha256 = path, sha256(path)
        self.layout, self.output, self.log_of = "NCHW", 0, False

    def bind(self, data: Any) -> tuple[str, ...]:
        """Fit the teacher to ``data``: the layout it takes the images in, the output that scores the data's
        classes (and whether it is a softmax, distilled from its log); notes saying what was chosen."""
        from edgekd.latency.runtime import check_data_fits, scored_output

        self.output, notes = scored_output(self.session, data.num_classes, self.path)
        self.layout = check_data_fits(self.session, data, self.path, self.output)
        produced = self._made_by.get(self.session.get_outputs()[self.output].name)
        if produced == "ArgMax" or "int" in self.session.get_outputs()[self.output].type:
            raise ModelError(f"teacher '{self.path}' outputs class indices, and distillation learns from scores",
                             "export the teacher without its final ArgMax")
        self.log_of = produced == "Softmax"
        if self.layout != "NCHW":
            notes = (*notes, f"'{self.path.name}' takes {self.layout} input, so the images are fed to it that way")
        if self.log_of:
            notes = (*notes, f"'{self.path.name}' ends in a softmax: distilled from the log of its probabilities, "
                             "which are logits up to a constant")
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
            out = np.log(np.clip(out, 1e-12, None))
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def eval(self) -> OnnxTeacher:
        return self

    def train(self, mode: bool = True) -> OnnxTeacher:
        return self

    def parameters(self) -> Iterator[Any]:
        return iter(())

    def named_modules(self) -> Iterator[tuple[str, Any]]:
        return iter(())

