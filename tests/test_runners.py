"""Runners for real: the ssh and adb runners drive stand-in ``ssh``, ``scp`` and ``adb`` executables that
run the "remote" side on this machine, so every argv, copy, quoting and parse step is exercised."""

import ast
import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import ArtifactError, ProfileError, RunnerError
from edgekd.latency.measure import measure, speedup
from edgekd.profiles import load_profile

PY = sys.executable
WORKER = Path(__file__).resolve().parents[1] / "edgekd" / "latency" / "worker.py"
SHAPE = (1, 1, 16, 16)

# --- stand-ins: each logs its argv (one JSON list a line) to $FAKE_LOG, then does the job locally -------------
FAKE_SSH = f"""#!{PY}
import json, os, subprocess, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps(["ssh"] + args) + "\\n")
time.sleep(float(os.environ.get("FAKE_SSH_SLEEP", "0")))
if os.environ.get("FAKE_SSH_SAYS"):  # ssh's own refusal, before any remote command (a host key)
    sys.stderr.write(os.environ["FAKE_SSH_SAYS"])
    sys.exit(255)
sys.stderr.write(os.environ.get("FAKE_LOGIN_SAYS", ""))  # a login banner, the remote shell's locale warning
if " rm -rf " in args[-1]:  # the clean-up
    time.sleep(float(os.environ.get("FAKE_RM_SLEEP", "0")))
    if os.environ.get("FAKE_RM_FAIL"):
        sys.stderr.write("rm: cannot remove '" + args[-1].split()[-1] + "': " + os.environ["FAKE_RM_FAIL"] + "\\n")
        sys.exit(1)
if os.environ.get("FAKE_SSH_FAIL"):
    sys.stderr.write("ssh: connect to host box port 2222: " + os.environ["FAKE_SSH_FAIL"] + "\\n")
    sys.exit(255)
i = 0
while args[i].startswith("-"):
    i += 2 if args[i] in ("-o", "-p", "-i", "-l") else 1
# the remote shell: the command string(s) after the destination, run by bash here
sys.exit(subprocess.run(["bash", "-c", " ".join(args[i + 1:])]).returncode)
"""

COPY = """
import shutil
def copy(sources, dest):
    if os.environ.get("FAKE_COPY_SAYS"):  # the copy reached the device, which refused it (or the link dropped)
        sys.stderr.write(os.environ["FAKE_COPY_SAYS"] + "\\n")
        sys.exit(1)
    if not os.path.isdir(dest):
        sys.stderr.write(dest + ": No such file or directory\\n")
        sys.exit(1)
    for src in sources:
        target = os.path.join(dest, os.path.basename(src.rstrip("/")))
        (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, target)
"""

FAKE_SCP = f"""#!{PY}
import json, os, sys
{COPY}
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps(["scp"] + args) + "\\n")
sys.stderr.write(os.environ.get("FAKE_LOGIN_SAYS", ""))  # the remote shell's locale warning, as for ssh
rest, i = [], 0
while i < len(args):
    if args[i] in ("-P", "-o", "-i"):
        i += 2
    elif args[i].startswith("-"):
        i += 1
    else:
        rest.append(args[i])
        i += 1
# host:/remote/path maps to the local /remote/path; like scp, a host's own colons only inside [brackets]
host, _, path = rest[-1].partition("]:") if rest[-1].split("@")[-1].startswith("[") else rest[-1].partition(":")
copy(rest[:-1], path)
"""

FAKE_ADB = f"""#!{PY}
import json, os, subprocess, sys
{COPY}
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps(["adb"] + args) + "\\n")
serial = None
if args[0] == "-s":
    serial, args = args[1], args[2:]
if os.environ.get("FAKE_ADB_SERIAL") and serial != os.environ["FAKE_ADB_SERIAL"]:
    sys.stderr.write("adb: device '%s' not found\\n" % serial)
    sys.exit(1)
if os.environ.get("FAKE_ADB_SAYS"):  # adb's own refusal, before it reaches any device
    sys.stderr.write(os.environ["FAKE_ADB_SAYS"] + "\\n")
    sys.exit(1)
if os.environ.get("FAKE_ADB_UNAUTHORIZED"):  # as adb 35 says it, while the phone's prompt waits
    sys.stderr.write("adb: device unauthorized.\\nThis adb server's $ADB_VENDOR_KEYS is not set\\n"
                     "Try 'adb kill-server' if that seems wrong.\\n"
                     "Otherwise check for a confirmation dialog on your device.\\n")
    sys.exit(1)
if args[0] == "push":
    copy(args[1:-1], args[-1])
elif args[0] == "shell":
    # FAKE_ADB_MERGED: an adb without shell v2 (older devices), which sends the command's stderr on stdout
    merged = subprocess.STDOUT if os.environ.get("FAKE_ADB_MERGED") else None
    (sys.stdout if merged else sys.stderr).write(os.environ.get("FAKE_LOGIN_SAYS", ""))  # a device's shell rc's
    (sys.stdout if merged else sys.stderr).flush()
    sys.exit(subprocess.run(["bash", "-c", " ".join(args[1:])], stderr=merged).returncode)
"""

