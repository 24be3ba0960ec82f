"""compress(): the only place that chains the stages and writes the output folder (atomically)."""

from __future__ import annotations

import dataclasses
import numbers
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd import tomlread
from edgekd.errors import ConfigError, OutputError, did_you_mean
from edgekd.fsutil import (
    atomic_dir,
    check_new_file,
    check_new_output,
    check_own_folder,
    remove_path,
    set_aside,
    settled,
    write_json,
)
from edgekd.run_inputs import check_inputs, near_chance, recipe, run_data, run_teacher
from edgekd.search_file import search_record
from edgekd.types import Budget, DistillConfig

Log = Callable[[str], None]


@dataclass(frozen=True)
class CompressConfig:
    """Everything ``edgekd compress`` takes; a recipe TOML holds the same keys."""

    out: str = "edgekd-out"
    teacher: Any = None  # a spec or .pt2 path, a torch.nn.Module (Python API), or None: the embedded default
    weights: str | None = None
    data: Any = None  # a path, 'digits', a Dataset (Python API), or None: the embedded digits
    resolution: Any = None  # one side, "HEIGHTxWIDTH" or (height, width); kept as a side or (height, width)
    normalize: str = "dataset"  # or "none", or "MEAN/STD" (comma-separated per channel): as the teacher was trained
    channels: int | None = None  # 3: grayscale repeated to RGB, 1: RGB to luminance (None: as the data is)
    profile: str = "host-cpu-1t"
    budget_ms: float | None = None
    max_size_kb: float | None = None
    min_accuracy: float | None = None  # the shipped student's test accuracy, a fraction
    max_accuracy_drop: float | None = None  # percentage points below the teacher's test accuracy
    space: str = "mbv2"  # or several: "mbv2,resnet,pruned"
    proxy: str = "params"  # chosen by the rule in benchmarks/preregistered.md; see README "Search quality"
    candidates: int = 100
    latency_anchors: int | None = None  # networks measured to fit a space with no latency table (None: 32)
    precision: str = "int8"  # the search checks latency and size limits for this deployment precision
    epochs: int = 40
    lr: float = 5e-3
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.9
    augment: bool = True  # shift training images, the teacher labelling each batch (benchmarks/distill_augment.py)
    losses: str = "kd"  # registered losses with weights, e.g. "kd:1,dkd:0.5" (kd, dkd, dist, hint, rkd, at)
    hint_student: str | None = None  # comma-separated student module paths tapped for hint/at/rkd
    hint_teacher: str | None = None  # the teacher module paths they pair with
    labels: bool = True  # False: learn from the teacher's soft labels alone (unlabelled data)
    qat_epochs: int = 0  # last epochs of distillation run quantization-aware
    qat_lr: float | None = None  # peak learning rate of the QAT fine-tuning (None: lr / 10)
    qat_full_range: bool = False  # QAT int8 weights in [-127, 127] (VNNI x86, ARM) instead of [-64, 64]
    keep_epoch: str = "best"  # whose weights distillation returns: "best" or "near-best" (DistillConfig.keep)
    target_ms: float | None = None  # pruning-aware KD until the measured latency reaches this
    prune_steps: int = 8
    prune_importance: str = "l2"
    prune_round_to: int | None = None
    calibration_samples: int = 256
    calibration: str = "minmax"  # int8 calibration method: minmax, entropy or percentile
    opset: int = 18  # ONNX opset of the shipped files; down to 13 for older runtimes (not with QAT)
    latency_rounds: int = 3  # interleaved validation runs; the int8-vs-fp32 decision is their median
    ort: bool = False  # also write each student in ORT format (onnxruntime mobile and reduced builds)
    search_file: str | None = None  # reuse a search.json from `edgekd search` instead of searching again
    distilled: str | None = None  # export and validate the student `edgekd distill --out` trained in this folder
    seed: int = 0
    force: bool = False
    progress: bool = True
    budget: Budget = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", Budget(self.budget_ms, self.max_size_kb, self.min_accuracy,
                                                 self.max_accuracy_drop))
        if self.calibration not in ("minmax", "entropy", "percentile"):
            raise ConfigError(f"unknown calibration method '{self.calibration}'",
                              "choose one of: minmax, entropy, percentile")
        from edgekd.data import check_seed

        check_seed(self.seed)
        # Checked here, not where they are used: after the search and training a float here was a traceback.
        for name in ("calibration_samples", "latency_rounds", "opset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{name} must be a whole number, got {value!r}", f"pass {name} as an integer")
            object.__setattr__(self, name, int(value))
        if self.calibration_samples < 1:
            raise ConfigError("calibration_samples must be at least 1", "pass a positive number")
        if self.latency_rounds < 1:
            raise ConfigError(f"--latency-rounds must be at least 1, got {self.latency_rounds}", "pass 3")
        if self.latency_anchors is not None and self.latency_anchors < 3:
            raise ConfigError(f"--latency-anchors must be at least 3, got {self.latency_anchors}",
                              "pass 32 (the default), or fewer down to 3 for a quicker, rougher latency fit")
        from edgekd.preprocess import parse_channels

        object.__setattr__(self, "channels", parse_channels(self.channels))  # the CLI gives "3", a recipe 3
        from edgekd.preprocess import parse_resolution, resolution_value

        hw = parse_resolution(self.resolution)  # refuses sides outside 4-4096
        # One recorded form: a side for a square size, (height, width) otherwise (the recipe keeps a list).
        object.__setattr__(self, "resolution", resolution_value(hw))
        from edgekd.data import parse_normalize

        parse_normalize(self.normalize)
        check_inputs(self)
        self.distill_config()  # validates the training options early
        self.search_config()
        self.prune_config()
        if self.distilled and self.search_file:
            raise ConfigError("--distilled and --search cannot be combined: the distilled folder holds the search "
                              "its student came from", "drop --search")
        from edgekd.export import DYNAMO_MIN_OPSET, check_opset

        check_opset(self.opset)
        if self.qat_epochs and self.opset < DYNAMO_MIN_OPSET:
            raise ConfigError(f"--qat-epochs exports at opset {DYNAMO_MIN_OPSET} or later, not --opset {self.opset}",
                              f"pass --opset {DYNAMO_MIN_OPSET}, or drop --qat-epochs (post-training int8 writes "
                              "older opsets)")
        if self.target_ms is not None and self.qat_epochs:
            raise ConfigError("--target-ms and --qat-epochs cannot be combined yet",
                              "choose pruning toward a latency target or quantization-aware training")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        idle = [f"--{name.replace('_', '-')}" for name in ("prune_steps", "prune_importance", "prune_round_to")
                if getattr(self, name) != defaults[name]]
        if self.target_ms is None and idle:
            # Without a target nothing is pruned: a setting that would be ignored is refused rather than dropped.
            raise ConfigError(f"{', '.join(idle)} only {'applies' if len(idle) == 1 else 'apply'} to pruning, and "
                              "nothing is pruned without --target-ms",
                              "pass --target-ms MS to prune toward a latency, or leave the pruning settings out")
        self._refuse_idle_settings(defaults)

    def _refuse_idle_settings(self, defaults: dict[str, Any]) -> None:
        """Settings a user changed that this run would ignore are refused, as the pruning ones are above."""
        from edgekd.distill.teacher_side import uses_features

        if (_paths(self.hint_student) or _paths(self.hint_teacher)) and not uses_features(
                self.distill_config().losses):
            raise ConfigError(f"--hint-student and --hint-teacher pick the layers of the feature losses (hint, at, "
                              f"rkd), and --losses {self.losses} has none",
                              "add one to --losses, e.g. kd:1,hint:1, or leave the hint layers out")
        idle = [f"--{name.replace('_', '-')}" for name in ("qat_lr", "qat_full_range")
                if getattr(self, name) != defaults[name]]
        if not self.qat_epochs and idle:
            raise ConfigError(f"{', '.join(idle)} only {'applies' if len(idle) == 1 else 'apply'} to "
                              "quantization-aware training, and none runs without --qat-epochs",
                              "pass --qat-epochs N to train the last N epochs quantization-aware, or leave "
                              f"{', '.join(idle)} out")
        if self.qat_epochs and self.calibration != defaults["calibration"]:
            raise ConfigError(f"--calibration {self.calibration} does not apply with --qat-epochs: the int8 file "
                              "takes the scales quantization-aware training learned",
                              "drop --calibration, or drop --qat-epochs to calibrate a post-training int8 file")

    def search_config(self) -> Any:
        from edgekd.search import SearchConfig

        return SearchConfig(space=self.space, proxy=self.proxy, candidates=self.candidates,
                            precision=self.precision, seed=self.seed,
                            **({} if self.latency_anchors is None else {"anchors": self.latency_anchors}))

    def distill_config(self) -> DistillConfig:
        return DistillConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=1e-4,
                             temperature=self.temperature, alpha=self.alpha, seed=self.seed, augment=self.augment,
                             losses=self.losses, student_taps=_paths(self.hint_student),
                             teacher_taps=_paths(self.hint_teacher), use_labels=self.labels,
                             qat_epochs=self.qat_epochs, qat_lr=self.qat_lr,
                             qat_reduce_range=not self.qat_full_range, keep=self.keep_epoch)

    def prune_config(self) -> Any:
        from edgekd.distill.prune import PruneConfig

        if self.target_ms is None:
            return None
        return PruneConfig(target_ms=self.target_ms, precision=self.precision, steps=self.prune_steps,
                           finetune_epochs=self.epochs, importance=self.prune_importance, round_to=self.prune_round_to)


