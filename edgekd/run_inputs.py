"""A run's teacher and data, from what its config names: files and specs (the CLI, recipes) or, through
the Python API, a ``torch.nn.Module`` and a ``Dataset`` already in memory; and the recipe a run records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError, DataError, ModelError, kind_of

Log = Callable[[str], None]


def check_inputs(config: Any) -> None:
    """Refuse, before any work, a teacher or data of the wrong kind and options that cannot apply to them."""
    from edgekd.data import Dataset, check_data_source

    _check_kinds(config)
    check_data_source(config.data)
    _check_teacher_paths(config)
    _check_teacher_layers(config)
    _check_search_file(config.search_file)
    _check_hints(config.hint_student, config.hint_teacher)

    if config.teacher is not None and not isinstance(config.teacher, str):
        import torch

        if not isinstance(config.teacher, torch.nn.Module):
            raise ConfigError(f"teacher is {kind_of(config.teacher)}, not a torch.nn.Module or a spec",
                              "pass the model itself, 'file.py:factory' with weights, or a .pt2 path")
        if config.weights is not None:
            raise ConfigError("weights are given for a teacher that is already a module",
                              "load them into the module (model.load_state_dict(...)) and drop weights")
    if config.data is not None and not isinstance(config.data, str):
        if not isinstance(config.data, Dataset):
            raise ConfigError(f"data is {kind_of(config.data)}, not a path or an edgekd Dataset",
                              "pass a .npz path, an image folder, 'digits', or load_data(...)'s result")
        if config.resolution is not None or config.normalize not in (None, "dataset") or config.channels is not None:
            raise ConfigError("resolution, normalize and channels apply when edgekd loads the data, not to a "
                              "Dataset passed in", "pass them to load_data(..., resolution=..., normalize=...) "
                              "instead")


def teacher_setting(teacher: Any, weights: Any) -> tuple[Any, Any]:
    """CompressConfig's teacher and weights for a ``Teacher`` (load_teacher's, default_teacher's) handed in, as
    search() and distill() take one: the spec and weights load_teacher read it from, so the run loads, records
    and guards those files as it does a spec given as text (a later gate or --distilled run finds the teacher);
    a Teacher read from no files (default_teacher's, one made from a module) as its module. Anything else as given."""
    from edgekd.teacher import Teacher, weights_state

    if not isinstance(teacher, Teacher):
        return teacher, weights
    if weights is not None:
        raise ConfigError("weights are given for a Teacher, which is loaded with its weights already",
                          "drop weights (load_teacher(spec, weights=...) took them)")
    if teacher.files is None:
        return teacher.module, None
    if weights_state(teacher.module) != teacher.loaded:
        # the run loads the teacher from its files: the changes would be dropped while the run said it used it
        raise ConfigError(f"the Teacher's module has changed since load_teacher read it from '{teacher.files[0]}'",
                          "pass teacher=T.module to distil from it as it is now (recorded as a module in memory), "
                          "or save its weights and load_teacher them again")
    return teacher.files


def _check_kinds(config: Any) -> None:
    """Settings only the Python API can give a value of the wrong kind: a profile of 1, an --out of 3 or
    force="yes" were taken as given, and failed (or, "yes" being true, replaced a folder) far from here."""
    import os

    from edgekd.profiles import DeviceProfile

    for name in ("out", "profile", "distilled", "weights"):
        value = getattr(config, name)
        if value is None and name in ("distilled", "weights") or isinstance(value, (str, os.PathLike)) or (
                name == "profile" and isinstance(value, DeviceProfile)):
            continue
        wanted = "a profile name or .toml path" if name == "profile" else "a path"
        raise ConfigError(f"{name} is {kind_of(value)}, not {wanted}", f"pass {name} as a string")
    # every boolean: "false" from an env var or a config file is truthy, and qat_full_range="false" turned
    # full-range QAT on; labels and augment were refused by DistillConfig under its own names (use_labels)
    for name in ("force", "progress", "ort", "augment", "labels", "qat_full_range"):
        if not isinstance(getattr(config, name), bool):
            raise ConfigError(f"{name} must be true or false, got {getattr(config, name)!r}", "pass a boolean")


def comma_list(name: str, value: Any) -> Any:
    """A setting the CLI takes comma-separated (``COMMA_LISTS``) given from Python as a list of strings, as
    the CLI's string (a recipe's TOML list reads so too); any other value as it is, checked where it is used."""
    fix = f"pass names as a string, e.g. '{'mbv2,resnet' if name == 'space' else 'layer3,layer4'}', or a list of them"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return ",".join(v.strip() for v in value)
        raise ConfigError(f"{name} is {kind_of(value)} of {list(value)!r}, not of names", fix)
    if name == "space" and not isinstance(value, str):
        raise ConfigError(f"space is {kind_of(value)}, not a string", fix)
    return value


def _check_teacher_paths(config: Any) -> None:
    for flag, value, wanted in (("--teacher", config.teacher, "file.py:factory, a .pt2 or an .onnx path"),
                                ("--weights", config.weights, "the path of the teacher's state dict")):
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{flag} is empty", f"pass {wanted}, or leave {flag} out")
    from edgekd.teacher_spec import check_no_weights

    check_no_weights(config.teacher, config.weights)  # here, at no cost: the teacher loads after the data
    if config.weights is not None and config.teacher is None:
        # Without --teacher the embedded default is trained, and the weights would be dropped unread.
        raise ConfigError("--weights is given without --teacher, so the weights have no model to load into",
                          "pass --teacher with the model they belong to (file.py:factory or package.module:factory), "
                          "or drop --weights")


def _check_teacher_layers(config: Any) -> None:
    """The pruned space and the feature losses need the teacher's layers in PyTorch: with a .pt2 or an .onnx
    teacher they were refused only once the data was loaded, the teacher scored and exported (and, for pruned,
    the search begun). Neither applies to a student already distilled, and the space none to a search reused."""
    from edgekd.teacher_spec import layerless_kind

    kind = layerless_kind(config.teacher)
    if kind is None or config.distilled:
        return
    fix = "or pass the teacher as file.py:factory with --weights"
    if not config.search_file and "pruned" in config.search_config().spaces():
        raise ConfigError(f"the 'pruned' space (--space {config.space}) cuts channels from the teacher's own "
                          f"layers, and teacher '{config.teacher}' is {kind}, which has none in PyTorch",
                          f"leave pruned out of --space (mbv2, resnet), {fix}")
    from edgekd.distill.losses import LOSSES
    from edgekd.types import parse_losses

    # The losses alone: the whole training config would refuse a lone --hint-student in its Python API's words
    # first, and this refusal, the one that applies, came only after the flag was fixed.
    tapping = [name for name, _ in parse_losses(config.losses) if LOSSES.get(name).features]
    if tapping:
        many = len(tapping) > 1
        raise ConfigError(f"the feature loss{'es' * many} {', '.join(tapping)} tap{'s' * (not many)} the teacher's "
                          f"layers, and teacher '{config.teacher}' is {kind}, which has none to tap",
                          f"use kd, dkd or dist in --losses, {fix}")


def check_teacher_files(config: Any) -> None:
    """What loading the teacher would refuse without running anything, refused before the data, which loads
    first and can take minutes to decode: a teacher or weights file that is not there, a spec of no known form,
    a factory without its weights. The user's module is not imported here: importing it runs its code, which
    happens once, after the data, as before."""
    spec, weights = config.teacher, config.weights
    if not isinstance(spec, str) or not spec.strip():
        return
    from edgekd.teacher import load_teacher
    from edgekd.teacher_spec import is_program, layerless_kind, parse_factory_ref, spec_file

    if layerless_kind(spec) is not None:
        what, fix = ("program", "check the .pt2 path") if is_program(spec) else ("model", "check the .onnx path")
        if not Path(spec).expanduser().is_file():
            raise ModelError(f"teacher {what} '{spec}' does not exist", fix)
        return
    try:
        parse_factory_ref(spec)
    except ModelError:
        load_teacher(spec)  # imports nothing here, and names a weights or TorchScript file given as the teacher
        raise
    file = spec_file(spec)  # None: package.module:factory, found only by importing it
    if file is not None and not Path(file).expanduser().is_file():
        raise ModelError(f"teacher module file '{file}' does not exist", "check the path before ':'")
    if weights is None:
        raise ModelError(f"teacher '{spec}' needs its trained weights", "pass --weights path/to/state_dict.pt")
    if not Path(weights).expanduser().is_file():
        said = "is a folder, not a file" if Path(weights).expanduser().is_dir() else "does not exist"
        raise ModelError(f"weights file '{weights}' {said}", "check the --weights path")


def _check_search_file(path: Any) -> None:
    """A search file that is not there, refused before the data, the teacher and its export, not after them."""
    if path is None:
        return
    if not isinstance(path, (str, Path)):
        raise ConfigError(f"search_file is {kind_of(path)}, not a path",
                          "pass the path of the search.json `edgekd search --out FILE` wrote")
    if not str(path).strip():
        raise ConfigError("--search is empty", "pass the search.json `edgekd search --out FILE` wrote, or leave "
                                               "--search out")
    if not Path(path).exists():
        raise ConfigError(f"search file '{path}' does not exist", "run `edgekd search --out FILE` first")
    if Path(path).is_dir():
        raise ConfigError(f"search file '{path}' is a folder, not a file",
                          "pass the search.json `edgekd search --out FILE` wrote")


def _check_hints(student: Any, teacher: Any) -> None:
    """--hint-student and --hint-teacher pair modules in order, so they come together and in equal numbers."""
    for name, value in (("hint_student", student), ("hint_teacher", teacher)):
        if value is not None and not isinstance(value, str):  # only the Python API can pass another type
            raise ConfigError(f"{name} is {kind_of(value)}, not a string",
                              "pass comma-separated module paths, e.g. 'layer3,layer4'")
    paths = [[p for p in (v or "").split(",") if p.strip()] for v in (student, teacher)]
    if bool(paths[0]) != bool(paths[1]):
        given, missing = ("--hint-student", "--hint-teacher") if paths[0] else ("--hint-teacher", "--hint-student")
        raise ConfigError(f"{given} is given without {missing}",
                          f"pass {missing} too (one module path for each of {given}'s, paired in order), or "
                          "neither to tap each model's last feature map")
    if len(paths[0]) != len(paths[1]):
        raise ConfigError(f"--hint-student names {len(paths[0])} module{'s' * (len(paths[0]) > 1)} and "
                          f"--hint-teacher {len(paths[1])}",
                          "pair every student module with one teacher module, in order")


def run_data(config: Any, log: Log) -> Any:
    """The run's data, said in one line: every stage command shows what it trains and measures on."""
    from edgekd.data import Dataset, load_data

    if isinstance(config.data, Dataset):
        data = config.data
    else:
        data = load_data(config.data, resolution=config.resolution, seed=config.seed, normalize=config.normalize,
                         channels=config.channels, log=log)
    if not len(data.y_train):
        raise DataError(f"data '{data.name}' holds only a test split (x_test, y_test), nothing to train on",
                        "pass data with training images (x and y, or x_train/y_train as well); a test set alone "
                        "is for `edgekd validate` and `edgekd gate`")
    log(f"data: {data.name} {data.input_shape}, {data.num_classes} classes, "
        f"{len(data.y_train)}/{len(data.y_val)}/{len(data.y_test)} train/val/test")
    for note in data.notes:
        log(f"warning: {note}")
    from edgekd.validate import untested_note

    for note in untested_note(data):  # said before the training too, not only in the run's notes
        log(f"warning: {note}")
    return data


def run_teacher(config: Any, data: Any, log: Log) -> Any:
    from edgekd.teacher import check_fits, default_teacher, from_module, load_teacher, logits_only

    if isinstance(config.teacher, str) and config.teacher:
        teacher = load_teacher(config.teacher, config.weights)
    elif config.teacher is not None and not isinstance(config.teacher, str):
        teacher = from_module(config.teacher)
    else:
        log("teacher: embedded default (trained once, then cached)")
        from edgekd.data import split_seed_of

        # the seed that dealt the data it trains on (a Dataset passed in was split before, not with --seed)
        teacher = default_teacher(data, progress=config.progress, log=log, seed=split_seed_of(data))
    if hasattr(teacher.module, "bind"):  # an ONNX teacher: fed and read as the data needs
        for note in teacher.module.bind(data):
            log(f"teacher: {note}")
    taken = logits_only(teacher, data)
    if taken is not teacher:
        log("teacher: its forward returns a mapping of outputs; distilling and exporting its 'logits' (its layers "
            "are named under 'model.' for --hint-teacher)")
    teacher = taken
    check_fits(teacher, data)
    if config.teacher is not None:  # the default one was trained on this very data
        _check_teacher_knows_the_data(teacher, data, config, log)
    return teacher


def near_chance(accuracy: float, num_classes: int) -> bool:
    """Within a tenth of the way from chance to perfect: a model that has learned nothing usable."""
    chance = 1.0 / num_classes
    return accuracy < chance + 0.1 * (1 - chance)


CHECKED_IMAGES = 512  # enough to tell a teacher at chance level from a working one, quick on any teacher


def sampled(count: int, most: int, seed: int) -> Any:
    """Sorted indices of up to ``most`` of ``count`` images, drawn with the run's ``seed``: the splits are in
    class order, so their first images would be the first classes' alone."""
    import numpy as np

    return np.sort(np.random.default_rng(seed).permutation(count)[:most])


def _check_teacher_knows_the_data(teacher: Any, data: Any, config: Any, log: Log) -> None:
    """A user's teacher that scores near chance on the data was almost always fed other preprocessing
    (normalisation, resolution, channels, class order) than it was trained with; distilling from it
    would train for hours toward noise, so it is refused before any of that."""
    from edgekd.distill.targets import accuracy, predict

    picked = sampled(len(data.y_val), CHECKED_IMAGES, config.seed)
    x, y = data.x_val[picked], data.y_val[picked]
    acc = accuracy(predict(teacher.module, x), y)
    chance = 1.0 / data.num_classes
    log(f"teacher: {acc * 100:.1f}% on {len(y)} validation images (chance: {chance * 100:.1f}%)")
    if not near_chance(acc, data.num_classes):
        return
    said = (f"the teacher scores {acc * 100:.1f}% on {len(y)} validation images of '{data.name}', about chance "
            f"({chance * 100:.1f}%)")
    fix = ("feed it what it was trained on: --normalize (mean/std), --resolution, --channels, and labels in the "
           "order of its outputs")
    if not config.labels:  # unlabelled data: its labels may be placeholders, so only say it
        log(f"warning: {said}; if the labels are real, {fix}")
        return
    raise DataError(said, fix)


# CompressConfig fields no flag sets, so a recipe may not either (the command line could never win over them), and
# a run's records leave them out: its recorded recipe loads back as a recipe. The int8 artifact's details record
# the calibration inputs it was fed.
NOT_RECIPE_KEYS = frozenset({"force", "progress", "calibration_samples"})


def recipe(config: Any, fields: list[str]) -> dict[str, Any]:
    """What a manifest or distill.json records of the run's options, as a recipe's keys. A teacher or data
    passed in memory has no path to record: null, beside the teacher's source and the data's own description."""
    out = {k: config.setting(k) for k in fields if k not in NOT_RECIPE_KEYS}
    if "normalize" in out and out["normalize"] is None:
        out["normalize"] = "dataset"  # what not giving it means, as a record read later states it
    for key in ("teacher", "data"):
        if out.get(key) is not None and not isinstance(out[key], str):
            out[key] = None
    if "profile" in out:
        from edgekd.profiles import profile_record

        out["profile"] = profile_record(out["profile"])
    return out


def input_file(key: str, value: Any) -> str | None:
    """The file or folder the input setting ``key`` names, as typed; None for none, 'digits', a profile by
    name (looked up among the profiles) or a teacher imported by module (package.module:factory)."""
    if not isinstance(value, str) or not value.strip() or value == "digits":
        return None
    if key == "teacher":
        from edgekd.teacher_spec import spec_file

        return spec_file(value)
    if key == "profile" and not value.lower().endswith(".toml"):
        return None
    return value
