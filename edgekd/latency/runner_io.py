"""Running a runner's commands and reading what they print: a missing tool or a time-out becomes a RunnerError
naming the device and the step, a traceback its last line, and the worker's one JSON line LatencyStats."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from edgekd.errors import ArtifactError, RunnerError
from edgekd.types import LatencyStats


def call(argv: list[str], timeout: float, where: str, step: str, fix: str,
          late: tuple[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``argv``; a missing executable or a time-out becomes RunnerError naming ``where`` and ``step``
    (``late``: the problem and fix said on a time-out instead)."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False, errors="replace")
    except FileNotFoundError:
        raise RunnerError(f"{argv[0]} is not installed or not on PATH",
                          f"install {Path(argv[0]).name} (or add it to PATH), or pick a profile with another "
                          "runner") from None
    except subprocess.TimeoutExpired:
        raise RunnerError(*(late or (f"{where} timed out after {timeout:g} s while {step}", fix))) from None


def too_slow(where: str, timeout: float, step: str) -> tuple[str, str]:
    """What a measurement that ran out of time says: most often its length is what to change; a link that
    dropped mid-run (ssh keeps no keep-alive) runs out of time the same way, so that is said second."""
    return (f"{where} timed out after {timeout:g} s while {step}: the measurement took longer than "
            "runner.timeout_s", "raise runner.timeout_s in the profile, or measure fewer runs (measure.repeats, "
            "measure.runs_per_repeat) or fewer models at once; if the device stopped answering, check it is "
            "reachable and run again")


# adb's notes that it had to start its server first ("* daemon not running; starting now at tcp:5037", "* daemon
# started successfully") come before its real answer: read as the reason, they hid "adb: device unauthorized".
_CHATTER = re.compile(r"^\* daemon\b")


def said_lines(text: str | None) -> list[str]:
    """The non-blank lines of ``text``, stripped, without adb's server start-up notes."""
    return [line.strip() for line in (text or "").splitlines() if line.strip() and not _CHATTER.match(line.strip())]


def first_line(proc: subprocess.CompletedProcess) -> str:
    for text in (proc.stderr, proc.stdout):
        lines = said_lines(text)
        if lines:
            return lines[0][:200]
    return "(no output)"


FRAME = re.compile(r'File ".*", line \d+')

# Printed to stderr by each remote command before it starts (see ``marked``): whatever the device's login said
# first, a banner or a shell's locale warning ("bash: warning: setlocale: LC_ALL: cannot change locale"), was read
# as the reason a command failed.
MARK = "__edgekd_command_starts__"


def marked(cmd: list[str]) -> list[str]:
    """``cmd`` run by the device's sh after it prints MARK to stderr. Through sh, not the login shell, which may not
    be one that takes ``>&2``; ``"$@"``, not exec, so that a builtin (`command -v`) runs too."""
    return ["sh", "-c", f'echo {MARK} >&2; "$@"', "sh", *cmd]


def after_mark(proc: subprocess.CompletedProcess) -> tuple[subprocess.CompletedProcess, tuple[str, ...]]:
    """``proc`` with what came before MARK cut from its stderr and stdout (an adb without shell v2 sends both on
    stdout), and the lines cut from stderr: what the login prints on every command. A proc without MARK (the link
    failed first, or the command was no remote shell's) is as it was."""
    cut: list[str] = []
    texts = []
    for k, text in enumerate((proc.stderr, proc.stdout)):
        lines = (text or "").splitlines(keepends=True)
        at = next((i for i, line in enumerate(lines) if line.strip() == MARK), None)
        if at is None:
            texts.append(text)
            continue
        if k == 0:
            cut = [line.strip() for line in lines[:at] if line.strip()]
        texts.append("".join(lines[at + 1:]))
    return subprocess.CompletedProcess(proc.args, proc.returncode, texts[1], texts[0]), tuple(cut)


def without(proc: subprocess.CompletedProcess, noise: tuple[str, ...]) -> subprocess.CompletedProcess:
    """``proc`` with the lines in ``noise`` taken out of its stderr: what a command with no MARK of its own (a copy)
    prints of the login's words."""
    if not noise or not proc.stderr:
        return proc
    kept = "".join(line for line in proc.stderr.splitlines(keepends=True) if line.strip() not in noise)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, kept)


def reason(proc: subprocess.CompletedProcess) -> str:
    """The line that says what went wrong: a Python traceback's last one (its exception; its first only
    says where), else the first line of the output."""
    for text in (proc.stderr, proc.stdout):
        lines = said_lines(text)
        if lines:
            return (lines[-1] if any(FRAME.match(line) for line in lines) else lines[0])[:200]
    return "(no output)"


def old_python(proc: subprocess.CompletedProcess) -> bool:
    """Whether the device's Python could not even compile the worker: one older than 3.7 (or Python 2)."""
    return reason(proc).startswith("SyntaxError") and "worker.py" in (proc.stderr or "")


def garbled(text: str) -> RunnerError:
    return RunnerError(f"could not parse the runner's output: {text.strip()[:80]!r}",
                       "check that the device runs edgekd's worker with a working Python, numpy and onnxruntime")


def json_line(stdout: str) -> dict[str, Any] | None:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        data = json.loads(lines[-1])
    except ValueError:
        return None
    return data if isinstance(data, dict) and "ok" in data else None


def worker_stats(data: dict[str, Any], stdout: str, count: int, where: str | None) -> list[LatencyStats]:
    """The worker's answer as LatencyStats; its own failures keep their kind (bad model => ArtifactError)."""
    if data.get("ok") is not True:
        cls = ArtifactError if data.get("kind") == "artifact" else RunnerError
        problem = str(data.get("error") or "the latency worker failed without saying why")
        raise cls(f"{where}: {problem}" if where else problem, str(data.get("fix") or "") or None)
    names = [f.name for f in dataclasses.fields(LatencyStats)
             if f.name not in ("onnxruntime", "repeat_p50_ms", "input_shape")]  # p10 included
    version = str(data.get("onnxruntime") or "")
    try:
        results = data["results"]
        if not isinstance(results, list) or len(results) != count:
            raise ValueError("wrong number of results")
        # Without per-repeat medians, comparisons fall back to each run's whole p50 (latency.compare).
        return [LatencyStats(**{k: (int if k in ("runs", "repeats") else float)(r[k]) for k in names},
                             onnxruntime=version, repeat_p50_ms=tuple(float(x) for x in r.get("repeat_p50_ms", ())),
                             input_shape=tuple(int(d) for d in r.get("input_shape", ())))
                for r in results]
    except (KeyError, TypeError, ValueError):
        raise garbled(stdout) from None
