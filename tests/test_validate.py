"""`edgekd validate`: re-checking an artifact against its manifest entry, and refusing unsafe or broken ONNX files."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekd.errors import ArtifactError
from edgekd.fsutil import sha256
from edgekd.types import Budget
from edgekd.validate import artifact_from_file, validate

LOOSE = ["--rounds", "1", "--latency-tolerance", "0.9"]  # latency plumbing only: this machine's timing is noisy


@pytest.fixture(scope="module")
def run_dir(small_data, fast_profile, tmp_path_factory) -> Path:
    """A manifest folder like compress writes (student fp32 + int8), built without search or training."""
    import torch

    from edgekd.export import ExportRequest, get_exporter
    from edgekd.fsutil import write_json
    from edgekd.report import build_manifest
    from edgekd.search.spaces import SPACES
    from edgekd.types import Budget
    from edgekd.validate import validate, with_paths_relative

    out = tmp_path_factory.mktemp("validate") / "run"
    out.mkdir()
    torch.manual_seed(0)
    config = {"stem": 8, "widths": [8, 16, 16], "depths": [1, 1, 1], "expands": [2, 2, 2], "kernels": [3, 3, 3]}
    model = SPACES.get("mbv2").build(config, small_data.input_shape, small_data.num_classes).eval()
    fp32 = get_exporter("onnx-fp32")(ExportRequest("student-fp32", "student", out, model, small_data.x_val[:1]))
    int8 = get_exporter("onnx-int8")(ExportRequest("student-int8", "student", out, source=fp32,
                                                   calibration=small_data.x_train[:64]))
    report = validate([fp32, int8], fast_profile, Budget(), small_data)
    manifest = build_manifest(with_paths_relative(report, out), fast_profile.to_dict(),
                              {"data": small_data.describe(), "recipe": {"seed": 0}})
    write_json(out / "manifest.json", manifest)
    return out


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


def _edit_manifest(folder: Path, edit) -> Path:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def _entry(data: dict, name: str) -> dict:
    return next(e for e in data["artifacts"] if e["artifact"]["name"] == name)


def test_unchanged_artifact_passes_every_check(run_cli, run_dir, tmp_path):
    code, out, err = run_cli("validate", run_dir / "student-int8.onnx", "--manifest", run_dir / "manifest.json",
                             *LOOSE, "--json", tmp_path / "r.json")
    assert code == 0, out + err
    for check in ("sha256", "size", "opset", "operators", "signature", "accuracy", "latency"):
        assert f"| {check} | pass |" in out
    assert "relative to student-fp32, measured interleaved" in out  # its twin is in the folder: drift cancels
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["passed"] and result["artifact"] == "student-int8"


def test_replaced_file_fails_hash_size_and_operators(run_cli, run_dir, tmp_path):
    copy = _copy(run_dir, tmp_path)
    shutil.copy(copy / "student-fp32.onnx", copy / "student-int8.onnx")  # valid ONNX, but not the recorded one
    code, out, _ = run_cli("validate", copy / "student-int8.onnx", "--manifest", copy / "manifest.json", *LOOSE)
    assert code == 1
    assert "| sha256 | FAIL |" in out and "| size | FAIL |" in out and "| operators | FAIL |" in out
    assert "-QuantizeLinear" in out and "FAIL: sha256, size, operators" in out


def test_accuracy_and_latency_are_compared_with_the_record(run_cli, run_dir, tmp_path):
    copy = _copy(run_dir, tmp_path)

    def claim_better(data):
        entry = _entry(data, "student-fp32")
        entry["accuracy"] = min(1.0, entry["accuracy"] + 0.2)
        entry["latency"]["p50_ms"] /= 5  # recorded as 5x faster than it is, relative to its int8 twin
        data["int8_speedup"]["median"] /= 5  # the paired figure a student is held to beside its twin

    manifest = _edit_manifest(copy, claim_better)
    code, out, _ = run_cli("validate", copy / "student-fp32.onnx", "--manifest", manifest, *LOOSE)
    assert code == 1 and "| accuracy | FAIL |" in out and "| latency | FAIL |" in out
    assert "| sha256 | pass |" in out
    code, out, _ = run_cli("validate", copy / "student-fp32.onnx", "--manifest", manifest, *LOOSE,
                           "--accuracy-tolerance", "0.5", "--latency-tolerance", "0.99")
    assert "| accuracy | pass |" in out


@pytest.fixture(scope="module")
def ort_shipped(run_dir, small_data, tmp_path_factory) -> Path:
    """The run with its int8 student's ORT-format copy recorded as compress --ort records it (timed beside its
    .onnx: the record says the copy runs as fast)."""
    from edgekd.ort_format import to_ort

    folder = Path(shutil.copytree(run_dir, tmp_path_factory.mktemp("ort-shipped") / "run"))
    made = to_ort(folder / "student-int8.onnx", "amd64", small_data.x_test[:16], "int8")

    def record(data):
        entry = _entry(data, "student-int8")
        entry["ort"] = {**made.to_dict(), "p50_ms": entry["latency"]["p50_ms"], "vs_onnx": 1.0}

    _edit_manifest(folder, record)
    return folder


def test_a_recheck_says_when_it_measures_on_the_recorded_settings_not_the_profile_file(run_cli, run_dir,
                                                                                       fast_profile_path, tmp_path):
    """The profile file the manifest names was edited since: the recheck measured on the recorded settings, as
    gate does, and said nothing of it where gate says so."""
    copy = _copy(run_dir, tmp_path)
    board = tmp_path / "board.toml"
    board.write_text(fast_profile_path.read_text(), encoding="utf-8")
    _edit_manifest(copy, lambda d: d["profile"].update(source=str(board)))
    args = ("validate", copy / "student-int8.onnx", "--manifest", copy / "manifest.json", *LOOSE,
            "--json", tmp_path / "r.json")
    code, out, err = run_cli(*args)
    assert code == 0 and "note:" not in out, out + err  # the file is the recorded profile: nothing to say
    board.write_text(fast_profile_path.read_text().replace("warmup_runs = 3", "warmup_runs = 4"), encoding="utf-8")
    code, out, err = run_cli(*args, "--force")
    said = (f"note: profile 'fast-test', rebuilt from the settings the manifest records ({board} holds other "
            "settings now)")
    assert code == 0 and said in out, out + err
    assert json.loads((tmp_path / "r.json").read_text())["notes"] == [said.removeprefix("note: ")]


def test_an_ort_copy_is_rechecked_against_its_record(run_cli, ort_shipped, tmp_path):
    """`validate student-int8.ort --manifest` was refused as "not an .onnx file", and the copy a mobile app ships
    had no re-check of its own."""
    copy = Path(shutil.copytree(ort_shipped, tmp_path / "run"))
    code, out, err = run_cli("validate", copy / "student-int8.ort", "--manifest", copy / "manifest.json", *LOOSE)
    assert code == 0, out + err
    assert f"{copy / 'student-int8.ort'} against manifest entry 'student-int8' of" in out
    for check in ("sha256", "size", "operators", "accuracy"):
        assert f"| {check} | pass |" in out, out
    assert "for its student-int8.onnx's (tolerance" in out
    assert "| latency |" in out and "relative to student-int8, measured interleaved" in out
    # the copy's own p50 came from other rounds than its .onnx's: the ratio measured in one round decides
    _edit_manifest(copy, lambda d: _entry(d, "student-int8")["ort"].update(
        p50_ms=_entry(d, "student-int8")["latency"]["p50_ms"] / 5))
    code, out, _ = run_cli("validate", copy / "student-int8.ort", "--manifest", copy / "manifest.json", *LOOSE)
    assert code == 0 and "| latency | pass |" in out, out
    (copy / "student-int8.required_operators.config").write_text("# edited\n")
    with open(copy / "student-int8.ort", "ab") as f:
        f.write(b"\0")
    code, out, _ = run_cli("validate", copy / "student-int8.ort", "--manifest", copy / "manifest.json", *LOOSE)
    assert code == 1 and "| sha256 | FAIL |" in out and "| size | FAIL |" in out and "| operators | FAIL |" in out
    (copy / "student-int8.required_operators.config").unlink()
    code, out, _ = run_cli("validate", copy / "student-int8.ort", "--manifest", copy / "manifest.json", *LOOSE)
    assert "| operators | skipped | student-int8.required_operators.config, the copy's operator list, is not " \
           "beside it |" in out


def test_a_folder_of_links_into_an_object_store_is_rechecked_as_the_folder_itself(run_cli, ort_shipped, tmp_path):
    """DVC keeps every file as a link into its cache, named by hash without an extension: validate --manifest took
    the present, unchanged student-fp32.onnx for absent (timed alone, drift counted), and the .ort failed to load
    ("Protobuf parsing failed"), onnxruntime reading the format from the name the link leads to."""
    release, store = tmp_path / "release", tmp_path / "cache"
    release.mkdir()
    store.mkdir()
    for file in ort_shipped.iterdir():
        kept = store / sha256(file)
        shutil.copy(file, kept)
        (release / file.name).symlink_to(kept)
    code, out, err = run_cli("validate", release / "student-int8.onnx", "--manifest", release / "manifest.json",
                             *LOOSE)
    assert code == 0 and "relative to student-fp32, measured interleaved" in out, out + err
    code, out, err = run_cli("validate", release / "student-int8.ort", "--manifest", release / "manifest.json",
                             *LOOSE)
    assert code == 0 and "relative to student-int8, measured interleaved" in out, out + err


def test_an_ort_copy_the_manifest_does_not_record_is_refused_in_one_line(run_cli, run_dir, ort_shipped, tmp_path):
    code, out, err = run_cli("validate", ort_shipped / "student-int8.ort", "--manifest", run_dir / "manifest.json")
    assert code == 2 and out == "" and "Traceback" not in err
    assert "records no ORT-format copy, and 'student-int8.ort' is one; re-check the .onnx it was converted from" in err
    code, _, err = run_cli("validate", ort_shipped / "student-int8.ort", "--manifest", ort_shipped / "manifest.json",
                           "--artifact", "student-fp32")
    assert code == 2 and "artifact 'student-fp32' of '" in err and "has no ORT-format copy; choose one of: " \
        "student-int8" in err
    other = tmp_path / "other.ort"
    shutil.copy(ort_shipped / "student-int8.ort", other)
    with open(other, "ab") as f:
        f.write(b"\0")
    code, _, err = run_cli("validate", other, "--manifest", ort_shipped / "manifest.json")
    assert code == 2 and "cannot tell which ORT-format copy of '" in err and "pass --artifact NAME" in err
    (tmp_path / "junk.ort").write_bytes(b"not a model")
    code, _, err = run_cli("validate", tmp_path / "junk.ort", "--manifest", ort_shipped / "manifest.json")
    assert code == 2 and "is not a readable ORT-format file" in err


@pytest.mark.parametrize("scale, verdict", [(20.0, "pass"), (1 / 20, "FAIL")])
def test_latency_without_twins_compares_absolute_p50(run_cli, run_dir, tmp_path, scale, verdict):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run_dir / "manifest.json", alone)
    shutil.copy(run_dir / "student-int8.onnx", alone)
    # Absolute times move up to ~2x between runs on a loaded machine (this test once failed at its widest
    # tolerance), so the record is moved 20x either way: the verdict shows the comparison, not the machine.
    manifest = _edit_manifest(alone, lambda d: _entry(d, "student-int8")["latency"].update(
        p50_ms=_entry(d, "student-int8")["latency"]["p50_ms"] * scale))
    code, out, _ = run_cli("validate", alone / "student-int8.onnx", "--manifest", manifest, *LOOSE)
    assert f"| latency | {verdict} |" in out and "drift between runs counts here" in out, out
    assert code == (0 if verdict == "pass" else 1)


def test_manifest_of_another_version_or_schema(run_cli, run_dir, tmp_path):
    copy = _copy(run_dir, tmp_path)
    model = copy / "student-int8.onnx"
    manifest = _edit_manifest(copy, lambda d: d.update(schema_version=2))
    code, _, err = run_cli("validate", model, "--manifest", manifest)
    assert code == 2 and "has schema version 2, this edgekd reads version 1" in err
    manifest = _edit_manifest(copy, lambda d: d.update(schema="other.manifest"))
    code, _, err = run_cli("validate", model, "--manifest", manifest)
    assert code == 2 and "is not an edgekd manifest" in err


@pytest.mark.parametrize("args, message", [
    (["--artifact", "nope"], "has no artifact 'nope'; choose one of: student-fp32, student-int8"),
    (["--budget-ms", "5"], "--budget-ms does not apply with --manifest"),
    (["--min-accuracy", "0.9"], "--min-accuracy does not apply with --manifest"),
    (["--profile", "host-cpu-1t"], "measures differently from the one the manifest records"),
    (["--rounds", "0"], "rounds must be at least 1"),
])
def test_recheck_usage_errors(run_cli, run_dir, args, message):
    code, _, err = run_cli("validate", run_dir / "student-int8.onnx", "--manifest", run_dir / "manifest.json", *args)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--rounds", "2"], "--rounds needs --manifest"),
    (["--latency-tolerance", "0.1"], "--latency-tolerance needs --manifest"),
    (["--accuracy-tolerance", "0.005"], "--accuracy-tolerance needs --manifest"),  # its default, given: refused too
    (["--resolution", "16"], "--resolution needs --data"),
    (["--normalize", "none"], "--normalize needs --data"),
    (["--channels", "3"], "--channels needs --data"),
])
def test_flags_that_would_be_ignored_are_refused(run_cli, tmp_path, args, message):
    from conftest import foreign_onnx

    model = foreign_onnx(tmp_path / "m.onnx", (1, 16, 16), 10)
    code, out, err = run_cli("validate", model, *args)
    assert code == 2 and message in err and out == "" and "Traceback" not in err, out + err


def test_unknown_file_needs_artifact_name(run_cli, run_dir, tmp_path):
    other = tmp_path / "renamed.onnx"
    shutil.copy(run_dir / "student-fp32.onnx", other)
    code, out, _ = run_cli("validate", other, "--manifest", run_dir / "manifest.json", *LOOSE)
    assert code == 0 and "entry 'student-fp32'" in out
    code, _, err = run_cli("validate", tmp_path / "x.onnx", "--artifact", "student-fp32")
    assert code == 2 and "--artifact needs --manifest" in err


# -- unsafe or broken ONNX files --------------------------------------------------------------------------------


def _model_with_weight(path: Path, location: str | None = None, dangling: bool = False) -> Path:
    """A one-node model (y = x + w); with ``location``, w's data is stored externally there."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], np.ones(4, np.float32).tobytes(), raw=True)
    if location is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "16")):
            weight.external_data.add(key=key, value=value)
    node = helper.make_node("Add", ["x", "w_missing" if dangling else "w"], ["y"], name="add")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location, message", [
    ("/etc/passwd", "outside the model's folder (absolute paths and '..' are refused)"),
    ("../secret.bin", "outside the model's folder (absolute paths and '..' are refused)"),
    ("data/../../secret.bin", "outside the model's folder"),
    ("missing.bin", "external data file 'missing.bin' of tensor 'w' is missing"),
])
def test_external_data_must_stay_in_the_model_folder(run_cli, tmp_path, location, message):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    model = _model_with_weight(folder / "m.onnx", location)
    for command in (["validate", model], ["gate", model, "--max-size", "1MB", "--config", os.devnull]):
        code, _, err = run_cli(*command)
        assert code == 2 and message in err and "Traceback" not in err


