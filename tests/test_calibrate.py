"""Calibration, the latency table's stamp, resume after interruption, and the predictor."""

import json
import os
import re
import time

import pytest
from test_search_ruler import batch_device, batched

from edgekd.errors import ProfileError
from edgekd.latency import calibrate as calib_mod
from edgekd.latency.calibrate import calibrate, sample_specs
from edgekd.latency.predict import LatencyPredictor
from edgekd.latency.table import host_cpu, load_table, table_path
from edgekd.search.spaces import SPACES, MobileNetV2Space

SHAPE = (1, 16, 16)
TINY = "mbv2-tiny-test"
if TINY not in SPACES:
    SPACES.register(TINY)(MobileNetV2Space(name=TINY, stems=(8,), widths=((8,), (8, 12), (12,)), depths=(1, 2),
                                           expands=(2,), kernels=(3,)))


CALIBRATION_LOG: list[str] = []


@pytest.fixture(scope="module")
def table_file(fast_profile, tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "t.json"
    # 20 networks: enough for each of the eight cross-validation folds to fit the eight features
    calibrate(fast_profile, TINY, SHAPE, 10, networks=20, chunk=8, path=path, rounds=1, log=CALIBRATION_LOG.append)
    return path


def test_calibration_writes_a_stamped_table(table_file, fast_profile):
    data = json.loads(table_file.read_text())
    assert data["schema"] == "edgekd.latency-table" and data["stamp"]["profile_digest"] == fast_profile.digest()
    n_blocks = len(SPACES.get(TINY).all_blocks(SHAPE, 10))
    assert len(data["entries"]["fp32"]) == len(data["entries"]["int8"]) == n_blocks
    assert all(v > 0 for v in data["entries"]["fp32"].values())
    assert not table_file.with_name(table_file.name + ".partial").exists()
    assert not table_file.with_name(table_file.name + ".lock").exists()  # none left beside each table


def test_a_table_of_other_measurement_settings_names_the_setting_that_changed(table_file, fast_profile):
    """The refusal named two digests ("calibrated for profile digest 514d..., not 0823..."), not the warmup_runs
    edited in the profile, and advised a recalibration at the default 96 networks, not the table's 20."""
    from dataclasses import replace

    edited = replace(fast_profile, measure={**fast_profile.measure, "warmup_runs": 99})
    with pytest.raises(ProfileError) as caught:
        load_table(edited, TINY, SHAPE, 10, path=table_file)
    assert caught.value.problem == (f"latency table '{table_file}' was calibrated for profile '{fast_profile.name}' "
                                    f"with measure.warmup_runs {fast_profile.measure['warmup_runs']} (now 99)")
    assert caught.value.fix.endswith("--classes 10 --networks 20`")


def test_calibration_says_how_well_its_fit_predicts_networks_left_out_of_it(table_file):
    said = [line for line in CALIBRATION_LOG if "calibration networks predicted within ±10% when left out" in line]
    assert [line.split(": ")[1] for line in said] == ["fp32", "int8"]
    assert all(" of its 20 calibration networks" in line for line in said)


def test_predictions_are_positive_and_fast(table_file, fast_profile):
    table = load_table(fast_profile, TINY, SHAPE, 10, path=table_file)
    predictor = LatencyPredictor(table, SPACES.get(TINY))
    specs = sample_specs(SPACES.get(TINY), 6, 1)
    assert all(predictor.predict(s, p) > 0 for s in specs for p in ("fp32", "int8"))
    start = time.perf_counter()
    for i in range(10_000):
        predictor.predict(specs[i % len(specs)])
    assert 10_000 / (time.perf_counter() - start) >= 10_000


def test_table_from_another_runtime_or_profile_is_refused(table_file, fast_profile, tmp_path):
    data = json.loads(table_file.read_text())
    data["stamp"]["onnxruntime"] = "0.0.1"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="onnxruntime 0.0.1.*recalibrate"):
        load_table(fast_profile, TINY, SHAPE, 10, path=other)
    data = json.loads(table_file.read_text())
    assert data["stamp"]["host"] == host_cpu() and " CPUs" in data["stamp"]["host"]
    data["stamp"]["host"] = "Some Other CPU (4 CPUs)"  # a home folder shared with, or a cache moved from, another host
    other.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"calibrated for host Some Other CPU \(4 CPUs\), not .*recalibrate"):
        load_table(fast_profile, TINY, SHAPE, 10, path=other)
    data = json.loads(table_file.read_text())
    data["stamp"]["profile_digest"] = "feedface"
    other.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="profile digest"):
        load_table(fast_profile, TINY, SHAPE, 10, path=other)
    with pytest.raises(ProfileError, match="input shape"):
        load_table(fast_profile, TINY, (1, 32, 32), 10, path=table_file)
    data = json.loads(table_file.read_text())
    data["schema_version"] = 1
    other.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="written by another version of edgekd.*recalibrate"):
        load_table(fast_profile, TINY, SHAPE, 10, path=other)
    other.write_text("{not json")
    with pytest.raises(ProfileError, match="unreadable"):
        load_table(fast_profile, TINY, SHAPE, 10, path=other)
    for text in ("[]", "null", "3"):  # JSON, but no table: these crashed search with an AttributeError
        other.write_text(text)
        with pytest.raises(ProfileError, match=r"is unreadable \(not an edgekd latency table\); delete it and run "):
            load_table(fast_profile, TINY, SHAPE, 10, path=other)
    with pytest.raises(ProfileError, match="no latency table.*calibrate"):
        load_table(fast_profile, TINY, SHAPE, 10, path=tmp_path / "missing.json")


