"""The remote runners: ``ssh`` (a Raspberry Pi-class host) and ``adb`` (an Android device). Both make a
run folder on the device, copy the worker and the models there, run, read the result and clean up; adb
can drive ``onnxruntime_perf_test`` instead of the worker. The commands a remote shell runs are quoted
with ``shlex.join``; every local command is an argv list."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import ArtifactError, RunnerError
from edgekd.latency.measure import Shapes, per_model
from edgekd.latency.runner_io import (
    after_mark,
    call,
    first_line,
    garbled,
    json_line,
    marked,
    old_python,
    reason,
    said_lines,
    too_slow,
    without,
    worker_stats,
)
from edgekd.latency.runners import RUNNERS, WORKER, _existing, _settings, _spec, _stage
from edgekd.profiles import DeviceProfile
from edgekd.types import LatencyStats

_LOG = logging.getLogger(__name__)
# Longest wait for the remote clean-up: it only removes a folder, and a dead link must not hold up the result.
_CLEAN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class _RemoteRunner:
    """Shared steps of the ssh and adb runners: make a run folder, copy, run, clean up."""

    profile: DeviceProfile

    # Filled in by each remote kind.
    def _where(self) -> str: raise NotImplementedError
    def _device(self) -> str: raise NotImplementedError
    def _fix(self) -> str: raise NotImplementedError
    def _shell_line(self, line: str) -> list[str]: raise NotImplementedError
    def _push(self, sources: list[str], dest: str) -> list[str]: raise NotImplementedError
    def _transport_failed(self, proc: subprocess.CompletedProcess) -> bool: raise NotImplementedError

    def _transport_fix(self, proc: subprocess.CompletedProcess) -> str:
        """The fix for a failed ssh or adb, where its own words name a better one than ``_fix``."""
        return self._fix()

    def _missing_fix(self, key: str) -> str:
        return f"set runner.{key} in the profile to its path on the device"

    def _said(self, proc: subprocess.CompletedProcess) -> str:
        """The line of a failed command's output that says why."""
        return reason(proc)

    def _shell(self, cmd: list[str], mark: bool = True) -> list[str]:
        """The local argv that runs ``cmd`` on the device; ``mark``: after printing runner_io.MARK, by which
        ``_call`` tells the command's own output from the login's. The device's shell gets one string, each
        argument quoted for it."""
        return self._shell_line(shlex.join(marked(cmd) if mark else cmd))

    @property
    def cfg(self) -> dict[str, Any]:
        return _settings(self.profile)

    def measure(self, paths: Sequence[str | Path], shape: Shapes = None) -> list[LatencyStats]:
        models = _existing(paths)
        if not models:
            return []
        run_dir = f"{self.cfg['remote_dir'].rstrip('/')}/run-{uuid.uuid4().hex[:12]}"
        with tempfile.TemporaryDirectory(prefix="edgekd-stage-") as tmp:
            rel = _stage(models, Path(tmp))
            remote = [f"{run_dir}/{r}" for r in rel]
            if self._mode() == "python":
                shutil.copy2(WORKER, Path(tmp) / "worker.py")
                (Path(tmp) / "spec.json").write_text(json.dumps(_spec(remote, models, shape, self.profile)),
                                                     encoding="utf-8")
            login = self._step(self._shell(["mkdir", "-p", run_dir]), "creating the remote folder",
                               in_remote_dir=True)
            try:
                sources = [str(Path(tmp) / name) for name in sorted(os.listdir(tmp))]
                self._step(self._push(sources, run_dir), "copying the models", in_remote_dir=True, noise=login)
                if self._mode() == "python":
                    return self._run_worker(run_dir, len(models))
                return self._run_perf_test(models, remote, shape)
            finally:
                self._clean(run_dir)

    def _mode(self) -> str:
        return str(self.cfg.get("mode", "python"))

    def probe(self) -> None:
        """One command through the same link, checking what ``measure`` will run: the device's Python with
        numpy and onnxruntime, or its onnxruntime_perf_test."""
        step = "checking the device before the run"
        if self._mode() == "python":
            proc = self._call(self._shell([self.cfg["python"], "-c", "import numpy, onnxruntime"]), step)
            if "No module named" in self._said(proc) and proc.returncode != 0 and not self._transport_failed(proc):
                # the fix the worker gives for the same, which the probe finds first
                raise RunnerError(f"{self.cfg['python']} on {self._device()} cannot import numpy and onnxruntime: "
                                  f"{self._said(proc)}", "install them for that Python (pip install numpy onnxruntime) "
                                  "or set runner.python in the profile to a Python that has them")
            if proc.returncode != 0 or self._transport_failed(proc):
                self._raise_for(proc, step, "python")
            return
        # `command -v` prints the program's path only when it is there and runnable: read from what it prints,
        # since older adb passes no exit status back
        proc = self._call(self._shell(["command", "-v", self.cfg["perf_test"]]), step)
        if self._transport_failed(proc) or self._failed_itself(proc, str(self.cfg["perf_test"])):
            raise self._failure(proc, step)
        if not proc.stdout.strip():
            raise self._not_found("perf_test")

    def _failed_itself(self, proc: subprocess.CompletedProcess, program: str) -> bool:
        """Whether a failed `command -v` is the transport's own failure in words ``_transport_failed`` does not
        know. Not over ssh: a login shell's warnings (a forwarded locale the host lacks) come on stderr beside a
        plain "not found" exit."""
        return False

    def _call(self, argv: list[str], step: str, measuring: bool = False) -> subprocess.CompletedProcess:
        """Run ``argv``; what the command printed, from runner_io.MARK on where it printed one."""
        return self._call_login(argv, step, measuring)[0]

    def _call_login(self, argv: list[str], step: str,
                    measuring: bool = False) -> tuple[subprocess.CompletedProcess, tuple[str, ...]]:
        """``_call``'s answer and the lines the login printed before the command began."""
        timeout = float(self.cfg["timeout_s"])
        late = too_slow(self._where(), timeout, step) if measuring else None
        return after_mark(call(argv, timeout, self._where(), step, self._fix(), late))

    def _step(self, argv: list[str], step: str, in_remote_dir: bool = False,
              noise: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Run one step, raising on a failure; the lines its login printed first, which a copy over the same link
        prints too but without runner_io.MARK after them: ``noise``, the lines to leave out of its reason."""
        proc, login = self._call_login(argv, step)
        if proc.returncode != 0:
            raise self._failure(without(proc, noise), step, in_remote_dir)
        return login

    def _failure(self, proc: subprocess.CompletedProcess, step: str, in_remote_dir: bool = False) -> RunnerError:
        # its full stop would end the problem before the "; fix" that follows ("unauthorized.;")
        said = self._said(proc).rstrip(".")
        # a link that worked to a device that refused the folder or the files: the connection advice would send
        # the user after the wrong thing
        fix = self._dir_fix() if in_remote_dir and not self._transport_failed(proc) else self._transport_fix(proc)
        return RunnerError(f"{self._where()} failed while {step} (exit {proc.returncode}): {said}", fix)

    def _dir_fix(self) -> str:
        return (f"check that runner.remote_dir ({self.cfg['remote_dir']}) can be created and written on "
                f"{self._device()} and that its file system has free space, or set runner.remote_dir in the "
                "profile to a writable folder there")

    def _not_found(self, key: str) -> RunnerError:
        return RunnerError(f"{self.cfg[key]} was not found on {self._device()}", self._missing_fix(key))

    def _raise_for(self, proc: subprocess.CompletedProcess, step: str, key: str) -> None:
        """Raise for a failed transport, a missing program on the device, or a non-zero exit."""
        if self._transport_failed(proc):
            raise self._failure(proc, step)
        if _missing(proc, str(self.cfg[key])):
            raise self._not_found(key)
        if proc.returncode != 0:  # the program ran on the device, or its loader did: the link is not to blame
            raise RunnerError(f"{self._where()} failed while {step} (exit {proc.returncode}): {self._said(proc)}",
                              _program_fix(proc, f"runner.{key}", self._device()))

    def _run_worker(self, run_dir: str, count: int) -> list[LatencyStats]:
        step = "running the measurement"
        proc = self._call(self._shell([self.cfg["python"], f"{run_dir}/worker.py", f"{run_dir}/spec.json"]), step,
                          measuring=True)
        data = json_line(proc.stdout)
        if data is None or self._transport_failed(proc):
            if old_python(proc):
                raise RunnerError(f"{self.cfg['python']} on {self._device()} cannot run edgekd's worker: "
                                  f"{self._said(proc)}", "the worker needs Python 3.7 or later on the device: set "
                                  "runner.python in the profile to one that has numpy and onnxruntime")
            self._raise_for(proc, step, "python")
            raise garbled(proc.stdout)
        return worker_stats(data, proc.stdout, count, self._where())

    def _run_perf_test(self, models: list[Path], remote: list[str], shape: Shapes) -> list[LatencyStats]:
        raise RunnerError(f"runner kind '{self.cfg['kind']}' has no perf_test mode", "use runner.mode = \"python\"")

    def _clean(self, run_dir: str) -> None:
        """Best effort: a failed clean-up never hides the measurement or its error, but it is said, as the
        user's models stay on the device."""
        remove = ["rm", "-rf", run_dir]
        shown = remove
        try:
            shown = self._shell(remove, mark=False)  # the command to give the user, without the marker
            proc = subprocess.run(self._shell(remove), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  errors="replace", timeout=min(float(self.cfg["timeout_s"]), _CLEAN_TIMEOUT_S),
                                  check=False)
            why = None if proc.returncode == 0 else f"exit {proc.returncode}: {self._said(after_mark(proc)[0])}"
        except subprocess.TimeoutExpired as exc:
            why = f"timed out after {exc.timeout:g} s"
        except (OSError, subprocess.SubprocessError, RunnerError) as exc:
            why = str(exc).strip() or type(exc).__name__
        except KeyboardInterrupt:
            # A second Ctrl-C (or SIGTERM) while a slow link removes the folder: the run stops, but the user is
            # still told what it left on the device.
            self._left(run_dir, "interrupted", shown)
            raise
        if why:
            self._left(run_dir, why, shown)

    def _left(self, run_dir: str, why: str, argv: list[str]) -> None:
        # No error channel is left here (the result or its error is on its way): a logged warning, which the CLI
        # shows on stderr as it is (logging's last-resort handler) and an API user can route.
        _LOG.warning("warning: could not remove the run folder %s on %s (%s), so the models copied there are still "
                     "on the device; remove them with: %s", run_dir, self._device(), why, shlex.join(argv))


def _program_fix(proc: subprocess.CompletedProcess, setting: str, device: str) -> str:
    """What to do when the device's own program failed: the connection advice would send the user after a link
    that worked."""
    output = f"{proc.stderr}\n{proc.stdout}"
    if "CANNOT LINK EXECUTABLE" in output or "error while loading shared libraries" in output:
        return (f"copy the shared library it names to {device} and put its folder on LD_LIBRARY_PATH there, or "
                f"set {setting} in the profile to a build that finds it")
    return f"fix what {setting} says on {device}, then run again"


def _missing(proc: subprocess.CompletedProcess, program: str) -> bool:
    """Whether the device's shell could not find ``program``: its words naming the program (sh, bash, dash,
    mksh, toybox, timeout: "PROG: not found", "'PROG': No such file or directory"; zsh: "command not found: PROG"), or
    exit 127 with nothing said. Not any "not found": a program that is there but lacks a shared library says
    'CANNOT LINK EXECUTABLE "PROG": library "libonnxruntime.so" not found' (glibc: exit 127 too), and that
    reason is what to show."""
    name = re.escape(program)
    said = re.compile(rf"{name}['\"’]?: (?:cannot execute: )?(?:command |inaccessible or )?not found"
                      rf"|{name}['\"’]?: (?:cannot execute: )?no such file or directory"
                      rf"|(?:command not found|no such file or directory): {name}\s*$", re.IGNORECASE | re.MULTILINE)
    output = f"{proc.stderr}\n{proc.stdout}"
    return bool(said.search(output)) or (proc.returncode == 127 and not output.strip())


# What ssh (run by scp) says when the link itself failed, as opposed to the remote side refusing a file.
_SSH_LINK = re.compile(r"^ssh: |^lost connection|Connection closed by|Connection reset by|Permission denied \(|"
                       r"Host key verification failed|Could not resolve hostname", re.MULTILINE)
# ssh's own lines that say why the link failed, the one to show: a changed host key comes in a block of "@@@@" lines
# and advice ending with its summary, "Host key verification failed.", which is taken only when nothing says more;
# a login banner can come before "Permission denied (publickey)."
_SSH_SAYS = re.compile(r"^ssh: |Host key for .* has changed|host key is known for|Permission denied \(|"
                       r"Connection (?:to \S+ closed|closed by|reset by|refused|timed out)|Could not resolve hostname|"
                       r"^kex_exchange_identification|Too many authentication failures|^lost connection")
_HOST_KEY_CHANGED = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed")
_HOST_KEY = re.compile(rf"Host key verification failed|host key is known for|{_HOST_KEY_CHANGED.pattern}")
# adb's words for a refusal on the device (a folder it may not write, a full disk) rather than of the link:
# "adb: error: failed to copy '...' to '...': remote couldn't create file: Permission denied".
_ADB_DEVICE_SIDE = re.compile(r"\bremote\b|Permission denied|Operation not permitted|No space left|"
                              r"Read-only file system", re.IGNORECASE)


@RUNNERS.register("ssh")
@dataclass(frozen=True)
class SshRunner(_RemoteRunner):
    """The worker on a host reached with ssh/scp (key login; no password prompts)."""

    def _target(self, bracketed: bool = False) -> str:
        """user@host for ssh; ``bracketed``: an IPv6 address in brackets, as scp's user@host:path needs (its
        own colons would end the host), while ssh takes it bare."""
        host, user = str(self.cfg["host"]), self.cfg.get("user")
        if bracketed and ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{user}@{host}" if user else host

    def _where(self) -> str:
        return f"ssh to {self._target(bracketed=True)}:{self.cfg['port']}"

    def _device(self) -> str:
        return str(self.cfg["host"])

    def _fix(self) -> str:
        return ("check the host is reachable, runner.host/port/user/identity_file in the profile, and that key "
                "login works without a password (ssh runs with BatchMode=yes); raise runner.timeout_s for slow "
                "devices")

    def _said(self, proc: subprocess.CompletedProcess) -> str:
        if not self._transport_failed(proc):
            return reason(proc)
        lines = said_lines(proc.stderr)
        line = next((x for x in lines if _SSH_SAYS.search(x)), None)
        line = line or next((x for x in lines if "Host key verification failed" in x), None)
        return line[:200] if line else reason(proc)

    def _transport_fix(self, proc: subprocess.CompletedProcess) -> str:
        # BatchMode=yes cannot ask to accept a key: the one command the user runs to answer ssh's question
        text = proc.stderr or ""
        host, port = str(self.cfg["host"]), int(self.cfg["port"])
        if "Permission denied (publickey" in text:  # no password prompt in BatchMode: the key is all there is
            install = self._login_line("ssh-copy-id")
            return (f"{self._target()} accepts no key ssh offered, and edgekd's ssh asks for no password "
                    f"(BatchMode=yes): install your public key on the board with `{install}`, or set "
                    "runner.identity_file in the profile to the key it accepts; then run again")
        if not _HOST_KEY.search(text):
            return self._fix()
        # known_hosts keeps a host on another port than 22 as [host]:port
        forget = shlex.join(["ssh-keygen", "-R", host if port == 22 else f"[{host}]:{port}"])
        login = self._login_line("ssh")
        if _HOST_KEY_CHANGED.search(text):
            return (f"the host key {host} sent is not the one known_hosts holds for it (a re-flashed or replaced "
                    f"board, or its address now another device's): if that is expected, remove the old key with "
                    f"`{forget}`, then connect once with `{login}` and accept the new one; then run again")
        if "host key is known for" in text:
            return (f"{host}'s host key is not in known_hosts yet, and ssh cannot ask to accept it with BatchMode=yes: "
                    f"connect once with `{login}` and accept it, then run again")
        return (f"connect once with `{login}` to see why: accept the host key when a new host asks, or, where its key "
                f"changed (a re-flashed board), remove the old one with `{forget}` first; then run again")

    def _login_line(self, tool: str) -> str:
        """The command a user runs once, by hand, to log in to the board as edgekd does (``ssh``) or to install
        a key there (``ssh-copy-id``): the profile's port and identity file, where they are not ssh's defaults."""
        port, identity = int(self.cfg["port"]), self.cfg.get("identity_file")
        return shlex.join([tool, *(["-p", str(port)] if port != 22 else []),
                           *(["-i", str(Path(identity).expanduser())] if identity else []), self._target()])

    def _options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.cfg['connect_timeout_s']}"]
        identity = self.cfg.get("identity_file")
        if identity:
            path = Path(identity).expanduser()
            if not path.is_file():
                raise RunnerError(f"identity file '{identity}' for {self._where()} does not exist",
                                  "fix runner.identity_file in the profile")
            opts += ["-i", str(path)]
        return opts

    def _shell_line(self, line: str) -> list[str]:
        return ["ssh", *self._options(), "-p", str(self.cfg["port"]), self._target(), line]

    def _push(self, sources: list[str], dest: str) -> list[str]:
        return ["scp", "-q", "-r", *self._options(), "-P", str(self.cfg["port"]), *sources,
                f"{self._target(bracketed=True)}:{dest}/"]

    def _transport_failed(self, proc: subprocess.CompletedProcess) -> bool:
        # ssh's own failures exit 255 (the remote command's codes pass through); scp exits 1 for a dropped or
        # refused link as for a refused file, so its link failures are told by ssh's words
        return proc.returncode == 255 or (proc.returncode != 0 and bool(_SSH_LINK.search(proc.stderr or "")))


