"""The search's ruler: candidates are timed beside the reference network and converted to milliseconds with one
figure for the whole search, so a batch timed while the machine runs slow is judged as one timed while it runs
fast. The device is swapped for a rule: every model in a run takes its own cost times that run's slowdown."""

import importlib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekd.errors import BudgetError
from edgekd.profiles import load_profile
from edgekd.search.ruler import START_RUNS, Ruler
from edgekd.types import Budget, Candidate, LatencyStats, StudentSpec

search_module = importlib.import_module("edgekd.search.search")  # the package exports search() itself
choosing = importlib.import_module("edgekd.search.choosing")
measure_module = importlib.import_module("edgekd.latency.measure")  # likewise measure()

REF_COST = 0.1  # the reference network's latency on an undisturbed machine, ms


def _stats(ms: float) -> LatencyStats:
    return LatencyStats(ms, ms, ms, ms, 0.01, 10, 7, onnxruntime="1.2.3")


class Device:
    """Runs ``measure`` calls at the slowdowns in ``speeds`` (one per run, in order); a model's cost is its
    file name's number in ms, the reference's REF_COST."""

    def __init__(self, speeds: list[float]) -> None:
        self.speeds = list(speeds)
        self.runs: list[list[str]] = []

    def measure(self, paths, _profile, _shape=None):
        slow = self.speeds.pop(0)
        self.runs.append([Path(p).name for p in paths])
        return [_stats(slow * (REF_COST if Path(p).name == "reference.onnx" else float(Path(p).stem)))
                for p in paths]


@pytest.fixture
def device(monkeypatch):
    def install(speeds: list[float]) -> Device:
        dev = Device(speeds)
        monkeypatch.setattr(measure_module, "measure", dev.measure)
        return dev
    return install


def _ruler() -> Ruler:
    return Ruler(load_profile("host-cpu-1t"), (1, 8, 8), 10)


def test_the_search_converts_with_the_median_of_separate_runs_of_the_reference_measured_once(device):
    dev = device([1.0, 1.8, 1.1, 1.7, 1.2])
    with _ruler() as ruler:
        assert ruler.ms() == pytest.approx(1.2 * REF_COST)  # median of the five, not the first (1.0)
        assert ruler.ms() == pytest.approx(1.2 * REF_COST) and len(dev.runs) == START_RUNS  # not measured again
        assert all(run == ["reference.onnx"] for run in dev.runs)
        assert ruler.runtime() == "1.2.3"


def test_a_candidate_is_timed_in_units_of_the_reference_in_the_same_run(device, tmp_path):
    dev = device([2.0])
    with _ruler() as ruler:
        (stats, units), = ruler.measure([tmp_path / "0.3.onnx"])
        assert dev.runs == [["reference.onnx", "0.3.onnx"]]
        assert units == pytest.approx(3.0) and stats.p50_ms == pytest.approx(0.6)
        assert ruler.spread() == (pytest.approx(0.2), pytest.approx(0.2))


def test_the_reference_file_lives_as_long_as_the_search(device):
    device([1.0] * START_RUNS)
    with _ruler() as ruler:
        ruler.ms()
        path = ruler.reference()
        assert path.exists()
    assert not path.exists()


@pytest.fixture
def timing(monkeypatch):
    """choosing._measure's export and build swapped so that a candidate's file costs its config's "ms"; returns
    installing a device that runs the reference START_RUNS times at full speed, then at ``speeds``."""
    monkeypatch.setattr("edgekd.latency.quick_export.export_for_timing",
                        lambda models, _p, _c, folder, **_k: [Path(folder) / f"{m}.onnx" for m in models])
    monkeypatch.setattr(choosing, "build_candidate", lambda spec, *_a: spec.config["ms"])
    monkeypatch.setattr(choosing, "check_runtime", lambda *_a: None)

    def install(speeds: list[float]) -> Device:
        dev = Device([1.0] * START_RUNS + speeds)
        monkeypatch.setattr(measure_module, "measure", dev.measure)
        return dev
    return install


def _cand(ms: float, score: float = 0.0) -> Candidate:
    return Candidate(StudentSpec("mbv2", {"ms": ms}), 1, 1, score, predicted_ms=ms)


CALIB = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)


def test_batches_timed_at_different_speeds_are_judged_at_one(timing):
    """The same student timed while the machine runs at full speed and while it runs at half speed reads the same
    milliseconds, where raw readings say 0.5 and 1.0 ms."""
    timing([1.0, 2.0])
    config = search_module.SearchConfig()
    with _ruler() as ruler:
        fast, = choosing._measure([_cand(0.5)], None, config, {}, {"mbv2": None}, None, CALIB, ruler)
        slow, = choosing._measure([_cand(0.5)], None, config, {}, {"mbv2": None}, None, CALIB, ruler)
    assert fast.latency_ms == pytest.approx(0.5) and slow.latency_ms == pytest.approx(0.5)


def test_a_slow_stretch_does_not_hand_the_choice_to_a_smaller_student(timing):
    """The better-ranked (larger) student is timed in a slow stretch: its raw reading, 1.2 ms, is over the 0.7 ms
    budget; beside the reference it reads 0.6 ms and is chosen."""
    from edgekd.search.file_size import SizeCheck

    timing([1.0, 2.0])
    small, large = _cand(0.3, score=1.0), _cand(0.6, score=2.0)
    with _ruler() as ruler:
        _done, _too_big, chosen, _scale = choosing.measure_and_choose(
            [large, small], None, load_profile("host-cpu-1t"), Budget(latency_ms=0.7),
            search_module.SearchConfig(measure_top=1, rounds=1), {}, {"mbv2": SimpleNamespace(source="test")}, CALIB,
            SizeCheck(None, lambda c: 0), None, ruler)
    assert chosen.spec == large.spec and chosen.latency_ms == pytest.approx(0.6)


