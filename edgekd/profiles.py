"""Device profiles: TOML files describing a target's runtime, runner and measurement method.

Built-in profiles ship in the repository's ``profiles/`` folder (installed as package data);
users add their own with ``--profile path/to/file.toml`` or by dropping files into the user
profile folder (``$EDGEKD_PROFILE_DIR``, default ``~/.config/edgekd/profiles``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd import tomlread
from edgekd.errors import ProfileError
from edgekd.profile_schema import (  # noqa: F401  (SCHEMA_VERSION: this module's API)
    PROFILE_NAME,
    RUNNER_SCHEMA,
    SCHEMA,
    SCHEMA_VERSION,
    check_ranges,
    check_runner,
    check_section,
)

# Runner keys that change how a device is reached, not what is measured on it: left out of digest().
_NOT_MEASURED = ("timeout_s", "connect_timeout_s", "identity_file", "remote_dir")


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
        measured = self.measured_settings()
        # Canonical JSON: the same settings written in another order are the same profile.
        payload = json.dumps([measured["runtime"], measured["runner"], measured["measure"]], sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def measured_settings(self) -> dict[str, dict[str, Any]]:
        """The settings ``digest`` hashes, by table: what a latency table records, to name the one that changed."""
        return {"runtime": dict(self.runtime), "measure": dict(self.measure),
                "runner": {k: v for k, v in self.runner.items() if k not in _NOT_MEASURED}}

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
    if kind not in RUNNER_SCHEMA:
        raise ProfileError(f"unknown runner kind '{kind}'", f"use one of {', '.join(sorted(RUNNER_SCHEMA))}")
    return {key: default for key, (_, _, default) in RUNNER_SCHEMA[kind].items()}


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
    """The user profile folder (it need not exist yet); ProfileError when a file stands at its path: read as no
    folder, a typo in EDGEKD_PROFILE_DIR hid the user's profiles and sent calibrate's tables to a write that
    failed as "File exists"."""
    env = os.environ.get("EDGEKD_PROFILE_DIR")
    if env:
        folder, said = Path(env).expanduser(), f"EDGEKD_PROFILE_DIR '{env}'"
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        folder = Path(base) / "edgekd" / "profiles"
        said = f"the user profile folder {folder}"
    if folder.exists() and not folder.is_dir():
        raise ProfileError(f"{said} is a file, not a folder",
                           "point EDGEKD_PROFILE_DIR at a folder (default ~/.config/edgekd/profiles), or move the file "
                           "away")
    return folder


def _profile_files(user: bool = True) -> dict[str, Path]:
    """Profile name -> file, built-in and (with ``user``) in the user profile folder."""
    found: dict[str, Path] = {}
    for folder in (builtin_dir(), user_dir()) if user else (builtin_dir(),):  # user files shadow built-ins
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found[path.stem] = path
    return found


def shadowed(path: Path) -> bool:
    """Whether ``path`` is a built-in profile file hidden by a user profile file of the same name: no name loads
    it any more, the user's file is the profile of that name."""
    path = path.resolve()
    if path.parent != builtin_dir().resolve():
        return False
    found = _profile_files().get(path.stem)
    return found is not None and found.resolve() != path


def is_builtin(path: Path) -> bool:
    """Whether ``path`` is one of the shipped profile files (package files: a fix never asks to edit one)."""
    return Path(path).resolve().parent == builtin_dir().resolve()


def list_profiles() -> list[DeviceProfile]:
    """Every profile found, built-in and user, each loaded and validated as ``load_profile`` loads it by name:
    a file whose ``name`` is not its file name is refused, as a listed name has to load."""
    return [_load_found(name, path) for name, path in _profile_files().items()]


def profile_names(user: bool = True) -> list[str]:
    """Every profile name found; without ``user``, the built-in ones only."""
    return sorted(_profile_files(user))


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
        declared = next((path for path in files.values() if _declared_name(path) == text), None)
        if declared is not None:  # the name inside a file: the choices listed were that file's name, refused too
            raise ProfileError(f"unknown profile '{text}': {declared} declares name = '{text}', but profiles are "
                               f"found by file name, and it is found as '{declared.stem}'",
                               f"make them agree: rename the file {text}.toml, or set name = \"{declared.stem}\"")
        raise ProfileError(
            f"unknown profile '{text}'",
            f"choose one of: {', '.join(sorted(files))} (or pass a path to a .toml file)",
        )
    return _load_found(text, files[text])


def _declared_name(path: Path) -> str | None:
    """The ``name`` a profile file declares, or None where it cannot be read: only to explain a name not found."""
    try:
        name = tomlread.loads(path.read_text(encoding="utf-8-sig")).get("name")
    except (OSError, UnicodeDecodeError, tomlread.TOMLDecodeError):
        return None
    return name if isinstance(name, str) else None


