"""The gate's configuration: thresholds from flags and pyproject.toml parsed into a GateConfig, with units
("512KB", "1.5MiB", "800us", "2ms"); a manifest gated with no thresholds at all is held to the budget it was
built for, on the profile it was measured on."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError, did_you_mean, require_number
from edgekd.manifest_io import is_number, load_manifest
from edgekd.preprocess import parse_shape
from edgekd.profiles import DeviceProfile

_SIZE_UNITS = {"b": 1, "kb": 1024, "kib": 1024, "mb": 1024 ** 2, "mib": 1024 ** 2}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
GATE_KEYS = {"max_size", "max_latency", "latency_tolerance", "rounds", "min_accuracy", "data", "resolution",
             "normalize", "channels", "seed", "profile", "allowed_ops", "max_opset", "baseline", "artifact",
             "input_shape", "max_size_growth", "max_accuracy_drop", "min_class_accuracy", "ops_config", "no_latency"}
THRESHOLD_KEYS = ("max_size", "max_latency", "baseline", "min_accuracy", "allowed_ops", "max_opset",
                  "max_size_growth", "max_accuracy_drop", "min_class_accuracy", "ops_config")
# THRESHOLD_KEYS as GateConfig's fields, which a manifest's defaults are applied to (sizes and times parsed)
THRESHOLD_FIELDS = ("max_size_bytes", "max_latency_ms", "baseline", "min_accuracy", "allowed_ops", "max_opset",
                    "max_size_growth", "max_accuracy_drop", "min_class_accuracy", "ops_config")
ACCURACY_KEYS = ("min_accuracy", "max_accuracy_drop", "min_class_accuracy")  # settings measured on --data
DEFAULT_PROFILE = "host-cpu-1t"


def parse_quantity(text: Any, units: dict[str, float], default: str, what: str) -> float:
    """'512KB' -> bytes, '2ms' -> ms; a bare number is in ``default`` units. Refuses negatives and unknown units."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not match:
        raise ConfigError(f"{what} '{text}' is not a non-negative number with an optional unit",
                          f"write e.g. 12.5{default} (units: {', '.join(units)})")
    value, unit = float(match.group(1)), (match.group(2) or default).lower()
    if unit not in units:
        raise ConfigError(f"{what} '{text}' has unknown unit '{match.group(2)}'", f"use one of: {', '.join(units)}")
    if not math.isfinite(value * units[unit]):  # 1e400 reads as infinity: no limit at all
        raise ConfigError(f"{what} '{text}' is too large to be a limit", f"write e.g. 12.5{default}, or leave the "
                          "limit out to check nothing")
    return value * units[unit]


