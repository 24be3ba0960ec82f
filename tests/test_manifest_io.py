"""manifest.json loading: the one loader of gate, validate --manifest and report refuses a manifest whose structure
is not what edgekd writes, naming the field, before any command reads it."""

import copy
import json
import os
import re

import pytest

from edgekd.errors import ArtifactError
from edgekd.manifest_io import load_manifest


def _entry(name, role, primary=False):
    return {"artifact": {"name": name, "role": role, "precision": "fp32", "path": f"{name}.onnx",
                         "exporter": "onnx-fp32", "opset": 18, "sha256": "0" * 64, "size_bytes": 1000,
                         "details": {"op_types": ["Conv"], "inputs": [{"name": "x", "dtype": "float32",
                                                                       "shape": [1, 1, 16, 16]}]}},
            "checker_ok": True, "parity": None, "accuracy": 0.9,
            "latency": {"p50_ms": 0.2, "p90_ms": 0.3, "p99_ms": 0.4, "mean_ms": 0.2, "cv": 0.01, "runs": 280,
                        "repeats": 7},
            "verdicts": {} if role == "teacher" else {"latency": True}, "passed": True, "primary": primary}


GOOD = {
    "schema": "edgekd.manifest", "schema_version": 1, "created": "2026-01-01T00:00:00+00:00",
    "tools": {"edgekd": "0.1.0"},
    "profile": {"name": "fast-test", "description": "test", "digest": "x", "runtime": {}, "runner": {"kind": "local"},
                "measure": {"batch_size": 1, "warmup_runs": 3, "repeats": 7, "runs_per_repeat": 40}},
    "budget": {"latency_ms": 0.5, "max_size_kb": 128, "min_accuracy": None, "max_accuracy_drop": None},
    "primary": "student-fp32", "passed": True, "notes": [],
    "artifacts": [_entry("teacher-fp32", "teacher"), _entry("student-fp32", "student", True)],
    "data": {"name": "digits", "input_shape": [1, 16, 16], "preprocess": {
        "layout": "NCHW", "dtype": "float32", "channels": "as stored", "scale": 1.0, "mean": [0.3], "std": [0.3]}},
    "recipe": {"seed": 0, "data": "digits"},
}


# An ORT-format copy and a student as compress writes them (compress --ort; the distillation record).
ORT = {"path": "student-fp32.ort", "sha256": "0" * 64, "size_bytes": 900, "platform": "amd64",
       "operators": "student-fp32.required_operators.config", "top1_agreement": 1.0, "max_abs_diff": 0.0,
       "passed": True}
STUDENT = {"spec": {"space": "mbv2", "config": {"stem": 8}}, "params": 1000, "search_latency_ms": 0.2,
           "predicted_latency_ms": None, "distill": {
               "best_epoch": 2, "best_val_accuracy": 0.8, "selected_on": "val_labels", "checkpoint": None,
               "qat_start": None, "keep": "best", "history": [
                   {"epoch": e, "train_loss": 1.0 / e, "val_accuracy": 0.4 * e, "seconds": 0.5} for e in (1, 2)]}}


def edited(changes: dict) -> dict:
    """GOOD with ``changes`` applied: dotted keys reach into objects (a number into a list); a key ending in '!'
    is deleted."""
    data = copy.deepcopy(GOOD)
    for key, value in changes.items():
        delete = key.endswith("!")
        *parents, leaf = key.rstrip("!").split(".")
        node = data
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if delete:
            del node[leaf]
        else:
            node[int(leaf) if leaf.isdigit() else leaf] = value
    return data


def write_manifest(folder, changes: dict):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.json"
    path.write_text(json.dumps(edited(changes)))
    return path


