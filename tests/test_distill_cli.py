"""`edgekd distill` and the distill options of `compress`, through the CLI as a user runs them."""

import json
import re
import shutil

import pytest
from conftest import QUICK_PROXY

from edgekd.distill.prune import PruneStep
from edgekd.search_file import RUN_KEY


def err_line(code, err):
    """The one line of a refused command (exit 2)."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


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


@pytest.fixture(scope="module")
def searched_int8(teacher_files, fast_profile_path, tmp_path_factory):
    """A search for int8, which ships: quantization-aware training tunes that file (refused for an fp32 search)."""
    from edgekd.pipeline import CompressConfig, run_search

    module, weights = teacher_files
    path = tmp_path_factory.mktemp("search-int8") / "search.json"
    run_search(CompressConfig(teacher=f"{module}:build", weights=str(weights), resolution=16,
                              profile=str(fast_profile_path), candidates=4, proxy=QUICK_PROXY, progress=False), path)
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
    import torch

    # what changes the weights a seed gives, kept for explaining two runs of one recipe or reproducing one
    assert (info["distill"]["processes"], info["distill"]["threads"]) == (1, torch.get_num_threads())
    assert info["recipe"]["augment"] is True  # the default since benchmarks/distill_augment.py
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out / "student-fp32.onnx")).metadata_props}
    assert json.loads(meta["edgekd.preprocess"]) == info["data"]["preprocess"]
    assert "best validation accuracy" in stdout
    assert stdout.rstrip().endswith("(student.pt, student-fp32.onnx, distill.json, search.json, checkpoint.pt)")
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
def test_distill_with_qat_exports_int8_weights_in_the_chosen_range(run_cli, common, searched_int8, tmp_path, flag,
                                                                   qmax):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "qat"
    code, said, err = run_cli("distill", *common, "--search", searched_int8, "--epochs", "2", "--qat-epochs", "1",
                              "--qat-lr", "1e-4", *([flag] if flag else []), "--out", out)
    assert code == 0, err
    # the files as they are: a QAT run writes the int8 file and no fp32 one (the line said student.pt, distill.json)
    assert said.rstrip().endswith(f"-> {out}/ (student.pt, student-int8.onnx, distill.json, search.json, "
                                  "checkpoint.pt)"), said
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
    info = json.loads((out / "distill.json").read_text())
    pruning = info["distill"]["pruning"]  # what was pruned is on record, not only in the log
    assert pruning["target_ms"] == 100 and pruning["reached"] is True and pruning["measured_ms"] > 0
    assert info["pruned"] is False and pruning["steps"] == []  # 100 ms needed no pruning
    import torch

    state = torch.load(out / "student.pt", weights_only=True)
    assert pruning["params"] == sum(v.numel() for k, v in state.items() if "running" not in k
                                    and "num_batches" not in k)


@pytest.mark.slow
def test_compress_with_quantization_aware_kd(run_cli, common, searched, searched_int8, tmp_path):
    out = tmp_path / "q"
    code, _, err = run_cli("compress", *common, "--search", searched, "--epochs", "3", "--qat-epochs", "1",
                           "--out", out)
    assert code == 2 and "--qat-epochs tunes the int8 file" in err and "was searched for fp32, which ships" in err
    code, _, err = run_cli("compress", *common, "--search", searched_int8, "--epochs", "3", "--qat-epochs", "1",
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


def test_distill_writes_a_reused_search_on_as_it_was_searched(run_cli, common, searched, tmp_path):
    """distill --search wrote its own budget and this machine's CPU into OUT/search.json: reused from there,
    the distill run's budget was said to be the one searched for, and the other machine was no longer said."""
    from edgekd.search_file import recorded_budget

    reused = tmp_path / "s.json"
    recorded = json.loads(searched.read_text())
    recorded.update(host="Other CPU (64 CPUs)", budget={**recorded["budget"], "latency_ms": 50.0})
    reused.write_text(json.dumps(recorded))
    out = tmp_path / "d"
    code, _, err = run_cli("distill", *common, "--search", reused, "--epochs", "1", "--budget-ms", "60", "--out", out)
    assert code == 0, err
    written = json.loads((out / "search.json").read_text())
    run = written.pop("distill_run")  # the run's own settings, which its --resume continues with
    assert written == {**recorded, "reused_with": {"budget": {**recorded["budget"], "latency_ms": 60.0}}}
    assert recorded_budget(out / "search.json") == {"budget_ms": 50.0}
    assert (run["budget_ms"], run["search_file"]) == (60.0, str(reused))


def test_compress_exports_and_validates_a_distilled_student_without_training(run_cli, common, distilled, tmp_path):
    """Given no teacher, data or resolution, those the student was distilled with (the default teacher was
    trained on digits for minutes, then the folder refused as distilled from another). Its search.json is
    written on as it was searched (it was rewritten with this machine's CPU)."""
    folder = tmp_path / "distilled"
    shutil.copytree(distilled, folder)
    searched = {**json.loads((distilled / "search.json").read_text()), "host": "Other CPU (64 CPUs)"}
    (folder / "search.json").write_text(json.dumps(searched))
    distilled = folder
    out = tmp_path / "c"
    code, _, err = run_cli("compress", "--profile", common[common.index("--profile") + 1], "--distilled", distilled,
                           "--out", out)
    assert code in (0, 1), err
    teacher, weights = common[1], common[3]
    assert (f"inputs: --teacher {teacher} --weights {weights} --resolution 16, as '{distilled}' was distilled "
            "with (pass them to use others)") in err
    assert f"reusing the student trained in {distilled}" in err and "epochs, losses" not in err  # no training
    manifest = json.loads((out / "manifest.json").read_text())
    recorded = json.loads((distilled / "distill.json").read_text())
    assert manifest["student"]["distill"] == recorded["distill"]
    assert manifest["student"]["distill"]["processes"] == 1 and manifest["student"]["distill"]["threads"] >= 1
    assert manifest["student"]["spec"] == recorded["student"] and manifest["recipe"]["epochs"] == 2
    fp32 = next(a for a in manifest["artifacts"] if a["artifact"]["name"] == "student-fp32")
    assert fp32["parity"]["max_abs_diff"] < 1e-3  # the reloaded weights are the ones exported
    # the distill run's own settings (what its --resume continues with) are no part of the search a reuse copies
    unrun = {k: v for k, v in searched.items() if k != RUN_KEY}
    assert RUN_KEY in searched and json.loads((out / "search.json").read_text()) == unrun
    assert (out / "student-int8.onnx").is_file()


