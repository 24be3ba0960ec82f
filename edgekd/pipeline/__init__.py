"""compress(): the only place that chains the stages and writes the output folder (atomically).

The stages it chains that also run alone (search, distill) are in ``stages``; the options in ``config``, read
from a recipe TOML by ``recipe``."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError, api_log
from edgekd.fsutil import atomic_dir, check_new_output, sha256, write_json, writing
from edgekd.pipeline.config import (
    CompressConfig,
    config_fields,
    field_default,
    input_paths,
    with_recorded_budget,
    with_search_budget,
    without_unread,
)
from edgekd.pipeline.exporting import export_models, export_teacher
from edgekd.pipeline.ort_copies import ort_copies, with_ort_verdicts
from edgekd.pipeline.recipe import load_recipe
from edgekd.pipeline.stages import run_distill, run_search, search_and_distill, train_student
from edgekd.run_inputs import Log, check_teacher_files, input_file, recipe, run_data, run_teacher
from edgekd.search_file import search_record, search_settings

__all__ = ["CompressConfig", "CompressResult", "compress", "config_fields", "input_paths", "load_recipe",
           "measured_on", "run_distill", "run_search", "train_student"]


@dataclass(frozen=True, eq=False)
class CompressResult:
    out: Path
    manifest: dict[str, Any]
    report_md: str

    @property
    def passed(self) -> bool:
        return bool(self.manifest["passed"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as the stages' results are (``out`` as a string)."""
        return {"out": str(self.out), "passed": self.passed, "manifest": self.manifest, "report_md": self.report_md}


def compress(config: CompressConfig, log: Log | None = None) -> CompressResult:
    """Teacher + data -> searched, distilled student -> fp32 and int8 ONNX -> validated on the profile."""
    from edgekd.api_args import require_config
    from edgekd.torchrun import check_alone

    require_config("config", config, CompressConfig, "out='edgekd-out', budget_ms=0.5")
    check_alone("compress")
    log = api_log(log)
    if config.distilled:
        config = _with_distilled_inputs(config, log)  # before the output check: the inputs it names are kept
    check_new_output(config.out, config.force, input_paths(config))  # fail before hours of work, not after
    with writing(config.out, "compress"):  # a second run into --out is refused now, not after its work
        return _compressed(config, log)


def _compressed(config: CompressConfig, log: Log) -> CompressResult:
    """compress() once its --out is held."""
    from edgekd.latency.runners import probe_device
    from edgekd.profiles import load_profile

    check_teacher_files(config)  # the teacher loads after the data, which can take minutes
    if config.distilled:
        config = _as_distilled(config)  # before the data loads: the recorded seed split it
        config = _with_distilled_budget(config, log)
        config = _with_distilled_opset(config, log)
    elif config.search_file:
        config = with_search_budget(config, log)
    out = Path(config.out)
    profile = load_profile(config.profile)
    probe_device(profile)  # validation always measures on the device, and a search too
    if config.search_file and not config.distilled:  # before the data and the teacher, which may train for minutes
        from edgekd.search_file import check_search_profile

        check_search_profile(config.search_file, profile)
    data = run_data(config, log)
    teacher = run_teacher(config, data, log)
    with tempfile.TemporaryDirectory(prefix="edgekd-teacher-") as early:
        # Exported first and kept for the end: a teacher torch.export cannot trace is refused before the
        # search and the training, not after them.
        log("export: teacher, its own .onnx file (copied)" if hasattr(teacher.module, "path") else
            "export: teacher fp32 (first, so that a teacher torch.export cannot trace stops the run now)")
        teacher_art = export_teacher(config, teacher, data, Path(early))
        if config.distilled:
            from edgekd.distilled import load_distilled

            found = load_distilled(config.distilled, teacher, data)
            search_result, student = found.search, found.result
            _warn_pruned_elsewhere(student, profile, log)
            log(f"distill: reusing the student trained in {config.distilled} ({student.selection()}, validation "
                f"accuracy {student.best_val_accuracy * 100:.2f}%)")
        else:
            search_result, student = search_and_distill(config, teacher, data, profile, log, teacher_exported=True)
        return _finish(config, out, teacher, teacher_art, search_result, student, data, profile, log)


