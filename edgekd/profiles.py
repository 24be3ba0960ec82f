"""Device profiles: TOML files describing a target's runtime, runner and measurement method.

Built-in profiles ship in the repository's ``profiles/`` folder (installed as package data);
users add their own with ``--profile path/to/file.toml`` or by dropping files into the user
profile folder (``$EDGEKD_PROFILE_DIR``, default ``~/.config/edgekd/profiles``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd import tomlread
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
    "runner": {},  # per kind: see _RUNNER_SCHEMA
    "measure": {
        "batch_size": ((int,), None, 1),
        "warmup_runs": ((int,), None, 20),
        "repeats": ((int,), None, 5),
        "runs_per_repeat": ((int,), None, 50),
        "max_cv": ((float, int), None, 0.10),
    },
}

# [runner] keys per kind; ``None`` as a default means optional and unset ("host" is checked as required).
_RUNNER_COMMON: dict[str, tuple[tuple[type, ...], tuple[Any, ...] | None, Any]] = {
    "kind": ((str,), ("local", "ssh", "adb"), "local"),
    "timeout_s": ((int, float), None, 600),
}
_RUNNER_SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], tuple[Any, ...] | None, Any]]] = {
    "local": dict(_RUNNER_COMMON),
    "ssh": {
        **_RUNNER_COMMON,
        "host": ((str,), None, None),
        "port": ((int,), None, 22),
        "user": ((str,), None, None),
        "identity_file": ((str,), None, None),
        "remote_dir": ((str,), None, "/tmp/edgekd"),
        "python": ((str,), None, "python3"),
        "connect_timeout_s": ((int,), None, 10),
    },
    "adb": {
        **_RUNNER_COMMON,
        "serial": ((str,), None, None),
        "remote_dir": ((str,), None, "/data/local/tmp/edgekd"),
        "mode": ((str,), ("python", "perf_test"), "python"),
        "python": ((str,), None, "python3"),
        "perf_test": ((str,), None, None),  # default: remote_dir + "/onnxruntime_perf_test"
    },
}
# Runner keys that change how a device is reached, not what is measured on it: left out of digest().
_NOT_MEASURED = ("timeout_s", "connect_timeout_s", "identity_file", "remote_dir")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+/-]*")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]*")
# runner.python goes to the device as one quoted word: its shell expands no ~ or $ and splits at no space.
_SAFE_PROGRAM = re.compile(r"[A-Za-z0-9._+/][A-Za-z0-9._+/-]*")
# A profile's name is the stem of the files written for it (latency tables beside its own file).
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


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
    def is_local(self) -> bool:
        """Measured on this host (the local runner), not on a device reached over ssh or adb."""
        return self.runner.get("kind", "local") == "local"

    @property
    def threads(self) -> int:
        return int(self.runtime["intra_op_threads"])

    def digest(self) -> str:
        """A hash of everything that affects a measurement (not the description)."""
        runner = {k: v for k, v in self.runner.items() if k not in _NOT_MEASURED}
        # Canonical JSON: the same settings written in another order are the same profile.
        payload = json.dumps([self.runtime, runner, self.measure], sort_keys=True).encode()
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


def runner_defaults(kind: str) -> dict[str, Any]:
    """Every [runner] key of ``kind`` with its default (``None`` for optional keys left unset)."""
    if kind not in _RUNNER_SCHEMA:
        raise ProfileError(f"unknown runner kind '{kind}'", f"use one of {', '.join(sorted(_RUNNER_SCHEMA))}")
    return {key: default for key, (_, _, default) in _RUNNER_SCHEMA[kind].items()}


def builtin_dir() -> Path:
    """Folder of the shipped profiles: the package edgekd.builtin_profiles (installed, or an editable install's
    mapping of a checkout's profiles/), else the profiles/ folder beside the package (a checkout on sys.path,
    not installed). Not the other way round: a profiles/ folder of the user's own beside an installed edgekd
    (a --target install into a project keeping its boards there) hid every shipped profile."""
    import importlib.util

    spec = importlib.util.find_spec("edgekd.builtin_profiles")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "profiles"


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
    """Every profile found, built-in and user, each loaded and validated as ``load_profile`` loads it by name:
    a file whose ``name`` is not its file name is refused, as a listed name has to load."""
    return [_load_found(name, path) for name, path in _profile_files().items()]


def profile_names() -> list[str]:
    return sorted(_profile_files())


def load_profile(name_or_path: str | os.PathLike[str] | DeviceProfile) -> DeviceProfile:
    """Load a profile by name (built-in or user folder) or from a ``.toml`` path; a loaded one as it is."""
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    text = str(name_or_path)
    if _names_a_file(text):
        path = Path(text).expanduser()
        if path.is_dir():
            raise ProfileError(f"profile '{text}' is a folder, not a .toml file",
                               "pass the profile file itself, or put it in the user profile folder")
        if not path.is_file():
            raise ProfileError(f"profile file '{text}' does not exist", "check the path")
        return load_profile_file(path)
    files = _profile_files()
    if text not in files:
        raise ProfileError(
            f"unknown profile '{text}'",
            f"choose one of: {', '.join(sorted(files))} (or pass a path to a .toml file)",
        )
    return _load_found(text, files[text])


def profile_file(profile: Any) -> str | None:
    """The file a profile (a name, a path or a loaded one) is read from, as ``load_profile`` finds it, for
    outputs to keep clear of: a user's board profile is theirs, like their model. None when there is no such
    file (a name or path found nowhere is refused when the command loads it) or it was rebuilt from a
    manifest's record. Found without reading it: the command reads it once, later."""
    if isinstance(profile, DeviceProfile):
        return profile.source if profile.source != RECORDED else None
    text = str(profile)
    found = Path(text).expanduser() if _names_a_file(text) else _profile_files().get(text)
    return str(found) if found is not None and found.is_file() else None


