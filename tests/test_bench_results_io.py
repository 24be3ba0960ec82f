"""benchmarks/results_io.py: every benchmark leaves STEM.json and STEM.md side by side."""

import json


def test_write_results_makes_the_folder_and_both_files(load_benchmark, tmp_path, capsys):
    io = load_benchmark("results_io")
    io.write_results(tmp_path / "new" / "study", {"a": 1}, "| a |\n")
    assert json.loads((tmp_path / "new" / "study.json").read_text()) == {"a": 1}
    assert (tmp_path / "new" / "study.md").read_text() == "| a |\n" and "| a |" in capsys.readouterr().out