MALFORMED = [
    ({"primary!": None}, "has no 'primary'"),
    ({"primary": 3}, "primary is 3, not a non-empty string"),
    ({"artifacts": None}, "artifacts is null, not a list"),
    ({"artifacts": {"student-fp32": {}}}, "artifacts is an object, not a list"),
    ({"artifacts": ["student-fp32.onnx"]}, 'artifacts[0] is "student-fp32.onnx", not an object'),
    ({"artifacts": []}, "artifacts is empty, so there is no model to check"),
    ({"artifacts.0.artifact.path!": None}, "artifacts[0].artifact has no 'path'"),
    ({"artifacts.1.artifact.sha256": 123}, "artifacts[1].artifact.sha256 is 123, not a sha256"),
    ({"artifacts.1.artifact.details.inputs": [{"name": "x"}]}, "artifacts[1].artifact.details.inputs[0] has no"),
    ({"artifacts.1.accuracy": "high"}, 'artifacts[1].accuracy is "high", not a fraction from 0 to 1'),
    ({"artifacts.1.latency.p50_ms": "x"}, 'artifacts[1].latency.p50_ms is "x", not a number above zero'),
    ({"artifacts.1.latency": "fast"}, 'artifacts[1].latency is "fast", not an object'),
    ({"artifacts.1.verdicts": {"latency": "yes"}}, 'artifacts[1].verdicts.latency is "yes", not true or false'),
    ({"profile": "host-cpu-1t"}, 'profile is "host-cpu-1t", not an object'),
    ({"profile": None}, "profile is null, not an object"),
    ({"profile.measure!": None}, "profile has no 'measure'"),
    ({"budget": None}, "budget is null, not an object"),
    ({"budget.latency_ms": "fast"}, 'budget.latency_ms is "fast", not a number above zero'),
    ({"budget.latency_ms": -1}, "budget.latency_ms is -1, not a number above zero"),
    ({"budget.max_size_kb": True}, "budget.max_size_kb is true, not a number above zero"),
    ({"data": "digits"}, 'data is "digits", not an object'),
    ({"data.preprocess.std": [0]}, "data.preprocess.std[0] is 0, not a number above zero"),
    ({"recipe.seed": "x"}, 'recipe.seed is "x", not an integer'),
    ({"notes": "ok"}, 'notes is "ok", not a list'),
    # what `edgekd report` reads of an entry: a list here or a round without its count was an AttributeError or a
    # KeyError, with a traceback
    ({"artifacts.1.class_accuracy": [0.9, 0.8]}, "artifacts[1].class_accuracy is a list, not an object"),
    ({"artifacts.1.class_accuracy": {"7": 1.5}}, "artifacts[1].class_accuracy.7 is 1.5, not a fraction from 0 to 1"),
    ({"artifacts.1.ort": {**ORT, "platform": None}}, "artifacts[1].ort.platform is null, not a non-empty string"),
    ({"artifacts.1.ort": {k: v for k, v in ORT.items() if k != "platform"}}, "artifacts[1].ort has no 'platform'"),
    ({"artifacts.1.artifact.precision!": None}, "artifacts[1].artifact has no 'precision'"),
    ({"student": {**STUDENT, "distill": {"history": [{"epoch": 1, "train_loss": 0.5}]}}},
     "student.distill.history[0] has no 'val_accuracy'"),
    ({"student": {**STUDENT, "distill": {"history": [{"epoch": "1", "train_loss": 0.5, "val_accuracy": 0.5}]}}},
     'student.distill.history[0].epoch is "1", not an integer'),
    ({"student": {**STUDENT, "distill": {"best_val_accuracy": "80%"}}},
     'student.distill.best_val_accuracy is "80%", not a fraction from 0 to 1'),
    ({"student": {**STUDENT, "predicted_latency_ms": "fast"}}, 'student.predicted_latency_ms is "fast", not a number'),
    ({"artifacts.1.artifact.details.int8_fallback": {"rounds": [{}], "best_round": 0}},
     "artifacts[1].artifact.details.int8_fallback.rounds[0] has no 'quantized'"),
    ({"artifacts.1.artifact.details.int8_fallback": {"rounds": [{"quantized": 4}], "best_round": 1}},
     "artifacts[1].artifact.details.int8_fallback.best_round is 1, not the index of one of its 1 round(s)"),
    ({"artifacts.1.artifact.details.int8_fallback": {"rounds": [{"quantized": 4}]}},
     "artifacts[1].artifact.details.int8_fallback has 'rounds' but no 'best_round'"),
    ({"artifacts.1.primary!": None}, "artifacts[1] has no 'primary'"),
    ({"artifacts.1.ort": {"path": "student-fp32.ort", "sha256": "0" * 64, "operators": "x.config"}},
     "artifacts[1].ort has no 'size_bytes'"),
    ({"int8_speedup": {"median": 1.5, "runs": [1.5], "pairs": 7}}, "int8_speedup has 'pairs' but no 'low'"),
    ({"artifacts.1.ort": {"path": "student-fp32.ort"}}, "artifacts[1].ort has no 'sha256'"),
    ({"artifacts.1.ort": "student-fp32.ort"}, 'artifacts[1].ort is "student-fp32.ort", not an object'),
    # the pruning record the report's Student line reads
    ({"student": {**STUDENT, "distill": {"pruning": 5}}}, "student.distill.pruning is 5, not an object"),
    ({"student": {**STUDENT, "distill": {"pruning": {"params": 10}}}}, "student.distill.pruning has no 'target_ms'"),
]


