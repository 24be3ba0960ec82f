"""benchmarks/distill_augment.py: reusing distill_selection's runs, the paired summary and its table."""

import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("distill_augment")


def _selection_record(cpu, epochs=40, teacher=0.9916):
    rows = [{"student": "demo", "seed": s, "params": 1000, "best": {"test": 0.98, "epoch": 20, "seconds": 100.0},
             "near-best": {"test": 0.99, "epoch": 40, "seconds": 100.0}} for s in (1, 2)]
    return {"teacher_test": teacher, "rows": rows, "meta": {"epochs": epochs, "cpu": cpu}}


def test_the_baseline_takes_the_best_rule_runs_of_the_same_setting(bench, tmp_path):
    path = tmp_path / "selection.json"
    path.write_text(json.dumps(_selection_record(bench._cpu())))
    runs = bench.baseline_runs(path, ["demo"], [1, 2], 40, 0.9916)
    assert runs[("demo", 1)]["test"] == 0.98 and runs[("demo", 2)]["params"] == 1000
    with pytest.raises(SystemExit, match="no run for demo seed 3"):
        bench.baseline_runs(path, ["demo"], [1, 3], 40, 0.9916)
    with pytest.raises(SystemExit, match="run without --baseline"):
        bench.baseline_runs(path, ["demo"], [1], 12, 0.9916)
    with pytest.raises(SystemExit, match="a teacher at 0.9916"):
        bench.baseline_runs(path, ["demo"], [1], 40, 0.9889)
    path.write_text(json.dumps(_selection_record("another cpu")))
    with pytest.raises(SystemExit, match="was run on another cpu"):
        bench.baseline_runs(path, ["demo"], [1], 40, 0.9916)


def test_the_summary_pairs_the_settings_by_seed(bench):
    def row(seed, plain, augment):
        return {"student": "demo", "seed": seed, "params": 1000,
                "plain": {"test": plain, "epoch": 20, "seconds": 100.0},
                "augment": {"test": augment, "epoch": 30, "seconds": 140.0}}

    rows = [row(1, 0.980, 0.990), row(2, 0.981, 0.981)]
    summary = bench.summarise(rows, teacher_acc=0.9916)
    assert summary["demo"]["diff_points"]["mean"] == pytest.approx(0.5)
    assert summary["demo"]["plain"]["within_1pt_of_teacher"] == 0
    assert summary["demo"]["augment"]["within_1pt_of_teacher"] == 1
    record = {"teacher_test": 0.9916, "rows": rows, "summary": summary,
              "meta": {"date": "2026-12-05", "cpu": "test cpu", "seeds": [1, 2], "epochs": 40, "recipe": "kd",
                       "baseline": "benchmarks/results/distill_selection.json", "test_images": 359}}
    table = bench.markdown(record)
    assert "| demo | 1,000 | 98.05 ± 0.05 | 98.55 ± 0.45 | +0.50 ± 0.50 | 100 / 140 | 0 / 1 of 2 |" in table
    assert "`distill_selection.json`'s *best* runs" in table and "| demo | 2 | 98.10 | 98.10 |" in table