def test_a_distilled_student_is_validated_against_the_budget_it_was_distilled_for(distilled, tmp_path):
    """Given no budget, `compress --distilled` validated against none: PASS whatever it measured, and `gate`
    then found no budget in the manifest."""
    from edgekd.pipeline import CompressConfig, _with_distilled_budget

    folder = tmp_path / "d"
    shutil.copytree(distilled, folder)
    info = json.loads((folder / "distill.json").read_text())
    info["recipe"].update(budget_ms=0.5, max_size_kb=128)
    (folder / "distill.json").write_text(json.dumps(info))
    said: list[str] = []
    config = _with_distilled_budget(CompressConfig(distilled=str(folder)), said.append)
    assert (config.budget.latency_ms, config.budget.max_size_kb) == (0.5, 128)
    assert said == [f"budget: --budget-ms 0.5, --max-size-kb 128, as '{folder}' was distilled for (pass budget "
                    "flags to validate against others)"]
    given = _with_distilled_budget(CompressConfig(distilled=str(folder), budget_ms=2.0), said.append)
    assert (given.budget.latency_ms, given.budget.max_size_kb) == (2.0, None) and len(said) == 1


def test_distilled_folder_errors(run_cli, common, distilled, tmp_path):
    def error(*args):
        code, _, err = run_cli("compress", *common[:-1], "--out", tmp_path / "never", *args)
        assert code == 2 and "Traceback" not in err and not (tmp_path / "never").exists()
        return err

    assert "--epochs does not apply with --distilled" in error("--distilled", distilled, "--epochs", "3")
    assert "--distilled and --search cannot be combined" in error("--distilled", distilled, "--search", "x.json")
    (tmp_path / "empty").mkdir()
    assert f"'{tmp_path / 'empty'}' has no distill.json" in error("--distilled", tmp_path / "empty")
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
    (edited / "student-fp32.onnx").unlink()  # what a pruned student is checked against
    assert "was pruned while it was distilled" in error("--distilled", edited)
    shutil.copy(distilled / "student-fp32.onnx", edited / "student-fp32.onnx")
    (edited / "distill.json").write_text(json.dumps(info))
    import torch

    torch.save({"foo": torch.zeros(1)}, edited / "student.pt")
    assert "does not fit the student distill.json describes" in error("--distilled", edited)
    shutil.copy(distilled / "student.pt", edited / "student.pt")
    # the search it was chosen from, checked as a --search file is (an edited value was a traceback later, from
    # the report's table or plot)
    searched = json.loads((distilled / "search.json").read_text())
    (edited / "search.json").write_text(json.dumps({**searched, "pareto": "all"}))
    assert (f"'{edited / 'search.json'}' is not a search result (its 'pareto' is not a list of candidate keys); "
            "pass the --out folder of a finished `edgekd distill`, unchanged") in error("--distilled", edited)
    (edited / "search.json").unlink()
    assert f"'{edited}' has no search.json" in error("--distilled", edited)


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


def test_a_folder_whose_record_says_bicubic_matches_data_recorded_with_the_exact_wording(distilled, teacher_files,
                                                                                         tmp_path):
    """Pillow's resize was recorded as "bicubic" before it was named exactly: the same operation, so a folder
    distilled then still matches its data; a record of another method still does not."""
    import dataclasses

    from edgekd.data import load_data
    from edgekd.distilled import load_distilled
    from edgekd.errors import ConfigError
    from edgekd.preprocess import PIL_BICUBIC
    from edgekd.teacher import load_teacher

    old = tmp_path / "old"
    shutil.copytree(distilled, old)
    info = json.loads((old / "distill.json").read_text())
    info["data"]["preprocess"]["resize_method"] = "bicubic"
    (old / "distill.json").write_text(json.dumps(info))
    module, weights = teacher_files
    data = load_data("digits", resolution=16)
    teacher = load_teacher(f"{module}:build", str(weights))
    now = dataclasses.replace(data, preprocess=dataclasses.replace(data.preprocess, resize_method=PIL_BICUBIC))
    assert load_distilled(old, teacher, now).result.best_epoch == info["distill"]["best_epoch"]
    with pytest.raises(ConfigError, match="was distilled on 'digits'"):
        load_distilled(old, teacher, data)  # bilinear, as digits are resized: another operation


def test_a_student_pruned_while_distilled_is_rebuilt_from_its_spec_and_weights(distilled, teacher_files, tmp_path):
    """`compress --distilled` refused every pruned folder, though the searched architecture cut to the saved
    weights' shapes is the pruned student; it is trusted when it computes what its student-fp32.onnx does."""
    import numpy as np
    import torch

    from edgekd.data import load_data
    from edgekd.distill.prune import PruneConfig, make_pruner
    from edgekd.distilled import load_distilled
    from edgekd.errors import ConfigError
    from edgekd.export import ExportRequest, get_exporter
    from edgekd.search.spaces import build_student
    from edgekd.teacher import load_teacher
    from edgekd.types import StudentSpec

    module, weights = teacher_files
    teacher, data = load_teacher(f"{module}:build", str(weights)), load_data("digits", resolution=16)
    folder = tmp_path / "pruned"
    shutil.copytree(distilled, folder)
    info = json.loads((folder / "distill.json").read_text())
    model = build_student(StudentSpec.from_dict(info["student"]), data.input_shape, data.num_classes)
    model.load_state_dict(torch.load(folder / "student.pt", weights_only=True))
    before = sum(p.numel() for p in model.parameters())
    make_pruner(model, data.input_shape, PruneConfig(target_ms=1.0, max_ratio=0.5, steps=1)).step()
    model.eval()
    pruned = sum(p.numel() for p in model.parameters())
    assert pruned < before
    torch.save(model.state_dict(), folder / "student.pt")
    (folder / "student-fp32.onnx").unlink()
    get_exporter("onnx-fp32")(ExportRequest("student-fp32", "student", folder, model, data.x_val[:1]))
    from edgekd.fsutil import sha256

    written = {**info["fingerprints"], "student_sha256": sha256(folder / "student.pt")}  # as the pruning run's
    (folder / "distill.json").write_text(json.dumps({**info, "pruned": True, "fingerprints": written}))
    rebuilt = load_distilled(folder, teacher, data).result.model
    assert sum(p.numel() for p in rebuilt.parameters()) == pruned
    x = torch.from_numpy(data.x_test[:16])
    with torch.no_grad():
        assert np.allclose(rebuilt(x).numpy(), model(x).numpy(), atol=1e-5)
    shutil.copy(distilled / "student-fp32.onnx", folder / "student-fp32.onnx")  # computes otherwise: refused
    with pytest.raises(ConfigError, match="pruned layers do not rebuild"):
        load_distilled(folder, teacher, data)


@pytest.mark.parametrize("steps, said", [
    ((), "distill: nothing pruned, the student was under the target already: 0.030 ms measured (target 0.08 ms), "
         "distilled for 2 epochs"),
    ((PruneStep(1, 100, 1.0, 0.03),), "distill: pruned to 0.030 ms measured (target 0.08 ms)"),
])
@pytest.mark.parametrize("epochs", [2, 1])
def test_pruning_aware_kd_says_when_nothing_needed_pruning(monkeypatch, steps, said, epochs):
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
    trained = train_student(CompressConfig(target_ms=0.08, epochs=epochs, progress=False), "student", "teacher",
                            Data(), type("Profile", (), {"name": "board"})(), log.append)
    # 'distilled for 1 epochs' said the log
    assert trained.model == "student" and said.replace("2 epochs", "1 epoch" if epochs == 1 else "2 epochs") in log
    assert trained.to_dict()["pruning"]["target_ms"] == 0.08 and not any("warning" in line for line in log)
    # distill.json's "pruned" (which rebuilds the student from its pruned shapes) is true only when channels went
    from edgekd.pipeline.stages import was_pruned

    assert was_pruned(trained) is bool(steps)


