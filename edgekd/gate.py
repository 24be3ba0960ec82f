"""CI gate: check an artifact (or a manifest's primary artifact) against size, latency, accuracy
and operator thresholds; noise-aware latency; JUnit XML and a markdown summary.

Thresholds come from flags or a ``[tool.edgekd.gate]`` table in pyproject.toml (flags win). Sizes
and latencies may carry units ("512KB", "1.5MiB", "800us", "2ms"). A manifest gated with no thresholds at
all is held to the budget it was built for, on the profile it was measured on.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd import gate_accuracy, gate_ort
from edgekd.errors import ArtifactError, ConfigError, RunnerError
from edgekd.fsutil import sha256
from edgekd.gate_config import (  # noqa: F401  (this module's API, as before the split)
    ACCURACY_KEYS,
    DEFAULT_PROFILE,
    GATE_KEYS,
    THRESHOLD_KEYS,
    GateConfig,
    _is_manifest,
    _other_host,
    build_config,
    for_target,
    parse_quantity,
)
from edgekd.gate_result import Check, GateResult  # noqa: F401  (this module's API, as before the split)
from edgekd.gate_settings import pyproject_settings  # noqa: F401  (this module's API)
from edgekd.manifest_io import inside, load_manifest
from edgekd.onnxfile import LFS_HOW, lfs_pointer
from edgekd.textfmt import decimals, figures, sizes


class GateIncomplete(RunnerError):
    """The latency checks could not be measured (the device not reached, or its runner failed). ``result`` holds
    the checks finished before, with the latency checks errored, so the CI reports (JUnit, summary) still say what
    was checked; the command exits 2."""

    def __init__(self, problem: str, fix: str | None, result: GateResult) -> None:
        super().__init__(problem, fix)
        self.result = result


def run_gate(target: str, config: GateConfig, log: Callable[[str], None] | None = None) -> GateResult:
    """Run every configured check on ``target`` (an .onnx file or a manifest.json). A manifest is gated as
    ``edgekd gate manifest.json`` gates it: held to its own budget when ``config`` sets no threshold, with the data,
    preprocessing, seed and profile it records where ``config`` leaves them out (``for_target``). Latency that cannot
    be measured (the device not reached, its runner failing) raises GateIncomplete, a RunnerError whose ``result``
    holds the checks done. ``log``: how far a long read of ``config.data``'s images is (never the result)."""
    from edgekd.api_args import require_config
    from edgekd.profiles import load_profile
    from edgekd.validate import artifact_from_file

    require_config("config", config, GateConfig, "max_size_bytes=200_000")
    model, entry = _resolve(target, config.artifact)
    config = for_target(config, target)  # the CLI's config has them already: one way to them for both
    if entry is not None:
        _check_listed(Path(target), model, entry)
    else:
        _refuse_ort_copy(model)
    try:
        art = artifact_from_file(model)  # missing, truncated or non-ONNX -> ArtifactError
    except ArtifactError as exc:
        if entry is None or sha256(model) == entry["artifact"]["sha256"]:
            raise
        return _unreadable(target, model, entry, exc, list(config.notes))
    checks: list[Check] = []
    notes = list(config.notes)
    if config.no_latency and config.baseline:
        notes.append("not checked: the latency regression against the baseline (--no-latency)")
    elif config.no_latency and not any("(--no-latency)" in note for note in notes):
        notes.append("not checked: latency (--no-latency)")
    # the baseline is checked before anything is compared with it: a file not the one its manifest records is refused
    base = _baseline_file(config.baseline, config.artifact, model if entry is None else None, art.sha256,
                          notes) if config.baseline else None
    copy = gate_ort.ort_copy(model.parent, entry)
    if entry is not None:
        same = entry["artifact"]["sha256"] == art.sha256
        checks.append(Check("integrity", same, "file matches its manifest entry" if same else f"{model.name} "
                            f"changed since the manifest was written (sha256 differs): {gate_ort.RESTORE}"))
        checks += gate_ort.ort_integrity(model.parent, entry, notes)
    if config.max_size_bytes is not None:
        ok = art.size_bytes <= config.max_size_bytes
        size, limit = sizes(art.size_bytes, config.max_size_bytes, ok)
        checks.append(Check("size", ok, f"{size} on disk{art.size_note}, limit {limit}"
                            f"{gate_ort.only_onnx(copy, entry)}", art.size_bytes))
        checks += gate_ort.ort_size_check(copy, config)
    if config.max_size_growth is not None:
        checks.append(_size_growth_check(art.size_bytes, base, config.max_size_growth))  # type: ignore[arg-type]
        checks += gate_ort.ort_size_growth_check(copy, base, config.max_size_growth, notes)  # type: ignore[arg-type]
    checks += _op_checks(model, art.opset, config)
    checks += gate_ort.reduced_build_check(model.parent, entry, config)
    compared = (_baseline_model(config.baseline, base, "accuracy") if config.max_accuracy_drop is not None
                else None)
    accuracy = config.min_accuracy is not None or config.min_class_accuracy is not None or compared is not None
    if accuracy:
        from edgekd.latency.runtime import check_takes_float

        check_takes_float(model, art.details)  # before minutes of latency rounds
        if compared is not None:
            check_takes_float(compared, artifact_from_file(compared).details)
    if config.measures_latency:
        from edgekd.input_shape import check_has_batch

        check_has_batch(model, art.details, images=accuracy)
        _fits(model, config.input_shape, art.details)  # refused before measuring when it does not fit
    # Accuracy first: data that cannot be read is bad input, said before minutes of latency rounds on a board.
    accuracy_checks, sample = (gate_accuracy.accuracy_checks(model, compared, config, notes, log,
                                                             which=_which(base[1]) if base else "") if accuracy
                               else ([], None))
    if config.measures_latency:
        profile = load_profile(config.profile)
        timed = gate_ort.copy_to_time(copy, entry, profile) if config.max_latency_ms is not None else (None, "")
        notes += _data_shape_note(art.details, config, profile, sample)
        try:
            checks += _latency_checks(model, profile, config, timed, sample, base)
        except RunnerError as exc:
            error = _unreached(exc, profile, config)
            # every latency check the run would have had, the ORT-format copy's too: a test count that changes
            # with the device's reach would hide the file an app ships
            names = (("latency",) * (config.max_latency_ms is not None)
                     + ("ort latency",) * (config.max_latency_ms is not None and timed[0] is not None)
                     + ("regression",) * (bool(config.baseline) and not config.no_latency))
            done = (*checks, *(Check(n, False, error.message, errored=True) for n in names), *accuracy_checks)
            result = GateResult(str(target), done, tuple(notes), _name(entry))
            raise GateIncomplete(error.problem, error.fix, result) from None
    checks += accuracy_checks
    return GateResult(str(target), tuple(checks), tuple(notes), _name(entry))