@pytest.mark.parametrize("changes, message", MALFORMED)
def test_a_malformed_manifest_is_refused_naming_the_field(tmp_path, changes, message):
    path = write_manifest(tmp_path, changes)
    with pytest.raises(ArtifactError) as exc:
        load_manifest(path)
    assert message in exc.value.problem and str(path) in exc.value.problem
    assert "not a manifest edgekd wrote, or it was edited" in exc.value.fix


@pytest.mark.parametrize("changes", [
    {},
    {"data": None, "budget.latency_ms": None, "artifacts.0.latency": None, "artifacts.0.accuracy": None},
    {"budget": {}, "recipe!": None, "data!": None, "notes!": None},
    {"artifacts.0.artifact.details.inputs.0.shape": None},  # an ONNX teacher's input of unknown rank
    {"artifacts.1.ort": ORT, "student": STUDENT},
    {"artifacts.1.ort": {**ORT, "operators_sha256": "1" * 64, "agrees": True, "over_budget": ["size"]}},
    {"student": {**STUDENT, "distill": None}},
    {"student": {**STUDENT, "distill": {"pruning": {"target_ms": 0.1, "measured_ms": 0.09, "reached": True,
                                                    "params": 4236, "steps": [{"step": 1}]}}}},
    {"int8_speedup": {"median": 1.5, "runs": [1.5]}},  # written before the repeats were paired
    {"int8_speedup": {"median": 1.5, "runs": [1.5], "pairs": 7, "low": 1.4, "high": 1.6}},
    {"artifacts.0.class_accuracy": {"0": 1.0, "1": 0.75}, "artifacts.1.class_accuracy": {"0": 0.5, "1": 0}},
    {"artifacts.1.artifact.details.int8_fallback": {  # as int8_with_fallback writes it
        "rounds": [{"index": 0, "excluded": [], "quantized": 22, "int8_p50_ms": 0.2, "fp32_p50_ms": 0.3,
                    "ratio": 0.7, "final_ratio": None, "paired": None, "final": None},
                   {"index": 1, "excluded": [{"node": "Conv_3"}], "quantized": 21, "int8_p50_ms": 0.19,
                    "fp32_p50_ms": 0.3, "ratio": 0.63, "final_ratio": 0.64, "paired": None, "final": None}],
        "best_round": 1, "ratio": 0.64, "faster": True, "stopped": "no node ran slower in int8", "notes": []}},
])
def test_what_edgekd_writes_and_may_leave_out_is_accepted(tmp_path, changes):
    assert load_manifest(write_manifest(tmp_path, changes))["primary"] == "student-fp32"