def test_pruning_that_ends_over_its_target_says_so(monkeypatch):
    import edgekd.distill.prune
    from edgekd.distill.prune import PruneResult, PruneStep
    from edgekd.pipeline import CompressConfig, train_student
    from edgekd.types import DistillResult

    last = DistillResult(model=None, best_epoch=2, best_val_accuracy=0.9, history=())
    monkeypatch.setattr(edgekd.distill.prune, "prune_distill",
                        lambda *a, **k: PruneResult("student", 0.08, 0.1, False, (PruneStep(1, 100, 1.0, 0.1),), (),
                                                    last))

    class Data:
        num_classes = 10

    log: list[str] = []
    trained = train_student(CompressConfig(target_ms=0.08, epochs=2, progress=False), "student", "teacher", Data(),
                            type("Profile", (), {"name": "board"})(), log.append)
    assert trained.pruning["reached"] is False
    assert any(line.startswith("warning: pruning ended at 0.100 ms measured, over --target-ms 0.08") for line in log)


def test_the_current_folder_or_one_above_it_is_refused_as_out_before_any_work(run_cli, common, searched, tmp_path,
                                                                              monkeypatch):
    """`distill --out . --force` emptied the folder it ran from; compress trained, then crashed on '.'."""
    here = tmp_path / "work"
    here.mkdir()
    (here / "notes.txt").write_text("mine")
    monkeypatch.chdir(here)
    for command, out, extra in (("distill", ".", ["--force"]), ("compress", ".", ["--force"]),
                                ("distill", "..", ["--force"]), ("distill", ".", ["--resume"])):
        code, _, err = run_cli(command, *common, "--search", searched, "--epochs", "1", "--out", out, *extra)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"--out '{out}' {'is' if out == '.' else 'holds'} the current folder" in err
    assert [p.name for p in here.iterdir()] == ["notes.txt"] and (here / "notes.txt").read_text() == "mine"


def test_force_replaces_an_earlier_run_only_once_the_new_one_has_a_checkpoint(run_cli, common, searched, tmp_path):
    """`--force` removed the earlier run first, so a typo found after loading the data lost it."""
    out = tmp_path / "d"
    out.mkdir()
    (out / "student.pt").write_text("the earlier run")
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "1", "--losses", "kd:1,hint:1",
                           "--hint-student", "no.such.layer", "--hint-teacher", "no.such.layer", "--out", out,
                           "--force")
    assert code == 2 and "no.such.layer" in err and "Traceback" not in err, err
    assert [p.name for p in out.iterdir()] == ["student.pt"] and (out / "student.pt").read_text() == "the earlier run"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "1", "--no-augment", "--out", out,
                           "--force")
    assert code == 0, err
    assert (out / "checkpoint.pt").is_file() and (out / "student.pt").read_bytes() != b"the earlier run"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # nothing of the earlier run left beside it


def test_force_through_a_symlinked_out_replaces_the_folder_it_points_to(run_cli, common, searched, tmp_path):
    """`--out latest --force` set the link aside and made a folder in its place: whatever read through the link
    (a deploy step) kept the earlier run, and the link was gone."""
    run = tmp_path / "runs" / "1"
    run.mkdir(parents=True)
    (run / "student.pt").write_text("the earlier run")
    latest = tmp_path / "latest"
    latest.symlink_to(run, target_is_directory=True)
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "1", "--no-augment", "--out", latest,
                           "--force")
    assert code == 0, err
    assert latest.is_symlink() and latest.resolve() == run.resolve()
    assert (run / "checkpoint.pt").is_file() and (run / "student.pt").read_bytes() != b"the earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "runs"]
    assert [p.name for p in run.parent.iterdir()] == ["1"]  # nothing of the earlier run left beside it


def test_under_torchrun_only_rank_0_speaks_and_writes(run_cli, common, searched, tmp_path, monkeypatch):
    """Every rank ran the whole stage: each line twice, and two processes moving files through one folder."""
    import edgekd.pipeline.stages
    from edgekd.types import DistillResult

    trained: list[bool] = []
    monkeypatch.setattr(edgekd.pipeline.stages, "train_student", lambda *a, **k: trained.append(True) or DistillResult(
        model=None, best_epoch=1, best_val_accuracy=0.5, history=()))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    out = tmp_path / "d"
    out.mkdir()
    (out / "student.pt").write_text("rank 0's")
    code, stdout, err = run_cli("distill", *common[:-1], "--search", searched, "--epochs", "1", "--out", out,
                                "--force")
    assert code == 0 and trained and stdout == "" and err == "", err
    assert [p.name for p in out.iterdir()] == ["student.pt"] and (out / "student.pt").read_text() == "rank 0's"
    monkeypatch.setenv("RANK", "0")
    code, _, err = run_cli("distill", *common, "--epochs", "1", "--out", tmp_path / "x")
    assert code == 2 and "under torchrun each of the 2 processes would search on its own" in err
    assert "--search search.json" in err and not (tmp_path / "x").exists()


