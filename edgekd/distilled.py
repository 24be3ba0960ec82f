"""Reload the student `edgekd distill --out DIR` trained, so that `edgekd compress --distilled DIR` exports,
validates and reports it without searching or training again (a long distillation is resumable with
`distill --resume`; this is its way to the shipped artifacts).

The folder holds distill.json (the student's spec, its training history and the recipe it was trained with),
student.pt (its weights) and search.json (the ranking it was chosen from).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError, first_line
from edgekd.preprocess import comparable
from edgekd.types import DistillResult, EpochRecord, SearchResult, StudentSpec

# The recipe keys that made the student: taken from distill.json, never from the compress invocation.
TRAINED_WITH = ("space", "proxy", "candidates", "latency_anchors", "precision", "epochs", "lr",
                "batch_size", "temperature", "alpha", "augment", "losses", "hint_student", "hint_teacher", "labels",
                "qat_epochs", "qat_lr", "qat_full_range", "keep_epoch", "target_ms", "prune_steps", "prune_importance",
                "prune_round_to", "seed")


@dataclass(frozen=True)
class Distilled:
    search: SearchResult
    result: DistillResult  # with the student model loaded, in eval mode
    recipe: dict[str, Any]  # the TRAINED_WITH keys as distill.json records them


def trained_recipe(folder: str | Path) -> dict[str, Any]:
    """The TRAINED_WITH keys of the recipe the student in ``folder`` was distilled with, read before the
    run loads its data: the recorded seed split the data, and the test images must be those the student
    never trained on."""
    folder = Path(folder)
    return _recipe(_distill_info(folder), folder)


def _distill_info(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file, not a folder"
        raise ConfigError(f"--distilled '{folder}' {what}", "pass the --out folder of a finished `edgekd distill`")
    unfinished = unfinished_run(folder) if not (folder / "distill.json").exists() else None
    if unfinished:
        raise ConfigError(*unfinished)
    return _read_json(folder / "distill.json", folder)


def set_aside_runs(folder: str | Path) -> list[Path]:
    """The earlier runs of ``folder`` that --force runs set aside beside it and were stopped (SIGKILL, a power
    cut) before they removed or put them back."""
    import glob

    from edgekd.fsutil import settled

    where = settled(folder)
    return sorted(where.parent.glob(f"{glob.escape(where.name)}.edgekd-replaced-*"))


def put_back(folder: str | Path, left: Path) -> str:
    """The command that puts the run ``left`` set aside back as ``folder``."""
    import shlex

    return f"`rm -r {shlex.quote(str(folder))} && mv {shlex.quote(str(left))} {shlex.quote(str(folder))}`"


def unfinished_run(folder: str | Path) -> tuple[str, str] | None:
    """(problem, fix) for a folder with no finished distill run that holds one stopped before it finished
    (checkpoint.pt) or whose earlier run a --force run stopped before its first checkpoint left beside it; None
    for any other. `report` sent the first to `compress --search`, which trains from epoch 0 again, and
    `compress --distilled` said neither where the run's way on was nor where the earlier run had gone."""
    import shlex

    folder = Path(folder)
    if (folder / "checkpoint.pt").is_file():
        return (f"'{folder}' holds a distill run that was stopped before it finished (checkpoint.pt, no distill.json)",
                f"finish it with `edgekd distill ... --out {shlex.quote(str(folder))} --resume` (the flags it started "
                f"with), then `edgekd compress --distilled {shlex.quote(str(folder))} --out OUT`")
    left = set_aside_runs(folder)
    if left:
        return (f"'{folder}' holds no finished run: a --force run into it was stopped before its first checkpoint, "
                f"and the earlier run it replaced is in '{left[-1]}'",
                f"put that run back with {put_back(folder, left[-1])}")
    return None


BUDGET_KEYS = ("budget_ms", "max_size_kb", "min_accuracy", "max_accuracy_drop")


