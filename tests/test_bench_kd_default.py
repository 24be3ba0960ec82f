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
    rule1, rule2, rule4 = bench.verdict(results)
    assert rule1.startswith(f"Rule 1 {expect[0]}") and rule2.startswith(f"Rule 2 {expect[1]}")
    assert rule4.startswith("Rule 4 does not hold")  # none and kd are level with 10% of the labels
    out = {"date": "2026-12-06", "cpu": "test cpu", "seeds": 3, "student": "mbv2:{}", "params": 1234, "epochs": 40,
           "results": results, "verdict": [rule1, rule2]}
    table = bench._markdown(out)
    assert "| all labels | 97.67 ± 0.00 |" in table and f"- {rule1}" in table


def test_a_run_of_some_arms_says_which_rules_it_could_not_decide(bench):
    kd = [0.98, 0.97, 0.98]
    results = {"all labels": _arms(bench, kd, kd, [0.985, 0.975, 0.985])}
    del results["all labels"]["arms"]["kd alpha 0.5"]
    rule1, rule2, rule4 = bench.verdict(results)
    assert rule1.startswith("Rule 1 was not run") and rule2.startswith("Rule 2 holds")
    assert rule4.startswith("Rule 4 was not run")
    out = {"date": "2026-12-06", "cpu": "test cpu", "seeds": 3, "student": "mbv2:{}", "params": 1234, "epochs": 40,
           "results": results, "verdict": [rule1, rule2]}
    assert "| all labels | 97.67 ± 0.00 | not run | - | 98.17 ± 0.00 | +0.50 ± 0.00 |" in bench._markdown(out)


@pytest.mark.parametrize("alpha, expect", [
    ([0.98, 0.97, 0.98], "does not hold"),  # level with all labels: decided without the 10% setting
    ([0.985, 0.975, 0.985], "was not run"),  # a win with all labels: the 10% setting decides
])
def test_rule_1_is_decided_by_an_all_labels_loss_alone(bench, alpha, expect):
    kd = [0.98, 0.97, 0.98]
    results = {"all labels": _arms(bench, kd, alpha, kd)}
    assert bench.verdict(results)[0].startswith(f"Rule 1 {expect}")


@pytest.mark.parametrize("few_none, expect", [
    ([0.95, 0.94, 0.95], "holds"),  # the teacher 3 points ahead on every seed
    ([0.98, 0.96, 0.985], "does not hold"),  # level on average
])
def test_rule_4_asks_the_teacher_to_win_with_a_tenth_of_the_labels(bench, few_none, expect):
    kd = [0.98, 0.97, 0.98]
    results = {"10% of the labels": _arms(bench, kd, kd, few_none)}
    assert bench.verdict(results)[2].startswith(f"Rule 4 {expect}")


def test_extending_adds_a_setting_and_pairs_new_arms_with_kd_again(bench):
    kd = [0.98, 0.97, 0.98]
    full = _arms(bench, kd, kd, [0.985, 0.975, 0.985])
    del full["arms"]["kd alpha 0.5"]
    before = {"all labels": {"label_share": 1.0, **full}}
    few = _arms(bench, kd, kd, [0.95, 0.94, 0.95])
    del few["arms"]["kd alpha 0.5"]
    merged = bench.merge(before, {"10% of the labels": {"label_share": 0.1, **few}})
    assert list(merged) == ["all labels", "10% of the labels"]
    assert merged["all labels"]["arms"]["none"]["minus_kd"]["mean"] == pytest.approx(0.5)
    assert merged["10% of the labels"]["arms"]["none"]["minus_kd"]["mean"] == pytest.approx(-3.0)
    # kd rerun on all labels: the untouched none arm is paired with the new kd figures
    rerun = bench.merge(merged, {"all labels": {"label_share": 1.0, "arms": {"kd": {"runs": [0.99, 0.98, 0.99],
                                                                                     "mean": 0.9867, "std": 0.0}}}})
    assert rerun["all labels"]["arms"]["none"]["minus_kd"]["mean"] == pytest.approx(-0.5)
    assert before["all labels"]["arms"]["none"]["minus_kd"]["mean"] == pytest.approx(0.5)  # not changed in place


def test_extend_is_refused_without_results_or_with_other_seeds(bench, tmp_path):
    with pytest.raises(SystemExit, match="no results at .*run without --extend first"):
        bench._earlier(tmp_path / "none.json", 10)
    (tmp_path / "r.json").write_text('{"seeds": 10, "student": "mbv2:{}", "results": {}}')
    with pytest.raises(SystemExit, match="has 10 seeds, this run 3; pass --seeds 10"):
        bench._earlier(tmp_path / "r.json", 3)
    assert bench._earlier(tmp_path / "r.json", 10)["seeds"] == 10
