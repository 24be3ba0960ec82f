"""`edgekd distill` and the distill options of `compress`, through the CLI as a user runs them."""

import json
import shutil

import pytest
from conftest import QUICK_PROXY


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
                              profile=str(fast_profile_path), candidates=4, precision="fp32", proxy=QUICK_PROXY,
                              progress=False), path,
               log=said.append)
    assert said[0].startswith("data: digits (1, 16, 16), 10 classes")  # the stage says what it runs on
    return path


def test_distill_writes_student_and_resumes(run_cli, common, searched, tmp_path):
    out = tmp_path / "d"
    code, stdout, err = run_cli("distill", *common, "--search", searched, "--epochs", "2",
                                "--losses", "kd:1,dist:0.5", "--out", out)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"student.pt", "student-fp32.onnx", "distill.json", "search.json",
                                               "checkpoint.pt"}
    info = json.loads((out / "distill.json").read_text())
    assert info["recipe"]["losses"] == "kd:1,dist:0.5" and len(info["distill"]["history"]) == 2
    assert info["recipe"]["augment"] is True  # the default since benchmarks/distill_augment.py
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out / "student-fp32.onnx")).metadata_props}
    assert json.loads(meta["edgekd.preprocess"]) == info["data"]["preprocess"]
    assert "best validation accuracy" in stdout
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "2", "--out", out)
    assert code == 2 and "--resume" in err and "--force" in err  # never overwritten silently
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "3", "--losses", "kd:1,dist:0.5",
                           "--out", out, "--resume")
    assert code == 2 and "another run configuration (epochs: 2 -> 3)" in err, err


def test_distill_keeps_the_near_best_epoch_when_asked(run_cli, common, searched, tmp_path):
    out = tmp_path / "d"
    code, stdout, err = run_cli("distill", *common, "--search", searched, "--epochs", "2", "--keep-epoch",
                                "near-best", "--no-augment", "--out", out)
    assert code == 0, err
    info = json.loads((out / "distill.json").read_text())
    assert info["recipe"]["keep_epoch"] == "near-best" and info["distill"]["keep"] == "near-best"
    assert info["recipe"]["augment"] is False
    assert "the latest epoch within one standard error of the best (--keep-epoch near-best)" in stdout
    code, _, err = run_cli("distill", *common, "--search", searched, "--keep-epoch", "last", "--out", tmp_path / "x")
    assert code == 2 and "'last' is not one of 'best', 'near-best'" in err and not (tmp_path / "x").exists()
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('keep_epoch = "latest"\n')
    code, _, err = run_cli("distill", *common, "--search", searched, "--config", recipe, "--out", tmp_path / "y")
    assert code == 2 and "unknown keep rule 'latest'; choose one of: best, near-best" in err, err
    assert not (tmp_path / "y").exists()


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
    if flag is None:  # the QAT student reloads (fake quantization and learned scales) and ships through compress
        code, _, err = run_cli("compress", *common, "--distilled", out, "--out", tmp_path / "c")
        assert code in (0, 1), err
        manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
        int8 = next(a for a in manifest["artifacts"] if a["artifact"]["name"] == "student-int8")
        assert int8["artifact"]["exporter"] == "onnx-int8-qat" and int8["parity"]["top1_agreement"] >= 0.99
        assert manifest["recipe"]["qat_epochs"] == 1


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


@pytest.fixture(scope="module")
def distilled(common, searched, tmp_path_factory):
    """A finished `edgekd distill` folder (2 epochs), run through the CLI as a user would."""
    from edgekd.cli import main

    out = tmp_path_factory.mktemp("distilled") / "d"
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in ("distill", *common, "--search", searched, "--epochs", "2", "--out", out)])
    assert exc.value.code in (0, None)
    return out


def test_compress_exports_and_validates_a_distilled_student_without_training(run_cli, common, distilled, tmp_path):
    out = tmp_path / "c"
    code, _, err = run_cli("compress", *common[:-1], "--distilled", distilled, "--out", out)
    assert code in (0, 1), err
    assert f"reusing the student trained in {distilled}" in err and "epochs, losses" not in err  # no training
    manifest = json.loads((out / "manifest.json").read_text())
    recorded = json.loads((distilled / "distill.json").read_text())
    assert manifest["student"]["distill"] == recorded["distill"]
    assert manifest["student"]["spec"] == recorded["student"] and manifest["recipe"]["epochs"] == 2
    fp32 = next(a for a in manifest["artifacts"] if a["artifact"]["name"] == "student-fp32")
    assert fp32["parity"]["max_abs_diff"] < 1e-3  # the reloaded weights are the ones exported
    assert (out / "search.json").is_file() and (out / "student-int8.onnx").is_file()