@dataclass(frozen=True)
class GateConfig:
    max_size_bytes: float | None = None
    max_latency_ms: float | None = None
    latency_tolerance: float = 0.10
    rounds: int = 3
    min_accuracy: float | None = None
    data: str | None = None
    resolution: Any = None  # one side, "HEIGHTxWIDTH" or (height, width) (None: as stored)
    normalize: Any = None  # "dataset", "none", "MEAN/STD" or a recorded Preprocess (None: dataset)
    channels: Any = None  # 1 or 3 to convert --data to (None: as the model's metadata records, else as stored)
    # The split of --data whose test part is measured (None: a manifest's, the seed it was split with, else 0).
    seed: int | None = None
    # A name, .toml path or loaded profile (None: the one a manifest was measured on, else host-cpu-1t).
    profile: str | DeviceProfile | None = None
    allowed_ops: tuple[str, ...] | None = None
    max_opset: int | None = None
    baseline: str | None = None
    artifact: str | None = None
    input_shape: tuple[int, ...] | None = None  # concrete input shape for a model with dynamic dimensions
    max_size_growth: float | None = None  # a fraction the file may grow by over the baseline's
    max_accuracy_drop: float | None = None  # points below the baseline's accuracy, measured on the same data
    min_class_accuracy: float | None = None  # the floor every class's own accuracy must reach
    ops_config: str | None = None  # the operator config an app's reduced onnxruntime build was compiled with
    # No latency check at all, --baseline's regression included: for a runner that is not the device (a board's
    # manifest in CI) or one too noisy to time on, where size, opset and accuracy still hold.
    no_latency: bool = False
    # The profile is the manifest's, taken because none was given: an error reaching its device says so.
    profile_recorded: bool = False
    # Where thresholds or the profile came from when not from the user (printed with the result).
    notes: tuple[str, ...] = ()
    # The target whose defaults (a manifest's budget, recorded data, preprocessing, seed and profile) this config
    # holds, set by for_target: run_gate applies them to a config made without them, and only once.
    defaults_from: str | None = None

    def __post_init__(self) -> None:
        """The values' types and ranges, checked as soon as they are given; what they need of each other where a
        manifest may supply it (thresholds, data) waits for the target: ``for_target``."""
        self._check_paths()
        for name in ("no_latency", "profile_recorded"):
            if not isinstance(getattr(self, name), bool):  # "false" is truthy: the check it asks for was dropped
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}", "pass a boolean")
        from edgekd.preprocess import resolution_value

        object.__setattr__(self, "resolution", resolution_value(self.resolution))  # refused early
        # Types before the range checks: a string from Python ("0.9") failed them as a raw TypeError.
        require_number("latency_tolerance", self.latency_tolerance)
        require_number("rounds", self.rounds, whole=True)
        for name in ("min_accuracy", "min_class_accuracy", "max_size_bytes", "max_latency_ms", "max_opset",
                     "max_size_growth", "max_accuracy_drop"):
            if getattr(self, name) is not None:
                require_number(name, getattr(self, name), whole=name == "max_opset")
        if not 0 <= self.latency_tolerance < 1:
            raise ConfigError(f"latency tolerance {self.latency_tolerance} is outside [0, 1)", "pass e.g. 0.1")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {self.rounds}", "pass --rounds 3")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise ConfigError(f"min accuracy {self.min_accuracy} is outside [0, 1]", "pass a fraction, e.g. 0.97")
        if isinstance(self.normalize, str):
            from edgekd.data import parse_normalize

            parse_normalize(self.normalize)
        from edgekd.preprocess import parse_channels

        object.__setattr__(self, "channels", parse_channels(self.channels))
        if self.min_class_accuracy is not None and not 0 <= self.min_class_accuracy <= 1:
            raise ConfigError(f"min class accuracy {self.min_class_accuracy} is outside [0, 1]",
                              "pass a fraction, e.g. 0.8")
        self._check_baseline_thresholds()
        self._check_thresholds()
        if self.defaults_from is not None:  # a copy of a whole config (dataclasses.replace) is checked whole
            self._check_complete()

    @property
    def measures_latency(self) -> bool:
        """Whether any latency check runs: the limit, or the regression against a baseline."""
        return self.max_latency_ms is not None or (bool(self.baseline) and not self.no_latency)

    def _check_paths(self) -> None:
        """Paths may be given as Path objects; the data must be a path or name, because the gate loads it itself
        with the preprocessing the gated model records (a Dataset in memory carries its own, which may differ)."""
        import os

        for key in ("data", "baseline", "ops_config"):
            value = getattr(self, key)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, key, os.fspath(value))
            elif value is not None and not isinstance(value, str):
                hint = (" (the gate loads the data itself, with the preprocessing the model records)"
                        if key == "data" else "")
                raise ConfigError(f"GateConfig({key}=...) takes a path, not a {type(value).__name__}{hint}",
                                  f"pass the file or folder it was read from, e.g. {key}='path/to/file'"
                                  + (" or 'digits'" if key == "data" else ""))

    def _check_baseline_thresholds(self) -> None:
        if self.no_latency and self.max_latency_ms is not None:
            raise ConfigError("--no-latency skips every latency check, and --max-latency asks for one",
                              "drop --no-latency to check the latency limit, or drop --max-latency")
        if self.no_latency and self.baseline and self.max_size_growth is None and self.max_accuracy_drop is None:
            raise ConfigError("--baseline with --no-latency compares nothing (its latency regression is skipped)",
                              "pass --max-size-growth or --max-accuracy-drop to compare with the baseline, or drop "
                              "--baseline")
        if self.max_size_growth is not None and not self.baseline:
            raise ConfigError("--max-size-growth compares with a baseline, and none is given",
                              "pass --baseline last-release/manifest.json (or a .onnx file), or --max-size")
        if self.max_size_growth is not None and self.max_size_growth < 0:
            raise ConfigError(f"max size growth {self.max_size_growth:g} is below zero, so a model the size of its "
                              "baseline would fail", "pass a fraction, e.g. 0.05 (0 allows no growth)")

    def _check_complete(self) -> None:
        """What the settings need of each other once the target's defaults are in: a manifest supplies its budget
        as thresholds, the data its accuracies were measured on, and turns a drop below its teacher into a floor."""
        if not any(getattr(self, name) is not None for name in THRESHOLD_FIELDS):
            raise ConfigError("the gate has no thresholds",
                              "pass --max-size, --max-latency, --baseline, --min-accuracy, --allowed-ops, "
                              "--max-opset or --ops-config (GateConfig(max_size_bytes=..., ...) from Python), set "
                              "them in [tool.edgekd.gate] in pyproject.toml, or gate a manifest.json (held to its "
                              "own budget)")
        if self.min_accuracy is not None and not self.data:
            raise ConfigError("--min-accuracy needs data to measure accuracy on", "pass --data (or data = ...)")
        if self.min_class_accuracy is not None and not self.data:
            raise ConfigError("--min-class-accuracy needs data to measure accuracy on", "pass --data")
        if self.max_accuracy_drop is not None and not self.baseline:
            raise ConfigError("--max-accuracy-drop compares with a baseline (or a manifest's teacher), and neither "
                              "is given", "pass --baseline last-release/manifest.json, or gate the manifest.json")
        # here, not before: on a manifest without a baseline, the drop below its teacher is checked as that
        if self.max_accuracy_drop is not None and not 0 <= self.max_accuracy_drop <= 100:
            raise ConfigError(f"max accuracy drop {self.max_accuracy_drop:g} is outside [0, 100] points",
                              "pass percentage points, e.g. 0.5")
        if self.max_accuracy_drop is not None and not self.data:
            raise ConfigError("--max-accuracy-drop needs data to measure both models on", "pass --data")
        if self.input_shape is not None and not self.measures_latency:
            raise ConfigError("--input-shape applies only to latency checks", "pass --max-latency or --baseline "
                              "(without --no-latency), or drop --input-shape")

    def _check_thresholds(self) -> None:
        """Limits no model can meet are bad input (exit 2), not a failed check (exit 1)."""
        if self.max_size_bytes is not None and self.max_size_bytes <= 0:
            raise ConfigError(f"max size {self.max_size_bytes:g} bytes is not above zero, so every file would fail",
                              "pass a positive size, e.g. 512KB")
        if self.max_size_bytes is not None and self.max_size_bytes < 1:
            raise ConfigError(f"max size {self.max_size_bytes:g} bytes is under one byte, so every file would fail",
                              "pass a size a model can have, e.g. 512KB")
        if self.max_latency_ms is not None and self.max_latency_ms <= 0:
            raise ConfigError(f"max latency {self.max_latency_ms:g} ms is not above zero, so every model would fail",
                              "pass a positive time, e.g. 2ms")
        if self.max_opset is not None and self.max_opset < 1:
            raise ConfigError(f"max opset {self.max_opset} is not an opset (they start at 1)",
                              "pass the highest opset the target runtime supports, e.g. 17")
        if self.allowed_ops is not None and not self.allowed_ops:
            raise ConfigError("allowed ops lists no operator type, which every model would fail",
                              "pass comma-separated operator types, e.g. Conv,Relu,Gemm")


