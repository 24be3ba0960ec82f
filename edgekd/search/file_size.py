"""The size of the file a candidate would ship as, written the way the pipeline writes it.

The search ranks on an estimate of that size (``estimate_int8_bytes``, ``fp32_bytes``):
writing the real file takes seconds per candidate (torch's dynamo exporter, then onnxruntime's
quantizer), too slow for the thousand candidates of an evolution. The estimate was within 3.5% on
the students it was fitted on, but a search for the largest student under ``--max-size-kb`` lands
exactly where its error decides, and a user's teacher (the ``pruned`` space) may be built of layers
it was not fitted on. So the candidates the search is about to choose from are written for real
when their estimate comes near the limit, and the file decides; the one it finally chooses is written
whatever its estimate. A user's teacher can be far outside the estimate: a small transformer's int8 file
(attention projections are not ``nn.Linear`` layers, and every MatMul and LayerNorm adds quantize nodes)
came out 2-2.8x its estimate, larger the smaller the student, so scaling by the worst error seen on
bigger candidates still passed a file 9% over the limit.

With ``--ort`` the run also ships each student in ORT format, held to the same limit, and that copy is the larger
file: 4-19% over its .onnx in fp32 and 19-42% in int8 on eight random mbv2 and resnet students at 16 px, the
most for the smallest. A search for such a run writes the copy too and the larger file decides; its estimate is grown
by ORT_GROWTH before any copy of the space is written, so that the candidates near the limit are written at all.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.types import Candidate

# A candidate whose estimate is under this share of the limit is not written. The estimate's error was
# 3.5% at most on the spaces it was fitted on; the wide margin is for layers it has not seen.
NEAR_LIMIT = 0.8
# An estimate this much over the limit may still be a file within it (4.4% over, on a user's 3x32x32 teacher; the
# limit at the smallest student's file, the search called the budget impossible): such a candidate is kept, and its
# file decides.
ESTIMATE_OVER = 1.1
# An ORT-format copy over its .onnx, at most (1.42x was the largest seen): the estimate of the copy before one is
# written.
ORT_GROWTH = 1.5


def ruled_out(estimate: float, limit: int | None) -> bool:
    """Whether an estimate of ``estimate`` bytes rules a candidate out under ``limit`` without writing its file."""
    return limit is not None and estimate > limit * ESTIMATE_OVER


def estimate_int8_bytes(model: Any) -> int:
    """Size of the int8 QDQ file the onnx-int8 exporter writes for ``model``, from its layers alone.

    Each quantized convolution or linear layer stores 1 byte a weight, 17 bytes an output channel (the
    weight's fp32 scale and int8 zero point; the bias as int32 with its own fp32 scale and int32 zero
    point) and about 1.8 KB of Q/DQ nodes, tensor names and activation scales. The first convolution (not
    a first linear layer) and the classifier stay fp32 (4 bytes a weight and a bias). Fitted on 72
    students of mbv2, resnet and pruned at 16 and 32 px, written as if trained: within 3.5% of the file
    either way (the parameter count alone was up to 25% low on mbv2). Near ``--max-size-kb`` the search
    writes the real file."""
    import torch

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    kept = [layers[0]] if isinstance(layers[0], torch.nn.Conv2d) else []  # as exporters/onnx_int8.py
    fp32 = {id(m) for m in (*kept, layers[-1])} if len(layers) > 2 else set()
    total = 1024
    for layer in layers:
        weights, out = layer.weight.numel(), layer.weight.shape[0]
        total += 4 * (weights + out) if id(layer) in fp32 else weights + 17 * out + 1800
    return total


def fp32_bytes(model: Any) -> int:
    """Size of the fp32 ONNX file: 4 bytes a weight and an output channel's bias for every convolution and
    linear layer (the exporter folds a BatchNorm into the convolution before it, so the BatchNorm's own
    parameters are never written), and 570 bytes a layer for its node and names. Fitted on the 72 students
    of ``benchmarks/size_estimate.py`` (seed 0), and within 0.2-0.4% of each of 72 others (seed 1); 4 bytes
    a parameter and 200 bytes a module, the estimate before, was up to 13% over (BatchNorm counted twice)."""
    import torch

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return sum(4 * (m.weight.numel() + m.weight.shape[0]) + 570 for m in layers)


def shipped_bytes(model: Any, data: Any, calibration: np.ndarray, precision: str, opset: int = 18,
                  ort_platform: str | None = None) -> int:
    """Bytes of ``model``'s ``precision`` file as the pipeline ships it once trained: the onnx-fp32 export at
    ``opset`` (the run's --opset: below 18 torch's TorchScript exporter writes another, larger graph), quantized by
    the onnx-int8 exporter for int8, with the data metadata stamped in (a split seed of one digit: a longer one
    ships a few bytes more). With ``ort_platform`` (a run with --ort), the larger of that file and its ORT-format
    copy for the platform. ``model`` itself is left as it is."""
    import copy

    from edgekd.export import ExportRequest, get_exporter
    from edgekd.onnx_metadata import stamp_data_metadata

    model = copy.deepcopy(model)
    _as_if_trained(model)
    with tempfile.TemporaryDirectory(prefix="edgekd-size-") as tmp:
        folder = Path(tmp)
        art = get_exporter("onnx-fp32")(ExportRequest("student-fp32", "student", folder, model.eval(),
                                                      data.x_val[:1], opset=opset))
        if precision == "int8":
            art = get_exporter("onnx-int8")(ExportRequest("student-int8", "student", folder,
                                                          calibration=calibration, source=art, opset=opset))
        onnx_bytes = int(stamp_data_metadata(art, data, 0).size_bytes)
        if ort_platform is None:
            return onnx_bytes
        from edgekd.ort_format import to_ort

        return max(onnx_bytes, to_ort(folder / art.path, ort_platform, data.x_val[:2], precision).size_bytes)


def _as_if_trained(model: Any) -> None:
    """Give each BatchNorm the nonzero, unequal running means training leaves. A freshly built one folds
    into a zero convolution bias, which the exporter drops, and equal ones into equal tensors, which it
    stores once; a trained student's biases are all stored (an int32 and a scale per channel in int8),
    and without them the file came out a fifth smaller than the shipped one."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) * 0.2 - 0.1)