def _name(entry: dict[str, Any] | None) -> str | None:
    return None if entry is None else entry["artifact"]["name"]


def _unreadable(target: str, model: Path, entry: dict[str, Any], exc: ArtifactError, notes: list[str]) -> GateResult:
    """A manifest's model replaced by a file that is no model at all (a Git LFS pointer left by a checkout
    without LFS, a truncated copy) fails its integrity check, with the fix for a gated manifest: restore the
    file. Nothing else can be measured on it."""
    what = (f"a Git LFS pointer, not the model (check out with LFS: {LFS_HOW})" if lfs_pointer(model)
            else f"no longer a readable ONNX model ({exc.problem})")
    checks = [Check("integrity", False, f"{model.name} changed since the manifest was written (sha256 differs) and "
                    f"is {what}: {gate_ort.RESTORE}")]
    checks += gate_ort.ort_integrity(model.parent, entry, notes)
    notes.append(f"not checked: every other check, as {model.name} is not the model the manifest records")
    return GateResult(str(target), tuple(checks), tuple(notes), _name(entry))


def _unreached(exc: RunnerError, profile: Any, config: GateConfig) -> RunnerError:
    """The runner's error, and for a device profile the gate took from the manifest (the user named none),
    which profile that is and the other ways to gate: a CI runner seldom reaches the board a model was
    built for (the runner's own words say whether it was not reached or failed there)."""
    if not config.profile_recorded or profile.is_local:
        return exc
    return RunnerError(f"profile {profile.name}, recorded in the manifest, could not be measured on its device: "
                       f"{exc.problem}",
                       f"{exc.fix + '; or ' if exc.fix else ''}run the gate on a runner that reaches the board, pass "
                       f"--profile {DEFAULT_PROFILE} with --baseline for a relative check, or gate size, opset and "
                       "accuracy only: add --no-latency (without --max-latency, --rounds or --latency-tolerance; a "
                       "budget of latency alone then needs --max-size or --min-accuracy)")