def test_under_torchrun_what_it_cannot_run_is_refused_before_the_data_loads(run_cli, common, searched, tmp_path,
                                                                             monkeypatch):
    """A --resume of a folder with no run was told to run `edgekd search` first; a batch smaller than the
    processes, or a WORLD_SIZE without MASTER_ADDR, were refused only once the data and teacher had loaded."""
    import edgekd.pipeline.stages

    monkeypatch.setattr(edgekd.pipeline.stages, "run_data", lambda *a, **k: pytest.fail("the data loaded"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    code, _, err = run_cli("distill", *common, "--epochs", "1", "--out", tmp_path / "none", "--resume")
    assert code == 2 and err.startswith(f"error: nothing to resume in '{tmp_path / 'none'}' (no checkpoint.pt)"), err
    code, _, err = run_cli("distill", *common, "--search", searched, "--batch-size", "1", "--out", tmp_path / "b")
    assert code == 2 and "error: batch size 1 is smaller than the 2 training processes" in err, err
    monkeypatch.delenv("MASTER_ADDR")
    code, _, err = run_cli("distill", *common, "--search", searched, "--out", tmp_path / "m")
    assert code == 2 and "error: WORLD_SIZE=2 is set without MASTER_ADDR; start distributed training" in err, err
    assert not any(tmp_path.iterdir())


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder_to_block_a_rerun(run_cli, common, tmp_path):
    """The search.json written before the first epoch stayed behind: a rerun was refused as 'not empty', and
    --resume as 'nothing to resume'."""
    out = tmp_path / "d"
    args = [*common, "--candidates", "3", "--latency-anchors", "3", "--precision", "fp32", "--proxy", QUICK_PROXY,
            "--epochs", "1", "--no-augment", "--out", out]
    code, _, err = run_cli("distill", *args, "--losses", "kd:1,hint:1", "--hint-student", "no.such.layer",
                           "--hint-teacher", "features")
    assert code == 2 and "student has no module 'no.such.layer'" in err, err  # found after the search
    assert not out.exists()
    out.mkdir()  # an empty folder the user made: kept, and left empty
    code, _, err = run_cli("distill", *args, "--losses", "kd:1,hint:1", "--hint-student", "no.such.layer",
                           "--hint-teacher", "features")
    assert code == 2 and out.is_dir() and not any(out.iterdir()), err


def test_a_resumed_run_trains_the_student_its_search_chose(run_cli, common, tmp_path, monkeypatch):
    """Searching again on --resume measured anew, and near a budget's edge could choose another student."""
    import edgekd.search

    out = tmp_path / "d"
    search = ["--candidates", "3", "--latency-anchors", "3", "--precision", "fp32", "--proxy", QUICK_PROXY]
    args = [*common, "--epochs", "1", "--no-augment", "--out", out]
    code, _, err = run_cli("distill", *args, *search)
    assert code == 0 and (out / "search.json").is_file(), err
    chosen = json.loads((out / "search.json").read_text())["chosen"]
    monkeypatch.setattr(edgekd.search, "search", lambda *a, **k: pytest.fail("searched again on --resume"))
    before = (out / "distill.json").read_text()
    # The search flags were ignored (and recorded in distill.json as if they had applied): refused as with --search
    for flag, value in (("--candidates", "5"), ("--proxy", "params"), ("--space", "resnet")):
        line = err_line(*run_cli("distill", *args, "--resume", flag, value)[::2])
        assert f"error: {flag} does not apply with --resume: the run continues training the student its search " \
               f"chose ('{out / 'search.json'}'); drop {flag}, or start the run over with --force instead of " \
               "--resume (it replaces the run)" in line, line
    # A budget other than the run's (here a tighter one, which its search's student misses): no --search was given
    # to drop
    line = err_line(*run_cli("distill", *args, "--resume", "--budget-ms", "0.0001")[::2])
    assert f"--budget-ms 0.0001 is not the budget the run in '{out}' started with (no budget)" in line
    assert "drop --search" not in line and "start the run over with --force (it replaces the run)" in line
    assert (out / "distill.json").read_text() == before
    code, _, err = run_cli("distill", *args, "--resume")
    assert code == 0, err
    assert json.loads((out / "search.json").read_text())["chosen"] == chosen


def test_an_out_inside_the_data_folder_is_refused_before_any_work(run_cli, common, searched, tmp_path):
    """An image folder that held distill's output took it for one more class, and no command read it again."""
    images = tmp_path / "imgs"
    for label in ("0", "1"):
        (images / label).mkdir(parents=True)
    for command in ("distill", "compress"):
        code, _, err = run_cli(command, *common, "--data", images, "--search", searched, "--out", images / "out")
        assert code == 2 and f"--out '{images / 'out'}' is inside '{images}', an input folder" in err, err
    assert sorted(p.name for p in images.iterdir()) == ["0", "1"]


def _edited(distilled, tmp_path, **recipe):
    """A copy of the distilled folder whose distill.json records ``recipe`` on top of its own."""
    folder = tmp_path / "edited"
    shutil.copytree(distilled, folder)
    info = json.loads((folder / "distill.json").read_text())
    (folder / "distill.json").write_text(json.dumps({**info, "recipe": {**info["recipe"], **recipe}}))
    return folder


def test_compress_splits_the_data_with_the_seed_the_student_was_distilled_with(distilled, teacher_files,
                                                                               fast_profile_path, tmp_path,
                                                                               monkeypatch):
    """compress --distilled loaded the data with its own seed: its test split then held the student's training
    images (and with --normalize dataset their mean refused the folder, asking for the wrong flags)."""
    import edgekd.pipeline
    from edgekd.data import load_data
    from edgekd.pipeline import CompressConfig, compress

    folder = _edited(distilled, tmp_path, seed=1)
    info = json.loads((folder / "distill.json").read_text())
    as_split = load_data("digits", resolution=16, seed=1)
    from edgekd.distill.checkpoint import images_fingerprint

    # the images of that split, as a run with seed 1 recorded them
    split = {"images": images_fingerprint(as_split.x_train, as_split.y_train),
             "val_images": images_fingerprint(as_split.x_val, as_split.y_val)}
    (folder / "distill.json").write_text(json.dumps({**info, "data": as_split.describe(),
                                                     "fingerprints": {**info["fingerprints"], **split}}))
    seen = {}

    def finish(config, out, teacher, teacher_art, search_result, student, data, *rest):
        seen.update(config=config, data=data)

    monkeypatch.setattr(edgekd.pipeline, "_finish", finish)
    module, weights = teacher_files
    compress(CompressConfig(out=str(tmp_path / "c"), teacher=f"{module}:build", weights=str(weights), resolution=16,
                            profile=str(fast_profile_path), distilled=str(folder), progress=False))
    assert seen["config"].seed == 1
    assert (seen["data"].y_test == as_split.y_test).all() and (seen["data"].x_test == as_split.x_test).all()


def test_a_distilled_teacher_is_compared_by_its_files_not_how_their_paths_are_spelled(distilled, teacher_files,
                                                                                     tmp_path, monkeypatch):
    from edgekd.data import load_data
    from edgekd.distilled import load_distilled
    from edgekd.errors import ConfigError
    from edgekd.teacher import DEFAULT_ORIGIN, Teacher, load_teacher

    module, weights = teacher_files
    data = load_data("digits", resolution=16)
    monkeypatch.chdir(module.parent)
    spelled = load_teacher(f"./{module.name}:build", f"./{weights.name}")
    assert load_distilled(distilled, spelled, data).result.best_epoch >= 1
    old = tmp_path / "old"  # distilled before the resolved paths were recorded: its recipe's, resolved from here
    shutil.copytree(distilled, old)
    info = json.loads((old / "distill.json").read_text())
    (old / "distill.json").write_text(json.dumps({**info, "teacher": {"source": info["teacher"]["source"]}}))
    assert load_distilled(old, spelled, data).result.best_epoch >= 1
    other = tmp_path / "other.pt"
    shutil.copy(weights, other)
    with pytest.raises(ConfigError, match=rf"was distilled from the teacher '.*{weights}', not '.*{other}'; pass "
                                          "the --teacher and --weights the distillation used"):
        load_distilled(distilled, load_teacher(f"{module}:build", str(other)), data)
    # the default teacher: trained by the distill run, read from the cache by compress's
    (old / "distill.json").write_text(json.dumps({**info, "recipe": {**info["recipe"], "teacher": None,
                                                                     "weights": None},
                                                  "teacher": {"source": "default resnet teacher (trained, cached x)"}}))
    cached = Teacher(spelled.module, "default resnet teacher (cached x)", origin=DEFAULT_ORIGIN)
    assert load_distilled(old, cached, data).result.best_epoch >= 1


def _without_fingerprints(distilled, tmp_path):
    """A copy of the distilled folder as an edgekd that recorded no fingerprints wrote it."""
    old = tmp_path / "before fingerprints"
    shutil.copytree(distilled, old)
    info = json.loads((old / "distill.json").read_text())
    del info["fingerprints"]
    (old / "distill.json").write_text(json.dumps(info))
    return old


def test_compress_distilled_refuses_a_teacher_file_whose_weights_changed_since(distilled, teacher_files, tmp_path):
    """Only the teacher's path was compared: a weights file replaced after distilling shipped the student with the
    other teacher's accuracy, drop and speedup, and nothing on record could show it."""
    import torch

    from edgekd.data import load_data
    from edgekd.distilled import load_distilled
    from edgekd.errors import ConfigError
    from edgekd.teacher import load_teacher

    module, weights = teacher_files
    data, teacher = load_data("digits", resolution=16), load_teacher(f"{module}:build", str(weights))
    with torch.no_grad():
        next(teacher.module.parameters()).add_(0.01)  # the same file name, retrained
    with pytest.raises(ConfigError, match=r"the weights of the teacher .* are not those '.*' was distilled from "
                                          r"\(fingerprint \w+ in its distill.json, \w+ now\); restore the teacher "
                                          "file the run used, pass the --teacher and --weights it used, or distill "
                                          "again from this teacher"):
        load_distilled(distilled, teacher, data)
    assert load_distilled(_without_fingerprints(distilled, tmp_path), teacher, data).result.best_epoch >= 1


def test_compress_distilled_refuses_images_changed_since_with_the_same_count(distilled, teacher_files, tmp_path):
    """Only the image counts and the preprocessing were compared: other pixels under the same names passed."""
    from dataclasses import replace

    from edgekd.data import load_data
    from edgekd.distilled import load_distilled
    from edgekd.errors import ConfigError
    from edgekd.teacher import load_teacher

    module, weights = teacher_files
    data, teacher = load_data("digits", resolution=16), load_teacher(f"{module}:build", str(weights))
    for split, field in (("training", "x_train"), ("validation", "x_val")):
        x = getattr(data, field).copy()
        x[-1] = x.max()  # one image past the first 64 made a white square
        with pytest.raises(ConfigError, match=rf"the {split} images of 'digits' are not those '.*' was distilled on "
                                              r"\(the same count, other pixels or labels\); restore the images the "
                                              "run used, or distill again on these"):
            load_distilled(distilled, teacher, replace(data, **{field: x}))
    x = data.x_train.copy()
    x[-1] = x.max()
    assert load_distilled(_without_fingerprints(distilled, tmp_path), teacher,
                          replace(data, x_train=x)).result.best_epoch >= 1


def test_compress_distilled_refuses_a_student_pt_the_run_did_not_write(distilled, teacher_files, tmp_path):
    """An unpruned student of the same architecture from another run loaded, and shipped under this run's figures."""
    import torch

    from edgekd.data import load_data
    from edgekd.distilled import load_distilled
    from edgekd.errors import ConfigError
    from edgekd.teacher import load_teacher

    module, weights = teacher_files
    data, teacher = load_data("digits", resolution=16), load_teacher(f"{module}:build", str(weights))
    other = tmp_path / "other"
    shutil.copytree(distilled, other)
    state = torch.load(other / "student.pt", weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, other / "student.pt")
    with pytest.raises(ConfigError, match=r"'.*student.pt' is not the student.pt `edgekd distill` wrote there \(its "
                                          r"sha256 differs from the one distill.json records\); restore the "
                                          "student.pt the run wrote, or distill again"):
        load_distilled(other, teacher, data)
    shutil.copy(other / "student.pt", tmp_path / "student.pt")
    old = _without_fingerprints(distilled, tmp_path)
    shutil.copy(tmp_path / "student.pt", old / "student.pt")
    assert load_distilled(old, teacher, data).result.best_epoch >= 1  # recorded nothing to compare with


def test_an_unfinished_or_set_aside_distill_folder_says_how_to_finish_or_put_it_back(run_cli, common, tmp_path):
    """`compress --distilled` said "has no distill.json", `report` sent an interrupted run to `compress --search`
    (training from epoch 0), and a distill with or without --resume pointed at the other, in a circle."""
    stopped = tmp_path / "stopped"  # Ctrl-C'd after its first epoch
    stopped.mkdir()
    (stopped / "checkpoint.pt").write_bytes(b"x")
    (stopped / "search.json").write_text("{}")
    finish = (f"error: '{stopped}' holds a distill run that was stopped before it finished (checkpoint.pt, no "
              f"distill.json); finish it with `edgekd distill ... --out {stopped} --resume` (the flags it started "
              f"with), then `edgekd compress --distilled {stopped} --out OUT`")
    assert err_line(*run_cli("compress", *common[:-1], "--distilled", stopped, "--out", tmp_path / "c")[::2]) == finish
    assert err_line(*run_cli("report", stopped)[::2]) == finish
    emptied = tmp_path / "emptied"  # a --force run killed before its first checkpoint
    emptied.mkdir()
    (emptied / "search.json").write_text("{}")
    left = tmp_path / "emptied.edgekd-replaced-7"
    left.mkdir()
    back = f"`rm -r {emptied} && mv {left} {emptied}`"
    said = (f"'{emptied}' holds no finished run: a --force run into it was stopped before its first checkpoint, and "
            f"the earlier run it replaced is in '{left}'; put that run back with {back}")
    assert err_line(*run_cli("compress", *common[:-1], "--distilled", emptied, "--out", tmp_path / "c")[::2]) == (
        f"error: {said}")
    assert err_line(*run_cli("report", emptied)[::2]) == f"error: {said}"
    code, _, err = run_cli("distill", *common, "--out", emptied, "--resume")
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"error: nothing to resume in '{emptied}' (no checkpoint.pt): a --force run into it was stopped before its "
        f"first checkpoint, and the earlier run it replaced is in '{left}'; put that run back with {back}, then "
        "resume; or start over with --force instead of --resume")
    assert err_line(*run_cli("distill", *common, "--out", emptied)[::2]) == (
        f"error: output folder '{emptied}' is not empty: a --force run into it was stopped before its first "
        f"checkpoint, and the earlier run it replaced is in '{left}'; put that run back with {back}, choose another "
        "--out, or pass --force to start over")
    left.rmdir()  # a damaged checkpoint.pt deleted, as its error asks: neither way points at the other
    assert err_line(*run_cli("distill", *common, "--out", emptied, "--resume")[::2]) == (
        f"error: nothing to resume in '{emptied}' (no checkpoint.pt); start over with --force instead of --resume "
        "(it replaces what the folder holds), or choose another --out")
    assert err_line(*run_cli("distill", *common, "--out", emptied)[::2]) == (
        f"error: output folder '{emptied}' is not empty; choose another --out, or pass --force to start over "
        "(CompressConfig(force=True) from Python)")
    (emptied / "checkpoint.pt").mkdir()  # there, but no file: it was said to be missing
    assert err_line(*run_cli("distill", *common, "--out", emptied, "--resume")[::2]) == (
        f"error: nothing to resume in '{emptied}': its checkpoint.pt is a folder, not a checkpoint file; start over "
        "with --force instead of --resume (it replaces what the folder holds), or choose another --out")


def test_search_settings_given_with_a_search_file_are_refused_not_ignored(run_cli, common, searched, tmp_path):
    def line(*args):
        code, _, err = run_cli(*args, "--out", tmp_path / "never")
        assert code == 2 and "Traceback" not in err and not (tmp_path / "never").exists()
        return err

    for command in ("compress", "distill"):
        for flag, value in (("--space", "resnet"), ("--proxy", "synflow"), ("--candidates", "9"),
                            ("--precision", "int8"), ("--latency-anchors", "8")):
            err = line(command, *common, "--search", searched, flag, value)
            assert f"{flag} does not apply with the search file '{searched}'" in err, err
            assert f"drop {flag}, or run `edgekd search` with it" in err
    # --precision also sets the precision pruning measures, and the search file's decides it (and what ships)
    err = line("compress", *common, "--search", searched, "--precision", "fp32", "--target-ms", "1")
    assert f"--precision does not apply with the search file '{searched}'" in err, err
    # A recipe's search settings are what its own `edgekd search` ran with: not refused (the run stops at the
    # existing --out instead, before any work).
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'space = "resnet"\nproxy = "synflow"\ncandidates = 9\nsearch = "{searched}"\n')
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine").write_text("x")
    code, _, err = run_cli("compress", *common, "--config", recipe, "--out", tmp_path / "full")
    assert code == 2 and "exists and is not empty" in err, err


