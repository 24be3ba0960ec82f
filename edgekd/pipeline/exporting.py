"""The export step of compress: the teacher's file, the student's fp32 and int8 files, into the staging
folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgekd.pipeline.config import CompressConfig
from edgekd.run_inputs import Log


def export_teacher(config: CompressConfig, teacher: Any, data: Any, folder: Path) -> Any:
    from edgekd.export import ExportRequest, get_exporter

    source = getattr(teacher.module, "path", None)
    if source is not None:  # an ONNX teacher is its own export: copied as it is, with its external data
        return copied_teacher(Path(source), folder)
    art = get_exporter("onnx-fp32")(ExportRequest("teacher-fp32", "teacher", folder, teacher.module,
                                                  data.x_val[:1], opset=config.export_opset))
    check_teacher_agrees(art, teacher.module, data, config.export_opset)
    return art


# Validation images the teacher's file is checked on, right after its export (seconds, before the search).
AGREEMENT_IMAGES = 64


def check_teacher_agrees(art: Any, module: Any, data: Any, opset: int) -> None:
    """Refuse a teacher file whose logits are not the torch teacher's, before the search and training: below
    opset 18 torch's TorchScript exporter records the one path an `if` on a tensor's value took while tracing,
    and the run passed with a teacher-fp32.onnx agreeing with its teacher on no image (its accuracy, the
    reference of --max-accuracy-drop, that of another model). Within 1e-3 of the largest logit: a deep
    teacher's fp32 kernels differ from torch's by rounding, not by paths."""
    import numpy as np
    import onnxruntime

    from edgekd.distill.targets import predict
    from edgekd.errors import ExportError, first_line
    from edgekd.export import DYNAMO_MIN_OPSET
    from edgekd.latency.runtime import run_batches

    x = np.ascontiguousarray(data.x_val[:AGREEMENT_IMAGES], dtype=np.float32)
    # one image at a time: a branch on the batch's first image takes each image's own path
    ours = predict(module, x, batch=1)
    try:
        theirs = run_batches(onnxruntime.InferenceSession(art.path, providers=["CPUExecutionProvider"]), x, batch=1)
    except Exception as exc:  # onnxruntime's errors share no base class; a raw one ended the run as a traceback
        raise ExportError(f"the teacher's exported file does not run in onnxruntime ({first_line(exc)})",
                          "export the teacher at another --opset, or report this with the model") from None
    diff = float(np.abs(ours - theirs).max()) if ours.shape == theirs.shape else float("inf")
    if diff <= 1e-3 * max(1.0, float(np.abs(ours).max())):
        return
    agree = float((ours.argmax(1) == theirs.argmax(1)).mean()) if ours.shape == theirs.shape else 0.0
    traced = (f", which the TorchScript exporter used below opset {DYNAMO_MIN_OPSET} records as the one path it "
              "took while tracing" if opset < DYNAMO_MIN_OPSET else "")
    fix = (f"remove it from forward, or export at --opset {DYNAMO_MIN_OPSET}, which refuses such a branch naming "
           "its line" if opset < DYNAMO_MIN_OPSET else "remove it from forward")
    raise ExportError(f"the teacher's exported file disagrees with the torch teacher on {len(x)} validation images "
                      f"(top-1 agreement {agree:.0%}, largest logit difference {diff:.3g}): its forward takes a path "
                      f"that depends on a tensor's value (an `if` on it), or is random in eval mode{traced}", fix)


def copied_teacher(source: Path, folder: Path) -> Any:
    """An ONNX teacher copied into ``folder``, named by its precision: an int8 or fp16 teacher was shipped as
    teacher-fp32.onnx, its manifest entry recording int8 under that name."""
    from edgekd.onnxfile import load_model, precision_of
    from edgekd.validate import artifact_from_file

    name = f"teacher-{precision_of(load_model(source))}"
    placed = _copy_model(source, folder / f"{name}.onnx")
    return dataclasses.replace(artifact_from_file(placed, name, "teacher"), exporter="user onnx")


def _copy_model(source: Path, placed: Path) -> Path:
    """``source`` copied to ``placed`` with the external data files it names, at the same relative paths."""
    import shutil

    from edgekd.onnxfile import external_files, load_model

    shutil.copy2(source, placed)
    for data_file in external_files(source, load_model(source)):
        target = placed.parent / data_file.relative_to(source.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data_file, target)
    return placed


def export_models(config: CompressConfig, teacher: Any, teacher_art: Any, student: Any, data: Any, staging: Path,
                  log: Log, profile: Any) -> tuple:
    """The teacher's file copied into ``staging`` with the student's fp32 and int8 files, each stamped with
    the data's preprocessing; and the torch module each file is checked against."""
    import numpy as np

    from edgekd.export import ExportRequest, get_exporter
    from edgekd.onnx_metadata import stamp_data_metadata

    fp32 = get_exporter("onnx-fp32")
    placed = _copy_model(Path(teacher_art.path), staging / Path(teacher_art.path).name)
    teacher_art = dataclasses.replace(teacher_art, path=str(placed))
    # The seed the files record is the one that dealt the data's split, not the run's --seed: a Dataset passed
    # in was split before the run (load_data's own seed), and validate re-splits with the recorded one.
    from edgekd.data import split_seed_of

    dealt = split_seed_of(data)
    rng = np.random.default_rng(config.seed)
    calib = data.x_train[rng.permutation(len(data.x_train))[:config.calibration_samples]]
    if config.qat_epochs:
        from edgekd.distill.qat import export_copy

        log("export: student fp32 (QAT weights, no fake quantization), student int8 (QAT scales)")
        twin = export_copy(student, fake_quant=False)
        student_fp32 = fp32(ExportRequest("student-fp32", "student", staging, twin, data.x_val[:1],
                                          opset=config.export_opset))
        student_int8 = get_exporter("onnx-int8-qat")(ExportRequest("student-int8", "student", staging, student,
                                                                   data.x_val[:1], calibration=calib,
                                                                   opset=config.export_opset))
        # The fallback re-quantizes with post-training calibration, which would drop the scales QAT learned; a
        # QAT int8 file slower than fp32 is caught by validate, and fp32 ships unless it breaks the budget.
        log(f"export: {QAT_NO_FALLBACK}")
        student_int8 = dataclasses.replace(student_int8, details={**student_int8.details,
                                                                  "int8_fallback_skipped": QAT_NO_FALLBACK})
        references = {teacher_art.name: teacher.module, "student-fp32": twin, "student-int8": student}
    else:
        from edgekd.int8_fallback import FallbackConfig, int8_with_fallback

        log("export: student fp32, student int8 (QDQ, calibrated on training images; nodes that "
            "run slower in int8 on the profile fall back to fp32)")
        student_fp32 = fp32(ExportRequest("student-fp32", "student", staging, student, data.x_val[:1],
                                          opset=config.export_opset))
        # Each round's file is stamped as it ships, so the size budget is held against the shipped size.
        fallback = int8_with_fallback(student_fp32.path, calib, profile, staging,
                                      FallbackConfig(calibration_method=config.calibration,
                                                     max_bytes=config.budget.max_bytes),
                                      stamp=lambda art: stamp_data_metadata(art, data, dealt))
        student_int8 = fallback.artifact
        log(f"export: {fallback.summary()}")
        for note in fallback.notes:
            log(f"export: {note}")
        references = {teacher_art.name: teacher.module, "student-fp32": student, "student-int8": student}
    import torch

    torch.save(student.state_dict(), staging / "student.pt")
    # The split seed on the teacher only where edgekd trained it on this run's split (the default teacher): one
    # trained elsewhere was not, and validate would warn of a split it never saw.
    stamped = [stamp_teacher(teacher_art, teacher, data, dealt),
               *(stamp_data_metadata(a, data, dealt) for a in (student_fp32, student_int8))]
    return stamped, references


QAT_NO_FALLBACK = ("no node-level int8 fallback for a QAT student: it would re-calibrate and lose the learned "
                   "scales; if int8 is not faster, validate says so and fp32 ships unless it breaks the budget")


def stamp_teacher(teacher_art: Any, teacher: Any, data: Any, seed: int | None = None) -> Any:
    """The teacher's file stamped with the input it is fed: a user's ONNX teacher taking channels-last (or
    flattened) images is fed them so (``OnnxTeacher.layout``), and a pipeline following the metadata must too.
    The data's split ``seed`` (the one that dealt it, ``split_seed_of``) too where the teacher trained on that
    split (``Teacher.split_seed``): validate then warns when another seed's test images include its training
    images, as it does for the students."""
    from edgekd.onnx_metadata import stamp_data_metadata
    from edgekd.onnx_teacher import OnnxTeacher

    layout = teacher.module.layout if isinstance(teacher.module, OnnxTeacher) else "NCHW"
    trained_here = seed is not None and getattr(teacher, "split_seed", None) == int(seed)
    return stamp_data_metadata(teacher_art, data, int(seed) if trained_here else None, layout=layout)

