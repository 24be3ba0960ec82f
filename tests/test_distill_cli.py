"""`edgekd distill` and the distill options of `compress`, through the CLI as a user runs them."""

import json

import pytest


@pytest.fixture(scope="module")
def common(teacher_files, fast_profile_path):
    module, weights = teacher_files
    return ["--teacher", f"{module}:build", "--weights", str(weights), "--resolution", "16",
            "--profile", str(fast_profile_path), "-q"]


@pytest.fixture(scope="module")
def searched(teacher_files, fast_profile_path, tmp_path_factory):
    from edgekd.pipeline import CompressConfig, run_search

    module, weights = teacher_files
    path = tmp_path_factory.mktemp("search") / "search.json"
    said: list[str] = []
    run_search(CompressConfig(teacher=f"{module}:build", weights=str(weights), resolution=16,
                              profile=str(fast_profile_path), candidates=4, precision="fp32", progress=False), path,
               log=said.append)
    assert said[0].startswith("data: digits (1, 16, 16), 10 classes")  # the stage says what it runs on
    return path


def test_distill_writes_student_and_resumes(run_cli, common, searched, tmp_path):
    out = tmp_path / "d"
    code, stdout, err = run_cli("distill", *common, "--search", searched, "--epochs", "2",
                                "--losses", "kd:1,dist:0.5", "--out", out)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"student.pt", "student-fp32.onnx", "distill.json", "checkpoint.pt"}
    info = json.loads((out / "distill.json").read_text())
    assert info["recipe"]["losses"] == "kd:1,dist:0.5" and len(info["distill"]["history"]) == 2
    assert "best validation accuracy" in stdout
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "2", "--out", out)
    assert code == 2 and "--resume" in err and "--force" in err  # never overwritten silently
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "3", "--losses", "kd:1,dist:0.5",
                           "--out", out, "--resume")
    assert code == 2 and "another run configuration (epochs: 2 -> 3)" in err, err


def test_resume_without_a_checkpoint_and_bad_losses(run_cli, common, searched, tmp_path):
    code, _, err = run_cli("distill", *common, "--search", searched, "--out", tmp_path / "none", "--resume")
    assert code == 2 and "nothing to resume" in err
    code, _, err = run_cli("distill", *common, "--search", searched, "--losses", "kd,fitnet", "--out",
                           tmp_path / "x")
    assert code == 2 and "unknown loss 'fitnet'" in err and "dkd" in err and not (tmp_path / "x").exists()
    code, _, err = run_cli("distill", *common, "--search", searched, "--target-ms", "1", "--qat-epochs", "1",
                           "--out", tmp_path / "y")
    assert code == 2 and "cannot be combined" in err
    code, _, err = run_cli("distill", *common, "--search", searched, "--qat-epochs", "1", "--qat-lr", "0",
                           "--out", tmp_path / "z")
    assert code == 2 and "qat_lr must be a positive number, got 0.0" in err and not (tmp_path / "z").exists()
    assert "Traceback" not in err


@pytest.mark.parametrize(("flag", "qmax"), [(None, 64), ("--qat-full-range", 127)])
def test_distill_with_qat_exports_int8_weights_in_the_chosen_range(run_cli, common, searched, tmp_path, flag, qmax):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "qat"
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "2", "--qat-epochs", "1",
                           "--qat-lr", "1e-4", *([flag] if flag else []), "--out", out)
    assert code == 0, err
    recipe = json.loads((out / "distill.json").read_text())["recipe"]
    assert recipe["qat_lr"] == 1e-4 and recipe["qat_full_range"] is (flag is not None)
    model = onnx.load(out / "student-int8.onnx")
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w).max()) for w in weights) == qmax


@pytest.mark.slow
def test_distill_prunes_toward_a_target(run_cli, common, searched, tmp_path):
    out = tmp_path / "p"
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "1", "--target-ms", "1e-6",
                           "--out", out)
    assert code == 2 and "below what pruning can reach" in err
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "1", "--target-ms", "100",
                           "--out", out, "--force")
    assert code == 0, err
    assert json.loads((out / "distill.json").read_text())["pruned"] is True


@pytest.mark.slow
def test_compress_with_quantization_aware_kd(run_cli, common, searched, tmp_path):
    out = tmp_path / "q"
    code, _, err = run_cli("compress", *common, "--search", searched, "--epochs", "3", "--qat-epochs", "1",
                           "--out", out)
    assert code in (0, 1), err
    manifest = json.loads((out / "manifest.json").read_text())
    by_name = {a["artifact"]["name"]: a for a in manifest["artifacts"]}
    int8 = by_name["student-int8"]
    assert int8["artifact"]["exporter"] == "onnx-int8-qat"
    assert int8["parity"]["top1_agreement"] >= 0.995
