"""A space's latency fit is kept between runs, under everything that decides what was measured."""

import json
from dataclasses import replace

import numpy as np
import pytest
from test_search_ruler import batch_device, batched

from edgekd.search import latency_model as lm
from edgekd.search.fit_cache import fit_key, fit_path, load_fit
from edgekd.search.spaces import SPACES, MobileNetV2Space

SHAPE = (1, 16, 16)
SPACE = "mbv2-fit-cache-test"
if SPACE not in SPACES:
    SPACES.register(SPACE)(MobileNetV2Space(name=SPACE, stems=(8,), widths=((8,), (8, 12), (12,)), depths=(1, 2),
                                            expands=(2,), kernels=(3,)))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "latency-fits"


def _fit(profile, lines, precision="fp32", shape=SHAPE, reference_ms=None):
    calib = np.random.default_rng(0).normal(size=(4, *shape)).astype(np.float32)
    return lm.latency_model(SPACES.get(SPACE), profile, shape, 10, precision, calib, anchors=4,
                            reference_ms=reference_ms, log=lines.append)


def _key(profile, precision="fp32", shape=SHAPE, classes=10, seed=0):
    models = lm.anchor_networks(SPACES.get(SPACE), shape, classes, 4, seed)
    records = [lm.conv_records(m, shape) for m in models]
    return fit_key(SPACE, models, records, profile, shape, classes, precision)


def test_a_second_run_reuses_the_fit_without_measuring(cache, fast_profile, monkeypatch):
    lines: list[str] = []
    first = _fit(fast_profile, lines)
    assert lines[0].startswith(f"search: measuring 4 '{SPACE}'") and len(list(cache.glob("*.json"))) == 1
    kept = json.loads(next(cache.glob("*.json")).read_text())
    assert kept["about"] == {"space": SPACE, "precision": "fp32", "input_shape": [1, 16, 16], "classes": 10,
                             "profile": fast_profile.name}
    from edgekd.latency.table import host_runtime

    assert kept["fit"]["onnxruntime"] == host_runtime()  # as the measuring worker reported it

    def refuse(*_a, **_k):
        raise AssertionError("measured again")

    monkeypatch.setattr(lm, "measure_fit", refuse)
    lines.clear()
    again = _fit(fast_profile, lines, reference_ms=lambda: 2.0)
    assert "latency from the fit of 4 networks" in lines[0] and "delete it to measure again" in lines[0]
    net = lm.anchor_networks(SPACES.get(SPACE), SHAPE, 10, 6, seed=1)[-1]
    # The same fit in units; in ms, converted with today's reference p50, as a calibrated table is.
    assert again.units(None, net) == first.units(None, net) and again.predict(None, net) == 2.0 * again.units(None, net)
    assert [a[1] for a in again.anchors] == [a[1] for a in first.anchors]


def test_a_kept_fit_without_a_given_reference_measures_the_reference_now(cache, fast_profile, monkeypatch):
    """The Python API's default (no ``reference_ms``) holds on the kept-fit path too, not only on a fresh fit."""
    from edgekd.types import LatencyStats

    first = _fit(fast_profile, [])
    first_stats = LatencyStats(1.0, 1.0, 1.0, 1.0, 0.0, 10, 1)
    monkeypatch.setattr(lm, "measure_fit", lambda *_a, **_k: pytest.fail("measured again"))
    monkeypatch.setattr(lm, "reference_stats", lambda *_a: replace(first_stats, p50_ms=3.0))
    again = _fit(fast_profile, [])
    net = lm.anchor_networks(SPACES.get(SPACE), SHAPE, 10, 6, seed=1)[-1]
    assert again.predict(None, net) == pytest.approx(3.0 * first.units(None, net))


def test_anything_that_changes_what_is_measured_changes_the_key(fast_profile, monkeypatch):
    from edgekd.latency import table

    key = _key(fast_profile)
    assert key == _key(fast_profile)  # a rebuild of the same networks
    slower = replace(fast_profile, measure={**fast_profile.measure, "repeats": 9})
    others = {_key(fast_profile, precision="int8"), _key(fast_profile, shape=(1, 24, 24)),
              _key(fast_profile, classes=5), _key(slower)}
    assert key not in others and len(others) == 4
    remote = replace(fast_profile, runner={"kind": "ssh", "host": "pi"})
    remote_key = _key(remote)
    monkeypatch.setattr(table, "host_runtime", lambda: "0.0.1")  # an onnxruntime upgrade here measures anew
    assert _key(fast_profile) != key
    assert _key(remote) == remote_key  # ...but not a board's fit, which does not run on this host


def test_an_unreadable_or_older_fit_is_dropped_and_measured_again(cache, fast_profile):
    key = _key(fast_profile)
    path = fit_path(key)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert load_fit(key) is None and not path.exists()
    path.write_text(json.dumps({"version": 0, "fit": {}}))
    assert load_fit(key) is None and not path.exists()
    lines: list[str] = []
    _fit(fast_profile, lines)
    assert lines[0].startswith("search: measuring") and load_fit(key) is not None


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_search(tmp_path, monkeypatch, fast_profile):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(blocker / "cache"))  # a folder under a file: never creatable
    lines: list[str] = []
    model = _fit(fast_profile, lines)
    assert model.source.startswith("fitted on 4 measured")
    assert lines[-1].startswith("warning: the latency fit could not be kept for the next run: ")
    assert str(blocker) in lines[-1] and "EDGEKD_CACHE_DIR" in lines[-1]