# onnxruntime_perf_test as it prints; latency grows with the model file's size (the big model is slower)
FAKE_PERF_TEST = f"""#!{PY}
import json, os, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_PERF_LOG"], "a") as fh:
    fh.write(json.dumps(args) + "\\n")
time.sleep(float(os.environ.get("FAKE_PERF_SLEEP", "0")))
runs, model = int(args[args.index("-r") + 1]), args[-1]
ms = 0.2 if os.path.getsize(model) < 20000 else 2.0
print("Setting intra_op_num_threads to " + args[args.index("-x") + 1])
print("Session creation time cost: 0.0352 s")
print("First inference time cost: 3 ms")
print("Total inference time cost: %g s" % (runs * ms / 1e3))
print("Total inference requests: %d" % runs)
print("Average inference time cost: %g ms" % (ms * 1.05))
print("Total inference run time: %g s" % (runs * ms / 1e3 + 0.0001))
print("Number of inferences per second: %g" % (1e3 / ms))
print("Avg CPU usage: 96 %")
print("Peak working set size: 25165824 bytes")
print("Avg CPU usage:96")
print("Peak working set size:25165824")
print("Runs:%d" % runs)
print("Min Latency: %g s" % (ms * 0.9 / 1e3))
print("Max Latency: %g s" % (ms * 1.5 / 1e3))
print("P50 Latency: %g s" % (ms / 1e3))
print("P90 Latency: %g s" % (ms * 1.2 / 1e3))
print("P95 Latency: %g s" % (ms * 1.3 / 1e3))
print("P99 Latency: %g s" % (ms * 1.4 / 1e3))
print("P999 Latency: %g s" % (ms * 1.5 / 1e3))
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


class Fakes:
    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.log"
        self.remote = root / "remote"  # the "device's" file system folder
        for name, text in (("ssh", FAKE_SSH), ("scp", FAKE_SCP), ("adb", FAKE_ADB)):
            _script(self.bin / name, text)

    def calls(self, tool: str) -> list[list[str]]:
        if not self.log.is_file():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [line[1:] for line in lines if line[0] == tool]


@pytest.fixture
def fakes(tmp_path, monkeypatch) -> Fakes:
    fakes = Fakes(tmp_path)
    monkeypatch.setenv("FAKE_LOG", str(fakes.log))
    monkeypatch.setenv("PATH", f"{fakes.bin}{os.pathsep}{os.environ['PATH']}")
    return fakes


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, str) else str(value)


def _profile(folder: Path, runner: dict, threads: int = 1, runs_per_repeat: int = 5):
    lines = ['schema = 1', 'name = "runner-test"', "[runtime]", f"intra_op_threads = {threads}", "[runner]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in runner.items()]
    lines += ["[measure]", "warmup_runs = 2", "repeats = 2", f"runs_per_repeat = {runs_per_repeat}", "max_cv = 0.5"]
    path = folder / "runner-test.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_profile(path)


def _ssh(fakes: Fakes, **extra):
    return {"kind": "ssh", "host": "edge-box", "user": "pi", "port": 2222, "remote_dir": str(fakes.remote),
            "python": PY, "timeout_s": 60, "connect_timeout_s": 7, **extra}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """(small, big) ONNX models with a fixed 1x1x16x16 input; the big one is far slower and larger."""
    import torch

    folder = tmp_path_factory.mktemp("runner-models")
    torch.manual_seed(0)
    small = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
    big = torch.nn.Sequential(*[torch.nn.Conv2d(1 if i == 0 else 48, 48, 3, padding=1) for i in range(5)],
                              torch.nn.Flatten())
    for name, model in (("small", small), ("big", big)):
        torch.onnx.export(model.eval(), (torch.zeros(SHAPE),), str(folder / f"{name}.onnx"), dynamo=False,
                          input_names=["input"])
    return folder / "small.onnx", folder / "big.onnx"


def _running(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (a test's own folder: only what the test started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                pids.append(int(entry.name))
        except (OSError, UnicodeDecodeError):  # gone meanwhile
            pass
    return pids


def _left_running(marker: str, wait_s: float = 15.0) -> list[int]:
    """The processes naming ``marker`` still there after up to ``wait_s`` seconds; each is then ended, so a
    failing test leaves nothing behind."""
    import signal
    import time

    deadline = time.monotonic() + wait_s
    while _running(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _running(marker)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


# How each remote command reaches the device's shell: after a marker on stderr, before which the login's own words
# (a banner, a locale warning) are not the command's.
MARKED = "sh -c 'echo __edgekd_command_starts__ >&2; \"$@\"' sh "


def _command(line: str) -> str:
    """The command a remote shell was given, without the marker that goes before it."""
    assert line.startswith(MARKED), line
    return line[len(MARKED):]


def _check_ordered(small, big) -> None:
    for s in (small, big):
        assert 0 < s.p50_ms <= s.p90_ms <= s.p99_ms
        assert s.repeats in (2, 4) and s.runs == 5 * s.repeats
    assert speedup(big, small) > 2


# --- ssh ---------------------------------------------------------------------------------------------------
def test_ssh_measures_two_models_in_order(fakes, models, tmp_path):
    key = tmp_path / "id_test"
    key.write_text("not a real key")
    profile = _profile(tmp_path, _ssh(fakes, identity_file=str(key)))
    small, big = measure(list(models), profile)
    _check_ordered(small, big)
    assert small.input_shape == big.input_shape == SHAPE  # the shape the worker fed, as it reported it
    ssh, scp = fakes.calls("ssh"), fakes.calls("scp")
    assert len(ssh) == 3 and len(scp) == 1  # mkdir, run, clean up; one copy
    for argv in ssh:
        assert argv[:6] == ["-o", "BatchMode=yes", "-o", "ConnectTimeout=7", "-i", str(key)]
        assert argv[6:9] == ["-p", "2222", "pi@edge-box"] and len(argv) == 10
    assert _command(ssh[0][-1]).startswith(f"mkdir -p {fakes.remote}/run-")
    assert _command(ssh[1][-1]).startswith(f"{PY} {fakes.remote}/run-") and ssh[1][-1].endswith("/spec.json")
    assert scp[0][scp[0].index("-P") + 1] == "2222" and "BatchMode=yes" in scp[0]
    assert scp[0][-1].startswith(f"pi@edge-box:{fakes.remote}/run-")
    assert sorted(Path(p).name for p in scp[0] if p.startswith("/") and "edgekd-stage" in p) == \
        ["m0", "m1", "spec.json", "worker.py"]
    assert list(fakes.remote.iterdir()) == []  # the run folder was removed afterwards


def test_ssh_copies_the_external_data_a_model_names(fakes, models, tmp_path):
    # exporters name the data file as they like (optimum: model.onnx_data), in a sub-folder even
    import onnx

    folder = tmp_path / "exported"
    (folder / "weights").mkdir(parents=True)
    onnx.save_model(onnx.load(str(models[1])), str(folder / "big.onnx"), save_as_external_data=True,
                    location="weights/big.bin")
    assert (folder / "weights" / "big.bin").stat().st_size > (folder / "big.onnx").stat().st_size
    (stats,) = measure([folder / "big.onnx"], _profile(tmp_path, _ssh(fakes)))
    assert stats.p50_ms > 0
    assert list(fakes.remote.iterdir()) == []


def test_ssh_measures_an_ort_format_file_under_its_own_suffix(fakes, models, tmp_path):
    """onnxruntime tells the ORT format by the .ort suffix: staged as model.onnx, the device could not load it."""
    from edgekd.ort_format import to_ort

    folder = tmp_path / "ort"
    folder.mkdir()
    onnx_file = folder / "small.onnx"
    onnx_file.write_bytes(models[0].read_bytes())
    made = to_ort(onnx_file, "arm", np.zeros((2, 1, 16, 16), np.float32), "fp32")
    onnx_stats, ort_stats = measure([onnx_file, folder / made.path], _profile(tmp_path, _ssh(fakes)))
    assert onnx_stats.p50_ms > 0 and ort_stats.p50_ms > 0
    assert list(fakes.remote.iterdir()) == []


def test_an_ort_file_linked_to_a_name_without_the_suffix_is_measured_as_ort_here_and_on_a_device(
        fakes, models, fast_profile, tmp_path):
    """DVC and Bazel keep objects without extensions: the local runner handed the worker the link's target, and
    onnxruntime, which tells the format by the .ort name, failed with "Protobuf parsing failed"."""
    from edgekd.ort_format import to_ort

    folder = tmp_path / "ort"
    folder.mkdir()
    onnx_file = folder / "small.onnx"
    onnx_file.write_bytes(models[0].read_bytes())
    made = to_ort(onnx_file, "arm", np.zeros((2, 1, 16, 16), np.float32), "fp32")
    (folder / made.path).rename(tmp_path / "3f9a0c")  # the store's object, named by its hash
    link = tmp_path / "release" / "small.ort"
    link.parent.mkdir()
    link.symlink_to(tmp_path / "3f9a0c")
    (here,) = measure([link], fast_profile)
    (there,) = measure([link], _profile(tmp_path, _ssh(fakes)))  # staged as model.ort on the device
    assert here.p50_ms > 0 and there.p50_ms > 0


def test_ssh_copies_to_an_ipv6_host_in_brackets(fakes, models, tmp_path):
    """scp reads user@host:path, so an IPv6 address's colons need brackets there; ssh takes the address bare."""
    profile = _profile(tmp_path, _ssh(fakes, host="fe80::1%usb0"))
    (stats,) = measure([models[0]], profile)
    assert stats.p50_ms > 0
    (scp,) = fakes.calls("scp")
    assert scp[-1].startswith(f"pi@[fe80::1%usb0]:{fakes.remote}/run-")
    assert all(argv[-2] == "pi@fe80::1%usb0" for argv in fakes.calls("ssh"))