def build_config(values: dict[str, Any], target: str | None = None) -> GateConfig:
    """GateConfig from raw values (flags merged over the pyproject table), parsing units, with ``target``'s
    defaults (``for_target``) when it is given."""
    unknown = set(values) - GATE_KEYS
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(f"unknown gate setting '{name}'",
                          f"{did_you_mean(name, sorted(GATE_KEYS))}valid: {', '.join(sorted(GATE_KEYS))}")
    v = {k: val for k, val in values.items() if val is not None}
    size = v.pop("max_size", None)
    latency = v.pop("max_latency", None)
    ops = v.pop("allowed_ops", None)
    if ops is not None:
        ops = [o.strip() for o in (ops.split(",") if isinstance(ops, str) else ops) if o.strip()]
    shape = v.pop("input_shape", None)
    config = GateConfig(
        max_size_bytes=parse_quantity(size, _SIZE_UNITS, "kb", "max size") if size is not None else None,
        max_latency_ms=parse_quantity(latency, _TIME_UNITS, "ms", "max latency") if latency is not None else None,
        allowed_ops=tuple(ops) if ops is not None else None,
        input_shape=parse_shape(shape) if shape is not None else None,
        **v,
    )
    return config if target is None else for_target(config, target)


def for_target(config: GateConfig, target: str | os.PathLike[str]) -> GateConfig:
    """``config`` with ``target``'s defaults, checked whole: for a manifest (as ``edgekd gate manifest.json``), its
    own budget when no threshold is set at all (a manifest in CI is gated as it was built), and the data,
    preprocessing and seed its accuracies were measured with and the profile it was measured on where those are
    not given; else profile host-cpu-1t and seed 0. A config that holds them already is returned as it is."""
    target = os.fspath(target)
    if config.defaults_from == target:
        return config
    # the given values: what a field left at None means is decided here
    v = {f.name: getattr(config, f.name) for f in fields(config)
         if getattr(config, f.name) is not None and f.name not in ("notes", "defaults_from")}
    notes = list(config.notes)
    if _is_manifest(target):
        _manifest_defaults(Path(target), v, notes)
    v.setdefault("profile", DEFAULT_PROFILE)
    v.setdefault("seed", 0)
    return GateConfig(**v, notes=tuple(notes), defaults_from=target)