def test_a_search_file_whose_student_is_over_the_size_budget_is_refused_before_training(run_cli, common, searched,
                                                                                       tmp_path):
    code, _, err = run_cli("compress", *common, "--search", searched, "--max-size-kb", "0.5",
                           "--out", tmp_path / "never")
    assert code == 2 and f"the student chosen in '{searched}' is" in err and "over --max-size-kb 0.5" in err, err
    assert "epochs, losses" not in err and not (tmp_path / "never").exists()


def test_refusals_with_distilled_name_what_the_user_gave(run_cli, common, distilled, tmp_path):
    """Settings from distill.json or a recipe were named as flags the user had not passed."""
    def line(*args):
        code, _, err = run_cli("compress", *common, *args, "--out", tmp_path / "never")
        assert code == 2 and "Traceback" not in err and not (tmp_path / "never").exists()
        return err

    qat = _edited(distilled, tmp_path, qat_epochs=1)
    err = line("--distilled", qat, "--opset", "17")
    assert f"the student in '{qat}' was trained quantization-aware" in err and "not --opset 17" in err
    assert "pass --opset 18" in err and "drop --qat-epochs" not in err
    err = line("--distilled", qat, "--calibration", "entropy")
    assert "--calibration does not apply: the student in" in err and "drop --calibration" in err
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('search = "s.json"\n')
    err = line("--config", recipe, "--distilled", distilled)
    assert "--distilled and the recipe's search ('s.json') cannot be combined" in err
    assert f"remove the search key from '{recipe}'" in err and "drop --search" not in err
    assert "distill.json, whose seed also split the data" in line("--distilled", distilled, "--seed", "1")


