"""What a device profile may hold: each section's keys with their types, allowed values and defaults, the
runner's keys per kind, and the checks that name a wrong key or value with its file and the fix."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from edgekd.errors import ProfileError

SCHEMA_VERSION = 1

# section -> key -> (type(s), allowed values or None, default)
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], tuple[Any, ...] | None, Any]]] = {
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
    "runner": {},  # per kind: see RUNNER_SCHEMA
    "measure": {
        "batch_size": ((int,), None, 1),
        "warmup_runs": ((int,), None, 20),
        "repeats": ((int,), None, 5),
        "runs_per_repeat": ((int,), None, 50),
        "max_cv": ((float, int), None, 0.10),
    },
}

# [runner] keys per kind; ``None`` as a default means optional and unset ("host" is checked as required).
RUNNER_COMMON: dict[str, tuple[tuple[type, ...], tuple[Any, ...] | None, Any]] = {
    "kind": ((str,), ("local", "ssh", "adb"), "local"),
    "timeout_s": ((int, float), None, 600),
}
RUNNER_SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], tuple[Any, ...] | None, Any]]] = {
    "local": dict(RUNNER_COMMON),
    "ssh": {
        **RUNNER_COMMON,
        "host": ((str,), None, None),
        "port": ((int,), None, 22),
        "user": ((str,), None, None),
        "identity_file": ((str,), None, None),
        "remote_dir": ((str,), None, "/tmp/edgekd"),
        "python": ((str,), None, "python3"),
        "connect_timeout_s": ((int,), None, 10),
    },
    "adb": {
        **RUNNER_COMMON,
        "serial": ((str,), None, None),
        "remote_dir": ((str,), None, "/data/local/tmp/edgekd"),
        "mode": ((str,), ("python", "perf_test"), "python"),
        "python": ((str,), None, "python3"),
        "perf_test": ((str,), None, None),  # default: remote_dir + "/onnxruntime_perf_test"
    },
}
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+/-]*")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]*")
# runner.python goes to the device as one quoted word: its shell expands no ~ or $ and splits at no space.
_SAFE_PROGRAM = re.compile(r"[A-Za-z0-9._+/][A-Za-z0-9._+/-]*")
# A profile's name is the stem of the files written for it (latency tables beside its own file).
PROFILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_section(path: Path, section: str, raw: Any,
                  schema: dict[str, tuple[tuple[type, ...], tuple[Any, ...] | None, Any]] | None = None,
                  ) -> dict[str, Any]:
    schema = SCHEMA[section] if schema is None else schema
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: '{section}' must be a table", f"write it as [{section}]")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if section == "" and key in SCHEMA:
            continue
        dotted = f"{section}.{key}" if section else key
        if key not in schema:
            raise ProfileError(f"{path}: unknown key '{dotted}'", _valid_keys(key, section, schema))
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
        if section == "" and key in SCHEMA:
            continue
        out.setdefault(key, list(default) if isinstance(default, list) else default)
    return out


def _valid_keys(key: str, section: str, schema: dict[str, Any]) -> str:
    """The fix for an unknown ``key``: the closest valid one, and all of them; at the top of the file the
    sections too, which a misspelt one ([mesure]) is most often meant as."""
    from edgekd.errors import did_you_mean

    if section:
        return f"{did_you_mean(key, sorted(schema))}valid keys are {', '.join(sorted(schema))}"
    sections = sorted(s for s in SCHEMA if s)
    return (f"{did_you_mean(key, sorted(schema) + sections)}valid top-level keys are {', '.join(sorted(schema))}, "
            f"and the sections {', '.join(f'[{s}]' for s in sections)}")


# Beyond these a setting is a typo: onnxruntime takes thread counts as C ints and starts every thread it is
# given (a session with 10**5 threads exhausts the machine before it reports), and a measurement of 10**7 runs
# would take days. Bounds of a machine far larger than any edge device, so no real setting meets them.
_MAX_THREADS = 1024
_MAX_RUNS = 1_000_000
# A week: no measurement runs longer. subprocess and the worker's watchdog take the time-out as a C int of
# milliseconds (about 24.8 days) and overflowed with a traceback past it ("timeout is too large").
MAX_TIMEOUT_S = 7 * 24 * 3600


# Why a lower bound is what it is, where that is not plain. One repeat has no spread: its cv read 0%, so a cold,
# noisy run passed as stable, max_cv never had it measured again, and it was cached as trustworthy.
_WHY_LOW = {"measure.repeats": (": the cv that tells a noisy measurement (measure.max_cv) compares the repeats' "
                                "medians; for a quick look lower measure.runs_per_repeat instead")}


def check_ranges(path: Path, profile: Any) -> None:
    rules = [
        ("runtime.intra_op_threads", profile.runtime["intra_op_threads"], 0, _MAX_THREADS),
        ("runtime.inter_op_threads", profile.runtime["inter_op_threads"], 0, _MAX_THREADS),
        ("measure.batch_size", profile.measure["batch_size"], 1, _MAX_RUNS),
        ("measure.warmup_runs", profile.measure["warmup_runs"], 0, _MAX_RUNS),
        ("measure.repeats", profile.measure["repeats"], 2, _MAX_RUNS),
        ("measure.runs_per_repeat", profile.measure["runs_per_repeat"], 1, _MAX_RUNS),
    ]
    for key, value, low, high in rules:
        if value < low:
            raise ProfileError(f"{path}: key '{key}' is {value}",
                               f"use a value of at least {low}{_WHY_LOW.get(key, '')}")
        if value > high:
            raise ProfileError(f"{path}: key '{key}' is {value}", f"use a value of at most {high}")
    if not profile.runtime["providers"]:  # onnxruntime takes no provider as the CPU, whatever device is meant
        raise ProfileError(f"{path}: key 'runtime.providers' is an empty list",
                           'list the execution providers to measure with, e.g. ["CPUExecutionProvider"]')
    if not 0 < profile.measure["max_cv"] < 1:  # nan included: it compares false
        raise ProfileError(f"{path}: key 'measure.max_cv' is {profile.measure['max_cv']}", "use a value in (0, 1)")


def check_runner(path: Path, raw: Any) -> dict[str, Any]:
    """The [runner] table, checked against the keys of its kind, with that kind's defaults filled in."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: 'runner' must be a table", "write it as [runner]")
    kind = check_section(path, "runner", {"kind": raw.get("kind", "local")}, RUNNER_COMMON)["kind"]
    schema = RUNNER_SCHEMA[kind]
    unknown = sorted(k for k in raw if k not in schema)
    if unknown:
        raise ProfileError(f"{path}: unknown key 'runner.{unknown[0]}' for runner kind '{kind}'",
                           f"valid keys for kind '{kind}' are {', '.join(sorted(schema))}")
    runner = check_section(path, "runner", raw, schema)
    if kind == "adb" and runner["perf_test"] is None:
        runner["perf_test"] = runner["remote_dir"].rstrip("/") + "/onnxruntime_perf_test"
    _check_runner_values(path, runner)
    return runner


def _check_runner_values(path: Path, runner: dict[str, Any]) -> None:
    kind = runner["kind"]
    if not math.isfinite(runner["timeout_s"]) or runner["timeout_s"] <= 0:  # TOML reads inf and nan as floats
        raise ProfileError(f"{path}: key 'runner.timeout_s' is {runner['timeout_s']}",
                           "use a positive, finite number of seconds")
    if runner["timeout_s"] > MAX_TIMEOUT_S:
        raise ProfileError(f"{path}: key 'runner.timeout_s' is {runner['timeout_s']}, more than the "
                           f"{MAX_TIMEOUT_S:,} seconds (a week) edgekd waits for one measurement",
                           f"use a value of at most {MAX_TIMEOUT_S}")
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
    host = runner.get("host")
    if kind == "ssh" and host and host.count(":") == 1:
        # one colon is not an IPv6 address (those have two or more) but a port written into the host, which ssh
        # would look up as a name ("ssh to pi@[raspberrypi.local:2222]:22" failed)
        name, _, port = host.partition(":")
        raise ProfileError(f"{path}: key 'runner.host' is {host!r}, a host with a port",
                           f'put the port in runner.port: host = "{name}" and port = {port or 22} under [runner]')
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