def _with_distilled_inputs(config: CompressConfig, log: Log) -> CompressConfig:
    """``config`` with the teacher, data and preprocessing the distilled student was trained with, where it
    names none: left out, the run trained the default teacher on digits for minutes, then refused the folder
    as distilled from another. A weights file goes with its teacher, taken only with it."""
    from edgekd.distilled import recorded_inputs

    recorded = recorded_inputs(config.distilled, config.teacher is not None, config.data is not None)
    # Only what is not given is taken (None): a --normalize dataset given was once read as left out, and the
    # recorded one used in its place without a word. A recorded "dataset" is what leaving it out means anyway.
    implied = {"normalize": "dataset"}
    loaded = config.data is not None and not isinstance(config.data, str)  # a Dataset holds its preprocessing
    taken = {k: v for k, v in recorded.items() if getattr(config, k) is None and v != implied.get(k)
             and (k != "weights" or "teacher" in recorded and config.teacher is None)
             and not (loaded and k in ("resolution", "normalize", "channels"))}
    for key in ("teacher", "weights", "data"):
        path = _recorded_path(key, taken.get(key))
        if path is not None and not path.exists():
            # a teacher's weights go with it: given a teacher alone, the run would take none and be refused later
            flags = "--teacher and --weights" if key != "data" and "weights" in taken else f"--{key}"
            raise ConfigError(f"'{config.distilled}' was distilled with --{key} '{taken[key]}', which is not found "
                              "from here (its distill.json keeps the path as it was typed)",
                              f"pass {flags} with {'their paths' if ' and ' in flags else 'the path'} from this "
                              "folder")
    if taken:
        said = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in taken.items())
        log(f"inputs: {said}, as '{config.distilled}' was distilled with (pass them to use others)")
    return dataclasses.replace(config, **taken)


def _recorded_path(key: str, value: Any) -> Path | None:
    """The file or folder a recorded input names (``run_inputs.input_file``), or None."""
    file = input_file(key, value)
    return Path(file).expanduser() if file else None


def _as_distilled(config: CompressConfig) -> CompressConfig:
    """``config`` with the recipe its ``distilled`` student was trained with, to load the data as it was
    split then (its test images unseen in training) and to export and record the student as it was trained."""
    from edgekd.distilled import trained_recipe
    from edgekd.export import DYNAMO_MIN_OPSET

    trained = trained_recipe(config.distilled)
    if trained.get("qat_epochs"):
        said = f"the student in '{config.distilled}' was trained quantization-aware"
        if config.export_opset < DYNAMO_MIN_OPSET:
            raise ConfigError(f"{said}, and its int8 file exports at opset {DYNAMO_MIN_OPSET} or later, not "
                              f"--opset {config.opset}", f"pass --opset {DYNAMO_MIN_OPSET}, or distill it again "
                              "without --qat-epochs (post-training int8 writes older opsets)")
        if config.calibration != field_default("calibration"):
            raise ConfigError(f"--calibration does not apply: {said}, and its int8 file takes the scales it "
                              "learned", "drop --calibration")
    return dataclasses.replace(config, **without_unread(trained))


def _with_distilled_opset(config: CompressConfig, log: Log) -> CompressConfig:
    """With no --opset given, the one the distilled student's search sized its files at (or its distill run
    recorded): at the default, a student chosen to fit --max-size-kb at opset 17 shipped at 18."""
    from edgekd.search_file import is_opset, recorded_run, recorded_settings

    record = Path(config.distilled) / "search.json"
    searched = recorded_settings(record).get("opset", recorded_run(record).get("opset"))
    if config.opset is not None or not is_opset(searched) or searched == config.export_opset:
        return config
    log(f"export: --opset {searched}, as the search of '{config.distilled}' sized its students (pass --opset to "
        "export at another)")
    return dataclasses.replace(config, opset=searched)


def _with_distilled_budget(config: CompressConfig, log: Log) -> CompressConfig:
    """With no budget given, the one the distilled student was searched for: validated against none, it
    passed whatever it measured, and `gate` then found no budget to hold it to."""
    from edgekd.distilled import recorded_budget

    return with_recorded_budget(config, log, recorded_budget, config.distilled, "was distilled for")


