import numpy as np
import pytest

from edgekd.errors import ArtifactError, RunnerError
from edgekd.latency.measure import measure, speedup


def _export(model, x, path):
    import torch

    torch.onnx.export(model.eval(), (torch.from_numpy(x),), str(path), dynamo=False, input_names=["input"],
                      dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}})


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("lat")
    torch.manual_seed(0)
    small = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
    big = torch.nn.Sequential(*[torch.nn.Conv2d(1 if i == 0 else 64, 64, 3, padding=1) for i in range(6)],
                              torch.nn.Flatten())
    x = np.zeros((1, 1, 32, 32), np.float32)
    _export(small, x, folder / "small.onnx")
    _export(big, x, folder / "big.onnx")
    return folder / "small.onnx", folder / "big.onnx"


def test_interleaved_measurement_orders_models(two_models, fast_profile):
    small, big = measure(list(two_models), fast_profile, shape=(1, 1, 32, 32))
    assert small.p50_ms <= small.p90_ms <= small.p99_ms
    assert small.runs >= 30 and small.repeats >= 3
    assert speedup(big, small) > 3  # the 6-layer 64-channel net is far slower
    # Each repeat's median comes back, in order, so that models measured together pair up repeat by repeat.
    assert len(small.repeat_p50_ms) == small.repeats == big.repeats == len(big.repeat_p50_ms)
    assert all(b > s for s, b in zip(small.repeat_p50_ms, big.repeat_p50_ms))


def test_dynamic_dims_need_an_input_shape(two_models, fast_profile):
    with pytest.raises(RunnerError, match="--input-shape"):
        measure([two_models[0]], fast_profile)


def test_missing_and_corrupt_models(tmp_path, fast_profile):
    with pytest.raises(ArtifactError, match="does not exist"):
        measure([tmp_path / "nope.onnx"], fast_profile)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ArtifactError, match="cannot load"):
        measure([bad], fast_profile)


def _relu(path, ir_version, opset):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("ir", "opset", "says"), [
    (99, 13, r"'.*m\.onnx' is ONNX IR version 99, and onnxruntime [\d.]+ reads up to \d+;"),
    (10, 99, r"'.*m\.onnx' uses opset 99 of ai\.onnx, and onnxruntime [\d.]+ supports up to \d+;"),
])
def test_a_model_newer_than_the_runtime_is_named_with_both_versions(tmp_path, fast_profile, ir, opset, says):
    """A board's onnxruntime is often older than the onnx package that wrote the model; onnxruntime's own
    message starts with 200 characters of C++ source location, which is all the user used to see."""
    from edgekd.latency.runtime import open_session

    path = _relu(tmp_path / "m.onnx", ir, opset)
    with pytest.raises(ArtifactError, match=says) as measured:  # the worker, in its own process (bench, search)
        measure([path], fast_profile, shape=(1, 3))
    with pytest.raises(ArtifactError, match=says) as opened:  # this process (validate's accuracy, the gate)
        open_session(path, fast_profile)
    for exc in (measured.value, opened.value):
        assert exc.fix.startswith("upgrade onnxruntime where the model runs, or ")
        assert "onnxruntime_src" not in exc.message


def test_onnxruntime_load_failures_lose_their_source_location():
    """Messages as onnxruntime 1.23 (the last release for Python 3.10) wrote them."""
    from edgekd.latency.worker import load_failure

    location = ("[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:/onnxruntime_src/onnxruntime/core/"
                "graph/model.cc:181 onnxruntime::Model::Model(onnx::ModelProto&&, const onnxruntime::PathString&, "
                "const onnxruntime::logging::Logger&, const onnxruntime::ModelOptions&) ")
    ir = RuntimeError(location + "Unsupported model IR version: 14, max supported IR version: 11\n")
    assert load_failure(ir, "m.onnx", "1.23.2")[0] == (
        "'m.onnx' is ONNX IR version 14, and onnxruntime 1.23.2 reads up to 11")
    opset = ("[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:/onnxruntime_src/onnxruntime/core/graph/"
             "model_load_utils.h:46 void onnxruntime::model_load_utils::ValidateOpsetForDomain(const std::string&, "
             "int) ONNX Runtime only *guarantees* support for models stamped with official released onnx opset "
             "versions. Opset 30 is under development and support for this is limited. Current official support "
             "for domain ai.onnx is till opset 23.\n")
    assert load_failure(RuntimeError(opset), "m.onnx", "1.23.2") == (
        "'m.onnx' uses opset 30 of ai.onnx, and onnxruntime 1.23.2 supports up to 23",
        "upgrade onnxruntime where the model runs, or export the model at opset 23 or lower "
        "(edgekd compress --opset 23)")
    invalid = ("[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model from m.onnx failed:/onnxruntime_src/onnxruntime/"
               "core/graph/graph.cc:1460 void onnxruntime::Graph::InitializeStateFromModelFileGraphProto() This is "
               "an invalid model. Error: two nodes with same node name (n).")
    assert load_failure(RuntimeError(invalid), "m.onnx", "1.23.2")[0] == (
        "onnxruntime cannot load 'm.onnx': This is an invalid model. Error: two nodes with same node name (n).")
    assert load_failure(RuntimeError(""), "m.onnx", "1.23.2")[0] == "onnxruntime cannot load 'm.onnx': RuntimeError"
    # an app's onnxruntime older than the ORT format edgekd's --ort copy is written in (onnxruntime 1.15.1's words)
    old_ort = ("[ONNXRuntimeError] : 1 : FAIL : inference_session.cc:1147 LoadOrtModelWithLoader The ORT format model "
               "version [6] is not supported in this build 1.15.1.")
    message, fix = load_failure(RuntimeError(old_ort), "student-int8.ort", "1.15.1")
    assert message == "'student-int8.ort' is in ORT format 6, which onnxruntime 1.15.1 cannot load"
    assert fix.endswith("or ship the .onnx file")


def test_a_provider_the_runtime_lacks_is_refused_rather_than_measured_on_the_cpu(two_models, fast_profile):
    """onnxruntime falls back to the CPU without a word when a listed provider is missing."""
    import dataclasses

    runtime = {**fast_profile.runtime, "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    gpu = dataclasses.replace(fast_profile, runtime=runtime)
    with pytest.raises(RunnerError, match=r"onnxruntime .* here has no CUDAExecutionProvider \(it has .*"
                                          r"CPUExecutionProvider\), so the profile's device cannot be measured; "
                                          "install the onnxruntime build with that provider"):
        measure([two_models[0]], gpu, shape=(1, 1, 32, 32))