def test_symlink_out_of_the_folder_and_short_data_are_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    (folder / "link.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(ArtifactError, match="resolves outside the model's folder"):
        artifact_from_file(_model_with_weight(folder / "m.onnx", "link.bin"))
    (folder / "short.bin").write_bytes(b"\0" * 8)
    with pytest.raises(ArtifactError, match="shorter than tensor 'w' needs"):
        artifact_from_file(_model_with_weight(folder / "m.onnx", "short.bin"))
    (folder / "ok.bin").write_bytes(np.ones(4, np.float32).tobytes())
    assert artifact_from_file(_model_with_weight(folder / "m.onnx", "ok.bin")).details["op_types"] == ["Add"]


def test_a_models_size_counts_the_external_data_it_ships_with(run_cli, tmp_path):
    # a size gate on the 200-byte .onnx alone would pass 40 KB of weights kept beside it
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "m.onnx_data").write_bytes(np.ones(10_000, np.float32).tobytes())
    model = _model_with_weight(folder / "m.onnx", "m.onnx_data")
    art = artifact_from_file(model)
    assert art.size_bytes == model.stat().st_size + 40_000
    assert art.details["external_data"] == ["m.onnx_data"]
    assert "external_data" not in artifact_from_file(_model_with_weight(tmp_path / "plain.onnx")).details
    code, out, _ = run_cli("gate", model, "--max-size", "10KB", "--config", os.devnull)
    assert code == 1 and "KB on disk (with its external data: m.onnx_data), limit 10.0 KB" in out
    from edgekd.onnx_metadata import stamp_metadata  # as compress stamps an ONNX teacher it copies into the run

    stamped = stamp_metadata(art, {"edgekd.class_names": "[]"})
    assert stamped.size_bytes == model.stat().st_size + 40_000 and stamped.sha256 != art.sha256