def _finish(config: CompressConfig, out: Path, teacher: Any, teacher_art: Any, search_result: Any, student: Any,
            data: Any, profile: Any, log: Log) -> CompressResult:
    """Export, validate and report into ``out``, which appears whole or not at all."""
    with atomic_dir(out, force=config.force) as staging:
        artifacts, references = export_models(config, teacher, teacher_art, student.model, data, staging, log, profile)
        log(f"validate on '{profile.name}' (latency interleaved across {len(artifacts)} artifacts)")
        from edgekd.validate import validate, with_paths_relative

        report = validate(artifacts, profile, config.budget, data, references,
                          budgeted=[a.name for a in artifacts if a.role == "student"], rounds=config.latency_rounds,
                          ships=config.precision)
        report = with_paths_relative(report, staging)
        orts = ort_copies(report, staging, profile, data, config.latency_rounds, log) if config.ort else {}
        report = with_ort_verdicts(report, orts, config.precision)
        report = _with_prune_note(report, student, config.precision, log, profile)
        manifest = _manifest(config, report, profile, data, teacher, search_result, student)
        weights = staging / manifest["student"]["weights"]
        # as every other file the folder ships: a pipeline can tell a swapped or corrupted state dict
        manifest["student"].update(weights_sha256=sha256(weights), weights_size_bytes=weights.stat().st_size)
        for entry in manifest["artifacts"]:
            if entry["artifact"]["name"] in orts:
                entry["ort"] = orts[entry["artifact"]["name"]].to_dict()
        write_json(staging / "manifest.json", manifest)
        searched = search_record(search_result, profile, config.budget, data, teacher.module,
                                 settings=search_settings(config))
        write_json(staging / "search.json", searched)
        from edgekd.report import render_markdown
        from edgekd.report_html import render_html

        report_md = render_markdown(manifest)
        (staging / "report.md").write_text(report_md, encoding="utf-8")
        # from what search.json holds, as `edgekd report` renders it again: the ranking alone has no budget
        # to mark the candidates that broke it
        (staging / "report.html").write_text(render_html(manifest, searched), encoding="utf-8")
    return CompressResult(out, manifest, report_md)



def _warn_pruned_elsewhere(student: Any, profile: Any, log: Log) -> None:
    """Said before the export: a student pruned toward --target-ms on one profile shipped on another, with
    no word until the target note blamed this machine's noise."""
    from edgekd.pipeline.prune_check import pruned_elsewhere

    said = pruned_elsewhere(student.pruning, profile)
    if said is not None:
        log(f"warning: {said}")


def _with_prune_note(report: Any, student: Any, pruned_for: str, log: Log, profile: Any = None) -> Any:
    from edgekd.pipeline.prune_check import overshoot_note

    note = overshoot_note(report, student.pruning, pruned_for, profile)
    if note is None:
        return report
    log(f"warning: {note}")
    return dataclasses.replace(report, notes=(*report.notes, note))


def measured_on(profile: Any) -> dict[str, Any]:
    """The profile as a manifest records it; a local one with the CPU it measured on, since its latencies
    describe this machine and a CI runner or a colleague's laptop gating the manifest later may be another."""
    from edgekd.latency.table import host_cpu
    from edgekd.profiles import recorded_source

    return {**profile.to_dict(), "source": recorded_source(profile),
            **({"host": host_cpu()} if profile.is_local else {})}


def _manifest(config: CompressConfig, report: Any, profile: Any, data: Any, teacher: Any, search_result: Any,
              student: Any) -> dict[str, Any]:
    from edgekd.data import data_source
    from edgekd.report import build_manifest

    chosen = search_result.chosen
    return build_manifest(report, measured_on(profile), {
        # where compress read the data, resolved, for gate and validate --manifest run from another folder
        "data": {**data.describe(), **({"source": where} if (where := data_source(config.data)) else {})},
        "teacher": {"source": teacher.source},
        # the shipped student's count: pruning toward --target-ms takes channels from the searched one's
        "student": {"spec": chosen.spec.to_dict(), "params": (student.pruning or {}).get("params", chosen.params),
                    "searched_params": chosen.params, "weights": "student.pt",
                    "search_latency_ms": chosen.latency_ms, "predicted_latency_ms": chosen.predicted_ms,
                    "latency_source": search_result.latency_source, "distill": student.to_dict()},
        "recipe": recipe(config, config_fields()),
    })