def test_interrupted_calibration_resumes(fast_profile, tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    real = calib_mod._measure_blocks
    calls: list[int] = []

    def flaky(space, keys, *rest):
        calls.append(len(keys))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the second chunk
        return real(space, keys, *rest)

    monkeypatch.setattr(calib_mod, "_measure_blocks", flaky)
    with pytest.raises(KeyboardInterrupt):
        calibrate(fast_profile, TINY, SHAPE, 10, networks=16, chunk=4, path=path, rounds=1)
    partial = path.with_name(path.name + ".partial")
    assert not path.exists() and partial.is_file()
    # The time spent before the interruption is kept: a resumed table said only its last part's seconds.
    kept = json.loads(partial.read_text())
    assert kept["seconds"] > 0
    partial.write_text(json.dumps({**kept, "seconds": 1000.0}))  # as if the first part had taken 1000 s
    calls.clear()
    monkeypatch.setattr(calib_mod, "_measure_blocks", lambda *a: (calls.append(len(a[1])), real(*a))[1])
    began = time.perf_counter()
    table = calibrate(fast_profile, TINY, SHAPE, 10, networks=16, chunk=4, path=path, rounds=1)
    total = 2 * len(SPACES.get(TINY).all_blocks(SHAPE, 10))
    assert sum(calls) == total - 4  # the first chunk was not measured again
    assert path.is_file() and 1000 < table.seconds <= 1000 + time.perf_counter() - began


@pytest.mark.parametrize("text", ["[]", "null", "3", '{"stamp": "{stamp}", "entries": []}',
                                  '{"stamp": "{stamp}", "networks": [], "seconds": "long"}'])
def test_a_partial_file_that_is_json_but_not_what_calibrate_writes_starts_over(fast_profile, tmp_path, text):
    """A .partial holding [] (cut short, or edited by hand) crashed `profiles calibrate` with an AttributeError."""
    from edgekd.latency.table import Stamp

    stamp = Stamp.current(fast_profile, TINY, SHAPE, 10)
    partial = tmp_path / "t.json.partial"
    partial.write_text(text.replace('"{stamp}"', json.dumps(stamp.to_dict())))
    entries, refs, nets, seconds = calib_mod._resume(partial, stamp)
    assert entries == {"fp32": {}, "int8": {}} and refs == [] and not any(nets.values()) and seconds == 0.0


def test_calibration_interrupted_while_measuring_networks_keeps_the_chunks_it_finished(fast_profile, tmp_path,
                                                                                       monkeypatch):
    """The network phase is most of a calibration's time: a Ctrl-C there must not cost the networks measured."""
    from edgekd.latency import quick_export

    path = tmp_path / "n.json"
    real = quick_export.export_for_timing
    exports: list[int] = []

    def flaky(models, *rest, **kw):
        exports.append(len(models))
        if len(exports) == 3:
            raise KeyboardInterrupt  # during the second chunk of 8 networks (fp32, then int8, per chunk)
        return real(models, *rest, **kw)

    monkeypatch.setattr(quick_export, "export_for_timing", flaky)
    with pytest.raises(KeyboardInterrupt):
        calibrate(fast_profile, TINY, SHAPE, 10, networks=16, chunk=8, path=path, rounds=1)
    kept = json.loads(path.with_name(path.name + ".partial").read_text())["networks"]
    assert len(kept["keys"]) == len(kept["fp32"]) == len(kept["int8"]) == 8 and not path.exists()
    exports.clear()
    lines: list[str] = []
    table = calibrate(fast_profile, TINY, SHAPE, 10, networks=16, chunk=8, path=path, rounds=1, log=lines.append)
    assert exports == [8, 8]  # the second chunk only, in both precisions
    assert any("8/16 networks already measured" in line for line in lines)
    assert any(line.endswith("networks 16/16") for line in lines)
    assert table.networks["keys"][:8] == kept["keys"] and table.networks["fp32"][:8] == kept["fp32"]
    assert len(table.networks["fp32"]) == 16 and path.is_file()
    assert not path.with_name(path.name + ".partial").exists()


def test_a_second_calibration_of_the_same_table_is_refused_while_the_first_runs(fast_profile, tmp_path,
                                                                                  monkeypatch):
    # two CI jobs on one runner: both would measure on the same cores and write one table
    import subprocess
    import sys

    from edgekd.errors import OutputError

    path = tmp_path / "r.json"
    lock = tmp_path / "r.json.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from edgekd.fsutil import exclusive\n"
                               f"with exclusive(Path({str(lock)!r}), 'x'):\n"
                               "    print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(calib_mod, "_measure_blocks", lambda *a: pytest.fail("measured while locked out"))
        with pytest.raises(OutputError, match=rf"a calibration of r\.json is already running \(process "
                                              rf"{holder.pid}\)") as exc:
            calibrate(fast_profile, TINY, SHAPE, 10, networks=16, chunk=4, path=path, rounds=1)
        assert "wait for it to finish" in exc.value.fix
    finally:
        holder.kill()
        holder.wait()
    from edgekd.fsutil import exclusive

    with exclusive(lock, "x"):  # a killed holder leaves nothing stale
        assert lock.read_text() == f"process {os.getpid()}"


def test_table_keeps_its_measured_networks_and_fits_through_outliers(table_file):
    import numpy as np

    data = json.loads(table_file.read_text())
    nets = data["networks"]
    assert len(nets["keys"]) == len(nets["fp32"]) == len(nets["int8"]) == 20
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.uniform(1, 3, 40), np.ones(40)])
    y = rows @ np.array([0.8, 0.1])
    y[3] *= 1.4  # one measurement disturbed by a neighbour
    coef = calib_mod.fit_relative(rows, y)
    assert coef == pytest.approx([0.8, 0.1], rel=1e-6)


def test_too_few_networks_is_refused(fast_profile, tmp_path):
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match="too few"):
        calibrate(fast_profile, TINY, SHAPE, 10, networks=3, path=tmp_path / "x.json")


def test_networks_enough_to_fit_but_too_few_to_cross_validate_say_so_in_one_line(fast_profile, tmp_path):
    """16 networks fit the tiny space's 8 features, but not each of the 8 folds' fits made without an eighth
    of them: calibration said nothing of how far to trust the table, and now says why and what to pass."""
    from edgekd.latency.fit_check import trust

    said: list[str] = []
    table = calibrate(fast_profile, TINY, SHAPE, 10, networks=16, chunk=16, path=tmp_path / "t.json", rounds=1,
                      log=said.append)
    about = [line for line in said if "cross-validate" in line or "left out of the fit" in line]
    assert about == [f"calibrate {fast_profile.name}: too few networks (16) to cross-validate the table; calibrate "
                     "with --networks 19 or more and --force for a trust figure"]
    assert trust(table) == {"left_out_within_10pct": {}, "left_out_note": about[0].split(": ", 1)[1]}
    # The search that uses such a table says why it gives no trust figure, as calibration did.
    from edgekd.search.latency_model import _table_model
    from edgekd.search.spaces import SPACES

    placed = table_path(fast_profile, TINY, SHAPE, 10)
    placed.write_text((tmp_path / "t.json").read_text())
    lines: list[str] = []
    try:
        assert _table_model(SPACES.get(TINY), fast_profile, SHAPE, 10, "int8", lambda: 1.0, lines.append)
    finally:
        placed.unlink()
    assert lines == [f"search: '{TINY}' latency table, no trust figure: {about[0].split(': ', 1)[1]}"]


def test_builtin_profiles_write_tables_to_the_user_folder(monkeypatch, tmp_path):
    from edgekd.profiles import load_profile

    monkeypatch.setenv("EDGEKD_PROFILE_DIR", str(tmp_path))
    assert (table_path(load_profile("host-cpu-1t"), "mbv2", (1, 32, 32), 10)
            == tmp_path / "host-cpu-1t.mbv2.1x32x32-10.latency.json")


