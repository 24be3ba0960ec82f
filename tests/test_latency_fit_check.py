"""A calibrated table's cross-validated accuracy on its own calibration networks."""

import numpy as np
import pytest

from edgekd.latency.calibrate import block_key, sample_specs
from edgekd.latency.fit_check import FitAccuracy, cross_validate, networks_needed, not_cross_validated, trust
from edgekd.latency.network_fit import feature_names, network_features, resolution_levels
from edgekd.latency.table import LatencyTable, Stamp
from edgekd.search.spaces import MobileNetV2Space
from edgekd.types import StudentSpec

SHAPE = (1, 16, 16)
SPACE = MobileNetV2Space(name="mbv2", stems=(8, 12), widths=((8, 12), (8, 12, 16), (12, 16)), depths=(1, 2),
                         expands=(2, 4), kernels=(3, 5))


def _table(n, noise=None, scramble=False):
    """A table whose networks cost exactly a linear function of their features (``noise``: {index: factor};
    ``scramble``: the costs shuffled between networks, which no fit explains)."""
    rng = np.random.default_rng(0)
    keys = SPACE.all_blocks(SHAPE, 10)
    entries = {p: {block_key(k): float(rng.uniform(0.05, 0.5)) for k in keys} for p in ("fp32", "int8")}
    levels = resolution_levels(SPACE, SHAPE, 10)
    truth = np.array([0.5, 0.7, 1.2, 1.1, 1.05, 0.02, 0.01, 0.3])[:len(feature_names(levels))]
    specs = sample_specs(SPACE, n, 3)
    networks = {"keys": [s.key() for s in specs]}
    for p in ("fp32", "int8"):
        y = np.array([np.dot(truth, network_features(SPACE, entries[p], s, SHAPE, 10, levels)) for s in specs])
        for i, factor in (noise or {}).items():
            y[i] *= factor
        if scramble:
            y = np.random.default_rng(1).permutation(y)
        networks[p] = y.tolist()
    stamp = Stamp("host-cpu-1t", "d", "1.0", "mbv2", SHAPE, 10)
    return LatencyTable(stamp, entries, {"fp32": [], "int8": []}, n, 1.0, 0.1, networks)


def test_networks_that_follow_the_fit_are_all_predicted_when_left_out():
    found = cross_validate(_table(48), SPACE)
    assert [a.precision for a in found] == ["fp32", "int8"]
    assert all(a.networks == 48 and a.folds == 8 and a.within_10pct == 1.0 for a in found)
    assert all(a.median_abs_err_pct == pytest.approx(0.0, abs=1e-6) for a in found)


def test_a_network_measured_in_a_busy_stretch_is_the_one_missed():
    fp32, _int8 = cross_validate(_table(48, noise={5: 1.5}), SPACE)
    assert fp32.within_10pct == pytest.approx(47 / 48)  # the outlier is dropped from the fits that include it


def test_each_network_is_judged_by_a_fit_made_without_it():
    from edgekd.latency.network_fit import fit_relative

    table = _table(48, scramble=True)
    levels = resolution_levels(SPACE, SHAPE, 10)
    specs = [StudentSpec.from_key(k) for k in table.networks["keys"]]
    rows = np.array([network_features(SPACE, table.entries["fp32"], s, SHAPE, 10, levels) for s in specs])
    y = np.array(table.networks["fp32"])
    in_sample = np.median(np.abs(rows @ fit_relative(rows, y) - y) / y) * 100
    assert cross_validate(table, SPACE)[0].median_abs_err_pct > in_sample * 1.1  # left-out networks fit worse


def test_a_table_too_small_to_split_or_without_networks_gives_no_figure():
    assert cross_validate(_table(18), SPACE) == []  # a fold's fit would have fewer than two networks per feature
    empty = _table(48)
    empty = LatencyTable(empty.stamp, empty.entries, empty.fit, 0, 1.0, 0.1, {})
    assert cross_validate(empty, SPACE) == []


def test_a_table_with_no_figure_says_why_and_how_many_networks_would_give_one():
    """calibrate takes 16 networks (two per feature) but each of the 8 folds' fits, made without an eighth of
    them, needs 16 too: 19 is the least that gives a figure, and fewer is said, not left silent."""
    assert networks_needed(_table(16), SPACE) == 19
    assert not_cross_validated(_table(18), SPACE) == (
        "too few networks (18) to cross-validate the table; calibrate with --networks 19 or more and --force for a "
        "trust figure")
    assert not_cross_validated(_table(19), SPACE) is None and len(cross_validate(_table(19), SPACE)) == 2
    empty = _table(48)
    empty = LatencyTable(empty.stamp, empty.entries, empty.fit, 0, 1.0, 0.1, {})
    assert "keeps no calibration networks to cross-validate" in not_cross_validated(empty, SPACE)


def test_calibration_output_says_in_one_line_why_there_is_no_trust_figure():
    from edgekd.latency.calibrate import say_trust

    said: list[str] = []
    say_trust(_table(16), SPACE, "host-cpu-1t", said.append)
    assert said == ["calibrate host-cpu-1t: too few networks (16) to cross-validate the table; calibrate with "
                    "--networks 19 or more and --force for a trust figure"]
    said.clear()
    say_trust(_table(48), SPACE, "host-cpu-1t", said.append)
    assert [line.split(": ")[1] for line in said] == ["fp32", "int8"] and "too few" not in " ".join(said)


def test_profiles_show_keeps_the_figure_a_mapping_and_says_why_it_is_empty():
    """`profiles show` printed "left_out_within_10pct": {} and nothing else; the mapping stays (readers iterate
    it) and a note beside it gives the reason."""
    shown = trust(_table(16))  # the stamp's space, mbv2, also takes 19 networks at this input
    assert shown == {"left_out_within_10pct": {}, "left_out_note": "too few networks (16) to cross-validate the "
                     "table; calibrate with --networks 19 or more and --force for a trust figure"}


def test_the_line_says_what_was_left_out_and_how_close_it_came():
    line = FitAccuracy("int8", 96, 8, 0.55, 0.84, 4.31).line()
    assert line == ("int8: 84% of its 96 calibration networks predicted within ±10% when left out of the fit "
                    "(55% within ±5%, median error 4.3%)")


def test_a_low_figure_comes_with_advice_and_a_high_one_without():
    assert FitAccuracy("fp32", 96, 8, 0.7, 0.90, 3.0).advice() is None
    advice = FitAccuracy("int8", 96, 8, 0.55, 0.84, 4.31).advice()
    assert advice.startswith("under 90% of the calibration networks were predicted within ±10% (int8)")
    assert "calibrate again with --force while it is idle" in advice


def test_a_spec_comes_back_from_its_key():
    spec = StudentSpec("mbv2", {"stem": 8, "widths": [8, 16], "se": [0, 1]})
    assert StudentSpec.from_key(spec.key()) == spec


def test_profiles_show_advises_on_every_precision_found_low(monkeypatch):
    """Calibration warned of fp32 and int8 both; `profiles show` named fp32 only."""
    from edgekd.latency import fit_check

    low = [FitAccuracy("fp32", 48, 8, 0.5, 0.75, 9.0), FitAccuracy("int8", 48, 8, 0.5, 0.75, 9.0)]
    monkeypatch.setattr(fit_check, "cross_validate", lambda table, space: low)
    assert trust(_table(48))["advice"].startswith(
        "under 90% of the calibration networks were predicted within ±10% (fp32, int8): ")
    monkeypatch.setattr(fit_check, "cross_validate", lambda table, space: low[1:])
    assert "(int8): " in trust(_table(48))["advice"]
