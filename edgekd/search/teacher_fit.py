"""Whether the teacher, as it is, already meets the budget.

A student that has to fit a budget the teacher already meets can only match the teacher or lose accuracy.
Validation says so at the end of a run; this check says it before the search, so that a user who set a
loose budget learns it before hours of distillation rather than after. It is a warning: the run goes on,
since a user may want a smaller model anyway.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import ExportError, api_log, first_line
from edgekd.types import Budget


@dataclass(frozen=True)
class TeacherFit:
    """The teacher's fp32 file and, when a latency budget is set, its p50 on the profile (ms, the search's scale)."""

    size_bytes: int
    latency_ms: float | None

    def message(self, budget: Budget) -> str:
        parts = []
        if budget.latency_ms is not None and self.latency_ms is not None:
            parts.append(f"{self.latency_ms:.3f} ms measured (--budget-ms {budget.latency_ms:g})")
        if budget.max_size_kb is not None:
            parts.append(f"{self.size_bytes / 1024:.1f} KB (--max-size-kb {budget.max_size_kb:g})")
        return ("warning: search: the teacher as it is (fp32) already meets the budget: " + ", ".join(parts) +
                "; a student can only match it or lose accuracy: ship the teacher, or tighten the budget")


def teacher_fit(teacher: Any, input_shape: tuple[int, ...], budget: Budget, ruler: Any,
                log: Callable[[str], None] | None = None, data: Any = None) -> TeacherFit | None:
    """A ``TeacherFit`` when the teacher's fp32 file meets every latency and size limit ``budget`` sets (at
    least one), else None. The teacher is exported only when its weights alone fit the size limit, and
    measured only when its file does, beside the search's reference network (``ruler``), so its
    milliseconds are on the scale the candidates are judged on. A teacher that cannot be exported or timed
    here is None too, said to ``log``: the check is advice, and validation measures the teacher anyway. The size
    is of the file the run ships as teacher-fp32.onnx: an ONNX teacher's own, a torch one's from the exporter the
    run writes it with, and with ``data`` the metadata the run stamps in."""
    import torch

    if budget.latency_ms is None and budget.max_bytes is None:
        return None
    if getattr(teacher, "path", None) is not None and hasattr(teacher, "session"):  # an ONNX teacher: its own file
        return _checked(lambda _tmp: Path(teacher.path), lambda path: _stamped(path, data, teacher.layout),
                        input_shape, budget, ruler, log, layout=teacher.layout)
    if not isinstance(teacher, torch.nn.Module) and not hasattr(teacher, "program"):
        _unchecked(log, f"a teacher of type {type(teacher).__name__} is not exported here")
        return None
    # A teacher whose weights alone break the size limit is not exported at all (a large one takes long).
    if budget.max_bytes is not None and _weight_bytes(teacher) > budget.max_bytes:
        return None
    return _checked(lambda tmp: _exported(teacher, input_shape, tmp / "teacher.onnx", ruler.batch),
                    lambda path: _stamped(_shipped(teacher, input_shape, path), data), input_shape, budget, ruler,
                    log)


def _checked(timed: Callable[[Path], Path], size_of: Callable[[Path], int], input_shape: tuple[int, ...],
             budget: Budget, ruler: Any, log: Any, layout: str = "NCHW") -> TeacherFit | None:
    """The fit of the file ``timed`` gives (in a temporary folder), sized by ``size_of`` (the file the run ships
    as the teacher's) and measured beside the reference when a latency budget is set."""
    with tempfile.TemporaryDirectory(prefix="edgekd-teacher-") as tmp:
        try:
            path = timed(Path(tmp))
            # the shipped file is exported (and stamped) only to be held to a size limit: the message says no size
            # without one
            size = size_of(path) if budget.max_bytes is not None else path.stat().st_size
            if budget.max_bytes is not None and size > budget.max_bytes:
                return None
            if budget.latency_ms is None:
                return TeacherFit(size, None)
            if layout != "NCHW":  # the reference beside it is fed NCHW images, in one shape for all
                _unchecked(log, f"a {layout} teacher is not timed beside the search's NCHW reference network")
                return None
            ((_stats, units),) = ruler.measure([path], input_shape)
        except Exception as exc:  # any failure here means only that this advice is skipped
            _unchecked(log, first_line(exc))
            return None
    latency = units * ruler.ms()
    return TeacherFit(size, latency) if latency <= budget.latency_ms else None


def _unchecked(log: Any, why: str) -> None:
    api_log(log)(f"search: the teacher itself is not checked against the budget (advice only: {why}); the search "
                 "goes on, and validation measures it")


def _stamped(path: Path, data: Any, layout: str = "NCHW") -> int:
    """The bytes of the file at ``path`` (and its external data) with the run's metadata stamped in."""
    from edgekd.onnx_metadata import data_metadata, stamped_bytes

    return stamped_bytes(path, data_metadata(data, layout=layout) if data is not None else {})


def _shipped(teacher: Any, input_shape: tuple[int, ...], timed: Path) -> Path:
    """teacher-fp32.onnx as the run writes it (the onnx-fp32 exporter). The file timed is a quick TorchScript
    export at the profile's batch, 10% smaller on a small CNN teacher (6.7 KB against 7.4 KB shipped); a .pt2
    program's is the shipped exporter's already."""
    import numpy as np
    import torch

    from edgekd.export import ExportRequest, get_exporter

    if not isinstance(teacher, torch.nn.Module):
        return timed
    sample = np.zeros((1, *input_shape), dtype=np.float32)
    was = teacher.training
    try:
        art = get_exporter("onnx-fp32")(ExportRequest("teacher-fp32", "teacher", timed.parent, teacher, sample))
    finally:
        teacher.train(was)
    return Path(art.path)


def _weight_bytes(teacher: Any) -> int:
    """4 bytes for every weight matrix and kernel (parameters of 2 or more dimensions, each counted once): a
    floor on the fp32 file's size, which holds every one of them (biases, folded BatchNorms and the graph come
    on top). A .pt2 program's layers are graph calls, not modules, so its weights come from its state dict."""
    import torch

    weights = teacher.parameters() if isinstance(teacher, torch.nn.Module) else teacher.program.state_dict.values()
    return 4 * sum(t.numel() for t in weights if t.ndim >= 2)


def _exported(teacher: Any, input_shape: tuple[int, ...], path: Path, batch: int = 1) -> Path:
    """The teacher as fp32 ONNX at ``batch`` (the profile's): a module through the quick exporter, a .pt2
    program through the shipped one (the quick one traces modules only). A module whose quick export lost its
    input goes through the shipped one too: the TorchScript tracer records what it cannot follow (a forward
    through numpy) as a constant, a file of a few bytes that answers every image alike, while the shipped
    exporter, which writes the teacher's file of the run, follows it."""
    import numpy as np
    import torch

    from edgekd.export import ExportRequest, get_exporter
    from edgekd.latency.quick_export import export_fixed

    if isinstance(teacher, torch.nn.Module):
        was = teacher.training
        try:
            export_fixed(teacher, (batch, *input_shape), path)
        finally:
            teacher.train(was)  # the exporter puts it in eval mode; a caller's module keeps its own
        if _inputs(path) == 1:
            return path
    sample = np.zeros((1, *input_shape), dtype=np.float32)  # its file takes any batch
    # over the quick export just made, whose input was lost
    shipped = Path(get_exporter("onnx-fp32")(ExportRequest(path.stem, "teacher", path.parent, teacher, sample,
                                                           force=True)).path)
    if _inputs(shipped) != 1:
        raise ExportError(f"the teacher's ONNX file takes {_inputs(shipped)} inputs, not the image")
    return shipped


def _inputs(path: Path) -> int:
    """The graph inputs of the ONNX file at ``path`` that are fed, not initializers (older files list both)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return sum(1 for i in graph.input if i.name not in weights)
