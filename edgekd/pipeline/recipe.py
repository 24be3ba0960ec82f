"""A recipe TOML (``--config``, ``edgekd.load_recipe``): compress's flags as keys, each value checked against the
option it sets, read the same way from the command line and from Python."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from edgekd import tomlread
from edgekd.errors import ConfigError, did_you_mean
from edgekd.pipeline.config import CompressConfig, config_fields
from edgekd.run_inputs import NOT_RECIPE_KEYS as _NOT_KEYS  # no flag sets them, so a recipe may not either

# Recipe keys spelled as their flag where the flag's name differs from the config field's.
_RECIPE_ALIASES = {"search": "search_file"}


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe, as ``CompressConfig``'s keyword arguments: keys as the flags ('-' or '_'), each value checked
    against the type of the option it sets, so a wrong one is a one-line error naming the key instead of a crash
    deep in a stage (or, for 1.5 epochs, after the search); TOML lists and a losses table read as the flags'
    comma-separated strings. The CLI's ``--config`` reads it so too."""
    fields = {f.name: f for f in dataclasses.fields(CompressConfig) if f.init}
    values = {key: _recipe_value(path, key, value, recipe_kind(key, str(fields[key].type)), fields[key].default)
              for key, value in _recipe_keys(path).items()}
    for key, value in values.items():
        _check_recipe_path(path, key, value)
    return values


def _read_toml(path: Path) -> dict[str, Any]:
    """The recipe's TOML, each way of failing to read it named with its own fix."""
    if path.is_dir():
        raise ConfigError(f"recipe '{path}' is a folder, not a file", "pass the path of a recipe .toml file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"recipe '{path}' does not exist", "check the --config path") from None
    except OSError as exc:
        raise ConfigError(f"recipe '{path}' cannot be read ({exc.strerror or exc})",
                          "check that the file is readable") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as Windows editors write, read as bad syntax
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"recipe '{path}' is not UTF-8 text (line {line})", "save it as UTF-8") from None
    try:
        return tomlread.loads(text)
    except tomlread.TOMLDecodeError as exc:
        raise ConfigError(f"recipe '{path}' cannot be read ({exc})", "fix the TOML syntax") from None


def _recipe_keys(path: str | Path) -> dict[str, Any]:
    """The recipe's values by CompressConfig field; unknown keys and one key in two spellings are refused."""
    path = Path(path)
    raw = _read_toml(path)
    _check_sections(path, raw)
    if isinstance(raw.get("compress"), dict):  # a [compress] table, or keys at the top level, not both
        loose = sorted(k for k in raw if k != "compress")
        if loose:
            raise ConfigError(f"recipe '{path}' has keys both at the top level ({', '.join(loose)}) and in its "
                              "[compress] table, so one set would be ignored",
                              "move every key into the [compress] table, or drop the table header")
        raw = raw["compress"]
    known = set(config_fields()) - _NOT_KEYS
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in raw.items():
        name = _RECIPE_ALIASES.get(key, key.replace("-", "_"))
        if name in spelled:  # budget-ms and budget_ms, search and search_file: the last silently won
            raise ConfigError(f"recipe '{path}' sets one key twice, as '{spelled[name]}' and as '{key}'",
                              f"keep one of '{spelled[name]}' and '{key}'")
        spelled[name] = key
        if name not in known:
            keys = recipe_keys()
            raise ConfigError(f"recipe '{path}': unknown key '{key}'",
                              f"{did_you_mean(key.replace('_', '-'), keys)}valid keys are {', '.join(keys)}")
        out[name] = value
    return out


def _check_sections(path: Path, raw: dict[str, Any], within: str = "") -> None:
    """A [search] or [distill] section (any table but [compress] and losses) is not read: taken for the key of
    its name, [search] was refused as a search file path, and [distill] was told it meant 'distilled'."""
    for key, value in raw.items():
        if key == "compress" and not within and isinstance(value, dict):
            _check_sections(path, value, "compress.")
        elif isinstance(value, dict) and key != "losses":
            raise ConfigError(f"recipe '{path}' has a [{within}{key}] section, which edgekd does not read (a "
                              "recipe's keys go at the top level or in one [compress] table, losses the only table "
                              "among them)",
                              f"move the keys of [{within}{key}] to the top level or into [compress] (valid keys are "
                              f"{', '.join(recipe_keys())})")


