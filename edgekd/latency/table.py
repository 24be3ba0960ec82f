"""Calibrated latency tables: per-block latencies measured on one profile, stamped so a table is
never used with another runtime version, another version of the profile or, for a local profile,
on another CPU."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekd.errors import ProfileError
from edgekd.fsutil import write_json
from edgekd.profiles import DeviceProfile, builtin_dir, profile_arg, user_dir

TABLE_SCHEMA = "edgekd.latency-table"
# 2: per-resolution fit, p10 units, networks kept; 3: units from each model's fastest p10 over runs;
# 4: stamped with the host CPU of a local profile
TABLE_VERSION = 4
DEFAULT_NETWORKS = 96  # whole networks `profiles calibrate` measures to fit its correction, unless --networks


@dataclass(frozen=True)
class Stamp:
    """What a table is valid for."""

    profile: str
    profile_digest: str
    onnxruntime: str
    space: str
    input_shape: tuple[int, int, int]
    num_classes: int
    space_digest: str = ""  # of the space's block list: a table outlives no change to the space
    host: str = ""  # a local profile's CPU (host_cpu); "" for a remote device, named by its runner settings
    # The batch it was measured at (quick_export.timing_batch). Tables written before it was stamped were measured
    # at batch 1, so an absent one reads as 1, and a batch-1 table is written without it, as before.
    batch_size: int = 1

    @classmethod
    def current(cls, profile: DeviceProfile, space: str, input_shape: tuple[int, ...], num_classes: int,
                onnxruntime: str | None = None) -> Stamp:
        """``onnxruntime``: the version the device reported; by default this machine's for a local
        profile and unknown ("") for a remote one, which says its version only when it measures."""
        from edgekd.latency.quick_export import timing_batch

        local = profile.is_local
        if onnxruntime is None:
            onnxruntime = host_runtime() if local else ""
        shape = tuple(int(d) for d in input_shape)
        return cls(profile.name, profile.digest(), onnxruntime, space, shape, int(num_classes),  # type: ignore[arg-type]
                   space_digest(space, shape, int(num_classes)), host_cpu() if local else "", timing_batch(profile))

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "input_shape": list(self.input_shape)}
        if self.batch_size == 1:
            del data["batch_size"]
        return data


@dataclass(frozen=True)
class LatencyTable:
    stamp: Stamp
    # precision -> block key -> latency in units of the reference network's, measured in the same run
    entries: dict[str, dict[str, float]] = field(hash=False)
    fit: dict[str, list[float]] = field(hash=False)  # precision -> coefficients on calibrate.network_features
    calibration_networks: int = 0
    seconds: float = 0.0
    reference_ms: float = 0.0  # the reference network's median p50 during calibration
    # The whole networks the fit was made on: {"keys": [spec key...], precision: [units...]}
    networks: dict[str, list] = field(default_factory=dict, hash=False)
    # The profile's measured settings (DeviceProfile.measured_settings), beside the stamp's digest of them: a
    # table refused for another profile digest names the setting that changed. Kept out of the stamp, whose
    # keys an older edgekd reads strictly.
    profile_settings: dict[str, Any] = field(default_factory=dict, hash=False)
    # The profile file it was calibrated from (resolved; "" before tables recorded it): two files of one name
    # share the table's path, and calibrating one must not silently replace the table the other can use.
    profile_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "stamp": self.stamp.to_dict()}
        return {"schema": TABLE_SCHEMA, "schema_version": TABLE_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        stamp = dict(data["stamp"])
        stamp["input_shape"] = tuple(stamp["input_shape"])
        if not isinstance(data["entries"], dict) or not isinstance(data["fit"], dict):  # read by precision
            raise ValueError("its entries or fit are not keyed by precision")
        settings = data.get("profile_settings")
        source = data.get("profile_source")
        return cls(Stamp(**stamp), data["entries"], data["fit"], data.get("calibration_networks", 0),
                   data.get("seconds", 0.0), float(data["reference_ms"]), data.get("networks", {}),
                   settings if isinstance(settings, dict) else {}, source if isinstance(source, str) else "")


def host_runtime() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


# Instruction sets onnxruntime's CPU kernels choose by (x86: AVX2 vs AVX-512 sets the NCHWc block, VNNI and AMX
# the int8 dot products; Arm: dot product, int8 matrix multiply, SVE). A virtual machine may hide some of a
# CPU's sets, so the model name alone does not say which kernels run.
KERNEL_FLAGS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "sve"})


@functools.cache
def cpu_info() -> tuple[str, tuple[str, ...]]:
    """This machine's ``parse_cpuinfo``; ("", ()) where there is no /proc/cpuinfo."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux
        return "", ()


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """(model name, the KERNEL_FLAGS it lists, sorted) from /proc/cpuinfo's text (x86 "flags", Arm
    "Features"; the first processor's)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    return fields.get("model name", ""), tuple(sorted(set(flags) & KERNEL_FLAGS))


@functools.cache
def host_cpu() -> str:
    """This machine's processor, its kernel-relevant instruction sets and the CPUs this process may use. A
    local profile measures "this host", so its table or cached measurement must not outlive a move to
    another CPU (a home folder shared between machines, a CI cache restored on another runner type): an
    AVX2 laptop's block latencies say nothing about a server with VNNI, nor 2 cores about 4."""
    import os
    import platform

    name, flags = cpu_info()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name or platform.processor() or platform.machine()} ({cpus} CPUs{'; ' if flags else ''}{' '.join(flags)})"