@RUNNERS.register("adb")
@dataclass(frozen=True)
class AdbRunner(_RemoteRunner):
    """The worker (``mode = "python"``) or onnxruntime_perf_test (``mode = "perf_test"``) on an adb device."""

    def _base(self) -> list[str]:
        serial = self.cfg.get("serial")
        return ["adb", "-s", serial] if serial else ["adb"]

    def _device(self) -> str:
        serial = self.cfg.get("serial")
        return f"device {serial}" if serial else "the adb device"

    def _where(self) -> str:
        serial = self.cfg.get("serial")
        return f"adb on device {serial}" if serial else "adb on the device"

    def _fix(self) -> str:
        return ("check the device is connected with USB debugging on (`adb devices` lists it) and runner.serial "
                "in the profile; raise runner.timeout_s for slow devices")

    def _transport_fix(self, proc: subprocess.CompletedProcess) -> str:
        # adb's own advice follows on lines of its own, which the one-line reason leaves out
        said = first_line(proc)  # adb's "* daemon ..." start-up notes skipped
        if "unauthorized" in said:
            return ("unlock the device and accept its 'Allow USB debugging?' prompt for this computer's RSA key, then "
                    "run again; if no prompt shows, unplug and replug the USB cable, or run `adb kill-server` first")
        if "offline" in said:
            return ("the device is connected but not answering: run `adb reconnect` (or unplug and replug it), and "
                    "check `adb devices` says 'device' for it")
        if "more than one device" in said:
            return "set runner.serial in the profile to the serial `adb devices` lists for the device to measure on"
        if "no devices" in said:
            return ("connect the device with USB debugging on (`adb devices` lists none), or start the emulator; "
                    "then run again")
        return self._fix()

    def _failed_itself(self, proc: subprocess.CompletedProcess, program: str) -> bool:
        # `command -v` says nothing when the program is missing: anything adb said on a failure is its own
        # ("failed to get feature set: protocol fault"), never a missing binary
        return proc.returncode != 0 and bool(said_lines(proc.stderr)) and not _missing(proc, program)

    def _dir_fix(self) -> str:
        # adb's shell user may write only a few places on a phone without root
        return f"{super()._dir_fix()} (on a phone without root, a folder under /data/local/tmp)"

    def _missing_fix(self, key: str) -> str:
        if key != "perf_test":
            return super()._missing_fix(key)
        # a fresh device has none: the usual fix is to put it there, not to point elsewhere
        push = shlex.join([*self._base(), "push", "onnxruntime_perf_test", str(self.cfg[key])])
        return (f"build onnxruntime_perf_test for the device and copy it there with `{push}`, or set "
                "runner.perf_test in the profile to its path on the device")

    def _shell_line(self, line: str) -> list[str]:
        return [*self._base(), "shell", line]

    def _push(self, sources: list[str], dest: str) -> list[str]:
        return [*self._base(), "push", *sources, f"{dest}/"]

    def _transport_failed(self, proc: subprocess.CompletedProcess) -> bool:
        first = first_line(proc)  # adb's "* daemon ..." start-up notes skipped
        return (proc.returncode != 0 and first.startswith(("adb:", "error:"))
                and not _ADB_DEVICE_SIDE.search(first))

    def _run_perf_test(self, models: list[Path], remote: list[str], shape: Shapes) -> list[LatencyStats]:
        from edgekd.latency import perftest

        m = self.profile.measure
        shapes = per_model(shape, len(models))
        dims = [perftest.free_dims(p, int(m["batch_size"]), s) for p, s in zip(models, shapes)]
        fed = [perftest.fed_shape(p, int(m["batch_size"]), s) for p, s in zip(models, shapes)]

        def timed(i: int, runs: int) -> dict[str, float]:
            cmd = perftest.command(self.cfg["perf_test"], remote[i], self.profile.runtime, runs, dims[i])
            return self._perf_once(cmd, models[i], remote[i])

        if m["warmup_runs"]:
            for i in range(len(models)):
                timed(i, int(m["warmup_runs"]))
        samples: list[list[dict[str, float]]] = [[] for _ in models]
        self._perf_rounds(timed, samples)
        if max(perftest.cv([s["p50"] for s in per]) for per in samples) > m["max_cv"]:
            self._perf_rounds(timed, samples)  # noisy: measure as much again, as the worker does
        return [perftest.aggregate(per, int(m["runs_per_repeat"]), f) for per, f in zip(samples, fed)]

    def _perf_rounds(self, timed: Any, samples: list[list[dict[str, float]]]) -> None:
        n, m = len(samples), self.profile.measure
        for rep in range(int(m["repeats"])):
            for k in range(n):
                i = (rep + k) % n  # rotate so no model always runs first after a switch
                samples[i].append(timed(i, int(m["runs_per_repeat"])))

    def _perf_once(self, cmd: list[str], model: Path, remote: str) -> dict[str, float]:
        from edgekd.latency import perftest

        step = f"running onnxruntime_perf_test on {model.name}"
        proc = self._call(self._shell(perftest.bounded(cmd, float(self.cfg["timeout_s"]))), step, measuring=True)
        sample = perftest.parse(proc.stdout)
        if sample is None or proc.returncode != 0:
            if proc.returncode != 0 and not self._transport_failed(proc):
                self._raise_if_unloadable(proc, model, remote)
            self._raise_for(proc, step, "perf_test")
            missing = perftest.missing_lines(proc.stdout)
            raise RunnerError(f"could not parse the output of {self.cfg['perf_test']} (runner.perf_test) on "
                              f"{self._device()} while {step}: it printed no {', '.join(missing)} line"
                              f"{'s' if len(missing) != 1 else ''} ({proc.stdout.strip()[:80]!r})",
                              "check that runner.perf_test is onnxruntime's own onnxruntime_perf_test, which prints "
                              "these latency lines, and that it runs on the device")
        return sample

    def _raise_if_unloadable(self, proc: subprocess.CompletedProcess, model: Path, remote: str) -> None:
        """An ArtifactError, as python mode's, where perf_test said onnxruntime could not load the model (its
        ``ex.what()`` on stderr): the model newer than the device's runtime, named with the version to save it at,
        or onnxruntime's reason without the C++ source location that filled the first 200 characters."""
        from edgekd.latency.worker import load_failure

        lines = said_lines(proc.stderr) or said_lines(proc.stdout)  # an adb without shell v2 sends both on stdout
        start = next((i for i, line in enumerate(lines) if _LOAD_FAILED.search(line)), None)
        if start is None:
            return
        # the user's file, not the run folder's copy on the device
        text = "\n".join(lines[start:]).replace(remote, str(model))
        problem, fix = load_failure(RuntimeError(text), str(model), "(version unknown in perf_test mode)")
        raise ArtifactError(f"{self._where()}: {problem}", fix)


# onnxruntime's words, as perf_test prints them, for a model it could not load (not one that failed to run).
_LOAD_FAILED = re.compile(r"Load model from .* failed|Unsupported model IR version|Opset \d+ is under development|"
                          r"ORT format model version \[\d+\] is not supported|"
                          r"Could not find an implementation for \w+\(\d+\) node|"
                          r"\[ONNXRuntimeError\] : \d+ : (?:INVALID_PROTOBUF|INVALID_GRAPH|NO_MODEL|NOT_IMPLEMENTED)")
