"""Device profiles: TOML files describing a target's runtime, runner and measurement method.

Built-in profiles ship in the repository's ``profiles/`` folder (installed as package data);
users add their own with ``--profile path/to/file.toml`` or by dropping files into the user
profile folder (``$EDGEKD_PROFILE_DIR``, default ``~/.config/edgekd/profiles``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edgekd.errors import ProfileError

SCHEMA_VERSION = 1

# section -> key -> (type(s), allowed values or None, default)
_SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], tuple[Any, ...] | None, Any]]] = {
    "": {
        "schema": ((int,), (SCHEMA_VERSION,), SCHEMA_VERSION),
        "name": ((str,), None, None),
        "description": ((str,), None, ""),
        "calibrated_here": ((bool,), None, False),
    },
    "runtime": {
        "engine": ((str,), ("onnxruntime",), "onnxruntime"),
        "providers": ((list,), None, ["CPUExecutionProvider"]),
        "intra_op_threads": ((int,), None, 0),
        "inter_op_threads": ((int,), None, 1),
        "execution_mode": ((str,), ("sequential", "parallel"), "sequential"),
        "graph_optimization": ((str,), ("disable", "basic", "extended", "all"), "all"),
        "allow_spinning": ((bool,), None, True),
    },
    "runner": {
        "kind": ((str,), ("local",), "local"),
    },
    "measure": {
        "batch_size": ((int,), None, 1),
        "warmup_runs": ((int,), None, 20),
        "repeats": ((int,), None, 5),
        "runs_per_repeat": ((int,), None, 50),
        "max_cv": ((float, int), None, 0.10),
    },
}


@dataclass(frozen=True)
class DeviceProfile:
    """A target device: how to run and measure a model on it."""

    name: str
    description: str
    source: str  # file the profile was read from
    runtime: dict[str, Any] = field(hash=False)
    runner: dict[str, Any] = field(hash=False)
    measure: dict[str, Any] = field(hash=False)
    calibrated_here: bool = False

    @property
    def threads(self) -> int:
        return int(self.runtime["intra_op_threads"])

    def digest(self) -> str:
        """A hash of everything that affects a measurement (not the description)."""
        payload = repr((self.runtime, self.runner, self.measure)).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "runtime": dict(self.runtime),
            "runner": dict(self.runner),
            "measure": dict(self.measure),
            "calibrated_here": self.calibrated_here,
            "digest": self.digest(),
        }


def builtin_dir() -> Path:
    """Folder of the shipped profiles (a source checkout's ``profiles/`` or the installed copy)."""
    here = Path(__file__).resolve().parent
    checkout = here.parent / "profiles"
    if checkout.is_dir():
        return checkout
    return here / "builtin_profiles"


def user_dir() -> Path:
    env = os.environ.get("EDGEKD_PROFILE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgekd" / "profiles"


def _profile_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in (builtin_dir(), user_dir()):  # user files shadow built-ins of the same name
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found[path.stem] = path
    return found


def list_profiles() -> list[DeviceProfile]:
    """Every profile found, built-in and user, each loaded and validated."""
    return [load_profile_file(path) for path in _profile_files().values()]


def profile_names() -> list[str]:
    return sorted(_profile_files())


def load_profile(name_or_path: str | os.PathLike[str]) -> DeviceProfile:
    """Load a profile by name (built-in or user folder) or from a ``.toml`` path."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProfileError(f"profile file '{text}' does not exist", "check the path")
        return load_profile_file(path)
    files = _profile_files()
    if text not in files:
        raise ProfileError(
            f"unknown profile '{text}'",
            f"choose one of: {', '.join(sorted(files))} (or pass a path to a .toml file)",
        )
    return load_profile_file(files[text])


def load_profile_file(path: Path) -> DeviceProfile:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: malformed TOML ({exc})", "fix the syntax at that line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot be read ({exc})", "check the file's permissions and encoding") from None
    sections = {name: _check_section(path, name, raw if name == "" else raw.get(name, {})) for name in _SCHEMA}
    extra = sorted(k for k, v in raw.items() if k not in _SCHEMA[""] and k not in _SCHEMA)
    if extra:
        raise ProfileError(
            f"{path}: unknown key '{extra[0]}'",
            f"valid top-level keys are {', '.join(sorted(set(_SCHEMA['']) | set(_SCHEMA) - {''}))}",
        )
    top = sections[""]
    if not top.get("name"):
        raise ProfileError(f"{path}: missing key 'name'", "add name = \"...\" at the top of the file")
    profile = DeviceProfile(
        name=top["name"],
        description=top["description"],
        source=str(path),
        runtime=sections["runtime"],
        runner=sections["runner"],
        measure=sections["measure"],
        calibrated_here=top["calibrated_here"],
    )
    _check_ranges(path, profile)
    return profile


def _check_section(path: Path, section: str, raw: Any) -> dict[str, Any]:
    schema = _SCHEMA[section]
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: '{section}' must be a table", f"write it as [{section}]")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if section == "" and key in _SCHEMA:
            continue
        dotted = f"{section}.{key}" if section else key
        if key not in schema:
            raise ProfileError(f"{path}: unknown key '{dotted}'", f"valid keys are {', '.join(sorted(schema))}")
        types, allowed, _ = schema[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise ProfileError(
                f"{path}: key '{dotted}' must be {want}, got {type(value).__name__} {value!r}", "fix its value"
            )
        if allowed is not None and value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ProfileError(f"{path}: key '{dotted}' is {value!r}", f"use one of {choices}")
        out[key] = value
    for key, (_, _, default) in schema.items():
        if section == "" and key in _SCHEMA:
            continue
        out.setdefault(key, list(default) if isinstance(default, list) else default)
    return out


def _check_ranges(path: Path, profile: DeviceProfile) -> None:
    rules = [
        ("runtime.intra_op_threads", profile.runtime["intra_op_threads"], 0),
        ("runtime.inter_op_threads", profile.runtime["inter_op_threads"], 0),
        ("measure.batch_size", profile.measure["batch_size"], 1),
        ("measure.warmup_runs", profile.measure["warmup_runs"], 0),
        ("measure.repeats", profile.measure["repeats"], 1),
        ("measure.runs_per_repeat", profile.measure["runs_per_repeat"], 1),
    ]
    for key, value, low in rules:
        if value < low:
            raise ProfileError(f"{path}: key '{key}' is {value}", f"use a value of at least {low}")
    if not 0 < profile.measure["max_cv"] < 1:
        raise ProfileError(f"{path}: key 'measure.max_cv' is {profile.measure['max_cv']}", "use a value in (0, 1)")