def test_ssh_time_out_names_host_and_step(fakes, models, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SSH_SLEEP", "5")
    profile = _profile(tmp_path, _ssh(fakes, timeout_s=1))
    with pytest.raises(RunnerError, match=r"ssh to pi@edge-box:2222 timed out after 1 s while creating the remote "
                                          r"folder.*runner\.host"):
        measure([models[0]], profile)


def test_a_measurement_past_its_time_stops_on_the_device_too(fakes, models, tmp_path):
    """Killing the local ssh leaves the remote worker running (here: the stand-in's bash and the worker it
    started), sharing the device's cores with the next run; the worker stops itself once past timeout_s."""
    profile = _profile(tmp_path, _ssh(fakes, timeout_s=2), runs_per_repeat=1_000_000)
    with pytest.raises(RunnerError, match=r"ssh to pi@edge-box:2222 timed out after 2 s while running the "
                                          r"measurement: the measurement took longer than runner\.timeout_s; "
                                          r"raise runner\.timeout_s in the profile, or measure fewer runs"):
        measure([models[1]], profile)
    assert _left_running(str(fakes.remote)) == []


def test_the_worker_stops_itself_past_its_time(models, tmp_path):
    import time

    spec = tmp_path / "spec.json"
    rt = {"intra_op_threads": 1, "inter_op_threads": 1, "execution_mode": "sequential", "graph_optimization": "all",
          "allow_spinning": True, "providers": ["CPUExecutionProvider"]}
    ms = {"batch_size": 1, "warmup_runs": 1, "repeats": 2, "runs_per_repeat": 1_000_000, "max_cv": 0.5}
    spec.write_text(json.dumps({"models": [str(models[1])], "shape": None, "runtime": rt, "measure": ms,
                                "timeout_s": 1}))
    start = time.monotonic()
    proc = subprocess.run([PY, str(WORKER), str(spec)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and time.monotonic() - start < 30
    (line,) = proc.stdout.splitlines()
    answer = json.loads(line)
    assert answer["ok"] is False and answer["kind"] == "runner"
    assert answer["error"] == "the measurement took longer than runner.timeout_s (1 s), so the worker stopped itself"
    spec.write_text(json.dumps({"models": [str(models[1])], "shape": None, "runtime": rt, "measure": ms,
                                "timeout_s": "1"}))
    proc = subprocess.run([PY, str(WORKER), str(spec)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "timeout_s '1' is not a positive number" in json.loads(proc.stdout)["error"]


@pytest.mark.parametrize("env, why", [({"FAKE_RM_FAIL": "Permission denied"},
                                       r"exit 1: rm: cannot remove '\S+': Permission denied"),
                                      ({"FAKE_RM_SLEEP": "10"}, "timed out after 0.5 s")])
def test_a_failed_clean_up_is_said_with_the_command_that_removes_the_folder(fakes, models, tmp_path, monkeypatch,
                                                                            caplog, env, why):
    import edgekd.latency.remote as remote

    monkeypatch.setattr(remote, "_CLEAN_TIMEOUT_S", 0.5)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (stats,) = measure([models[0]], _profile(tmp_path, _ssh(fakes)))  # the result still comes back
    assert stats.p50_ms > 0
    (left,) = fakes.remote.iterdir()
    (record,) = [r for r in caplog.records if r.name == "edgekd.latency.remote"]
    said = record.getMessage()
    assert record.levelname == "WARNING" and "\n" not in said
    assert re.fullmatch(rf"warning: could not remove the run folder {left} on edge-box \({why}\), so the models "
                        r"copied there are still on the device; remove them with: ssh .*", said), said
    for key in env:
        monkeypatch.delenv(key)
    subprocess.run(["bash", "-c", said.split("remove them with: ")[1]], check=True, timeout=60)
    assert list(fakes.remote.iterdir()) == []  # the command given removes it


def test_a_clean_up_that_cannot_even_start_is_said_too(fakes, models, tmp_path, monkeypatch, caplog):

    real_run = subprocess.run

    def run(argv, **kwargs):
        if " rm -rf " in argv[-1]:
            raise PermissionError(13, "Permission denied", argv[0])
        return real_run(argv, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    measure([models[0]], _profile(tmp_path, _ssh(fakes)))
    (record,) = [r for r in caplog.records if r.name == "edgekd.latency.remote"]
    assert re.fullmatch(r"warning: could not remove the run folder \S+/run-\w+ on edge-box \(\[Errno 13\] Permission "
                        r"denied: 'ssh'\), so the models .* remove them with: ssh .*'rm -rf \S+'", record.getMessage())


def test_a_second_ctrl_c_during_the_clean_up_still_says_what_it_left(fakes, models, tmp_path, monkeypatch, caplog):
    """A slow rm over a bad link invites a second Ctrl-C (or SIGTERM, which the CLI raises as one): the run stops,
    and the folder it leaves on the device is said, with the command that removes it. Simulated: a background
    test runs with SIGINT ignored."""
    real_run = subprocess.run

    def run(argv, **kwargs):
        if " rm -rf " in argv[-1]:
            raise KeyboardInterrupt
        return real_run(argv, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(KeyboardInterrupt):
        measure([models[0]], _profile(tmp_path, _ssh(fakes)))
    (left,) = fakes.remote.iterdir()
    (record,) = [r for r in caplog.records if r.name == "edgekd.latency.remote"]
    said = record.getMessage()
    assert record.levelname == "WARNING" and said == (
        f"warning: could not remove the run folder {left} on edge-box (interrupted), so the models copied there are "
        "still on the device; remove them with: ssh -o BatchMode=yes -o ConnectTimeout=7 -p 2222 pi@edge-box "
        f"'rm -rf {left}'")
    monkeypatch.setattr(subprocess, "run", real_run)
    real_run(["bash", "-c", said.split("remove them with: ")[1]], check=True, timeout=60)
    assert list(fakes.remote.iterdir()) == []  # the command given removes it


def test_ssh_connection_refused(fakes, models, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SSH_FAIL", "Connection refused")
    with pytest.raises(RunnerError, match="ssh to pi@edge-box:2222 failed while creating the remote folder "
                                          r"\(exit 255\): ssh: connect to host .*Connection refused"):
        measure([models[0]], _profile(tmp_path, _ssh(fakes)))


# What OpenSSH prints, with BatchMode=yes, for a host key it does not know and for one that changed (a re-flashed
# board); older releases say only the last line.
HOST_KEY_UNKNOWN = ("No ED25519 host key is known for [edge-box]:2222 and you have requested strict checking.\r\n"
                    "Host key verification failed.\r\n")
HOST_KEY_CHANGED = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:3q2+7w1eJmZkq0bF7Vx3m2w3sJ4l7w8N0gQ1r2s3t4u.
Please contact your system administrator.
Add correct host key in /home/pi/.ssh/known_hosts to get rid of this message.
Offending ECDSA key in /home/pi/.ssh/known_hosts:3
  remove with:
  ssh-keygen -f "/home/pi/.ssh/known_hosts" -R "[edge-box]:2222"
Host key for [edge-box]:2222 has changed and you have requested strict checking.
Host key verification failed.
"""


@pytest.mark.parametrize("says, reason, fix", [
    (HOST_KEY_CHANGED, "Host key for [edge-box]:2222 has changed and you have requested strict checking",
     "the host key edge-box sent is not the one known_hosts holds for it (a re-flashed or replaced board, or its "
     "address now another device's): if that is expected, remove the old key with `ssh-keygen -R '[edge-box]:2222'`, "
     "then connect once with `ssh -p 2222 pi@edge-box` and accept the new one; then run again"),
    (HOST_KEY_UNKNOWN, "No ED25519 host key is known for [edge-box]:2222 and you have requested strict checking",
     "edge-box's host key is not in known_hosts yet, and ssh cannot ask to accept it with BatchMode=yes: connect once "
     "with `ssh -p 2222 pi@edge-box` and accept it, then run again"),
    ("Host key verification failed.\n", "Host key verification failed",
     "connect once with `ssh -p 2222 pi@edge-box` to see why: accept the host key when a new host asks, or, where its "
     "key changed (a re-flashed board), remove the old one with `ssh-keygen -R '[edge-box]:2222'` first; then run "
     "again"),
    ("pi@edge-box: Permission denied (publickey,password).\n", "pi@edge-box: Permission denied (publickey,password)",
     "pi@edge-box accepts no key ssh offered, and edgekd's ssh asks for no password (BatchMode=yes): install your "
     "public key on the board with `ssh-copy-id -p 2222 pi@edge-box`, or set runner.identity_file in the profile to "
     "the key it accepts; then run again"),
], ids=["changed", "unknown", "old-openssh", "no-key"])
def test_a_host_key_ssh_refuses_is_named_with_the_command_that_accepts_it(fakes, models, tmp_path, monkeypatch,
                                                                          run_cli, says, reason, fix):
    """The reason was the first line, a row of "@" for a changed key, and the fix never named host keys."""
    _profile(tmp_path, _ssh(fakes))
    monkeypatch.setenv("FAKE_SSH_SAYS", says)
    code, out, err = run_cli("bench", models[0], "--profile", tmp_path / "runner-test.toml", "--no-cache")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("error: ssh to pi@edge-box:2222 failed while creating the remote folder "
                                            f"(exit 255): {reason}; {fix}")


def test_ssh_remote_python_missing(fakes, models, tmp_path):
    profile = _profile(tmp_path, _ssh(fakes, python="python-does-not-exist"))
    with pytest.raises(RunnerError, match="python-does-not-exist was not found on edge-box; set runner.python"):
        measure([models[0]], profile)
    assert list(fakes.remote.iterdir()) == []  # cleaned up after a failure too


# What the Python a device has says to the worker: one before 3.7 cannot even compile it; one that crashes
OLD_PYTHON = ('#!/bin/sh\ncat >&2 <<EOF\n  File "$1", line 27\n    from __future__ import annotations\n    ^\n'
              "SyntaxError: future feature annotations is not defined\nEOF\nexit 1\n")
CRASHING_PYTHON = ('#!/bin/sh\ncat >&2 <<EOF\nTraceback (most recent call last):\n  File "$1", line 3, in <module>\n'
                   "    import json\nOSError: [Errno 28] No space left on device\nEOF\nexit 1\n")


@pytest.mark.parametrize("python, says", [
    (OLD_PYTHON, r"\S+/old-python on edge-box cannot run edgekd's worker: SyntaxError: future feature annotations "
                 r"is not defined; the worker needs Python 3\.7 or later on the device: set runner\.python"),
    (CRASHING_PYTHON, r"ssh to pi@edge-box:2222 failed while running the measurement \(exit 1\): OSError: "
                      r"\[Errno 28\] No space left on device; fix what runner\.python says on edge-box, "
                      "then run again"),
])
def test_a_python_traceback_is_told_by_its_last_line(fakes, models, tmp_path, python, says):
    """A traceback's first line only says where; its last says what (a Python before 3.7 cannot even compile
    the worker, and gets told so)."""
    device_python = _script(tmp_path / ("old-python" if python is OLD_PYTHON else "crashing-python"), python)
    with pytest.raises(RunnerError, match=says):
        measure([models[0]], _profile(tmp_path, _ssh(fakes, python=str(device_python))))


def test_ssh_garbled_output(fakes, models, tmp_path):
    junk = _script(tmp_path / "junk-python", "#!/bin/sh\necho 'Welcome to edge-box! Last login: yesterday'\n")
    with pytest.raises(RunnerError, match="could not parse the runner's output: 'Welcome to edge-box"):
        measure([models[0]], _profile(tmp_path, _ssh(fakes, python=str(junk))))


def test_ssh_not_installed(fakes, models, tmp_path, monkeypatch):
    profile = _profile(tmp_path, _ssh(fakes))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RunnerError, match="ssh is not installed or not on PATH"):
        measure([models[0]], profile)


def test_device_reports_its_onnxruntime_and_a_table_from_another_is_refused(fakes, models, tmp_path):
    """A remote table is stamped with the version the device reports, and a device that has since changed
    runtime is caught when it next measures (the host's own version says nothing about the device)."""
    from edgekd.latency.calibrate import device_runtime
    from edgekd.latency.table import Stamp
    from edgekd.search.choosing import check_runtime
    from edgekd.search.latency_model import LatencyModel

    newer = _script(tmp_path / "newer-python", f'#!/bin/sh\n"{PY}" "$@" | '
                    "sed 's/\"onnxruntime\": \"[^\"]*\"/\"onnxruntime\": \"9.9.9\"/'\n")
    profile = _profile(tmp_path, _ssh(fakes, python=str(newer)))
    assert device_runtime(profile, models[0]) == "9.9.9"
    assert Stamp.current(profile, "mbv2", (1, 32, 32), 10).onnxruntime == ""  # unknown until the device says
    (stats,) = measure([models[0]], profile)
    assert stats.onnxruntime == "9.9.9" and 0 < stats.p10_ms <= stats.p50_ms
    check_runtime(LatencyModel(lambda *_: 1.0, "latency table", "9.9.9"), stats, profile)  # same: fine
    # its file, the table's own space and input (the command's defaults would measure another), and --force: the
    # table still loads here, and calibrate keeps a loading table unless forced
    with pytest.raises(ProfileError, match=r"calibrated with onnxruntime 1\.0\.0, but the device now runs 9\.9\.9.*"
                                           r"edgekd profiles calibrate \S*runner-test\.toml --space resnet "
                                           r"--input-shape 3,64,64 --classes 5 --force`"):
        check_runtime(LatencyModel(lambda *_: 1.0, "latency table", "1.0.0"), stats, profile,
                      "--space resnet --input-shape 3,64,64 --classes 5")


def test_a_boards_kept_latency_fit_is_measured_again_once_the_board_runs_another_onnxruntime(fakes, tmp_path,
                                                                                               monkeypatch):
    """The fit cache's key cannot hold a board's runtime (this host cannot see it before measuring): the
    version the board reports in the reference measurement decides whether a kept fit still holds."""
    from edgekd.search import latency_model as lm
    from edgekd.search.spaces import MobileNetV2Space

    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    # the board's python, reporting the onnxruntime version $FAKE_ORT says it runs
    board_python = _script(tmp_path / "board-python", f"""#!/bin/sh
"{PY}" "$@" | sed 's/"onnxruntime": "[^"]*"/"onnxruntime": "'"$FAKE_ORT"'"/'
""")
    profile = _profile(tmp_path, _ssh(fakes, python=str(board_python)))
    space = MobileNetV2Space(name="mbv2-board-test", stems=(8,), widths=((8,), (8, 12), (12,)), depths=(1, 2),
                             expands=(2,), kernels=(3,))
    calib = np.random.default_rng(0).standard_normal((4, *SHAPE[1:])).astype(np.float32)

    def fit(version: str) -> list[str]:
        monkeypatch.setenv("FAKE_ORT", version)
        lines: list[str] = []
        lm.latency_model(space, profile, SHAPE[1:], 10, "fp32", calib, anchors=4, log=lines.append)
        return lines

    assert fit("1.17.0")[0].startswith("search: measuring 4 'mbv2-board-test' networks (fp32) on 'runner-test'")
    (kept,) = (tmp_path / "cache" / "latency-fits").glob("*.json")
    assert json.loads(kept.read_text())["fit"]["onnxruntime"] == "1.17.0"
    assert "latency from the fit of 4 networks" in fit("1.17.0")[0]
    lines = fit("1.20.0")
    assert lines[0] == ("search: the kept 'mbv2-board-test' fp32 latency fit was measured with onnxruntime 1.17.0, "
                        "and 'runner-test' now runs 1.20.0: measuring it again")
    assert lines[1].startswith("search: measuring 4") and json.loads(kept.read_text())["fit"]["onnxruntime"] == "1.20.0"


def test_validate_on_a_board_says_its_accuracy_is_this_hosts(fakes, models, tmp_path, run_cli):
    # the latency line named the board, and nothing said the accuracy beside it was computed here
    _profile(tmp_path, _ssh(fakes))
    code, out, err = run_cli("validate", models[0], "--profile", tmp_path / "runner-test.toml", "--data", "digits",
                             "--resolution", "16", "--json", tmp_path / "v.json")
    said = ("note: the accuracy was computed on this host with runner-test's runtime settings, not on its device; "
            "the latency is the device's")
    assert code in (0, 1) and said in out.splitlines(), out + err
    assert said in json.loads((tmp_path / "v.json").read_text())["notes"]
    code, out, _ = run_cli("validate", models[0], "--profile", "host-cpu-1t", "--data", "digits", "--resolution", "16")
    assert "computed on this host" not in out


def test_a_cached_bench_on_a_board_says_which_runtime_measured_it(fakes, models, tmp_path, run_cli):
    profile = _profile(tmp_path, _ssh(fakes))
    path = tmp_path / "runner-test.toml"
    code, out, err = run_cli("bench", models[0], "--profile", path)
    assert code == 0 and "cached" not in out, err
    import onnxruntime

    code, out, _ = run_cli("bench", models[0], "--profile", path)
    assert code == 0 and f"profile {profile.name} (cached result, measured on the device with onnxruntime " \
        f"{onnxruntime.__version__}; pass --no-cache after upgrading it or when the device behind this profile " \
        "changed)" in out


def test_remote_errors_keep_their_kind(fakes, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    profile = _profile(tmp_path, _ssh(fakes))
    with pytest.raises(ArtifactError, match=r"ssh to pi@edge-box:2222: onnxruntime cannot load '.*bad\.onnx'"):
        measure([bad], profile)
    with pytest.raises(ArtifactError, match="does not exist"):
        measure([tmp_path / "nope.onnx"], profile)


# --- adb ---------------------------------------------------------------------------------------------------
def test_adb_python_mode(fakes, models, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_SERIAL", "emulator-5554")
    profile = _profile(tmp_path, {"kind": "adb", "serial": "emulator-5554", "remote_dir": str(fakes.remote),
                                  "python": PY, "timeout_s": 60})
    small, big = measure(list(models), profile)
    _check_ordered(small, big)
    adb = fakes.calls("adb")
    assert [a[2] for a in adb] == ["shell", "push", "shell", "shell"]
    assert all(a[:2] == ["-s", "emulator-5554"] for a in adb)
    assert _command(adb[2][-1]).startswith(f"{PY} {fakes.remote}/run-")
    assert list(fakes.remote.iterdir()) == []


def test_adb_wrong_serial(fakes, models, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_SERIAL", "emulator-5554")
    profile = _profile(tmp_path, {"kind": "adb", "serial": "R58M", "remote_dir": str(fakes.remote), "python": PY})
    with pytest.raises(RunnerError, match="adb on device R58M failed while creating the remote folder .*"
                                          "device 'R58M' not found.*adb devices"):
        measure([models[0]], profile)


def test_adb_perf_test_mode(fakes, models, tmp_path, monkeypatch):
    perf_log = tmp_path / "perf.log"
    monkeypatch.setenv("FAKE_PERF_LOG", str(perf_log))
    device_bin = tmp_path / "device-bin"
    device_bin.mkdir()
    perf = _script(device_bin / "onnxruntime_perf_test", FAKE_PERF_TEST)
    profile = _profile(tmp_path, {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote),
                                  "perf_test": str(perf)}, threads=2)
    small, big = measure(list(models), profile)
    assert (small.p50_ms, small.p90_ms, small.p99_ms) == pytest.approx((0.2, 0.24, 0.28))
    assert big.p50_ms == pytest.approx(2.0) and big.mean_ms == pytest.approx(2.1)
    assert (small.runs, small.repeats, small.cv) == (10, 2, 0.0)
    calls = [json.loads(line) for line in perf_log.read_text().splitlines()]
    assert [c[c.index("-r") + 1] for c in calls] == ["2", "2", "5", "5", "5", "5"]  # warm-up, then timed repeats
    order = [c[-1].split("/")[-2] for c in calls[2:]]
    assert order == ["m0", "m1", "m1", "m0"]  # models take turns in rotating order
    assert all(c[:4] == ["-e", "cpu", "-m", "times"] and c[c.index("-x") + 1] == "2" and c[-2] == "-I"
               for c in calls)


def test_adb_perf_test_mode_times_an_ort_format_file(fakes, tmp_path, monkeypatch):
    """An ORT-format file is a flatbuffer: its inputs' free dimensions are read by onnxruntime, not onnx."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    monkeypatch.setenv("FAKE_PERF_LOG", str(tmp_path / "perf.log"))
    device_bin = tmp_path / "device-bin"
    device_bin.mkdir()
    perf = _script(device_bin / "onnxruntime_perf_test", FAKE_PERF_TEST)
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 1, 16, 16]) for n in ("x", "y"))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx_file, ort_file = tmp_path / "relu.onnx", tmp_path / "relu.ort"
    onnx_file.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                            ir_version=8).SerializeToString())
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(ort_file)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    profile = _profile(tmp_path, {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote),
                                  "perf_test": str(perf)})
    (stats,) = measure([ort_file], profile, shape=(3, 1, 16, 16))
    assert stats.p50_ms == pytest.approx(0.2) and stats.input_shape == (3, 1, 16, 16)
    calls = [json.loads(line) for line in (tmp_path / "perf.log").read_text().splitlines()]
    assert all(c[-1].endswith("/m0/model.ort") and c[c.index("-f") + 1] == "n:3" for c in calls)


@pytest.mark.parametrize("serial", [None, "R58M"])
def test_adb_perf_test_missing(fakes, models, tmp_path, serial):
    """A fresh phone has no onnxruntime_perf_test: the fix puts it there (with the serial adb needs), and only
    then offers another path."""
    runner = {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote)}
    profile = _profile(tmp_path, {**runner, "serial": serial} if serial else runner)
    perf = f"{fakes.remote}/onnxruntime_perf_test"
    adb = f"adb -s {serial}" if serial else "adb"
    with pytest.raises(RunnerError) as exc:
        measure([models[0]], profile)
    assert exc.value.message == (
        f"{perf} was not found on {'device ' + serial if serial else 'the adb device'}; build onnxruntime_perf_test "
        f"for the device and copy it there with `{adb} push onnxruntime_perf_test {perf}`, or set runner.perf_test in "
        "the profile to its path on the device")


def test_adb_unauthorized_says_to_accept_the_prompt_on_the_phone(fakes, models, tmp_path, monkeypatch):
    """adb's advice comes on the lines after its first, which the message leaves out: the fix says it instead
    of sending the user to check a cable that is plugged in."""
    monkeypatch.setenv("FAKE_ADB_UNAUTHORIZED", "1")
    profile = _profile(tmp_path, {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote)})
    with pytest.raises(RunnerError) as exc:
        measure([models[0]], profile)
    assert exc.value.message == (
        "adb on the device failed while creating the remote folder (exit 1): adb: device unauthorized; unlock the "
        "device and accept its 'Allow USB debugging?' prompt for this computer's RSA key, then run again; if no "
        "prompt shows, unplug and replug the USB cable, or run `adb kill-server` first")


@pytest.mark.parametrize("says, fix", [
    ("adb: device offline", "the device is connected but not answering: run `adb reconnect`"),
    ("adb: more than one device/emulator", "set runner.serial in the profile to the serial `adb devices` lists"),
    ("adb: no devices/emulators found", "connect the device with USB debugging on (`adb devices` lists none)"),
])
def test_adb_s_own_refusals_each_get_their_fix(fakes, models, tmp_path, monkeypatch, says, fix):
    monkeypatch.setenv("FAKE_ADB_SAYS", says)
    profile = _profile(tmp_path, {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote)})
    with pytest.raises(RunnerError) as exc:
        measure([models[0]], profile)
    assert exc.value.message.startswith(f"adb on the device failed while creating the remote folder (exit 1): {says}; "
                                        f"{fix}"), exc.value.message


# adb's notes, on stderr before its answer, when its server was not running yet
DAEMON = "* daemon not running; starting now at tcp:5037\n* daemon started successfully\n"


@pytest.mark.parametrize("says, fix", [
    ("adb: device unauthorized.", "unlock the device and accept its 'Allow USB debugging?' prompt"),
    ("adb: no devices/emulators found", "connect the device with USB debugging on (`adb devices` lists none)"),
])
def test_adb_s_daemon_start_notes_do_not_hide_its_refusal(fakes, models, tmp_path, monkeypatch, says, fix):
    """Only the first line was read, "* daemon not running; ...": the probe said perf_test was not on the device
    and a measurement gave the daemon's note as the reason, with the cable advice."""
    from edgekd.latency.runners import probe_device

    monkeypatch.setenv("FAKE_ADB_SAYS", DAEMON + says)
    device_bin = tmp_path / "device-bin"
    device_bin.mkdir()
    perf = _script(device_bin / "onnxruntime_perf_test", FAKE_PERF_TEST)
    profile = _profile(tmp_path, {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote),
                                  "perf_test": str(perf)})
    for step, run in (("checking the device before the run", lambda: probe_device(profile)),
                      ("creating the remote folder", lambda: measure([models[0]], profile))):
        with pytest.raises(RunnerError) as exc:
            run()
        assert exc.value.message.startswith(f"adb on the device failed while {step} (exit 1): "
                                            f"{says.rstrip('.')}; {fix}"), exc.value.message
        assert "daemon" not in exc.value.message and "was not found" not in exc.value.message


def test_a_probe_that_adb_itself_fails_never_says_perf_test_is_missing(fakes, tmp_path, monkeypatch):
    """adb's own failure in words the runner does not know is still not a missing binary."""
    from edgekd.latency.runners import probe_device

    monkeypatch.setenv("FAKE_ADB_SAYS", DAEMON + "failed to get feature set: protocol fault (couldn't read status)")
    profile = _profile(tmp_path, {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote)})
    with pytest.raises(RunnerError) as exc:
        probe_device(profile)
    assert exc.value.message.startswith("adb on the device failed while checking the device before the run (exit 1): "
                                        "failed to get feature set: protocol fault"), exc.value.message
    assert "check the device is connected with USB debugging" in exc.value.fix


@pytest.mark.parametrize("kind", ["ssh", "adb"])
def test_a_remote_dir_the_device_refuses_is_named_not_the_connection(fakes, models, tmp_path, kind):
    """The link worked and mkdir of runner.remote_dir failed: the fix was to check the host or the USB cable."""
    (tmp_path / "a-file").write_text("")
    remote_dir = str(tmp_path / "a-file" / "edgekd")  # mkdir -p under a file fails, even for root
    runner = (_ssh(fakes, remote_dir=remote_dir) if kind == "ssh"
              else {"kind": "adb", "remote_dir": remote_dir, "python": PY})
    with pytest.raises(RunnerError) as exc:
        measure([models[0]], _profile(tmp_path, runner))
    assert "failed while creating the remote folder (exit 1): mkdir: cannot create directory" in exc.value.message
    device = "edge-box" if kind == "ssh" else "the adb device"
    phone = "" if kind == "ssh" else " (on a phone without root, a folder under /data/local/tmp)"
    assert exc.value.fix == (f"check that runner.remote_dir ({remote_dir}) can be created and written on {device} "
                             "and that its file system has free space, or set runner.remote_dir in the profile to a "
                             f"writable folder there{phone}")


# A login banner and the warning bash gives for a locale the board lacks (a client's SendEnv LC_*), on stderr before
# any command's own words
LOGIN = ("Authorized uses only. All activity may be monitored and reported.\n"
         "bash: warning: setlocale: LC_ALL: cannot change locale (en_US.UTF-8)\n")


@pytest.mark.parametrize("kind", ["ssh", "adb", "adb-merged"])
def test_the_login_s_banner_and_locale_warning_never_stand_in_for_the_reason(fakes, models, tmp_path, monkeypatch,
                                                                             kind):
    """Each failure read from stderr (the folder, the copy, a device program that would not start) gave the
    banner's line as its reason; an adb without shell v2 sends the command's stderr, the marker included, on stdout."""
    monkeypatch.setenv("FAKE_LOGIN_SAYS", LOGIN)
    if kind == "adb-merged":
        monkeypatch.setenv("FAKE_ADB_MERGED", "1")
    (tmp_path / "a-file").write_text("")
    broken = _script(tmp_path / "python3", "#!/bin/sh\necho \"$0: error while loading shared libraries: "
                     "libpython3.11.so.1.0: cannot open shared object file\" >&2\nexit 127\n")

    def failing(**runner):
        base = (_ssh(fakes) if kind == "ssh" else {"kind": "adb", "remote_dir": str(fakes.remote), "python": PY})
        with pytest.raises(RunnerError) as exc:
            measure([models[0]], _profile(tmp_path, {**base, **runner}))
        assert "Authorized" not in exc.value.message and "setlocale" not in exc.value.message
        return exc.value.message

    said = failing(remote_dir=str(tmp_path / "a-file" / "edgekd"))
    assert "failed while creating the remote folder (exit 1): mkdir: cannot create directory" in said, said
    assert "(exit 127): " + str(broken) + ": error while loading shared libraries" in failing(python=str(broken))
    if kind == "ssh":  # scp has no command to mark: the lines the login printed before mkdir are left out
        monkeypatch.setenv("FAKE_COPY_SAYS", f"scp: {fakes.remote}/m0: No space left on device")
        said = failing()
        assert f"failed while copying the models (exit 1): scp: {fakes.remote}/m0: No space left on device" in said
    else:  # the probe reads what `command -v` prints: the marker is not perf_test's path
        from edgekd.latency.runners import probe_device

        profile = _profile(tmp_path, {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote)})
        with pytest.raises(RunnerError, match=f"^{fakes.remote}/onnxruntime_perf_test was not found on the adb"):
            probe_device(profile)


@pytest.mark.parametrize("kind, says, link", [
    ("ssh", "scp: {dir}/m0: No space left on device", False),
    ("ssh", "ssh: connect to host edge-box port 2222: Connection timed out\nlost connection", True),
    ("adb", "adb: error: failed to copy '{dir}' to '{dir}': remote No space left on device", False),
    ("adb", DAEMON + "adb: device offline", True),
], ids=["scp-full", "scp-link", "adb-full", "adb-link"])
def test_a_copy_the_device_refuses_names_the_remote_dir(fakes, models, tmp_path, monkeypatch, kind, says, link):
    monkeypatch.setenv("FAKE_COPY_SAYS", says.format(dir=fakes.remote))
    runner = _ssh(fakes) if kind == "ssh" else {"kind": "adb", "remote_dir": str(fakes.remote), "python": PY}
    with pytest.raises(RunnerError) as exc:
        measure([models[0]], _profile(tmp_path, runner))
    assert "failed while copying the models (exit 1): " in exc.value.message
    assert exc.value.fix.startswith("check that runner.remote_dir") is not link, exc.value.fix
    if link:
        assert ("check the host is reachable" if kind == "ssh" else "run `adb reconnect`") in exc.value.fix


@pytest.mark.parametrize("prints, missing", [
    ("Segfault handler installed\nok\n", "Average inference time cost, P50 Latency, P90 Latency, P99 Latency lines"),
    ("Average inference time cost: 1.2 ms\nP50 Latency: 0.001 s\n", "P90 Latency, P99 Latency lines"),
], ids=["garbage", "no-percentiles"])
def test_perf_test_output_without_its_latency_lines_names_perf_test(fakes, models, tmp_path, prints, missing):
    """It said to check the device's Python, numpy and onnxruntime, which perf_test mode does not use."""
    device_bin = tmp_path / "device-bin"
    device_bin.mkdir()
    perf = _script(device_bin / "onnxruntime_perf_test", f"#!/bin/sh\nprintf '{prints}'\n")
    profile = _profile(tmp_path, {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote),
                                  "perf_test": str(perf)})
    with pytest.raises(RunnerError) as exc:
        measure([models[0]], profile)
    said = exc.value.message
    assert said.startswith(f"could not parse the output of {perf} (runner.perf_test) on the adb device while running "
                           f"onnxruntime_perf_test on small.onnx: it printed no {missing}"), said
    assert "runner.perf_test is onnxruntime's own onnxruntime_perf_test" in exc.value.fix
    assert "numpy" not in str(exc.value)


@pytest.mark.parametrize("says, code", [
    ('CANNOT LINK EXECUTABLE "{prog}": library "libonnxruntime.so" not found: needed by main executable', 1),
    ("{prog}: error while loading shared libraries: libonnxruntime.so: cannot open shared object file: No such "
     "file or directory", 127),  # glibc's loader exits 127, as a shell does for a missing program
], ids=["android-linker", "glibc-loader"])
def test_a_perf_test_that_is_there_but_cannot_start_says_why(fakes, models, tmp_path, says, code):
    """Any "not found" in the output was read as perf_test itself missing, so a binary lacking its shared
    library was reported as not on the device, with advice to set runner.perf_test to where it already was."""
    device_bin = tmp_path / "device-bin"
    device_bin.mkdir()
    perf = device_bin / "onnxruntime_perf_test"
    _script(perf, f"#!/bin/sh\necho '{says.format(prog=perf)}' >&2\nexit {code}\n")
    profile = _profile(tmp_path, {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote),
                                  "perf_test": str(perf)})
    with pytest.raises(RunnerError) as exc:
        measure([models[0]], profile)
    assert "was not found" not in exc.value.message
    assert f"(exit {code}): {says.format(prog=perf)}"[:150] in exc.value.message
    # and the fix is the library's, not the USB connection's, which worked
    assert exc.value.fix.startswith("copy the shared library it names to the adb device and put its folder on "
                                    "LD_LIBRARY_PATH there, or set runner.perf_test"), exc.value.fix


# onnxruntime's reason, preceded by its C++ source location, as perf_test prints it (ex.what(), exit -1) for a model
# it cannot load; {model} is the path it was given, the run folder's copy
ORT_WHERE = ("Load model from {model} failed:/onnxruntime_src/onnxruntime/core/graph/model.cc:180 onnxruntime::Model::"
             "Model(ONNX_NAMESPACE::ModelProto&&, const PathString&, const IOnnxRuntimeOpSchemaRegistryList*, const "
             "onnxruntime::logging::Logger&, const onnxruntime::ModelOptions&) ")


@pytest.mark.parametrize("says, problem, fix", [
    (ORT_WHERE + "Unsupported model IR version: 10, max supported IR version: 9",
     "'{small}' is ONNX IR version 10, and onnxruntime (version unknown in perf_test mode) reads up to 9",
     "upgrade onnxruntime where the model runs, or save the model with IR version 9 (the onnx package that wrote it "
     "is newer than that onnxruntime)"),
    (ORT_WHERE + "Unknown model file format version.",
     "onnxruntime cannot load '{small}': Unknown model file format version.",
     "pass a complete, valid ONNX model (re-export it)"),
], ids=["ir-too-new", "other"])
def test_a_model_perf_test_cannot_load_is_named_as_python_mode_names_it(fakes, models, tmp_path, run_cli, says,
                                                                        problem, fix):
    """The reason was cut at 200 characters, inside the C++ signature, named the device's copy of the model, and
    blamed runner.perf_test; it is the model, an ArtifactError, as in python mode."""
    device_bin = tmp_path / "device-bin"
    device_bin.mkdir()
    perf = _script(device_bin / "onnxruntime_perf_test",
                   f"#!/bin/sh\nfor model; do :; done\necho \"{says.format(model='$model')}\" >&2\nexit 255\n")
    profile = _profile(tmp_path, {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote),
                                  "perf_test": str(perf)})
    with pytest.raises(ArtifactError) as exc:
        measure([models[0]], profile)
    assert exc.value.message == f"adb on the device: {problem.format(small=models[0])}; {fix}"
    code, out, err = run_cli("bench", models[0], "--profile", tmp_path / "runner-test.toml", "--no-cache")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"error: {exc.value.message}"


def test_a_device_python_that_cannot_start_says_why(fakes, models, tmp_path):
    """The same for runner.python: one there but broken is named with its own reason; one missing, as missing."""
    broken = _script(tmp_path / "python3", "#!/bin/sh\necho \"$0: error while loading shared libraries: "
                     "libpython3.11.so.1.0: cannot open shared object file: No such file or directory\" >&2\n"
                     "exit 127\n")
    with pytest.raises(RunnerError, match=r"failed while running the measurement \(exit 127\): \S+/python3: error "
                                          "while loading shared libraries: libpython3.11.so.1.0"):
        measure([models[0]], _profile(tmp_path, _ssh(fakes, python=str(broken))))
    with pytest.raises(RunnerError, match=r"\S+/gone/python3 was not found on edge-box; set runner\.python"):
        measure([models[0]], _profile(tmp_path, _ssh(fakes, python=str(tmp_path / "gone" / "python3"))))


def test_a_perf_test_past_its_time_stops_on_the_device_too(fakes, models, tmp_path, monkeypatch):
    """perf_test cannot stop itself: the device's own `timeout` ends it once killing the local adb has not."""
    monkeypatch.setenv("FAKE_PERF_LOG", str(tmp_path / "perf.log"))
    monkeypatch.setenv("FAKE_PERF_SLEEP", "60")
    device_bin = tmp_path / "device-bin"
    device_bin.mkdir()
    perf = _script(device_bin / "onnxruntime_perf_test", FAKE_PERF_TEST)
    profile = _profile(tmp_path, {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote),
                                  "perf_test": str(perf), "timeout_s": 2})
    with pytest.raises(RunnerError, match=r"^adb on the device timed out after 2 s while running "
                                          r"onnxruntime_perf_test on small\.onnx: the measurement took longer than "
                                          r"runner\.timeout_s; raise runner\.timeout_s"):
        measure([models[0]], profile)
    assert _left_running(str(device_bin)) == []


# --- the probe before a stage's work ----------------------------------------------------------------------
def test_the_probe_asks_the_device_one_question_and_copies_nothing(fakes, tmp_path):
    from edgekd.latency.runners import probe_device

    probe_device(_profile(tmp_path, _ssh(fakes)))
    assert fakes.calls("scp") == [] and not fakes.remote.exists()
    (call,) = fakes.calls("ssh")
    assert _command(call[-1]) == f"{PY} -c 'import numpy, onnxruntime'"


def test_the_probe_leaves_this_host_alone(fast_profile, monkeypatch):
    from edgekd.latency.runners import probe_device

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("the host was probed"))
    probe_device(fast_profile)


def test_an_unreachable_board_fails_the_probe_as_a_measurement_would(fakes, tmp_path, monkeypatch):
    from edgekd.latency.runners import probe_device

    monkeypatch.setenv("FAKE_SSH_FAIL", "Connection refused")
    with pytest.raises(RunnerError) as exc:
        probe_device(_profile(tmp_path, _ssh(fakes)))
    assert exc.value.message == (
        "ssh to pi@edge-box:2222 failed while checking the device before the run (exit 255): ssh: connect to host "
        "box port 2222: Connection refused; check the host is reachable, runner.host/port/user/identity_file in the "
        "profile, and that key login works without a password (ssh runs with BatchMode=yes); raise runner.timeout_s "
        "for slow devices")


def test_the_probe_names_a_device_python_without_onnxruntime_or_none_at_all(fakes, tmp_path):
    from edgekd.latency.runners import probe_device

    bare = _script(tmp_path / "bare-python", "#!/bin/sh\ncat >&2 <<EOF\nTraceback (most recent call last):\n"
                   '  File "<string>", line 1, in <module>\n'
                   "ModuleNotFoundError: No module named 'onnxruntime'\nEOF\nexit 1\n")
    with pytest.raises(RunnerError) as exc:
        probe_device(_profile(tmp_path, _ssh(fakes, python=str(bare))))
    assert exc.value.message == (
        f"{bare} on edge-box cannot import numpy and onnxruntime: ModuleNotFoundError: No module named 'onnxruntime'; "
        "install them for that Python (pip install numpy onnxruntime) or set runner.python in the profile to a Python "
        "that has them")
    with pytest.raises(RunnerError, match=r"^python-does-not-exist was not found on edge-box; set runner\.python"):
        probe_device(_profile(tmp_path, _ssh(fakes, python="python-does-not-exist")))


def test_the_probe_looks_for_perf_test_on_an_adb_device(fakes, tmp_path, monkeypatch):
    from edgekd.latency.runners import probe_device

    device_bin = tmp_path / "device-bin"
    device_bin.mkdir()
    perf = device_bin / "onnxruntime_perf_test"
    runner = {"kind": "adb", "mode": "perf_test", "remote_dir": str(fakes.remote), "perf_test": str(perf)}
    with pytest.raises(RunnerError, match=rf"^{re.escape(str(perf))} was not found on the adb device; build "
                                          rf"onnxruntime_perf_test for the device and copy it there with `adb push "
                                          rf"onnxruntime_perf_test {re.escape(str(perf))}`"):
        probe_device(_profile(tmp_path, runner))
    _script(perf, FAKE_PERF_TEST)
    probe_device(_profile(tmp_path, runner))  # there: nothing to say
    monkeypatch.setenv("FAKE_ADB_UNAUTHORIZED", "1")
    with pytest.raises(RunnerError, match=r"^adb on the device failed while checking the device before the run "
                                          r"\(exit 1\): adb: device unauthorized; unlock the device and accept"):
        probe_device(_profile(tmp_path, runner))


class _DataLoaded(Exception):
    pass


@pytest.fixture
def no_data(monkeypatch):
    """The stages' first minute of work (data, then a teacher) replaced by an exception that says it began."""
    import edgekd.pipeline as pipeline
    import edgekd.pipeline.stages as stages

    def loaded(*_a, **_k):
        raise _DataLoaded

    monkeypatch.setattr(stages, "run_data", loaded)
    monkeypatch.setattr(pipeline, "run_data", loaded)


@pytest.mark.parametrize("stage", ["search", "compress", "distill", "distill --target-ms"])
def test_a_stage_that_measures_on_an_unreachable_board_fails_before_its_work(fakes, tmp_path, monkeypatch, no_data,
                                                                              stage):
    """An unreachable board was found only at the first measurement, about 40 s of data, teacher and exports in."""
    from edgekd.pipeline import CompressConfig, compress, run_distill, run_search

    _profile(tmp_path, _ssh(fakes))
    monkeypatch.setenv("FAKE_SSH_FAIL", "Connection refused")
    config = CompressConfig(profile=str(tmp_path / "runner-test.toml"), out=str(tmp_path / "out"),
                            target_ms=1.0 if "target" in stage else None)
    run = {"search": lambda: run_search(config, tmp_path / "search.json"), "compress": lambda: compress(config),
           "distill": lambda: run_distill(config, tmp_path / "out")}[stage.split()[0]]
    with pytest.raises(RunnerError, match="^ssh to pi@edge-box:2222 failed while checking the device before the run"):
        run()
    assert len(fakes.calls("ssh")) == 1


def test_a_distill_of_a_searched_student_asks_the_board_nothing(fakes, tmp_path, monkeypatch, no_data):
    """Given --search and no --target-ms, distill measures nothing on the device, so an unplugged board is fine."""
    from edgekd.pipeline import CompressConfig, run_distill

    _profile(tmp_path, _ssh(fakes))
    monkeypatch.setenv("FAKE_SSH_FAIL", "Connection refused")
    (tmp_path / "search.json").write_text("{}")  # read only after the data, which never comes here
    config = CompressConfig(profile=str(tmp_path / "runner-test.toml"), search_file=str(tmp_path / "search.json"),
                            budget_ms=1.0)
    with pytest.raises(_DataLoaded):
        run_distill(config, tmp_path / "out")
    assert fakes.calls("ssh") == []


def test_calibrating_an_unreachable_board_fails_before_its_work(fakes, tmp_path, monkeypatch):
    import edgekd.latency.calibrate as calibrate

    monkeypatch.setattr(calibrate, "reference_model", lambda *a, **k: pytest.fail("calibration began"))
    monkeypatch.setenv("FAKE_SSH_FAIL", "Connection refused")
    with pytest.raises(RunnerError, match="^ssh to pi@edge-box:2222 failed while checking the device before the run"):
        calibrate.calibrate(_profile(tmp_path, _ssh(fakes)), path=tmp_path / "table.json")


def test_the_cli_says_an_unreachable_board_in_one_line(fakes, tmp_path, monkeypatch, no_data, run_cli):
    _profile(tmp_path, _ssh(fakes))
    monkeypatch.setenv("FAKE_SSH_FAIL", "Connection refused")
    code, out, err = run_cli("search", "--profile", tmp_path / "runner-test.toml", "--out", tmp_path / "s.json")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ssh to pi@edge-box:2222 failed while checking the device "
                                                    "before the run (exit 255): ssh: connect to host box port 2222: "
                                                    "Connection refused; check the host is reachable")


# --- local and the worker ----------------------------------------------------------------------------------
def test_local_runner_measures_in_a_separate_process(models, fast_profile, monkeypatch):
    import edgekd.latency.runners as runners

    seen = []
    real_run = subprocess.run

    def spy(argv, **kwargs):
        seen.append(list(argv))
        return real_run(argv, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    small, big = measure(list(models), fast_profile)
    assert len(seen) == 1 and seen[0][:2] == [sys.executable, str(runners.WORKER)]
    assert 0 < small.p50_ms <= small.p99_ms and speedup(big, small) > 2
    assert small.runs == 10 * small.repeats


def test_worker_is_standalone(models, tmp_path):
    tree = ast.parse(WORKER.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert imported <= {"__future__", "json", "os", "re", "sys", "threading", "time", "numpy", "onnxruntime"}
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    spec = tmp_path / "spec.json"
    rt = {"intra_op_threads": 1, "inter_op_threads": 1, "execution_mode": "sequential", "graph_optimization": "all",
          "allow_spinning": True, "providers": ["CPUExecutionProvider"]}
    ms = {"batch_size": 1, "warmup_runs": 1, "repeats": 1, "runs_per_repeat": 1, "max_cv": 0.5}
    spec.write_text(json.dumps({"models": [str(bad)], "shape": None, "runtime": rt, "measure": ms}))
    proc = subprocess.run([PY, str(WORKER), "spec.json"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1 and len(lines) == 1
    answer = json.loads(lines[0])
    assert answer["ok"] is False and "cannot load" in answer["error"] and answer["fix"] and answer["kind"] == "artifact"


def test_worker_runs_on_the_python_of_older_boards():
    """The worker runs on the device's own Python: Raspberry Pi OS and Jetson images carry 3.7-3.9. (Its
    annotations are never evaluated: it imports annotations from __future__.)"""
    vermin = Path(sys.executable).with_name("vermin")
    done = subprocess.run([str(vermin), "-t=3.7-", "--no-tips", "--violations", str(WORKER)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_perf_test_free_dims_name_the_shape_to_pass(tmp_path):
    """onnxruntime_perf_test sets dynamic dimensions by name (-f name:value); a size it cannot guess asks for
    --input-shape, with an example that keeps the model's own channels."""
    import onnx
    from onnx import TensorProto, helper

    from edgekd.latency.perftest import fed_shape, free_dims

    def model(dims):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
        path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.onnx"
        onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])),
                  str(path))
        return path

    named = model(["n", 1, "h", "w"])
    assert free_dims(named, 4, [2, 1, 8, 8]) == ["n:2", "h:8", "w:8"]
    assert fed_shape(named, 4, [2, 1, 8, 8]) == (2, 1, 8, 8)
    # a fixed batch is what runs, whatever the profile's batch: the latency is said to be for it
    assert free_dims(model([1, 3]), 8, None) == [] and fed_shape(model([1, 3]), 8, None) == (1, 3)
    assert fed_shape(model(["n", 3]), 8, None) == (8, 3)
    # the profile's batch, so that following the example measures what the profile asks
    with pytest.raises(RunnerError, match=r"dynamic dimension 2 \(h\).*e\.g\. --input-shape 4,1,224,224"):
        free_dims(named, 4, None)
    with pytest.raises(RunnerError, match="dimension 2 of model input 'x' is dynamic but unnamed"):
        free_dims(model(["n", 1, None, 8]), 1, [1, 1, 8, 8])
    with pytest.raises(RunnerError, match="model input 'x' of '.*' has no shape recorded, and "
                                          "onnxruntime_perf_test can only set named dimensions"):
        free_dims(model(None), 1, [1, 1, 8, 8])  # rank unknown: no dimension to name
    square = model(["N", 1, "S", "S"])
    assert free_dims(square, 1, [1, 1, 8, 8]) == ["N:1", "S:8"]
    # -f S:8 -f S:16 would time some other shape (perf_test keeps one of them) under this one's name
    with pytest.raises(RunnerError, match=r"^model input 'x' names two dimensions 'S', and --input-shape 1,1,8,16 "
                                          r"sets them to 8 and 16: onnxruntime_perf_test cannot set one named "
                                          r"dimension to two sizes; use runner\.mode = \"python\""):
        free_dims(square, 1, [1, 1, 8, 16])


def test_perf_test_output_parsing():
    from edgekd.latency.perftest import parse

    text = "Average inference time cost: 1.5 ms\nP50 Latency: 0.0012 s\nP90 Latency: 1400 us\nP99 Latency: 0.002 s\n"
    assert parse(text) == pytest.approx({"mean": 1.5, "p50": 1.2, "p90": 1.4, "p99": 2.0})
    assert parse("P50 Latency: 0.0012 s\n") is None


# --- profiles ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("runner, match", [
    ({"kind": "ssh", "user": "pi"}, "needs key 'runner.host'"),
    ({"kind": "ssh", "host": "box", "hostname": "box"}, "unknown key 'runner.hostname' for runner kind 'ssh'"),
    ({"kind": "local", "host": "box"}, "unknown key 'runner.host'"),
    ({"kind": "adb", "mode": "fast"}, "runner.mode.*use one of 'python', 'perf_test'"),
    ({"kind": "ssh", "host": "box", "port": "22"}, "'runner.port' must be int"),
    ({"kind": "ssh", "host": "-oProxyCommand=x"}, "runner.host"),
    ({"kind": "ssh", "host": "box", "remote_dir": "~/edgekd"}, "absolute path"),
    ({"kind": "ssh", "host": "box", "python": "~/venv/bin/python"},
     r"key 'runner\.python' is '~/venv/bin/python'; give the absolute path of the Python on the device"),
    ({"kind": "adb", "python": "/data/my env/bin/python3"}, r"key 'runner\.python' is '/data/my env/bin/python3'"),
    ({"kind": "adb", "python": "$HOME/bin/python3"}, r"runner\.python.*no spaces, ~ or \$"),
    ({"kind": "telnet"}, "runner.kind"),
])
def test_runner_validation(tmp_path, runner, match):
    with pytest.raises(ProfileError, match=match) as exc:
        _profile(tmp_path, runner)
    assert "runner-test.toml" in str(exc.value)


def test_a_host_with_a_port_is_refused_with_the_port_key_to_set(tmp_path):
    """It was accepted, and ssh then looked up "raspberrypi.local:2222" as a name ("ssh to
    pi@[raspberrypi.local:2222]:22"); an IPv6 address, with its several colons, is still a host."""
    with pytest.raises(ProfileError) as exc:
        _profile(tmp_path, {"kind": "ssh", "host": "raspberrypi.local:2222", "user": "pi"})
    assert exc.value.message.endswith("key 'runner.host' is 'raspberrypi.local:2222', a host with a port; put the "
                                      'port in runner.port: host = "raspberrypi.local" and port = 2222 under [runner]')
    assert _profile(tmp_path, {"kind": "ssh", "host": "fe80::1%eth0"}).runner["host"] == "fe80::1%eth0"


def test_shipped_remote_profiles_load():
    rpi, android = load_profile("rpi4-arm64"), load_profile("android-arm64")
    assert rpi.runner["kind"] == "ssh" and rpi.runner["host"] == "raspberrypi.local" and rpi.threads == 4
    assert android.runner["kind"] == "adb" and android.runner["mode"] == "perf_test"
    assert not rpi.calibrated_here and not android.calibrated_here
    assert "NOT calibrated" in rpi.description and "NOT calibrated" in android.description


def test_timeouts_do_not_change_the_digest(tmp_path):
    a = _profile(tmp_path, {"kind": "local"})
    b = _profile(tmp_path, {"kind": "local", "timeout_s": 5})
    assert a.digest() == b.digest() and np.isclose(b.runner["timeout_s"], 5)


def test_models_fed_other_shapes_get_one_each_in_the_spec_and_the_cache_key(fast_profile, tmp_path):
    """bench --input-shape once per model (an NCHW model beside its channels-last twin): the worker spec and the
    cache key carry a shape per model only where they differ, so one shape for all reads as it always did."""
    from edgekd.latency.cache import _key
    from edgekd.latency.runners import _spec
    from edgekd.latency.worker import WorkerError, load_spec

    models = [str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")]
    for m in models:
        Path(m).write_bytes(b"model " + m.encode())
    one = _spec(models, [Path(m) for m in models], (1, 1, 8, 8), fast_profile)
    assert one["shape"] == [1, 1, 8, 8] and "shapes" not in one
    assert _spec(models, [Path(m) for m in models], [(1, 1, 8, 8), (1, 1, 8, 8)], fast_profile) == one
    each = _spec(models, [Path(m) for m in models], [(1, 1, 8, 8), (1, 8, 8, 1)], fast_profile)
    assert each["shape"] is None and each["shapes"] == [[1, 1, 8, 8], [1, 8, 8, 1]]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(each))
    assert load_spec(str(spec))["shapes"] == [[1, 1, 8, 8], [1, 8, 8, 1]]
    spec.write_text(json.dumps({**each, "shapes": [[1, 1, 8, 8]]}))
    with pytest.raises(WorkerError, match=r"shapes \[\[1, 1, 8, 8\]\] are not one list of integers \(or null\) per "
                                          "model"):
        load_spec(str(spec))
    assert _key(models, fast_profile, (1, 1, 8, 8)) == _key(models, fast_profile, [(1, 1, 8, 8)] * 2)
    assert _key(models, fast_profile, [(1, 1, 8, 8), (1, 8, 8, 1)]) != _key(models, fast_profile, (1, 1, 8, 8))


def test_a_shape_count_other_than_the_models_is_refused_in_one_line(fast_profile, tmp_path):
    """edgekd.measure(paths, profile, shapes) with a shape per model but the wrong number of them: a bare
    ValueError, with no fix."""
    from edgekd.errors import ConfigError
    from edgekd.latency.measure import measure, per_model

    assert per_model([1, 1, 8, 8], 2) == [(1, 1, 8, 8), (1, 1, 8, 8)]
    assert per_model([[1, 1, 8, 8], None], 2) == [(1, 1, 8, 8), None]
    with pytest.raises(ConfigError, match=r"^3 input shapes for 2 models; give one shape for every model, or one "
                                          r"\(or None\) per model, in order$"):
        measure([tmp_path / "a.onnx", tmp_path / "b.onnx"], fast_profile, [[1, 1, 8, 8]] * 3)
