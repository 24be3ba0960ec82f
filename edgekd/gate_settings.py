"""The gate's settings from pyproject.toml (``[tool.edgekd.gate]``), checked for type where they are read, so a
wrong type is named with its key and file rather than failing later as a TypeError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd import tomlread
from edgekd.errors import ConfigError, did_you_mean

DEFAULT_PYPROJECT = Path("pyproject.toml")
_NUMBER = (int, float)
# key: (TOML types it may have, the type of a list's items (None: no list), an example value)
_TYPES: dict[str, tuple[tuple[type, ...], type | None, str]] = {
    "max_size": ((str, *_NUMBER), None, '"512KB"'),
    "max_latency": ((str, *_NUMBER), None, '"2ms"'),
    "latency_tolerance": (_NUMBER, None, "0.1"),
    "rounds": ((int,), None, "3"),
    "min_accuracy": (_NUMBER, None, "0.97"),
    "data": ((str,), None, '"data/test.npz"'),
    "resolution": ((int, str, list), int, '"240x320"'),
    "normalize": ((str,), None, '"dataset"'),
    "channels": ((int, str), None, "3"),
    "seed": ((int,), None, "0"),
    "profile": ((str,), None, '"host-cpu-1t"'),
    "allowed_ops": ((str, list), str, '["Conv", "Relu", "Gemm"]'),
    "max_opset": ((int,), None, "17"),
    "baseline": ((str,), None, '"baseline/manifest.json"'),
    "artifact": ((str,), None, '"student-int8"'),
    "input_shape": ((str, list), int, '"1,3,224,224"'),
    "max_size_growth": (_NUMBER, None, "0.05"),
    "max_accuracy_drop": (_NUMBER, None, "0.5"),
    "min_class_accuracy": (_NUMBER, None, "0.8"),
    "ops_config": ((str,), None, '"app/required_operators.config"'),
    "no_latency": ((bool,), None, "true"),
}


def pyproject_settings(path: Path = DEFAULT_PYPROJECT, required: bool = False) -> dict[str, Any]:
    """The ``[tool.edgekd.gate]`` table, keys with underscores. A missing file is no settings, unless
    ``required`` (a file the user named)."""
    if required and (path.is_dir() or not path.exists()):
        raise ConfigError(f"--config '{path}' {'is a folder' if path.is_dir() else 'does not exist'}",
                          "pass a pyproject.toml file, or drop --config to read ./pyproject.toml when there is one")
    if not required and not path.is_file():
        return {}
    try:
        # utf-8-sig: a byte-order mark, which Windows editors still write, read as a syntax error at line 1
        data = tomlread.loads(path.read_text(encoding="utf-8-sig"))
    except tomlread.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML ({exc})", "fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text", "pass a pyproject.toml file") from None
    table = _table(path, data, ("tool", "edgekd", "gate"))
    # Always, not only without a gate table: a [tool.edgekd.gates] beside a one-line gate table was skipped, and
    # the gate passed holding the model to less than the file says.
    _check_no_near_miss(path, data, required)
    for key, value in table.items():
        _check_known(path, key)
        _check_type(path, key, value)
    _check_one_spelling(path, table)
    return _beside(path, {k.replace("-", "_"): v for k, v in table.items()})


def _check_known(path: Path, key: str) -> None:
    """An unknown key named as written and where: refused later, among the flags' values, it read as a flag
    the user never gave (max_sise for max-sise), with no word of the file."""
    if key.replace("-", "_") in _TYPES:
        return
    known = sorted(k if "_" in key else k.replace("_", "-") for k in _TYPES)  # in the user's own spelling
    raise ConfigError(f"{path}: [tool.edgekd.gate] has no setting '{key}'",
                      f"{did_you_mean(key, known)}valid: {', '.join(known)}")


def _check_one_spelling(path: Path, table: dict[str, Any]) -> None:
    """max-size and max_size are one setting: written both ways, one would silently win over the other."""
    seen: dict[str, str] = {}
    for key in table:
        name = key.replace("-", "_")
        if name in seen:
            raise ConfigError(f"{path}: [tool.edgekd.gate] sets {name} twice, as {seen[name]} and {key} (the same "
                              "setting)", f"keep one of {seen[name]} and {key}")
        seen[name] = key


def _beside(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Relative paths in a config file are read from the file's folder, as a CI job keeping its settings in
    ci/pyproject.toml writes them; 'digits' and profile names are no paths. ~ is the home folder, as in a flag
    (joined to ci/ first, "~/test.npz" read as ci/~/test.npz)."""
    folder = path.parent
    here = folder.resolve() == Path.cwd().resolve()
    out = dict(settings)
    for key in ("data", "baseline", "profile", "ops_config"):
        value = out.get(key)
        if not isinstance(value, str) or not value or value == "digits":
            continue
        if key == "profile" and not value.lower().endswith(".toml"):
            continue
        if value.startswith("~"):
            out[key] = str(Path(value).expanduser())
        elif not here and not Path(value).is_absolute():
            out[key] = str(folder / value)
    return out


