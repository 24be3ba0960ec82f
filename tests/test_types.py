"""Small shared types: Budget validation and the name Registry."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

from edgekd.errors import ConfigError
from edgekd.registry import Registry
from edgekd.types import Budget


@pytest.mark.parametrize("value", [0, -1, -0.5])
def test_budget_latency_must_be_positive(value):
    with pytest.raises(ConfigError, match="--budget-ms must be positive"):
        Budget(latency_ms=value)


@pytest.mark.parametrize("value", [0, -3])
def test_budget_size_must_be_positive(value):
    with pytest.raises(ConfigError, match="--max-size-kb must be positive"):
        Budget(max_size_kb=value)


@pytest.mark.parametrize("value", [math.nan, math.inf, True, "5"])
def test_budget_must_be_a_finite_number(value):
    with pytest.raises(ConfigError, match="--budget-ms must be a number"):
        Budget(latency_ms=value)


def test_budget_valid_and_round_trips():
    assert Budget() == Budget(None, None)
    budget = Budget(latency_ms=2.5, max_size_kb=100, min_accuracy=0.97, max_accuracy_drop=1.0)
    assert budget.to_dict() == {"latency_ms": 2.5, "max_size_kb": 100, "min_accuracy": 0.97, "max_accuracy_drop": 1.0}
    assert Budget.from_dict(budget.to_dict()) == budget and budget.checks_accuracy
    assert Budget.from_dict({"latency_ms": 1, "max_size_kb": None}) == Budget(1)  # search.json / manifests before
    assert not Budget(1, 2).checks_accuracy


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_accuracy": 97}, r"--min-accuracy is a fraction in \(0, 1\], got 97; pass e.g. 0.97"),
    ({"min_accuracy": 0}, "--min-accuracy is a fraction"),
    ({"max_accuracy_drop": -1}, "--max-accuracy-drop is in percentage points below the teacher, got -1"),
    ({"max_accuracy_drop": 100}, "--max-accuracy-drop is in percentage points"),
    ({"min_accuracy": math.nan}, "--min-accuracy must be a number"),
])
def test_budget_accuracy_limits_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Budget(**kwargs)


def _registry() -> Registry:
    reg: Registry = Registry("loss")
    reg.register("kd")(object())
    reg.register("ce")(object())
    return reg


def test_registry_lookup_and_names():
    reg = _registry()
    assert reg.names() == ["ce", "kd"]
    assert list(reg) == ["ce", "kd"]
    assert "kd" in reg and "mse" not in reg
    assert reg.get("kd") is reg.get("kd")


def test_registry_unknown_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown loss 'mse'; choose one of: ce, kd"):
        _registry().get("mse")


def test_registry_duplicate_registration():
    reg = _registry()
    with pytest.raises(ValueError, match="loss 'kd' is registered twice"):
        reg.register("kd")(object())


def test_budget_max_bytes_is_the_size_limit_in_bytes_that_files_are_compared_with():
    assert Budget(max_size_kb=128).max_bytes == 128 * 1024
    assert Budget(max_size_kb=0.3).max_bytes == 307  # a file of 307 bytes fits 0.3 KB, one of 308 does not
    assert Budget(latency_ms=1.0).max_bytes is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=1.5), "epochs must be a whole number, got 1.5"),
    (dict(epochs="3"), "epochs must be a whole number, got '3'"),
    (dict(batch_size=True), "batch_size must be a whole number, got True"),
    (dict(lr="0.1"), "lr must be a finite number, got '0.1'"),
    (dict(temperature=math.inf), "temperature must be a finite number, got inf"),
    (dict(augment="no"), "augment must be true or false, got 'no'"),
])
def test_distill_config_refuses_values_of_the_wrong_type(kwargs, message):
    from edgekd.types import DistillConfig

    with pytest.raises(ConfigError, match=re.escape(message)):
        DistillConfig(**kwargs)


def test_validation_report_round_trips_through_its_dict():
    from edgekd.types import Artifact, ArtifactReport, LatencyStats, Parity, Ratio, ValidationReport

    art = Artifact("student-int8", "student", "int8", "s.onnx", "onnx_int8", 17, "ab" * 32, 1234, {"k": [1]})
    stats = LatencyStats(1.0, 1.2, 1.5, 1.1, 0.02, 3, 9, "1.2", 0.9, (1.0, 1.01, 0.99))
    reports = (ArtifactReport(art, True, Parity(0.99, 0.01, "student.pt"), 0.95, stats, {"latency": True},
                              {"0": 1.0, "cat": 0.5}),
               ArtifactReport(Artifact("teacher", "teacher", "fp32", "t.onnx", "torch", 17, "cd" * 32, 9, {}),
                              True, None, None, None, {}))
    report = ValidationReport("host-cpu", Budget(latency_ms=2.0), reports, "student-int8", ("a note",), 3,
                              (1.5, 1.6, 1.4), Ratio(1.5, 1.4, 1.6, 27))
    assert ValidationReport.from_dict(report.to_dict()) == report
    no_ratio = replace(report, int8_ratio=None)
    assert ValidationReport.from_dict(no_ratio.to_dict()) == no_ratio


@pytest.mark.parametrize("data, missing", [({}, "no 'profile'"), ([], "malformed"),
                                           ({"profile": "host-cpu", "budget": {}}, "no 'artifacts'")])
def test_validation_report_from_another_dict_names_what_is_missing(data, missing):
    from edgekd.errors import ArtifactError
    from edgekd.types import ValidationReport

    with pytest.raises(ArtifactError, match=f"not a validation report: it (has |is ){missing}.*validate --json"):
        ValidationReport.from_dict(data)


def test_distill_config_s_defaults_are_the_cli_s():
    from edgekd.pipeline import CompressConfig
    from edgekd.types import DistillConfig

    cli = CompressConfig().distill_config()  # what `edgekd distill` and `compress` train with by default
    for config in (DistillConfig(), cli):
        assert (config.epochs, config.lr, config.weight_decay, config.batch_size) == (40, 5e-3, 1e-4, 64)