@pytest.mark.parametrize("command", ["gate", "validate", "report"])
@pytest.mark.parametrize("changes, message", [MALFORMED[0], MALFORMED[2], MALFORMED[6], MALFORMED[13],
                                              MALFORMED[16], MALFORMED[17], MALFORMED[10], MALFORMED[9],
                                              MALFORMED[-2], MALFORMED[-5], MALFORMED[-4], MALFORMED[-3]])
def test_every_command_that_reads_a_manifest_refuses_it_in_one_line(run_cli, tmp_path, command, changes, message):
    path = write_manifest(tmp_path / "run", changes)
    args = {"gate": [path, "--config", os.devnull], "report": [path.parent],
            "validate": [tmp_path / "run" / "student-fp32.onnx", "--manifest", path]}[command]
    code, out, err = run_cli(command, *args)
    assert code == 2 and message in err and "Traceback" not in err, out + err
    assert err.count("\n") == 1 and not (tmp_path / "run" / "report.html").exists()


@pytest.mark.parametrize("changes, message", [c for c in MALFORMED if c[1].endswith(
    ("class_accuracy is a list, not an object", "rounds[0] has no 'quantized'", "ort has no 'platform'",
     "history[0] has no 'val_accuracy'"))])
def test_report_refuses_entries_it_would_crash_on_in_one_line(run_cli, tmp_path, changes, message):
    path = write_manifest(tmp_path / "run", changes)
    code, out, err = run_cli("report", path.parent)
    assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1, out + err


@pytest.mark.parametrize("field, value, message", [
    ("operators_sha256", "edited", 'artifacts[1].ort.operators_sha256 is "edited", not a sha256'),
    ("agrees", "yes", 'artifacts[1].ort.agrees is "yes", not true or false'),
    ("over_budget", "size", 'artifacts[1].ort.over_budget is "size", not a list'),
    ("over_budget", ["speed"], "artifacts[1].ort.over_budget[0] is \"speed\", not 'size' or 'latency'"),
])
def test_an_ort_copy_s_operator_list_hash_and_verdict_parts_are_checked_when_recorded(tmp_path, field, value,
                                                                                      message):
    """What gate trusts the operator list by, and the parts of the copy's verdict report.md says, are read as
    recorded; a manifest from before they were recorded has none (accepted above)."""
    with pytest.raises(ArtifactError) as exc:
        load_manifest(write_manifest(tmp_path, {"artifacts.1.ort": {**ORT, field: value}}))
    assert message in exc.value.problem


@pytest.mark.parametrize("version, message, fix", [
    (2, "has schema version 2, this edgekd reads version 1", "upgrade edgekd to read it: a newer edgekd wrote it"),
    (0, "has schema version 0, this edgekd reads version 1", "regenerate it with this edgekd version"),
    ("1", 'has schema_version "1", not an integer (this edgekd reads version 1)',
     "restore the manifest.json `edgekd compress` wrote"),
])
def test_a_manifest_of_another_schema_version_gets_the_fix_for_its_direction(tmp_path, version, message, fix):
    """A newer manifest was told to be regenerated (training again), and a string "1" read as "1 is not 1"."""
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({**GOOD, "schema_version": version}))
    with pytest.raises(ArtifactError, match=re.escape(message)) as caught:
        load_manifest(path)
    assert caught.value.fix.startswith(fix)


@pytest.mark.parametrize("changes, message", [
    ({"artifacts.1.artifact.size_bytes": 0}, "artifacts[1].artifact.size_bytes is 0, not a size in bytes above zero"),
    ({"artifacts.0.artifact.size_bytes": -1}, "artifacts[0].artifact.size_bytes is -1, not a size in bytes above zero"),
    ({"artifacts.1.ort": {**ORT, "size_bytes": 0}}, "artifacts[1].ort.size_bytes is 0, not a size in bytes above zero"),
])
def test_a_size_of_zero_bytes_or_less_is_refused(tmp_path, changes, message):
    """A recorded size of 0 made --max-size-growth's ratio infinite (`infx`, and Infinity in --json), and -1 had
    report.html show -0.0 KB."""
    with pytest.raises(ArtifactError) as exc:
        load_manifest(write_manifest(tmp_path, changes))
    assert message in exc.value.problem


