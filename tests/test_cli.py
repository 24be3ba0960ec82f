"""The CLI as a user meets it: one-line errors, exit codes, no tracebacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import QUICK_PROXY, foreign_onnx


def _one_line_error(code, err, expected_code=2):
    assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def _base(teacher_files, profile, out):
    module, weights = teacher_files
    return ["compress", "--teacher", f"{module}:build", "--weights", str(weights), "--resolution", "16",
            "--profile", str(profile), "--out", str(out), "--candidates", "4", "--epochs", "1", "--proxy", QUICK_PROXY,
            "-q"]


def test_version_and_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "edgekd", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "0.1.0" in done.stdout


def test_search_help_describes_its_file_output(run_cli):
    """search writes one JSON file, compress a folder: each help says what its --out and --force mean."""
    code, out, _ = run_cli("search", "--help")
    out = " ".join(out.split())  # click wraps to the terminal's width
    assert code == 0 and "Ranking JSON file to write" in out and "Replace an existing --out file" in out
    assert "Output folder" not in out
    code, out, _ = run_cli("compress", "--help")
    out = " ".join(out.split())
    assert code == 0 and "Output folder" in out and "Ranking JSON file" not in out


@pytest.mark.parametrize("command", ["bench", "validate"])
def test_json_report_never_overwrites_without_force(run_cli, tmp_path, command):
    """An existing --json file is refused before anything is read or measured (the model here is not even
    ONNX), and a folder is no file to write."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not an onnx model")
    existing = tmp_path / "r.json"
    existing.write_text("mine")
    line = _one_line_error(*run_cli(command, model, "--json", existing)[::2])
    # the CLI's advice, without the Python API's force=True (which its user has no call to pass)
    assert line.endswith(f"--json '{existing}' already exists; choose another --json path or pass --force to replace "
                         "it") and existing.read_text() == "mine"
    line = _one_line_error(*run_cli(command, model, "--json", tmp_path)[::2])
    assert f"--json '{tmp_path}' is a folder" in line


@pytest.mark.parametrize("value, shown", [("0", "0"), ("-2", "-2")])
def test_budget_must_be_positive(run_cli, tmp_path, value, shown):
    line = _one_line_error(*run_cli("compress", "--budget-ms", value, "--out", tmp_path / "o")[::2])
    assert f"--budget-ms must be positive, got {shown}" in line


def test_accuracy_budget_flags_belong_to_compress_only(run_cli, tmp_path):
    line = _one_line_error(*run_cli("compress", "--max-accuracy-drop", "-1", "--out", tmp_path / "o")[::2])
    assert "--max-accuracy-drop is in percentage points below the teacher, got -1" in line
    assert not (tmp_path / "o").exists()
    for command in ("search", "distill"):  # neither validates ONNX files, so neither takes an accuracy budget
        code, _, err = run_cli(command, "--min-accuracy", "0.9")
        # click 8.1 writes "No such option: --min-accuracy", 8.2 "No such option '--min-accuracy'"
        assert code == 2 and "No such option" in err and "--min-accuracy" in err


def test_latency_rounds_must_be_positive(run_cli, tmp_path):
    line = _one_line_error(*run_cli("compress", "--latency-rounds", "0", "--out", tmp_path / "o")[::2])
    assert "--latency-rounds must be at least 1, got 0" in line and not (tmp_path / "o").exists()
    line = _one_line_error(*run_cli("compress", "--latency-anchors", "2", "--out", tmp_path / "o")[::2])
    assert "--latency-anchors must be at least 3, got 2; pass 32" in line and not (tmp_path / "o").exists()


def test_unknown_profile_lists_known(run_cli, tmp_path):
    line = _one_line_error(*run_cli("compress", "--profile", "toaster", "--out", tmp_path / "o")[::2])
    assert "unknown profile 'toaster'" in line and "host-cpu-1t" in line


