"""The Python API's stage functions name a wrong argument and the call that makes the right one: a path, a
dict or a spec where they take a loaded object was a raw AttributeError from deep inside."""

from pathlib import Path

import pytest
import torch

import edgekd
from edgekd.errors import ConfigError
from edgekd.types import Budget, DistillConfig, StudentSpec


@pytest.fixture
def teacher():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10))


def _refused(call, message):
    with pytest.raises(ConfigError) as caught:
        call()
    assert caught.value.message == message


def test_search_names_data_or_config_of_the_wrong_kind(small_data, teacher):
    _refused(lambda: edgekd.search(teacher, "digits", "host-cpu", Budget()),
             "data is the string 'digits', not a Dataset; pass load_data('digits'), or load_data_for(model, ...) "
             "to read it as a model takes it")
    _refused(lambda: edgekd.search(teacher, small_data, "host-cpu", Budget(), {"candidates": 2}),
             "config is a dict, not a SearchConfig; pass SearchConfig(**config)")


def test_distill_names_a_spec_a_path_or_a_dict_given_for_what_it_trains(small_data, teacher):
    spec = StudentSpec("mbv2", {"widths": [8]})
    _refused(lambda: edgekd.distill(spec, small_data, DistillConfig(epochs=1), teacher),
             "student is a StudentSpec, not a torch module; pass build_student(spec, data.input_shape, "
             "data.num_classes) (with teacher= for the 'pruned' space)")
    _refused(lambda: edgekd.distill("student.pt", small_data, DistillConfig(epochs=1)),
             "student is the string 'student.pt', not a torch module; pass the torch module to train, e.g. "
             "build_student(spec, data.input_shape, data.num_classes)")
    _refused(lambda: edgekd.distill(torch.nn.Linear(2, 2), Path("d.npz"), DistillConfig(epochs=1)),
             "data is the path 'd.npz', not a Dataset; pass load_data('d.npz'), or load_data_for(model, ...) "
             "to read it as a model takes it")
    _refused(lambda: edgekd.distill(torch.nn.Linear(2, 2), small_data, {"epochs": 1}),
             "config is a dict, not a DistillConfig; pass DistillConfig(**config)")
    _refused(lambda: edgekd.distill(torch.nn.Linear(2, 2), small_data, None),
             "config is None, not a DistillConfig; pass a DistillConfig, e.g. DistillConfig()")


def test_prune_distill_names_its_two_configs(small_data):
    from edgekd.distill.prune import PruneConfig, prune_distill

    _refused(lambda: prune_distill(torch.nn.Linear(2, 2), small_data, {"epochs": 1}, PruneConfig(1.0), "host-cpu"),
             "distill_config is a dict, not a DistillConfig; pass DistillConfig(**distill_config)")
    _refused(lambda: prune_distill(torch.nn.Linear(2, 2), small_data, DistillConfig(), 1.0, "host-cpu"),
             "config is a float, not a PruneConfig; pass a PruneConfig, e.g. PruneConfig(target_ms=2.0)")


def test_validate_names_a_model_path_given_for_its_artifacts(small_data, tmp_path):
    from edgekd.types import Artifact

    _refused(lambda: edgekd.validate("m.onnx", "host-cpu", None),
             "artifacts is the string 'm.onnx', not a list of Artifact; pass [artifact_from_file('m.onnx')]")
    _refused(lambda: edgekd.validate([Path("m.onnx")], "host-cpu", None),
             "artifacts holds the path 'm.onnx', not an Artifact; pass [artifact_from_file('m.onnx')]")
    art = Artifact("m", "student", "fp32", str(tmp_path / "m.onnx"), "onnx-fp32", 18, "0" * 64, 1)
    _refused(lambda: edgekd.validate(art, "host-cpu", None),
             "artifacts is an Artifact, not a list of Artifact; pass a list of them: [artifact]")
    _refused(lambda: edgekd.validate([art], "host-cpu", None, data="digits"),
             "data is the string 'digits', not a Dataset; pass load_data('digits'), or load_data_for(model, ...) "
             "to read it as a model takes it")


def test_compress_gate_and_recheck_name_a_dict_given_for_their_config():
    from edgekd.pipeline import run_distill, run_search

    for call in (lambda: edgekd.compress({"out": "x"}), lambda: run_search({"out": "x"}, "s.json"),
                 lambda: run_distill({"out": "x"}, "d")):
        _refused(call, "config is a dict, not a CompressConfig; pass CompressConfig(**config)")
    _refused(lambda: edgekd.run_gate("m.onnx", {"max_size_bytes": 1}),
             "config is a dict, not a GateConfig; pass GateConfig(**config)")
    _refused(lambda: edgekd.recheck("m.onnx", "manifest.json", {"rounds": 1}),
             "config is a dict, not a RecheckConfig; pass RecheckConfig(**config)")


def test_validate_names_a_budget_or_references_of_the_wrong_kind(small_data, tmp_path):
    from edgekd.types import Artifact

    art = Artifact("m", "student", "fp32", str(tmp_path / "m.onnx"), "onnx-fp32", 18, "0" * 64, 1)
    for budget in ((0.5, 128), 0.5):
        _refused(lambda budget=budget: edgekd.validate([art], "host-cpu", budget),
                 f"budget {budget!r} is not a Budget; pass Budget(latency_ms, max_size_kb), e.g. Budget(0.5, 128)")
    _refused(lambda: edgekd.validate([art], "host-cpu", None, data=small_data, references=[torch.nn.Linear(2, 2)]),
             "references is a list, not a mapping of artifact names to models; pass {artifact.name: model}, e.g. "
             "{'student-fp32': student}")


def test_build_student_names_an_input_shape_without_channels():
    from edgekd.search.spaces import SPACES

    spec = StudentSpec("mbv2", SPACES.get("mbv2").smallest())
    _refused(lambda: edgekd.build_student(spec, (16, 16), 4),
             "input_shape is (16, 16), not (channels, height, width); pass data.input_shape, e.g. (1, 16, 16) for "
             "16x16 grayscale images")