def test_pruning_aware_kd_is_refused_under_torchrun(run_cli, common, tmp_path, monkeypatch):
    """Each pruning step's KD phase started and ended the process group: the second one hung every rank."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "x"
    code, _, err = run_cli("distill", *common, "--target-ms", "1", "--out", out)
    assert code == 2 and "pruning-aware KD (--target-ms) runs in one process, not under torchrun's 2" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("command", ["compress", "search", "validate", "bench", "gate"])
def test_commands_but_distill_are_refused_under_torchrun(run_cli, common, tmp_path, monkeypatch, command):
    """Every process ran the whole command: two searches measuring at once on one machine, one --out written
    by both, and compress's training joined into one data-parallel run of students chosen apart."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "x"
    args = [*common, "--out", out] if command in ("compress", "search") else [tmp_path / "m.onnx"]
    code, _, err = run_cli(command, *args)
    assert err == (f"error: `edgekd {command}` runs in one process, not under torchrun's 2; run it without "
                   "torchrun; to train data-parallel, run `torchrun --nproc-per-node N -m edgekd distill --search "
                   "search.json --out DIR`, then `edgekd compress --distilled DIR`\n") and code == 2
    assert not out.exists()
    code, out_text, err = run_cli(command, "--help")  # its help is no run (it was refused too)
    assert code == 0 and "Usage: edgekd" in out_text, err


def test_profiles_calibrate_is_refused_under_torchrun_and_listing_is_not(run_cli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = run_cli("profiles", "calibrate", "host-cpu-1t", "--space", "mbv2")
    assert code == 2 and err.startswith("error: `edgekd profiles calibrate` runs in one process, not under torchrun's "
                                        "2; run it without torchrun"), err
    code, out, err = run_cli("profiles", "list")
    assert code == 0 and "host-cpu-1t" in out, err


def test_compress_and_search_from_python_are_refused_under_torchrun(tmp_path, monkeypatch):
    from edgekd.errors import ConfigError
    from edgekd.pipeline import CompressConfig, compress, run_search

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="`edgekd compress` runs in one process, not under torchrun's 2"):
        compress(CompressConfig(out=str(tmp_path / "o")))
    with pytest.raises(ConfigError, match="`edgekd search` runs in one process, not under torchrun's 2"):
        run_search(CompressConfig(), tmp_path / "s.json")
    assert not any(tmp_path.iterdir())


def test_distill_s_out_help_force_with_resume_and_a_mismatched_resume_speak_of_its_flags(run_cli, common, searched,
                                                                                        tmp_path):
    """distill's --out help promised 'created whole or not at all', which its kept checkpoint is not; --force
    --resume was accepted; a mismatched resume advised to 'point resume at this run's checkpoint', which no flag
    does."""
    code, out, _ = run_cli("distill", "--help")
    text = " ".join(out.split())
    assert code == 0 and "created whole or not at all" not in text and "checkpoint.pt after every epoch" in text
    line = err_line(*run_cli("distill", *common, "--search", searched, "--out", tmp_path / "d", "--resume",
                             "--force")[::2])
    assert "--force and --resume cannot be combined" in line
    from edgekd.distill.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "d" / "checkpoint.pt"
    path.parent.mkdir()
    save_checkpoint(path, {"arch": "a", "run": '{"epochs": 2}'})
    with pytest.raises(Exception, match="another run configuration") as caught:
        load_checkpoint(path, "a", {"epochs": 3})
    assert "point resume" not in str(caught.value) and f"--force replaces '{path.parent}'" in str(caught.value)
    assert "give --out the folder of the run" in str(caught.value)