def test_truncated_corrupt_and_foreign_files(run_cli, run_dir, tmp_path):
    whole = (run_dir / "student-int8.onnx").read_bytes()
    cases = {
        "truncated.onnx": (whole[: len(whole) // 2], "is not a readable ONNX model"),
        "text.onnx": (b"not onnx at all", "is not a readable ONNX model"),
        "empty.onnx": (b"", "is not a readable ONNX model (it holds no ONNX graph)"),
        "image.onnx": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "is not a readable ONNX model"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        code, _, err = run_cli("validate", tmp_path / name)
        assert code == 2 and message in err and "re-export it" in err and "Traceback" not in err, name
    incomplete = _model_with_weight(tmp_path / "dangling.onnx", dangling=True)
    code, _, err = run_cli("validate", incomplete, "--manifest", run_dir / "manifest.json")
    assert code == 2 and "is incomplete: node 'add' reads 'w_missing'" in err


def test_a_manifest_json_or_folder_where_a_model_goes_names_the_model_to_pass(run_cli, run_dir, tmp_path):
    primary = json.loads((run_dir / "manifest.json").read_text())["primary"]
    for command in ("validate", "bench"):
        code, _, err = run_cli(command, run_dir / "manifest.json")
        assert code == 2 and "is an edgekd manifest, not an ONNX model" in err, command
        assert f"{primary}.onnx" in err and "Traceback" not in err
        code, _, err = run_cli(command, run_dir)
        assert code == 2 and "is a folder, not an .onnx file" in err, command
    (tmp_path / "report.json").write_text('{"models": []}')
    code, _, err = run_cli("validate", tmp_path / "report.json")
    assert code == 2 and "is a JSON file, not an ONNX model" in err


def test_artifact_from_file_records_what_the_manifest_records(run_dir):
    art = artifact_from_file(run_dir / "student-int8.onnx")
    recorded = _entry(json.loads((run_dir / "manifest.json").read_text()), "student-int8")["artifact"]
    assert art.precision == "int8" and art.opset == recorded["opset"]
    assert {k: art.details[k] for k in ("op_types", "inputs", "outputs")} == {
        k: recorded["details"][k] for k in ("op_types", "inputs", "outputs")}
    assert onnx.load(str(run_dir / "student-int8.onnx")).graph.node  # untouched on disk


def test_ship_decision_is_the_median_of_the_paired_repeats():
    """One disturbed stretch neither ships a slower int8 student nor holds back a faster one."""
    from edgekd.types import Artifact, ArtifactReport, LatencyStats
    from edgekd.validate import _choose_primary, _int8_ratio, _int8_speedup, _median_run

    def stats(p50: float, repeats: tuple[float, ...] = ()) -> LatencyStats:
        return LatencyStats(p50, p50, p50, p50, 0.0, 10, max(len(repeats), 1), repeat_p50_ms=repeats)

    def art(name: str, precision: str) -> Artifact:
        return Artifact(name, "student", precision, f"{name}.onnx", "test", 17, "0" * 64, 1000, {})

    fp32, int8 = art("student-fp32", "fp32"), art("student-int8", "int8")
    # Without per-repeat figures each run is one pair: int8 is 0.95x, 1.10x (fp32 disturbed) and 0.97x of fp32's speed.
    runs = [[stats(1.00), stats(1.0 / 0.95)], [stats(1.10), stats(1.00)], [stats(0.97), stats(1.00)]]
    assert _int8_speedup([fp32, int8], runs) == pytest.approx([0.95, 1.10, 0.97])
    reports = [ArtifactReport(a, True, None, None, _median_run([r[i] for r in runs]), {})
               for i, a in enumerate([fp32, int8])]
    assert reports[0].latency.p50_ms == 1.00  # each artifact reports its median run
    primary, notes = _choose_primary(reports, _int8_ratio([fp32, int8], runs), len(runs))
    assert primary == "student-fp32" and "NOT faster" in notes[0] and "(0.97x, median of 3 repeat-by-repeat" in notes[0]
    assert "range 0.95-1.10x (too few paired repeats for a 95% interval)" in notes[0]
    # Seven repeats per run: fp32 was disturbed in two repeats of the first run (its whole-run p50 went up by a
    # third, which alone would read int8 as 1.33x faster); paired up, int8 is 1.06x faster.
    fast = (1.0,) * 7
    runs = [[stats(1.33, (1.5, 1.5, 1.06, 1.06, 1.06, 1.06, 1.06)), stats(1.0, fast)],
            [stats(1.06, (1.06,) * 7), stats(1.0, fast)], [stats(1.06, (1.06,) * 7), stats(1.0, fast)]]
    found = _int8_ratio([fp32, int8], runs)
    assert found.median == pytest.approx(1.06) and found.pairs == 21 and found.confident
    primary, notes = _choose_primary(reports, found, len(runs))
    assert primary == "student-int8" and "1.06x faster" in notes[0] and "95% interval 1.06-1.06x" in notes[0]
    assert _int8_speedup([fp32], [[stats(1.0)]]) == [] and _int8_ratio([fp32], [[stats(1.0)]]) is None  # no twin


def test_validate_refuses_zero_rounds(fast_profile):
    from edgekd.errors import ConfigError
    from edgekd.types import Budget
    from edgekd.validate import validate

    with pytest.raises(ConfigError, match="rounds must be at least 1"):
        validate([], fast_profile, Budget(None, None), rounds=0)


def test_accuracy_verdicts_from_a_floor_and_a_drop_below_the_teacher():
    from edgekd.types import Budget, LatencyStats
    from edgekd.validate import _verdicts

    art = _artifact("student-int8", "int8")
    lat = LatencyStats(1.0, 1.0, 1.0, 1.0, 0.0, 10, 1)

    def verdicts(**budget):
        return _verdicts(art, lat, None, 0.95, 0.97, Budget(**budget))

    assert verdicts(min_accuracy=0.95) == {"accuracy": True}
    assert verdicts(min_accuracy=0.96) == {"accuracy": False}
    assert verdicts(max_accuracy_drop=2.0) == {"accuracy_drop": True}  # exactly two points: a tie passes
    assert verdicts(max_accuracy_drop=1.9) == {"accuracy_drop": False}
    assert _verdicts(art, lat, None, None, None, Budget(min_accuracy=0.5)) == {}  # nothing measured, no verdict


def test_accuracy_budgets_need_data_and_a_teacher_before_anything_is_measured(run_dir, small_data, fast_profile,
                                                                              monkeypatch):
    import sys

    from edgekd.errors import ConfigError
    from edgekd.types import Budget
    from edgekd.validate import artifact_from_file, validate

    monkeypatch.setattr(sys.modules["edgekd.latency.measure"], "measure",
                        lambda *a, **k: pytest.fail("measured before refusing"))
    student = artifact_from_file(run_dir / "student-int8.onnx", role="student")
    with pytest.raises(ConfigError, match="--min-accuracy needs data to measure accuracy on; pass --data"):
        validate([student], fast_profile, Budget(min_accuracy=0.5))
    with pytest.raises(ConfigError, match="--max-accuracy-drop compares with the teacher.*--min-accuracy"):
        validate([student], fast_profile, Budget(max_accuracy_drop=1.0), small_data)


def test_validate_measures_accuracy_verdicts_against_the_teacher_artifact(run_dir, small_data, fast_profile):
    from edgekd.types import Budget
    from edgekd.validate import artifact_from_file, validate

    teacher = artifact_from_file(run_dir / "student-fp32.onnx", role="teacher")  # any model stands in
    student = artifact_from_file(run_dir / "student-int8.onnx", role="student")
    report = validate([teacher, student], fast_profile, Budget(min_accuracy=0.01, max_accuracy_drop=99.0),
                      small_data, budgeted=[student.name], rounds=1)
    assert report.get(teacher.name).verdicts == {}
    assert report.get(student.name).verdicts == {"accuracy": True, "accuracy_drop": True}


def test_a_faster_int8_student_that_breaks_the_budget_does_not_ship_over_a_passing_fp32_one():
    from edgekd.types import ArtifactReport, LatencyStats, Ratio
    from edgekd.validate import _choose_primary

    lat = LatencyStats(1.0, 1.0, 1.0, 1.0, 0.0, 10, 1)
    fp32 = ArtifactReport(_artifact("student-fp32", "fp32"), True, None, 0.97, lat, {"accuracy": True})
    int8 = ArtifactReport(_artifact("student-int8", "int8"), True, None, 0.90, lat, {"accuracy": False})
    primary, notes = _choose_primary([fp32, int8], Ratio(1.3, 1.25, 1.35, 21), 3)
    assert primary == "student-fp32" and "1.30x faster" in notes[0] and "breaks the budget (accuracy)" in notes[0]


def test_an_int8_speedup_just_under_the_line_never_reads_as_meeting_it():
    from edgekd.types import ArtifactReport, LatencyStats, Ratio
    from edgekd.validate import _choose_primary

    lat = LatencyStats(1.0, 1.0, 1.0, 1.0, 0.0, 10, 1)
    fp32 = ArtifactReport(_artifact("student-fp32", "fp32"), True, None, 0.97, lat, {"latency": True})
    int8 = ArtifactReport(_artifact("student-int8", "int8"), True, None, 0.97, lat, {"latency": True})
    primary, notes = _choose_primary([fp32, int8], Ratio(1.0198, 1.01, 1.03, 9), 3)
    assert primary == "student-fp32" and \
        "not faster than fp32 by the required margin on this profile (1.0198x," in notes[0], notes
    assert "needs >= 1.0200x" in notes[0]
    # its interval too: "95% interval 1.02-1.02x; needs >= 1.020x" read as a pass beside a NOT
    _, notes = _choose_primary([fp32, int8], Ratio(1.019, 1.0186, 1.0214, 9), 3)
    assert "(1.019x, median of 9 repeat-by-repeat ratios over 3 interleaved runs, 95% interval 1.019-1.021x; " \
           "needs >= 1.020x)" in notes[0], notes
    primary, notes = _choose_primary([fp32, int8], Ratio(1.02, 1.01, 1.03, 9), 3)
    assert primary == "student-int8" and "ships: 1.02x faster" in notes[0], notes


def test_an_int8_student_faster_by_less_than_the_margin_is_not_called_slower():
    from edgekd.types import ArtifactReport, LatencyStats, Ratio
    from edgekd.validate import _choose_primary

    lat = LatencyStats(1.0, 1.0, 1.0, 1.0, 0.0, 10, 1)
    fp32 = ArtifactReport(_artifact("student-fp32", "fp32"), True, None, 0.97, lat, {"latency": True})
    int8 = ArtifactReport(_artifact("student-int8", "int8"), True, None, 0.97, lat, {"latency": True})
    primary, notes = _choose_primary([fp32, int8], Ratio(1.01, 1.004, 1.016, 21), 1)
    assert primary == "student-fp32"
    assert notes == ["int8 student is not faster than fp32 by the required margin on this profile (1.01x, median of "
                     "21 repeat-by-repeat ratios over 1 interleaved run, 95% interval 1.00-1.02x; needs >= 1.02x): "
                     "the fp32 student ships as the primary artifact; the int8 file is kept for reference"], notes
    for ratio in (1.0, 0.97):  # no faster at all: said as plainly as before
        _, notes = _choose_primary([fp32, int8], Ratio(ratio, ratio - 0.01, ratio + 0.01, 21), 1)
        assert notes[0].startswith(f"int8 student is NOT faster than fp32 on this profile ({ratio:.2f}x,"), notes


def _artifact(name: str, precision: str, role: str = "student", size: int = 1000):
    from edgekd.types import Artifact

    return Artifact(name, role, precision, f"{name}.onnx", "test", 17, "0" * 64, size, {})


@pytest.mark.parametrize("teacher_ms, budget, expected", [
    (0.5, Budget(latency_ms=1.0), "not faster than the teacher (0.50x its speed, and larger): the teacher itself "
                                  "meets the budget"),
    (0.5, Budget(latency_ms=1.0, max_size_kb=0.1), "compressing gained nothing here"),
    (2.0, Budget(latency_ms=1.0), "the shipped student is larger than the teacher (2.0 KB vs 0.5 KB) and the budget "
                                  "sets no size limit: --max-size-kb bounds it"),
    (2.0, Budget(latency_ms=1.0, max_size_kb=4.0), None),
])
def test_a_student_no_faster_than_its_teacher_is_said(teacher_ms, budget, expected):
    from edgekd.types import ArtifactReport, LatencyStats
    from edgekd.validate import _against_teacher

    def lat(ms):
        return LatencyStats(ms, ms, ms, ms, 0.0, 10, 1)

    teacher = ArtifactReport(_artifact("teacher-fp32", "fp32", "teacher", 500), True, None, 0.99, lat(teacher_ms), {})
    student = ArtifactReport(_artifact("student-fp32", "fp32", size=2000), True, None, 0.98, lat(1.0), {})
    notes = _against_teacher([teacher, student], "student-fp32", budget)
    assert notes == [] if expected is None else expected in notes[0]


def test_a_slower_student_that_meets_the_size_limit_its_teacher_breaks_is_not_called_a_loss():
    from edgekd.types import ArtifactReport, LatencyStats
    from edgekd.validate import _against_teacher

    def lat(ms):
        return LatencyStats(ms, ms, ms, ms, 0.0, 10, 1)

    teacher = ArtifactReport(_artifact("teacher-fp32", "fp32", "teacher", 3000), True, None, 0.99, lat(0.5), {})
    student = ArtifactReport(_artifact("student-int8", "int8", size=1000), True, None, 0.98, lat(1.0), {})
    notes = _against_teacher([teacher, student], "student-int8", Budget(latency_ms=2.0, max_size_kb=2.0))
    assert notes == ["the shipped student is not faster than the teacher (0.50x its speed): it meets --max-size-kb 2, "
                     "which the teacher (2.9 KB) breaks; for speed as well, tighten --budget-ms"]


def test_a_large_accuracy_loss_without_an_accuracy_budget_is_said():
    from edgekd.types import ArtifactReport, LatencyStats
    from edgekd.validate import _against_teacher

    lat = LatencyStats(1.0, 1.0, 1.0, 1.0, 0.0, 10, 1)
    fast = LatencyStats(0.1, 0.1, 0.1, 0.1, 0.0, 10, 1)
    teacher = ArtifactReport(_artifact("teacher-fp32", "fp32", "teacher"), True, None, 1.0, lat, {})
    student = ArtifactReport(_artifact("student-int8", "int8"), True, None, 0.3333, fast, {})
    notes = _against_teacher([teacher, student], "student-int8", Budget(latency_ms=1.0))
    assert notes == ["the shipped student is 66.7 points less accurate than the teacher (33.33% vs 100.00%) and the "
                     "budget sets no accuracy bound: --max-accuracy-drop would fail this run"]
    assert _against_teacher([teacher, student], "student-int8", Budget(latency_ms=1.0, min_accuracy=0.3)) == []
    close = ArtifactReport(_artifact("student-int8", "int8"), True, None, 0.97, fast, {})
    assert _against_teacher([teacher, close], "student-int8", Budget(latency_ms=1.0)) == []


def test_validate_cli_accuracy_floor(run_cli, run_dir, small_data, tmp_path):
    model = run_dir / "student-int8.onnx"
    code, _, err = run_cli("validate", model, "--min-accuracy", "0.5")
    assert code == 2 and "--min-accuracy needs data to measure accuracy on; pass --data" in err
    code, _, err = run_cli("validate", model, "--min-accuracy", "97", "--data", "digits")
    assert code == 2 and "--min-accuracy is a fraction in (0, 1], got 97" in err
    code, out, err = run_cli("validate", model, "--data", "digits", "--resolution", "16", "--min-accuracy", "1")
    assert code == 1 and "accuracy: FAIL" in out  # an untrained student is far from 100%


def test_data_that_does_not_fit_the_model_is_named_before_it_runs(run_cli, run_dir, small_data, tmp_path):
    model = run_dir / "student-fp32.onnx"
    side = small_data.input_shape[-1]
    code, _, err = run_cli("validate", model, "--data", "digits", "--resolution", str(side * 2))
    assert code == 2 and f"takes 1x{side}x{side} inputs, and data 'digits' has 1x{side * 2}x{side * 2}" in err
    assert "Traceback" not in err and f"images; pass --resolution {side}, the model's size" in err
    code, _, err = run_cli("validate", model, "--manifest", run_dir / "manifest.json", "--resolution", "0x16")
    assert code == 2 and "--resolution 0x16 is not a positive side or HEIGHTxWIDTH" in err
    rng = np.random.default_rng(0)
    many = tmp_path / "many.npz"
    np.savez(many, x=rng.random((120, 1, side, side), dtype=np.float32), y=np.arange(120) % 12)
    code, _, err = run_cli("validate", model, "--data", many)
    assert code == 2 and "predicts 10 classes, and data 'many.npz' has 12" in err
    code, _, err = run_cli("validate", model, "--manifest", run_dir / "manifest.json", "--data", many, "--rounds", "1")
    assert code == 2 and "predicts 10 classes" in err and "Traceback" not in err


def test_a_held_out_test_set_is_measured_whole(run_cli, run_dir, small_data, tmp_path):
    held_out = tmp_path / "test.npz"
    np.savez(held_out, x_test=small_data.x_test[:50], y_test=small_data.y_test[:50])
    code, out, err = run_cli("validate", run_dir / "student-fp32.onnx", "--data", held_out)
    assert code == 0, err
    assert "accuracy on test.npz test split (50 images)" in out
    code, _, err = run_cli("compress", "--data", held_out, "--budget-ms", "1", "--out", tmp_path / "o")
    assert code == 2 and "holds only a test split (x_test, y_test), nothing to train on" in err
    assert not (tmp_path / "o").exists()


def test_recheck_measures_accuracy_on_the_run_s_own_data_while_it_is_there(run_cli, run_dir, small_data, tmp_path):
    copy = _copy(run_dir, tmp_path)
    own = tmp_path / "held.npz"

    def user_data(path):
        def edit(data):
            data["data"]["name"] = "held.npz"
            data["recipe"]["data"] = str(path)
        return edit

    manifest = _edit_manifest(copy, user_data(tmp_path / "gone.npz"))
    code, out, _ = run_cli("validate", copy / "student-fp32.onnx", "--manifest", manifest, *LOOSE)
    assert f"| accuracy | skipped | the manifest's data '{tmp_path / 'gone.npz'}' is not here; pass --data" in out
    np.savez(own, x=np.concatenate([small_data.x_train, small_data.x_test]),
             y=np.concatenate([small_data.y_train, small_data.y_test]))
    manifest = _edit_manifest(copy, user_data(own))
    code, out, _ = run_cli("validate", copy / "student-fp32.onnx", "--manifest", manifest, *LOOSE)
    assert "on held.npz test split" in out and "skipped" not in out.split("| accuracy |")[1].split("\n")[0]


def test_channels_flag_feeds_a_colour_model_without_metadata_grayscale_data(run_cli, fast_profile_path, tmp_path):
    """A model exported elsewhere (no edgekd metadata) that takes RGB: --channels 3 on validate and gate."""
    from conftest import foreign_onnx

    path = foreign_onnx(tmp_path / "rgb.onnx", (3, 16, 16), 10)
    common = ["--data", "digits", "--resolution", "16", "--profile", fast_profile_path]
    code, _, err = run_cli("validate", path, *common)
    assert code == 2 and "takes 3x16x16 inputs" in err
    assert "; pass --channels 3 (grayscale repeated to RGB), the channels the model takes" in err
    code, out, err = run_cli("validate", path, *common, "--channels", "3")
    assert code == 0 and "accuracy" in out, err
    gate = ["--min-accuracy", "0", "--config", os.devnull]
    code, out, err = run_cli("gate", path, *gate, *common[:-2], "--channels", "3")
    assert code == 0 and "accuracy" in out, out + err
    code, _, err = run_cli("gate", path, *gate, *common[:-2], "--channels", "2")
    assert code == 2 and "'2' is not one of '1', '3'" in err


def test_channels_in_pyproject_must_be_1_or_3(tmp_path, run_cli):
    (tmp_path / "pyproject.toml").write_text("[tool.edgekd.gate]\nmax-size = '1MB'\nchannels = 4\n")
    code, _, err = run_cli("gate", tmp_path / "m.onnx", "--config", tmp_path / "pyproject.toml")
    assert code == 2 and "[tool.edgekd.gate] channels = 4: channels 4 is not 1 or 3" in err, err  # the file's key


def test_a_report_file_never_replaces_the_model_or_data_it_checks_even_with_force(run_cli, run_dir, tmp_path):
    model = _copy(run_dir, tmp_path) / "student-fp32.onnx"
    before = model.read_bytes()
    code, _, err = run_cli("validate", model, "--json", model, "--force")
    assert code == 2 and "--json" in err and "an input of this command" in err and "Traceback" not in err
    code, _, err = run_cli("bench", model, "--json", model, "--force")
    assert code == 2 and "an input of this command" in err
    code, _, err = run_cli("gate", model, "--max-size", "1MB", "--junit", model, "--force", "--config", os.devnull)
    assert code == 2 and "--junit" in err and "an input of this command" in err
    assert model.read_bytes() == before


def test_validate_json_never_replaces_what_else_it_reads(run_cli, run_dir, fast_profile_path, tmp_path):
    """--force replaced a model's external weights, an artifact of the manifest rechecked, an image of the
    data folder and the profile file with the JSON report."""
    folder = _copy(run_dir, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["student"] = {"spec": {"space": "mbv2", "config": {}}, "params": 1, "weights": "student.pt"}  # as compress
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "student.pt").write_bytes(b"the student's weights")
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "m.onnx_data").write_bytes(np.ones(4, np.float32).tobytes())
    external = _model_with_weight(tmp_path / "ext" / "m.onnx", "m.onnx_data")
    images = tmp_path / "imgs" / "0"
    images.mkdir(parents=True)
    (images / "0.png").write_bytes(b"an image")
    board = tmp_path / "board.toml"
    board.write_text(Path(fast_profile_path).read_text().replace('name = "fast-test"', 'name = "board"'))
    kept = {f: f.read_bytes() for f in (tmp_path / "ext" / "m.onnx_data", folder / "student-fp32.onnx",
                                        folder / "student.pt", images / "0.png", board)}
    for args, out in (((external,), tmp_path / "ext" / "m.onnx_data"),
                      ((folder / "student-int8.onnx", "--manifest", folder / "manifest.json"),
                       folder / "student-fp32.onnx"),
                      ((folder / "student-int8.onnx", "--manifest", folder / "manifest.json"),
                       folder / "student.pt"),  # the student's weights the manifest lists too
                      ((external, "--data", tmp_path / "imgs"), images / "0.png"),
                      ((external, "--profile", board), board)):
        code, _, err = run_cli("validate", *args, "--json", out, "--force")
        assert code == 2 and ("an input of this command" in err or "an input folder of this command" in err), err
    assert {f: f.read_bytes() for f in kept} == kept


def test_validate_reads_the_test_split_the_model_records(run_cli, run_dir, small_data, tmp_path):
    """A model trained on the split of seed 1 was scored on seed 0's test images, most of them its own
    training images, without a word."""
    from edgekd.onnx_metadata import embedded_split_seed, stamp_data_metadata
    from edgekd.validate import artifact_from_file

    model = Path(shutil.copy(run_dir / "student-fp32.onnx", tmp_path / "m.onnx"))
    assert embedded_split_seed(model) is None
    stamp_data_metadata(artifact_from_file(model), small_data, seed=1)
    assert embedded_split_seed(model) == 1
    side = str(small_data.input_shape[-1])
    seen: list[int] = []
    import edgekd.data

    real = edgekd.data.load_data

    def spy(*args, **kwargs):
        seen.append(kwargs["seed"])
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(edgekd.data, "load_data", spy)
        code, _, err = run_cli("validate", model, "--data", "digits", "--resolution", side, "--json",
                               tmp_path / "v.json")
        assert code in (0, 1) and "warning" not in err
        code, _, err = run_cli("validate", model, "--data", "digits", "--resolution", side, "--seed", "0")
        assert "warning: " in err and "was trained on the split of seed 1: the test images of --seed 0 include" in err
    assert seen == [1, 0]
    assert json.loads((tmp_path / "v.json").read_text())["data"]["seed"] == 1
    for args, message in ((("--seed", "1"), "--seed needs --data"),
                          (("--manifest", run_dir / "manifest.json", "--seed", "1"), "--seed does not apply with "
                                                                                       "--manifest"),
                          (("--data", "digits", "--resolution", side, "--seed", "-1"), "seed -1 is not a whole")):
        code, _, err = run_cli("validate", model, *args)
        assert code == 2 and message in err, err


def test_data_that_does_not_fit_is_refused_before_any_latency_is_measured(run_dir, small_data, fast_profile,
                                                                          monkeypatch):
    import sys

    from edgekd.data import load_data
    from edgekd.errors import DataError
    from edgekd.validate import artifact_from_file, validate

    measuring = sys.modules["edgekd.latency.measure"]  # the package's attribute of that name is the function
    monkeypatch.setattr(measuring, "measure", lambda *a, **k: pytest.fail("measured first"))
    wrong = load_data("digits", resolution=small_data.input_shape[-1] * 2)
    with pytest.raises(DataError, match="inputs, and data 'digits' has"):
        validate([artifact_from_file(run_dir / "student-fp32.onnx")], fast_profile, Budget(), wrong)


def test_an_empty_data_is_refused_not_skipped_and_a_huge_input_shape_before_measuring(run_cli, run_dir):
    code, _, err = run_cli("validate", run_dir / "student-fp32.onnx", "--data", "")
    assert code == 2 and "--data is empty" in err
    code, _, err = run_cli("bench", run_dir / "student-fp32.onnx", "--input-shape", "1,1,100000,100000")
    assert code == 2 and "is 10,000,000,000 values" in err and "Traceback" not in err


def test_a_numbered_model_scored_on_named_classes_says_how_it_pairs_them(run_cli, run_dir, small_data, tmp_path):
    """The digits student numbers its classes 0..9; a folder names its own (cat, dog): class i is taken to be
    the i-th name in sorted order, which a user must hear, since a wrong order reads as a bad model."""
    from PIL import Image

    side = small_data.input_shape[-1]
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, size=(side, side), dtype=np.uint8)).save(
                tmp_path / "pets" / name / f"{i}.png")
    from edgekd.onnx_metadata import stamp_data_metadata

    model = _copy(run_dir, tmp_path) / "student-fp32.onnx"
    stamp_data_metadata(artifact_from_file(model), small_data)  # as compress ships it: classes named 0..9
    note = "the model numbers its classes 0..9 and data 'pets' names its own (cat, dog): class i is taken to be"
    code, out, err = run_cli("validate", model, "--data", tmp_path / "pets")
    assert code == 0 and f"warning: {note}" in err, out + err
    code, out, err = run_cli("gate", model, "--data", tmp_path / "pets", "--min-accuracy", "0",
                             "--config", os.devnull)
    assert code == 0 and f"; warning: {note}" in out.split("| accuracy |")[1], out + err
    code, _, err = run_cli("validate", model, "--data", "digits", "--resolution", str(side))
    assert code == 0 and "numbers its classes" not in err  # numbered data: nothing to say


