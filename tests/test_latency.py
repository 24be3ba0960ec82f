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


def _relu_at(path, dims):
    import onnx
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("x", "y"))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_each_latency_says_the_shape_it_was_fed(tmp_path, fast_profile):
    """A model with a fixed batch runs at it whatever the profile's measure.batch_size: bench compared one at
    batch 1 with one at the profile's 8 without a word, so each latency carries the shape its model was fed."""
    import dataclasses

    fixed, free = _relu_at(tmp_path / "fixed.onnx", [1, 3]), _relu_at(tmp_path / "free.onnx", ["n", 3])
    eight = dataclasses.replace(fast_profile, measure={**fast_profile.measure, "batch_size": 8})
    one, many = measure([fixed, free], eight)
    assert (one.input_shape, one.batch, many.input_shape, many.batch) == ((1, 3), 1, (8, 3), 8)
    (given,) = measure([free], eight, shape=(2, 3))
    assert given.input_shape == (2, 3)


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
    # an opset onnxruntime loads, with an operator it has no kernel at (onnxruntime 1.32's words for opset 28)
    no_kernel = ("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
                 "DequantizeLinear(28) node with name 'conv.weight_DequantizeLinear'")
    assert load_failure(RuntimeError(no_kernel), "student-int8.onnx", "1.32.0") == (
        "'student-int8.onnx' uses DequantizeLinear at opset 28, which onnxruntime 1.32.0 has no kernel for",
        "export the model at a lower opset (edgekd compress --opset 18, the default), or upgrade onnxruntime "
        "where the model runs")
    # any other operator: its version, not the model's opset, and most often its input types (a bfloat16 Exp)
    other = no_kernel.replace("DequantizeLinear(28)", "Exp(13)")
    message, fix = load_failure(RuntimeError(other), "m.onnx", "1.32.0")
    assert message == "onnxruntime 1.32.0 has no CPU kernel for Exp (version 13) with the input types 'm.onnx' gives it"
    assert "opset" not in fix and fix.startswith("export the model in float32")