def test_the_inputs_a_distilled_student_was_trained_with_are_taken_only_where_none_is_given(distilled, teacher_files,
                                                                                           tmp_path, monkeypatch):
    import torch

    from edgekd.data import load_data
    from edgekd.errors import ConfigError
    from edgekd.pipeline import CompressConfig, _with_distilled_inputs

    module, weights = teacher_files
    said: list[str] = []
    given = _with_distilled_inputs(CompressConfig(distilled=str(distilled), teacher=f"{module}:build",
                                                  normalize="none"), said.append)
    # a weights file goes with its teacher: the one given here takes none it was not given
    assert (given.teacher, given.weights, given.resolution, given.normalize) == (f"{module}:build", None, 16, "none")
    assert said == [f"inputs: --resolution 16, as '{distilled}' was distilled with (pass them to use others)"]
    imported = _edited(distilled, tmp_path, teacher="edgekd.models:resnet", weights=None)
    taken = _with_distilled_inputs(CompressConfig(distilled=str(imported)), said.append)
    assert taken.teacher == "edgekd.models:resnet"
    shutil.rmtree(imported)
    moved = _edited(distilled, tmp_path, teacher="my_teacher.py:build", weights="w.pt")
    with pytest.raises(ConfigError, match=f"'{moved}' was distilled with --teacher 'my_teacher.py:build', which is "
                                          r"not found from here \(its distill.json keeps the path as it was typed\); "
                                          "pass --teacher and --weights with their paths from this folder"):
        _with_distilled_inputs(CompressConfig(distilled=str(moved)), said.append)
    monkeypatch.chdir(module.parent)  # where the distillation ran, its relative paths are found
    shutil.copy(weights, module.parent / "w.pt")
    (module.parent / "my_teacher.py").write_text(module.read_text())
    assert _with_distilled_inputs(CompressConfig(distilled=str(moved)), said.append).weights == "w.pt"
    shutil.rmtree(moved)
    info = json.loads((distilled / "distill.json").read_text())
    for edit, what in (({"teacher": {"source": "MyNet (in memory)", "origin": "MyNet"}}, "from a teacher passed in "
                        "memory (MyNet (in memory))"), ({"data": {**info["data"], "name": "arrays"}},
                                                       "on data passed in memory ('arrays')")):
        folder = tmp_path / "edited"
        shutil.copytree(distilled, folder)
        key = next(iter(edit))
        (folder / "distill.json").write_text(json.dumps({**info, "recipe": {**info["recipe"], key: None}, **edit}))
        with pytest.raises(ConfigError, match=f"was distilled {re.escape(what)}, which its distill.json cannot name"):
            _with_distilled_inputs(CompressConfig(distilled=str(folder)), said.append)
        # passed again, as the refusal asks, it is taken (and compared once loaded)
        again = {"teacher": torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10))} if key == "teacher" \
            else {"data": load_data("digits", resolution=16)}
        assert getattr(_with_distilled_inputs(CompressConfig(distilled=str(folder), **again), said.append),
                       key) is again[key]
        shutil.rmtree(folder)
    # hand-edited records of the wrong type read as saying nothing, not as a traceback
    folder = tmp_path / "edited"
    shutil.copytree(distilled, folder)
    (folder / "distill.json").write_text(json.dumps({**info, "teacher": "mine", "data": ["x"]}))
    assert _with_distilled_inputs(CompressConfig(distilled=str(folder)), said.append).resolution == 16


def _normalized_none(distilled, tmp_path):
    """A copy of the distilled folder that records its student distilled with --normalize none."""
    folder = _edited(distilled, tmp_path, normalize="none")
    info = json.loads((folder / "distill.json").read_text())
    info["data"]["preprocess"].update(mean=[0.0], std=[1.0])
    (folder / "distill.json").write_text(json.dumps(info))
    return folder


def test_a_normalize_given_with_distilled_counts_though_it_is_the_default(distilled, tmp_path):
    """--normalize dataset was read as not given: the log said "--normalize none, as 'd1' was distilled with
    (pass them to use others)" to a user who had passed another, and the run went on with the recorded one."""
    from edgekd.pipeline import CompressConfig, _with_distilled_inputs

    folder = _normalized_none(distilled, tmp_path)
    said: list[str] = []
    given = _with_distilled_inputs(CompressConfig(distilled=str(folder), normalize="dataset"), said.append)
    assert given.normalize == "dataset" and not any("--normalize" in line for line in said)
    left_out = _with_distilled_inputs(CompressConfig(distilled=str(folder)), said.append)
    assert left_out.normalize == "none" and "--normalize none, as" in said[-1]
    assert CompressConfig().normalize is None  # not given; loaded as "dataset"


def test_compress_distilled_refuses_a_normalize_dataset_the_student_was_not_trained_with(run_cli, common,
                                                                                        distilled, tmp_path):
    folder = _normalized_none(distilled, tmp_path)
    code, _, err = run_cli("compress", *common, "--normalize", "dataset", "--distilled", folder,
                           "--out", tmp_path / "never")
    line = err_line(code, err)
    assert f"'{folder}' was distilled on 'digits'" in line and "(pixel / 16 - 0) / 1)" in line, line
    assert "--resolution and --normalize the distillation used" in line and not (tmp_path / "never").exists()


def test_temperature_and_alpha_that_the_losses_never_read_are_refused_not_echoed(run_cli, common, searched, tmp_path):
    """`--losses ce --temperature 9 --alpha 0.1` trained the student of `--losses ce`, while the log and
    distill.json said T=9 and alpha 0.1 applied; so did `--no-labels --alpha 0.2`."""
    from edgekd.errors import ConfigError
    from edgekd.pipeline import CompressConfig

    for command in ("distill", "compress"):
        for extra, said in ((["--losses", "ce", "--temperature", "9"], "error: --temperature softens the logits of "
                             "the dist, dkd, kd losses, and --losses ce has none of them; add one to --losses, e.g. "
                             "kd:1, or leave --temperature out"),
                            (["--losses", "ce", "--alpha", "0.1"], "error: --alpha weighs the teacher's losses "
                             "against the labels' cross-entropy, and --losses ce has no teacher loss; leave --alpha "
                             "out, or add a teacher loss to --losses, e.g. kd:1"),
                            (["--no-labels", "--alpha", "0.2"], "error: --alpha weighs the teacher's losses against "
                             "the labels' cross-entropy, and --no-labels leaves no label loss to weigh them against; "
                             "leave --alpha out")):
            assert err_line(*run_cli(command, *common, "--search", searched, *extra, "--out",
                                     tmp_path / "never")[::2]) == said
    assert not (tmp_path / "never").exists()
    with pytest.raises(ConfigError, match="--temperature softens"):
        CompressConfig(losses="at:1", temperature=2.0)
    # what the losses read stays allowed: the temperature of kd without labels, alpha beside ce
    assert CompressConfig(losses="kd", labels=False, temperature=2.0).temperature == 2.0
    assert CompressConfig(losses="kd:1,ce:1", alpha=0.5).alpha == 0.5