def recorded_budget(folder: str | Path) -> dict[str, Any]:
    """The budget the student in ``folder`` was searched and distilled for (its BUDGET_KEYS that were set)."""
    folder = Path(folder)
    recipe = _distill_info(folder).get("recipe")
    recipe = recipe if isinstance(recipe, dict) else {}
    return {k: recipe[k] for k in BUDGET_KEYS if recipe.get(k) is not None}


# The run's inputs, as `edgekd distill` was given them: `compress --distilled` takes those it is not given.
INPUT_KEYS = ("teacher", "weights", "data", "resolution", "normalize", "channels")


def recorded_inputs(folder: str | Path, teacher_given: bool = False, data_given: bool = False) -> dict[str, Any]:
    """The INPUT_KEYS the distillation in ``folder`` recorded (paths as they were typed, relative to the folder
    it ran in). A teacher or data it was given in memory (the Python API) has no path to take: not given again
    (``teacher_given``, ``data_given``), it is refused here rather than after the default teacher was trained
    on digits for minutes."""
    from edgekd.teacher import DEFAULT_ORIGIN

    folder = Path(folder)
    info = _distill_info(folder)
    recipe = info.get("recipe")
    recipe = recipe if isinstance(recipe, dict) else {}
    teacher, data = (value if isinstance(value, dict) else {} for value in (info.get("teacher"), info.get("data")))
    # a record without the teacher says nothing of it: compared later, once loaded, as before
    in_memory = bool(teacher) and recipe.get("teacher") is None and _recorded_origin(teacher, recipe) != DEFAULT_ORIGIN
    if not teacher_given and in_memory:
        raise ConfigError(f"'{folder}' was distilled from a teacher passed in memory ({teacher.get('source')}), "
                          "which its distill.json cannot name", "pass the same teacher (CompressConfig.teacher)")
    if not data_given and recipe.get("data") is None and data.get("name", "digits") != "digits":
        raise ConfigError(f"'{folder}' was distilled on data passed in memory ('{data.get('name')}'), which its "
                          "distill.json cannot name", "pass the same data (CompressConfig.data)")
    return {k: recipe[k] for k in INPUT_KEYS if recipe.get(k) is not None}


def _recipe(info: dict[str, Any], folder: Path) -> dict[str, Any]:
    recipe = info.get("recipe")
    if not isinstance(recipe, dict):
        raise ConfigError(f"'{folder}' is not what `edgekd distill` writes (its distill.json has no recipe)",
                          "pass the --out folder of a finished `edgekd distill` (distilled with this edgekd)")
    return {k: recipe[k] for k in TRAINED_WITH if k in recipe}