def test_search_uses_a_calibrated_table(fast_profile, teacher, small_data, monkeypatch):
    """With a table beside the profile, candidates carry predictions and the search says so."""
    import dataclasses

    from edgekd.latency import fit_check
    from edgekd.search import SearchConfig, search
    from edgekd.types import Budget

    real = fit_check.cross_validate  # the table as if calibrated on a busy machine: search passes the advice on
    monkeypatch.setattr(fit_check, "cross_validate",
                        lambda table, space: [dataclasses.replace(a, within_10pct=0.5) for a in real(table, space)])

    path = table_path(fast_profile, TINY, small_data.input_shape, small_data.num_classes)
    calibrate(fast_profile, TINY, small_data.input_shape, small_data.num_classes, networks=20, chunk=16, rounds=1)
    lines: list[str] = []
    try:
        result = search(teacher.module, small_data, fast_profile, Budget(latency_ms=50),
                        SearchConfig(space=TINY, candidates=6, measure_top=2, rounds=1, probe_batch=16),
                        progress=False, log=lines.append)
    finally:
        path.unlink()
    # the table's own accuracy on this device, for the precision searched (int8 by default)
    assert any(line.startswith(f"search: '{TINY}' latency table, int8: 50% of its 20 calibration networks")
               for line in lines)
    assert f"warning: '{TINY}' latency table: under 90% of the calibration networks were predicted within ±10% " \
           "(int8): the device was probably busy" in "\n".join(lines)
    assert result.latency_source.startswith(f"predicted ({TINY}: latency table) + measured beside the reference "
                                            f"network (its p50 ")
    assert all(c.predicted_ms and c.predicted_ms > 0 for c in result.candidates)
    assert result.chosen.latency_ms is not None  # the chosen one is still measured


def test_relative_units_keep_each_models_fastest_state():
    from edgekd.latency.calibrate import relative_units
    from edgekd.types import LatencyStats

    def stats(p10: float, p50: float | None = None) -> LatencyStats:
        return LatencyStats(p50 or p10 * 1.1, 0, 0, 0, 0.0, 10, 1, p10_ms=p10)

    # Run 2 caught the student in a slow stretch that barely touched the reference (as measured on a
    # shared machine); run 3 caught the reference in one. The median of per-run ratios (0.8) would be
    # off; each model's fastest state gives the undisturbed ratio.
    runs = [[stats(0.133), stats(0.100)], [stats(0.140), stats(0.131)], [stats(0.180), stats(0.144)]]
    assert relative_units(runs) == pytest.approx([0.100 / 0.133])
    # A runner without a low percentile (onnxruntime_perf_test) is compared on its medians.
    no_p10 = [[LatencyStats(2.0, 0, 0, 0, 0.0, 10, 1), LatencyStats(1.0, 0, 0, 0, 0.0, 10, 1)]]
    assert relative_units(no_p10) == [0.5]


def test_several_passes_keep_each_models_median_units(monkeypatch, tmp_path):
    from edgekd.latency.calibrate import measure_relative, passes_for
    from edgekd.profiles import load_profile
    from edgekd.types import LatencyStats

    def stats(p10: float) -> LatencyStats:
        return LatencyStats(p10 * 1.1, 0, 0, 0, 0.0, 10, 1, p10_ms=p10, onnxruntime="1.99.0")

    # One pass per call: the reference at 1.0 ms, then (a, b); the second pass caught b in a slow state.
    passes = iter([(1.0, 0.50, 0.20), (1.0, 0.52, 0.40), (1.0, 0.48, 0.21)])
    calls = []

    def fake_rotated(paths, profile, ref, rounds):
        calls.append(rounds)
        ref_ms, *models = next(passes)
        return [[stats(ref_ms), *map(stats, models)]]

    monkeypatch.setattr(calib_mod, "measure_rotated", fake_rotated)
    units, ref_ms, runtime = measure_relative(["a", "b"], None, tmp_path / "ref.onnx", rounds=2, passes=3)
    assert units == pytest.approx([0.50, 0.21]) and ref_ms == pytest.approx(1.1) and calls == [2, 2, 2]
    assert runtime == "1.99.0"  # as the device reported it: a kept fit is checked against it
    assert passes_for(load_profile("host-cpu-1t")) == 1 and passes_for(load_profile("host-cpu")) == 3


def test_search_says_when_it_measures_instead_and_why_a_calibrated_table_is_not_used(table_file, fast_profile,
                                                                                   small_data, monkeypatch, tmp_path):
    """The fit measures networks for minutes on a large input, with no progress bar in a CI log; and a
    table calibrated once, then stale (another onnxruntime, CPU or input), must not be dropped in silence."""
    import numpy as np

    from edgekd.search import latency_model as lm
    from edgekd.search.fit_cache import Fit

    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))  # no fit kept by another test
    monkeypatch.setattr(lm, "measure_fit", lambda *a, **k: Fit("macs", (0.0, 1.0), 0.5, (), (1.0,), 2.0, "then"))
    calib = np.random.default_rng(0).standard_normal((1, *SHAPE)).astype(np.float32)
    path = table_path(fast_profile, TINY, SHAPE, 10)
    lines: list[str] = []
    assert not path.exists()
    model = lm.latency_model(SPACES.get(TINY), fast_profile, SHAPE, 10, "fp32", calib, anchors=5, log=lines.append)
    assert "fitted on 1 measured" in model.source
    assert lines == [f"search: measuring 5 '{TINY}' networks (fp32) on '{fast_profile.name}' to fit its latency; "
                     f"`edgekd profiles calibrate {fast_profile.source} --space {TINY} --input-shape 1,16,16 "
                     "--classes 10` makes a table that spares this"]  # a profile read from a file: its path
    data = json.loads(table_file.read_text())
    data["stamp"]["onnxruntime"] = "0.0.1"
    path.write_text(json.dumps(data))
    lines.clear()
    try:
        model = lm.latency_model(SPACES.get(TINY), fast_profile, SHAPE, 10, "fp32", calib, anchors=5,
                                 log=lines.append, reference_ms=lambda: 3.0)
    finally:
        path.unlink()
    assert lines[0].startswith("warning: latency table") and "onnxruntime 0.0.1" in lines[0]
    assert "recalibrate" in lines[0]
    # The fit of the first call is kept, and said to be reused, with where it is kept and how to drop it.
    # Kept under the profile's settings, not its name: another name with the same settings finds it too.
    assert lines[1].startswith(f"search: '{TINY}' fp32 latency from the fit of 1 networks measured with this "
                               f"profile's settings (digest {fast_profile.digest()}) at then, kept in "
                               f"{tmp_path / 'cache'}")
    assert f"'{fast_profile.name}'" not in lines[1]
    assert "delete it to measure again" in lines[1] and "kept from then" in model.source