def space_digest(space: str, input_shape: tuple[int, ...], num_classes: int) -> str:
    import hashlib

    from edgekd.search.spaces import SPACES

    keys = SPACES.get(space).all_blocks(tuple(input_shape), num_classes)
    return hashlib.sha256(json.dumps([block_key(k) for k in keys]).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=4096)
def block_key(key: tuple) -> str:
    # cached: the predictor looks every block of every candidate up by it, and a space has a few hundred
    return ":".join(str(k) for k in key)


def table_path(profile: DeviceProfile, space: str, input_shape: tuple[int, ...], num_classes: int) -> Path:
    """Beside the user's profile file (built-in profiles get theirs in the user profile folder), one per
    input shape and class count: a project at 32x32 and one at 64x64 each keep their own."""
    shape = "x".join(str(d) for d in input_shape)
    return _table_folder(profile) / f"{profile.name}.{space}.{shape}-{num_classes}.latency.json"


def legacy_table_path(profile: DeviceProfile, space: str) -> Path:
    """Where tables were written before they were kept per input shape; still read (their stamp says which
    shape they hold)."""
    return _table_folder(profile) / f"{profile.name}.{space}.latency.json"


def find_table(profile: DeviceProfile, space: str, input_shape: tuple[int, ...], num_classes: int) -> Path | None:
    """The table file ``load_table`` reads for this input (``table_path``, else a ``legacy_table_path`` one),
    or None when neither exists."""
    for path in (table_path(profile, space, input_shape, num_classes), legacy_table_path(profile, space)):
        if path.is_file():
            return path
    return None


def _table_folder(profile: DeviceProfile) -> Path:
    source = Path(profile.source).resolve()
    return user_dir() if source.parent == builtin_dir().resolve() else source.parent


def save_table(table: LatencyTable, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, table.to_dict())