def files_read(target: str, config: GateConfig) -> list[Path]:
    """Every file the gate reads for ``target`` under ``config``, for the report outputs to keep clear of (even
    with --force): the model gated and every file its manifest lists, the baseline's, the data, the app's build
    config and a profile file; for a CSV list of images, the folders holding its images."""
    from edgekd.image_list import listed_folders
    from edgekd.onnxfile import model_files
    from edgekd.profiles import profile_file
    files: list[Path] = []
    for ref in (target, config.baseline):
        if not ref:
            continue
        path = Path(ref)
        files.append(path)
        if _is_manifest(ref) and path.is_file():
            files += manifest_files(path)
        elif path.is_file():
            files += model_files(path)
    extra = (config.data, config.ops_config, profile_file(config.profile))
    return files + [Path(p) for p in extra if p] + listed_folders(config.data)


def manifest_files(manifest_path: Path) -> list[Path]:
    """Every file a manifest lists, beside it: its models with their external weights, ORT copies, and the
    student's weights (student.pt, which --force replaced with a report though the manifest lists it)."""
    from edgekd.onnxfile import model_files

    manifest = load_manifest(manifest_path)
    folder, files = manifest_path.parent, []
    for entry in manifest["artifacts"]:
        files += model_files(folder / entry["artifact"]["path"])
        ort = entry.get("ort") or {}
        files += [folder / ort[k] for k in ("path", "operators") if k in ort]
    weights = (manifest.get("student") or {}).get("weights")
    if isinstance(weights, str) and weights:
        files.append(folder / weights)
    return files


def _check_listed(manifest: Path, model: Path, entry: dict[str, Any]) -> None:
    """The manifest's artifact is in its folder: paths in a manifest are relative to it, so a manifest moved
    away from its files, or a file renamed, leaves the path it records pointing at nothing."""
    if model.is_file():
        return
    recorded = entry["artifact"]["path"]
    copy = gate_ort.ort_copy(manifest.parent, entry)
    # a mobile pipeline may keep only the .ort an app ships: validate --manifest re-checks that copy on its own
    fix = ("keep manifest.json beside the files compress wrote, under the names it lists (move the folder whole), "
           + ("or gate the model file itself (edgekd gate MODEL.onnx)" if copy is None else
              f"or re-check the ORT-format copy that is here against the manifest (edgekd validate {copy} --manifest "
              f"{manifest})"))
    raise ArtifactError(f"manifest '{manifest}' lists artifact '{entry['artifact']['name']}' as '{recorded}', "
                        f"read relative to the manifest's folder, and '{manifest.parent}' has no such file", fix)


def _refuse_ort_copy(model: Path) -> None:
    """An ORT-format file given as the target with no .onnx beside it: gate reads what only an .onnx holds (opset,
    operators, the input metadata), and a mobile pipeline that keeps just the .ort an app ships and its manifest
    re-checks the copy with validate --manifest (an .onnx beside it is named by artifact_from_file's refusal)."""
    from edgekd.onnxfile import is_ort_format

    if model.suffix.lower() != ".ort" or not is_ort_format(model) or model.with_suffix(".onnx").is_file():
        return
    manifest = model.parent / "manifest.json"
    raise ArtifactError(f"'{model}' is an ORT-format model, and gate checks the .onnx model it was converted from, "
                        "which is not beside it", "re-check the copy against the manifest of the compress --ort run "
                        f"that wrote it (edgekd validate {model} --manifest "
                        f"{manifest if manifest.is_file() else 'OUT/manifest.json'}), or gate its .onnx")


def check_not_folder(path: Path, what: str) -> None:
    """Refuse a folder given for a file: an edgekd output folder is most often meant for the manifest in it."""
    if path.is_dir():
        inside = path / "manifest.json"
        raise ConfigError(f"{what} '{path}' is a folder", f"pass {inside}" if inside.is_file() else
                          "pass a manifest.json or .onnx file")


