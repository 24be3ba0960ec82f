"""Validate artifacts: ONNX checker, parity with torch, accuracy, size, and latency measured on
the profile's runtime (all artifacts interleaved in one run), against the budget.

Calling the module runs ``validate`` (``from edgekd import validate`` gives this module: see
``edgekd.callable_module``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.callable_module import make_callable
from edgekd.data import Dataset
from edgekd.errors import ConfigError, first_line, require_number
from edgekd.fsutil import sha256
from edgekd.profiles import DeviceProfile
from edgekd.textfmt import decimals
from edgekd.types import Artifact, ArtifactReport, Budget, LatencyStats, Parity, Ratio, ValidationReport

FP32_MAX_ABS_DIFF = 1e-3  # exporter + runtime should reproduce torch's fp32 logits this closely
INT8_MIN_AGREEMENT = 0.97  # share of top-1 predictions an int8 model must keep
ACCURACY_DROP_NOTE = 5.0  # points below the teacher that earn a note when no accuracy budget is set
INT8_MIN_GAIN = 0.02  # int8 must beat fp32's p50 by this margin to count as faster, not noise


# One input the latency worker draws (in float64, then float32) and feeds every run: 256 MiB as float32 holds
# a 3-channel 4096x4096 image (edgekd's largest --resolution); beyond that the worker fails for memory.
MAX_INPUT_VALUES = 2**26


def check_input_size(shape: Sequence[int]) -> None:
    """Refuse an --input-shape too large to allocate, before a worker process tries."""
    count = int(np.prod([int(d) for d in shape], dtype=object))
    if count > MAX_INPUT_VALUES:
        raise ConfigError(f"--input-shape {','.join(map(str, shape))} is {count:,} values ({count * 4 / 2**30:,.1f} "
                          f"GiB as float32), more than the {MAX_INPUT_VALUES:,} edgekd measures with",
                          "pass a smaller shape, e.g. 1,3,224,224 (batch, channels, height, width)")


def artifact_from_file(path: str | Path, name: str | None = None, role: str = "model") -> Artifact:
    """Describe an existing ONNX file (hash, size, opset, op types, signature).

    A missing, truncated or non-ONNX file, or external data outside the model's folder, raises ArtifactError.
    """
    from edgekd.onnxfile import describe, external_files, load_model, opset_of, precision_of

    path = Path(path)
    model = load_model(path)
    details = describe(model)
    # Weights kept beside the model count towards its size: a size limit is on what ships.
    external = external_files(path, model)
    if external:
        details["external_data"] = [str(f.relative_to(path.parent)) for f in external]
        # The .onnx's own hash says nothing of its weights kept beside it: each file is hashed too.
        details["external_sha256"] = {str(f.relative_to(path.parent)): sha256(f) for f in external}
    return Artifact(name=name or path.stem, role=role, precision=precision_of(model), path=str(path),
                    exporter="external", opset=opset_of(model), sha256=sha256(path),
                    size_bytes=path.stat().st_size + sum(f.stat().st_size for f in external), details=details)


# The element type a model's float input is fed the test images as (latency.runtime casts them to it).
_FED_AS = {"float": "float32", "float16": "float16", "double": "float64"}


def data_record(art: Artifact, data: Dataset, given: Any, seed: int, normalize: Any = None,
                resolution: Any = None, channels: Any = None) -> dict[str, Any]:
    """What ``validate --json`` records of the data ``art``'s accuracy was measured on: the data as ``given`` and
    as named, its test images and split ``seed``, and the preprocessing the images were fed to the model with
    (scale, mean, std, size, channels, and the layout and type as fed), with where its normalisation, size and
    channels came from (``normalize``, ``resolution``, ``channels``: the flags given, None where left out). A
    model exported elsewhere scores by these alone: two records that differ only in them are not comparable."""
    from edgekd.input_shape import input_layout
    from edgekd.onnx_metadata import embedded_preprocess

    record: dict[str, Any] = {"given": given, "name": data.name, "test_images": len(data.y_test), "seed": seed}
    if data.preprocess is None:  # arrays prepared by hand, through the Python API: nothing to say of them
        return record
    recorded = embedded_preprocess(art.path)
    inputs = art.details.get("inputs") or [{}]
    shape = inputs[0].get("shape")
    fed = data.preprocess.to_dict() | {
        "layout": input_layout(shape, data.input_shape) if shape else "NCHW",
        "dtype": _FED_AS.get(inputs[0].get("dtype"), "float32"),
        "input_shape": list(data.input_shape)}
    fed["from"] = {
        "normalize": "--normalize" if normalize is not None else "model metadata" if recorded is not None
        else "data statistics",
        "resize": "--resolution" if resolution is not None else "as stored" if data.preprocess.resize is None
        else "data default",
        "channels": "--channels" if channels is not None else "model metadata"
        if recorded is not None and recorded.to_channels else "as stored"}
    return record | {"preprocess": fed}


def check_onnx(path: str | Path) -> tuple[bool, str]:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        return True, ""
    except Exception as exc:
        return False, first_line(exc)


def validate(artifacts: Sequence[Artifact], profile: DeviceProfile | str, budget: Budget | None,
             data: Dataset | None = None, references: Mapping[str, Any] | None = None,
             budgeted: Sequence[str] | None = None, input_shape: Sequence[int] | None = None,
             rounds: int = 3, ships: str | None = None) -> ValidationReport:
    """Validate ``artifacts`` side by side.

    ``references`` maps an artifact name to the torch model it must agree with; ``budgeted`` names
    the artifacts the budget applies to (default: all). Latency is measured in ``rounds`` interleaved
    runs; each artifact reports its median run. The primary artifact is the int8 student when it is
    measurably faster than its fp32 twin (the median over the runs of their p50 ratio), else the fp32
    student; with ``ships="fp32"`` (the precision the search checked the budget for) the fp32 student.
    """
    from edgekd.api_args import require_artifacts, require_budget, require_dataset, require_references
    from edgekd.latency.measure import measure
    from edgekd.latency.runtime import predictions_on_test_split, top1
    from edgekd.profiles import load_profile

    require_artifacts(artifacts)
    require_dataset(data, optional=True)
    require_budget(budget)
    require_references(references)
    # What the other stages hand over, as search takes them: a profile by name, no budget.
    profile, budget = load_profile(profile), budget if budget is not None else Budget()
    require_number("rounds", rounds, whole=True)  # a string failed the comparison below as a raw TypeError
    if rounds < 1:
        raise ConfigError(f"latency rounds must be at least 1, got {rounds}", "pass 3")
    _check_accuracy_budget(artifacts, budget, data)
    from edgekd.input_shape import check_has_batch

    for art in artifacts:
        check_has_batch(art.path, art.details, images=data is not None)
    if data is not None:
        from edgekd.latency.runtime import check_takes_float

        for art in artifacts:
            check_takes_float(art.path, art.details)
    shape_notes = []
    if input_shape is None and data is not None:
        input_shape = _data_shape(artifacts, profile, data)
        if input_shape is not None:
            shape_notes.append(f"latency measured at input shape {','.join(map(str, input_shape))}, the test "
                               "data's, since the model's input has dynamic dimensions (--input-shape sets another)")
    if input_shape is not None:
        from edgekd.input_shape import check_input_shape

        check_input_size(input_shape)
        for art in artifacts:
            check_input_shape(art.path, art.details, tuple(input_shape))
    references = references or {}
    budgeted = list(budgeted) if budgeted is not None else [a.name for a in artifacts]
    measured = []
    ref_logits: dict[int, np.ndarray] = {}
    for art in artifacts:
        accuracy = parity = by_class = None
        if data is not None:
            logits, labels, read = predictions_on_test_split(art.path, profile, data)
            shape_notes += read
            accuracy = top1(logits, labels)
            by_class = class_accuracy(logits, labels, data)
            ref = references.get(art.name)
            if ref is not None:
                parity = _parity(logits, _ref_logits(ref, data, ref_logits), type(ref).__name__)
        measured.append((accuracy, parity, by_class))
    # Timed once the models are known to take the data: a mismatch is refused before minutes on a board.
    runs = [measure([a.path for a in artifacts], profile, input_shape) for _ in range(rounds)]
    latencies = [_median_run([run[i] for run in runs]) for i in range(len(artifacts))]
    teacher = next((acc for art, (acc, _, _) in zip(artifacts, measured) if art.role == "teacher"), None)
    reports = []
    for art, lat, (accuracy, parity, by_class) in zip(artifacts, latencies, measured):
        verdicts = _verdicts(art, lat, parity, accuracy, teacher, budget) if art.name in budgeted else {}
        checked, why = check_onnx(art.path)
        if not checked:  # "checker FAILED" alone leaves a user nothing to fix (named by file: a run checks in staging)
            shape_notes.append(f"'{Path(art.path).name}' fails the ONNX checker: {why}")
        reports.append(ArtifactReport(art, checked, parity, accuracy, lat, verdicts, by_class))
    speedup = _int8_speedup(artifacts, runs)
    int8_ratio = _int8_ratio(artifacts, runs)
    primary, notes = ship_decision(reports, int8_ratio, len(runs), budget, ships)
    notes += shape_notes
    if data is not None:
        notes += untested_note(data)
    return ValidationReport(profile.name, budget, tuple(reports), primary, tuple(notes), rounds, tuple(speedup),
                            int8_ratio)


def _data_shape(artifacts: Sequence[Artifact], profile: DeviceProfile, data: Dataset) -> tuple[int, ...] | None:
    """The data's input shape, for models whose input leaves its size open: the accuracy is measured at that
    size, so the latency is too (one shape for all, as they are measured side by side; a fixed-size model
    beside them, compress's students beside an ONNX teacher of open size, takes the data's size too)."""
    from edgekd.input_shape import data_input_shape

    batch = int(profile.measure["batch_size"])
    shapes = {data_input_shape(a.details, tuple(data.input_shape), batch) for a in artifacts} - {None}
    return next(iter(shapes)) if len(shapes) == 1 else None


def _median_run(stats: list[LatencyStats]) -> LatencyStats:
    """The run whose p50 is the median (lower middle for an even count): its p90/p99 belong to it."""
    return sorted(stats, key=lambda s: s.p50_ms)[(len(stats) - 1) // 2]


def _twins(artifacts: Sequence[Artifact]) -> tuple[int, int] | None:
    """Indices of the fp32 and int8 students, when both are there."""
    index = {a.precision: i for i, a in enumerate(artifacts) if a.role == "student"}
    return (index["fp32"], index["int8"]) if set(index) == {"fp32", "int8"} else None


def _int8_speedup(artifacts: Sequence[Artifact], runs: list[list[LatencyStats]]) -> list[float]:
    """fp32 p50 / int8 p50 of the student twins in each run (empty without both twins), for the record."""
    twins = _twins(artifacts)
    return [run[twins[0]].p50_ms / run[twins[1]].p50_ms for run in runs] if twins else []


def _int8_ratio(artifacts: Sequence[Artifact], runs: list[list[LatencyStats]]) -> Ratio | None:
    """How many times faster int8 is than fp32, from the repeats of all runs paired up: on a shared 2-core
    machine one run's ratio for a near-tie moved 0.85-1.03x between runs, so neither a single run nor a
    single disturbed stretch may decide what ships."""
    from edgekd.latency.compare import ratio

    twins = _twins(artifacts)
    return ratio(runs, *twins) if twins else None


def _ref_logits(ref: Any, data: Dataset, cache: dict[int, np.ndarray]) -> np.ndarray:
    from edgekd.distill.targets import predict

    if id(ref) not in cache:
        cache[id(ref)] = predict(ref, data.x_test)
    return cache[id(ref)]


def untested_note(data: Any) -> list[str]:
    """The note naming ``data``'s classes with no test image: ``class_accuracy`` leaves them out, and unsaid
    a record of every tested class reads as a record of every class (small data, or a val/ folder lacking one)."""
    from edgekd.textfmt import one_line

    tested = set(np.unique(data.y_test).tolist())
    missing = [one_line(name) for i, name in enumerate(data.class_names) if i not in tested]
    if not missing:
        return []
    many = len(missing) > 1
    shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
    return [f"class{'es' * many} {shown} of {data.name} {'have' if many else 'has'} no test image, so "
            f"{'their' if many else 'its'} accuracy is not measured (per-class accuracy, `class_accuracy`, leaves "
            f"{'them' if many else 'it'} out); give the data more images of {'them' if many else 'it'} (or a test "
            "split holding some)"]


def class_accuracy(scores: np.ndarray, labels: np.ndarray, data: Any) -> dict[str, float]:
    """Top-1 accuracy on each of the data's classes that has test images, by its name: where compression
    costs accuracy, it rarely costs it evenly."""
    predicted = scores if scores.ndim == 1 else scores.argmax(1)
    right = predicted == labels
    return {name: float(right[data.y_test == i].mean()) for i, name in enumerate(data.class_names)
            if (data.y_test == i).any()}


def _parity(logits: np.ndarray, ref: np.ndarray, name: str) -> Parity:
    return Parity(top1_agreement=float((logits.argmax(1) == ref.argmax(1)).mean()),
                  max_abs_diff=float(np.abs(logits - ref).max()), reference=f"torch {name}")


def _check_accuracy_budget(artifacts: Sequence[Artifact], budget: Budget, data: Dataset | None) -> None:
    """An accuracy budget needs data, and a drop needs the teacher beside the student: said before measuring."""
    if budget.checks_accuracy and data is None:
        flag = "--min-accuracy" if budget.min_accuracy is not None else "--max-accuracy-drop"
        raise ConfigError(f"{flag} needs data to measure accuracy on", "pass --data (or drop the accuracy budget)")
    if budget.max_accuracy_drop is not None and not any(a.role == "teacher" for a in artifacts):
        raise ConfigError("--max-accuracy-drop compares with the teacher, and no teacher artifact is validated here",
                          "use --min-accuracy, or validate the teacher's ONNX beside the student")


def _verdicts(art: Artifact, lat: LatencyStats, parity: Parity | None, accuracy: float | None,
              teacher_accuracy: float | None, budget: Budget) -> dict[str, bool]:
    verdicts: dict[str, bool] = {}
    if budget.latency_ms is not None:
        verdicts["latency"] = lat.p50_ms <= budget.latency_ms
    if budget.max_bytes is not None:
        verdicts["size"] = art.size_bytes <= budget.max_bytes
    if budget.min_accuracy is not None and accuracy is not None:
        verdicts["accuracy"] = accuracy >= budget.min_accuracy
    if budget.max_accuracy_drop is not None and accuracy is not None and teacher_accuracy is not None:
        # in points of the same test split; the tiny slack keeps an exact tie from failing on rounding
        verdicts["accuracy_drop"] = (teacher_accuracy - accuracy) * 100 <= budget.max_accuracy_drop + 1e-9
    if parity is not None:
        verdicts["parity"] = (parity.max_abs_diff <= FP32_MAX_ABS_DIFF if art.precision == "fp32"
                              else parity.top1_agreement >= INT8_MIN_AGREEMENT)
    return verdicts


def ship_decision(reports: Sequence[ArtifactReport], speedup: Ratio | None, runs: int,
                  budget: Budget, ships: str | None = None) -> tuple[str, list[str]]:
    """The artifact that ships and the notes that say why (and what it gained over the teacher), from the
    reports' verdicts: decided again whenever a verdict is added (compress's ORT-format checks). ``ships`` is
    the precision the search checked the budget for: "fp32" ships the fp32 student whatever int8 measures."""
    fp32 = _student(reports, "fp32") if ships == "fp32" else None
    if fp32 is not None:
        primary, notes = _fp32_ships(fp32, _student(reports, "int8"), speedup)
    else:
        primary, notes = _choose_primary(list(reports), speedup, runs)
    return primary, notes + _against_teacher(list(reports), primary, budget)


def _student(reports: Sequence[ArtifactReport], precision: str) -> ArtifactReport | None:
    return next((r for r in reports if r.artifact.role == "student" and r.artifact.precision == precision), None)


def _fp32_ships(fp32: ArtifactReport, int8: ArtifactReport | None, speedup: Ratio | None) -> tuple[str, list[str]]:
    """The fp32 student, for a run searched for fp32: the budget was checked for the fp32 file, and an int8
    one chosen for its speed would be a model the search never held to it (a target without int8 kernels is
    a reason to ask for fp32)."""
    note = ("fp32 ships: the search checked the budgets for fp32 (--precision fp32); the int8 student is "
            "validated beside it for reference")
    if int8 is not None and speedup is not None:
        note += f" (int8 ran at {speedup.median:.2f}x the fp32 student's speed)"
    if int8 is not None and int8.passed and not fp32.passed:
        note += (f"; the fp32 student {_fails(fp32)} and the int8 one is within it: search again with "
                 "--precision int8 to ship int8")
    return fp32.artifact.name, [note]


def _choose_primary(reports: list[ArtifactReport], speedup: Ratio | None, runs: int) -> tuple[str, list[str]]:
    students = {r.artifact.precision: r for r in reports if r.artifact.role == "student"}
    if not students:
        return reports[0].artifact.name, []
    fp32, int8 = students.get("fp32"), students.get("int8")
    if int8 is None or fp32 is None or speedup is None:
        return (int8 or fp32).artifact.name, []  # type: ignore[union-attr]
    ratio = speedup.median
    shown, line = int8_speedup_figures(ratio)
    how = (f"median of {speedup.pairs} repeat-by-repeat ratios over {runs} interleaved "
           f"{'runs' if runs > 1 else 'run'}, {speedup.interval(decimals(shown))}")
    if ratio >= 1.0 + INT8_MIN_GAIN:
        if fp32.passed and not int8.passed:
            return fp32.artifact.name, [f"int8 student is {shown}x faster than its fp32 twin ({how}) but "
                                        f"{_fails(int8)}: the fp32 student ships as the primary artifact"]
        return int8.artifact.name, [f"int8 student ships: {shown}x faster than its fp32 twin ({how})"]
    # above 1 int8 is faster, only not by the margin that tells it from noise: "NOT faster" would contradict the
    # p50s printed beside the note
    short = "NOT faster than fp32" if ratio <= 1.0 else "not faster than fp32 by the required margin"
    slower = f"int8 student is {short} on this profile ({shown}x, {how}; needs >= {line}x)"
    if int8.passed and not fp32.passed:
        return int8.artifact.name, [f"{slower}, but the fp32 student {_fails(fp32)}: the int8 student "
                                    "ships as the primary artifact because it is the one within budget"]
    return fp32.artifact.name, [f"{slower}: the fp32 student ships as the primary artifact; the int8 file is "
                                "kept for reference"]


def int8_speedup_figures(ratio: float) -> tuple[str, str]:
    """The int8 speedup and the line it must reach to ship, as the notes and report.md print them: a ratio just
    under the line (1.0198x) must not read as the line itself (1.02x)."""
    from edgekd.textfmt import figures

    return figures(ratio, 1.0 + INT8_MIN_GAIN, 2, ratio >= 1.0 + INT8_MIN_GAIN, at_most=False)


def _fails(report: ArtifactReport) -> str:
    """What a student fails, in words: the budget's checks by name, and its ORT-format copy's apart, whose
    failure may be parity rather than the budget."""
    failed = [k for k, ok in report.verdicts.items() if not ok and k != "ort"] or ([] if "ort" in report.verdicts
                                                                                    else ["checker"])
    said = f"breaks the budget ({', '.join(failed)})" if failed else ""
    if report.verdicts.get("ort") is False:
        said += (" and " if said else "") + "has an ORT-format copy that fails its checks (ort)"
    return said


def _against_teacher(reports: list[ArtifactReport], primary: str, budget: Budget) -> list[str]:
    """Say so when the shipped student gained nothing over the teacher, or lost much accuracy with no
    accuracy budget to catch it: a PASS on latency alone would hide both."""
    teacher = next((r for r in reports if r.artifact.role == "teacher"), None)
    shipped = next((r for r in reports if r.artifact.name == primary), None)
    if teacher is None or shipped is None or shipped is teacher:
        return []
    notes = []
    if teacher.latency and shipped.latency and shipped.latency.p50_ms >= teacher.latency.p50_ms:
        speed = teacher.latency.p50_ms / shipped.latency.p50_ms
        larger = ", and larger" if shipped.artifact.size_bytes > teacher.artifact.size_bytes else ""
        fits = (budget.latency_ms is not None and teacher.latency.p50_ms <= budget.latency_ms
                and (budget.max_bytes is None or teacher.artifact.size_bytes <= budget.max_bytes))
        # A student that meets the size limit its teacher breaks did gain what the budget asked for.
        sized = (budget.max_bytes is not None and teacher.artifact.size_bytes > budget.max_bytes
                 >= shipped.artifact.size_bytes)
        if fits:
            advice = "the teacher itself meets the budget: ship it, or tighten --budget-ms"
        elif sized:
            advice = (f"it meets --max-size-kb {budget.max_size_kb:g}, which the teacher "
                      f"({teacher.artifact.size_bytes / 1024:.1f} KB) breaks; for speed as well, tighten --budget-ms")
        else:
            advice = "compressing gained nothing here: try a tighter --budget-ms, or --space pruned"
        notes.append(f"the shipped student is not faster than the teacher ({speed:.2f}x its speed{larger}): {advice}")
    elif budget.max_bytes is None and shipped.artifact.size_bytes > teacher.artifact.size_bytes:
        # Faster, yet bigger than what it compresses: with no size limit the search may pick any size.
        notes.append(f"the shipped student is larger than the teacher ({shipped.artifact.size_bytes / 1024:.1f} KB vs "
                     f"{teacher.artifact.size_bytes / 1024:.1f} KB) and the budget sets no size limit: "
                     "--max-size-kb bounds it")
    drop = None if shipped.accuracy is None or teacher.accuracy is None else \
        (teacher.accuracy - shipped.accuracy) * 100
    if drop is not None and drop > ACCURACY_DROP_NOTE and not budget.checks_accuracy:
        notes.append(f"the shipped student is {drop:.1f} points less accurate than the teacher "
                     f"({shipped.accuracy * 100:.2f}% vs {teacher.accuracy * 100:.2f}%) and the budget sets no "
                     f"accuracy bound: --max-accuracy-drop would fail this run")
    return notes


def with_paths_relative(report: ValidationReport, root: Path) -> ValidationReport:
    """The same report with artifact paths relative to ``root`` (for a relocatable manifest)."""
    out = []
    for r in report.reports:
        rel = str(Path(r.artifact.path).resolve().relative_to(root.resolve()))
        out.append(replace(r, artifact=replace(r.artifact, path=rel)))
    return replace(report, reports=tuple(out))


make_callable(__name__, validate)
