"""benchmarks/distill_selection.py: the paired summary of the two keep rules and its table."""

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("distill_selection")


def _row(student, seed, best, near, epochs=(17, 40)):
    return {"student": student, "seed": seed, "params": 1000, "val_by_epoch": [1.0] * 40,
            "best": {"test": best, "epoch": epochs[0], "val": 1.0, "seconds": 1.0},
            "near-best": {"test": near, "epoch": epochs[1], "val": 0.99, "seconds": 1.0}}


def test_the_summary_pairs_the_rules_by_seed_and_counts_seeds_near_the_teacher(bench):
    rows = [_row("demo", 1, 0.980, 0.990), _row("demo", 2, 0.981, 0.981), _row("small", 1, 0.970, 0.980)]
    summary = bench.summarise(rows, teacher_acc=0.9916)
    demo = summary["demo"]
    assert demo["diff_points"]["mean"] == pytest.approx(0.5) and demo["diff_points"]["n"] == 2
    assert demo["diff_points"]["se"] == pytest.approx(0.5)  # differences 1.0 and 0.0 points
    assert demo["best"]["within_1pt_of_teacher"] == 0 and demo["near-best"]["within_1pt_of_teacher"] == 1
    assert demo["near-best"]["epoch_median"] == 40
    assert summary["all"]["diff_points"]["n"] == 3 and summary["all"]["diff_points"]["mean"] == pytest.approx(2 / 3)
    record = {"teacher_test": 0.9916, "rows": rows, "summary": summary,
              "meta": {"date": "2026-12-05", "cpu": "test cpu", "seeds": [1, 2], "epochs": 40, "recipe": "kd",
                       "validation_images": 179, "test_images": 359}}
    table = bench.markdown(record)
    assert "| demo | 1,000 | 98.05 ± 0.05 | 17 | 98.55 ± 0.45 | 40 | +0.50 ± 0.50 | 0 / 1 of 2 |" in table
    assert "All 3 (student, seed) pairs: near-best - best = +0.67" in table
    assert "| small | 1 | 17, 97.00 | 40, 98.00 |" in table