def test_a_provider_the_runtime_lacks_is_refused_rather_than_measured_on_the_cpu(two_models, fast_profile):
    """onnxruntime falls back to the CPU without a word when a listed provider is missing."""
    import dataclasses

    runtime = {**fast_profile.runtime, "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    gpu = dataclasses.replace(fast_profile, runtime=runtime)
    with pytest.raises(RunnerError, match=r"onnxruntime .* here has no CUDAExecutionProvider \(it has .*"
                                          r"CPUExecutionProvider\), so the profile's device cannot be measured; "
                                          "install the onnxruntime build with that provider"):
        measure([two_models[0]], gpu, shape=(1, 1, 32, 32))


def test_a_provider_the_runtime_lacks_is_refused_before_anything_runs_here(two_models, fast_profile):
    """Only the latency worker checked: compress loaded its data and teacher before failing at its first
    measurement, and gate --no-latency scored accuracy on the CPU with onnxruntime's raw UserWarning."""
    import dataclasses
    import warnings

    from edgekd.latency.runners import probe_device
    from edgekd.latency.runtime import open_session

    runtime = {**fast_profile.runtime, "providers": ["CUDAExecutionProvider"]}
    gpu = dataclasses.replace(fast_profile, runtime=runtime)
    said = r"onnxruntime .* here has no CUDAExecutionProvider .*; install the onnxruntime build with that provider"
    with pytest.raises(RunnerError, match=said):
        probe_device(gpu)  # compress and search call it first
    with pytest.raises(RunnerError, match=said):
        open_session(two_models[0], gpu)
    # a board's profile: its worker checks the board; here accuracy runs on this host's providers, said by the gate
    board = dataclasses.replace(gpu, runner={**gpu.runner, "kind": "ssh", "host": "pi"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_session(two_models[0], board).get_providers() == ["CPUExecutionProvider"]


def test_a_profile_batch_past_the_input_size_cap_is_refused_naming_measure_batch_size(tmp_path, fast_profile):
    """--input-shape 10000,3,512,512 is refused, and the same shape made by measure.batch_size 10000 reached the
    worker's allocation: a MemoryError whose fix sent the user to the device's numpy installation."""
    import dataclasses

    import onnx
    from onnx import TensorProto, helper

    from edgekd.latency.worker import MAX_INPUT_VALUES
    from edgekd.validate import MAX_INPUT_VALUES as CAP

    graph = helper.make_graph([helper.make_node("ReduceMean", ["input"], ["y"], keepdims=0)], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 512, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "img.onnx"))
    big = dataclasses.replace(fast_profile, measure={**fast_profile.measure, "batch_size": 10000})
    with pytest.raises(RunnerError, match=r"the input of model '.*img\.onnx' at the profile's measure\.batch_size "
                                          r"10000: 10000,3,512,512 is 7,864,320,000 values .* more than the "
                                          r"67,108,864 edgekd measures with; lower measure\.batch_size in the "
                                          r"profile to at most 85 for this model's image of 786,432 values"):
        measure([tmp_path / "img.onnx"], big)
    assert MAX_INPUT_VALUES == CAP  # the worker's copy, for devices without edgekd


def test_the_dynamic_dimension_hint_takes_the_profiles_batch(two_models, fast_profile):
    """Following the example measures what the profile asks: its batch, not always 1."""
    import dataclasses

    batched = dataclasses.replace(fast_profile, measure={**fast_profile.measure, "batch_size": 4})
    with pytest.raises(RunnerError, match=r"dynamic dimension 2 \(h\); pass --input-shape, e\.g\. "
                                          r"--input-shape 4,1,224,224"):
        measure([two_models[0]], batched)


def test_an_input_type_the_worker_cannot_feed_says_which_it_can(tmp_path, fast_profile):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.INT16, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT16, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(tmp_path / "i16.onnx"))
    with pytest.raises(ArtifactError, match=r"is tensor\(int16\), which edgekd cannot feed; export the model with "
                                            "an input of one of the types edgekd measures: float, float16, "
                                            "double, uint8, int8, int32, int64$"):
        measure([tmp_path / "i16.onnx"], fast_profile)


def test_a_model_that_fails_at_its_own_shape_is_named_even_without_warm_up(tmp_path, fast_profile):
    """Without warm-up runs the first failing run is a timed one; it is named the same way."""
    import dataclasses

    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 47])
    to = helper.make_tensor("to", TensorProto.INT64, [2], [1, 47])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "to"], ["y"])], "g", [x], [y], [to])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(tmp_path / "r.onnx"))
    cold = dataclasses.replace(fast_profile, measure={**fast_profile.measure, "warmup_runs": 0})
    for profile in (fast_profile, cold):
        with pytest.raises(ArtifactError, match=r"model '.*r\.onnx' fails to run on input shape 1,3,4,4: Reshape "
                                                r"node: .*; the model fails at its own input shape: pass "
                                                "--input-shape with the one it takes, or re-export it") as exc:
            measure([tmp_path / "r.onnx"], profile)
        assert "\n" not in exc.value.message and "installation" not in exc.value.message


def test_onnxruntime_run_failures_lose_their_source_location():
    """Messages as onnxruntime 1.32 writes them: a source path and a C++ signature, or a bare function name."""
    import numpy as np

    from edgekd.latency.worker import run_failure

    feed = {"x": np.zeros((1, 3, 64, 64), np.float32)}
    reshape = RuntimeError(
        "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape node. Name:'' Status "
        "Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:91 onnxruntime::"
        "ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, onnxruntime::TensorShapeVector&, bool) "
        "input_shape_size == requested_shape_size was false. The input tensor cannot be reshaped to the requested "
        "shape. Input shape:{1,3,64,64}, requested shape:{1,3072}\n")
    assert run_failure(reshape, "m.onnx", feed, True) == (
        "model 'm.onnx' fails to run on input shape 1,3,64,64: Reshape node: input_shape_size == "
        "requested_shape_size was false. The input tensor cannot be reshaped to the requested shape. Input "
        "shape:{1,3,64,64}, requested shape:{1,3072}", "check --input-shape against what the model takes")
    conv = RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Conv node. "
                        "Name:'y_nchwc' Status Message: nchwc_ops.cc:167 Compute NCHWc Conv input and filter must "
                        "be rank 4.\nsecond line")
    assert run_failure(conv, "m.onnx", feed, True)[0] == (
        "model 'm.onnx' fails to run on input shape 1,3,64,64: Conv node 'y_nchwc': NCHWc Conv input and filter "
        "must be rank 4.")
