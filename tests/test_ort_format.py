"""ORT-format copies (edgekd.ort_format): onnxruntime's converter, the operator list, the check against the .onnx."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from edgekd.errors import ExportError
from edgekd.ort_format import platform_for, to_ort


@pytest.fixture(scope="module")
def models(compressed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ort")
    for name in ("student-int8.onnx", "student-fp32.onnx"):
        shutil.copy(compressed.out / name, folder / name)
    return folder


@pytest.mark.parametrize("target", ["arm", "amd64"])
def test_each_student_converts_beside_its_onnx_and_computes_what_it_does(models, small_data, target):
    import onnxruntime as ort

    from edgekd.fsutil import sha256

    for name, precision in (("student-int8", "int8"), ("student-fp32", "fp32")):
        made = to_ort(models / f"{name}.onnx", target, small_data.x_test, precision)
        assert (made.path, made.operators, made.platform) == (f"{name}.ort", f"{name}.required_operators.config",
                                                              target)
        assert made.passed and made.top1_agreement == 1.0 and made.sha256 == sha256(models / made.path)
        assert made.size_bytes == (models / made.path).stat().st_size
        ort.InferenceSession(str(models / made.path), providers=["CPUExecutionProvider"])  # onnxruntime loads it
        listed = (models / made.operators).read_text()
        assert listed.startswith("# Generated from model/s:\n") and f"# - {name}.ort" in listed
        assert "com.microsoft.nchwc" not in listed  # nothing tied to this CPU's vector width
    assert os.environ.get("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL") is None  # the tool's knob, restored
    assert sorted(p.name for p in models.iterdir() if "edgekd-ort" in p.name) == []  # no temporary folder left


def test_a_copy_whose_outputs_differ_is_not_passed(models, small_data, monkeypatch):
    from edgekd import ort_format

    real = ort_format._outputs
    monkeypatch.setattr(ort_format, "_outputs", lambda model, images: real(model, images)
                        + (np.arange(real(model, images).shape[1]) * 10 if model.suffix == ".ort" else 0))
    made = to_ort(models / "student-int8.onnx", "arm", small_data.x_test, "int8")
    assert not made.passed and made.top1_agreement < 0.97 and made.max_abs_diff > 1


def test_the_format_version_is_read_off_the_file_and_said_with_the_oldest_runtime_known_to_load_it(models, tmp_path):
    from edgekd.ort_format import LOADS_FROM, format_version, loads_text

    made = models / "student-fp32.ort"
    if not made.exists():
        to_ort(models / "student-fp32.onnx", "arm", np.zeros((2, 1, 16, 16), np.float32), "fp32")
    assert format_version(made) == 6 and LOADS_FROM[6] == "1.16"  # 1.15.1 refused a format-6 file, 1.16.3 loaded it
    damaged = tmp_path / "damaged.ort"
    damaged.write_bytes(b"\x00" * 3)
    assert format_version(damaged) is None
    assert loads_text(6) == "ORT format 6, which onnxruntime 1.16 and later load"
    assert loads_text(7).startswith("ORT format 7, which edgekd has not seen loaded")
    assert loads_text(None) == "its ORT format version could not be read"


def test_a_model_the_converter_cannot_read_and_an_unknown_platform_are_named(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="junk.onnx could not be converted to ORT format") as exc:
        to_ort(junk, "arm", np.zeros((1, 1, 8, 8), np.float32), "fp32")
    assert "ship the .onnx file" in exc.value.fix
    with pytest.raises(ExportError, match="unknown ORT platform 'riscv'"):
        to_ort(junk, "riscv", np.zeros((1, 1, 8, 8), np.float32), "fp32")


def test_the_platform_comes_from_the_profile(fast_profile):
    import platform

    from edgekd.profiles import load_profile

    assert platform_for(fast_profile) == ("amd64" if platform.machine().lower() in ("x86_64", "amd64") else "arm")
    assert platform_for(load_profile("android-arm64")) == platform_for(load_profile("rpi4-arm64")) == "arm"


def test_validate_and_gate_name_an_ort_file_and_its_onnx_twin(models, small_data, run_cli, tmp_path):
    to_ort(models / "student-fp32.onnx", "arm", small_data.x_test[:8], "fp32")
    for args in (["validate", models / "student-fp32.ort"],
                 ["gate", models / "student-fp32.ort", "--max-size", "1MB", "--config", os.devnull]):
        code, out, err = run_cli(*args)
        assert code == 2 and "is an ORT-format model, not an .onnx file" in err and out == ""
        assert f"pass {models / 'student-fp32.onnx'} (compress --ort checked the .ort against it)" in err
    alone = tmp_path / "alone.ort"
    shutil.copy(models / "student-fp32.ort", alone)
    code, _, err = run_cli("validate", alone)
    assert code == 2 and "pass the .onnx model it was converted from" in err


def test_bench_times_an_ort_copy_beside_its_onnx_and_refuses_what_it_cannot_read(models, small_data, run_cli,
                                                                                 fast_profile_path, tmp_path):
    to_ort(models / "student-fp32.onnx", "amd64", small_data.x_test[:8], "fp32")
    code, out, err = run_cli("bench", models / "student-fp32.ort", "--vs", models / "student-fp32.onnx",
                             "--profile", fast_profile_path, "--no-cache")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith(f"| {models}")]
    assert [r.split(" | ")[0] for r in rows] == [f"| {models / name}" for name in ("student-fp32.ort",
                                                                                   "student-fp32.onnx")]
    junk = tmp_path / "junk.ort"
    junk.write_bytes(b"not an ORT file")
    code, _, err = run_cli("bench", junk, "--profile", fast_profile_path)
    assert code == 2 and f"error: '{junk}' is not a readable ORT-format file; convert the .onnx again" in err
    code, _, err = run_cli("bench", tmp_path / "nope.ort", "--profile", fast_profile_path)
    assert code == 2 and "does not exist" in err
    # the input shape is read by onnxruntime, since an ORT-format file holds no ONNX graph to read it from
    code, _, err = run_cli("bench", models / "student-fp32.ort", "--input-shape", "1,1,8,8", "--profile",
                           fast_profile_path)
    assert code == 2 and "--input-shape 1,1,8,8 sets dimension 2 to 8, and" in err and "fixes it at 16" in err


def test_the_operator_list_is_recorded_with_its_sha256_for_gate_to_trust_it(models, small_data):
    """gate --ops-config read the .required_operators.config as it found it: an edited list passed an app's
    build that lacked what the copy needs."""
    from edgekd.fsutil import sha256

    made = to_ort(models / "student-int8.onnx", "arm", small_data.x_test[:8], "int8")
    assert made.operators_sha256 == sha256(models / made.operators)
    assert made.to_dict()["operators_sha256"] == made.operators_sha256


def test_a_copy_that_agrees_but_misses_its_budget_has_not_passed():
    """compress failed a copy over the size budget in verdicts.ort while ort.passed said true: a pipeline
    shipping the copies that passed shipped the one compress rejected."""
    from edgekd.ort_format import OrtFile

    def copy(agrees, over_budget=()):
        return OrtFile("student-int8.ort", "0" * 64, 281_320, "amd64", "student-int8.required_operators.config", 1.0,
                       0.0, agrees, 6, "1.32.0", 0.175, 1.2, "1" * 64, over_budget)

    recorded = copy(True, ("size",)).to_dict()
    assert (recorded["passed"], recorded["agrees"], recorded["over_budget"]) == (False, True, ["size"])
    assert copy(True).passed and copy(True).to_dict()["over_budget"] == []
    assert not copy(False).passed and not copy(False, ("size", "latency")).passed


def test_an_operator_config_given_as_a_folder_is_named_as_one(tmp_path):
    """`--ops-config ci` (the folder holding the app's config) said the config "does not exist"."""
    from edgekd.errors import ConfigError
    from edgekd.ort_format import missing_operators

    needed = tmp_path / "model.required_operators.config"
    needed.write_text("ai.onnx;18;Relu\n")
    app = tmp_path / "ci"
    app.mkdir()
    with pytest.raises(ConfigError, match="operator config '.*ci' is a folder; pass the required_operators.config"):
        missing_operators(needed, app)
    (app / "required_operators.config").write_text("ai.onnx;18;Relu\n")
    with pytest.raises(ConfigError, match=f"is a folder; pass {app / 'required_operators.config'}$"):
        missing_operators(needed, app)