def test_malformed_profile_file(run_cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[runtime\n")
    line = _one_line_error(*run_cli("compress", "--profile", bad, "--out", tmp_path / "o")[::2])
    assert "malformed TOML" in line


def test_teacher_errors(run_cli, teacher_files, fast_profile_path, tmp_path):
    module, weights = teacher_files
    args = _base(teacher_files, fast_profile_path, tmp_path / "o")
    code, _, err = run_cli(*[a if a != str(weights) else str(tmp_path / "gone.pt") for a in args])
    assert "weights file" in _one_line_error(code, err) and "does not exist" in err
    code, _, err = run_cli(*[a if a != f"{module}:build" else f"{module}:nope" for a in args])
    assert "no factory 'nope'" in _one_line_error(code, err) and "build" in err
    code, _, err = run_cli(*[a if a != f"{module}:build" else f"{module}:build_wide" for a in args])
    assert "do not match the model" in _one_line_error(code, err)
    assert not (tmp_path / "o").exists()


def test_data_errors(run_cli, teacher_files, fast_profile_path, tmp_path):
    args = _base(teacher_files, fast_profile_path, tmp_path / "o")
    line = _one_line_error(*run_cli(*args, "--data", tmp_path / "missing.npz")[::2])
    assert "does not exist" in line
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00garbage")
    assert "cannot be read" in _one_line_error(*run_cli(*args, "--data", garbage)[::2])
    rgb = tmp_path / "rgb.npz"
    rng = np.random.default_rng(0)
    np.savez(rgb, x=rng.random((90, 3, 16, 16), dtype=np.float32), y=np.arange(90) % 10)
    assert "do not fit the teacher" in _one_line_error(*run_cli(*args, "--data", rgb)[::2])
    line = _one_line_error(*run_cli(*args, "--normalize", "imagenet")[::2])
    assert "--normalize 'imagenet' is not dataset, none or MEAN/STD" in line and "0.485" in line
    line = _one_line_error(*run_cli(*args, "--resolution", "16by24")[::2])
    assert "--resolution 16by24 is not a positive side or HEIGHTxWIDTH" in line and "240x320" in line
    assert "--resolution 3x24 is too small; pass 4 or more for each side" in _one_line_error(
        *run_cli(*args, "--resolution", "3x24")[::2])
    assert not (tmp_path / "o").exists()


def test_existing_output_folder_is_refused(run_cli, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "x").write_text("keep")
    line = _one_line_error(*run_cli("compress", "--out", out)[::2])
    assert "not empty" in line and "--force" in line
    assert (out / "x").read_text() == "keep"


def test_recipe_is_read_and_flags_win(run_cli, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("budget-ms = 0\nmax_size_kb = 10\n")
    assert "got 0" in _one_line_error(*run_cli("compress", "--config", recipe, "--out", tmp_path / "o")[::2])
    line = _one_line_error(*run_cli("compress", "--config", recipe, "--budget-ms", "-3", "--out",
                                    tmp_path / "o")[::2])
    assert "got -3" in line
    recipe.write_text("colour = 'blue'\n")
    assert "unknown key 'colour'" in _one_line_error(*run_cli("compress", "--config", recipe)[::2])
    recipe.write_text("budgetms = 1\n")
    line = _one_line_error(*run_cli("compress", "--config", recipe)[::2])
    assert "unknown key 'budgetms'; did you mean 'budget-ms'?" in line and "max-size-kb" in line
    recipe.write_text("budget-ms = 'fast'\n")
    line = _one_line_error(*run_cli("compress", "--config", recipe)[::2])
    assert f"recipe '{recipe}': budget-ms = \"fast\" is a string, not a number" in line


def test_force_never_writes_over_the_recipe_or_the_profile_it_reads(run_cli, fast_profile_path, tmp_path):
    """--force replaced a search's --out even where that was its own recipe or board profile."""
    board = tmp_path / "board.toml"
    board.write_text(Path(fast_profile_path).read_text().replace('name = "fast-test"', 'name = "board"'))
    recipe = tmp_path / "run" / "recipe.toml"
    recipe.parent.mkdir()
    # A teacher file that is not there: a refused --out is said first, else the run stops at the teacher
    recipe.write_text(f"profile = '{board}'\nteacher = '{tmp_path / 'missing.pt2'}'\n")
    kept = recipe.read_text(), board.read_text()
    for command, out in (("search", recipe), ("search", board), ("compress", recipe.parent),
                         ("distill", recipe.parent), ("compress", tmp_path)):
        line = _one_line_error(*run_cli(command, "--config", recipe, "--out", out, "--force")[::2])
        assert "an input of this command" in line and "--force never replaces" in line, (command, out, line)
    assert (recipe.read_text(), board.read_text()) == kept


@pytest.mark.parametrize("command", ["bench", "validate"])
def test_a_json_report_never_replaces_the_profile_it_reads(run_cli, fast_profile_path, tmp_path, command):
    """bench --json board.toml --force replaced the board profile it had just been given with its results
    (validate already refused)."""
    board = tmp_path / "board.toml"
    board.write_text(Path(fast_profile_path).read_text().replace('name = "fast-test"', 'name = "board"'))
    kept = board.read_text()
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not an onnx model")  # refused before it is read
    line = _one_line_error(*run_cli(command, model, "--profile", board, "--json", board, "--force")[::2])
    assert f"--json '{board}' is '{board}', an input of this command" in line and "--force never replaces" in line
    assert board.read_text() == kept


def test_compress_then_validate_end_to_end(run_cli, teacher_files, fast_profile_path, tmp_path):
    out = tmp_path / "o"
    code, stdout, err = run_cli(*_base(teacher_files, fast_profile_path, out), "--budget-ms", "50")
    assert code == 0, err
    assert "student-int8" in stdout and ("PASS" in stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    code, stdout, _ = run_cli("validate", out / "student-fp32.onnx", "--profile", fast_profile_path,
                              "--data", "digits", "--resolution", "16", "--max-size-kb", "0.5",
                              "--json", tmp_path / "v.json")
    assert code == 1 and "size: FAIL" in stdout and "accuracy on digits" in stdout
    report = json.loads((tmp_path / "v.json").read_text())
    fp32 = next(a for a in manifest["artifacts"] if a["artifact"]["name"] == "student-fp32")
    assert report["artifacts"][0]["accuracy"] == pytest.approx(fp32["accuracy"])


def test_validate_rejects_non_onnx(run_cli, tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    line = _one_line_error(*run_cli("validate", bad)[::2])
    assert "not a readable ONNX model" in line or "holds no ONNX graph" in line
    assert "does not exist" in _one_line_error(*run_cli("validate", tmp_path / "nope.onnx")[::2])


@pytest.mark.slow
def test_readme_demo_command(tmp_path):
    """`make demo`'s command exactly, with the default teacher: the Must-show figures hold."""
    out = tmp_path / "demo-out"
    done = subprocess.run([sys.executable, "-m", "edgekd", "compress", "--budget-ms", "0.5", "--max-size-kb", "128",
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    by_name = {a["artifact"]["name"]: a for a in m["artifacts"]}
    teacher, int8 = by_name["teacher-fp32"], by_name["student-int8"]
    assert teacher["accuracy"] >= 0.97
    assert int8["accuracy"] >= teacher["accuracy"] - 0.01
    assert teacher["artifact"]["size_bytes"] >= 10 * int8["artifact"]["size_bytes"]
    assert int8["speedup_vs_teacher"] >= 3


def test_search_over_pruned_and_resnet_spaces(run_cli, teacher_files, fast_profile_path, tmp_path):
    module, weights = teacher_files
    found = tmp_path / "search.json"
    # a factory that takes arguments, given as literals on the command line
    code, out, err = run_cli("search", "--teacher", f"{module}:TinyNet(1, num_classes=10)", "--weights",
                             str(weights), "--resolution", "16", "--profile", str(fast_profile_path), "-q",
                             "--space", "pruned,resnet", "--precision", "fp32", "--candidates", "10", "--out", found)
    assert code == 0, err
    result = json.loads(found.read_text())
    assert {c["spec"]["space"] for c in result["candidates"]} == {"pruned", "resnet"}
    assert result["pareto"] and result["precision"] == "fp32" and "Pareto front" in out


def test_search_sizes_its_students_at_the_opset_the_run_ships(run_cli, teacher_files, fast_profile_path, tmp_path):
    """`edgekd search` had no --opset: its candidates' files were sized at 18, and a student chosen to fit
    --max-size-kb there was shipped at the opset compress was given. The file records the opset; distill and
    `compress --distilled` export at it."""
    import onnx

    from edgekd.pipeline import CompressConfig, _with_distilled_opset

    module, weights = teacher_files
    found, trained = tmp_path / "search.json", tmp_path / "trained"
    common = ["--teacher", f"{module}:build", "--weights", str(weights), "--resolution", "16",
              "--profile", str(fast_profile_path)]
    code, _, err = run_cli("search", *common, "-q", "--candidates", "3", "--latency-anchors", "4", "--opset", "17",
                           "--out", found)
    assert code == 0, err
    assert json.loads(found.read_text())["settings"]["opset"] == 17
    code, _, err = run_cli("distill", *common, "--search", found, "--epochs", "1", "--out", trained)
    assert code == 0, err
    assert f"--opset 17, as '{found}' was searched with" in err
    assert onnx.load(trained / "student-fp32.onnx").opset_import[0].version == 17
    # `compress --distilled` takes it from there, unless given another
    said = []
    config = _with_distilled_opset(CompressConfig(distilled=str(trained)), said.append)
    assert config.opset == 17 and said == [f"export: --opset 17, as the search of '{trained}' sized its students "
                                           "(pass --opset to export at another)"]
    assert _with_distilled_opset(CompressConfig(distilled=str(trained), opset=16), said.append).opset == 16
    assert _with_distilled_opset(CompressConfig(distilled=str(trained), opset=18), said.append).opset == 18
    code, _, err = run_cli("distill", *common, "--search", found, "--opset", "16", "--out", tmp_path / "d2")
    assert code == 2 and "--opset 16 is not the opset" in err and not (tmp_path / "d2").exists()


def test_search_rejects_unknown_space_and_proxy(run_cli, tmp_path):
    code, _, err = run_cli("search", "--space", "mbv2,vit", "--out", tmp_path / "s.json")
    assert code == 2 and "unknown search space 'vit'; choose one of: mbv2" in err
    assert "pruned" in err and "resnet" in err
    code, _, err = run_cli("search", "--proxy", "zen", "--out", tmp_path / "s.json")
    assert code == 2 and "unknown proxy 'zen'" in err and "naswot" in err
    assert not (tmp_path / "s.json").exists()


def test_search_table_says_why_better_scored_candidates_were_passed_over(run_cli, monkeypatch, tmp_path):
    """Rank 1's written file was 8 bytes over --max-size-kb 100 and showed as '100.0' KB with nothing to say
    why rank 2 was chosen."""
    import edgekd.pipeline
    from edgekd.types.search import Candidate, SearchResult, StudentSpec

    def cand(stem, ms, file_bytes):
        return Candidate(StudentSpec("resnet", {"stem": stem}), params=1000 * stem, size_bytes=100_000,
                         score=float(stem), latency_ms=ms, file_bytes=file_bytes)

    ranked = (cand(16, 0.05, 102_408), cand(12, 0.40, 90_000), cand(8, 0.06, 100_333), cand(4, None, None))
    result = SearchResult(chosen=ranked[2], candidates=ranked, proxy="params", evaluated=4, measured=3, seconds=1.0)
    monkeypatch.setattr(edgekd.pipeline, "run_search", lambda *args, **kwargs: result)
    code, out, err = run_cli("search", "--budget-ms", "0.3", "--max-size-kb", "100", "--out", tmp_path / "s.json")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| ") and "resnet" in line]
    assert [row.split(" | ")[6] for row in rows] == ["over --max-size-kb", "over --budget-ms", "chosen", ""]
    assert rows[0].startswith("| 1 | 16,000 | 100.0 |")
    (header,) = [line for line in out.splitlines() if line.startswith("| rank |")]
    assert header.split(" | ")[6] == "chosen / limit broken"  # the column was unnamed


def test_search_table_says_when_the_measured_correction_passed_a_candidate_over(run_cli, monkeypatch, tmp_path):
    """Ranks 1 and 2 were predicted 0.040 and 0.044 ms, under --budget-ms 0.05, and left unmeasured with an
    empty cell: their space measured 2.8x its predictions, which put them over the budget."""
    import edgekd.pipeline
    from edgekd.types.search import Candidate, SearchResult, StudentSpec

    def cand(stem, predicted, ms=None):
        return Candidate(StudentSpec("mbv2", {"stem": stem}), params=1000 * stem, size_bytes=10_000,
                         score=float(stem), latency_ms=ms, predicted_ms=predicted)

    ranked = (cand(16, 0.040), cand(12, 0.044), cand(8, 0.014, 0.040), cand(4, 0.060))
    result = SearchResult(chosen=ranked[2], candidates=ranked, proxy="params", evaluated=4, measured=1, seconds=1.0,
                          latency_scale={"mbv2": 2.8})
    monkeypatch.setattr(edgekd.pipeline, "run_search", lambda *args, **kwargs: result)
    code, out, err = run_cli("search", "--budget-ms", "0.05", "--out", tmp_path / "s.json")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| ") and "mbv2" in line]
    assert [row.split(" | ")[6] for row in rows] == [
        "predicted over after correction (x2.80)", "predicted over after correction (x2.80)", "chosen",
        "predicted over --budget-ms"]


def test_stage_commands_keep_a_recipe_s_out_for_compress(run_cli, monkeypatch, tmp_path, capsys):
    """One recipe drives every stage; its `out` is compress's folder. `search --config` wrote its JSON file
    there, and the recipe's own compress then refused that path."""
    import edgekd.pipeline

    recipe = tmp_path / "recipe.toml"
    recipe.write_text('out = "recipe-out"\nepochs = 3\n')
    seen = []

    class Stop(Exception):
        pass

    def record(config, out, **kwargs):
        seen.append(str(out))
        raise Stop  # the stage's own work is not what this test is about

    monkeypatch.setattr(edgekd.pipeline, "run_search", record)
    monkeypatch.setattr(edgekd.pipeline, "run_distill", record)
    for command, default in (("search", "search.json"), ("distill", "edgekd-distill")):
        with pytest.raises(Stop):
            run_cli(command, "--config", recipe)
        assert (f"the recipe's out (recipe-out) names compress's output folder; {command} writes {default} "
                "(pass --out to choose)") in capsys.readouterr().err
        with pytest.raises(Stop):
            run_cli(command, "--config", recipe, "--out", tmp_path / "mine")
        assert "recipe's out" not in capsys.readouterr().err
    assert seen == ["search.json", str(tmp_path / "mine"), "edgekd-distill", str(tmp_path / "mine")]


def test_a_recipe_s_search_or_distilled_is_what_that_stage_writes_not_what_it_reads(run_cli, monkeypatch, tmp_path,
                                                                                     capsys):
    """`edgekd search --config recipe.toml` with `search = "s1.json"` ranked anew without a word, writing
    search.json while the recipe's compress went on reusing the older s1.json; and with --out s1.json refused
    to replace its "input"."""
    import edgekd.pipeline

    seen = []

    class Stop(Exception):
        pass

    def record(config, out, **kwargs):
        seen.append((config.search_file, config.distilled, str(out)))
        raise Stop  # the stage's own work is not what this test is about

    monkeypatch.setattr(edgekd.pipeline, "run_search", record)
    monkeypatch.setattr(edgekd.pipeline, "run_distill", record)
    recipe = tmp_path / "recipe.toml"
    for command, key, named, default, said in (
            ("search", "search", tmp_path / "s1.json", "search.json",
             "names the ranking compress and distill reuse; search ranks anew"),
            ("distill", "distilled", tmp_path / "d1", "edgekd-distill",
             "names the student compress ships; distill trains anew")):
        recipe.write_text(f"{key} = '{named}'\n")
        with pytest.raises(Stop):
            run_cli(command, "--config", recipe)
        assert (f"[edgekd] the recipe's {key} ({named}) {said} and writes {default} (pass --out {named} to write "
                "it there)\n") in capsys.readouterr().err
        named.write_text("the earlier one") if key == "search" else named.mkdir()
        with pytest.raises(Stop):
            run_cli(command, "--config", recipe, "--out", named, "--force")
        assert "the recipe's" not in capsys.readouterr().err
    assert seen == [(None, None, "search.json"), (None, None, str(tmp_path / "s1.json")),
                    (None, None, "edgekd-distill"), (None, None, str(tmp_path / "d1"))]


def test_search_stage_then_compress_reuses_it(run_cli, teacher_files, fast_profile_path, tmp_path):
    module, weights = teacher_files
    found = tmp_path / "search.json"
    common = ["--teacher", f"{module}:build", "--weights", str(weights), "--resolution", "16",
              "--profile", str(fast_profile_path), "-q"]
    code, out, err = run_cli("search", *common, "--candidates", "5", "--budget-ms", "50", "--out", found)
    assert code == 0, err
    chosen = json.loads(found.read_text())["chosen"]["spec"]
    assert "chose" in out and chosen["space"] == "mbv2"
    code, _, err = run_cli("search", *common, "--candidates", "5", "--out", found)
    assert code == 2 and "already exists" in err
    # As if searched on another machine, one candidate measured over the budget: the copy compress writes kept
    # neither (this machine's CPU, the ranking without its budget), nor did its report.html mark the candidate.
    recorded = json.loads(found.read_text())
    recorded["host"] = "Other CPU (64 CPUs)"
    slow = next(c for c in recorded["candidates"] if c["spec"] != chosen)
    slow["latency_ms"] = 99.0
    found.write_text(json.dumps(recorded))
    out_dir = tmp_path / "o"
    code, _, err = run_cli("compress", *common[:-1], "--search", found, "--epochs", "1", "--out", out_dir)
    assert code in (0, 1), err
    assert "over --budget-ms<" in (out_dir / "report.html").read_text()
    assert json.loads((out_dir / "search.json").read_text()) == recorded  # its budget too: the one compress took
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["student"]["spec"] == chosen
    # No budget flags: the budget the search was made for, said, recorded and validated (it was dropped, and
    # `gate manifest.json` then found no budget to hold the student to)
    assert manifest["budget"]["latency_ms"] == 50 and manifest["recipe"]["budget_ms"] == 50
    assert f"budget: --budget-ms 50, as '{found}' was searched for (pass budget flags to validate against " \
           "others)" in err
    code, _, err = run_cli("compress", *common, "--search", tmp_path / "nope.json", "--out", tmp_path / "o2")
    assert code == 2 and "does not exist" in err and not (tmp_path / "o2").exists()
    # A ranking made for other data, another profile, or a looser budget than this run's is refused.
    wrong = [a if a != "16" else "12" for a in common]
    code, _, err = run_cli("compress", *wrong, "--search", found, "--out", tmp_path / "o3")
    assert code == 2 and "searched for data with input shape [1, 16, 16], and this data has [1, 12, 12]" in err
    code, _, err = run_cli("compress", *common[:-3], "--profile", "host-cpu", "--search", found,
                           "--out", tmp_path / "o3")
    assert code == 2 and "measured its students on profile 'fast-test', not 'host-cpu'" in err
    code, _, err = run_cli("compress", *common, "--search", found, "--budget-ms", "0.0001", "--out", tmp_path / "o3")
    assert code == 2 and "over --budget-ms 0.0001" in err and not (tmp_path / "o3").exists()


# --- Ctrl-C: one line saying what was left behind, exit 130 ----------------------------------------------

def _interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt


def test_interrupted_compress_says_nothing_was_written_and_how_to_resume_long_runs(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr("edgekd.pipeline.compress", _interrupt)
    code, out, err = run_cli("compress", "--out", tmp_path / "o")
    assert code == 130 and "Traceback" not in err
    assert err.strip().startswith(f"interrupted: nothing was written to {tmp_path / 'o'}/")
    assert "edgekd distill --out DIR" in err and "--resume" in err and "compress --distilled DIR" in err
    assert list(tmp_path.iterdir()) == []


def test_interrupted_distill_points_at_its_checkpoint(run_cli, tmp_path, monkeypatch):
    def trained_one_epoch(config, out, on_checkpoint, **_kwargs):
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "checkpoint.pt").write_bytes(b"x")
        on_checkpoint(tmp_path / "d" / "checkpoint.pt")  # the stage says it wrote it: one already there may not be its
        raise KeyboardInterrupt

    monkeypatch.setattr("edgekd.pipeline.run_distill", _interrupt)
    code, _, err = run_cli("distill", "--out", tmp_path / "d")
    assert code == 130 and err.strip() == f"interrupted: nothing was written to {tmp_path / 'd'}/"
    monkeypatch.setattr("edgekd.pipeline.run_distill", trained_one_epoch)
    code, _, err = run_cli("distill", "--out", tmp_path / "d")
    assert code == 130
    assert err.strip() == (f"interrupted: {tmp_path / 'd' / 'checkpoint.pt'} holds the last finished epoch; run the "
                           "same command with --resume to continue")


def test_a_disk_full_in_distill_names_where_it_wrote_and_the_checkpoint_kept(run_cli, tmp_path, monkeypatch):
    """ENOSPC was said as "No space left on device; check free space and permissions there" with no path (torch.save),
    or naming the /tmp staging file shutil.copyfile read from, and never that --resume continues from the checkpoint."""
    import errno

    out = tmp_path / "d"
    full = os.strerror(errno.ENOSPC)

    def fails(error):
        def run(config, out, on_checkpoint, **_kwargs):
            Path(out).mkdir(exist_ok=True)
            (Path(out) / "checkpoint.pt").write_bytes(b"x")
            on_checkpoint(Path(out) / "checkpoint.pt")
            raise error
        return run

    copied = OSError(errno.ENOSPC, full, "/tmp/edgekd-export-1/student-fp32.onnx", None, str(out / ".final" / "s.onnx"))
    monkeypatch.setattr("edgekd.pipeline.run_distill", fails(copied))
    code, _, err = run_cli("distill", "--out", out)
    assert code == 2 and err.strip() == (f"error: {full}: {out / '.final' / 's.onnx'}; check free space and "
                                         f"permissions there; {out / 'checkpoint.pt'} holds the last finished epoch; "
                                         "run the same command with --resume to continue")
    monkeypatch.setattr("edgekd.pipeline.run_distill", fails(OSError(errno.ENOSPC, full)))
    code, _, err = run_cli("distill", "--out", out, "--resume")
    assert code == 2 and err.strip().startswith(f"error: {full} writing to {out}/; check free space")


def test_interrupted_calibration_says_it_resumes(run_cli, fast_profile_path, monkeypatch):
    from edgekd.latency.table import table_path
    from edgekd.profiles import load_profile

    partial = table_path(load_profile(fast_profile_path), "mbv2", (1, 32, 32), 10)  # the command's defaults
    partial = partial.with_name(partial.name + ".partial")

    def measured_a_chunk(*_args, **_kwargs):
        partial.write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr("edgekd.latency.calibrate.calibrate", measured_a_chunk)
    try:
        code, _, err = run_cli("profiles", "calibrate", fast_profile_path)
    finally:
        partial.unlink(missing_ok=True)
    assert code == 130 and f"the blocks measured so far are kept in {partial}; run the same command again" in err


@pytest.mark.parametrize("command", ["compress", "search", "distill"])
@pytest.mark.parametrize("seed", ["-1", str(2 ** 63)])
def test_a_seed_no_generator_takes_is_refused_in_one_line(run_cli, tmp_path, command, seed):
    """numpy refused --seed -1 with a traceback, after the output folder was checked."""
    line = _one_line_error(*run_cli(command, "--seed", seed, "--out", tmp_path / "o")[::2])
    assert line == f"error: seed {seed} is not a whole number from 0 to {2 ** 63 - 1}; pass e.g. --seed 0 (seed = 0 " \
                   "in a settings file)"
    assert not (tmp_path / "o").exists()


def test_a_gate_settings_file_s_seed_is_checked_too(run_cli, tmp_path):
    from conftest import foreign_onnx

    model = foreign_onnx(tmp_path / "m.onnx", (1, 16, 16), 10)
    (tmp_path / "pyproject.toml").write_text('[tool.edgekd.gate]\nseed = -3\nmin-accuracy = 0.5\ndata = "digits"\n'
                                             'resolution = 16\n')
    line = _one_line_error(*run_cli("gate", model, "--config", tmp_path / "pyproject.toml")[::2])
    assert line.startswith("error: seed -3 is not a whole number")


def test_sigterm_unwinds_like_ctrl_c_and_leaves_no_staging_folder(run_cli, teacher_files, fast_profile_path,
                                                                   tmp_path, monkeypatch):
    """A cancelled CI job gets SIGTERM; Python's default ended the process on the spot, leaving the hidden
    staging folder of a half-exported run beside --out."""
    import os
    import signal
    import time
    import types

    import edgekd.pipeline

    monkeypatch.setattr(edgekd.pipeline, "search_and_distill",
                        lambda *args, **kwargs: (None, types.SimpleNamespace(model=None)))

    def export(config, teacher, teacher_art, model, data, staging, log, profile):
        (staging / "student-fp32.onnx").write_bytes(b"half an export")
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, before):  # would end pytest itself
            raise AssertionError("the CLI installed no SIGTERM handler")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the run")

    monkeypatch.setattr(edgekd.pipeline, "export_models", export)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run_cli(*_base(teacher_files, fast_profile_path, tmp_path / "o"))
    assert code == 143 and "interrupted: nothing was written to" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither o/ nor .o.staging-*
    assert signal.getsignal(signal.SIGTERM) is before  # a Python caller's handler is its own again


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interruption_during_the_student_export_stops_the_run_and_keeps_the_last_results(
        run_cli, teacher_files, fast_profile_path, tmp_path, monkeypatch, signame, code):
    """A Ctrl-C or SIGTERM landing in one of the weakref callbacks torch.export runs was swallowed by CPython, its
    message hidden by quiet(): the run finished, exited 0 and, with --force, replaced the last results."""
    import signal
    import types
    import weakref

    import edgekd.pipeline
    from edgekd.quiet import TORCH_EXPORT, quiet

    signum = getattr(signal, signame)
    monkeypatch.setattr(edgekd.pipeline, "search_and_distill",
                        lambda *args, **kwargs: (None, types.SimpleNamespace(model=None)))

    class Traced:
        pass

    def export(config, teacher, teacher_art, model, data, staging, log, profile):
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, before):  # would end pytest itself
            raise AssertionError("the CLI installed no SIGTERM handler")
        with quiet(*TORCH_EXPORT, stderr=True):  # as exporters/onnx_fp32.py calls torch.onnx.export
            traced = Traced()
            ref = weakref.ref(traced, lambda _ref: signal.raise_signal(signum))  # its handler raises in there
            del traced
            (staging / "student-fp32.onnx").write_bytes(b"the export went on")
        assert ref() is None
        raise AssertionError(f"{signame} was swallowed: the run went on")

    monkeypatch.setattr(edgekd.pipeline, "export_models", export)
    before = signal.getsignal(signal.SIGTERM)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "manifest.json").write_text("the last run's")
    # Python's own Ctrl-C handler, as an interactive shell leaves it: a test run started in the background (`make
    # test &`) inherits SIGINT ignored, and the signal then never reached the export at all
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        got, _, err = run_cli(*_base(teacher_files, fast_profile_path, tmp_path / "o"), "--force")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert got == code and err.strip().startswith("interrupted: nothing was written to") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no .o.staging-* left beside it
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["manifest.json"]
    assert (tmp_path / "o" / "manifest.json").read_text() == "the last run's"


def test_a_second_ctrl_c_after_the_interrupted_line_is_ignored_until_the_process_exits(run_cli, tmp_path,
                                                                                      monkeypatch):
    """Users press Ctrl-C twice: the second landed in torch's exit-time finalizers and printed their traceback
    after the one-line message."""
    import atexit
    import signal

    at_exit, handler_at_exit = [], []
    monkeypatch.setattr(atexit, "register", at_exit.append)
    monkeypatch.setattr(atexit, "unregister", lambda fn: None)
    real_exit = sys.exit

    def exit_(code=0):
        handler_at_exit.append(signal.getsignal(signal.SIGINT))
        real_exit(code)

    monkeypatch.setattr(sys, "exit", exit_)
    monkeypatch.setattr("edgekd.pipeline.compress", _interrupt)
    before = signal.getsignal(signal.SIGINT)
    code, _, _ = run_cli("compress", "--out", tmp_path / "o")
    assert code == 130 and handler_at_exit == [signal.SIG_IGN]
    assert signal.getsignal(signal.SIGINT) is before  # an in-process caller gets its own handler back
    try:
        assert len(at_exit) == 1
        at_exit[0]()  # and the interpreter's exit, torch's finalizers among it, ignores it again
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_second_ctrl_c_while_the_interrupted_line_is_made_does_not_cut_it_off(run_cli, tmp_path, monkeypatch):
    """The line reads the disk to say what the run left; Ctrl-C was ignored only once it was said, and a second
    one while it was made left a traceback and no word of where the earlier run was."""
    import signal

    while_made = []

    def made():
        while_made.append(signal.getsignal(signal.SIGINT))  # what a second Ctrl-C now would meet
        return "interrupted: what the disk holds"

    monkeypatch.setattr("edgekd.pipeline.compress", _interrupt)
    monkeypatch.setattr("edgekd.cli.interrupted_message", made)
    before = signal.getsignal(signal.SIGINT)
    try:
        code, _, err = run_cli("compress", "--out", tmp_path / "o")
    finally:
        signal.signal(signal.SIGINT, before)
    assert code == 130 and err.strip() == "interrupted: what the disk holds" and while_made == [signal.SIG_IGN]


def test_calibrating_a_space_without_a_table_is_refused_in_one_line(run_cli, fast_profile_path):
    line = _one_line_error(*run_cli("profiles", "calibrate", fast_profile_path, "--space", "pruned")[::2])
    assert "the 'pruned' space has no latency table to calibrate" in line
    offered = line.split("calibrate one of: ")[1].split(", ")  # other tests may have registered spaces of their own
    assert {"mbv2", "resnet"} <= set(offered) and "pruned" not in offered


@pytest.mark.parametrize(("args", "expected"), [
    (["--prune-steps", "3"], "--prune-steps only applies to pruning, and nothing is pruned without --target-ms"),
    (["--prune-importance", "l1", "--prune-round-to", "8"],
     "--prune-importance, --prune-round-to only apply to pruning, and nothing is pruned without --target-ms"),
    (["--target-ms", "0.1", "--prune-steps", "0"], "--prune-steps must be at least 1, got 0"),
    (["--target-ms", "0.1", "--prune-round-to", "0"], "--prune-round-to must be a positive channel count, got 0"),
    (["--target-ms", "0.1", "--prune-round-to", "-4"], "--prune-round-to must be a positive channel count, got -4"),
])
def test_pruning_settings_that_would_do_nothing_or_make_no_sense_are_refused(run_cli, tmp_path, args, expected):
    line = _one_line_error(*run_cli("compress", *args, "--out", tmp_path / "o")[::2])
    assert expected in line and not (tmp_path / "o").exists()


@pytest.mark.parametrize("classes", ["0", "-3"])
def test_calibrating_for_no_classes_is_refused_in_one_line(run_cli, fast_profile_path, classes):
    line = _one_line_error(*run_cli("profiles", "calibrate", fast_profile_path, "--classes", classes)[::2])
    assert f"--classes {classes} is not a number of classes" in line and "e.g. --classes 10" in line


def test_a_later_command_does_not_inherit_an_earlier_ones_interruption_line(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr("edgekd.pipeline.compress", _interrupt)
    run_cli("compress", "--out", tmp_path / "o")
    monkeypatch.setattr("edgekd.validate.artifact_from_file", _interrupt)
    code, _, err = run_cli("validate", tmp_path / "m.onnx")
    assert code == 130 and err.strip() == "interrupted: nothing was written"


@pytest.mark.parametrize("command", ["compress", "search", "distill"])
def test_weights_without_a_teacher_are_refused_not_dropped(run_cli, tmp_path, command):
    weights = tmp_path / "teacher.pt"
    weights.write_bytes(b"weights")
    line = _one_line_error(*run_cli(command, "--weights", weights, "--out", tmp_path / "o")[::2])
    assert "--weights is given without --teacher" in line and "pass --teacher" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command, args, message", [
    ("search", ["--data", ""], "--data is empty; pass a .npz file, an image folder, or 'digits'"),
    ("search", ["--resolution", "100000"], "--resolution 100000 is too large: edgekd trains at most 4096 pixels"),
    ("search", ["--resolution", "1"], "--resolution 1 is too small; pass 4 or more for each side"),
    ("distill", ["--losses", "hint:1", "--hint-student", "layer3"], "--hint-student is given without --hint-teacher"),
])
def test_stage_commands_refuse_inputs_before_writing_anything(run_cli, tmp_path, command, args, message):
    line = _one_line_error(*run_cli(command, *args, "--out", tmp_path / "o")[::2])
    assert message in line and not (tmp_path / "o").exists()


def test_recipe_types_are_checked_even_where_the_key_is_for_training(run_cli, tmp_path):
    recipe = tmp_path / "recipe.toml"
    for text, said in (('epochs = "3"', 'epochs = "3" is a string, not a whole number'),
                       ("epochs = 1.5", "epochs = 1.5 is a float, not a whole number")):
        recipe.write_text(text)
        for command in ("search", "distill"):
            line = _one_line_error(*run_cli(command, "--config", recipe, "--out", tmp_path / "o")[::2])
            assert f"recipe '{recipe}': {said}; write e.g. epochs = 40" in line
    line = _one_line_error(*run_cli("search", "--config", tmp_path, "--out", tmp_path / "o.json")[::2])
    assert f"recipe '{tmp_path}' is a folder, not a file" in line and "TOML syntax" not in line


def test_validate_refuses_bad_pixels_and_an_input_too_large_to_allocate(run_cli, tmp_path):
    model = foreign_onnx(tmp_path / "m.onnx", (1, 16, 16), 3)
    line = _one_line_error(*run_cli("validate", model, "--input-shape", "1,1,100000,100000")[::2])
    assert "--input-shape 1,1,100000,100000 is 10,000,000,000 values (37.3 GiB as float32)" in line
    x = np.random.default_rng(0).random((30, 1, 16, 16), dtype=np.float32)
    x[5, 0, 3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(30) % 3)
    line = _one_line_error(*run_cli("validate", model, "--data", tmp_path / "nan.npz")[::2])
    assert "nan.npz: x holds 1 NaN value (of 7,680)" in line


def test_bench_header_says_its_ratio_is_a_speedup_over_the_first_model(run_cli, tmp_path, monkeypatch):
    """The ratio is the first model's p50 over this one's: a model 20 times slower shows 0.05x, which under a
    bare "vs first" read as 5% of the time."""
    from edgekd.latency import cache
    from edgekd.types import LatencyStats

    def stats(p50):
        return LatencyStats(p50, p50, p50, p50, 0.0, 10, 5, repeat_p50_ms=(p50,) * 5)

    monkeypatch.setattr(cache, "measure_cached", lambda paths, *a, **k: ([stats(1.0), stats(20.0)], False))
    fast, slow = (foreign_onnx(tmp_path / f"{name}.onnx", (1, 16, 16), 10) for name in ("fast", "slow"))
    code, out, err = run_cli("bench", fast, "--vs", slow, "--input-shape", "1,1,16,16")
    assert code == 0, err
    assert "| cv | speedup vs first | 95% interval |" in out
    row = next(line for line in out.splitlines() if "slow.onnx" in line)
    assert "| 0.05x |" in row


def _relu_at(path: Path, dims: list) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("x", "y"))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_bench_and_validate_say_the_batch_each_model_ran_at(run_cli, fast_profile_path, tmp_path):
    """A profile's batch_size 8 was silently ignored for a model fixed at batch 1: bench set it beside a
    dynamic one timed at 8 as "0.54x" without a word, and validate's line named no batch at all."""
    board = tmp_path / "b8.toml"
    board.write_text(Path(fast_profile_path).read_text().replace('name = "fast-test"', 'name = "b8"')
                     .replace("[measure]", "[measure]\nbatch_size = 8"))
    one, free = _relu_at(tmp_path / "one.onnx", [1, 3]), _relu_at(tmp_path / "free.onnx", ["n", 3])
    code, out, err = run_cli("bench", one, "--vs", free, "--profile", board, "--no-cache")
    assert code == 0, err
    assert "| model | batch | p50 (ms) |" in out
    assert next(line for line in out.splitlines() if "one.onnx" in line).startswith(f"| {one} | 1 |")
    assert next(line for line in out.splitlines() if "free.onnx" in line).startswith(f"| {free} | 8 |")
    assert f"warning: the models ran at different batches ({one} at 1, {free} at 8)" in err
    assert "profile's measure.batch_size (8)" in err and "--input-shape" in err
    code, out, err = run_cli("bench", one, "--vs", free, "--profile", board, "--input-shape", "1,3", "--no-cache")
    assert code == 0 and "different batches" not in err, err
    code, out, err = run_cli("validate", one, "--profile", board)
    assert "latency on b8 at batch 1: p50" in out, out + err
    assert "note: the model's batch is fixed at 1, so it ran at that batch, not at the profile's " \
           "measure.batch_size (8)" in out
    code, out, err = run_cli("validate", free, "--profile", board)
    assert "latency on b8 at batch 8: p50" in out and "is fixed at" not in out, out + err


def _csv_listing(root: Path) -> tuple[Path, Path]:
    """(lists/data.csv, imgs/): a CSV in one folder listing images in another, as Kaggle datasets come."""
    from PIL import Image

    imgs, lists = root / "imgs", root / "lists"
    imgs.mkdir()
    lists.mkdir()
    rows = ["path,label"]
    for i in range(4):
        Image.fromarray(np.full((6, 6), 60 * (i % 2), dtype=np.uint8)).save(imgs / f"{i}.png")
        rows.append(f"../imgs/{i}.png,{i % 2}")
    (lists / "data.csv").write_text("\n".join(rows) + "\n")
    return lists / "data.csv", imgs


@pytest.mark.parametrize("command, out", [("compress", "imgs"), ("distill", "imgs"),
                                          ("search", "imgs/0.png")])
def test_force_never_replaces_the_images_a_csv_lists(run_cli, tmp_path, command, out):
    """--data lists/data.csv --out imgs --force replaced imgs/ whole: the CSV was the only input known, and the
    images it lists were deleted with the folder."""
    data, imgs = _csv_listing(tmp_path)
    before = sorted(p.name for p in imgs.iterdir())
    line = _one_line_error(*run_cli(command, "--data", data, "--out", tmp_path / out, "--force")[::2])
    assert "input" in line and str(imgs.resolve()) in line, line
    assert sorted(p.name for p in imgs.iterdir()) == before


@pytest.mark.parametrize("command", ["validate", "gate"])
def test_a_json_report_never_replaces_an_image_a_csv_lists(run_cli, tmp_path, command):
    data, imgs = _csv_listing(tmp_path)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not an onnx model")
    kept = (imgs / "0.png").read_bytes()
    args = ["--min-accuracy", "0.5"] if command == "gate" else []
    line = _one_line_error(*run_cli(command, model, "--data", data, *args, "--json", imgs / "0.png", "--force")[::2])
    assert f"is inside '{imgs.resolve()}', an input folder" in line
    assert (imgs / "0.png").read_bytes() == kept


def test_quiet_hides_stage_messages_but_never_warnings(run_cli, tmp_path):
    """-q made the log a no-op, warnings with it: a result to doubt came with no word of why."""
    data, imgs = _csv_listing(tmp_path)
    data.write_text(data.read_text() + "../imgs/0.png,0\n")  # a repeated row: read once, with a warning
    # a teacher refused once it is imported, after the data: a missing file is refused before the data loads
    (tmp_path / "nope.py").write_text("")
    (tmp_path / "w.pt").write_bytes(b"")
    args = ["search", "--data", data, "--teacher", f"{tmp_path / 'nope.py'}:build", "--weights", tmp_path / "w.pt",
            "--out", tmp_path / "s.json"]
    for quiet in ([], ["-q"]):
        code, _, err = run_cli(*args, *quiet)
        lines = err.strip().splitlines()
        assert code == 2 and lines[-1].startswith("error: ") and "nope.py" in lines[-1], err
        assert any(line.startswith("[edgekd] warning: ") and "repeat an image" in line for line in lines), err
        assert any(line.startswith("[edgekd] data: ") for line in lines) == (not quiet), err
    code, out, _ = run_cli("compress", "--help")
    assert "warnings are still printed" in " ".join(out.split())


@pytest.mark.parametrize("command", ["compress", "distill"])
def test_a_missing_search_file_is_refused_before_the_data_and_teacher_load(run_cli, tmp_path, monkeypatch, command):
    import edgekd.pipeline

    for module in (edgekd.pipeline, edgekd.pipeline.stages):
        monkeypatch.setattr(module, "run_data", lambda *a, **k: pytest.fail("loaded the data first"))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f"search = '{tmp_path / 'nope.json'}'\n")
    for args in (["--search", tmp_path / "nope.json"], ["--config", recipe]):
        line = _one_line_error(*run_cli(command, *args, "--data", tmp_path / "no-data", "--out", tmp_path / "o")[::2])
        assert f"search file '{tmp_path / 'nope.json'}' does not exist" in line, line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, said", [
    (["compress", "--epochs", "1.5"], "error: Invalid value for '--epochs': '1.5' is not a valid integer; try "
                                      "'edgekd compress --help' for help"),
    (["compress", "--channels", "2"], "error: Invalid value for '--channels': '2' is not one of '1', '3'; try "
                                      "'edgekd compress --help' for help"),
    (["nope"], "error: No such command 'nope'; try 'edgekd --help' for help"),
    (["validate"], "error: Missing argument 'MODEL'; try 'edgekd validate --help' for help"),
])
def test_click_s_own_usage_errors_are_one_line_too(run_cli, args, said):
    """click printed four lines (Usage, Try, a blank, Error) where every other error is one."""
    assert _one_line_error(*run_cli(*args)[::2]) == said