def _paths(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def config_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(CompressConfig) if f.init]


# Recipe keys spelled as their flag where the flag's name differs from the config field's.
_RECIPE_ALIASES = {"search": "search_file"}


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe TOML (keys as the flags, '-' or '_'); unknown keys are rejected."""
    path = Path(path)
    try:
        raw = tomlread.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"recipe '{path}' does not exist", "check the --config path") from None
    except (tomlread.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"recipe '{path}' cannot be read ({exc})", "fix the TOML syntax") from None
    if isinstance(raw.get("compress"), dict):  # a [compress] table, or keys at the top level, not both
        loose = sorted(k for k in raw if k != "compress")
        if loose:
            raise ConfigError(f"recipe '{path}' has keys both at the top level ({', '.join(loose)}) and in its "
                              "[compress] table, so one set would be ignored",
                              "move every key into the [compress] table, or drop the table header")
        raw = raw["compress"]
    known = set(config_fields()) - {"force", "progress"}
    out = {}
    for key, value in raw.items():
        name = _RECIPE_ALIASES.get(key, key.replace("-", "_"))
        if name not in known:
            flags = {field: key for key, field in _RECIPE_ALIASES.items()}
            keys = sorted(flags.get(k, k.replace("_", "-")) for k in known)
            raise ConfigError(f"recipe '{path}': unknown key '{key}'",
                              f"{did_you_mean(key.replace('_', '-'), keys)}valid keys are {', '.join(keys)}")
        out[name] = value
    return out


@dataclass(frozen=True, eq=False)
class CompressResult:
    out: Path
    manifest: dict[str, Any]
    report_md: str

    @property
    def passed(self) -> bool:
        return bool(self.manifest["passed"])


def compress(config: CompressConfig, log: Log | None = None) -> CompressResult:
    """Teacher + data -> searched, distilled student -> fp32 and int8 ONNX -> validated on the profile."""
    from edgekd.profiles import load_profile

    log = log or (lambda _msg: None)
    check_new_output(config.out, config.force, input_paths(config))  # fail before hours of work, not after
    if config.distilled:
        config = _as_distilled(config)  # before the data loads: the recorded seed split it
        config = _with_distilled_budget(config, log)
    out = Path(config.out)
    profile = load_profile(config.profile)
    data = run_data(config, log)
    teacher = run_teacher(config, data, log)
    with tempfile.TemporaryDirectory(prefix="edgekd-teacher-") as early:
        # Exported first and kept for the end: a teacher torch.export cannot trace is refused before the
        # search and the training, not after them.
        log("export: teacher, its own .onnx file (copied)" if hasattr(teacher.module, "path") else
            "export: teacher fp32 (first, so that a teacher torch.export cannot trace stops the run now)")
        teacher_art = _export_teacher(config, teacher, data, Path(early))
        if config.distilled:
            from edgekd.distilled import load_distilled

            found = load_distilled(config.distilled, teacher, data)
            search_result, student = found.search, found.result
            log(f"distill: reusing the student trained in {config.distilled} ({student.selection()}, validation "
                f"accuracy {student.best_val_accuracy * 100:.2f}%)")
        else:
            search_result, student = _search_and_distill(config, teacher, data, profile, log, teacher_exported=True)
        return _finish(config, out, teacher, teacher_art, search_result, student, data, profile, log)


def _as_distilled(config: CompressConfig) -> CompressConfig:
    """``config`` with the recipe its ``distilled`` student was trained with, to load the data as it was
    split then (its test images unseen in training) and to export and record the student as it was trained."""
    from edgekd.distilled import trained_recipe
    from edgekd.export import DYNAMO_MIN_OPSET

    trained = trained_recipe(config.distilled)
    if trained.get("qat_epochs"):
        said = f"the student in '{config.distilled}' was trained quantization-aware"
        if config.opset < DYNAMO_MIN_OPSET:
            raise ConfigError(f"{said}, and its int8 file exports at opset {DYNAMO_MIN_OPSET} or later, not "
                              f"--opset {config.opset}", f"pass --opset {DYNAMO_MIN_OPSET}, or distill it again "
                              "without --qat-epochs (post-training int8 writes older opsets)")
        if config.calibration != _default("calibration"):
            raise ConfigError(f"--calibration does not apply: {said}, and its int8 file takes the scales it "
                              "learned", "drop --calibration")
    return dataclasses.replace(config, **trained)


def _with_distilled_budget(config: CompressConfig, log: Log) -> CompressConfig:
    """With no budget given, the one the distilled student was searched for: validated against none, it
    passed whatever it measured, and `gate` then found no budget to hold it to."""
    from edgekd.distilled import BUDGET_KEYS, recorded_budget

    if any(getattr(config, k) is not None for k in BUDGET_KEYS):
        return config
    recorded = recorded_budget(config.distilled)
    if recorded:
        said = ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in recorded.items())
        log(f"budget: {said}, as '{config.distilled}' was distilled for (pass budget flags to validate against others)")
    return dataclasses.replace(config, **recorded)


def _default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(CompressConfig) if f.name == name)


def _finish(config: CompressConfig, out: Path, teacher: Any, teacher_art: Any, search_result: Any, student: Any,
            data: Any, profile: Any, log: Log) -> CompressResult:
    """Export, validate and report into ``out``, which appears whole or not at all."""
    with atomic_dir(out, force=config.force) as staging:
        artifacts, references = _export(config, teacher, teacher_art, student.model, data, staging, log, profile)
        log(f"validate on '{profile.name}' (latency interleaved across {len(artifacts)} artifacts)")
        from edgekd.validate import validate, with_paths_relative

        report = validate(artifacts, profile, config.budget, data, references,
                          budgeted=[a.name for a in artifacts if a.role == "student"], rounds=config.latency_rounds)
        report = with_paths_relative(report, staging)
        orts = _ort_copies(report, staging, profile, data, config.latency_rounds, log) if config.ort else {}
        report = _with_ort_verdicts(report, orts)
        manifest = _manifest(config, report, profile, data, teacher, search_result, student)
        for entry in manifest["artifacts"]:
            if entry["artifact"]["name"] in orts:
                entry["ort"] = orts[entry["artifact"]["name"]].to_dict()
        write_json(staging / "manifest.json", manifest)
        write_json(staging / "search.json", search_record(search_result, profile, config.budget, data,
                                                           teacher.module))
        from edgekd.report import render_markdown
        from edgekd.report_html import render_html

        report_md = render_markdown(manifest)
        (staging / "report.md").write_text(report_md, encoding="utf-8")
        (staging / "report.html").write_text(render_html(manifest, search_result.to_dict()), encoding="utf-8")
    return CompressResult(out, manifest, report_md)


def _ort_copies(report: Any, staging: Path, profile: Any, data: Any, rounds: int, log: Log) -> dict[str, Any]:
    """Each student's ORT-format copy, checked against its .onnx on the test images and timed beside it on
    the profile (``edgekd.ort_format``)."""
    from edgekd.ort_format import loads_text, platform_for, to_ort, with_latency

    target = platform_for(profile)
    students = [r.artifact for r in report.reports if r.artifact.role == "student"]
    orts = {a.name: to_ort(staging / a.path, target, data.x_test, a.precision) for a in students}
    log(f"export: ORT format for onnxruntime mobile and reduced builds ({target}): "
        + ", ".join(f"{o.path} ({o.top1_agreement:.2%} top-1 agreement with its .onnx; {loads_text(o.format_version)})"
                    for o in orts.values()))
    orts = with_latency(orts, staging, profile, rounds)
    log(f"validate: ORT-format copies timed beside their .onnx on '{profile.name}' ({rounds} interleaved runs): "
        + ", ".join(f"{o.path} p50 {o.p50_ms:.3f} ms, {o.vs_onnx:.2f}x its .onnx's" for o in orts.values()))
    return orts


ORT_SLOWER_NOTED = 1.10  # an ORT copy this much slower than its .onnx is said, within the budget or not


def _with_ort_verdicts(report: Any, orts: dict[str, Any]) -> Any:
    """``report`` with an ``ort`` verdict on each student that has an ORT copy: a copy that computes other
    outputs than the file validated, or that misses the latency or size budget its .onnx is held to (the copy
    is what a mobile app ships), fails its artifact, and the run when that one ships. A copy much slower than
    its .onnx is said either way."""
    if not orts:
        return report
    budget_ms, max_kb = report.budget.latency_ms, report.budget.max_size_kb
    slow = {name for name, o in orts.items() if budget_ms is not None and o.p50_ms is not None
            and o.p50_ms > budget_ms}
    large = {name for name, o in orts.items() if max_kb is not None and o.size_bytes > max_kb * 1024}
    reports = tuple(dataclasses.replace(r, verdicts={**r.verdicts, "ort": orts[r.artifact.name].passed
                                                     and r.artifact.name not in slow | large})
                    if r.artifact.name in orts else r for r in report.reports)
    notes = [f"{orts[name].path} is {orts[name].size_bytes / 1024:.1f} KB, over the {max_kb:g} KB budget its .onnx "
             "is held to: an ORT-format file stores its weights as converted; ship the .onnx, or raise --max-size-kb"
             for name in sorted(large)]
    for name, o in orts.items():
        if not o.passed:
            notes.append(f"{o.path} does not compute what {name}.onnx does on the test images (top-1 agreement "
                         f"{o.top1_agreement:.2%}, largest difference {o.max_abs_diff:.3g}): ship the .onnx file")
        if o.vs_onnx is None or (name not in slow and o.vs_onnx < ORT_SLOWER_NOTED):
            continue
        why = (f"{o.path} takes {o.p50_ms:.3f} ms on '{report.profile}', over the {budget_ms:g} ms budget"
               if name in slow else f"{o.path} is slower than {name}.onnx on '{report.profile}'")
        notes.append(f"{why} ({o.vs_onnx:.2f}x its .onnx's p50, measured side by side): an ORT-format file keeps "
                     f"the optimisations of its conversion ({o.platform}), where onnxruntime gives the .onnx this "
                     "device's at load; ship the .onnx to a device with the full onnxruntime")
    # The ship decision was made on the .onnx verdicts: made again, an int8 student within budget ships where
    # the fp32 twin chosen before fails its ORT copy's checks.
    from edgekd.validate import ship_decision

    _, before = ship_decision(report.reports, report.int8_ratio, report.rounds, report.budget)
    primary, decided = ship_decision(reports, report.int8_ratio, report.rounds, report.budget)
    kept = [n for n in report.notes if n not in before]
    return dataclasses.replace(report, reports=reports, primary=primary, notes=(*decided, *kept, *notes))


def run_search(config: CompressConfig, out: str | Path, force: bool = False, log: Log | None = None) -> Any:
    """The search stage alone: rank candidates for ``config``'s teacher, data, profile and budget and
    write the result to ``out`` (a JSON file ``compress --search`` accepts)."""
    from edgekd.profiles import load_profile
    from edgekd.search import search

    log = log or (lambda _msg: None)
    check_new_file(out, force, "--out", input_paths(config))
    out = Path(out)
    profile = load_profile(config.profile)
    data = run_data(config, log)
    teacher = run_teacher(config, data, log)
    result = search(teacher.module, data, profile, config.budget, config.search_config(),
                    progress=config.progress, log=log)
    write_json(out, search_record(result, profile, config.budget, data, teacher.module))
    return result


def run_distill(config: CompressConfig, out: str | Path, resume: bool = False, log: Log | None = None) -> Any:
    """The distill stage alone: train the student of ``config.search_file`` (or of a fresh search) from
    the teacher and write ``out``/: student.pt (state dict), student-fp32.onnx, distill.json, search.json
    (for ``compress --distilled``), and checkpoint.pt after every epoch (``resume`` continues a killed run from it).
    With ``config.force`` an earlier run in ``out`` is replaced once this one has written its first checkpoint
    (or finished); until then a failure leaves it as it was.

    Under ``torchrun`` every process trains and rank 0 alone says what happens and writes ``out``: the others
    would replace its folder and files as it writes them."""
    from edgekd.distill.ddp import launched

    log = log or (lambda _msg: None)
    processes, rank = launched()
    if processes > 1 and not config.search_file and not (resume and (Path(out) / "search.json").is_file()):
        raise ConfigError(f"under torchrun each of the {processes} processes would search on its own, measuring "
                          "anew, and could choose another student", "run `edgekd search --out search.json` first, "
                          "and distill with --search search.json")
    if rank != 0:
        return _distill_into(config, Path(out), resume, lambda _msg: None, write=False)
    if resume:
        check_own_folder(out, "--out")
    else:
        check_new_output(out, True, input_paths(config))  # replaced below only with --force
    out = Path(out)
    if resume and not (out / "checkpoint.pt").is_file():
        raise OutputError(f"nothing to resume in '{out}' (no checkpoint.pt)", "run without --resume to start")
    earlier, created = None, not out.exists()
    if not resume and not created and any(out.iterdir()):
        if not config.force:
            raise OutputError(f"output folder '{out}' is not empty",
                              "choose another --out, pass --resume to continue its run, or --force to start over")
        earlier = set_aside(out, "--out")
        log(f"distill: the earlier run in {out} is kept as {earlier} until this one has its first checkpoint")
    try:
        trained = _distill_into(config, out, resume, log)
    except BaseException:
        # A run with a checkpoint to resume from keeps its folder (and --force has then replaced the earlier
        # run). One without (a mistake found after the search, Ctrl-C in the first epoch, any pruning run)
        # leaves --out as it found it: the earlier run put back, and nothing of its own that would stop a rerun.
        if not resume and not (out / "checkpoint.pt").is_file():
            if earlier is not None or created:
                remove_path(out)
            else:
                for name in ("search.json", ".final"):
                    remove_path(out / name)
            if earlier is not None:
                earlier.rename(settled(out))
                earlier = None
        raise
    finally:
        if earlier is not None:
            remove_path(earlier)
    return trained


def _distill_into(config: CompressConfig, out: Path, resume: bool, log: Log, write: bool = True) -> Any:
    import torch

    from edgekd.export import ExportRequest, get_exporter
    from edgekd.profiles import load_profile

    profile = load_profile(config.profile)
    data = run_data(config, log)
    teacher = run_teacher(config, data, log)
    result, trained = _search_and_distill(config, teacher, data, profile, log, checkpoint=out / "checkpoint.pt",
                                          resume=resume)
    if not write:
        return trained
    with atomic_dir(out / ".final", force=True) as staging:
        torch.save(trained.model.state_dict(), staging / "student.pt")
        if config.qat_epochs:
            art = get_exporter("onnx-int8-qat")(ExportRequest("student-int8", "student", staging, trained.model,
                                                              data.x_val[:1], calibration=data.x_train[:256],
                                                              opset=config.opset))
        else:
            art = get_exporter("onnx-fp32")(ExportRequest("student-fp32", "student", staging, trained.model,
                                                          data.x_val[:1], opset=config.opset))
        from edgekd.onnxfile import stamp_data_metadata

        stamp_data_metadata(art, data)
        # what `compress --distilled` reports from
        write_json(staging / "search.json", search_record(result, profile, config.budget, data, teacher.module))
        write_json(staging / "distill.json", {
            "student": result.chosen.spec.to_dict(), "pruned": config.target_ms is not None,
            "distill": trained.to_dict(), "recipe": recipe(config, config_fields()),
            "data": data.describe(), "teacher": {"source": teacher.source, "origin": teacher.origin}})
    for path in (out / ".final").iterdir():
        path.replace(out / path.name)
    (out / ".final").rmdir()
    return trained


def input_paths(config: CompressConfig) -> list[Any]:
    """The files and folders ``config`` reads, which no output may replace: the teacher's file (a .pt2, or
    the .py of a file.py:factory spec), its weights, the data, and a search or distill folder reused."""
    teacher = config.teacher if isinstance(config.teacher, str) else None
    return [teacher, teacher and teacher.split(":", 1)[0], config.weights, config.data, config.search_file,
            config.distilled]


def _search_and_distill(config: CompressConfig, teacher: Any, data: Any, profile: Any, log: Log,
                        checkpoint: Path | None = None, resume: bool = False,
                        teacher_exported: bool = False) -> tuple:
    import torch

    from edgekd.search import build_student, search

    search_file = config.search_file
    # A resumed run trains the student its search chose: searching again measures anew, and near a budget's
    # edge could choose another student, whose checkpoint would then be refused.
    earlier = checkpoint.parent / "search.json" if checkpoint is not None else None
    if resume and not search_file and earlier is not None and earlier.is_file():
        search_file = str(earlier)
    if search_file:
        from edgekd.search_file import load_search

        result = load_search(search_file, data, profile, config.budget_ms, teacher.module, log,
                             config.max_size_kb)
        log(f"search: reusing {search_file}")
    else:
        _check_teacher_before_search(config, teacher.module, torch.as_tensor(data.x_train[:2]))
        log(f"search: {config.candidates} '{config.space}' candidates ranked by '{config.proxy}'")
        result = search(teacher.module, data, profile, config.budget, config.search_config(),
                        progress=config.progress, log=log)
        if earlier is not None:
            write_json(earlier, search_record(result, profile, config.budget, data, teacher.module))
    chosen = result.chosen
    log(f"search: chose {chosen.spec.space} {chosen.spec.config} ({chosen.params:,} params, "
        f"{chosen.latency_ms:.3f} ms {result.precision} measured)")
    torch.manual_seed(config.seed)
    student = build_student(chosen.spec, data.input_shape, data.num_classes, teacher=teacher.module)
    # A pruned student runs the teacher's forward, so compress's export of the teacher has checked it already.
    if chosen.spec.space == "pruned" and not teacher_exported:
        _check_exports(config, student, data)
    trained = train_student(config, student, teacher.module, data, profile, log, checkpoint, resume)
    return result, trained


def _check_exports(config: CompressConfig, student: Any, data: Any) -> None:
    """A ``pruned`` student runs the teacher's own forward: one torch.export cannot trace is refused before
    it trains, not when its file is written after (``distill`` exports no teacher to find out first)."""
    import copy

    from edgekd.export import ExportRequest, get_exporter

    with tempfile.TemporaryDirectory(prefix="edgekd-check-") as tmp:
        get_exporter("onnx-fp32")(ExportRequest("student-fp32", "student", Path(tmp), copy.deepcopy(student),
                                                data.x_val[:1], opset=config.opset))


def _check_teacher_before_search(config: CompressConfig, teacher: Any, example: Any) -> None:
    """What distillation would refuse about the teacher, refused before a search of minutes: the layers the
    feature losses tap (the student's are known only once one is chosen), and, when every student is the
    teacher's own layers (``--space pruned``), layers QAT cannot mirror."""
    from edgekd.distill.teacher_side import teacher_taps, uses_features

    distill_config = config.distill_config()
    if uses_features(distill_config.losses):
        from edgekd.distill.taps import output_shapes

        teacher_taps(teacher, output_shapes(teacher, example)[1], distill_config.teacher_taps)
    if config.qat_epochs and config.search_config().spaces() == ["pruned"]:
        from edgekd.distill.qat_plan import plan_qat

        plan_qat(teacher, example)


def train_student(config: CompressConfig, student: Any, teacher: Any, data: Any, profile: Any, log: Log,
                  checkpoint: Path | None = None, resume: bool = False) -> Any:
    """The distill stage: KD with the configured losses (QAT in its last epochs), or pruning-aware KD
    toward ``config.target_ms``. Returns a DistillResult."""
    from edgekd.distill.trainer import batches_per_epoch, distill

    prune = config.prune_config()
    if prune is not None:
        from edgekd.distill.prune import prune_distill

        log(f"distill: pruning-aware KD toward {prune.target_ms:g} ms ({prune.precision}) on '{profile.name}'")
        if resume:
            raise ConfigError("--resume continues plain or quantization-aware KD, not pruning-aware KD",
                              "run the pruning again without --resume")
        pruned = prune_distill(student, data, config.distill_config(), prune, profile, teacher=teacher, log=log,
                               progress=config.progress)
        log(f"distill: pruned to {pruned.measured_ms:.3f} ms measured (target {prune.target_ms:g} ms)" if pruned.steps
            else f"distill: nothing pruned, the student was under the target already: {pruned.measured_ms:.3f} ms "
                 f"measured (target {prune.target_ms:g} ms), distilled for {config.epochs} epochs")
        if not pruned.reached:
            log(f"warning: pruning ended at {pruned.measured_ms:.3f} ms measured, over --target-ms "
                f"{prune.target_ms:g} by more than the 10% measurement noise allows: a lower --target-ms leaves "
                "room for the noise; `edgekd validate` measures the student again")
        record = {k: v for k, v in pruned.to_dict().items() if k != "history"}  # the history is the result's own
        trained = dataclasses.replace(pruned.last, model=pruned.model, history=pruned.history, pruning=record)
    else:
        log(f"distill: {config.epochs} epochs, losses {config.losses} (T={config.temperature}, alpha={config.alpha})"
            + (", training images shifted (--no-augment: in place)" if config.augment else "")
            + (f", the last {config.qat_epochs} quantization-aware" if config.qat_epochs else ""))
        trained = distill(student, data, config.distill_config(), teacher=teacher, progress=config.progress,
                          checkpoint=checkpoint, resume=resume, log=log)
        log(f"distill: {trained.kept_line()}")
    if trained.selected_on == "val_labels" and near_chance(trained.best_val_accuracy, data.num_classes):
        # Few images and few epochs leave a student untrained with no error anywhere; say why here, where
        # the fix is, rather than only as an accuracy drop in the final table.
        steps = config.epochs * batches_per_epoch(len(data.y_train), config.batch_size)
        epochs = f"{config.epochs} epoch{'s' * (config.epochs != 1)}"
        log(f"warning: the student is still near chance ({trained.best_val_accuracy * 100:.1f}% on validation, "
            f"chance {100 / data.num_classes:.1f}%) after about {steps} optimizer steps ({epochs} of "
            f"{len(data.y_train)} training images in batches of {config.batch_size}): train longer (--epochs), "
            "or with a smaller --batch-size or a higher --lr")
    return trained


def _export_teacher(config: CompressConfig, teacher: Any, data: Any, folder: Path) -> Any:
    from edgekd.export import ExportRequest, get_exporter

    source = getattr(teacher.module, "path", None)
    if source is not None:  # an ONNX teacher is its own export: copied as it is, with its external data
        return _copied_teacher(Path(source), folder)
    return get_exporter("onnx-fp32")(ExportRequest("teacher-fp32", "teacher", folder, teacher.module,
                                                   data.x_val[:1], opset=config.opset))


def _copied_teacher(source: Path, folder: Path) -> Any:
    from edgekd.validate import artifact_from_file

    placed = _copy_model(source, folder / "teacher-fp32.onnx")
    return dataclasses.replace(artifact_from_file(placed, "teacher-fp32", "teacher"), exporter="user onnx")


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


def _export(config: CompressConfig, teacher: Any, teacher_art: Any, student: Any, data: Any, staging: Path, log: Log,
            profile: Any) -> tuple:

    import numpy as np

    from edgekd.export import ExportRequest, get_exporter
    from edgekd.onnxfile import stamp_data_metadata

    fp32 = get_exporter("onnx-fp32")
    placed = _copy_model(Path(teacher_art.path), staging / Path(teacher_art.path).name)
    teacher_art = dataclasses.replace(teacher_art, path=str(placed))
    rng = np.random.default_rng(config.seed)
    calib = data.x_train[rng.permutation(len(data.x_train))[:config.calibration_samples]]
    if config.qat_epochs:
        from edgekd.distill.qat import export_copy

        log("export: student fp32 (QAT weights, no fake quantization), student int8 (QAT scales)")
        twin = export_copy(student, fake_quant=False)
        student_fp32 = fp32(ExportRequest("student-fp32", "student", staging, twin, data.x_val[:1],
                                          opset=config.opset))
        student_int8 = get_exporter("onnx-int8-qat")(ExportRequest("student-int8", "student", staging, student,
                                                                   data.x_val[:1], calibration=calib,
                                                                   opset=config.opset))
        references = {"teacher-fp32": teacher.module, "student-fp32": twin, "student-int8": student}
    else:
        from edgekd.int8_fallback import FallbackConfig, int8_with_fallback

        log("export: student fp32, student int8 (QDQ, calibrated on training images; nodes that "
            "run slower in int8 on the profile fall back to fp32)")
        student_fp32 = fp32(ExportRequest("student-fp32", "student", staging, student, data.x_val[:1],
                                          opset=config.opset))
        # Each round's file is stamped as it ships, so the size budget is held against the shipped size.
        fallback = int8_with_fallback(student_fp32.path, calib, profile, staging,
                                      FallbackConfig(calibration_method=config.calibration,
                                                     max_bytes=config.budget.max_bytes),
                                      stamp=lambda art: stamp_data_metadata(art, data))
        student_int8 = fallback.artifact
        log(f"export: {fallback.summary()}")
        for note in fallback.notes:
            log(f"export: {note}")
        references = {"teacher-fp32": teacher.module, "student-fp32": student, "student-int8": student}
    import torch

    torch.save(student.state_dict(), staging / "student.pt")
    return [stamp_data_metadata(a, data) for a in (teacher_art, student_fp32, student_int8)], references


def measured_on(profile: Any) -> dict[str, Any]:
    """The profile as a manifest records it; a local one with the CPU it measured on, since its latencies
    describe this machine and a CI runner or a colleague's laptop gating the manifest later may be another."""
    from edgekd.latency.table import host_cpu

    return {**profile.to_dict(), **({"host": host_cpu()} if profile.is_local else {})}


def _manifest(config: CompressConfig, report: Any, profile: Any, data: Any, teacher: Any, search_result: Any,
              student: Any) -> dict[str, Any]:
    from edgekd.report import build_manifest

    chosen = search_result.chosen
    return build_manifest(report, measured_on(profile), {
        "data": data.describe(),
        "teacher": {"source": teacher.source},
        "student": {"spec": chosen.spec.to_dict(), "params": chosen.params, "weights": "student.pt",
                    "search_latency_ms": chosen.latency_ms, "predicted_latency_ms": chosen.predicted_ms,
                    "latency_source": search_result.latency_source, "distill": student.to_dict()},
        "recipe": recipe(config, config_fields()),
    })