def load_table(profile: DeviceProfile, space: str, input_shape: tuple[int, ...], num_classes: int,
               path: Path | None = None) -> LatencyTable:
    """The calibrated table for this profile, space, input shape and classes (``table_path``, else one
    written before tables were kept per shape); refused if stamped for anything else."""
    shape_flags = f"--space {space} --input-shape {','.join(map(str, input_shape))} --classes {num_classes}"
    fix = f"run `edgekd profiles calibrate {profile_arg(profile)} {shape_flags}`"
    if path is None:  # a missing table is named by where calibrate would write it
        path = find_table(profile, space, input_shape, num_classes) or table_path(profile, space, input_shape,
                                                                                   num_classes)
    if not path.is_file():
        raise ProfileError(f"profile '{profile.name}' has no latency table for space '{space}' at input "
                           f"{'x'.join(map(str, input_shape))} ({path})", fix)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("schema") != TABLE_SCHEMA:  # valid JSON is not yet a table: []
            raise ValueError("not an edgekd latency table")
        if data.get("schema_version") != TABLE_VERSION:
            raise ProfileError(f"latency table '{path}' was written by another version of edgekd "
                               f"(table version {data.get('schema_version')}, this edgekd reads {TABLE_VERSION})",
                               f"recalibrate: {fix}")
        table = LatencyTable.from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ProfileError(f"latency table '{path}' is unreadable ({exc})", f"delete it and {fix}") from None
    _check_space(path, space)
    want = Stamp.current(profile, space, input_shape, num_classes)
    if table.calibration_networks and table.calibration_networks != DEFAULT_NETWORKS:
        fix = fix[:-1] + f" --networks {table.calibration_networks}`"  # as it was made: the default takes longer
    for name in ("profile_digest", "onnxruntime", "host", "input_shape", "num_classes", "batch_size"):
        have, need = getattr(table.stamp, name), getattr(want, name)
        if name in ("onnxruntime", "host") and not need:  # a remote device: checked when it next measures
            continue
        if have != need:
            changed = changed_settings(table.profile_settings, profile) if name == "profile_digest" else ""
            said = (f"profile '{profile.name}' with {changed}" if changed
                    else f"{name.replace('_', ' ')} {have}, not {need}")
            raise ProfileError(f"latency table '{path}' was calibrated for {said}", f"recalibrate: {fix}")
    if table.stamp.space_digest != want.space_digest:
        raise ProfileError(f"latency table '{path}' was calibrated for an older version of search space '{space}'",
                           f"recalibrate: {fix}")
    if damage := damaged(table, space):
        raise ProfileError(f"latency table '{path}' is damaged: {damage}", f"recalibrate: {fix}")
    return table


def changed_settings(recorded: dict[str, Any], profile: DeviceProfile) -> str:
    """The measured settings of ``profile`` that differ from those a table ``recorded``, as "measure.warmup_runs
    2 (now 3)"; "" when the table recorded none (written before tables did)."""
    if not recorded:
        return ""
    now = profile.measured_settings()
    changed = []
    for part in sorted(set(now) | set(recorded)):
        was, is_ = recorded.get(part) or {}, now.get(part) or {}
        changed += [f"{part}.{key} {was.get(key, '(unset)')} (now {is_.get(key, '(unset)')})"
                    for key in sorted(set(was) | set(is_)) if was.get(key) != is_.get(key)]
    return ", ".join(changed)


def _check_space(path: Path, space: str) -> None:
    """Refuse a table for a space not registered here (one from a newer edgekd, or since removed): nothing can
    be predicted from it, and `profiles show` lists it as such rather than failing on it."""
    from edgekd.search.spaces import SPACES

    if space not in SPACES.names():
        raise ProfileError(f"latency table '{path}' is for search space '{space}', which this edgekd does not have "
                           f"(it has {', '.join(SPACES.names())})",
                           "use it with the edgekd that calibrated it, or delete it")


def damaged(table: LatencyTable, space_name: str) -> str | None:
    """What a table edited by hand or cut short lacks that prediction needs (an entry for every block of its
    space, and a fit of the right length per precision), or None when it is whole. Checked on loading, so a
    damaged table is refused in one line rather than failing deep inside `profiles show` or a search."""
    from edgekd.latency.calibrate import PRECISIONS
    from edgekd.latency.network_fit import feature_names, resolution_levels
    from edgekd.search.spaces import SPACES

    space, shape, classes = SPACES.get(space_name), table.stamp.input_shape, table.stamp.num_classes
    keys = [block_key(k) for k in space.all_blocks(shape, classes)]
    terms = len(feature_names(resolution_levels(space, shape, classes)))
    for precision in PRECISIONS:
        entries = table.entries.get(precision)
        missing = [k for k in keys if not isinstance(entries, dict) or not _number(entries.get(k))]
        if missing:
            return (f"{len(missing)} of the {len(keys)} {precision} block entries are missing or not numbers "
                    f"(first: '{missing[0]}')")
        fit = table.fit.get(precision)
        if not isinstance(fit, list) or len(fit) != terms or not all(_number(c) for c in fit):
            return f"its {precision} fit is not a list of {terms} numbers"
    return None


def _number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def source_of(profile: DeviceProfile) -> str:
    """The file ``profile`` was read from, resolved, as a table records it ("" for one rebuilt from a manifest)."""
    from edgekd.profiles import RECORDED

    return "" if profile.source == RECORDED else str(Path(profile.source).resolve())