def test_the_host_names_the_instruction_sets_its_kernels_choose_by():
    """A virtual machine can hide AVX-512 or VNNI of a CPU whose name it keeps: the same name with other
    sets is another host for a table or a cached measurement."""
    from edgekd.latency.table import parse_cpuinfo

    x86 = ("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n\n"
           "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n")
    assert parse_cpuinfo(x86) == ("AMD EPYC 9R14", ("avx2", "avx512_vnni", "avx512f"))
    masked = x86.replace(" avx512f avx512_vnni", "")
    assert parse_cpuinfo(masked) == ("AMD EPYC 9R14", ("avx2",))
    arm = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd asimddp sha2 i8mm\nCPU part\t: 0xd0b\n"
    assert parse_cpuinfo(arm) == ("", ("asimddp", "i8mm"))
    assert parse_cpuinfo("") == ("", ())


def test_tables_are_kept_per_input_shape_and_one_named_before_that_is_still_read(table_file, fast_profile):
    import shutil

    from edgekd.latency.table import legacy_table_path

    here, legacy = table_path(fast_profile, TINY, SHAPE, 10), legacy_table_path(fast_profile, TINY)
    assert here != table_path(fast_profile, TINY, (1, 24, 24), 10) != table_path(fast_profile, TINY, SHAPE, 5)
    shutil.copy(table_file, here)
    try:
        assert load_table(fast_profile, TINY, SHAPE, 10).stamp.input_shape == SHAPE
        with pytest.raises(ProfileError) as exc:
            load_table(fast_profile, TINY, (1, 24, 24), 10)  # another project's resolution: its own table
        assert f"no latency table for space '{TINY}' at input 1x24x24" in exc.value.message
        assert f"--space {TINY} --input-shape 1,24,24 --classes 10" in exc.value.fix
        here.rename(legacy)  # as calibrated before tables were kept per shape
        assert load_table(fast_profile, TINY, SHAPE, 10).stamp.input_shape == SHAPE
        with pytest.raises(ProfileError, match="calibrated for input shape"):
            load_table(fast_profile, TINY, (1, 24, 24), 10)
    finally:
        here.unlink(missing_ok=True)
        legacy.unlink(missing_ok=True)


def test_profiles_show_lists_its_tables_and_whether_search_can_use_each(table_file, fast_profile_path, tmp_path,
                                                                        run_cli):
    import shutil
    from pathlib import Path

    from edgekd.profiles import load_profile

    board = tmp_path / "fast-test.toml"
    shutil.copy(fast_profile_path, board)
    profile = load_profile(board)
    good = table_path(profile, TINY, SHAPE, 10)
    shutil.copy(table_file, good)
    stale = json.loads(table_file.read_text())
    stale["stamp"]["onnxruntime"] = "1.0.0"
    table_path(profile, TINY, (1, 24, 24), 10).write_text(json.dumps({**stale, "stamp": {
        **stale["stamp"], "input_shape": [1, 24, 24]}}))
    (tmp_path / "fast-test.mbv2.1x8x8-10.latency.json").write_text("{ not json")
    (tmp_path / "fast-test-2.mbv2.1x16x16-10.latency.json").write_text(
        json.dumps({**stale, "stamp": {**stale["stamp"], "profile": "fast-test-2"}}))  # another profile's
    code, out, err = run_cli("profiles", "show", board)
    assert code == 0, err
    tables = {Path(t["path"]).name: t for t in json.loads(out)["latency_tables"]}
    assert sorted(tables) == sorted(["fast-test.mbv2.1x8x8-10.latency.json", good.name,
                                     f"fast-test.{TINY}.1x24x24-10.latency.json"])
    assert tables[good.name]["usable"] is True and tables[good.name]["input_shape"] == list(SHAPE)
    trust = tables[good.name]["left_out_within_10pct"]  # what search prints before leaning on the table
    assert set(trust) == {"fp32", "int8"} and all(0 <= v <= 1 for v in trust.values())
    assert ("advice" in tables[good.name]) == (min(trust.values()) < 0.9)
    stale_entry = tables[f"fast-test.{TINY}.1x24x24-10.latency.json"]
    assert stale_entry["usable"] is False and "calibrated for onnxruntime 1.0.0" in stale_entry["why"]
    assert "recalibrate: run `edgekd profiles calibrate" in stale_entry["why"]
    assert "left_out_within_10pct" not in stale_entry
    assert tables["fast-test.mbv2.1x8x8-10.latency.json"] == {
        "path": str(tmp_path / "fast-test.mbv2.1x8x8-10.latency.json"), "usable": False,
        "why": "unreadable: delete it and calibrate again"}


def test_a_table_of_a_space_not_registered_here_is_listed_as_not_usable(table_file, fast_profile_path, tmp_path,
                                                                         run_cli):
    """One table of a space from a newer edgekd (or one since removed) made all of `profiles show` fail with
    "unknown search space"."""
    import shutil
    from pathlib import Path

    from edgekd.profiles import load_profile

    board = tmp_path / "fast-test.toml"
    shutil.copy(fast_profile_path, board)
    profile = load_profile(board)
    shutil.copy(table_file, table_path(profile, TINY, SHAPE, 10))
    data = json.loads(table_file.read_text())
    newer = table_path(profile, "from-a-newer-edgekd", SHAPE, 10)
    newer.write_text(json.dumps({**data, "stamp": {**data["stamp"], "space": "from-a-newer-edgekd"}}))
    code, out, err = run_cli("profiles", "show", board)
    assert code == 0, err
    tables = {Path(t["path"]).name: t for t in json.loads(out)["latency_tables"]}
    assert tables[table_path(profile, TINY, SHAPE, 10).name]["usable"] is True
    entry = tables[newer.name]
    assert entry["usable"] is False and entry["space"] == "from-a-newer-edgekd"
    assert entry["why"].startswith(f"latency table '{newer}' is for search space 'from-a-newer-edgekd', which this "
                                   "edgekd does not have (it has ") and "mbv2" in entry["why"]
    with pytest.raises(ProfileError, match="which this edgekd does not have"):
        load_table(profile, "from-a-newer-edgekd", SHAPE, 10, path=newer)


def test_a_missing_tables_fix_names_the_profile_as_it_can_be_passed(fast_profile, fast_profile_path, tmp_path):
    """A profile read from a file outside the profile folders is found again by its path, not its name."""
    with pytest.raises(ProfileError, match=rf"run `edgekd profiles calibrate {fast_profile_path} --space mbv2 "):
        load_table(fast_profile, "mbv2", (1, 8, 8), 10, path=tmp_path / "missing.json")
    from edgekd.profiles import load_profile

    with pytest.raises(ProfileError, match=r"run `edgekd profiles calibrate host-cpu-1t --space mbv2 "):
        load_table(load_profile("host-cpu-1t"), "mbv2", (1, 8, 8), 10, path=tmp_path / "missing.json")