def _manifest_defaults(path: Path, v: dict[str, Any], notes: list[str]) -> None:
    """The manifest's budget, data, preprocessing, seed and profile, into the given values ``v`` (GateConfig's
    fields) where they leave them out, each said in ``notes``."""
    manifest = load_manifest(path)
    budget_latency = False
    if not any(k in v for k in THRESHOLD_FIELDS):
        v.update(_budget_thresholds(path, manifest, v, notes))
        budget_latency = "max_latency_ms" in v
        if v.get("no_latency"):
            _drop_budget_latency(path, manifest, v, notes)
            budget_latency = False
    else:
        notes.extend(_unchecked_budget(manifest, v))
    if "max_accuracy_drop" in v and "baseline" not in v:
        v["min_accuracy"] = _below_teacher(path, manifest, v.pop("max_accuracy_drop"), v, notes)
    if any(k in v for k in ACCURACY_KEYS) and "data" not in v:
        v.update(_recorded_data(path, manifest, v))
    if "profile" not in v:
        v["profile"] = _manifest_profile(path, manifest, v, notes)
        v["profile_recorded"] = True
    elif "max_latency_ms" in v:  # the budget's (budget_latency) or the user's
        _given_profile(path, manifest, v, budget_latency, notes)
    measured = any(k in v for k in ACCURACY_KEYS)
    if "normalize" not in v and measured:
        from edgekd.data import recorded_preprocess

        v["normalize"] = recorded_preprocess(manifest)  # the model expects what it was trained on
    if "seed" not in v and measured:
        from edgekd.data import recorded_data

        v["seed"] = recorded_data(manifest).seed  # the test split it was measured on


def _is_manifest(target: str) -> bool:
    return Path(target).suffix.lower() == ".json"


