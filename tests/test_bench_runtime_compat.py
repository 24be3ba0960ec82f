"""benchmarks/runtime_compat.py: every student file of a run loaded by an onnxruntime in its own process and
compared with this one's outputs; a file it cannot load is named with edgekd's reason."""

import json
import shutil

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("runtime_compat")


def test_this_onnxruntime_in_a_process_of_its_own_agrees_with_itself_and_a_junk_file_is_named(
        bench, compressed, tmp_path):
    import onnxruntime

    run = tmp_path / "run"
    shutil.copytree(compressed.out, run)
    (run / "student-fp32.ort").write_bytes(b"not an ORT file")
    result = bench.main(["--runtimes", "current", "--run", str(run), "--images", "20", "--out",
                         str(tmp_path / "compat")])
    (entry,) = result["runtimes"]
    assert entry["runtime"] == onnxruntime.__version__ and result["reference"] == onnxruntime.__version__
    rows = {row["file"]: row for row in entry["files"]}
    assert set(rows) == {"student-fp32.onnx", "student-int8.onnx", "student-fp32.ort"}
    for name in ("student-fp32.onnx", "student-int8.onnx"):
        assert rows[name]["loaded"] and rows[name]["top1_agreement"] == 1.0 and rows[name]["max_abs_diff"] == 0.0
    junk = rows["student-fp32.ort"]
    assert not junk["loaded"] and junk["error"].startswith("onnxruntime cannot load 'student-fp32.ort': ")
    assert "onnxruntime_src" not in junk["error"]
    assert json.loads((tmp_path / "compat.json").read_text())["images"] == 20
    table = (tmp_path / "compat.md").read_text()
    assert f"| {onnxruntime.__version__} | " in table and "| `student-int8.onnx` | yes | 100.00% | 0 |" in table


def test_a_release_no_interpreter_has_a_wheel_for_is_reported_not_fatal(bench, tmp_path, monkeypatch):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        import subprocess

        if cmd[1:3] == ["-m", "pip"]:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for onnxruntime")
        return subprocess.CompletedProcess(cmd, 0, "3.99\n" if cmd[1] == "-c" else "", "")

    monkeypatch.setattr(bench.subprocess, "run", run)
    python, why = bench.venv_for("1.10.0", ["/usr/bin/pythonX"], tmp_path)
    assert python is None and why == "Python 3.99: no wheel"
    assert any("numpy<2" in cmd for cmd in calls)  # releases before 1.19 were built against numpy 1
    assert bench.venv_for("1.10.0", [], tmp_path) == (None, "no --python given")


def test_the_ort_copies_speed_beside_their_onnx_is_read_from_the_runs_manifest(bench, tmp_path):
    run = tmp_path / "opset18"
    run.mkdir()
    ort = {"path": "student-fp32.ort", "platform": "amd64", "p50_ms": 0.62, "vs_onnx": 6.8}
    (run / "manifest.json").write_text(json.dumps({"profile": {"name": "host-cpu-1t"}, "artifacts": [
        {"artifact": {"name": "student-fp32"}, "latency": {"p50_ms": 0.091}, "ort": ort},
        {"artifact": {"name": "teacher-fp32"}, "latency": {"p50_ms": 0.7}}]}))
    (row,) = bench.ort_speeds([run])
    assert row == {"run": "opset18", "file": "student-fp32.ort", "profile": "host-cpu-1t", "platform": "amd64",
                   "p50_ms": 0.62, "vs_onnx": 6.8, "onnx_p50_ms": 0.091}
    assert "| opset18 | `student-fp32.ort` | host-cpu-1t | amd64 | 0.620 | 6.80x |" in bench.speed_table([row])
    assert bench.speed_table([]) == []


def test_without_python_this_interpreter_is_tried_and_a_run_that_tested_no_old_release_writes_nothing(
        bench, compressed, tmp_path, monkeypatch):
    """Run as README shows it (no --python), every old release was once skipped as "no --python given" and
    the table, now of the current runtime alone, replaced the recorded one."""
    import sys

    tried = []

    def no_wheel(version, pythons, venvs):
        tried.append((version, pythons, venvs))
        return None, "Python 3.99: no wheel"

    monkeypatch.setattr(bench, "venv_for", no_wheel)
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SystemExit, match=r"^error: no release of --runtimes but current was tested \(1.10.0: "
                                         r"Python 3.99: no wheel\); pass --python with interpreters"):
        bench.main(["--runtimes", "1.10.0,current", "--run", str(compressed.out), "--images", "5", "--out",
                    str(tmp_path / "compat")])
    assert tried == [("1.10.0", [sys.executable], tmp_path / "cache" / "runtime-compat")]
    assert not list(tmp_path.glob("compat.*"))
    # one release tested out of two is a table worth writing
    assert bench.refuse_untested(["1.10.0", "1.14.1"], [{"runtime": "1.10.0", "error": "no wheel"},
                                                        {"runtime": "1.14.1", "python": "3.9.0", "files": []}]) is None
