"""benchmarks/results_io.py: every benchmark leaves STEM.json and STEM.md side by side."""

import json

import pytest


def test_write_results_makes_the_folder_and_both_files(load_benchmark, tmp_path, capsys):
    io = load_benchmark("results_io")
    io.write_results(tmp_path / "new" / "study", {"a": 1}, "| a |\n")
    assert json.loads((tmp_path / "new" / "study.json").read_text()) == {"a": 1}
    assert (tmp_path / "new" / "study.md").read_text() == "| a |\n" and "| a |" in capsys.readouterr().out


def test_earlier_results_are_replaced_only_with_force_and_a_dot_in_the_name_is_kept(load_benchmark, tmp_path,
                                                                                    capsys):
    io = load_benchmark("results_io")
    stem = tmp_path / "export_matrix_ort1.32"
    io.write_results(stem, {"a": 1}, "| a |\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export_matrix_ort1.32.json", "export_matrix_ort1.32.md"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        io.write_results(stem, {"a": 2}, "| b |\n")
    assert stop.value.code == 2
    assert capsys.readouterr().err == (f"error: {stem}.json holds earlier results; pass --force to replace them, "
                                       "or --out elsewhere\n")
    assert json.loads((tmp_path / "export_matrix_ort1.32.json").read_text()) == {"a": 1}
    io.write_results(stem, {"a": 2}, "| b |\n", force=True)
    assert json.loads((tmp_path / "export_matrix_ort1.32.json").read_text()) == {"a": 2}


# Each script is refused before its run starts, so nothing is measured or trained here. The scripts that wrote
# by hand (the first three had no --out at all) go through the same check.
@pytest.mark.parametrize("script", ["gate_stability", "pipeline_digits", "export_matrix", "latency_predictor",
                                    "calibration_rounds", "distill_augment", "distill_methods", "distill_selection",
                                    "kd_default", "latency_fit_cv", "latency_units", "runtime_compat",
                                    "search_quality", "search_repeat", "search_truth", "size_estimate"])
def test_every_script_refuses_to_replace_earlier_results_without_force(load_benchmark, tmp_path, monkeypatch,
                                                                       capsys, script):
    import sys

    module = load_benchmark(script)
    (tmp_path / "earlier.md").write_text("| recorded |\n")
    argv = ["--out", str(tmp_path / "earlier")] + (["--source", "unused.json"] if script == "calibration_rounds"
                                                   else [])
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    with pytest.raises(SystemExit) as stop:
        module.main(*([argv] if script in ("runtime_compat", "size_estimate") else []))
    assert stop.value.code == 2 and "holds earlier results; pass --force" in capsys.readouterr().err
    assert (tmp_path / "earlier.md").read_text() == "| recorded |\n" and not (tmp_path / "earlier.json").exists()