def computed_here(profile: DeviceProfile) -> str:
    """Where an accuracy measured for a device's profile (ssh, adb) comes from: onnxruntime on this host, the
    latency alone being the device's. Said wherever both are shown, since a reader takes both for the device's."""
    return f"computed on this host with {profile.name}'s runtime settings, not on its device"


def profile_record(profile: Any) -> Any:
    """A profile as a run's recipe records it, as the CLI takes it: a loaded one by its name where
    ``load_profile(name)`` finds its file (or it was rebuilt from a manifest), else by that file's path;
    a name or path as it is."""
    if not isinstance(profile, DeviceProfile):
        return profile
    found = _profile_files().get(profile.name)
    if profile.source == RECORDED or (found is not None and str(found) == profile.source):
        return profile.name
    return profile.source


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
    that profile (its name and, where recorded, its settings' digest), else the profile of that name here,
    else the recorded settings themselves (``source`` is then ``RECORDED``: a CI job gating a manifest elsewhere
    seldom has the profile file at the same path); ProfileError when none of them loads. A file at the recorded
    path that now holds other settings gives way to the recorded ones where the manifest holds them: a manifest
    written before ``source`` was resolved names it relative to the folder compress ran in, where a folder
    gating it may hold another project's file of the same name (``recorded_file_changed`` says so)."""
    source, name = recorded.get("source"), recorded["name"]
    if source and Path(source).is_file():
        try:
            profile = load_profile_file(Path(source))
        except ProfileError:
            profile = None
        if profile is not None and profile.name == name:
            if not recorded_file_changed(recorded, profile):
                return profile
            rebuilt = _rebuilt(recorded)
            return rebuilt or profile  # settings not recorded (or not those digested): the file, as before
    try:
        return load_profile(name)
    except ProfileError:
        if not recorded.get("runtime") or not recorded.get("runner"):  # written before they were recorded
            raise
        return profile_from_record(recorded)


def recorded_file_changed(recorded: dict[str, Any], profile: DeviceProfile | None = None) -> bool:
    """Whether the file at a manifest's recorded profile ``source`` holds other settings than the recorded
    ones (its digest differs): it was edited since, or is another file of the same relative name."""
    source, digest = recorded.get("source"), recorded.get("digest")
    if not source or not digest or source == RECORDED:
        return False
    if profile is None:
        try:
            profile = load_profile_file(Path(source)) if Path(source).is_file() else None
        except ProfileError:
            profile = None
    return profile is not None and profile.digest() != digest


def rebuilt_why(recorded: dict[str, Any]) -> str:
    """Why a manifest is measured on its recorded settings, not on a file: none is here, or the file at the
    recorded path holds other settings (edited since, or a relative path that named another folder's)."""
    if recorded_file_changed(recorded):
        return (f", rebuilt from the settings the manifest records ({recorded['source']} holds other settings "
                "now)")
    return ", rebuilt from the settings the manifest records (no profile of that name or file here)"


def _rebuilt(recorded: dict[str, Any]) -> DeviceProfile | None:
    """The recorded settings as a profile when the manifest holds them and they are the ones it digested."""
    if not recorded.get("runtime") or not recorded.get("runner"):
        return None
    try:
        profile = profile_from_record(recorded)
    except ProfileError:
        return None
    return profile if profile.digest() == recorded.get("digest") else None


def recorded_source(profile: DeviceProfile) -> str:
    """A profile's ``source`` as a manifest records it: its file's resolved path (as ``data.source`` is), so
    that gate and validate run from another folder find that file and no other of the same relative name."""
    return profile.source if profile.source == RECORDED else str(Path(profile.source).resolve())


def load_profile_file(path: Path) -> DeviceProfile:
    try:
        # utf-8-sig: a file saved with a byte order mark (Windows Notepad) read as malformed at line 1, column 1
        raw = tomlread.loads(path.read_text(encoding="utf-8-sig"))
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
    sections = {name: check_section(path, name, raw if name == "" else raw.get(name, {}))
                for name in SCHEMA if name != "runner"}
    sections["runner"] = check_runner(path, raw.get("runner", {}))  # an unknown top-level key: check_section
    top = sections[""]
    if not top.get("name"):
        raise ProfileError(f"{path}: missing key 'name'", "add name = \"...\" at the top of the file")
    # A manifest's record is exempt: it writes no files, and one made before the rule must still be gated.
    if source != RECORDED and not PROFILE_NAME.fullmatch(top["name"]):
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
    check_ranges(path, profile)
    return profile