# -- channels-last models ------------------------------------------------------------------------------------


def _nchw_and_nhwc(folder: Path, open_size: bool = False) -> tuple[Path, Path]:
    """The same random conv net exported twice: taking NCHW input, and taking NHWC (TensorFlow's layout)."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()

    class ChannelsLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x.permute(0, 3, 1, 2))

    for module, name, example, spatial in ((net, "nchw", (1, 1, 16, 16), (2, 3)),
                                           (ChannelsLast().eval(), "nhwc", (1, 16, 16, 1), (1, 2))):
        dynamic = {0: "batch", **({} if open_size is False else dict(zip(spatial, ("height", "width"))))}
        torch.onnx.export(module, (torch.randn(example),), str(folder / f"{name}.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": dynamic})
    return folder / "nchw.onnx", folder / "nhwc.onnx"


def test_a_channels_last_model_is_fed_its_layout_and_says_so(tmp_path, small_data, fast_profile, run_cli):
    from edgekd.latency.runtime import predictions_on_test_split

    nchw, nhwc = _nchw_and_nhwc(tmp_path)
    plain, labels, notes = predictions_on_test_split(nchw, fast_profile, small_data)
    assert notes == ()
    last, labels_last, notes = predictions_on_test_split(nhwc, fast_profile, small_data)
    assert np.allclose(plain, last, atol=1e-5) and np.array_equal(labels, labels_last)
    note = f"'{nhwc.name}' takes channels-last (NHWC) input: the test images were fed to it as NHWC"
    assert notes == (note,)
    report = validate([artifact_from_file(nhwc)], fast_profile, Budget(None, None), small_data, rounds=1)
    assert note in report.notes
    from edgekd.data import load_data
    from edgekd.errors import DataError

    with pytest.raises(DataError, match=r"takes 16x16x1 inputs, and data 'digits' has 32x32x1 images") as exc:
        predictions_on_test_split(nhwc, fast_profile, load_data("digits"))  # told in its layout, with the size
    assert "(--resolution 16)" in exc.value.fix
    code, out, _ = run_cli("gate", nhwc, "--data", "digits", "--resolution", "16", "--min-accuracy", "0.01",
                           "--config", os.devnull)
    assert code == 0 and "takes channels-last (NHWC) input: the test images were fed to it as NHWC" in out


def test_a_channels_last_model_with_open_height_and_width_is_timed_at_the_datas_size(tmp_path, small_data):
    from edgekd.input_shape import data_input_shape

    nchw, nhwc = _nchw_and_nhwc(tmp_path, open_size=True)
    sample = tuple(small_data.input_shape)
    assert data_input_shape(artifact_from_file(nchw).details, sample, 1) == (1, 1, 16, 16)
    assert data_input_shape(artifact_from_file(nhwc).details, sample, 1) == (1, 16, 16, 1)


def test_a_model_of_open_size_beside_fixed_ones_is_timed_at_the_datas_size_and_rechecked_so(
        tmp_path, small_data, fast_profile, run_cli):
    """compress validates its fixed-size students beside an ONNX teacher whose height and width are open: the
    run used to end in "pass --input-shape", which compress does not take, after the search and the training."""
    from edgekd.fsutil import write_json
    from edgekd.report import build_manifest
    from edgekd.validate import with_paths_relative

    (tmp_path / "fixed").mkdir()
    (tmp_path / "open").mkdir()
    fixed, _ = _nchw_and_nhwc(tmp_path / "fixed")
    open_size, _ = _nchw_and_nhwc(tmp_path / "open", open_size=True)
    run = tmp_path / "run"
    run.mkdir()
    arts = [artifact_from_file(shutil.copy(fixed, run / "fixed.onnx")),
            artifact_from_file(shutil.copy(open_size, run / "open.onnx"))]
    report = validate(arts, fast_profile, Budget(), small_data, rounds=1)
    assert all(r.latency.p50_ms > 0 for r in report.reports)
    assert any("latency measured at input shape 1,1,16,16, the test data's" in n for n in report.notes)
    write_json(run / "manifest.json", build_manifest(with_paths_relative(report, run), fast_profile.to_dict(),
                                                     {"data": small_data.describe(), "recipe": {"seed": 0}}))
    for name in ("open.onnx", "fixed.onnx"):  # the open one measured alone, or as the other's reference
        code, out, err = run_cli("validate", run / name, "--manifest", run / "manifest.json", "--profile",
                                 fast_profile.source, "--latency-tolerance", "0.9", "--rounds", "1")
        assert "| latency |" in out and "Traceback" not in err and "--input-shape" not in err, out + err


# -- what a model's first output holds -----------------------------------------------------------------------


def test_class_scores_reads_conv_heads_and_argmax_outputs_and_refuses_the_rest():
    from edgekd.errors import DataError
    from edgekd.latency.runtime import class_scores, top1

    scores = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]], np.float32)
    labels = np.array([1, 1])
    assert top1(class_scores(scores, "m.onnx"), labels) == 0.5
    assert np.array_equal(class_scores(scores[:, :, None, None], "m.onnx"), scores)  # a 1x1-conv head
    assert np.array_equal(class_scores(scores[:, None, :], "m.onnx"), scores)
    indices = np.array([1, 0], np.int64)  # a model that ends in ArgMax
    assert top1(class_scores(indices, "m.onnx"), labels) == 0.5
    assert top1(class_scores(indices[:, None], "m.onnx"), labels) == 0.5
    for bad in (np.zeros((2, 1), np.float32), np.zeros((2, 3, 4), np.float32)):
        with pytest.raises(DataError, match="neither \\(batch, classes\\) scores nor \\(batch,\\) class indices"):
            class_scores(bad, "m.onnx")


def test_a_model_ending_in_argmax_is_scored_and_one_with_a_single_score_refused(tmp_path, run_cli):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10)).eval()

    class Head(torch.nn.Module):
        def __init__(self, end):
            super().__init__()
            self.net, self.end = net, end

        def forward(self, x):
            return self.end(self.net(x))

    for name, end in (("scores", lambda z: z), ("argmax", lambda z: z.argmax(1)), ("single", lambda z: z[:, :1])):
        torch.onnx.export(Head(end).eval(), (torch.randn(1, 1, 16, 16),), str(tmp_path / f"{name}.onnx"),
                          dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    accuracy = {}
    for name in ("scores", "argmax"):
        code, out, err = run_cli("validate", tmp_path / f"{name}.onnx", "--data", "digits", "--resolution", "16")
        assert code == 0, err
        accuracy[name] = next(line for line in out.splitlines() if line.startswith("accuracy"))
    assert accuracy["scores"] == accuracy["argmax"]
    code, _, err = run_cli("validate", tmp_path / "single.onnx", "--data", "digits", "--resolution", "16")
    assert code == 2 and "its output has shape (359, 1) (float32)" in err and "Traceback" not in err


def test_accuracy_is_read_from_the_output_with_the_datas_classes(tmp_path, small_data, fast_profile):
    # a model that returns its features before its logits; accuracy from the features would be noise
    import torch

    from edgekd.latency.runtime import predictions_on_test_split

    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 32), torch.nn.ReLU())
    head = torch.nn.Linear(32, 10)

    class Both(torch.nn.Module):
        def __init__(self, features_first):
            super().__init__()
            self.body, self.head, self.features_first = body, head, features_first

        def forward(self, x):
            z = self.body(x)
            return (z, self.head(z)) if self.features_first else (self.head(z), z)

    scores = {}
    for first in (True, False):
        path = tmp_path / f"first_{first}.onnx"
        torch.onnx.export(Both(first).eval(), (torch.randn(1, 1, 16, 16),), str(path), dynamo=False,
                          input_names=["x"], output_names=["features", "logits"] if first else ["logits", "features"],
                          dynamic_axes={"x": {0: "batch"}})
        scores[first], _, notes = predictions_on_test_split(path, fast_profile, small_data)
        assert notes == (f"'{path.name}' has 2 outputs; accuracy is read from 'logits', the only one of 10 classes",)
    assert scores[True].shape == (len(small_data.y_test), 10) and np.allclose(scores[True], scores[False])


def test_a_model_taking_flat_rows_is_fed_flattened_images(tmp_path, small_data, fast_profile):
    # an MLP exported without its Flatten takes (N, C*H*W)
    import torch

    from edgekd.errors import DataError
    from edgekd.latency.runtime import predictions_on_test_split

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(256, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).eval()
    torch.onnx.export(mlp, (torch.randn(1, 256),), str(tmp_path / "flat.onnx"), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    torch.onnx.export(torch.nn.Sequential(torch.nn.Flatten(), mlp).eval(), (torch.randn(1, 1, 16, 16),),
                      str(tmp_path / "image.onnx"), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    flat, _, notes = predictions_on_test_split(tmp_path / "flat.onnx", fast_profile, small_data)
    image, _, _ = predictions_on_test_split(tmp_path / "image.onnx", fast_profile, small_data)
    assert np.allclose(flat, image, atol=1e-5)
    assert notes == ("'flat.onnx' takes flat input (256 values an image): the test images were fed "
                     "to it as flat",)
    torch.onnx.export(torch.nn.Linear(100, 10).eval(), (torch.randn(1, 100),), str(tmp_path / "other.onnx"),
                      dynamo=False, input_names=["x"])
    with pytest.raises(DataError, match="takes 100 inputs, and data 'digits' has 1x16x16 images"):
        predictions_on_test_split(tmp_path / "other.onnx", fast_profile, small_data)


def test_a_float16_model_is_described_as_fp16(tmp_path):
    weight = helper.make_tensor("w", TensorProto.FLOAT16, [64, 10], np.ones((64, 10), np.float16).tobytes(), raw=True)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 10])], [weight])
    path = tmp_path / "half.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.write_bytes(model.SerializeToString())
    assert artifact_from_file(path).precision == "fp16"
    assert artifact_from_file(_model_with_weight(tmp_path / "plain.onnx")).precision == "fp32"


def test_validate_names_the_three_lowest_classes_and_records_every_one(run_cli, run_dir, fast_profile_path, tmp_path):
    report = tmp_path / "v.json"
    code, out, err = run_cli("validate", run_dir / "student-fp32.onnx", "--data", "digits", "--resolution", "16",
                             "--profile", fast_profile_path, "--json", report)
    assert code == 0, err
    by_class = json.loads(report.read_text())["artifacts"][0]["class_accuracy"]
    assert sorted(by_class) == [str(i) for i in range(10)]
    lowest = sorted((acc, name) for name, acc in by_class.items())[:3]
    assert "(lowest classes: " + ", ".join(f"{name} {acc:.1%}" for acc, name in lowest) + ")" in out


def test_validate_and_gate_say_when_the_data_was_split_with_other_images(run_cli, run_dir, small_data, tmp_path):
    """Images added to the run's data since: the recorded seed deals another test split from it, and a third
    of its images were the model's training images, while validate and gate reported the accuracy without a
    word. Data that gives its own test split is not re-dealt and has nothing to say."""
    from sklearn.datasets import load_digits

    from edgekd.data import load_data
    from edgekd.onnx_metadata import embedded_split_data, stamp_data_metadata
    from edgekd.validate import artifact_from_file

    x, y = load_digits(return_X_y=True)
    side = str(small_data.input_shape[-1])
    then, now, given = tmp_path / "then.npz", tmp_path / "now.npz", tmp_path / "given.npz"
    np.savez(then, x=x[:300].reshape(-1, 8, 8), y=y[:300])
    np.savez(now, x=x[:310].reshape(-1, 8, 8), y=y[:310])
    np.savez(given, x_train=x[:300].reshape(-1, 8, 8), y_train=y[:300], x_test=x[300:400].reshape(-1, 8, 8),
             y_test=y[300:400])
    model = Path(shutil.copy(run_dir / "student-fp32.onnx", tmp_path / "m.onnx"))
    stamp_data_metadata(artifact_from_file(model), load_data(str(then), resolution=int(side)), seed=0)
    assert embedded_split_data(model)["images"] == 300
    note = "data 'now.npz' is not the data 'm.onnx' was split on (310 images now, 300 then)"
    for data, said in ((then, False), (now, True), (given, False)):
        code, _, err = run_cli("validate", model, "--data", data, "--resolution", side)
        assert code in (0, 1) and (note in err) == said, err
    code, out, _ = run_cli("gate", model, "--min-accuracy", "0", "--data", now, "--resolution", side,
                           "--config", os.devnull)
    assert code == 0 and note in out, out
    code, _, err = run_cli("validate", model, "--data", now, "--resolution", side, "--seed", "1")
    assert note not in err and "was trained on the split of seed 0" in err  # said once, by the seed's warning


def _stamped_model(path: Path, data) -> Path:
    """A tiny model taking ``data``'s images, carrying what training on it records (channels, class names)."""
    from conftest import foreign_onnx

    from edgekd.onnx_metadata import stamp_data_metadata

    foreign_onnx(path, data.input_shape, data.num_classes)
    stamp_data_metadata(artifact_from_file(path), data, seed=0)
    return path


