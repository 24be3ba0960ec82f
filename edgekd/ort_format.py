"""ORT-format copies of the shipped students, for onnxruntime's mobile and reduced (minimal) builds:
converted by onnxruntime's own tool with the optimizations of the profile's platform baked in, each with
the operator list a reduced build is compiled with, and checked against its .onnx on the test images."""

from __future__ import annotations

import os
import platform as _platform
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ExportError, first_line

PLATFORMS = ("arm", "amd64")
# onnxruntime's optimisation level per platform. On x86 "all" would add the NCHWc layout, whose block size
# is this CPU's vector width (16 floats with AVX-512, 8 with AVX2): a file made here could compute wrongly on
# the x86 device it ships to. "extended" stops short of layouts; for arm the tool leaves NCHWc out itself.
_LEVELS = {"arm": "all", "amd64": "extended"}
_LEVEL_VARIABLE = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"
# The oldest onnxruntime that loads each ORT format version, as measured (benchmarks/runtime_compat.py): format 6
# (onnxruntime 1.32's converter writes it) loaded in 1.16.3 to 1.32.0, and 1.10.0 to 1.15.1 refused it. A
# mobile app's runtime older than this cannot open the file; a format not listed is said to be unknown.
LOADS_FROM = {6: "1.16"}


@dataclass(frozen=True)
class OrtFile:
    path: str  # beside its .onnx: <name>.ort
    sha256: str
    size_bytes: int
    platform: str  # "arm" or "amd64": whose optimizations the file holds
    operators: str  # <name>.required_operators.config, for a reduced onnxruntime build
    top1_agreement: float  # with its .onnx, on the test images
    max_abs_diff: float
    agrees: bool  # its outputs are the .onnx's, within the validation's bound
    format_version: int | None = None  # the ORT format the file is written in
    converted_with: str = ""  # the onnxruntime version whose tool wrote it
    p50_ms: float | None = None  # measured on the profile beside its .onnx (median of the rounds)
    vs_onnx: float | None = None  # its p50 over its .onnx's, round by round, median: above 1 is slower
    operators_sha256: str | None = None  # of the operators file: gate trusts no edited list
    over_budget: tuple[str, ...] = ()  # "size", "latency": the budget's limits the copy misses

    @property
    def passed(self) -> bool:
        """The copy's verdict, as its artifact's ``verdicts.ort``: outputs that agree, within the budget. A
        pipeline shipping the copies that passed ships no file compress rejected."""
        return self.agrees and not self.over_budget

    @property
    def loads_from(self) -> str | None:
        """The oldest onnxruntime seen loading the file's format (LOADS_FROM); None: unknown."""
        return LOADS_FROM.get(self.format_version) if self.format_version is not None else None

    def to_dict(self) -> dict[str, Any]:
        # recorded for a pipeline to compare with
        return {**asdict(self), "over_budget": list(self.over_budget), "passed": self.passed,
                "loads_from": self.loads_from}


def loads_text(version: int | None) -> str:
    """Which onnxruntime loads a file of ORT format ``version``, for the log and the reports."""
    if version is None:
        return "its ORT format version could not be read"
    since = LOADS_FROM.get(version)
    return (f"ORT format {version}, which onnxruntime {since} and later load" if since else
            f"ORT format {version}, which edgekd has not seen loaded: check your app's onnxruntime loads it")


def check_ort_file(path: str | Path) -> int:
    """``path`` is an ORT-format file edgekd can hand to onnxruntime: its format version, else ArtifactError."""
    from edgekd.errors import ArtifactError

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file '{path}' does not exist", "check the path")
    version = format_version(path)
    if version is None:
        from edgekd.onnxfile import refuse_misnamed_onnx

        refuse_misnamed_onnx(path)
        raise ArtifactError(f"'{path}' is not a readable ORT-format file",
                            "convert the .onnx again (compress --ort, or onnxruntime's convert_onnx_models_to_ort)")
    return version