def _budget_thresholds(path: Path, manifest: dict[str, Any], values: dict[str, Any],
                       notes: list[str]) -> dict[str, Any]:
    """The manifest's recorded budget as gate settings; an accuracy drop becomes a floor under the
    teacher's recorded accuracy."""
    from edgekd.report import budget_text

    budget = manifest["budget"]
    out: dict[str, Any] = {}
    if budget.get("latency_ms") is not None:
        out["max_latency_ms"] = parse_quantity(f"{budget['latency_ms']!r}ms", _TIME_UNITS, "ms", "max latency")
    if budget.get("max_size_kb") is not None:
        out["max_size_bytes"] = parse_quantity(f"{budget['max_size_kb']!r}KB", _SIZE_UNITS, "kb", "max size")
    floors = [budget["min_accuracy"]] if budget.get("min_accuracy") is not None else []
    if budget.get("max_accuracy_drop") is not None:
        floors.append(_teacher_accuracy(path, manifest) - budget["max_accuracy_drop"] / 100)
    if floors:
        out["min_accuracy"] = max(0.0, max(floors))
        if "data" not in values:
            out.update(_recorded_data(path, manifest, values))
    if not out:
        raise ConfigError(f"manifest '{path}' records no budget to gate against",
                          "pass --max-size, --max-latency or --min-accuracy")
    floor = f" (accuracy floor {out['min_accuracy'] * 100:.2f}%)" if "min_accuracy" in out else ""
    notes.append(f"thresholds: the manifest's budget, {budget_text(budget)}{floor}")
    return out


def _drop_budget_latency(path: Path, manifest: dict[str, Any], values: dict[str, Any], notes: list[str]) -> None:
    """``--no-latency`` on a manifest held to its budget: the budget's latency limit is left out, and said so;
    a budget with nothing else to check is bad input, not a gate that passes having checked nothing."""
    if values.pop("max_latency_ms", None) is None:
        return
    notes.append(f"not checked: the manifest's latency limit, {manifest['budget']['latency_ms']:g} ms on "
                 f"{manifest['profile']['name']} (--no-latency)")
    if not any(k in values for k in THRESHOLD_FIELDS):
        raise ConfigError(f"manifest '{path}' records only a latency budget, and --no-latency skips it",
                          "pass --max-size, --min-accuracy or --max-opset to gate without latency")


def _recorded_teacher_accuracy(manifest: dict[str, Any]) -> float | None:
    teacher = next((a for a in manifest["artifacts"] if a["artifact"]["role"] == "teacher"), None)
    return None if teacher is None or teacher.get("accuracy") is None else float(teacher["accuracy"])


def _teacher_accuracy(path: Path, manifest: dict[str, Any]) -> float:
    accuracy = _recorded_teacher_accuracy(manifest)
    if accuracy is None:
        raise ConfigError(f"manifest '{path}' bounds the accuracy drop below the teacher but records no "
                          "teacher accuracy", "pass --min-accuracy and --data, or --baseline to compare with")
    return accuracy


def _below_teacher(path: Path, manifest: dict[str, Any], drop: Any, values: dict[str, Any],
                   notes: list[str]) -> Any:
    """``--max-accuracy-drop`` with no baseline, on a manifest: as its budget's own drop, a floor under the
    teacher's recorded accuracy (and under ``--min-accuracy``'s, when both are given)."""
    if not isinstance(drop, (int, float)) or not 0 <= drop <= 100:
        raise ConfigError(f"max accuracy drop {drop!r} is not a number of points in [0, 100]", "pass e.g. 0.5")
    teacher = _teacher_accuracy(path, manifest)
    below = max(0.0, teacher - drop / 100)
    said = (f"at most {drop:g} points below the teacher's recorded {teacher * 100:.2f}% (no --baseline to compare "
            "with)")
    given = values.get("min_accuracy")
    if given is not None and not is_number(given):
        return given  # GateConfig refuses it, naming the setting, as without --max-accuracy-drop
    if given is not None and given > below:  # the note credited the drop with --min-accuracy's higher floor
        notes.append(f"accuracy floor {given * 100:.2f}%, from --min-accuracy: above the {below * 100:.2f}% of "
                     f"--max-accuracy-drop, {said}")
        return float(given)
    notes.append(f"accuracy floor {below * 100:.2f}%: {said}"
                 + (f", above --min-accuracy's {given * 100:.2f}%" if given is not None else ""))
    return below