def owning_file(path: Path, profile: DeviceProfile) -> Path | None:
    """``other_profile_file`` of the table or resume point at ``path``, as it records its source and digest; None
    for one that cannot be read (replaced or deleted, as before these were recorded)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        recorded, digest = data.get("profile_source"), data["stamp"]["profile_digest"]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    return other_profile_file(recorded, digest, profile)


def other_profile_file(recorded_source: Any, digest: Any, profile: DeviceProfile) -> Path | None:
    """The other profile file a table or resume point was calibrated from (``recorded_source``), where it is
    still there and still has the settings it was made with (``digest``), other than ``profile``'s, so that it
    serves that file's profile; None for ``profile``'s own file (edited since: replacing it is the point), or one
    gone or changed."""
    from edgekd.profiles import load_profile_file, shadowed

    if not isinstance(recorded_source, str) or not recorded_source or recorded_source == source_of(profile):
        return None
    if digest == profile.digest():  # these same settings: what keeps it from use here does there too
        return None
    other = Path(recorded_source)
    if shadowed(other):  # a built-in the user's file of its name hides: that file is the profile of the name now
        return None
    try:
        found = load_profile_file(other) if other.is_file() else None
    except ProfileError:
        return None
    return other if found is not None and found.name == profile.name and found.digest() == digest else None


def shared_name_fix(profile: DeviceProfile, other: Path) -> str:
    """How to calibrate ``profile`` when its name's table is another file's (``other_profile_file``): a name
    of its own, from the file's name where that differs (tables are named after ``name``, not the file), in a
    file of the user's (a shipped one is never to be edited)."""
    from edgekd.profiles import is_builtin

    editable = [f for f in (Path(profile.source), other) if not is_builtin(f)]
    renamed = next((f for f in editable if f.stem != profile.name), editable[0] if editable else other)
    if renamed.stem != profile.name:
        how = f"name = \"{renamed.stem}\" in {renamed}"
    else:  # its file is named after the profile: a name found in a profile folder has to be the file's too
        how = f"name = \"{profile.name}-2\" in {renamed}, and rename it {profile.name}-2.toml"
    return (f"give one of the two files a name of its own (e.g. {how}: tables are named after the profile's name, "
            f"not its file), or pass --force to replace the one of {other}")


def unfinished_calibrations(profile: DeviceProfile, running: bool = False) -> list[Path]:
    """The resume points interrupted calibrations of ``profile`` left (``calibrate.partial_path``'s); with
    ``running``, instead those of calibrations running now (their lock held): listed as interrupted, one read as
    a file to delete or a command to start a second time."""
    from edgekd.fsutil import held

    return [p for p in _partials(profile)
            if held(p.with_name(p.name.removesuffix(".partial") + ".lock")) == running]