def load_distilled(folder: str | Path, teacher: Any, data: Any) -> Distilled:
    """The student in ``folder``, rebuilt for ``teacher`` and ``data``, which must be the ones it was
    distilled from."""
    from edgekd.search_file import read_search

    folder = Path(folder)
    info = _distill_info(folder)
    recipe = _recipe(info, folder)
    recorded_data = info.get("data", {})
    # Compared on what the record holds: a folder distilled before class names and preprocessing were
    # recorded (or before the resize method was named exactly) still matches the same data.
    was, here = comparable(recorded_data), comparable(data.describe())
    if was != {k: v for k, v in here.items() if k in was or not was}:
        raise ConfigError(f"'{folder}' was distilled on {_data_text(recorded_data)}, not on "
                          f"{_data_text(data.describe())}",
                          "pass the --data, --resolution and --normalize the distillation used")
    recorded = info.get("teacher") or {}
    was, now = _recorded_origin(recorded, info["recipe"]), teacher.origin
    # Compared by their files resolved, not by how their paths were spelled or the folder the runs started in.
    said, here = (was, now) if was and now else (recorded.get("source"), teacher.source)
    if said != here:
        raise ConfigError(f"'{folder}' was distilled from the teacher {said!r}, not {here!r}",
                          "pass the --teacher and --weights the distillation used")
    made_from = info.get("fingerprints")
    made_from = made_from if isinstance(made_from, dict) else {}  # a folder written before they were recorded
    _check_made_from(folder, made_from, teacher, data)
    try:
        spec = StudentSpec.from_dict(info["student"])
        distill = info["distill"]
        history = tuple(EpochRecord.from_dict(h) for h in distill["history"])
        # checked as a --search file is, with its record: compress writes it on as the search was measured, not
        # as this run's (search_record); an edited value was a traceback from the report's table or plot
        search = read_search(folder / "search.json")
    except ConfigError as exc:
        raise ConfigError(exc.problem, "pass the --out folder of a finished `edgekd distill`, unchanged") from None
    except FileNotFoundError:
        raise ConfigError(f"'{folder}' has no search.json",
                          "pass the --out folder of a finished `edgekd distill` (distilled with this edgekd)") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"'{folder}' is not what `edgekd distill` writes (missing or malformed {exc})",
                          "pass the --out folder of a finished `edgekd distill` (distilled with this edgekd)") from None
    model = _student(folder, spec, recipe, teacher, data, pruned=bool(info.get("pruned")))
    _check_student_file(folder, made_from.get("student_sha256"))  # one that does not even fit is said so first
    result = DistillResult(model, distill["best_epoch"], distill["best_val_accuracy"], history,
                           distill.get("selected_on", "val_labels"), distill.get("checkpoint"),
                           distill.get("qat_start"), distill.get("keep", "best"), distill.get("pruning"),
                           distill.get("taps"), distill.get("processes"), distill.get("threads"))
    return Distilled(search, result, recipe)


def _check_made_from(folder: Path, recorded: dict[str, Any], teacher: Any, data: Any) -> None:
    """Refuse a teacher file or images changed since the run under the names it recorded: the teacher's figures
    (accuracy, speedup, the accuracy drop) were another model's, and the student was validated and reported as if
    it had learned from it. edgekd's default teacher is not compared: it is trained again once its cache is gone,
    and the student was distilled from the teacher of that data and seed all the same."""
    from edgekd.distill.checkpoint import images_fingerprint, weights_fingerprint
    from edgekd.teacher import DEFAULT_ORIGIN

    was = recorded.get("teacher_weights")
    if was is not None and teacher.origin != DEFAULT_ORIGIN and was != weights_fingerprint(teacher.module):
        raise ConfigError(f"the weights of the teacher {teacher.source} are not those '{folder}' was distilled "
                          f"from (fingerprint {was} in its distill.json, {weights_fingerprint(teacher.module)} now)",
                          "restore the teacher file the run used, pass the --teacher and --weights it used, or "
                          "distill again from this teacher (`edgekd distill ... --force`)")
    for key, split, x, y in (("images", "training", data.x_train, data.y_train),
                             ("val_images", "validation", data.x_val, data.y_val)):
        if recorded.get(key) is not None and recorded[key] != images_fingerprint(x, y):
            raise ConfigError(f"the {split} images of '{data.name}' are not those '{folder}' was distilled on "
                              "(the same count, other pixels or labels)",
                              "restore the images the run used, or distill again on these "
                              "(`edgekd distill ... --force`)")


def _check_student_file(folder: Path, recorded: Any) -> None:
    """Refuse a student.pt that is not the one the run wrote: its training figures in distill.json were another
    student's, and an unpruned student of the same architecture loads without complaint."""
    from edgekd.fsutil import sha256

    weights = folder / "student.pt"
    if recorded is None or not weights.is_file():  # a folder written before it was recorded; a missing one is said
        return
    if sha256(weights) != recorded:
        raise ConfigError(f"'{weights}' is not the student.pt `edgekd distill` wrote there (its sha256 differs from "
                          "the one distill.json records)", "restore the student.pt the run wrote, or distill again "
                          "(`edgekd distill ... --force`)")


