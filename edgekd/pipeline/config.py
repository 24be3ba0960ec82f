"""CompressConfig: everything ``edgekd compress`` takes; a recipe TOML (read by ``recipe``) holds the same keys."""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from dataclasses import dataclass, field
from typing import Any

from edgekd.errors import ConfigError, kind_of, require_number
from edgekd.run_inputs import check_inputs
from edgekd.types import Budget, DistillConfig


@dataclass(frozen=True)
class CompressConfig:
    """Everything ``edgekd compress`` takes; a recipe TOML holds the same keys."""

    out: str = "edgekd-out"
    teacher: Any = None  # a spec or .pt2 path, a torch.nn.Module (Python API), or None: the embedded default
    weights: str | None = None
    data: Any = None  # a path, 'digits', a Dataset (Python API), or None: the embedded digits
    resolution: Any = None  # one side, "HEIGHTxWIDTH" or (height, width); kept as a side or (height, width)
    # "dataset" (the data's own mean and std), "none", or "MEAN/STD" (comma-separated per channel): as the teacher
    # was trained. None: not given, which is "dataset", or with ``distilled`` the one its student was trained with
    normalize: str | None = None
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
    epochs: int = DistillConfig.epochs  # the training defaults are DistillConfig's, one source for both
    lr: float = DistillConfig.lr
    batch_size: int = DistillConfig.batch_size
    temperature: float = DistillConfig.temperature
    alpha: float = DistillConfig.alpha
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
    # ONNX opset of the shipped files; down to 13 for older runtimes (not with QAT). None: not given, so the one
    # a search file, distilled folder or resumed run records (they sized their students' files at it), else 18.
    opset: int | None = None
    latency_rounds: int = 3  # interleaved validation runs; the int8-vs-fp32 decision is their median
    ort: bool = False  # also write each student in ORT format (onnxruntime mobile and reduced builds)
    search_file: str | None = None  # reuse a search.json from `edgekd search` instead of searching again
    distilled: str | None = None  # export and validate the student `edgekd distill --out` trained in this folder
    seed: int = 0
    force: bool = False
    progress: bool = True
    budget: Budget = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from edgekd.run_inputs import comma_list, teacher_setting

        for name, value in zip(("teacher", "weights"), teacher_setting(self.teacher, self.weights)):
            object.__setattr__(self, name, value)
        for name in _PATH_FIELDS:  # a pathlib.Path, as load_data and load_profile take, kept as its string
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        for name in ("space", "hint_student", "hint_teacher"):
            object.__setattr__(self, name, comma_list(name, getattr(self, name)))
        object.__setattr__(self, "budget", Budget(self.budget_ms, self.max_size_kb, self.min_accuracy,
                                                 self.max_accuracy_drop))
        if self.calibration not in ("minmax", "entropy", "percentile"):
            raise ConfigError(f"unknown calibration method '{self.calibration}'",
                              "choose one of: minmax, entropy, percentile")
        from edgekd.export import check_calibration_method

        check_calibration_method(self.calibration)
        from edgekd.data import check_seed

        check_seed(self.seed)
        # Checked here, not where they are used: after the search and training a float here was a traceback.
        for name in ("calibration_samples", "latency_rounds", "opset"):
            value = getattr(self, name)
            if value is None and name == "opset":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{name} must be a whole number, got {value!r}", f"pass {name} as an integer")
            object.__setattr__(self, name, int(value))
        if self.calibration_samples < 1:
            raise ConfigError("calibration_samples must be at least 1", "pass a positive number")
        if self.latency_rounds < 1:
            raise ConfigError(f"--latency-rounds must be at least 1, got {self.latency_rounds}",
                              "pass --latency-rounds 3 (latency_rounds=3 in Python)")
        if self.latency_anchors is not None:  # a string reached the comparison below as a raw TypeError
            require_number("latency_anchors", self.latency_anchors, whole=True)
        if self.latency_anchors is not None and self.latency_anchors < 3:
            raise ConfigError(f"--latency-anchors must be at least 3, got {self.latency_anchors}",
                              "pass 32 (the default; latency_anchors=32 in Python), or fewer down to 3 for a quicker, "
                              "rougher latency fit")
        from edgekd.preprocess import parse_channels

        object.__setattr__(self, "channels", parse_channels(self.channels))  # the CLI gives "3", a recipe 3
        from edgekd.preprocess import parse_resolution, resolution_value

        hw = parse_resolution(self.resolution)  # refuses sides outside 4-4096
        # One recorded form: a side for a square size, (height, width) otherwise (the recipe keeps a list).
        object.__setattr__(self, "resolution", resolution_value(hw))
        from edgekd.data import parse_normalize

        parse_normalize(self.normalize)
        if isinstance(self.losses, str) and not self.losses.replace(",", "").strip():
            # read as no losses, distillation fell back to kd without a word
            raise ConfigError("--losses is empty (or a recipe's losses = {})",
                              "name the losses with weights, e.g. kd:1,dkd:0.5, or leave --losses out for kd")
        check_inputs(self)
        # Before the training options: --epochs 1 --qat-epochs 1 --target-ms was refused for its epoch counts, and
        # fixing those only led to this refusal.
        if self.target_ms is not None and self.qat_epochs:
            raise ConfigError("--target-ms and --qat-epochs cannot be combined yet",
                              "choose pruning toward a latency target or quantization-aware training")
        self.distill_config()  # validates the training options early
        self.search_config()
        self.prune_config()
        if self.distilled and self.search_file:
            raise ConfigError("--distilled and --search cannot be combined: the distilled folder holds the search "
                              "its student came from", "drop --search")
        from edgekd.export import DYNAMO_MIN_OPSET, check_opset

        check_opset(self.export_opset)
        if self.qat_epochs and self.export_opset < DYNAMO_MIN_OPSET:
            raise ConfigError(f"--qat-epochs exports at opset {DYNAMO_MIN_OPSET} or later, not --opset {self.opset}",
                              f"pass --opset {DYNAMO_MIN_OPSET}, or drop --qat-epochs (post-training int8 writes "
                              "older opsets)")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        idle = [f"--{name.replace('_', '-')}" for name in ("prune_steps", "prune_importance", "prune_round_to")
                if getattr(self, name) != defaults[name]]
        if self.target_ms is None and idle:
            # Without a target nothing is pruned: a setting that would be ignored is refused rather than dropped.
            raise ConfigError(f"{', '.join(idle)} only {'applies' if len(idle) == 1 else 'apply'} to pruning, and "
                              "nothing is pruned without --target-ms",
                              "pass --target-ms MS to prune toward a latency, or leave the pruning settings out")
        self._refuse_idle_settings(defaults)
        _check_recordable(self)

    def _refuse_idle_settings(self, defaults: dict[str, Any]) -> None:
        """Settings a user changed that this run would ignore are refused, as the pruning ones are above."""
        from edgekd.distill.teacher_side import uses_features

        if (_paths(self.hint_student) or _paths(self.hint_teacher)) and not uses_features(
                self.distill_config().losses):
            raise ConfigError(f"--hint-student and --hint-teacher pick the layers of the feature losses (hint, at, "
                              f"rkd), and --losses {self.losses} has none",
                              "add one to --losses, e.g. kd:1,hint:1, or leave the hint layers out")
        self._refuse_unread_kd_settings(defaults)
        idle = [f"--{name.replace('_', '-')}" for name in ("qat_lr", "qat_full_range")
                if getattr(self, name) != defaults[name]]
        if not self.qat_epochs and idle:
            raise ConfigError(f"{', '.join(idle)} only {'applies' if len(idle) == 1 else 'apply'} to "
                              "quantization-aware training, and none runs without --qat-epochs",
                              "pass --qat-epochs N to train the last N epochs quantization-aware, or leave "
                              f"{', '.join(idle)} out")
        if self.qat_epochs and self.precision == "fp32":
            # the last epochs trained under int8 fake quantization for a file that does not ship, and the report
            # read as if the fp32 student had been tuned for int8
            raise ConfigError("--qat-epochs tunes the int8 file (quantization-aware training), and --precision fp32 "
                              "ships the fp32 one",
                              "drop --qat-epochs, or ship int8 with --precision int8 (the default)")
        if self.qat_epochs and self.calibration != defaults["calibration"]:
            raise ConfigError(f"--calibration {self.calibration} does not apply with --qat-epochs: the int8 file "
                              "takes the scales quantization-aware training learned",
                              "drop --calibration, or drop --qat-epochs to calibrate a post-training int8 file")

    def _refuse_unread_kd_settings(self, defaults: dict[str, Any]) -> None:
        """--temperature and --alpha where the losses never read them: the run trained the same student as
        without them, while its log and distill.json said they applied."""
        from edgekd.distill.losses import reads, softening

        terms = self.distill_config().losses
        read, names = reads(terms, self.labels), ",".join(name for name, _ in terms)
        if not read["temperature"] and self.temperature != defaults["temperature"]:
            raise ConfigError(f"--temperature softens the logits of the {', '.join(softening())} losses, and "
                              f"--losses {names} has none of them",
                              "add one to --losses, e.g. kd:1, or leave --temperature out")
        if not read["alpha"] and self.alpha != defaults["alpha"]:
            why = ("--no-labels leaves no label loss to weigh them against" if not self.labels
                   else f"--losses {names} has no teacher loss")
            raise ConfigError(f"--alpha weighs the teacher's losses against the labels' cross-entropy, and {why}",
                              "leave --alpha out" + ("" if not self.labels else ", or add a teacher loss to --losses, "
                                                     "e.g. kd:1"))
        from edgekd.distill.targets import check_classifier_taught

        # before the data and the teacher load, as distill itself refuses it only once training is set up
        check_classifier_taught(terms, self.labels, self.alpha)

    @property
    def export_opset(self) -> int:
        """The opset the run writes its files at: ``opset``, else 18."""
        from edgekd.export import DEFAULT_OPSET

        return DEFAULT_OPSET if self.opset is None else self.opset

    def setting(self, name: str) -> Any:
        """The value of the field ``name`` the run goes by, as records keep it: an opset not given is 18."""
        return self.export_opset if name == "opset" else getattr(self, name)

    def search_config(self) -> Any:
        from edgekd.search import SearchConfig

        return SearchConfig(space=self.space, proxy=self.proxy, candidates=self.candidates,
                            precision=self.precision, seed=self.seed, labels=self.labels, opset=self.export_opset,
                            ort=self.ort,
                            **({} if self.latency_anchors is None else {"anchors": self.latency_anchors}))

    def distill_config(self) -> DistillConfig:
        return DistillConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
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


