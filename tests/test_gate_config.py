"""The gate's settings from flags and a manifest (edgekd/gate_config.py): the notes that say where each threshold
came from."""

import json

import pytest

from edgekd.gate_config import build_config


def _entry(name, role, accuracy, primary=False):
    return {"artifact": {"name": name, "role": role, "precision": "fp32", "path": f"{name}.onnx",
                         "exporter": "onnx-fp32", "opset": 18, "sha256": "0" * 64, "size_bytes": 1000, "details": {}},
            "checker_ok": True, "accuracy": accuracy, "latency": None, "verdicts": {} if role == "teacher" else
            {"size": True}, "passed": True, "primary": primary}


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({
        "schema": "edgekd.manifest", "schema_version": 1, "primary": "student-int8", "passed": True, "notes": [],
        "profile": {"name": "host-cpu-1t", "measure": {"batch_size": 1, "warmup_runs": 3, "runs_per_repeat": 40}},
        "budget": {"latency_ms": None, "max_size_kb": 128, "min_accuracy": None, "max_accuracy_drop": None},
        "artifacts": [_entry("teacher-fp32", "teacher", 0.9304), _entry("student-int8", "student", 0.1, True)]}))
    return str(path)


# Given so that nothing else is looked up in the manifest: only the notes on thresholds are under test.
_GIVEN = {"data": "digits", "profile": "host-cpu-1t", "normalize": "dataset", "seed": 0, "no_latency": True}


def _floor_notes(config):
    return [n for n in config.notes if n.startswith("accuracy floor")]


def test_the_floor_note_credits_min_accuracy_when_its_floor_is_the_higher(manifest):
    """93.04% - 90 points is 3.04%: the note said "accuracy floor 5.00%: at most 90 points below the teacher's
    recorded 93.04%", the arithmetic of --min-accuracy's floor credited to --max-accuracy-drop."""
    config = build_config({**_GIVEN, "min_accuracy": 0.05, "max_accuracy_drop": 90}, manifest)
    assert config.min_accuracy == 0.05
    assert _floor_notes(config) == ["accuracy floor 5.00%, from --min-accuracy: above the 3.04% of "
                                    "--max-accuracy-drop, at most 90 points below the teacher's recorded 93.04% "
                                    "(no --baseline to compare with)"]
    config = build_config({**_GIVEN, "min_accuracy": 0.02, "max_accuracy_drop": 90}, manifest)
    assert config.min_accuracy == pytest.approx(0.0304)
    assert _floor_notes(config) == ["accuracy floor 3.04%: at most 90 points below the teacher's recorded 93.04% "
                                    "(no --baseline to compare with), above --min-accuracy's 2.00%"]
    config = build_config({**_GIVEN, "max_accuracy_drop": 90}, manifest)
    assert _floor_notes(config) == ["accuracy floor 3.04%: at most 90 points below the teacher's recorded 93.04% "
                                    "(no --baseline to compare with)"]


def test_a_min_accuracy_that_is_no_number_is_still_refused_beside_a_drop(manifest):
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match="min_accuracy must be a number, got 'high'"):
        build_config({**_GIVEN, "min_accuracy": "high", "max_accuracy_drop": 90}, manifest)


def test_the_budget_left_unchecked_is_not_suggested_for_the_teacher(manifest):
    """The manifest's budget bounds its students: gating its teacher, the note said to add --max-size 128KB."""
    student = build_config({**_GIVEN, "max_opset": 18}, manifest)
    assert any("add --max-size 128KB to check it too" in n for n in student.notes)
    teacher = build_config({**_GIVEN, "max_opset": 18, "artifact": "teacher-fp32"}, manifest)
    assert not any("--max-size" in n for n in teacher.notes)


def test_a_config_made_in_python_takes_the_manifest_s_defaults_as_the_cli_s(manifest, tmp_path):
    """GateConfig() was refused ("the gate has no thresholds ... or gate a manifest.json") before its target was
    known, so run_gate could not hold a manifest to its own budget; the CLI's config had it alone."""
    from edgekd.errors import ConfigError
    from edgekd.gate_config import GateConfig, for_target

    config = for_target(GateConfig(rounds=1), manifest)
    assert config == build_config({"rounds": 1}, manifest) and config.max_size_bytes == 128 * 1024
    assert config.notes == ("thresholds: the manifest's budget, size <= 128 KB",)
    assert for_target(config, manifest) is config  # applied once: build_config's, handed to run_gate
    with pytest.raises(ConfigError, match="^the gate has no thresholds; pass --max-size"):
        for_target(GateConfig(rounds=1), tmp_path / "model.onnx")


@pytest.mark.parametrize("name", ["no_latency", "profile_recorded"])
def test_a_boolean_setting_given_a_string_is_refused(name):
    """GateConfig(no_latency="false") read as true: the latency checks it asked for were dropped, and the gate
    passed."""
    from edgekd.errors import ConfigError
    from edgekd.gate_config import GateConfig

    with pytest.raises(ConfigError, match=f"^{name} must be true or false, got 'false'; pass a boolean$"):
        GateConfig(max_size_bytes=1000, **{name: "false"})