@pytest.mark.parametrize(("shape", "says"), [
    ("3,5000,5000", "--input-shape 3,5000,5000 is 75,000,000 values an image (0.3 GiB as float32), more than the "
                    "67,108,864 edgekd measures with; pass a smaller C,H,W, e.g. 3,224,224"),
    ("1,3,32,32", "--input-shape '1,3,32,32' must be C,H,W (three positive integers); write it as e.g. 1,32,32 or "
                  "3,224,224"),
    ("3,x,32", "--input-shape '3,x,32' must be C,H,W"),
])
def test_calibrate_refuses_an_input_shape_with_a_c_h_w_example(run_cli, fast_profile_path, shape, says):
    code, _, err = run_cli("profiles", "calibrate", fast_profile_path, "--input-shape", shape)
    assert code == 2 and err.startswith(f"error: {says}") and "1,3,224,224" not in err


def _damaged_shape(data: dict) -> None:
    data["stamp"]["input_shape"] = [1, 16]


RECALIBRATE = r"; recalibrate: run `edgekd profiles calibrate "


@pytest.mark.parametrize("text", ['{"stamp": 1}', "[]", "{ not json"])
def test_a_file_named_as_a_table_that_is_not_one_is_listed_as_unreadable(fast_profile_path, tmp_path, text):
    """Valid JSON that is not an edgekd table was left out of `profiles show`, while search refuses it."""
    import shutil

    from edgekd.latency.table import table_summaries
    from edgekd.profiles import load_profile

    shutil.copy(fast_profile_path, tmp_path / "fast-test.toml")
    profile = load_profile(tmp_path / "fast-test.toml")
    path = table_path(profile, TINY, SHAPE, 10)
    path.write_text(text)
    assert table_summaries(profile) == [{"path": str(path), "usable": False,
                                         "why": "unreadable: delete it and calibrate again"}]
    with pytest.raises(ProfileError, match="is unreadable"):
        load_table(profile, TINY, SHAPE, 10)


@pytest.mark.parametrize(("damage", "says"), [
    (lambda data: data["entries"]["fp32"].popitem(),
     r"is damaged: 1 of the \d+ fp32 block entries are missing or not numbers \(first: '.*'\)" + RECALIBRATE),
    (lambda data: data["fit"].pop("int8"), r"is damaged: its int8 fit is not a list of 8 numbers" + RECALIBRATE),
    (lambda data: data["fit"]["fp32"].pop(), r"is damaged: its fp32 fit is not a list of 8 numbers" + RECALIBRATE),
    (lambda data: data.update(fit=[]), r"is unreadable \(its entries or fit are not keyed by precision\); delete it "
                                       r"and run `edgekd profiles calibrate "),
    (_damaged_shape, r"^unreadable: delete it and calibrate again$"),
])
def test_a_damaged_table_is_refused_in_one_line_that_says_to_recalibrate(table_file, fast_profile_path, tmp_path,
                                                                          damage, says):
    """An entry deleted by hand crashed `profiles show` and search with a KeyError, a fit one term short was
    taken as usable, and a stamp's shape of the wrong length crashed `profiles show` with a ValueError."""
    import shutil

    from edgekd.latency.fit_check import trust
    from edgekd.latency.table import table_summaries
    from edgekd.profiles import load_profile

    shutil.copy(fast_profile_path, tmp_path / "fast-test.toml")
    profile = load_profile(tmp_path / "fast-test.toml")
    data = json.loads(table_file.read_text())
    damage(data)
    path = table_path(profile, TINY, SHAPE, 10)
    path.write_text(json.dumps(data))
    (found,) = table_summaries(profile, trust)  # what `profiles show` prints
    assert found["usable"] is False and re.search(says, found["why"]) and "\n" not in found["why"]
    if damage is not _damaged_shape:  # that one is refused as another input shape
        with pytest.raises(ProfileError, match=says):  # what search is refused with, and says before it measures
            load_table(profile, TINY, SHAPE, 10)


def test_a_table_is_stamped_with_its_batch_and_one_timed_at_batch_1_is_refused_at_another(table_file, fast_profile,
                                                                                          tmp_path, monkeypatch):
    """Tables calibrated before calibration timed the profile's batch timed batch 1 under the same profile digest:
    one without a batch is refused for a profile of batch 2, and still read for one of batch 1."""
    import numpy as np

    from edgekd.latency.table import block_key

    assert "batch_size" not in json.loads(table_file.read_text())["stamp"]  # a batch-1 table, written as before
    load_table(fast_profile, TINY, SHAPE, 10, path=table_file)
    device = batch_device(monkeypatch)  # the reference, timed for the device's runtime version
    monkeypatch.setattr(calib_mod, "_measure_blocks", lambda space, keys, *_a: ({block_key(k): 1.0 for k in keys}, 0.1))
    rng = np.random.default_rng(0)
    monkeypatch.setattr(calib_mod, "measure_networks", lambda specs, *_a, **_k: (
        {p: list(rng.uniform(5, 10, len(specs))) for p in calib_mod.PRECISIONS}, [0.1]))
    profile, path = batched(fast_profile), tmp_path / "b2.json"
    calibrate(profile, TINY, SHAPE, 10, networks=16, path=path, rounds=1)
    data = json.loads(path.read_text())
    assert data["stamp"]["batch_size"] == 2 and device.fed == [2]
    assert load_table(profile, TINY, SHAPE, 10, path=path).stamp.batch_size == 2
    del data["stamp"]["batch_size"]
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"calibrated for batch size 1, not 2; recalibrate: run `edgekd profiles "
                                           r"calibrate"):
        load_table(profile, TINY, SHAPE, 10, path=path)


def test_calibration_times_blocks_and_networks_at_the_profiles_batch(fast_profile, tmp_path, monkeypatch):
    """Their units are read against the reference's, and both against the candidates' and validate's batch."""
    from edgekd.latency.quick_export import timing_batch

    device = batch_device(monkeypatch)
    profile, space = batched(fast_profile), SPACES.get(TINY)
    ref = calib_mod.reference_model(SHAPE, 10, tmp_path, timing_batch(profile))
    keys = space.all_blocks(SHAPE, 10)
    some = [next(k for k in keys if k[0] == kind) for kind in ("stem", "ir", "se", "head")]
    for precision in calib_mod.PRECISIONS:
        calib_mod._measure_blocks(space, some, precision, profile, ref, rounds=1)
    calib_mod.measure_networks(sample_specs(space, 1, 0), profile, SHAPE, 10, ref, rounds=1)
    assert device.fed and set(device.fed) == {2}