def _names_a_file(text: str) -> bool:
    """Whether ``--profile`` text is a path to a .toml file rather than a profile's name."""
    return text.endswith(".toml") or os.sep in text


def _load_found(name: str, path: Path) -> DeviceProfile:
    """The profile file ``path``, found in a profile folder as ``name``."""
    profile = load_profile_file(path)
    if profile.name != name:  # recorded under its name, a run could not find its profile again by that name
        raise ProfileError(f"{path}: name = '{profile.name}', but the file is found as profile '{name}'",
                           f"make them agree: name = \"{name}\", or rename the file {profile.name}.toml")
    return profile


def profile_arg(profile: DeviceProfile) -> str:
    """What to pass a command as its profile to get ``profile`` again, for a fix to quote: its name where the
    name finds this same file (a shipped or user-folder profile), else the path it was read from."""
    import shlex

    found = _profile_files().get(profile.name)
    if profile.source == RECORDED or found is not None and found.resolve() == Path(profile.source).resolve():
        return profile.name
    return shlex.quote(profile.source)


def load_recorded_profile(recorded: dict[str, Any]) -> DeviceProfile:
    """The profile a manifest's ``profile`` section records: its file while that is still there and still
    that profile, else the profile of that name here, else the recorded settings themselves (``source`` is
    then ``RECORDED``: a CI job gating a manifest elsewhere seldom has the profile file at the same path);
    ProfileError when none of them loads."""
    source, name = recorded.get("source"), recorded["name"]
    if source and Path(source).is_file():
        try:
            profile = load_profile_file(Path(source))
        except ProfileError:
            profile = None
        if profile is not None and profile.name == name:
            return profile
    try:
        return load_profile(name)
    except ProfileError:
        if not recorded.get("runtime") or not recorded.get("runner"):  # written before they were recorded
            raise
        return profile_from_record(recorded)


def load_profile_file(path: Path) -> DeviceProfile:
    try:
        raw = tomlread.loads(path.read_text(encoding="utf-8"))
    except tomlread.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: malformed TOML ({exc})", "fix the syntax at that line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot be read ({exc})", "check the file's permissions and encoding") from None
    return _from_raw(path, raw, str(path))