def recipe_keys() -> list[str]:
    """The keys a recipe takes, spelled as compress's flags."""
    flags = {field: key for key, field in _RECIPE_ALIASES.items()}
    return sorted(flags.get(k, k.replace("_", "-")) for k in set(config_fields()) - _NOT_KEYS)


# What each recipe value must be, as its flag reads it; fields typed Any (the API also takes objects) by name.
_KINDS = {"int": "a whole number", "float": "a number", "str": "a quoted string", "bool": "true or false",
          "resolution": "one side or [height, width]"}
_ANY_KINDS = {"teacher": "str", "data": "str", "resolution": "resolution"}
_EXAMPLES = {"int": "8", "float": "2.5", "str": '"..."', "bool": "true", "resolution": "224"}
# Where the kind's example is no valid value, or the default (None: not given) gives none.
_KEY_EXAMPLES = {"channels": "3 (or 1)", "min_accuracy": "0.97", "normalize": '"dataset"'}
COMMA_LISTS = {"space", "losses", "hint_student", "hint_teacher"}  # comma-separated on the command line
# Recipe keys naming a file or folder the run reads; a profile is a path only where it is spelled as one.
_PATH_KEYS = ("teacher", "weights", "data", "search_file", "distilled", "profile")


def _check_recipe_path(recipe: str | Path, key: str, value: Any) -> None:
    """Paths in a recipe are read from the folder edgekd runs in, as on the command line; one that is missing
    there but lies beside the recipe was written relative to the recipe, and is named with both fixes."""
    from edgekd.run_inputs import input_file

    file = input_file(key, value) if key in _PATH_KEYS else None
    file = os.path.expanduser(file) if file else file  # "~/data.npz" is no path relative to the recipe's folder
    folder = Path(recipe).parent
    if not file or Path(file).is_absolute() or folder == Path(".") or Path(file).exists():
        return
    if (folder / file).exists():
        flag = "search" if key == "search_file" else key
        written = (folder / file).as_posix() + value[len(file):]  # a teacher keeps its :factory(args)
        raise ConfigError(f"recipe '{recipe}': {flag} '{value}' is not found from the folder edgekd runs in, though "
                          f"'{folder / file}' is (paths in a recipe are read from where edgekd runs, as flags are)",
                          f"write {flag} = \"{written}\", or run edgekd from '{folder}'")


def recipe_kind(name: str, annotation: str) -> str:
    """The kind of value (a key of _KINDS) the recipe key ``name``, typed ``annotation``, takes."""
    kind = _ANY_KINDS.get(name) or annotation.replace(" | None", "")
    if kind not in _KINDS:
        raise TypeError(f"recipe key '{name}' has type {annotation}, which load_recipe cannot check")
    return kind


def _recipe_value(path: str | Path, key: str, value: Any, kind: str, default: Any) -> Any:
    if key in COMMA_LISTS and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(v.strip() for v in value)  # a TOML list reads as the flag's comma-separated one
    if key == "losses" and isinstance(value, dict) and all(_is(v, "float") for v in value.values()):
        return ",".join(f"{name}:{weight}" for name, weight in value.items())
    if _is(value, kind):
        return value
    flag = key.replace("_", "-")
    example = json.dumps(default) if default is not None and _is(default, kind) else _KEY_EXAMPLES.get(
        key, _EXAMPLES[kind])
    also = ' or ["a", "b"]' if key in COMMA_LISTS else " or [240, 320]" if kind == "resolution" else ""
    raise ConfigError(f"recipe '{path}': {flag} = {json.dumps(value, default=str)} is {_kind_of(value)}, not "
                      f"{_KINDS[kind]}", f"write e.g. {flag} = {example}{also}")


def _is(value: Any, kind: str) -> bool:
    """``value`` (as TOML gives it) is of ``kind``; booleans are no numbers here, 1.0 no whole number."""
    if kind == "resolution":
        return type(value) in (int, str) or (isinstance(value, list) and all(type(v) is int for v in value))
    return type(value) in {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}[kind]


def _kind_of(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "a list",
             dict: "a table"}
    return names.get(type(value), "a date or time")