def test_feature_only_losses_that_train_no_classifier_are_refused_before_any_work(run_cli, tmp_path):
    """Refused by distill once training was set up: after the data, the teacher and (without --search) a
    whole search had run for a student that could only end at chance."""
    from edgekd.errors import ConfigError, DataError
    from edgekd.pipeline import CompressConfig

    for command in ("compress", "distill"):
        code, _, err = run_cli(command, "--no-labels", "--losses", "hint", "--out", tmp_path / "never")
        assert err_line(code, err).startswith("error: the losses (hint) train only the layers they tap, and the "
                                              "training data has no labels"), err
    assert not (tmp_path / "never").exists()
    with pytest.raises(ConfigError, match=r"alpha 1 leaves no weight to the label cross-entropy"):
        CompressConfig(losses="at:1", alpha=1.0)
    with pytest.raises(DataError, match=r"add a logit loss \(kd, dkd or dist\), e\.g\. --losses kd,hint,at"):
        CompressConfig(losses="hint,at", labels=False)
    assert CompressConfig(losses="ce,at", alpha=1.0).alpha == 1.0  # ce trains the classifier at alpha 1


@pytest.mark.parametrize(("losses", "labels", "said"), [("ce", True, "losses ce,"), ("kd", False, "losses kd (T=4.0),"),
                                                          ("kd", True, "losses kd (T=4.0, alpha=0.9),")])
def test_the_distill_log_says_only_the_settings_its_losses_read(small_data, monkeypatch, losses, labels, said):
    import edgekd.distill.trainer
    from edgekd.pipeline import CompressConfig, train_student
    from edgekd.types import DistillResult

    monkeypatch.setattr(edgekd.distill.trainer, "distill", lambda *a, **k: DistillResult(
        model=None, best_epoch=1, best_val_accuracy=0.9, history=()))
    log: list[str] = []
    train_student(CompressConfig(losses=losses, labels=labels, epochs=1, progress=False), "student", "teacher",
                  small_data, None, log.append)
    assert log[0].startswith(f"distill: 1 epoch, {said} training images shifted"), log


def _conv_net(channels: int, classes: int = 10):
    from torch import nn

    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, 2, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))


@pytest.mark.parametrize(("taps", "said"), [
    ({}, ", tapping 2 -> 2 (student -> teacher layers, each model's last feature map),"),
    (dict(hint_student="0", hint_teacher="1"), ", tapping 0 -> 1 (student -> teacher layers, given),")])
def test_the_distill_log_names_the_layers_the_feature_losses_tap(small_data, monkeypatch, taps, said):
    """The layers tapped by default were said nowhere: only the pickled checkpoint held them."""
    import edgekd.distill.trainer
    from edgekd.pipeline import CompressConfig, train_student
    from edgekd.types import DistillResult

    monkeypatch.setattr(edgekd.distill.trainer, "distill", lambda *a, **k: DistillResult(
        model=None, best_epoch=1, best_val_accuracy=0.9, history=()))
    log: list[str] = []
    net = _conv_net(small_data.input_shape[0], small_data.num_classes)
    train_student(CompressConfig(losses="kd:1,hint:1", epochs=1, progress=False, **taps), net, net, small_data, None,
                  log.append)
    assert said in log[0], log


def test_a_distilled_folder_recorded_with_an_unread_temperature_still_ships(distilled, tmp_path):
    """A distill.json from before unread settings were refused records them: compress --distilled takes its recipe."""
    from edgekd.pipeline import CompressConfig, _as_distilled

    folder = _edited(distilled, tmp_path, losses="ce", temperature=9.0, alpha=0.1)
    config = _as_distilled(CompressConfig(distilled=str(folder)))
    assert (config.losses, config.temperature, config.alpha) == ("ce", 4.0, 0.9)


def test_a_checkpoint_with_the_format_mark_but_missing_fields_is_refused_in_one_line(run_cli, common, searched,
                                                                                     tmp_path):
    """torch.save({'format': 1, 'x': 1}, 'c3/checkpoint.pt') then --resume: a KeyError 'arch' traceback."""
    import torch

    out = tmp_path / "c3"
    out.mkdir()
    torch.save({"format": 1, "x": 1}, out / "checkpoint.pt")
    line = err_line(*run_cli("distill", *common, "--search", searched, "--epochs", "1", "--out", out,
                             "--resume")[::2])
    assert line == (f"error: {out / 'checkpoint.pt'} is not an edgekd training checkpoint (format 1, but it has no "
                    f"'arch'); start fresh without --resume (--force replaces '{out}'), or give --out the folder of "
                    "the run this command continues")


def test_compress_distilled_takes_the_default_for_a_temperature_the_students_losses_never_read(tmp_path):
    """`compress --config recipe.toml --distilled DIR`, the recipe holding temperature = 2 and DIR distilled with
    --losses ce: the recorded temperature was dropped, so the recipe's survived (training settings come from
    distill.json only) and was refused as a --temperature the user never typed."""
    from edgekd.pipeline import CompressConfig, _as_distilled

    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "distill.json").write_text(json.dumps({"recipe": {"losses": "ce", "temperature": 4.0, "alpha": 0.9,
                                                                "epochs": 2}}))
    config = _as_distilled(CompressConfig(distilled=str(folder), temperature=2.0, alpha=0.5))
    assert (config.losses, config.temperature, config.alpha, config.epochs) == ("ce", 4.0, 0.9, 2)


def test_a_resume_with_other_training_flags_is_refused_before_the_data_and_teacher_load(teacher_files, searched,
                                                                                      fast_profile_path, tmp_path,
                                                                                      monkeypatch):
    """Another --epochs (or lr, losses, ...) on --resume was refused by the checkpoint's check, after the data
    and the teacher had loaded (about 14 s for the default, minutes for a large dataset)."""
    from edgekd.distill.checkpoint import config_record, save_checkpoint
    from edgekd.errors import ConfigError
    from edgekd.pipeline import CompressConfig, stages

    module, weights = teacher_files

    def config(**flags):
        return CompressConfig(teacher=f"{module}:build", weights=str(weights), resolution=16, search_file=str(searched),
                              profile=str(fast_profile_path), progress=False, **flags)

    out = tmp_path / "d"
    out.mkdir()
    started = config(epochs=2, losses="kd:1,dist:0.5")
    save_checkpoint(out / "checkpoint.pt", {"arch": "a", "run": json.dumps(
        {"config": config_record(started.distill_config()), "losses": [["kd", 1.0], ["dist", 0.5]]})})

    def loaded(*_args, **_kwargs):
        raise AssertionError("the data and teacher loaded")

    monkeypatch.setattr(stages, "check_teacher_files", loaded)
    with pytest.raises(ConfigError, match=r"another run configuration \(epochs: 2 -> 3\)"):
        stages.run_distill(config(epochs=3, losses="kd:1,dist:0.5"), out, resume=True)
    with pytest.raises(ConfigError, match=r"another run configuration \(losses: \{'kd': 1.0, 'dist': 0.5\} "
                                          r"-> \{'kd': 1.0\}\); "):  # said once, as given
        stages.run_distill(config(epochs=2, losses="kd"), out, resume=True)
    with pytest.raises(AssertionError, match="loaded"):  # the same settings go on to load
        stages.run_distill(started, out, resume=True)