# The source of a profile rebuilt from the settings a manifest records, not read from a file.
RECORDED = "(settings recorded in the manifest)"


def profile_from_record(recorded: dict[str, Any]) -> DeviceProfile:
    """The profile a manifest's ``profile`` section records, rebuilt from its settings and checked as a file's
    would be: a manifest carries all it takes to measure again where its profile's file is not."""
    raw: dict[str, Any] = {k: recorded[k] for k in ("name", "description", "calibrated_here") if k in recorded}
    raw.update({k: dict(recorded.get(k) or {}) for k in ("runtime", "runner", "measure")})
    return _from_raw(Path(f"the manifest's profile '{recorded.get('name')}'"), raw, RECORDED)


def _from_raw(path: Path, raw: dict[str, Any], source: str) -> DeviceProfile:
    sections = {name: _check_section(path, name, raw if name == "" else raw.get(name, {}))
                for name in _SCHEMA if name != "runner"}
    sections["runner"] = _check_runner(path, raw.get("runner", {}))
    extra = sorted(k for k, v in raw.items() if k not in _SCHEMA[""] and k not in _SCHEMA)
    if extra:
        raise ProfileError(
            f"{path}: unknown key '{extra[0]}'",
            f"valid top-level keys are {', '.join(sorted(set(_SCHEMA['']) | set(_SCHEMA) - {''}))}",
        )
    top = sections[""]
    if not top.get("name"):
        raise ProfileError(f"{path}: missing key 'name'", "add name = \"...\" at the top of the file")
    # A manifest's record is exempt: it writes no files, and one made before the rule must still be gated.
    if source != RECORDED and not _PROFILE_NAME.fullmatch(top["name"]):
        raise ProfileError(f"{path}: name = {top['name']!r} is not a plain file name",
                           "use letters, digits, '-', '_' and '.', not starting with '.' (no path separators or "
                           "spaces): files named after the profile are written beside it")
    profile = DeviceProfile(
        name=top["name"],
        description=top["description"],
        source=source,
        runtime=sections["runtime"],
        runner=sections["runner"],
        measure=sections["measure"],
        calibrated_here=top["calibrated_here"],
    )
    _check_ranges(path, profile)
    return profile


def _check_section(path: Path, section: str, raw: Any,
                   schema: dict[str, tuple[tuple[type, ...], tuple[Any, ...] | None, Any]] | None = None,
                   ) -> dict[str, Any]:
    schema = _SCHEMA[section] if schema is None else schema
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
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):  # every list key holds names
            bad = next(v for v in value if not isinstance(v, str))
            raise ProfileError(f"{path}: key '{dotted}' must be a list of strings, and it holds "
                               f"{type(bad).__name__} {bad!r}", 'quote each entry, e.g. ["CPUExecutionProvider"]')
        if allowed is not None and value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ProfileError(f"{path}: key '{dotted}' is {value!r}", f"use one of {choices}")
        out[key] = value
    for key, (_, _, default) in schema.items():
        if section == "" and key in _SCHEMA:
            continue
        out.setdefault(key, list(default) if isinstance(default, list) else default)
    return out


# Beyond these a setting is a typo: onnxruntime takes thread counts as C ints and starts every thread it is
# given (a session with 10**5 threads exhausts the machine before it reports), and a measurement of 10**7 runs
# would take days. Bounds of a machine far larger than any edge device, so no real setting meets them.
_MAX_THREADS = 1024
_MAX_RUNS = 1_000_000