def _resolve(target: str, artifact: str | None) -> tuple[Path, dict | None]:
    path = Path(target)
    check_not_folder(path, "target")
    if not _is_manifest(target):
        return path, None
    manifest = load_manifest(path)
    name = artifact or manifest["primary"]
    for entry in manifest["artifacts"]:
        if entry["artifact"]["name"] == name:
            model = inside(path.parent, entry["artifact"]["path"])
            if model is None:
                raise ArtifactError(f"manifest '{path}' points artifact '{name}' outside its folder "
                                    f"({entry['artifact']['path']})", "use the manifest edgekd wrote, unedited")
            return model, entry
    names = ", ".join(e["artifact"]["name"] for e in manifest["artifacts"])
    raise ConfigError(f"manifest '{path}' has no artifact '{name}'", f"choose one of: {names}")


def _op_checks(model: Path, opset: int, config: GateConfig) -> list[Check]:
    import onnx

    checks = []
    if config.max_opset is not None:
        ok = opset <= config.max_opset
        ir = onnx.load(str(model), load_external_data=False).ir_version
        checks.append(Check("opset", ok, f"opset {opset} (IR version {ir}), target runtime supports up to "
                            f"{config.max_opset}", opset))
    if config.allowed_ops is not None:
        ops = operator_types(onnx.load(str(model), load_external_data=False))
        extra = sorted(ops - set(config.allowed_ops))
        checks.append(Check("operators", not extra, "all operators allowed" if not extra else
                            f"operators not supported by the target: {', '.join(extra)}", sorted(ops)))
    return checks


def operator_types(model: Any) -> set[str]:
    """Every operator type the runtime must run for ``model`` (a ModelProto): its graph's, those inside the
    subgraphs of If, Loop and Scan nodes (a branch runs only on some inputs, yet the runtime must have its
    operators to load the model) and inside its local functions, whose calls are not operators themselves."""
    from onnx import AttributeProto

    local = {(f.domain, f.name) for f in model.functions}
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    ops: set[str] = set()
    while nodes:
        node = nodes.pop()
        if (node.domain, node.op_type) not in local:
            ops.add(node.op_type)
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                nodes += attr.g.node
            elif attr.type == AttributeProto.GRAPHS:
                nodes += [n for g in attr.graphs for n in g.node]
    return ops


def _data_shape_note(details: dict[str, Any], config: GateConfig, profile: Any,
                     sample: tuple[int, ...] | None) -> list[str]:
    """The note validate gives when a model whose input leaves its size open is timed at the test data's."""
    from edgekd.input_shape import data_input_shape

    if config.input_shape or sample is None:
        return []
    fed = data_input_shape(details, sample, int(profile.measure["batch_size"]))
    return [] if fed is None else [f"latency measured at input shape {','.join(map(str, fed))}, the test data's, "
                                   "since the model's input has dynamic dimensions (--input-shape sets another)"]


def _data_shapes(paths: list[Path], profile: Any, sample: tuple[int, ...] | None) -> list[Any] | None:
    """With no --input-shape, each model timed at the test data's size (``sample``, C x H x W) where its input
    leaves its size open, as accuracy was measured at it, else at its own (None); None when none is open."""
    from edgekd.input_shape import data_input_shape
    from edgekd.ort_format import ort_inputs
    from edgekd.validate import artifact_from_file

    if sample is None:
        return None
    batch = int(profile.measure["batch_size"])
    shapes = [data_input_shape(ort_inputs(p) if p.suffix.lower() == ".ort" else artifact_from_file(p).details,
                               sample, batch) for p in paths]
    return shapes if any(shapes) else None