def test_help_and_the_bare_command_still_show_help(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0 and "Commands:" in out
    code, _, err = run_cli()
    assert code == 2 and "Commands:" in err
    code, out, _ = run_cli("profiles", "--help")
    assert code == 0 and "calibrate" in out.split("Commands:")[0]


@pytest.mark.parametrize("args", [["--losses", ""], ["--losses", " , "], ["--config", "RECIPE"]])
def test_empty_losses_are_refused_not_read_as_kd(run_cli, tmp_path, args):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("losses = {}\n")
    args = [str(recipe) if a == "RECIPE" else a for a in args]
    line = _one_line_error(*run_cli("distill", *args, "--out", tmp_path / "o")[::2])
    assert "losses is empty" in line and not (tmp_path / "o").exists()
    assert (f"error: recipe '{recipe}': losses = " in line) == (args[0] == "--config")  # a recipe's, named so


def test_an_output_beside_the_images_a_csv_lists_is_allowed(tmp_path, monkeypatch):
    """A CSV kept beside its images (ds/labels.csv, ds/a.png): `compress --data labels.csv` run there was refused,
    its default output folder being "inside an input folder", as if the images were class folders."""
    from edgekd.errors import OutputError
    from edgekd.fsutil import check_new_output
    from edgekd.image_list import listed_folders

    data, imgs = _csv_listing(tmp_path)
    inputs = [data, *listed_folders(data)]
    for out in (imgs / "edgekd-out", imgs / "r.json"):
        check_new_output(out, False, inputs)
    (imgs / "edgekd-out").mkdir()
    check_new_output(imgs / "edgekd-out", True, inputs)  # an earlier run's output, replaced with --force
    for out in (imgs, imgs.parent, imgs / "0.png"):
        with pytest.raises(OutputError, match="an input"):
            check_new_output(out, True, inputs)


def test_a_usage_error_is_one_line_on_a_click_without_no_args_is_help_error(run_cli, monkeypatch):
    """click 8.1 (which pyproject allows) has no NoArgsIsHelpError: naming it in an except clause turned every
    usage error into an AttributeError traceback."""
    import edgekd.cli

    monkeypatch.setattr(edgekd.cli, "_NO_ARGS", ())
    code, _, err = run_cli("compress", "--epochs", "1.5")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def _captured_compress(monkeypatch) -> list:
    """The CompressConfig compress would run, the run itself stopped (exit 130) before any work."""
    seen = []

    def stop(config, **_kwargs):
        seen.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr("edgekd.pipeline.compress", stop)
    return seen


def test_a_recipe_s_ort_is_overridden_either_way_on_the_command_line(run_cli, tmp_path, monkeypatch):
    """--ort had no --no-ort, so a recipe's ort = true could not be turned off for one run."""
    seen = _captured_compress(monkeypatch)
    for value, flag, wanted in (("true", "--no-ort", False), ("false", "--ort", True), ("true", None, True)):
        (tmp_path / "r.toml").write_text(f"ort = {value}\n")
        code, _, _ = run_cli("compress", "--config", tmp_path / "r.toml", *([flag] if flag else []),
                             "--out", tmp_path / "o")
        assert code == 130 and seen.pop().ort is wanted


def test_a_recipe_s_training_keys_with_distilled_are_said_to_be_passed_over(run_cli, tmp_path, monkeypatch):
    """Refused as flags, they went unread from a recipe without a word, a seed among them though it picks
    the split the shipped student is scored on."""
    seen = _captured_compress(monkeypatch)
    (tmp_path / "r.toml").write_text(f'distilled = "{tmp_path / "d1"}"\nseed = 5\nepochs = 7\nprofile = '
                                     '"host-cpu-1t"\n')
    code, _, err = run_cli("compress", "--config", tmp_path / "r.toml", "--out", tmp_path / "o")
    assert code == 130 and seen
    assert (f"the recipe's epochs, seed do not apply with distilled: the student was trained with those in "
            f"{tmp_path / 'd1' / 'distill.json'}") in err
    assert "profile" not in err


def test_search_table_says_when_the_size_correction_passed_a_candidate_over(run_cli, monkeypatch, tmp_path):
    """Rank 1, estimated 57.4 KB under --max-size-kb 60, was passed over with an empty cell: its space's written
    files (with --ort, its ORT-format copies) had come out 1.5x their estimates. search --ort reaches the search."""
    import edgekd.pipeline
    from edgekd.types.search import Candidate, SearchResult, StudentSpec

    def cand(stem, size, file_bytes=None):
        return Candidate(StudentSpec("mbv2", {"stem": stem}), params=1000 * stem, size_bytes=size,
                         score=float(stem), latency_ms=0.01, file_bytes=file_bytes)

    ranked = (cand(16, 58_778), cand(12, 39_526, 59_700), cand(8, 24_064))
    result = SearchResult(chosen=ranked[1], candidates=ranked, proxy="params", evaluated=3, measured=3, seconds=1.0,
                          sized_with_ort=True, size_scale={"mbv2": 1.51})
    seen = []
    monkeypatch.setattr(edgekd.pipeline, "run_search", lambda config, *args, **kwargs: seen.append(config) or result)
    code, out, err = run_cli("search", "--max-size-kb", "60", "--ort", "--out", tmp_path / "s.json")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| ") and "mbv2" in line]
    assert [row.split(" | ")[6] for row in rows] == ["expected over --max-size-kb after correction (x1.51)", "chosen",
                                                     ""]
    assert seen[0].ort is True and seen[0].search_config().ort is True