def ort_inputs(path: str | Path) -> dict[str, Any]:
    """The file's inputs as ``onnxfile.describe`` gives an .onnx's (name and shape, None or a name for a free
    dimension, None for the shape of unknown rank), read by onnxruntime: an ORT-format file holds no ONNX graph
    to read them from."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # onnxruntime gives an input of unknown rank the shape [], a scalar's; a model edgekd measures takes an
    # image, not a scalar, so [] is read as unknown (None, as onnxfile.signature records it)
    return {"inputs": [{"name": i.name, "shape": list(i.shape) or None} for i in session.get_inputs()]}


def missing_operators(needed: Path, build: Path) -> list[str]:
    """The operators the config ``needed`` lists that the reduced build's config ``build`` lacks, as
    ``domain;opset;Op`` (the configs' own notation); both read by onnxruntime's own parser."""
    from edgekd.errors import ArtifactError, ConfigError

    if not needed.is_file():
        raise ArtifactError(f"'{needed}', the operator list of the manifest's ORT-format copy, is not here",
                            "keep the folder compress --ort wrote whole")
    if build.is_dir():
        inside = build / "required_operators.config"
        raise ConfigError(f"operator config '{build}' is a folder", f"pass {inside}" if inside.is_file() else
                          "pass the required_operators.config file your app's onnxruntime was built with")
    if not build.is_file():
        raise ConfigError(f"operator config '{build}' does not exist",
                          "pass the required_operators.config your app's onnxruntime was built with")
    need, have = _parse_ops(needed, ArtifactError), _parse_ops(build, ConfigError)
    if have is None:  # the build's "!no_ops_specified_means_all_ops_are_required": every kernel is in it
        return []
    # Kernels are registered by the opset they were introduced in, which is what both configs list.
    return [f"{domain};{opset};{op}" for domain, opsets in sorted((need or {}).items())
            for opset, ops in sorted(opsets.items()) for op in sorted(ops)
            if op not in have.get(domain, {}).get(opset, set())]


def _parse_ops(path: Path, error: type) -> dict[str, dict[int, set[str]]] | None:
    from onnxruntime.tools.reduced_build_config_parser import parse_config

    try:
        required, _ = parse_config(str(path))
    except Exception as exc:  # the parser raises ValueError, RuntimeError or a JSON error on a bad line
        raise error(f"'{path}' is not an onnxruntime operator config ({first_line(exc, 160)})",
                    "pass the file onnxruntime's convert_onnx_models_to_ort writes (lines of domain;opset;Op,Op)"
                    ) from None
    return required


def format_version(path: Path) -> int | None:
    """The ORT format version a .ort file is written in (its header's ``ort_version``), None if unreadable."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

    try:
        text = InferenceSession.GetRootAs(path.read_bytes(), 0).OrtVersion()
    except Exception:  # flatbuffers raises several types on a damaged file
        return None
    return int(text) if text and text.isdigit() else None


def platform_for(profile: Any) -> str:
    """The platform a profile's device is: this machine's for a local profile; ``arm`` for a board or
    phone (ssh, adb), as the shipped rpi4-arm64 and android-arm64 are."""
    if not profile.is_local:
        return "arm"
    return "amd64" if _platform.machine().lower() in ("x86_64", "amd64") else "arm"


def to_ort(model: Path, target: str, images: np.ndarray, precision: str) -> OrtFile:
    """``model`` converted to ``<name>.ort`` beside it (with ``<name>.required_operators.config``),
    optimised for ``target``, and its outputs compared with the .onnx's on ``images``: fp32 within the
    validation's parity bound, int8 keeping its share of top-1 predictions."""
    import onnxruntime as ort
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    from edgekd.fsutil import sha256
    from edgekd.quiet import quiet
    from edgekd.validate import FP32_MAX_ABS_DIFF, INT8_MIN_AGREEMENT

    if target not in PLATFORMS:
        raise ExportError(f"unknown ORT platform '{target}'", f"choose one of: {', '.join(PLATFORMS)}")
    with tempfile.TemporaryDirectory(prefix="edgekd-ort-") as tmp:
        ort.set_default_logger_severity(3)  # saving an optimised graph warns that it is hardware specific
        level = os.environ.get(_LEVEL_VARIABLE)
        os.environ[_LEVEL_VARIABLE] = _LEVELS[target]
        try:
            with quiet("ort_format_model.utils", "ort_format_model", stderr=True):
                convert_onnx_models_to_ort(model, Path(tmp), [OptimizationStyle.Fixed], target_platform=target)
        except Exception as exc:  # onnxruntime raises its own types, and ValueError for what it cannot read
            raise ExportError(f"{model.name} could not be converted to ORT format ({first_line(exc, 200)})",
                              "ship the .onnx file, or report the model to onnxruntime") from None
        finally:
            ort.set_default_logger_severity(2)
            if level is None:
                del os.environ[_LEVEL_VARIABLE]
            else:
                os.environ[_LEVEL_VARIABLE] = level
        # named after the level when it is not "all" (student-int8.extended.ort): shipped under plain names
        (made,), (config,) = Path(tmp).glob("*.ort"), Path(tmp).glob("*.config")
        ort_path = model.with_suffix(".ort")
        config_path = model.with_name(f"{model.stem}.required_operators.config")
        shutil.move(made, ort_path)
        # The tool names the temporary folder it converted in; the shipped file names the model alone.
        lines = config.read_text(encoding="utf-8").splitlines()
        config_path.write_text("\n".join(f"# - {ort_path.name}" if line.startswith("# - ") else line
                                         for line in lines) + "\n", encoding="utf-8")
    ours, theirs = _outputs(model, images), _outputs(ort_path, images)
    agreement = float((ours.argmax(1) == theirs.argmax(1)).mean())
    diff = float(np.abs(ours - theirs).max())
    agrees = diff <= FP32_MAX_ABS_DIFF if precision == "fp32" else agreement >= INT8_MIN_AGREEMENT
    return OrtFile(ort_path.name, sha256(ort_path), ort_path.stat().st_size, target, config_path.name, agreement,
                   diff, agrees, format_version(ort_path), ort.__version__, operators_sha256=sha256(config_path))


def with_latency(orts: dict[str, OrtFile], folder: Path, profile: Any, rounds: int) -> dict[str, OrtFile]:
    """Each copy timed on ``profile`` beside its .onnx, all of them interleaved, ``rounds`` times. The file
    holds the optimisations of its conversion, not those onnxruntime gives the .onnx at load (on x86, the
    NCHWc layout: a converted fp32 student ran 4.13x as long as its .onnx in benchmarks/runtime_compat.py's
    run), so it is timed itself."""
    import dataclasses
    import statistics

    from edgekd.latency.measure import measure

    names = list(orts)
    paths = [p for name in names for p in (folder / f"{name}.onnx", folder / orts[name].path)]
    runs = [measure(paths, profile) for _ in range(max(1, rounds))]
    timed = {}
    for i, name in enumerate(names):
        onnx_ms = [run[2 * i].p50_ms for run in runs]
        ort_ms = [run[2 * i + 1].p50_ms for run in runs]
        timed[name] = dataclasses.replace(orts[name], p50_ms=statistics.median(ort_ms),
                                          vs_onnx=statistics.median(o / n for o, n in zip(ort_ms, onnx_ms)))
    return timed


def _outputs(model: Path, images: np.ndarray) -> np.ndarray:
    """The first output of ``model`` on ``images``, in batches."""
    import onnxruntime as ort

    from edgekd.latency.runtime import run_batches

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return run_batches(ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]), images)