def test_the_files_that_are_not_the_recorded_ones_are_named(tmp_path):
    from edgekd.fsutil import sha256
    from edgekd.manifest_io import files_not_recorded

    for name in ("teacher-fp32.onnx", "student-fp32.onnx", "student-fp32.ort", "ops.config", "w.data"):
        (tmp_path / name).write_bytes(name.encode())
    manifest = edited({"artifacts.1.ort": {**ORT, "sha256": sha256(tmp_path / "student-fp32.ort"),
                                           "operators": "ops.config", "operators_sha256": "1" * 64}})
    manifest["artifacts"][0]["artifact"].update(sha256=sha256(tmp_path / "teacher-fp32.onnx"),
                                                 details={"external_sha256": {"w.data": "2" * 64, "gone.data": "3"}})
    (tmp_path / "student-fp32.onnx").unlink()
    assert files_not_recorded(manifest, tmp_path) == [
        "w.data changed since the manifest was written (sha256 differs)", "gone.data is gone",
        "student-fp32.onnx is gone", "ops.config changed since the manifest was written (sha256 differs)"]
    manifest["artifacts"][0]["artifact"]["details"] = {}
    manifest["artifacts"][1]["artifact"].update(sha256=sha256(tmp_path / "teacher-fp32.onnx"), path="teacher-fp32.onnx")
    manifest["artifacts"][1]["ort"]["operators_sha256"] = sha256(tmp_path / "ops.config")
    assert files_not_recorded(manifest, tmp_path) == []


def test_the_student_s_weights_gone_or_changed_are_named_as_the_models_are(tmp_path):
    """student.pt has a recorded sha256, yet report named every other file gone or changed and not it."""
    from edgekd.fsutil import sha256
    from edgekd.manifest_io import files_not_recorded

    for name in ("teacher-fp32.onnx", "student-fp32.onnx", "student.pt"):
        (tmp_path / name).write_bytes(name.encode())
    weights = {"weights": "student.pt", "weights_sha256": sha256(tmp_path / "student.pt"), "weights_size_bytes": 10}
    manifest = edited({"student": {**STUDENT, **weights}})
    for entry in manifest["artifacts"]:
        entry["artifact"]["sha256"] = sha256(tmp_path / entry["artifact"]["path"])
    assert files_not_recorded(manifest, tmp_path) == []
    (tmp_path / "student.pt").write_bytes(b"retrained")
    assert files_not_recorded(manifest, tmp_path) == [
        "student.pt changed since the manifest was written (sha256 differs)"]
    (tmp_path / "student.pt").unlink()
    assert files_not_recorded(manifest, tmp_path) == ["student.pt is gone"]


@pytest.mark.parametrize("recorded, found", [
    ("student-int8.onnx", "student-int8.onnx"), ("sub/../student-int8.onnx", "student-int8.onnx"),
    ("./models/a.onnx", "models/a.onnx"), ("../student-int8.onnx", None), ("sub/../../x.onnx", None),
    ("/etc/passwd", None), ("C:/models/a.onnx", None), ("..\\x.onnx", None),
])
def test_a_recorded_path_is_inside_its_folder_by_its_name_not_where_a_link_leads(tmp_path, recorded, found):
    from edgekd.manifest_io import inside

    assert inside(tmp_path, recorded) == (None if found is None else tmp_path / found)


def test_a_file_that_links_out_of_the_folder_is_still_inside_it(tmp_path):
    """gate refused a git-annex folder (every file a link into .git/annex/objects) as an edited manifest."""
    from edgekd.manifest_io import inside

    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "SHA256E-s4--ab.onnx").write_bytes(b"onnx")
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "student-int8.onnx").symlink_to("../store/SHA256E-s4--ab.onnx")
    found = inside(tmp_path / "release", "student-int8.onnx")
    assert found == tmp_path / "release" / "student-int8.onnx" and found.read_bytes() == b"onnx"