def _latency_checks(model: Path, profile: Any, config: GateConfig,
                    timed: tuple[Path | None, str] = (None, ""), sample: tuple[int, ...] | None = None,
                    base: tuple[Path, dict | None] | None = None) -> list[Check]:
    """The latency limit and the regression against a baseline; ``timed``: the manifest's ORT-format copy,
    measured in the same rounds and held to the same limit (or None, and why the limit covered the .onnx
    only); ``sample``: the test data's image shape (C, H, W), to time a model of open size at; ``base``: the
    baseline's file and manifest entry as _baseline_file found them (default: found here)."""
    from edgekd.latency.cache import noisy

    regresses = bool(config.baseline) and not config.no_latency
    if regresses and base is None:
        base = _baseline_file(config.baseline, config.artifact)  # type: ignore[arg-type]
    baseline, recorded, setup = (_baseline(config.baseline, base, profile, config.input_shape)  # type: ignore[arg-type]
                                 if regresses else (None, None, None))
    which = _which(base[1] if base else None)
    tol = config.latency_tolerance
    copy, untimed = timed
    found, rounds, extra = _measure_rounds(model, baseline, profile, config, copy, sample)
    p50 = statistics.median(r[0].p50_ms for r in rounds)
    shaky = sum(bool(noisy(r, profile)) for r in rounds)
    # A failure on a noisy machine reads differently from one on a quiet machine: say which this was.
    noise = (f"; noisy: {shaky} of {len(rounds)} rounds had cv above the profile's max_cv "
             f"({profile.measure['max_cv']:.0%}), rerun on a quieter runner" if shaky else "")
    checks = []
    if config.max_latency_ms is not None:
        limit = config.max_latency_ms * (1 + tol)
        shown, line = figures(p50, limit, 3, p50 <= limit)
        said = f"{line} ms ({config.max_latency_ms:g} ms +{_percent(tol)} tolerance)"
        checks.append(Check("latency", p50 <= limit, f"p50 {shown} ms (median of {len(rounds)} rounds) on "
                            f"{profile.name}, limit {said}{untimed}{noise}", p50))
        if copy is not None:  # measured last in each round
            ort_p50 = statistics.median(r[-1].p50_ms for r in rounds)
            shown, line = figures(ort_p50, limit, 3, ort_p50 <= limit)
            said = f"{line} ms ({config.max_latency_ms:g} ms +{_percent(tol)} tolerance)"
            checks.append(Check("ort latency", ort_p50 <= limit, f"{copy.name}: p50 {shown} ms (median of "
                                f"{len(rounds)} rounds, timed beside its .onnx) on {profile.name}, limit {said} (the "
                                f"ORT-format copy an app ships, held to the limit its .onnx is){noise}", ort_p50))
    if found is not None:
        # The median decides; the interval says how sure it is, and a near call was measured twice as long.
        near = (f"; near the line, so {extra} more round(s) were measured" if extra else "")
        ok = found.median <= 1 + tol
        shown, line = figures(found.median, 1 + tol, 2, ok)
        checks.append(Check("regression", ok, f"{shown}x the baseline's latency, measured interleaved (median of "
                            f"{found.pairs} paired repeats, {found.interval(decimals(shown))}; at most {line}x: "
                            f"tolerance +{_percent(tol)}){which}{near}{noise}", found.median))
    elif recorded is not None:
        was = (((base[1] if base else None) or {}).get("latency") or {}).get("onnxruntime")
        elsewhere = _elsewhere(setup or {}, profile, (str(was or ""), rounds[0][0].onnxruntime))
        ratio = p50 / recorded
        shown, line = figures(ratio, 1 + tol, 2, ratio <= 1 + tol)
        checks.append(Check("regression", ratio <= 1 + tol, f"{shown}x the baseline manifest's recorded p50, at most "
                            f"{line}x (its model file is absent, so not re-measured: drift between runs counts "
                            f"here{elsewhere}){which}{noise}", ratio))
    return checks


def _measure_rounds(model: Path, baseline: Path | None, profile: Any, config: GateConfig,
                    copy: Path | None = None, sample: tuple[int, ...] | None = None) -> tuple[Any, list, int]:
    """(the interleaved comparison with ``baseline``, or None without one; every round measured, ``copy``'s
    figures last in each; how many extra rounds a near call took)."""
    from edgekd.latency.compare import measure_until_clear
    from edgekd.latency.measure import measure

    paths = [model, *([baseline] if baseline is not None else []), *([copy] if copy is not None else [])]
    shape = config.input_shape or _data_shapes(paths, profile, sample)
    if baseline is None:
        return None, [measure(paths, profile, shape) for _ in range(config.rounds)], 0
    return measure_until_clear(lambda: measure(paths, profile, shape), config.rounds, 1 + config.latency_tolerance)