def _check_ranges(path: Path, profile: DeviceProfile) -> None:
    rules = [
        ("runtime.intra_op_threads", profile.runtime["intra_op_threads"], 0, _MAX_THREADS),
        ("runtime.inter_op_threads", profile.runtime["inter_op_threads"], 0, _MAX_THREADS),
        ("measure.batch_size", profile.measure["batch_size"], 1, _MAX_RUNS),
        ("measure.warmup_runs", profile.measure["warmup_runs"], 0, _MAX_RUNS),
        ("measure.repeats", profile.measure["repeats"], 1, _MAX_RUNS),
        ("measure.runs_per_repeat", profile.measure["runs_per_repeat"], 1, _MAX_RUNS),
    ]
    for key, value, low, high in rules:
        if value < low:
            raise ProfileError(f"{path}: key '{key}' is {value}", f"use a value of at least {low}")
        if value > high:
            raise ProfileError(f"{path}: key '{key}' is {value}", f"use a value of at most {high}")
    if not 0 < profile.measure["max_cv"] < 1:  # nan included: it compares false
        raise ProfileError(f"{path}: key 'measure.max_cv' is {profile.measure['max_cv']}", "use a value in (0, 1)")


def _check_runner(path: Path, raw: Any) -> dict[str, Any]:
    """The [runner] table, checked against the keys of its kind, with that kind's defaults filled in."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: 'runner' must be a table", "write it as [runner]")
    kind = _check_section(path, "runner", {"kind": raw.get("kind", "local")}, _RUNNER_COMMON)["kind"]
    schema = _RUNNER_SCHEMA[kind]
    unknown = sorted(k for k in raw if k not in schema)
    if unknown:
        raise ProfileError(f"{path}: unknown key 'runner.{unknown[0]}' for runner kind '{kind}'",
                           f"valid keys for kind '{kind}' are {', '.join(sorted(schema))}")
    runner = _check_section(path, "runner", raw, schema)
    if kind == "adb" and runner["perf_test"] is None:
        runner["perf_test"] = runner["remote_dir"].rstrip("/") + "/onnxruntime_perf_test"
    _check_runner_values(path, runner)
    return runner


def _check_runner_values(path: Path, runner: dict[str, Any]) -> None:
    kind = runner["kind"]
    if not math.isfinite(runner["timeout_s"]) or runner["timeout_s"] <= 0:  # TOML reads inf and nan as floats
        raise ProfileError(f"{path}: key 'runner.timeout_s' is {runner['timeout_s']}",
                           "use a positive, finite number of seconds")
    if kind == "ssh" and not runner["host"]:
        raise ProfileError(f"{path}: runner kind 'ssh' needs key 'runner.host'",
                           'add host = "name-or-address" under [runner]')
    if kind == "ssh" and not 1 <= runner["port"] <= 65535:
        raise ProfileError(f"{path}: key 'runner.port' is {runner['port']}", "use a port between 1 and 65535")
    if kind == "ssh" and runner["connect_timeout_s"] < 1:
        raise ProfileError(f"{path}: key 'runner.connect_timeout_s' is {runner['connect_timeout_s']}",
                           "use at least 1 second")
    for key in ("host", "user", "serial"):
        value = runner.get(key)
        if value is not None and not _SAFE_NAME.fullmatch(value):
            raise ProfileError(f"{path}: key 'runner.{key}' is {value!r}",
                               "use a plain name or address (letters, digits, . _ : % and inner -; no spaces or @)")
    for key in ("remote_dir", "perf_test"):
        value = runner.get(key)
        if value is not None and not _SAFE_PATH.fullmatch(value):
            raise ProfileError(f"{path}: key 'runner.{key}' is {value!r}",
                               "use an absolute path of letters, digits and . _ + - / (no spaces or ~)")
    python = runner.get("python")
    if python and not _SAFE_PROGRAM.fullmatch(python):
        raise ProfileError(f"{path}: key 'runner.python' is {python!r}",
                           "give the absolute path of the Python on the device (e.g. /home/pi/venv/bin/python3) or "
                           "a program name on its PATH, in letters, digits and . _ + - / (no spaces, ~ or $: it "
                           "reaches the device as one word, which its shell does not expand)")
    for key in ("python", "perf_test", "identity_file"):
        if key in runner and runner[key] is not None and not runner[key].strip():
            raise ProfileError(f"{path}: key 'runner.{key}' is empty", "give a program name or path")