def test_distilled_folder_errors(run_cli, common, distilled, tmp_path):
    def error(*args):
        code, _, err = run_cli("compress", *common[:-1], "--out", tmp_path / "never", *args)
        assert code == 2 and "Traceback" not in err and not (tmp_path / "never").exists()
        return err

    assert "--epochs does not apply with --distilled" in error("--distilled", distilled, "--epochs", "3")
    assert "--distilled and --search cannot be combined" in error("--distilled", distilled, "--search", "x.json")
    assert f"'{tmp_path}' has no distill.json" in error("--distilled", tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    assert "--distilled '" in error("--distilled", tmp_path / "notes.txt") and "is a file, not a folder" in error(
        "--distilled", tmp_path / "notes.txt")
    assert "does not exist; pass the --out folder of a finished `edgekd distill`" in error(
        "--distilled", tmp_path / "gone")
    wrong_data = [a if a != "16" else "12" for a in common[:-1]]
    code, _, err = run_cli("compress", *wrong_data, "--distilled", distilled, "--out", tmp_path / "never")
    assert code == 2 and "was distilled on 'digits' (1x16x16" in err and "--resolution and --normalize the" in err
    # The same images normalised otherwise (close enough that the teacher still knows them): refused.
    code, _, err = run_cli("compress", *common[:-1], "--normalize", "0.3/0.33", "--distilled", distilled,
                           "--out", tmp_path / "never")
    assert code == 2 and "(pixel / 16 - 0.3) / 0.33)" in err, err
    # Normalised far off, the teacher is at chance, which is refused before anything else.
    code, _, err = run_cli("compress", *common[:-1], "--normalize", "none", "--distilled", distilled,
                           "--out", tmp_path / "never")
    assert code == 2 and "the teacher scores" in err and "about chance" in err

    edited = tmp_path / "edited"
    shutil.copytree(distilled, edited)
    info = json.loads((edited / "distill.json").read_text())
    (edited / "distill.json").write_text(json.dumps({**info, "pruned": True}))
    assert "was pruned while it was distilled" in error("--distilled", edited)
    (edited / "distill.json").write_text(json.dumps(info))
    import torch

    torch.save({"foo": torch.zeros(1)}, edited / "student.pt")
    assert "does not fit the student distill.json describes" in error("--distilled", edited)


def test_a_folder_distilled_before_inputs_were_recorded_still_matches_its_data(distilled, teacher_files, tmp_path):
    from edgekd.data import load_data
    from edgekd.distilled import load_distilled
    from edgekd.teacher import load_teacher

    old = tmp_path / "old"
    shutil.copytree(distilled, old)
    info = json.loads((old / "distill.json").read_text())
    for key in ("class_names", "preprocess"):  # what an earlier edgekd did not write
        del info["data"][key]
    (old / "distill.json").write_text(json.dumps(info))
    module, weights = teacher_files
    teacher, data = load_teacher(f"{module}:build", str(weights)), load_data("digits", resolution=16)
    assert load_distilled(old, teacher, data).result.best_epoch == info["distill"]["best_epoch"]
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match="was distilled on 'digits' \\(1x16x16"):  # what it records still counts
        load_distilled(old, teacher, load_data("digits", resolution=12))


@pytest.mark.parametrize("steps, said", [
    ((), "distill: nothing pruned, the student was under the target already: 0.030 ms measured (target 0.08 ms), "
         "distilled for 2 epochs"),
    (("one step",), "distill: pruned to 0.030 ms measured (target 0.08 ms)"),
])
def test_pruning_aware_kd_says_when_nothing_needed_pruning(monkeypatch, steps, said):
    """A student already under --target-ms was reported as 'pruned to' its unchanged latency."""
    import edgekd.distill.prune
    from edgekd.distill.prune import PruneResult
    from edgekd.pipeline import CompressConfig, train_student
    from edgekd.types import DistillResult

    last = DistillResult(model=None, best_epoch=2, best_val_accuracy=0.9, history=())
    monkeypatch.setattr(edgekd.distill.prune, "prune_distill",
                        lambda *a, **k: PruneResult("student", 0.08, 0.03, True, steps, (), last))

    class Data:
        num_classes = 10

    log: list[str] = []
    trained = train_student(CompressConfig(target_ms=0.08, epochs=2, progress=False), "student", "teacher", Data(),
                            type("Profile", (), {"name": "board"})(), log.append)
    assert trained.model == "student" and said in log