def test_a_search_whose_reference_swung_says_so_and_a_steady_one_says_nothing(device, tmp_path):
    device([1.0] * START_RUNS + [1.6])
    with _ruler() as ruler:
        ruler.ms()
        assert search_module.speed_note(ruler) is None
        ruler.measure([tmp_path / "0.2.onnx"])
        note = search_module.speed_note(ruler)
    assert note == ("search: the machine's speed varied while it measured (the reference network read 0.100-0.160 "
                    "ms); every candidate was timed beside it and converted at 0.100 ms, so all were judged at one "
                    "speed")


def _slow(ms: float, predicted: float, params: int) -> Candidate:
    """A candidate predicted over any budget (unscored) that measures ``ms``."""
    return Candidate(StudentSpec("mbv2", {"ms": ms}), params, 1, float("-inf"), predicted_ms=predicted)


# In evaluation order, all predicted at a fit's floor: the smaller, the faster.
UNSCORED = [_slow(0.95, 0.3, 50), _slow(0.5, 0.3, 10), _slow(0.6, 0.3, 20), _slow(0.7, 0.3, 30), _slow(0.8, 0.3, 40)]


def _until_feasible(ranked: list[Candidate], budget_ms: float):
    from edgekd.search.file_size import SizeCheck

    with _ruler() as ruler:
        return choosing.measure_and_choose(
            ranked, None, load_profile("host-cpu-1t"), Budget(latency_ms=budget_ms), search_module.SearchConfig(),
            {}, {"mbv2": SimpleNamespace(source="test")}, CALIB, SizeCheck(None, lambda c: 0), None, ruler)


def test_a_budget_no_prediction_meets_measures_the_fastest_few_before_giving_up(timing):
    """README: the fastest by prediction, measured twice, and the next three beside it. The fastest by
    prediction among ties is the smallest, not the first the evolution met."""
    dev = timing([1.0, 1.0])
    ranked = choosing.to_measure(UNSCORED, Budget(latency_ms=0.1), "int8")
    with pytest.raises(BudgetError, match=r"the fastest candidate measured 0\.500 ms.*at least 0\.550"):
        _until_feasible(ranked, 0.1)
    assert [run for run in dev.runs if len(run) > 1] == [
        ["reference.onnx", "0.5.onnx"], ["reference.onnx", "0.5.onnx", "0.6.onnx", "0.7.onnx", "0.8.onnx"]]


def test_a_fastest_candidate_within_the_budget_no_prediction_met_is_chosen_without_timing_the_rest(timing):
    dev = timing([1.0])
    _done, _too_big, chosen, _ = _until_feasible(choosing.to_measure(UNSCORED, Budget(latency_ms=0.52), "int8"), 0.52)
    assert chosen.latency_ms == pytest.approx(0.5)
    assert [run for run in dev.runs if len(run) > 1] == [["reference.onnx", "0.5.onnx"]]


def fed_batch(path, profile, shape=None) -> int:
    """The batch the worker feeds ``path``: the shape it is given, else the model's own first dimension, a free
    one at the profile's batch_size. A model fixed at another batch than the shape given would not run."""
    import onnx

    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    if shape is not None:
        assert dim.dim_value in (0, shape[0]), f"{Path(path).name} is fixed at batch {dim.dim_value}, fed {shape[0]}"
        return int(shape[0])
    return dim.dim_value or int(profile.measure["batch_size"])


class BatchDevice:
    """Records the batch each model of every run is fed (``fed``); every model reads 0.1 ms."""

    def __init__(self) -> None:
        self.fed: list[int] = []

    def measure(self, paths, profile, shape=None):
        from edgekd.latency.table import host_runtime

        self.fed += [fed_batch(p, profile, shape) for p in paths]
        return [LatencyStats(0.1, 0.1, 0.1, 0.1, 0.01, 10, 3, onnxruntime=host_runtime(), p10_ms=0.1) for _ in paths]


def batch_device(monkeypatch) -> BatchDevice:
    """A BatchDevice in place of the profile's runner."""
    dev = BatchDevice()
    monkeypatch.setattr(measure_module, "measure", dev.measure)
    return dev


def batched(profile, batch: int = 2):
    """``profile`` measuring at ``batch``, as validate and bench then do."""
    return replace(profile, measure={**profile.measure, "batch_size": batch})


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_candidates_and_the_reference_are_timed_at_the_profiles_batch(monkeypatch, precision):
    """validate times at the profile's batch_size: a search that timed batch 1 for a profile of 8 chose
    students 4x over --budget-ms."""
    import torch

    monkeypatch.setattr(choosing, "build_candidate", lambda *_a: torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3),
                                                                                  torch.nn.Flatten()))
    monkeypatch.setattr(choosing, "check_runtime", lambda *_a: None)
    device = batch_device(monkeypatch)
    config = search_module.SearchConfig(precision=precision)
    with Ruler(batched(load_profile("host-cpu-1t")), (1, 8, 8), 10) as ruler:
        ruler.ms()
        choosing._measure([_cand(0.5)], None, config, {}, {"mbv2": None}, None, CALIB, ruler)
    assert device.fed == [2] * (START_RUNS + 2)
