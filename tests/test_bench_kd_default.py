"""benchmarks/kd_default.py: the paired differences, the preregistered rule and the table."""

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("kd_default")


def _arms(bench, kd, alpha, none):
    arms = {"kd": {"runs": kd}, "kd alpha 0.5": {"runs": alpha}, "none": {"runs": none}}
    for arm in arms.values():
        arm["mean"], arm["std"] = sum(arm["runs"]) / len(arm["runs"]), 0.0
    for name in ("kd alpha 0.5", "none"):
        arms[name]["minus_kd"] = bench._paired(arms[name]["runs"], kd)
    return {"arms": arms}


def test_paired_differences_are_in_points_with_their_standard_error(bench):
    d = bench._paired([0.98, 0.99, 0.97], [0.97, 0.97, 0.97])
    assert d["runs"] == pytest.approx([1.0, 2.0, 0.0]) and d["mean"] == pytest.approx(1.0)
    assert d["se"] == pytest.approx(1.0 / 3 ** 0.5)


@pytest.mark.parametrize("alpha, none, few_alpha, expect", [
    # alpha 0.5 wins by 0.5 points on every seed and keeps the few-labels figure: rule 1 holds
    ([0.985, 0.975, 0.985], [0.98, 0.97, 0.98], [0.98, 0.97, 0.98], ("holds", "does not hold")),
    # the same win, but 1 point lost with 10% of the labels: the default stays
    ([0.985, 0.975, 0.985], [0.98, 0.97, 0.98], [0.97, 0.96, 0.97], ("does not hold", "does not hold")),
    # a half-point mean win inside the noise (differences +2, -1, +0.5 points) is no win; none wins steadily
    ([1.0, 0.96, 0.985], [0.99, 0.98, 0.99], [0.98, 0.97, 0.98], ("does not hold", "holds")),
])
def test_the_rule_needs_a_quarter_point_beyond_two_standard_errors(bench, alpha, none, few_alpha, expect):
    kd = [0.98, 0.97, 0.98]
    results = {"all labels": _arms(bench, kd, alpha, none), "10% of the labels": _arms(bench, kd, few_alpha, kd)}
    rule1, rule2 = bench.verdict(results)
    assert rule1.startswith(f"Rule 1 {expect[0]}") and rule2.startswith(f"Rule 2 {expect[1]}")
    out = {"date": "2026-12-06", "cpu": "test cpu", "seeds": 3, "student": "mbv2:{}", "params": 1234, "epochs": 40,
           "results": results, "verdict": [rule1, rule2]}
    table = bench._markdown(out)
    assert "| all labels | 97.67 ± 0.00 |" in table and f"- {rule1}" in table


def test_a_run_of_some_arms_says_which_rules_it_could_not_decide(bench):
    kd = [0.98, 0.97, 0.98]
    results = {"all labels": _arms(bench, kd, kd, [0.985, 0.975, 0.985])}
    del results["all labels"]["arms"]["kd alpha 0.5"]
    rule1, rule2 = bench.verdict(results)
    assert rule1.startswith("Rule 1 was not run") and rule2.startswith("Rule 2 holds")
    out = {"date": "2026-12-06", "cpu": "test cpu", "seeds": 3, "student": "mbv2:{}", "params": 1234, "epochs": 40,
           "results": results, "verdict": [rule1, rule2]}
    assert "| all labels | 97.67 ± 0.00 | not run | - | 98.17 ± 0.00 | +0.50 ± 0.00 |" in bench._markdown(out)