@dataclass
class SizeCheck:
    """Checks candidates against ``limit`` bytes: by their estimate when it is far under, by their written
    file otherwise. Each space's worst estimate error so far scales its later estimates up, so that the
    candidates a written file has shown to be too big are passed over without being written or measured."""

    limit: int | None
    write: Callable[[Candidate], int]  # bytes of the candidate's shipped file
    ort: bool = False  # the file written is the larger of the .onnx and its ORT-format copy
    underestimate: dict[str, float] = field(default_factory=dict)  # space -> largest file/estimate ratio seen
    written: int = 0

    def factor(self, space: str) -> float:
        """What the estimates of ``space`` are grown by: the worst error its written files have shown; with
        ``ort``, ORT_GROWTH until one of them is written (the estimate is of the .onnx alone)."""
        return max(1.0, self.underestimate.get(space, ORT_GROWTH if self.ort else 1.0))

    def corrected(self, cand: Candidate) -> float:
        return cand.size_bytes * self.factor(cand.spec.space)

    def may_fit(self, cand: Candidate) -> bool:
        """False when the candidate is known, or expected from its space's estimate error, to be too big."""
        if cand.file_bytes is not None:
            return self.fits(cand)
        return not ruled_out(self.corrected(cand), self.limit)

    def check(self, cand: Candidate, confirm: bool = False) -> Candidate:
        """The candidate with its written size when its estimate is near the limit, or with ``confirm``
        whatever its estimate (the one about to be chosen); itself otherwise."""
        if self.limit is None or cand.file_bytes is not None:
            return cand
        if not confirm and self.corrected(cand) < NEAR_LIMIT * self.limit:
            return cand
        size = self.write(cand)
        self.written += 1
        space = cand.spec.space
        self.underestimate[space] = max(self.underestimate.get(space, 0.0), size / cand.size_bytes)
        return replace(cand, file_bytes=size)

    def fits(self, cand: Candidate) -> bool:
        return self.limit is None or cand.shipped_bytes <= self.limit