def resume_why(partial: Path, profile: DeviceProfile) -> str | None:
    """Why `profiles calibrate` would not resume the resume point ``partial`` of ``profile`` (it deletes it and
    starts over, or refuses it as another file's), in a few words; None when it resumes it. Judged as calibrate
    judges it (``calibrate._resume`` against this profile's stamp), so `profiles show` lists no work as waiting
    that calibrate would throw away."""
    from edgekd.errors import ConfigError
    from edgekd.latency.calibrate import _resume, partial_path

    try:
        data = json.loads(partial.read_text(encoding="utf-8"))
        stamp = data["stamp"]
        space, classes = str(stamp["space"]), int(stamp["num_classes"])
        shape = tuple(int(d) for d in stamp["input_shape"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "unreadable: calibrate deletes it and starts over"
    if partial != partial_path(table_path(profile, space, shape, classes)):
        return ("not where calibrate resumes from (written before tables were kept per input shape, or renamed): "
                "no calibrate command resumes it; delete it")
    if (other := owning_file(partial, profile)) is not None:
        return (f"an interrupted calibration of profile file {other} (also named '{profile.name}', with other "
                f"settings): calibrate keeps it for that file; {shared_name_fix(profile, other)}")
    try:  # a remote device's runtime is known once it measures: the resume point's is taken as it
        want = Stamp.current(profile, space, shape, classes, None if profile.is_local else stamp.get("onnxruntime"))
    except ConfigError:
        return f"for search space '{space}', which this edgekd does not have: delete it"
    entries, _, nets, _ = _resume(partial, want)
    if any(entries.values()) or nets["keys"]:
        return None
    have, need = stamp if isinstance(stamp, dict) else {}, want.to_dict()
    changed = [_stamp_change(key, have.get(key), need.get(key), data, profile)
               for key in sorted(set(have) | set(need)) if have.get(key) != need.get(key)]
    if not changed:
        return "holds nothing measured yet: calibrate deletes it and starts over"
    return f"measured with {'; '.join(changed)}: calibrate deletes it and starts over"


def _stamp_change(key: str, have: Any, need: Any, data: dict[str, Any], profile: DeviceProfile) -> str:
    """One setting a resume point was measured with that differs from this profile's now, as load_table says it."""
    if key == "profile_digest":
        return changed_settings(data.get("profile_settings") or {}, profile) or "other profile settings"
    if key == "space_digest":
        return "an older version of the search space"
    return f"{key.replace('_', ' ')} {have} (now {need})"


def _partials(profile: DeviceProfile) -> list[Path]:
    # NAME.SPACE[.CxHxW-CLASSES].latency.json.partial exactly: a glob on NAME.* also listed those of a profile
    # named NAME.something ("rpi.4t" for "rpi")
    own = re.compile(rf"{re.escape(profile.name)}\.[^.]+(?:\.\d+(?:x\d+)*-\d+)?\.latency\.json\.partial")
    return sorted(p for p in _table_folder(profile).glob(f"{profile.name}.*.latency.json.partial")
                  if own.fullmatch(p.name))


# A table measured with onnxruntime_perf_test (adb perf_test mode) has no version in its stamp: perf_test does not
# print one, so the table is never checked against the binary on the device. An empty string read as a version.
_NOT_RECORDED = ("not recorded (onnxruntime_perf_test does not report its version, so this table is not checked "
                 "against it): after upgrading it on the device, run `edgekd profiles calibrate {name} --force`")


def table_summaries(profile: DeviceProfile,
                    describe: Callable[[LatencyTable], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The latency tables calibrated for ``profile`` (every space and input), each with whether search can
    use it here and, when not, why, in load_table's words: what `profiles show` tells a user before a search
    falls back to measuring. ``describe`` adds to a usable table's entry from the table it loaded."""
    found = []
    for path in sorted(_table_folder(profile).glob(f"{profile.name}.*.latency.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            # Named as this profile's tables are, so search would find it: listed as damaged, never left out.
            if not isinstance(data, dict) or data.get("schema") != TABLE_SCHEMA:
                raise ValueError("not an edgekd latency table")
            stamp = data["stamp"]
            space, classes = stamp["space"], int(stamp["num_classes"])
            shape = tuple(int(d) for d in stamp["input_shape"])
            if len(shape) != 3:  # not C, H, W: no calibrate command can be named for it
                raise ValueError(shape)
            # Another profile whose name starts the same, unless the file is where this profile's table goes (a
            # profile renamed, or a board's folder copied): search reads that one, so it is listed.
            if stamp["profile"] != profile.name and path not in (table_path(profile, space, shape, classes),
                                                                 legacy_table_path(profile, space)):
                continue
        except (ValueError, KeyError, TypeError, OSError):
            found.append({"path": str(path), "usable": False, "why": "unreadable: delete it and calibrate again"})
            continue
        entry = {"path": str(path), "space": space, "input_shape": list(shape), "num_classes": classes,
                 "onnxruntime": stamp.get("onnxruntime") or _NOT_RECORDED.format(name=profile.name),
                 "networks": data.get("calibration_networks", 0)}
        if stamp["profile"] != profile.name:  # used when the settings match (the digest leaves the name out)
            entry["calibrated_as"] = stamp["profile"]
        try:
            table = load_table(profile, space, shape, classes, path=path)
            found.append({**entry, "usable": True, **(describe(table) if describe else {})})
        except ProfileError as exc:  # the other file's, calibrate refuses to replace it: its fix is calibrate's
            other = owning_file(path, profile)
            why = exc.message if other is None else (
                f"the latency table of profile file {other} (also named '{profile.name}', with other settings); "
                f"{shared_name_fix(profile, other)}")
            found.append({**entry, "usable": False, "why": why})
    return found