def _recorded_data(path: Path, manifest: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The data (and resolution) the manifest's accuracies were measured on, for an accuracy check given
    no ``--data``."""
    from edgekd.data import recorded_data

    if "recipe" not in manifest:
        raise ConfigError(f"manifest '{path}' bounds accuracy but does not record its data",
                          "pass --data (and --resolution if the images were resized)")
    data = recorded_data(manifest)
    if data.source is None:
        raise ConfigError(f"manifest '{path}' bounds accuracy on data '{data.named}', which {data.missing}",
                          "pass --data with the same test data")
    out: dict[str, Any] = {"data": data.source}
    if data.resolution is not None and "resolution" not in values:
        out["resolution"] = data.resolution
    return out


def _unchecked_budget(manifest: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """A note naming the parts of the manifest's budget that the given thresholds leave unchecked: any
    threshold replaces the whole budget, which a CI job adding only --baseline would not expect. A budget's
    drop below the teacher is checked only by --max-accuracy-drop without a baseline (with one, the drop is
    from the baseline); its accuracy floor only by --min-accuracy."""
    from edgekd.report import budget_text

    if _gates_teacher(manifest, values.get("artifact")):
        return []  # the budget is the students': its flags said of the teacher read as a limit it was built to
    budget = manifest["budget"]
    skipped = bool(values.get("no_latency")) and budget.get("latency_ms") is not None
    # A floor given at or above the budget's (as the note below advises it, to 4 figures) checks it too.
    given = values.get("min_accuracy")
    teacher = _recorded_teacher_accuracy(manifest) if budget.get("max_accuracy_drop") is not None else None
    drop_floor = teacher - budget["max_accuracy_drop"] / 100 if teacher is not None else None
    covered = {"latency_ms": "max_latency_ms" in values or skipped, "max_size_kb": "max_size_bytes" in values,
               "min_accuracy": _at_or_above(given, budget.get("min_accuracy")),
               "max_accuracy_drop": ("max_accuracy_drop" in values and "baseline" not in values)
               or _at_or_above(given, drop_floor)}
    left = {k: val for k, val in budget.items() if val is not None and k in covered and not covered[k]}
    said = ([f"not checked: the manifest's latency limit, {budget['latency_ms']:g} ms (--no-latency)"] if skipped
            else [])
    if not left:
        return said
    flags = [f"--max-latency {left['latency_ms']:g}ms"] if "latency_ms" in left else []
    flags += [f"--max-size {left['max_size_kb']:g}KB"] if "max_size_kb" in left else []
    floors = [left["min_accuracy"]] if "min_accuracy" in left else []
    if "max_accuracy_drop" in left and drop_floor is not None:
        floors.append(drop_floor)
    # the manifest's recorded data is measured on when no --data is given
    data = "" if "data" in values or _records_data(manifest) else " with --data"
    if floors:
        flags.append(f"--min-accuracy {max(0.0, max(floors)):.4g}{data}")
    elif "max_accuracy_drop" in left:
        flags.append(f"--min-accuracy{data}")
    return [*said, f"not checked: the manifest's own {budget_text(left)} (given thresholds replace its budget); "
                   f"add {' '.join(flags)} to check it too"]


def _gates_teacher(manifest: dict[str, Any], artifact: Any) -> bool:
    """Whether ``--artifact`` picks the manifest's teacher, which its budget does not bound (unless it ships)."""
    return artifact is not None and any(a["artifact"]["name"] == artifact and a["artifact"]["role"] == "teacher"
                                        and not a["primary"] for a in manifest["artifacts"])


def _at_or_above(given: Any, floor: float | None) -> bool:
    """Whether a --min-accuracy ``given`` checks ``floor``: at or above it as the notes print it (4 figures)."""
    return given is not None and floor is not None and given >= float(f"{max(0.0, floor):.4g}")


def _records_data(manifest: dict[str, Any]) -> bool:
    """Whether the manifest's recorded data is here, for an accuracy check given no --data (``_recorded_data``)."""
    from edgekd.data import recorded_data

    return "recipe" in manifest and recorded_data(manifest).source is not None


def _manifest_profile(path: Path, manifest: dict[str, Any], values: dict[str, Any],
                      notes: list[str]) -> str | DeviceProfile:
    """The profile the manifest was measured on (its file, or its name here), checked only when a
    threshold needs it; its settings may have changed since, which is said, not refused (thresholds are
    absolute, unlike ``validate --manifest``'s comparison with the recorded latency)."""
    from edgekd.errors import ProfileError
    from edgekd.profiles import RECORDED, load_recorded_profile, rebuilt_why

    recorded = manifest["profile"]
    timed = "max_latency_ms" in values or ("baseline" in values and not values.get("no_latency"))
    if not timed and not any(k in values for k in ACCURACY_KEYS):
        return recorded["name"]
    try:
        profile = load_recorded_profile(recorded)
    except ProfileError:
        raise ConfigError(f"manifest '{path}' was measured on profile '{recorded['name']}', which is not found here",
                          "pass --profile with that profile's name or .toml file") from None
    changed = profile.digest() != recorded.get("digest")
    notes.append(f"profile: {profile.name}, the one the manifest was measured on" + (
        " (its settings differ here from the recorded ones)" if changed else "") + (
        rebuilt_why(recorded) if profile.source == RECORDED else ""))
    # an absolute latency limit then holds on another machine
    if timed and (here := _other_host(recorded, profile)):
        notes.append(f"latency measured on this machine, {here}; the manifest's was measured on {recorded['host']}")
    return profile if profile.source == RECORDED else profile.source


def _given_profile(path: Path, manifest: dict[str, Any], values: dict[str, Any], budget_latency: bool,
                   notes: list[str]) -> None:
    """A profile given (flag or pyproject) for a manifest's absolute latency limit. The budget's limit was set
    for the device the manifest was measured on: held on another (a Pi's 0.5 ms on a CI runner's x86) it would
    pass or fail on the wrong machine, so it is refused; a limit the user gave is theirs for this device, and
    the note says the device changed. The same profile by name whose settings changed since is noted, as when
    no profile is given."""
    from edgekd.profiles import load_profile
    from edgekd.report import budget_text

    recorded = manifest["profile"]
    profile = load_profile(values["profile"])
    digest = recorded.get("digest")
    if profile.name == recorded["name"]:
        if digest and profile.digest() != digest:
            notes.append(f"profile: {profile.name}, as the manifest's, but its settings differ here from the "
                         "recorded ones")
        return
    if digest and profile.digest() == digest:  # another name for the same settings measures the same way
        return
    differs = (f", which measures differently (settings digest {profile.digest()}, recorded {digest})" if digest
               else "")
    if budget_latency:
        limit = budget_text({"latency_ms": manifest["budget"]["latency_ms"]})
        raise ConfigError(f"manifest '{path}' was measured on profile '{recorded['name']}', and its budget's {limit} "
                          f"is that device's; the gate was given profile '{profile.name}'{differs}",
                          f"pass --max-latency with a limit for {profile.name}, or --baseline for a relative check "
                          f"(both models measured side by side on {profile.name}), or give no profile (--profile or "
                          f"[tool.edgekd.gate] profile) to measure on {recorded['name']}")
    notes.append(f"profile: the manifest was measured on {recorded['name']}; the latency here on {profile.name}"
                 f"{differs}, against the limit given")


def _other_host(recorded: dict[str, Any], profile: Any) -> str | None:
    """This machine's CPU, when a local profile's recorded latencies were measured on another one; else None."""
    if not profile.is_local or not recorded.get("host"):
        return None
    from edgekd.latency.table import host_cpu

    here = host_cpu()
    return here if here != recorded["host"] else None