def _baseline(ref: str, base: tuple[Path, dict | None], profile: Any,
              shape: tuple[int, ...] | None) -> tuple[Path | None, float | None, dict[str, Any] | None]:
    """``base`` (the baseline's file and manifest entry, as _baseline_file found them) as a model to re-measure
    side by side (fed ``shape`` too, so checked against it before measuring), or (when only its manifest is left)
    its recorded p50, which compares only with a p50 measured on the same profile, and the profile its manifest
    records, for _elsewhere to say what differs between where it was measured and here."""
    model, entry = base
    if model.is_file():
        return _fits(model, shape), None, None
    recorded = load_manifest(Path(ref))["profile"]
    if recorded["name"] != profile.name:
        raise ConfigError(f"baseline '{ref}' has no model file left, and its recorded p50 was measured on profile "
                          f"'{recorded['name']}', not '{profile.name}'", f"pass --profile {recorded['name']}, or keep "
                          "the baseline's model files beside its manifest so it is re-measured here")
    if not (entry or {}).get("latency"):
        raise ConfigError(f"baseline '{ref}' has no model file left ({model.name}) and records no latency for it",
                          "keep the baseline's model files beside its manifest so it is re-measured here")
    return None, float(entry["latency"]["p50_ms"]), recorded  # type: ignore[index]


def _elsewhere(recorded: dict[str, Any], profile: Any, runtimes: tuple[str, str] = ("", "")) -> str:
    """What makes a recorded p50 a measurement of another setup than this one: the profile's settings changed
    since, (a local profile) another CPU, or another onnxruntime (``runtimes``: the recorded p50's and the one
    that measured this run, "" where not known, as in perf_test mode), as an upgraded board has. Said beside the
    verdict: a ratio across machines or runtimes is no regression."""
    said = []
    if recorded.get("digest") and recorded["digest"] != profile.digest():
        said.append(f"profile {profile.name}'s settings differ from the ones recorded")
    here = _other_host(recorded, profile)
    if here:
        said.append(f"it was measured on {recorded['host']}, this run on {here}")
    was, now = runtimes
    if was and now and was != now:
        said.append(f"the recorded p50 came from onnxruntime {was}, {'this host' if profile.is_local else 'the device'}"
                    f" now runs {now}")
    return "; " + " and ".join(said) + ", so the ratio compares setups, not models" if said else ""


def _fits(model: Path, shape: tuple[int, ...] | None, details: dict[str, Any] | None = None) -> Path:
    """``model``, after checking that it takes ``shape`` (when given); ``details`` as artifact_from_file gives."""
    if shape:
        from edgekd.input_shape import check_input_shape
        from edgekd.validate import artifact_from_file

        check_input_shape(model, details if details is not None else artifact_from_file(model).details, shape)
    return model


def _size_growth_check(size: int, base: tuple[Path, dict | None], growth: float) -> Check:
    base_size = _baseline_size(*base)
    ok, ratio, shown = growth_figures(size, base_size, growth)
    return Check("size growth", ok, f"{size / 1024:.1f} KB on disk, {shown}x the baseline's "
                 f"{base_size / 1024:.1f} KB (at most +{_percent(growth)}){_which(base[1])}", ratio)


def _which(entry: dict | None) -> str:
    """Which of a baseline manifest's artifacts a row compared with, said in it: a manifest holds several."""
    return "" if entry is None else f"; baseline artifact: {entry['artifact']['name']}"


def growth_figures(size: int, base: int, growth: float) -> tuple[bool, float, str]:
    """(within the allowed growth, size over the baseline's, that ratio as shown): for a file and its .ort."""
    ratio = size / base if base else float("inf")
    ok = size <= base * (1 + growth)
    return ok, ratio, figures(ratio, 1 + growth, 3, ok)[0]


def _baseline_size(model: Path, entry: dict | None) -> int:
    """The baseline's size on disk as it ships (external data included), or, when only its manifest is
    left, the size it records: a file's size does not drift between runs as a latency does."""
    from edgekd.validate import artifact_from_file

    return artifact_from_file(model).size_bytes if model.is_file() else int(entry["artifact"]["size_bytes"])  # type: ignore[index]