def test_more_networks_than_the_space_holds_are_refused_with_the_most_it_can_take(fast_profile, tmp_path):
    """Calibration drew networks until it had as many different ones as asked: forever, past what the space holds."""
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"--networks 129 is more than the 128 different networks space '{TINY}' "
                                          "holds; pass at most 128"):
        calibrate(fast_profile, TINY, SHAPE, 10, networks=129, path=tmp_path / "x.json")
    assert len(sample_specs(SPACES.get(TINY), 500, 0)) == 128  # every one it holds, and no endless draw


def test_a_space_with_fewer_networks_than_the_fit_needs_is_refused_in_one_consistent_message(fast_profile, tmp_path,
                                                                                            monkeypatch):
    """It was told "pass at least N" or "pass at most M" with M below N, whichever --networks it tried."""
    from edgekd.errors import ConfigError

    monkeypatch.setattr(calib_mod, "distinct_networks", lambda _space: 3)
    for networks in (2, 4, 96):
        with pytest.raises(ConfigError, match=rf"space '{TINY}' holds 3 different networks, fewer than the \d+ the "
                                              r"latency model's fit needs at input 1x16x16; search it without a table"):
            calibrate(fast_profile, TINY, SHAPE, 10, networks=networks, path=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_a_partial_from_other_settings_is_deleted_and_said_before_this_run_measures(fast_profile, tmp_path,
                                                                                     monkeypatch):
    """Kept, an interruption before this run's first chunk named it as this run's progress to resume from."""
    from edgekd.latency.table import Stamp

    path = tmp_path / "t.json"
    partial = path.with_name(path.name + ".partial")
    other = {**Stamp.current(fast_profile, TINY, SHAPE, 10).to_dict(), "profile_digest": "feedface"}
    partial.write_text(json.dumps({"stamp": other, "entries": {"fp32": {"b": 1.0}, "int8": {}}}))

    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(calib_mod, "_measure_blocks", interrupted)
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        calibrate(fast_profile, TINY, SHAPE, 10, networks=16, chunk=4, path=path, rounds=1, log=said.append)
    assert f"calibrate {fast_profile.name}: {partial} was an interrupted calibration with other settings" in said[0]
    assert not partial.exists() and not path.exists()


def _board(fast_profile_path, tmp_path):
    import shutil

    from edgekd.profiles import load_profile

    board = tmp_path / "fast-test.toml"
    shutil.copy(fast_profile_path, board)
    return board, load_profile(board)


def test_calibrate_keeps_a_table_search_can_use_unless_forced(table_file, fast_profile_path, tmp_path, run_cli,
                                                              monkeypatch):
    """On a board a table may stand for hours of measuring: replaced without a word, it was lost."""
    import shutil

    from edgekd.latency.table import LatencyTable

    board, profile = _board(fast_profile_path, tmp_path)
    good = table_path(profile, TINY, SHAPE, 10)
    shutil.copy(table_file, good)
    kept = good.read_text()
    measured: list[str] = []

    def fake(*_args, **_kwargs):
        measured.append("measured")
        return LatencyTable.from_dict(json.loads(kept))

    monkeypatch.setattr("edgekd.latency.calibrate.calibrate", fake)
    args = ("profiles", "calibrate", board, "--space", TINY, "--input-shape", "1,16,16")
    code, out, err = run_cli(*args)
    assert (code, out, measured) == (2, "", []) and good.read_text() == kept
    assert err.startswith(f"error: profile 'fast-test' already has a latency table search can use for space '{TINY}' "
                          f"at input 1,16,16 with 10 classes ({good}: 20 networks")
    assert err.endswith("; pass --force to measure it again (the new table replaces it), or keep it\n")
    code, _, err = run_cli(*args, "--force")
    assert code == 0 and measured == ["measured"] and f"replaces {good} (--force)" in err
    stale = json.loads(kept)
    stale["stamp"]["onnxruntime"] = "1.0.0"
    good.write_text(json.dumps(stale))  # the advice for a stale table is to calibrate again: no --force needed
    code, _, err = run_cli(*args)
    assert code == 0 and measured == ["measured"] * 2
    assert (f"replaces {good}, which search cannot use (latency table '{good}' was calibrated for onnxruntime "
            "1.0.0") in err


def _twin(board, tmp_path, name="fast-2t"):
    """A copy of ``board`` with other settings and the same ``name``: its tables have the same paths."""
    from edgekd.profiles import load_profile

    twin = tmp_path / f"{name}.toml"
    twin.write_text(board.read_text().replace("max_cv = 0.5", "max_cv = 0.2"))
    return twin, load_profile(twin)


def test_calibrating_a_profile_file_of_the_same_name_keeps_the_other_file_s_table_unless_forced(
        table_file, fast_profile_path, tmp_path, run_cli, monkeypatch):
    """fast-2t.toml, a copy of fast.toml with its name kept, writes the same table: calibrating it replaced
    fast.toml's usable table as one "search cannot use", and following the advice then printed for fast.toml
    destroyed fast-2t.toml's in turn."""
    import shutil

    from edgekd.latency.table import LatencyTable

    board, profile = _board(fast_profile_path, tmp_path)
    twin, other = _twin(board, tmp_path)
    assert other.name == profile.name and other.digest() != profile.digest()
    good = table_path(profile, TINY, SHAPE, 10)
    assert table_path(other, TINY, SHAPE, 10) == good
    shutil.copy(table_file, good)
    assert json.loads(good.read_text())["profile_source"] == str(fast_profile_path.resolve())  # recorded
    data = {**json.loads(good.read_text()), "profile_source": str(board.resolve())}
    good.write_text(json.dumps(data))
    kept = good.read_text()
    measured: list[str] = []

    def fake(*_args, **_kwargs):
        measured.append("measured")
        return LatencyTable.from_dict(json.loads(kept))

    monkeypatch.setattr("edgekd.latency.calibrate.calibrate", fake)
    args = ("profiles", "calibrate", twin, "--space", TINY, "--input-shape", "1,16,16")
    code, out, err = run_cli(*args)
    assert (code, out, measured) == (2, "", []) and good.read_text() == kept and err.count("\n") == 1
    assert err.startswith(f"error: {good} is the latency table of profile file {board.resolve()} (also named "
                          f"'fast-test', with other settings), and calibrating {twin} would replace it; give one of "
                          f'the two files a name of its own (e.g. name = "fast-2t" in {twin}'), err
    assert f"pass --force to replace the one of {board.resolve()}\n" in err  # by path: both may be NAME.toml
    code, _, err = run_cli(*args, "--force")
    assert code == 0 and measured == ["measured"], err
    board.write_text(board.read_text().replace("max_cv = 0.5", "max_cv = 0.3"))  # edited since: stale
    code, _, err = run_cli(*args)
    assert code == 0 and measured == ["measured"] * 2, err


def test_an_interrupted_calibration_of_a_profile_file_of_the_same_name_is_kept_unless_forced(
        fast_profile_path, tmp_path, monkeypatch):
    """Its resume point was deleted as one "with other settings", losing that board's progress."""
    from edgekd.errors import ConfigError
    from edgekd.latency.calibrate import partial_path
    from edgekd.latency.table import Stamp, source_of

    board, profile = _board(fast_profile_path, tmp_path)
    twin, other = _twin(board, tmp_path)
    partial = partial_path(table_path(profile, TINY, SHAPE, 10))
    partial.write_text(json.dumps({"stamp": Stamp.current(profile, TINY, SHAPE, 10).to_dict(),
                                   "entries": {"fp32": {"b": 1.0}, "int8": {}}, "profile_source": source_of(profile)}))
    kept = partial.read_text()
    with pytest.raises(ConfigError, match=rf"is an interrupted calibration of profile file .*{board.name} \(also "
                                          r"named 'fast-test', with other settings\).*; give one of the two files a "
                                          r"name of its own .* or pass --force to replace the one of "
                                          rf".*{board.name}"):
        calibrate(other, TINY, SHAPE, 10, networks=16, chunk=4, rounds=1)
    assert partial.read_text() == kept

    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(calib_mod, "_measure_blocks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        calibrate(other, TINY, SHAPE, 10, networks=16, chunk=4, rounds=1, force=True)
    assert not partial.exists()


def test_a_pending_interrupted_recalibration_is_named_when_calibrate_is_refused(table_file, fast_profile_path,
                                                                                tmp_path, run_cli):
    """An interrupted --force run keeps its blocks in a .partial: the refusal without --force said nothing of it."""
    import shutil

    from edgekd.latency.calibrate import partial_path

    board, profile = _board(fast_profile_path, tmp_path)
    good = table_path(profile, TINY, SHAPE, 10)
    shutil.copy(table_file, good)
    partial_path(good).write_text("{}")
    code, out, err = run_cli("profiles", "calibrate", board, "--space", TINY, "--input-shape", "1,16,16")
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "20 networks, onnxruntime " in err and f"), and an interrupted recalibration of it is pending " \
        f"({partial_path(good)}); pass --force to resume it (the new table replaces this one)" in err


def test_profiles_show_lists_a_renamed_profile_s_table_and_interrupted_calibrations(table_file, fast_profile_path,
                                                                                    tmp_path, run_cli):
    """A profile renamed (or a board's folder copied) with its settings unchanged: search reads the table at its
    path, so `profiles show` lists it, saying under which name it was calibrated."""
    import shutil

    board, profile = _board(fast_profile_path, tmp_path)
    renamed = tmp_path / "renamed.toml"
    renamed.write_text(board.read_text().replace('name = "fast-test"', 'name = "renamed"'))
    from edgekd.profiles import load_profile

    other = load_profile(renamed)
    assert other.name == "renamed" and other.digest() == profile.digest()
    shutil.copy(table_file, table_path(other, TINY, SHAPE, 10))
    partial = tmp_path / f"renamed.{TINY}.1x24x24-10.latency.json.partial"
    partial.write_text("{}")
    code, out, err = run_cli("profiles", "show", renamed)
    assert code == 0, err
    shown = json.loads(out)
    [table] = shown["latency_tables"]
    assert table["usable"] is True and table["calibrated_as"] == "fast-test"
    assert load_table(other, TINY, SHAPE, 10).stamp.profile == "fast-test"  # what search reads, the same
    assert shown["interrupted_calibrations"] == [{"path": str(partial), "resumable": False,
                                                  "why": "unreadable: calibrate deletes it and starts over"}]


def test_profiles_show_lists_only_its_own_interrupted_calibrations(fast_profile_path, tmp_path, run_cli):
    """A glob on NAME.* also listed the resume points of a profile named NAME.something ("rpi.4t" for "rpi")."""
    board, _ = _board(fast_profile_path, tmp_path)
    own = tmp_path / f"fast-test.{TINY}.1x32x32-10.latency.json.partial"
    legacy = tmp_path / f"fast-test.{TINY}.latency.json.partial"
    for path in (own, legacy, tmp_path / f"fast-test.4t.{TINY}.1x32x32-10.latency.json.partial",
                 tmp_path / f"fast-test.4t.{TINY}.latency.json.partial"):
        path.write_text("{}")
    code, out, err = run_cli("profiles", "show", board)
    assert code == 0, err
    assert [p["path"] for p in json.loads(out)["interrupted_calibrations"]] == sorted([str(own), str(legacy)])


def test_profiles_show_lists_a_calibration_running_now_as_running_not_interrupted(fast_profile_path, tmp_path,
                                                                                     run_cli):
    """Listed as interrupted while its calibrate held the lock, it invited deleting the file or starting the same
    command a second time."""
    from edgekd.fsutil import exclusive

    board, profile = _board(fast_profile_path, tmp_path)
    path = table_path(profile, TINY, SHAPE, 10)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("{}")
    lock = path.with_name(path.name + ".lock")
    with exclusive(lock, "a calibration"):  # as calibrate holds it
        code, out, err = run_cli("profiles", "show", board)
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["interrupted_calibrations"], shown["running_calibrations"]) == ([], [str(partial)])
    lock.write_text("process 999999999")  # left by a holder killed since
    shown = json.loads(run_cli("profiles", "show", board)[1])
    assert ([p["path"] for p in shown["interrupted_calibrations"]], shown["running_calibrations"]) == (
        [str(partial)], [])


def test_profiles_show_says_a_perf_test_table_s_runtime_was_not_recorded(table_file, fast_profile_path, tmp_path,
                                                                         run_cli):
    """onnxruntime_perf_test prints no version, so such a table's stamp has "": shown as an empty version, it
    hid that the table is never checked against the device's runtime."""
    board, profile = _board(fast_profile_path, tmp_path)
    table = json.loads(table_file.read_text())
    table["stamp"]["onnxruntime"] = ""
    table_path(profile, TINY, SHAPE, 10).write_text(json.dumps(table))
    code, out, err = run_cli("profiles", "show", board)
    assert code == 0, err
    [shown] = json.loads(out)["latency_tables"]
    assert shown["onnxruntime"] == (
        "not recorded (onnxruntime_perf_test does not report its version, so this table is not checked against it): "
        "after upgrading it on the device, run `edgekd profiles calibrate fast-test --force`")


def test_profiles_show_says_which_interrupted_calibrations_calibrate_resumes_and_why_not(fast_profile_path, tmp_path,
                                                                                        run_cli):
    """One measured with settings the profile has changed since was listed as work waiting to be resumed, while
    calibrate deletes it and starts over."""
    from edgekd.latency.calibrate import partial_path
    from edgekd.latency.table import Stamp, source_of

    board, profile = _board(fast_profile_path, tmp_path)
    partial = partial_path(table_path(profile, TINY, SHAPE, 10))
    partial.write_text(json.dumps({"stamp": Stamp.current(profile, TINY, SHAPE, 10).to_dict(),
                                   "entries": {"fp32": {"b": 1.0}, "int8": {}}, "profile_source": source_of(profile),
                                   "profile_settings": profile.measured_settings()}))
    code, out, err = run_cli("profiles", "show", board)
    assert code == 0, err
    assert json.loads(out)["interrupted_calibrations"] == [{"path": str(partial), "resumable": True}]
    board.write_text(board.read_text().replace("max_cv = 0.5", "max_cv = 0.3"))
    code, out, err = run_cli("profiles", "show", board)
    assert code == 0, err
    assert json.loads(out)["interrupted_calibrations"] == [
        {"path": str(partial), "resumable": False,
         "why": "measured with measure.max_cv 0.5 (now 0.3): calibrate deletes it and starts over"}]


def test_a_resume_point_records_the_settings_it_was_measured_with(fast_profile, tmp_path, monkeypatch):
    """So that `profiles show` names the setting that keeps it from being resumed."""
    calls: list[int] = []

    def first_chunk_then_interrupted(space, keys, *_args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return {"b": 1.0}, 1.0

    monkeypatch.setattr(calib_mod, "_measure_blocks", first_chunk_then_interrupted)
    path = tmp_path / "t.json"
    with pytest.raises(KeyboardInterrupt):
        calibrate(fast_profile, TINY, SHAPE, 10, networks=16, chunk=4, path=path, rounds=1)
    kept = json.loads(path.with_name(path.name + ".partial").read_text())
    assert kept["profile_settings"] == fast_profile.measured_settings()


def test_an_unknown_space_lists_only_the_spaces_calibrate_takes(fast_profile, tmp_path):
    """It listed `pruned`, which calibrate then refused."""
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown search space 'foo'; choose one of: .*mbv2.*resnet") as exc:
        calibrate(fast_profile, "foo", SHAPE, 10, path=tmp_path / "t.json")
    assert "pruned" not in exc.value.message


def _shadowed_builtin_table(table_file, tmp_path, monkeypatch):
    """A user file host-cpu-1t.toml with other settings, hiding the built-in host-cpu-1t, and a table of the built-in
    in the user folder: (the user's profile, the table's path, the built-in's file)."""
    from edgekd.profiles import builtin_dir, load_profile

    monkeypatch.setenv("EDGEKD_PROFILE_DIR", str(tmp_path))
    builtin_file = builtin_dir() / "host-cpu-1t.toml"
    builtin = load_profile(builtin_file)
    (tmp_path / "host-cpu-1t.toml").write_text(builtin_file.read_text().replace("max_cv = 0.10", "max_cv = 0.3"))
    mine = load_profile("host-cpu-1t")
    assert mine.source != str(builtin_file) and mine.digest() != builtin.digest()
    path = table_path(mine, TINY, SHAPE, 10)
    data = json.loads(table_file.read_text())
    data["stamp"]["profile"], data["stamp"]["profile_digest"] = "host-cpu-1t", builtin.digest()
    data["profile_source"] = str(builtin_file.resolve())
    path.write_text(json.dumps(data))
    return mine, path, builtin_file


def test_a_user_profile_hiding_a_built_in_one_calibrates_over_the_built_ins_table(table_file, tmp_path, run_cli,
                                                                                 monkeypatch):
    """The built-in's table blocked it: `profiles show` gave a calibrate command that was then refused, with a fix
    asking to edit the shipped file to the name it already had."""
    from edgekd.latency.table import LatencyTable, owning_file

    mine, path, builtin_file = _shadowed_builtin_table(table_file, tmp_path, monkeypatch)
    assert owning_file(path, mine) is None  # the hidden built-in is no profile of that name any more
    code, out, err = run_cli("profiles", "show", "host-cpu-1t")
    assert code == 0, err
    [shown] = json.loads(out)["latency_tables"]
    assert shown["usable"] is False and str(builtin_file) not in shown["why"]
    assert shown["why"].endswith(f"recalibrate: run `edgekd profiles calibrate host-cpu-1t --space {TINY} "
                                 "--input-shape 1,16,16 --classes 10 --networks 20`")
    measured: list[str] = []

    def fake(*_args, **_kwargs):
        measured.append("measured")
        return LatencyTable.from_dict(json.loads(path.read_text()))

    monkeypatch.setattr("edgekd.latency.calibrate.calibrate", fake)
    code, _, err = run_cli("profiles", "calibrate", "host-cpu-1t", "--space", TINY, "--input-shape", "1,16,16")
    assert code == 0 and measured == ["measured"] and f"replaces {path}, which search cannot use" in err, err


def test_a_shared_name_fix_never_asks_to_edit_a_shipped_profile(tmp_path):
    """Both files named after the profile: the fix fell back to the other file, the shipped one, and to the name it
    already had."""
    from edgekd.latency.table import shared_name_fix
    from edgekd.profiles import builtin_dir, load_profile

    builtin_file = builtin_dir() / "host-cpu-1t.toml"
    mine = tmp_path / "host-cpu-1t.toml"
    fix = shared_name_fix(load_profile(builtin_file), mine)
    assert fix.startswith(f'give one of the two files a name of its own (e.g. name = "host-cpu-1t-2" in {mine}, and '
                          "rename it host-cpu-1t-2.toml")
    assert str(builtin_file) not in fix.split("or pass --force")[0]


def test_profiles_show_gives_another_file_s_table_the_fix_calibrate_gives_not_a_command_it_refuses(
        table_file, fast_profile_path, tmp_path, run_cli):
    """It said to run `profiles calibrate` for the copy, which then refused to replace the other file's table."""
    import shutil

    board, profile = _board(fast_profile_path, tmp_path)
    twin, _ = _twin(board, tmp_path)
    good = table_path(profile, TINY, SHAPE, 10)
    shutil.copy(table_file, good)
    good.write_text(json.dumps({**json.loads(good.read_text()), "profile_source": str(board.resolve())}))
    code, out, err = run_cli("profiles", "show", twin)
    assert code == 0, err
    [shown] = json.loads(out)["latency_tables"]
    assert shown["usable"] is False and "recalibrate: run" not in shown["why"]
    assert shown["why"].startswith(f"the latency table of profile file {board.resolve()} (also named 'fast-test', "
                                   f'with other settings); give one of the two files a name of its own (e.g. name = '
                                   f'"fast-2t" in {twin}')