def _gray_images(folder: Path, classes, count: int, colour_first: bool = False) -> None:
    from PIL import Image

    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = Image.fromarray(np.full((16, 16), 40 * i, np.uint8))
            (image.convert("RGB") if colour_first and i == 0 else image).save(folder / name / f"{i}.png")


def test_grayscale_test_images_for_a_model_whose_training_read_as_rgb_are_repeated_as_training_did(
        run_cli, fast_profile_path, tmp_path):
    """One RGB file among grayscale X-rays made the training set RGB; a grayscale test set was refused, with
    --resolution as the fix."""
    from edgekd.data import load_data

    _gray_images(tmp_path / "xray", ("normal", "pneumonia"), 6, colour_first=True)
    trained = load_data(str(tmp_path / "xray"))
    assert trained.input_shape == (3, 16, 16) and trained.preprocess.channels == "rgb"
    model = _stamped_model(tmp_path / "xray.onnx", trained)
    _gray_images(tmp_path / "held" / "test", ("normal", "pneumonia"), 3)
    code, out, err = run_cli("validate", model, "--data", tmp_path / "held", "--profile", fast_profile_path)
    assert code == 0 and "accuracy on held test split (6 images)" in out, err


def test_a_test_set_numbered_from_one_is_scored_by_a_model_of_classes_one_to_three(run_cli, fast_profile_path,
                                                                                      tmp_path):
    """Labels 1..3 alone were numbered 0..3, and the model of classes "1".."3" refused: "data has 4"."""
    from edgekd.data import load_data

    _gray_images(tmp_path / "train", ("1", "2", "3"), 4)
    model = _stamped_model(tmp_path / "m.onnx", load_data(str(tmp_path / "train")))
    rows = "".join(f"train/{c}/{i}.png,{c},test\n" for c in "123" for i in range(4))
    (tmp_path / "test.csv").write_text("path,label,split\n" + rows)
    np.savez(tmp_path / "test.npz", x_test=np.zeros((6, 16, 16), np.uint8), y_test=np.array([1, 2, 3] * 2))
    for data, count in (("test.csv", 12), ("test.npz", 6)):
        code, out, err = run_cli("validate", model, "--data", tmp_path / data, "--profile", fast_profile_path)
        assert code == 0 and f"accuracy on {data} test split ({count} images)" in out, err


def test_a_recheck_just_past_its_latency_tolerance_prints_the_digit_that_fails_it(monkeypatch, tmp_path):
    """validate --manifest printed "1.10x the recorded p50 ... (95% interval 1.09-1.12x)" for 1.104x on a FAIL."""
    import edgekd.latency.compare as compare
    import edgekd.manifest_check as manifest_check
    from edgekd.profiles import load_profile
    from edgekd.types import LatencyStats, Ratio

    rounds = [[LatencyStats(0.05, 0.06, 0.06, 0.05, 0.0, 10, 3)] * 2] * 3
    monkeypatch.setattr(compare, "measure_until_clear", lambda *a, **k: (Ratio(1.104, 1.09, 1.12, 27), rounds, 0))
    ref = {"artifact": {"name": "student-fp32", "path": "student-fp32.onnx"}, "latency": {"p50_ms": 0.1}}
    monkeypatch.setattr(manifest_check, "_reference_entries", lambda *a: [ref])
    entry = {"artifact": {"name": "student-int8", "path": "student-int8.onnx"}, "latency": {"p50_ms": 0.05}}
    check = manifest_check._recheck_latency(tmp_path / "student-int8.onnx", entry, {}, tmp_path,
                                            load_profile("host-cpu-1t"), manifest_check.RecheckConfig())
    assert not check.passed and check.message.startswith("1.104x the recorded p50 relative to student-fp32"), \
        check.message
    assert "95% interval 1.090-1.120x" in check.message


