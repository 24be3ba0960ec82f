"""Validate artifacts: ONNX checker, parity with torch, accuracy, size, and latency measured on
the profile's runtime (all artifacts interleaved in one run), against the budget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import Dataset
from edgekd.errors import ArtifactError
from edgekd.fsutil import sha256
from edgekd.profiles import DeviceProfile
from edgekd.types import Artifact, ArtifactReport, Budget, LatencyStats, Parity, ValidationReport

FP32_MAX_ABS_DIFF = 1e-3  # exporter + runtime should reproduce torch's fp32 logits this closely
INT8_MIN_AGREEMENT = 0.97  # share of top-1 predictions an int8 model must keep
INT8_MIN_GAIN = 0.02  # int8 must beat fp32's p50 by this margin to count as faster, not noise


def artifact_from_file(path: str | Path, name: str | None = None, role: str = "model") -> Artifact:
    """Describe an existing ONNX file; a missing, truncated or non-ONNX file raises ArtifactError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file '{path}' does not exist", "check the path")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(f"'{path}' is not a readable ONNX model ({str(exc).splitlines()[0][:120]})",
                            "pass a complete .onnx file (re-export it if it was truncated)") from None
    if not model.graph.node:
        raise ArtifactError(f"'{path}' holds no ONNX graph", "pass a complete .onnx file")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    int8 = any(n.op_type in ("QuantizeLinear", "QLinearConv", "ConvInteger") for n in model.graph.node)
    return Artifact(name=name or path.stem, role=role, precision="int8" if int8 else "fp32", path=str(path),
                    exporter="external", opset=opset, sha256=sha256(path), size_bytes=path.stat().st_size)


def check_onnx(path: str | Path) -> tuple[bool, str]:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        return True, ""
    except Exception as exc:
        return False, str(exc).splitlines()[0][:200]


def validate(artifacts: Sequence[Artifact], profile: DeviceProfile, budget: Budget,
             data: Dataset | None = None, references: Mapping[str, Any] | None = None,
             budgeted: Sequence[str] | None = None, input_shape: Sequence[int] | None = None) -> ValidationReport:
    """Validate ``artifacts`` side by side.

    ``references`` maps an artifact name to the torch model it must agree with; ``budgeted`` names
    the artifacts the budget applies to (default: all). The primary artifact is the int8 student
    when it is measurably faster than its fp32 twin, else the fp32 student.
    """
    from edgekd.latency.measure import measure
    from edgekd.latency.runtime import open_session, run_batches

    references = references or {}
    budgeted = list(budgeted) if budgeted is not None else [a.name for a in artifacts]
    latencies = measure([a.path for a in artifacts], profile, input_shape)
    reports = []
    ref_logits: dict[int, np.ndarray] = {}
    for art, lat in zip(artifacts, latencies):
        ok, _ = check_onnx(art.path)
        accuracy = parity = None
        if data is not None:
            logits = run_batches(open_session(art.path, profile), data.x_test)
            accuracy = float((logits.argmax(1) == data.y_test).mean())
            ref = references.get(art.name)
            if ref is not None:
                parity = _parity(logits, _ref_logits(ref, data, ref_logits), type(ref).__name__)
        verdicts = _verdicts(art, lat, parity, budget) if art.name in budgeted else {}
        reports.append(ArtifactReport(art, ok, parity, accuracy, lat, verdicts))
    primary, notes = _choose_primary(reports)
    return ValidationReport(profile.name, budget, tuple(reports), primary, tuple(notes))


def _ref_logits(ref: Any, data: Dataset, cache: dict[int, np.ndarray]) -> np.ndarray:
    from edgekd.distill.trainer import predict

    if id(ref) not in cache:
        cache[id(ref)] = predict(ref, data.x_test)
    return cache[id(ref)]


def _parity(logits: np.ndarray, ref: np.ndarray, name: str) -> Parity:
    return Parity(top1_agreement=float((logits.argmax(1) == ref.argmax(1)).mean()),
                  max_abs_diff=float(np.abs(logits - ref).max()), reference=f"torch {name}")


def _verdicts(art: Artifact, lat: LatencyStats, parity: Parity | None, budget: Budget) -> dict[str, bool]:
    verdicts: dict[str, bool] = {}
    if budget.latency_ms is not None:
        verdicts["latency"] = lat.p50_ms <= budget.latency_ms
    if budget.max_size_kb is not None:
        verdicts["size"] = art.size_bytes <= budget.max_size_kb * 1024
    if parity is not None:
        verdicts["parity"] = (parity.max_abs_diff <= FP32_MAX_ABS_DIFF if art.precision == "fp32"
                              else parity.top1_agreement >= INT8_MIN_AGREEMENT)
    return verdicts


def _choose_primary(reports: list[ArtifactReport]) -> tuple[str, list[str]]:
    students = {r.artifact.precision: r for r in reports if r.artifact.role == "student"}
    if not students:
        return reports[0].artifact.name, []
    fp32, int8 = students.get("fp32"), students.get("int8")
    if int8 is None or fp32 is None:
        return (int8 or fp32).artifact.name, []  # type: ignore[union-attr]
    ratio = fp32.latency.p50_ms / int8.latency.p50_ms  # type: ignore[union-attr]
    if ratio >= 1.0 + INT8_MIN_GAIN:
        return int8.artifact.name, [f"int8 student ships: {ratio:.2f}x faster than its fp32 twin"]
    slower = (f"int8 student is NOT faster than fp32 on this profile ({ratio:.2f}x, needs >= "
              f"{1 + INT8_MIN_GAIN:.2f}x)")
    if int8.passed and not fp32.passed:
        failed = ", ".join(k for k, ok in fp32.verdicts.items() if not ok)
        return int8.artifact.name, [f"{slower}, but the fp32 student breaks the budget ({failed}): the int8 student "
                                    "ships as the primary artifact because it is the one within budget"]
    return fp32.artifact.name, [f"{slower}: the fp32 student ships as the primary artifact; the int8 file is "
                                "kept for reference"]


def with_paths_relative(report: ValidationReport, root: Path) -> ValidationReport:
    """The same report with artifact paths relative to ``root`` (for a relocatable manifest)."""
    out = []
    for r in report.reports:
        rel = str(Path(r.artifact.path).resolve().relative_to(root.resolve()))
        out.append(replace(r, artifact=replace(r.artifact, path=rel)))
    return replace(report, reports=tuple(out))