def _baseline_model(ref: str | None, base: tuple[Path, dict | None] | None, what: str) -> Path:
    """The baseline's model file (``base``, as _baseline_file found it), needed to measure its ``what`` here (a
    manifest's recorded figure was measured on its own data, which need not be this run's)."""
    model, _ = base  # type: ignore[misc]
    if not model.is_file():
        raise ArtifactError(f"baseline '{ref}' has no model file left ({model.name}) to measure its {what} on",
                            "keep the baseline's model files beside its manifest")
    return model


def _baseline_file(ref: str, artifact: str | None, target: Path | None = None, digest: str | None = None,
                   notes: list[str] | None = None) -> tuple[Path, dict | None]:
    """(the baseline's model file, which a manifest's may have lost; its manifest entry, or None for a model
    given directly, which must exist). A manifest's is its ``artifact`` (--artifact: the same file of the last
    release, not its primary); for a model file gated (``target``, of sha256 ``digest``), the artifact of its file
    name, else the one it is byte for byte; else its primary. Which one, and why, goes to ``notes``. A manifest's
    file here that is not the one it records is refused: compared, it would pass or fail the target on another
    model's figures."""
    path = Path(ref)
    check_not_folder(path, "baseline")
    if path.suffix.lower() != ".json":
        if not path.is_file():
            raise ArtifactError(f"baseline model '{path}' does not exist", "check --baseline")
        if lfs_pointer(path):
            raise ArtifactError(f"baseline model '{path}' is a Git LFS pointer, not the model",
                                f"check the baseline out with LFS ({LFS_HOW})")
        return path, None
    why = "--artifact" if artifact else "its primary"
    if artifact is None and target is not None:
        artifact, why = _matching_artifact(load_manifest(path), target, digest) or (None, why)
    model, entry = _resolve(ref, artifact)
    if notes is not None:
        notes.append(f"baseline: artifact {_name(entry)} of '{ref}' ({why})")
    _check_baseline_file(ref, model, entry)  # type: ignore[arg-type]
    return model, entry


def _matching_artifact(manifest: dict[str, Any], target: Path, digest: str | None) -> tuple[str, str] | None:
    """The artifact of a baseline manifest that a model file gated is the new version of, as validate --manifest
    finds one, and why: the one of its file name (student-fp32.onnx against the last release's), else the one it
    is byte for byte. None (the primary, then) when no artifact, or several, match."""
    entries = manifest["artifacts"]
    by_name = [e for e in entries if Path(e["artifact"]["path"]).name == target.name]
    by_hash = [e for e in entries if digest is not None and e["artifact"]["sha256"] == digest]
    for found, why in ((by_name, f"its file name is the target's, {target.name}"),
                       (by_hash, "byte for byte the target")):
        if len(found) == 1:
            return found[0]["artifact"]["name"], why
    return None


def _check_baseline_file(ref: str, model: Path, entry: dict[str, Any]) -> None:
    """A baseline manifest's model file, when here, is the one it records (its sha256), as a gated manifest's
    is: one replaced since (another model, or the pointer a checkout without Git LFS leaves) would be compared
    as the last release, and the verdict rest on it. A file that is gone is compared by the recorded figures."""
    if not model.is_file() or sha256(model) == entry["artifact"]["sha256"]:
        return
    said = f"baseline '{ref}' lists artifact '{_name(entry)}' as {model.name}, and that file"
    if lfs_pointer(model):
        raise ArtifactError(f"{said} is a Git LFS pointer, not the model",
                            f"check the baseline out with LFS ({LFS_HOW})")
    raise ArtifactError(f"{said} changed since the baseline's manifest was written (sha256 differs), so it is not "
                        "the model the baseline records", "restore the file compress wrote for the baseline, or pass "
                        f"the .onnx to compare with as --baseline itself (e.g. --baseline {model})")


def _percent(fraction: float) -> str:
    """A tolerance as the user gave it (0.105 -> "10.5%"), not rounded onto a neighbour as "{:.0%}" would."""
    return f"{fraction * 100:g}%"