# The fields that name a file or folder (or, for teacher and data, may): given as a path object, taken as its string.
_PATH_FIELDS = ("out", "teacher", "weights", "data", "search_file", "distilled", "profile")


def _check_recordable(config: CompressConfig) -> None:
    """Every setting the manifest and distill.json record is one JSON can hold: found at their writing, a
    value of another kind lost the whole run's work."""
    from edgekd.run_inputs import recipe

    for name, value in recipe(config, config_fields()).items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            fix = (f"pass {name}={value.item()!r}, a Python value" if hasattr(value, "item") else
                   f"pass {name} as a string, a number or a boolean, as `edgekd compress` takes it")
            raise ConfigError(f"{name} is {kind_of(value)}, which a run's records cannot hold", fix) from None


def _paths(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def config_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(CompressConfig) if f.init]


def without_unread(values: dict[str, Any]) -> dict[str, Any]:
    """Recipe ``values`` with a temperature or alpha its losses never read set to its default: a distill.json
    written before those were refused records them, and taken as given they would now refuse the folder they
    trained. Dropped instead, the invocation's value (a recipe's temperature) survived a --distilled run, whose
    training settings come from its distill.json only, and was refused as a --temperature nobody typed."""
    from edgekd.distill.losses import reads
    from edgekd.types import parse_losses

    try:
        read = reads(parse_losses(values.get("losses") or "kd"), bool(values.get("labels", True)))
    except (ConfigError, ValueError, TypeError, AttributeError):
        return values  # refused with its reason where CompressConfig reads it
    return {**values, **{k: field_default(k) for k, is_read in read.items() if not is_read}}