def _student(folder: Path, spec: StudentSpec, recipe: dict[str, Any], teacher: Any, data: Any,
             pruned: bool = False) -> Any:
    import torch

    from edgekd.search.spaces import build_student

    with torch.random.fork_rng(devices=[]):  # built as the run built it; the caller's generator kept as it was
        torch.manual_seed(int(recipe.get("seed", 0)))
        model = build_student(spec, data.input_shape, data.num_classes, teacher=teacher.module)
    if recipe.get("qat_epochs"):
        from edgekd.distill.qat import prepare_qat

        prepare_qat(model, torch.from_numpy(data.x_val[:1]), reduce_range=not recipe.get("qat_full_range", False))
    weights = folder / "student.pt"
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if pruned:
            return _pruned_student(folder, model, state, data)
        model.load_state_dict(state)
    except FileNotFoundError:
        raise ConfigError(f"'{folder}' has no student.pt",
                          "pass the --out folder of a finished `edgekd distill`") from None
    except (RuntimeError, ValueError, OSError) as exc:
        first = first_line(exc)
        raise ConfigError(f"'{weights}' does not fit the student distill.json describes ({first})",
                          "pass a folder `edgekd distill` wrote, unchanged") from None
    return model.eval()


def _recorded_origin(recorded: dict[str, Any], recipe: dict[str, Any]) -> str | None:
    """The origin (``teacher.teacher_origin``) of the teacher a folder was distilled from; for a folder
    distilled before origins were recorded, its recipe's paths resolved from here."""
    from edgekd.teacher import DEFAULT_ORIGIN
    from edgekd.teacher_spec import teacher_origin

    if "origin" in recorded:
        return recorded["origin"]
    if isinstance(recipe.get("teacher"), str):
        return teacher_origin(recipe["teacher"], recipe.get("weights"))
    return DEFAULT_ORIGIN if str(recorded.get("source")).startswith(DEFAULT_ORIGIN) else None


def _read_json(path: Path, folder: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"'{folder}' has no {path.name}",
                          "pass the --out folder of a finished `edgekd distill` (distilled with this edgekd)") from None
    except ValueError as exc:
        raise ConfigError(f"'{path}' is not valid JSON ({exc})", "rerun `edgekd distill`") from None
    if not isinstance(data, dict):
        raise ConfigError(f"'{path}' is not what `edgekd distill` writes", "rerun `edgekd distill`")
    return data


def _data_text(d: dict[str, Any]) -> str:
    from edgekd.data import describe_preprocess

    shape = "x".join(str(s) for s in d.get("input_shape", []))
    pre = f", input {describe_preprocess(d['preprocess'])}" if d.get("preprocess") else ""
    return f"'{d.get('name', '?')}' ({shape}, {d.get('train', '?')} training images{pre})"


def _pruned_student(folder: Path, model: Any, state: dict[str, Any], data: Any) -> Any:
    """The searched architecture with each layer cut to its saved weights' shape, trusted only when it computes
    what the student-fp32.onnx distill exported from the pruned model itself computes: a layer that sizes
    itself from a number kept elsewhere (a reshape to a channel count) would load and compute otherwise."""
    import numpy as np

    from edgekd.distill.structure import load_resized
    from edgekd.errors import ModelError

    refuse = ConfigError(f"the student in '{folder}' was pruned while it was distilled, and its pruned layers do not "
                         "rebuild from its spec and student.pt", "run `edgekd compress --target-ms ...` to prune, "
                         "export and validate in one run")
    onnx_file = folder / "student-fp32.onnx"
    try:
        model = load_resized(model, state)
    except ModelError:
        raise refuse from None
    if not onnx_file.is_file():
        raise refuse
    import torch

    x = np.ascontiguousarray(data.x_val[:8], dtype=np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
    import onnxruntime

    from edgekd.latency.runtime import run_batches

    try:
        theirs = run_batches(onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]), x)
    except Exception:  # onnxruntime's errors (a file that is no model, another input) share no base class
        raise refuse from None
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, atol=1e-3, rtol=1e-3):
        raise refuse
    return model