def test_a_remote_devices_kept_fit_is_measured_again_after_its_runtime_changed(cache, fast_profile, monkeypatch):
    """A board's fit is keyed without its runtime (this host cannot see it before measuring); the reference
    measured when the fit is reused says which version the board runs now."""
    from edgekd.search.fit_cache import Fit

    board = replace(fast_profile, runner={"kind": "ssh", "host": "pi"})
    measured: list[str] = []

    def fake_fit(models, records, profile, *_a):
        version = ["1.17.0", "1.20.0"][len(measured)]
        measured.append(version)
        return Fit("macs", (1.0, 0.0, 0.0), 0.1, tuple(tuple(tuple(r) for r in net) for net in records),
                   (1.0,) * len(models), 1.0, "2026-12-04T00:00:00+00:00", version)

    monkeypatch.setattr(lm, "measure_fit", fake_fit)

    def fit(runtime_now: str, lines: list[str]):
        calib = np.random.default_rng(0).standard_normal((4, *SHAPE)).astype(np.float32)
        return lm.latency_model(SPACES.get(SPACE), board, SHAPE, 10, "fp32", calib, anchors=4, log=lines.append,
                                reference_ms=lambda: 1.0, reference_runtime=lambda: runtime_now)

    fit("1.17.0", [])
    lines: list[str] = []
    fit("1.17.0", lines)  # the same version: reused
    assert measured == ["1.17.0"] and "latency from the fit of 4 networks" in lines[0]
    lines.clear()
    fit("1.20.0", lines)  # the board was upgraded
    assert measured == ["1.17.0", "1.20.0"]
    assert lines[0] == (f"search: the kept '{SPACE}' fp32 latency fit was measured with onnxruntime 1.17.0, and "
                        f"'{board.name}' now runs 1.20.0: measuring it again")
    assert load_fit(_key(board)).onnxruntime == "1.20.0"  # kept in place of the old one
    lines.clear()
    fit("", lines)  # a runner that reports no version cannot rule the fit out
    assert measured == ["1.17.0", "1.20.0"] and "latency from the fit" in lines[0]
    # A local profile's key holds this host's runtime already: its reuse asks the reference nothing.
    measured.clear()
    _fit(fast_profile, [])  # kept with version 1.17.0, which this host does not run
    monkeypatch.setattr(lm, "reference_stats", lambda *_a: pytest.fail("measured the reference"))
    again: list[str] = []
    lm.latency_model(SPACES.get(SPACE), fast_profile, SHAPE, 10, "fp32", np.zeros((4, *SHAPE), np.float32),
                     anchors=4, log=again.append, reference_ms=lambda: 1.0,
                     reference_runtime=lambda: pytest.fail("asked a local profile's runtime"))
    assert "latency from the fit" in again[0] and measured == ["1.17.0"]


def test_a_fresh_fit_converts_with_the_reference_figure_it_is_given(cache, fast_profile):
    """A search converts every prediction and every measured candidate with one figure for the reference
    (search.ruler); a fit measured on the spot follows it rather than the reference's p50 in the fit's runs."""
    fresh = _fit(fast_profile, [], reference_ms=lambda: 2.5)
    net = lm.anchor_networks(SPACES.get(SPACE), SHAPE, 10, 4, seed=0)[-1]
    assert fresh.predict(None, net) == pytest.approx(2.5 * fresh.units(None, net))
    assert load_fit(_key(fast_profile)).ref_ms != 2.5  # what is kept is the fit's own measurement


def test_a_search_with_another_seed_reuses_the_kept_fit(fast_profile):
    """README: the next search of the same space on the same profile, host and onnxruntime reuses the fit. The
    anchors are drawn as seed 0 drew them, so the fits kept before stay found."""
    assert _key(fast_profile, seed=3) == _key(fast_profile, seed=0)


def test_a_fit_times_its_networks_and_the_reference_at_the_profiles_batch(fast_profile, monkeypatch):
    device = batch_device(monkeypatch)
    profile = batched(fast_profile)
    models = lm.anchor_networks(SPACES.get(SPACE), SHAPE, 10, 3)
    records = [lm.conv_records(m, SHAPE) for m in models]
    lm.measure_fit(models, records, profile, SHAPE, 10, "fp32", np.zeros((4, *SHAPE), np.float32))
    lm.reference_stats(profile, SHAPE, 10)
    assert device.fed and set(device.fed) == {2}


def test_a_fit_kept_when_fits_were_timed_at_batch_1_is_not_reused_at_another_batch(fast_profile, monkeypatch):
    """Its profile's digest is the same, and what it measured is not."""
    from edgekd.latency import quick_export

    profile = batched(fast_profile)
    now = _key(profile)
    monkeypatch.setattr(quick_export, "timing_batch", lambda _profile: 1)  # keyed as then
    assert _key(profile) != now