def field_default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(CompressConfig) if f.name == name)


def input_paths(config: CompressConfig) -> list[Any]:
    """The files and folders ``config`` reads, which no output may replace: the teacher's file (a .pt2, an
    .onnx, the .py of a file.py:factory spec, or the package folder or module file of package.module:factory),
    its weights, the data, the profile's file, and a search or distill folder reused; for a CSV list of images,
    the folders holding the images it lists."""
    from edgekd.image_list import listed_folders
    from edgekd.profiles import profile_file
    from edgekd.teacher_spec import spec_sources

    teacher = spec_sources(config.teacher) if isinstance(config.teacher, str) and config.teacher else []
    return [*teacher, config.weights, config.data, *listed_folders(config.data), config.search_file,
            config.distilled, profile_file(config.profile)]


def with_search_budget(config: CompressConfig, log: Any) -> CompressConfig:
    """With no budget given, the one the ``search_file`` was searched for: its student was chosen to meet it,
    and a manifest validated against none records no budget for `gate` to hold it to."""
    from edgekd.search_file import recorded_budget, with_search_settings

    config = with_search_settings(config, log)  # the precision it searched for ships, and pruning measures it
    return with_recorded_budget(config, log, recorded_budget, config.search_file, "was searched for")


def budget_flags(budget: dict[str, Any]) -> str:
    """A budget (CompressConfig keys, None: unset) as the flags that give it: "--budget-ms 50, --max-size-kb 128";
    "" for none."""
    return ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in budget.items() if v is not None)


def with_recorded_budget(config: CompressConfig, log: Any, read: Any, source: str, how: str) -> CompressConfig:
    """``config`` with the budget ``read(source)`` records when it gives none, said to ``log``."""
    from edgekd.distilled import BUDGET_KEYS

    if any(getattr(config, k) is not None for k in BUDGET_KEYS):
        return config
    recorded = read(source)
    if recorded:
        log(f"budget: {budget_flags(recorded)}, as '{source}' {how} (pass budget flags to validate against others)")
    return dataclasses.replace(config, **recorded)