def test_a_student_is_rechecked_against_its_twin_by_the_paired_ratio_compress_measured(monkeypatch, tmp_path):
    """An unchanged int8 student failed validate --manifest at 1.12x: its ratio to the fp32 twin was held to the
    ratio of the two recorded p50s (0.90, each its own median run's), not to the paired 0.99 that decided it."""
    import edgekd.latency.compare as compare
    import edgekd.manifest_check as manifest_check
    from edgekd.profiles import load_profile
    from edgekd.types import LatencyStats, Ratio

    scales = []

    def measured(*_, scale=1.0, **__):
        scales.append(scale)
        return Ratio(1.0, 0.98, 1.02, 27), [[LatencyStats(0.1, 0.1, 0.1, 0.1, 0.0, 10, 3)] * 2], 0

    def entry(name, role, precision, p50):
        return {"artifact": {"name": name, "path": f"{name}.onnx", "role": role, "precision": precision},
                "latency": {"p50_ms": p50}}

    int8, fp32 = entry("student-int8", "student", "int8", 0.09), entry("student-fp32", "student", "fp32", 0.1)
    teacher = entry("teacher-fp32", "teacher", "fp32", 0.09)
    monkeypatch.setattr(compare, "measure_until_clear", measured)
    # the teacher first, as the closest in recorded p50
    monkeypatch.setattr(manifest_check, "_reference_entries",
                        lambda own, *a: [e for e in (teacher, int8, fp32) if e is not own])
    manifest = {"artifacts": [int8, fp32, teacher], "int8_speedup": {"median": 0.99, "runs": [0.9]}}
    check = manifest_check._recheck_latency(tmp_path / "student-int8.onnx", int8, manifest, tmp_path,
                                            load_profile("host-cpu-1t"), manifest_check.RecheckConfig())
    assert scales == [pytest.approx(1 / 0.99)] and check.message.startswith("1.00x the recorded p50 relative to "
                                                                            "student-fp32"), check.message
    assert check.passed
    # the fp32 twin the other way round; with no paired figure recorded, the recorded p50s as before
    manifest_check._recheck_latency(tmp_path / "student-fp32.onnx", fp32, manifest, tmp_path,
                                    load_profile("host-cpu-1t"), manifest_check.RecheckConfig())
    del manifest["int8_speedup"]
    manifest_check._recheck_latency(tmp_path / "student-int8.onnx", int8, manifest, tmp_path,
                                    load_profile("host-cpu-1t"), manifest_check.RecheckConfig())
    assert scales[1:] == [pytest.approx(0.99), pytest.approx(0.09 / 0.09)]


def test_the_stage_functions_take_a_profile_by_name_or_path_and_no_budget_as_search_does(tmp_path,
                                                                                        fast_profile_path):
    """validate(), measure() and get_runner() failed on a profile name ('str' object has no attribute 'runner'),
    validate() on budget=None, and measure() read one path as a list of its characters."""
    from conftest import foreign_onnx

    from edgekd import artifact_from_file, measure, validate

    model = foreign_onnx(tmp_path / "tiny.onnx", (1, 8, 8), 3)
    (stats,) = measure(str(model), str(fast_profile_path))
    assert stats.p50_ms > 0
    report = validate([artifact_from_file(model)], str(fast_profile_path), None, rounds=1)
    assert report.reports[0].latency is not None and report.passed


def _colour_conv_any_shape(path: Path) -> Path:
    """A model exported elsewhere whose input records no size at all (N, C, H, W all free) and whose convolution
    takes 3 channels: fed 1-channel images, it loads and then fails in onnxruntime on every batch."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.ones(4 * 27, np.float32).tolist())
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    free = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", "H", "W"])
    graph = helper.make_graph(nodes, "g", [free], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_a_model_that_fixes_its_batch_inside_its_graph_is_scored_one_image_at_a_time(tmp_path, fast_profile):
    """A torch export with a dynamic batch and a hard-coded x.reshape(1, ...) failed with onnxruntime's traceback."""
    from conftest import pixel_data, pixel_onnx

    from edgekd.data import load_data
    from edgekd.latency.runtime import predictions_on_test_split, top1

    data = load_data(str(pixel_data(tmp_path / "d.npz")), normalize="none")
    scores, labels, notes = predictions_on_test_split(pixel_onnx(tmp_path / "one.onnx", reshape=(1, 16)),
                                                      fast_profile, data)
    assert top1(scores, labels) == 1.0
    assert len(notes) == 1 and notes[0].startswith("'one.onnx' fails on a batch of several images (Reshape node "
                                                   "'/Reshape': ") and "scored one at a time" in notes[0], notes
    assert "onnxruntime_src" not in notes[0]


def test_a_model_that_fails_on_one_image_too_is_one_line_naming_it(run_cli, tmp_path, fast_profile,
                                                                    fast_profile_path):
    from conftest import pixel_data

    from edgekd.data import load_data
    from edgekd.latency.runtime import predictions_on_test_split

    model, data = _colour_conv_any_shape(tmp_path / "rgb.onnx"), pixel_data(tmp_path / "d.npz")
    with pytest.raises(ArtifactError, match=r"'rgb.onnx' fails to run on the test images \(fed as 1,1,4,4\): Conv "
                                            r"node '[^']*': Input channels .*; check that the model takes the "
                                            r"data's images"):
        predictions_on_test_split(model, fast_profile, load_data(str(data)))
    code, out, err = run_cli("validate", model, "--data", data, "--normalize", "none", "--profile", fast_profile_path)
    assert code == 2 and err.startswith("error: 'rgb.onnx' fails to run on the test images") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    code, out, err = run_cli("gate", model, "--data", data, "--normalize", "none", "--min-accuracy", "0.5",
                             "--config", os.devnull)
    assert code == 2 and err.startswith("error: 'rgb.onnx' fails to run") and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("names, read, why", [
    (("embedding", "logits"), "logits", "named as class scores, of the 2 that give 4 classes"),
    (("features", "Class_Probs"), "Class_Probs", "named as class scores"),
    (("head_output", "scores"), "scores", "named as class scores"),  # a whole name before an ending
    (("a_logits", "b_scores"), "a_logits", "named as class scores, the first of those so named ('b_scores' is too)"),
    (("a", "b"), "a", "the first, as several of them give 4 classes"),  # nothing named: the first, as before
])
def test_of_several_outputs_with_the_datas_classes_the_one_named_as_scores_is_read(tmp_path, fast_profile, names,
                                                                                   read, why):
    from conftest import pixel_data, pixel_onnx

    from edgekd.data import load_data
    from edgekd.latency.runtime import predictions_on_test_split, top1

    data = load_data(str(pixel_data(tmp_path / "d.npz")), normalize="none")
    shifts = {read: 0, **{n: 1 for n in names if n != read}}  # the output read predicts right, the other never
    model = pixel_onnx(tmp_path / "two.onnx", outputs=tuple((n, shifts[n]) for n in names))
    scores, labels, notes = predictions_on_test_split(model, fast_profile, data)
    assert top1(scores, labels) == 1.0
    assert notes[0].startswith(f"'two.onnx' has 2 outputs; accuracy is read from '{read}', {why}"), notes


def test_a_model_with_more_classes_than_the_data_is_scored_with_a_note(tmp_path, fast_profile):
    from conftest import pixel_data, pixel_onnx

    from edgekd.data import load_data
    from edgekd.latency.runtime import predictions_on_test_split

    data = load_data(str(pixel_data(tmp_path / "d.npz")), normalize="none")
    _, _, notes = predictions_on_test_split(pixel_onnx(tmp_path / "six.onnx", classes=6), fast_profile, data)
    assert notes == ("'six.onnx' gives 6 classes and data 'd.npz' has 4: its labels 0-3 are compared with the model's "
                     "top class among all 6, so a prediction of 4 or above counts as wrong; pass the data the model "
                     "was built for",)
    _, _, notes = predictions_on_test_split(pixel_onnx(tmp_path / "four.onnx"), fast_profile, data)
    assert notes == ()


def _symbolic_classes(path: Path, widths: dict[str, int]) -> Path:
    """A model taking pixel_data's (N, 1, 4, 4) images with an output of each of ``widths`` (name: classes), class k
    scored by pixel k (the data's label where k < 4), each width computed from the input's height (a slice to
    x.shape[2] + width - 4), so that neither the file nor onnxruntime's shape inference knows it: ['N', 'K'], as
    a head whose width follows the input gives."""
    inits = [helper.make_tensor("two", TensorProto.INT64, [1], [2]), helper.make_tensor("zero", TensorProto.INT64,
                                                                                        [1], [0])]
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "two"], ["height"], axis=0)]
    for name, width in widths.items():
        weight = np.zeros((16, width), np.float32)
        weight[np.arange(min(4, width)), np.arange(min(4, width))] = 1
        inits += [helper.make_tensor(f"w_{name}", TensorProto.FLOAT, [16, width], weight.ravel().tolist()),
                  helper.make_tensor(f"more_{name}", TensorProto.INT64, [1], [width - 4])]
        nodes += [helper.make_node("MatMul", ["flat", f"w_{name}"], [f"all_{name}"]),
                  helper.make_node("Add", ["height", f"more_{name}"], [f"end_{name}"]),
                  helper.make_node("Slice", [f"all_{name}", "zero", f"end_{name}", "one_axis"], [name])]
    inits.append(helper.make_tensor("one_axis", TensorProto.INT64, [1], [1]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", f"K{n}"]) for n in widths],
                              inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_a_model_whose_class_count_is_symbolic_is_checked_by_the_count_it_gives(tmp_path, fast_profile, run_cli,
                                                                                 fast_profile_path):
    """Only a declared class count was checked: a 3-class model with a symbolic one was scored on 4-class data,
    the images of class 3 counted wrong, and validate and gate passed it without a word."""
    from conftest import pixel_data

    from edgekd.data import load_data
    from edgekd.errors import DataError
    from edgekd.latency.runtime import open_session, predictions_on_test_split

    data_file = pixel_data(tmp_path / "d.npz")
    data = load_data(str(data_file), normalize="none")
    three = _symbolic_classes(tmp_path / "three.onnx", {"y": 3})
    assert open_session(three, fast_profile).get_outputs()[0].shape == ["N", "Ky"]  # unknown to onnxruntime too
    with pytest.raises(DataError, match="'.*three.onnx' predicts 3 classes, and data 'd.npz' has 4; pass the data"):
        predictions_on_test_split(three, fast_profile, data)
    for command in (["validate", three, "--profile", fast_profile_path],
                    ["gate", three, "--no-latency", "--min-accuracy", "0.5", "--config", os.devnull]):
        code, out, err = run_cli(*command, "--data", data_file, "--normalize", "none")
        assert code == 2 and err.startswith(f"error: '{three}' predicts 3 classes, and data 'd.npz' has 4"), out + err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # more classes than the data: the note a declared count gets
    _, _, notes = predictions_on_test_split(_symbolic_classes(tmp_path / "six.onnx", {"y": 6}), fast_profile, data)
    assert notes == ("'six.onnx' gives 6 classes and data 'd.npz' has 4: its labels 0-3 are compared with the model's "
                     "top class among all 6, so a prediction of 4 or above counts as wrong; pass the data the model "
                     "was built for",)


def test_of_several_outputs_of_symbolic_width_the_one_giving_the_datas_classes_is_read(tmp_path, fast_profile):
    """With every class dimension symbolic, the first output was read (none 'gave' the data's classes): here a
    3-wide one beside the 4-class scores."""
    from conftest import pixel_data

    from edgekd.data import load_data
    from edgekd.latency.runtime import predictions_on_test_split, top1

    model = _symbolic_classes(tmp_path / "two.onnx", {"a": 3, "b": 4})
    data = load_data(str(pixel_data(tmp_path / "d.npz")), normalize="none")
    scores, labels, notes = predictions_on_test_split(model, fast_profile, data)
    assert top1(scores, labels) == 1.0
    assert notes == ("'two.onnx' has 2 outputs; accuracy is read from 'b', the only one of 4 classes",)


def test_a_model_with_several_inputs_is_refused_with_data_as_without(tmp_path, run_cli, fast_profile_path):
    """Without --data it was one line naming its inputs; with it, onnxruntime's 'Required inputs are missing' after
    two runs, with advice on layouts and --resolution that could not fix it."""
    from conftest import pixel_data

    weight = helper.make_tensor("w", TensorProto.FLOAT, [16, 4], np.ones((16, 4), np.float32).ravel().tolist())
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["s"]),
             helper.make_node("Mul", ["s", "t"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4]),
                                           helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [weight])
    model = tmp_path / "two_in.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(model))
    data = pixel_data(tmp_path / "d.npz")
    said = (f"error: model '{model}' has 2 inputs (x, t); edgekd measures single-input models (one image tensor); "
            "export the model with one input")
    code, out, err = run_cli("validate", model, "--input-shape", "1,1,4,4", "--profile", fast_profile_path)
    assert code == 2 and err.strip() == said, out + err
    for command in (["validate", model, "--profile", fast_profile_path],
                    ["gate", model, "--no-latency", "--min-accuracy", "0.5", "--config", os.devnull]):
        code, out, err = run_cli(*command, "--data", data, "--normalize", "none")
        assert code == 2 and err.strip().splitlines()[-1] == said, out + err
        assert "Required inputs" not in err and "Traceback" not in err