def _table(path: Path, data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """data[keys[0]][keys[1]]...: {} where absent, refused where one is not a table."""
    for i, key in enumerate(keys):
        data = data.get(key, {})
        if not isinstance(data, dict):
            where = ".".join(keys[:i])
            raise ConfigError(f"{path}: {key} in [{where}] is {_show(data)}, not a table" if where else
                              f"{path}: {key} is {_show(data)}, not a table",
                              f"write the gate's settings under a [{'.'.join(keys)}] header")
    return data


def _reads_as_gate(table: Any) -> bool:
    """Whether a [tool.*] table holds a gate table or gate settings, as a misspelt [tool.edgekd] would."""
    return isinstance(table, dict) and ("gate" in table or any(str(k).replace("-", "_") in _TYPES for k in table))


def _folded(name: Any) -> str:
    """A header's name as one compares it to another: edgeKD, edge-kd and edge_kd are edgekd."""
    return str(name).lower().replace("-", "").replace("_", "")


def _misplaced(data: dict[str, Any]) -> str | None:
    """The header of a table meant for edgekd that edgekd never reads, as written: [edgekd.gate] (no tool.),
    [tools.edgekd.gate], [tool.EdgeKD.gate], [tool.edge-kd]; or None. [tool.edgedb] or [tool.edge] is another
    tool's, named alike: a [tool.*] table merely close to edgekd counts only where it reads as the gate's."""
    import difflib

    for top, table in data.items():
        if not isinstance(table, dict):
            continue
        if _folded(top) == "edgekd":
            return _header(str(top), table)
        if _folded(top) not in ("tool", "tools"):
            continue
        for name, inner in table.items():
            if top == "tool" and name == "edgekd":
                continue  # read, and checked by _check_no_near_miss
            close = difflib.get_close_matches("edgekd", [_folded(name)], n=1, cutoff=0.7)
            if _folded(name) == "edgekd" or (close and _reads_as_gate(inner)):
                return _header(f"{top}.{name}", inner)
    return None


def _header(name: str, table: dict[str, Any]) -> str:
    gate = next((k for k in table if _folded(k) == "gate" and isinstance(table[k], dict)), None)
    return f"[{name}.{gate}]" if gate else f"[{name}]"


# [tool.edgekd.<these>] tables hold another command's settings, which pyproject.toml does not give it
_OTHER_COMMANDS = ("compress", "search", "distill")


def _stray_fix(path: Path, name: str, value: Any) -> str:
    """Where a [tool.edgekd] entry beside (or instead of) the gate table belongs: the gate table for gate
    settings; a recipe for compress's (moved into the gate table, they were refused there in turn)."""
    keys = [str(k) for k in value] if isinstance(value, dict) else [name]
    if name not in _OTHER_COMMANDS and any(k.replace("-", "_") in _TYPES for k in keys):
        return (f"move {name} under the [tool.edgekd.gate] header" if not isinstance(value, dict) else
                "move its settings under the [tool.edgekd.gate] header")
    what = f"[tool.edgekd.{name}]" if isinstance(value, dict) else name
    return (f"remove {what} from {path.name}, which holds the gate's settings only, and keep compress's (search's, "
            "distill's) settings in a recipe file: edgekd compress --config recipe.toml")


def _check_no_near_miss(path: Path, data: dict[str, Any], named: bool) -> None:
    """Settings written under another header ([tool.edgekd], [tool.edgekd.gates], [tool.edge-kd.gate],
    [edgekd.gate], [tools.edgekd.gate]) would be skipped, with or without a gate table beside them, and a gate
    holding the model to less than the user wrote passes: [tool.edgekd.gate] is the only table edgekd reads. A
    file the user named (``named``) must hold the gate table unless it is empty."""
    tool = data.get("tool") if isinstance(data.get("tool"), dict) else {}
    ours = tool.get("edgekd")
    gate = isinstance(ours, dict) and "gate" in ours
    stray = sorted(k for k in ours if k != "gate") if isinstance(ours, dict) else []
    if stray and gate:
        found = stray[0]
        what = f"a [tool.edgekd.{found}] table" if isinstance(ours[found], dict) else f"'{found}'"
        raise ConfigError(f"{path}: [tool.edgekd] holds {what} beside the gate table, and edgekd reads only "
                          "[tool.edgekd.gate], so it would be skipped", _stray_fix(path, found, ours[found]))
    if stray:
        raise ConfigError(f"{path}: [tool.edgekd] holds '{stray[0]}' and no gate table, so edgekd reads no gate "
                          "settings from it", _stray_fix(path, stray[0], ours[stray[0]]))
    header = _misplaced(data)
    if header:
        raise ConfigError(f"{path}: {header} is not a table edgekd reads, so its settings would be skipped",
                          "write the gate's settings under a [tool.edgekd.gate] header")
    if gate:
        return  # an empty table: no settings, as written
    if named and data:
        raise ConfigError(f"--config '{path}' has no [tool.edgekd.gate] table, so it sets nothing",
                          "write the gate's settings under a [tool.edgekd.gate] header, or drop --config")


def _check_type(path: Path, key: str, value: Any) -> None:
    name = key.replace("-", "_")
    if name not in _TYPES:
        return  # build_config names an unknown key with the valid ones
    types, item, example = _TYPES[name]
    fits = isinstance(value, types) and (bool in types or not isinstance(value, bool))  # TOML's true is no number
    if fits and isinstance(value, list):
        fits = bool(item) and all(isinstance(v, item) and not isinstance(v, bool) for v in value)  # type: ignore[arg-type]
    if not fits:
        raise ConfigError(f"{path}: [tool.edgekd.gate] {key} = {_show(value)} is not {_kind(types, item)}",
                          f"write e.g. {key} = {example}")


def _kind(types: tuple[type, ...], item: type | None) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: f"a list of {_plural(item)}",
             bool: "true or false"}
    said = [names[t] for t in types if not (t is int and float in types)]
    return " or ".join(said) if len(said) < 3 else f"{', '.join(said[:-1])} or {said[-1]}"


def _plural(item: type | None) -> str:
    return {str: "strings", int: "integers"}.get(item, "values")  # type: ignore[arg-type]


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except TypeError:  # a TOML date or time
        return str(value)