def test_validate_json_records_the_preprocessing_the_images_were_fed_with(run_cli, tmp_path, fast_profile_path):
    """A model exported elsewhere scores by --normalize, --resolution and --channels alone, and the JSON's data
    block read the same whichever were given: a CI job comparing two records could not tell."""
    from conftest import pixel_data, pixel_onnx

    from edgekd.data import Preprocess
    from edgekd.onnx_metadata import PREPROCESS_KEY

    data = pixel_data(tmp_path / "d.npz")
    common = ["--data", data, "--profile", fast_profile_path, "--json"]
    records = {}
    for name, flags, metadata in (("stats", [], None), ("flags", ["--normalize", "0.5/0.25"], None),
                                  ("recorded", [], Preprocess(1.0, (0.0,), (1.0,), "as stored").to_dict())):
        model = pixel_onnx(tmp_path / f"{name}.onnx",
                           metadata={PREPROCESS_KEY: json.dumps(metadata)} if metadata else None)
        code, out, err = run_cli("validate", model, *flags, *common, tmp_path / f"{name}.json")
        assert code == 0, out + err
        records[name] = json.loads((tmp_path / f"{name}.json").read_text())["data"]
    fed = records["stats"]["preprocess"]
    assert {k: records["stats"][k] for k in ("given", "name", "test_images", "seed")} == {
        "given": str(data), "name": "d.npz", "test_images": 40, "seed": 0}
    assert fed["layout"] == "NCHW" and fed["dtype"] == "float32" and fed["input_shape"] == [1, 4, 4]
    assert fed["scale"] == 1.0 and fed["mean"][0] > 0.3 and fed["resize"] is None and fed["channels"] == "as stored"
    assert fed["from"] == {"normalize": "data statistics", "resize": "as stored", "channels": "as stored"}
    assert records["flags"]["preprocess"]["mean"] == [0.5] and records["flags"]["preprocess"]["std"] == [0.25]
    assert records["flags"]["preprocess"]["from"]["normalize"] == "--normalize"
    assert records["recorded"]["preprocess"]["mean"] == [0.0]
    assert records["recorded"]["preprocess"]["from"]["normalize"] == "model metadata"


def test_the_api_loads_data_for_a_model_as_validate_does_with_its_notes(tmp_path, fast_profile):
    """The notes on what was assumed came from the CLI alone: a Python user calling validate() with load_data's
    data scored a model exported elsewhere on a seeded fifth, normalised with the data's statistics, unsaid."""
    from conftest import pixel_data, pixel_onnx

    from edgekd import load_data_for, validate
    from edgekd.onnx_metadata import stamp_data_metadata
    from edgekd.validate import artifact_from_file

    model = pixel_onnx(tmp_path / "m.onnx")
    whole = pixel_data(tmp_path / "whole.npz", 60, ("x", "y"))
    data = load_data_for(model, whole)
    assert len(data.notes) == 2 and data.notes[0].startswith("'m.onnx' records no preprocessing, so data 'whole.npz' "
                                                             "was normalised with its own mean and std")
    assert data.notes[1].startswith("'m.onnx' records no split of edgekd's, and data 'whole.npz' gives no test "
                                    "split of its own: 12 of its 60 images")
    assert load_data_for(model, whole, normalize="none", seed=3).notes == (data.notes[1].replace("seed 0", "seed 3"),)
    stamp_data_metadata(artifact_from_file(model), data, seed=1)  # as a run of edgekd's records its split
    assert load_data_for(model, whole, normalize="none").notes == ()
    assert load_data_for(model, whole, normalize="none", seed=0).notes == (
        f"'{model}' was trained on the split of seed 1: the test images of --seed 0 include some of its training "
        "images, so its accuracy reads high",)
    report = validate([artifact_from_file(model)], fast_profile, None, load_data_for(model, whole, normalize="none"))
    assert report.reports[0].accuracy is not None


def test_validate_says_which_normalisation_and_split_it_assumed_for_a_model_exported_elsewhere(
        run_cli, tmp_path, fast_profile_path):
    """A model without edgekd's metadata was standardised with the data's statistics, and scored on a seeded fifth
    of the user's images, and neither was said."""
    from conftest import pixel_data, pixel_onnx

    from edgekd.onnx_metadata import SPLIT_SEED_KEY

    model = pixel_onnx(tmp_path / "m.onnx")
    held_out, whole = pixel_data(tmp_path / "held.npz"), pixel_data(tmp_path / "whole.npz", 60, ("x", "y"))
    common = ["--profile", fast_profile_path]
    report = tmp_path / "v.json"
    code, out, err = run_cli("validate", model, "--data", held_out, "--json", report, *common)
    normalised = ("warning: 'm.onnx' records no preprocessing, so data 'held.npz' was normalised with its own mean "
                  "and std (mean ")
    assert code == 0 and normalised in err and "pass --normalize none or MEAN/STD if the model expects otherwise" \
        in err and "split" not in err, err
    assert any(n.startswith(normalised) for n in json.loads(report.read_text())["notes"])
    code, out, err = run_cli("validate", model, "--data", held_out, "--normalize", "dataset", *common)
    assert code == 0 and "records no preprocessing" not in err, err  # chosen, not assumed
    code, out, err = run_cli("validate", model, "--data", whole, "--normalize", "none", *common)
    assert code == 0 and "test split (12 images)" in out
    assert ("warning: 'm.onnx' records no split of edgekd's, and data 'whole.npz' gives no test split of its own: 12 "
            "of its 60 images, the test split that seed 0 deals, were scored; to score every image, give them as a "
            "held-out test set: an .npz of x_test/y_test alone") in err, err
    code, out, err = run_cli("validate", model, "--data", whole, "--normalize", "none", "--seed", "3", *common)
    assert "the test split that seed 3 deals" in err, err
    made = pixel_onnx(tmp_path / "made.onnx", metadata={SPLIT_SEED_KEY: "0"})  # edgekd's own: its split is right
    code, out, err = run_cli("validate", made, "--data", whole, "--normalize", "none", *common)
    assert code == 0 and "records no split" not in err, err
    # A file edgekd wrote without a seed (a compress run's teacher, trained on that split's training part): every
    # image, as the note advises, would score it on images it was trained on.
    teacher = pixel_onnx(tmp_path / "teacher-fp32.onnx", metadata={"edgekd.version": "0.1.0"})
    code, out, err = run_cli("validate", teacher, "--data", whole, "--normalize", "none", *common)
    assert code == 0 and "records no split" not in err, err


# -- input shapes edgekd cannot feed as they are -------------------------------------------------------------


def _rgb_channels_last(path: Path, open_size: bool = False) -> Path:
    """A colour classifier converted from TensorFlow: (N, 16, 16, 3) input, or (N, H, W, 3) with its size open."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 10)).eval()

    class ChannelsLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x.permute(0, 3, 1, 2))

    dynamic = {0: "n", **({1: "h", 2: "w"} if open_size else {})}
    torch.onnx.export(ChannelsLast().eval(), (torch.zeros(1, 16, 16, 3),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": dynamic})
    return path


@pytest.mark.parametrize("open_size", [False, True])
def test_a_channels_last_colour_model_fed_grayscale_is_told_to_pass_channels(run_cli, fast_profile_path, tmp_path,
                                                                             open_size):
    """--resolution cannot give grayscale images the 3 channels an NHWC model takes: --channels can."""
    model = _rgb_channels_last(tmp_path / "rgb.onnx", open_size)
    common = ["--data", "digits", "--resolution", "16", "--profile", fast_profile_path]
    told = ("takes ?x?x3" if open_size else "takes 16x16x3") + (
        " inputs, and data 'digits' has 16x16x1 images; pass --channels 3 (grayscale repeated to RGB), the channels "
        "the model takes")
    code, _, err = run_cli("validate", model, *common)
    assert code == 2 and told in err and "--input-shape" not in err, err
    code, _, err = run_cli("gate", model, "--min-accuracy", "0", "--max-latency", "1s", "--config", os.devnull,
                           *common)
    assert code == 2 and told in err, err
    code, out, err = run_cli("validate", model, *common, "--channels", "3")
    assert code == 0 and "fed to it as NHWC" in out, err
    if not open_size:  # another size as well: both flags
        code, _, err = run_cli("validate", model, *common[:2], *common[-2:])
        assert code == 2 and "data 'digits' has 32x32x1 images; pass --channels 3 (grayscale repeated to RGB) and " \
                             "--resolution 16, the channels and size the model takes" in err, err


def _no_batch(path: Path, dims: list) -> Path:
    """A classifier exported for one image at a time: its input has no batch dimension."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["b"]), helper.make_node("Flatten", ["b"], ["y"])]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [axes]),
                                opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_a_model_without_a_batch_dimension_is_refused_as_such(run_cli, fast_profile_path, tmp_path):
    """(1, 16, 16) read as a batch of one 16-wide image was told to take another --resolution, which cannot help;
    (3, 16, 16) was timed "at batch 3"."""
    gray, rgb = _no_batch(tmp_path / "gray.onnx", [1, 16, 16]), _no_batch(tmp_path / "rgb.onnx", [3, 16, 16])
    fix = "; re-export the model with a batch dimension first, e.g. torch.onnx.export with an example input of shape "
    data = ["--data", "digits", "--resolution", "16", "--profile", fast_profile_path]
    for command in (["validate", gray, *data],
                    ["gate", gray, "--min-accuracy", "0", "--config", os.devnull, *data],
                    ["gate", gray, "--min-accuracy", "0", "--max-latency", "1s", "--config", os.devnull, *data]):
        code, _, err = run_cli(*command)
        assert code == 2 and "Traceback" not in err, err
        assert f"error: '{gray}' takes input of shape (1, 16, 16), one image with no batch dimension, and edgekd " \
               f"feeds images in batches (batch, channels, height, width){fix}(1, 1, 16, 16)" in err
    for command in ("bench", "validate"):  # timed alone: a leading 3 is an RGB image's channels, not a batch
        code, _, err = run_cli(command, rgb, "--profile", fast_profile_path)
        assert code == 2 and f"'{rgb}' takes input of shape (3, 16, 16), one image with no batch dimension" in err
        assert f"{fix}(1, 3, 16, 16)" in err
    code, out, err = run_cli("bench", gray, "--profile", fast_profile_path)  # may be a sequence model's batch of 1
    assert code == 0 and "gray.onnx" in out, err
    batched = _no_batch(tmp_path / "batched.onnx", ["batch", 16, 16])  # its open first dimension is a batch
    code, _, err = run_cli("validate", batched, *data)
    assert code == 2 and f"error: '{batched}' takes input of shape (batch, 16, 16), a batch of images without a " \
        "channel dimension, and edgekd feeds images as (batch, channels, height, width); re-export the model " \
        "taking a channel dimension, e.g. an example input of shape (1, 1, 16, 16)" in err, err


def test_fp32_ships_when_the_search_checked_the_budgets_for_fp32():
    """--precision fp32 (or a search file searched for it) shipped the int8 student whenever it was faster: a
    model the search never held to the budget."""
    from edgekd.types import ArtifactReport, LatencyStats, Ratio
    from edgekd.validate import ship_decision

    lat = LatencyStats(1.0, 1.0, 1.0, 1.0, 0.0, 10, 1)

    def student(precision, ok):
        return ArtifactReport(_artifact(f"student-{precision}", precision), True, None, 0.97, lat, {"latency": ok})

    faster = Ratio(1.3, 1.25, 1.35, 21)
    reports = [student("fp32", True), student("int8", True)]
    assert ship_decision(reports, faster, 3, Budget(latency_ms=1.0))[0] == "student-int8"
    assert ship_decision(reports, faster, 3, Budget(latency_ms=1.0), "int8")[0] == "student-int8"
    primary, notes = ship_decision(reports, faster, 3, Budget(latency_ms=1.0), "fp32")
    assert primary == "student-fp32"
    assert notes[0].startswith("fp32 ships: the search checked the budgets for fp32 (--precision fp32); the int8 "
                               "student is validated beside it for reference (int8 ran at 1.30x"), notes
    # within the budget only in int8: still fp32, and the note says how to ship int8
    primary, notes = ship_decision([student("fp32", False), student("int8", True)], faster, 3,
                                   Budget(latency_ms=1.0), "fp32")
    assert primary == "student-fp32" and "breaks the budget (latency)" in notes[0]
    assert "search again with --precision int8 to ship int8" in notes[0]


@pytest.mark.parametrize(("model_shape", "stored", "told"), [
    ((3, 16, 16), (16, 16, 4), "has 4x16x16 images; drop the alpha channel (x[..., :3] of (N, H, W, 4) images, "
                               "x[:, :3] of (N, 4, H, W)) before saving the .npz, as the model takes 3-channel images"),
    ((3, 16, 16), (32, 32, 4), "has 4x32x32 images; drop the alpha channel (x[..., :3] of (N, H, W, 4) images, "
                               "x[:, :3] of (N, 4, H, W)) before saving the .npz, and pass --resolution 16, as the "
                               "model takes 3-channel images"),
    ((1, 16, 16), (16, 16, 4), "before saving the .npz, and pass --channels 1 (RGB to luminance), as the model "
                               "takes 1-channel images"),
    ((5, 16, 16), (16, 16, 3), "has 3x16x16 images; pass 5-channel images, as the model takes (--channels converts "
                               "1-channel images to 3, and 3 to 1, only)"),
])
def test_a_channel_mismatch_is_told_as_channels_never_as_a_resolution(run_cli, fast_profile_path, tmp_path,
                                                                       model_shape, stored, told):
    """RGBA data for an RGB model was told to pass "the data the model was built for, at its resolution
    (--resolution)": the channels differ, and --channels converts 1 and 3 only, so the alpha is the user's to drop."""
    from conftest import foreign_onnx

    model = foreign_onnx(tmp_path / "m.onnx", model_shape, 2)
    data = tmp_path / "rgba.npz"
    np.savez(data, x=np.random.default_rng(0).integers(0, 256, (40, *stored), dtype=np.uint8), y=np.arange(40) % 2)
    code, _, err = run_cli("validate", model, "--data", data, "--profile", fast_profile_path)
    assert code == 2 and told in err, err
    assert "at its resolution" not in err and (stored[0] != 16 or "--resolution" not in err)


def _pngs(folder: Path, side: int, count: int = 6) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"c{i % 2}" / f"{i}.png")
    return folder


def test_images_of_another_size_than_the_model_takes_are_refused_before_any_is_decoded(run_cli, fast_profile_path,
                                                                                        tmp_path):
    """20,000 photos were decoded (19 s, 2.5 GB) before validate said the model takes 32x32: the sizes are known
    from the files' headers, and the model's from its input, so it is said first (here a cut file would fail
    to decode, so only a refusal from the headers reaches the size)."""
    from conftest import foreign_onnx

    model = foreign_onnx(tmp_path / "m.onnx", (3, 16, 16), 2)
    photos = _pngs(tmp_path / "photos", 24)
    cut = photos / "c1" / "5.png"
    cut.write_bytes(cut.read_bytes()[:60])  # the header whole, the pixels gone
    told = ("takes 3x16x16 inputs, and data 'photos' has 3x24x24 images (the first image's size, no --resolution "
            "given); pass --resolution 16, the model's size")
    code, _, err = run_cli("validate", model, "--data", photos, "--profile", fast_profile_path)
    assert code == 2 and told in err, err
    code, _, err = run_cli("validate", model, "--data", photos, "--resolution", "20", "--profile", fast_profile_path)
    assert code == 2 and "has 3x20x20 images; pass --resolution 16, the model's size" in err, err
    code, _, err = run_cli("gate", model, "--min-accuracy", "0", "--max-latency", "1s", "--config", os.devnull,
                           "--data", photos, "--profile", fast_profile_path)
    assert code == 2 and told in err, err


def test_a_memory_refusal_for_a_fixed_size_model_does_not_suggest_another_size(run_cli, fast_profile_path, tmp_path,
                                                                              monkeypatch):
    """A 32x32 model's photos were told to pass "a smaller --resolution (e.g. 224)": at the model's own size,
    only fewer images help."""
    from conftest import foreign_onnx

    import edgekd.preprocess

    model = foreign_onnx(tmp_path / "m.onnx", (3, 16, 16), 2)
    photos = _pngs(tmp_path / "photos", 16)
    monkeypatch.setattr(edgekd.preprocess, "available_memory", lambda: 1_000)
    code, _, err = run_cli("validate", model, "--data", photos, "--profile", fast_profile_path)
    assert code == 2 and "would take about" in err and "; pass fewer images: the model takes this size" in err, err
    assert "e.g. 224" not in err


def test_load_data_for_refuses_what_validate_would_and_names_a_model_that_is_not_a_file(tmp_path):
    """The Python API handed a 16x16 model 8x8 images without a word (validate refuses them), and a missing
    model or a torch module raised FileNotFoundError or TypeError from reading its metadata."""
    import numpy as np
    import torch
    from conftest import foreign_onnx

    from edgekd import load_data_for
    from edgekd.errors import ArtifactError, ConfigError, DataError

    model = foreign_onnx(tmp_path / "m.onnx", (1, 16, 16), 10)
    arrays = tmp_path / "xy.npz"
    rng = np.random.default_rng(0)
    np.savez(arrays, x=rng.random((40, 1, 8, 8), dtype=np.float32), y=np.arange(40) % 10)
    with pytest.raises(DataError, match=r"takes 1x16x16 inputs, and data 'xy.npz' has 1x8x8 images"):
        load_data_for(model, str(arrays))
    assert load_data_for(model, str(arrays), resolution=16).input_shape == (1, 16, 16)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_data_for(tmp_path / "missing.onnx", str(arrays))
    with pytest.raises(ConfigError, match="model is a Sequential, not the path of an ONNX file"):
        load_data_for(torch.nn.Sequential(), str(arrays))


def test_a_recheck_splits_the_data_with_the_seed_the_model_records_before_the_recipes(small_data, monkeypatch,
                                                                                      tmp_path):
    """A run given a Dataset split by load_data's seed (3) records it in its files; the manifest's recipe holds the
    run's --seed (7). Rechecking with the data passed again re-split it with 7: partly the model's training images."""
    from conftest import foreign_onnx

    import edgekd.data
    from edgekd import manifest_check
    from edgekd.onnx_metadata import stamp_data_metadata
    from edgekd.profiles import load_profile
    from edgekd.validate import artifact_from_file

    model = foreign_onnx(tmp_path / "student-fp32.onnx", small_data.input_shape, 10)
    stamp_data_metadata(artifact_from_file(model, "student-fp32"), edgekd.data.load_data("digits", resolution=16,
                                                                                          seed=3), 3)
    seeds = []

    class Read(Exception):
        pass

    def load_data(*args, seed=0, **kw):
        seeds.append(seed)
        raise Read  # the seed is all this test reads

    monkeypatch.setattr(edgekd.data, "load_data", load_data)
    manifest = {"recipe": {"seed": 7, "data": None}, "data": {"name": "held"}}
    with pytest.raises(Read):
        manifest_check._recheck_accuracy(model, {"accuracy": 0.5}, manifest, load_profile("host-cpu-1t"),
                                         manifest_check.RecheckConfig(data="digits"))
    assert seeds == [3]


@pytest.mark.parametrize("make, said", [
    (lambda: __import__("edgekd").CompressConfig(latency_anchors="5"), "latency_anchors must be a whole number"),
    (lambda: __import__("edgekd").CompressConfig(target_ms="1"), "--target-ms must be a number"),
    (lambda: __import__("edgekd").CompressConfig(target_ms=1, prune_steps="2"), "--prune-steps must be a whole"),
    (lambda: __import__("edgekd").GateConfig(min_accuracy="0.9", data="digits"), "min_accuracy must be a number"),
    (lambda: __import__("edgekd").RecheckConfig(rounds="3"), "rounds must be a whole number"),
    (lambda: __import__("edgekd").RecheckConfig(accuracy_tolerance="x"), "accuracy_tolerance must be a number"),
    (lambda: validate([], "host-cpu-1t", None, rounds="1"), "rounds must be a whole number"),
])
def test_a_number_setting_given_a_string_is_a_config_error_naming_it(make, said):
    """Each failed its range check as a raw TypeError ('<' not supported between 'str' and 'int')."""
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match=said):
        make()


def test_measure_reads_a_shape_string_as_input_shape_does(tmp_path, fast_profile_path):
    """measure(..., shape="1,1,8,8") read the string character by character: "7 input shapes for 1 models"."""
    from conftest import foreign_onnx

    from edgekd import measure
    from edgekd.errors import ConfigError

    model = foreign_onnx(tmp_path / "tiny.onnx", (1, 8, 8), 3)
    (stats,) = measure([model], str(fast_profile_path), shape="2,1,8,8")
    assert stats.p50_ms > 0
    with pytest.raises(ConfigError, match="--input-shape '1,a' is not a list of positive integers"):
        measure([model], str(fast_profile_path), shape="1,a")


def test_a_recheck_says_how_far_its_read_of_the_data_is_on_stderr(run_cli, run_dir, tmp_path, monkeypatch):
    """`validate --manifest --data FOLDER` decoded a folder of images for minutes without a line (validate
    without --manifest and gate say how far they are), and a CI job is killed after minutes of silence."""
    from test_images import _digit_folder

    from edgekd import heartbeat, images

    folder = _digit_folder(tmp_path / "heldout", (7, 2))
    monkeypatch.setattr(images, "QUIET_S", 0.0)
    monkeypatch.setattr(heartbeat, "EVERY_S", 1e9)  # the first line and the last
    code, out, err = run_cli("validate", run_dir / "student-int8.onnx", "--manifest", run_dir / "manifest.json",
                             "--data", folder, "--resolution", "16", *LOOSE)
    assert code in (0, 1) and "| accuracy |" in out, out + err
    assert "data: read 1 of 30 image headers of 'heldout'\ndata: decoded 30 of 30 images of 'heldout'\n" in err
    assert "data:" not in out


def test_recheck_never_scores_a_same_named_file_where_it_runs(run_cli, run_dir, small_data, tmp_path, monkeypatch):
    from edgekd.data import data_source

    copy, ran = _copy(run_dir, tmp_path), tmp_path / "ran"
    ran.mkdir()
    x, y = np.concatenate([small_data.x_train, small_data.x_test]), np.concatenate([small_data.y_train,
                                                                                   small_data.y_test])
    np.savez(ran / "held.npz", x=x, y=y)

    def typed_relative(data):
        data["data"]["name"] = "held.npz"
        data["recipe"]["data"] = "held.npz"  # as typed in the folder compress ran in
        data["data"]["source"] = data_source(str(ran / "held.npz"))

    manifest = _edit_manifest(copy, typed_relative)
    monkeypatch.chdir(tmp_path)
    np.savez("held.npz", x=1 - x, y=y)  # another data set of the same name where validate runs
    code, out, _ = run_cli("validate", copy / "student-fp32.onnx", "--manifest", manifest, *LOOSE)
    assert "| accuracy | pass |" in out and "on held.npz test split" in out  # the run's own, found where it was
    np.savez(ran / "held.npz", x=1 - x, y=y)
    code, out, _ = run_cli("validate", copy / "student-fp32.onnx", "--manifest", manifest, *LOOSE)
    assert f"| accuracy | skipped | the manifest's data '{ran / 'held.npz'}' has changed since the run" in out


def test_classes_with_no_test_image_are_named_in_the_notes_and_the_run_s_log():
    """Small data (3 images a class) leaves classes with no test image: class_accuracy leaves them out, and
    compress said nothing of it while gate named them."""
    from types import SimpleNamespace

    from edgekd.data import Dataset
    from edgekd.run_inputs import run_data
    from edgekd.validate import untested_note

    x = np.zeros((6, 1, 4, 4), np.float32)
    y = np.array([0, 1, 2, 3, 0, 1])
    data = Dataset("tiny", x, y, x[:2], y[:2], x[:2], np.array([1, 3]), ("0", "1", "2", "3"))
    (note,) = untested_note(data)
    assert note.startswith("classes 0, 2 of tiny have no test image, so their accuracy is not measured "
                           "(per-class accuracy, `class_accuracy`, leaves them out)")
    lines: list[str] = []
    run_data(SimpleNamespace(data=data), lines.append)
    assert f"warning: {note}" in lines
    assert untested_note(Dataset("all", x, y, x, y, x, y, ("0", "1", "2", "3"))) == []
