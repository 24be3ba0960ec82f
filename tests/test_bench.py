"""`edgekd bench`: interleaved comparison, result cache, and its error paths."""

import json

import numpy as np
import pytest
from conftest import pixel_onnx


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    small = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
    big = torch.nn.Sequential(*[torch.nn.Conv2d(1 if i == 0 else 32, 32, 3, padding=1) for i in range(4)])
    x = torch.from_numpy(np.zeros((1, 1, 16, 16), np.float32))
    for name, model in (("small", small), ("big", big)):
        torch.onnx.export(model.eval(), (x,), str(folder / f"{name}.onnx"), dynamo=False, input_names=["input"])
    torch.onnx.export(small.eval(), (x,), str(folder / "dynamic.onnx"), dynamo=False, input_names=["input"],
                      dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}})
    return folder


def test_bench_compares_interleaved_and_caches(run_cli, models, fast_profile_path, tmp_path):
    report = tmp_path / "reports" / "b.json"  # its folder does not exist yet
    args = ["bench", models / "big.onnx", "--vs", models / "small.onnx", "--profile", fast_profile_path,
            "--json", report]
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert "cached" not in out and "big.onnx" in out and "small.onnx" in out
    data = json.loads(report.read_text())
    assert data["models"][0]["p50_ms"] > data["models"][1]["p50_ms"] and data["cached"] is False
    vs = data["models"][1]["vs_first"]  # small against big, repeat by repeat
    assert vs["median"] > 1 and vs["low"] <= vs["median"] <= vs["high"] and vs["pairs"] == data["models"][1]["repeats"]
    assert data["models"][0]["vs_first"]["median"] == 1
    code, _, err = run_cli(*args)
    assert code == 2 and "already exists" in err and json.loads(report.read_text()) == data
    code, out, _ = run_cli(*args, "--force")
    assert code == 0 and "(cached result)" in out and json.loads(report.read_text())["cached"] is True
    code, out, _ = run_cli(*args, "--no-cache", "--force")
    assert code == 0 and "cached" not in out


def test_bench_gives_the_ratio_an_interval_once_there_are_enough_paired_repeats(run_cli, models, steady_profile_path):
    code, out, err = run_cli("bench", models / "big.onnx", "--vs", models / "small.onnx", "--profile",
                             steady_profile_path, "--no-cache")
    assert code == 0, err
    row = next(line for line in out.splitlines() if "small.onnx" in line).split("|")
    low, high = (float(x) for x in row[-2].strip().rstrip("x").split("-"))
    assert 1 < low <= float(row[-3].strip().rstrip("x")) <= high  # 7 repeats: the interval is shown


def test_dynamic_model_needs_input_shape(run_cli, models, fast_profile_path):
    code, _, err = run_cli("bench", models / "dynamic.onnx", "--profile", fast_profile_path, "--no-cache")
    assert code == 2 and "Traceback" not in err
    assert "e.g. --input-shape 1,1,224,224" in err  # the model's own 1 channel, not a generic RGB shape
    code, out, err = run_cli("bench", models / "dynamic.onnx", "--profile", fast_profile_path,
                             "--input-shape", "1,1,16,16", "--no-cache")
    assert code == 0, err
    code, _, err = run_cli("bench", models / "dynamic.onnx", "--input-shape", "1,x,16", "--profile",
                           fast_profile_path)
    assert code == 2 and "positive integers" in err


@pytest.mark.parametrize("command", ["bench", "validate"])
def test_an_input_shape_the_model_cannot_take_is_refused_before_measuring(run_cli, models, fast_profile_path,
                                                                          command):
    code, _, err = run_cli(command, models / "dynamic.onnx", "--input-shape", "1,16,16", "--profile",
                           fast_profile_path)
    assert code == 2 and "--input-shape 1,16,16 has 3 dimensions" in err and "takes 4 (b, 1, h, w)" in err
    assert "e.g. 1,1,224,224" in err and "Traceback" not in err
    code, _, err = run_cli(command, models / "big.onnx", "--input-shape", "1,3,16,16", "--profile",
                           fast_profile_path)
    assert code == 2 and "sets dimension 1 to 3, and" in err and "fixes it at 1 (1, 1, 16, 16)" in err


def test_validate_measures_a_dynamic_model_at_its_data_s_shape(run_cli, models, fast_profile_path):
    """With --data, the images the accuracy is measured on give the size to time it at; --input-shape wins."""
    args = ["validate", models / "dynamic.onnx", "--profile", fast_profile_path, "--data", "digits",
            "--resolution", "18"]
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert "note: latency measured at input shape 1,1,18,18, the test data's" in out
    code, out, err = run_cli(*args[:-1], "16", "--input-shape", "1,1,16,16")
    assert code == 0 and "latency measured at input shape" not in out, err


def test_a_model_with_two_inputs_is_refused_by_name(run_cli, fast_profile_path, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    a, b, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("a", "b", "y"))
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(tmp_path / "two.onnx"))
    for command in ("bench", "validate"):
        code, _, err = run_cli(command, tmp_path / "two.onnx", "--profile", fast_profile_path)
        assert code == 2 and "Traceback" not in err
        assert f"model '{tmp_path / 'two.onnx'}' has 2 inputs (a, b); edgekd measures single-input models" in err


def _cast_model(path, elem_type, shape, out_shape=None):
    """input of ``elem_type`` -> Cast to float -> Flatten: a model that keeps its preprocessing inside."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", elem_type, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT), helper.make_node("Flatten", ["f"], ["y"])]
    # IR 8, opset 17 spelled out: onnx's defaults are its newest, which an older onnxruntime refuses to load.
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), str(path))
    return path


def test_a_float16_model_is_fed_float16_test_images(run_cli, fast_profile_path, tmp_path):
    # GPU and NPU deployments ship float16 models; normalised images cast to float16 keep their top-1
    from onnx import TensorProto

    lines = {}
    for name, kind in (("f32", TensorProto.FLOAT), ("f16", TensorProto.FLOAT16)):
        model = _cast_model(tmp_path / f"{name}.onnx", kind, [1, 1, 8, 8], [1, 64])
        code, out, err = run_cli("validate", model, "--profile", fast_profile_path, "--data", "digits",
                                 "--resolution", "8")
        assert code == 0, out + err
        lines[name] = next(line for line in out.splitlines() if line.startswith("accuracy"))
    assert lines["f16"] == lines["f32"]


def test_a_model_taking_uint8_pixels_is_timed_on_uint8_and_refused_for_accuracy(run_cli, fast_profile_path,
                                                                                 tmp_path):
    """Mobile pipelines often bake preprocessing into the model and feed raw uint8 pixels; the worker fed
    float32 to every model, and onnxruntime refused it with its own words."""
    from onnx import TensorProto

    model = _cast_model(tmp_path / "u8.onnx", TensorProto.UINT8, [1, 1, 8, 8])
    code, out, err = run_cli("bench", model, "--profile", fast_profile_path, "--no-cache")
    assert code == 0 and "u8.onnx" in out, err
    said = f"'{model}' takes uint8 input, and edgekd feeds test images as floats"
    code, out, err = run_cli("validate", model, "--profile", fast_profile_path, "--data", "digits", "--resolution",
                             "8")
    assert code == 2 and said in err and "latency on" not in out  # refused before anything was measured
    code, _, err = run_cli("gate", model, "--profile", fast_profile_path, "--max-latency", "1s", "--min-accuracy",
                           "0.5", "--data", "digits", "--resolution", "8")
    assert code == 2 and said in err
    odd = _cast_model(tmp_path / "flags.onnx", TensorProto.BOOL, [1, 4])
    code, _, err = run_cli("bench", odd, "--profile", fast_profile_path, "--no-cache")
    assert code == 2 and f"input 'x' of model '{odd}' is tensor(bool), which edgekd cannot feed" in err


def test_bench_rejects_missing_and_non_onnx(run_cli, tmp_path):
    code, _, err = run_cli("bench", tmp_path / "nope.onnx")
    assert code == 2 and "does not exist" in err
    bad = tmp_path / "bad.onnx"
    bad.write_text("hello")
    code, _, err = run_cli("bench", bad)
    assert code == 2 and err.startswith("error: ")


def test_corrupt_cache_entry_is_remeasured(models, fast_profile, monkeypatch):
    from edgekd.latency import cache

    paths = [models / "small.onnx"]
    stats, cached = cache.measure_cached(paths, fast_profile)
    entry = cache._path(cache._key(paths, fast_profile, None))
    entry.write_text("{garbage")
    again, cached = cache.measure_cached(paths, fast_profile)
    assert not cached and again[0].p50_ms > 0 and json.loads(entry.read_text())["stats"]


def test_a_cache_entry_without_the_fed_shape_is_remeasured(models, fast_profile):
    """An entry cached before each latency kept the shape it was fed cannot say which batch it is for."""
    from edgekd.latency import cache

    paths = [models / "small.onnx"]
    cache.measure_cached(paths, fast_profile, use_cache=False)
    entry = cache._path(cache._key(paths, fast_profile, None))
    record = json.loads(entry.read_text())
    for stats in record["stats"]:
        del stats["input_shape"]
    entry.write_text(json.dumps(record))
    again, cached = cache.measure_cached(paths, fast_profile)
    assert not cached and again[0].input_shape and json.loads(entry.read_text())["stats"][0]["input_shape"]
    assert cache.measure_cached(paths, fast_profile)[1]


def test_a_measurement_still_noisy_after_repeating_is_said_and_not_cached(run_cli, models, fast_profile_path,
                                                                          tmp_path):
    # No real measurement has its per-repeat medians within 0.0001% of each other.
    strict = tmp_path / "strict.toml"
    strict.write_text(fast_profile_path.read_text().replace("max_cv = 0.5", "max_cv = 0.000001"))
    assert "max_cv = 0.000001" in strict.read_text()
    args = ["bench", models / "small.onnx", "--profile", strict, "--json", tmp_path / "b.json"]
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert "note: " in out and "small.onnx" in out and "not cached" in out and "measure.repeats" in out
    assert json.loads((tmp_path / "b.json").read_text())["models"][0]["noisy"] is True
    code, out, _ = run_cli(*args, "--force")
    assert code == 0 and "(cached result)" not in out  # measured again
    code, out, err = run_cli("validate", models / "small.onnx", "--profile", strict)
    assert code == 0 and "note: cv above the profile's max_cv" in out, err


def test_the_note_on_a_noisy_model_says_its_whole_comparison_was_not_cached(run_cli, models, fast_profile_path,
                                                                            tmp_path, monkeypatch):
    """The cache holds a comparison whole: the note named only the noisy model as uncached, and the next run
    measuring every model again surprised."""
    import dataclasses
    import importlib

    measure_mod = importlib.import_module("edgekd.latency.measure")  # the package's `measure` is the function
    real = measure_mod.measure

    def second_noisy(paths, profile, shape=None):  # one model noisy, the other steady
        stats = real(paths, profile, shape)
        return [dataclasses.replace(s, cv=0.9 if i == 1 else 0.0) for i, s in enumerate(stats)]

    monkeypatch.setattr(measure_mod, "measure", second_noisy)
    own = tmp_path / "own.toml"  # settings of its own: no other test's cached comparison answers for it
    own.write_text(fast_profile_path.read_text().replace("warmup_runs = 3", "warmup_runs = 2"))
    assert "warmup_runs = 2" in own.read_text()
    args = ["bench", models / "big.onnx", "--vs", models / "small.onnx", "--profile", own]
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert f"note: {models / 'small.onnx'}: cv above" in out and "this comparison (every model in it) was not " \
        "cached" in out
    code, out, err = run_cli(*args)
    assert code == 0 and "(cached result)" not in out, err


def test_a_cached_measurement_does_not_outlive_an_upgrade_or_another_cpu(models, fast_profile, monkeypatch):
    """A CI cache of ~/.cache restored on another runner type, or an onnxruntime upgrade, must measure anew."""
    from edgekd.latency import cache, table

    paths = [models / "small.onnx"]
    here = cache._key(paths, fast_profile, None)
    monkeypatch.setattr(table, "host_runtime", lambda: "0.0.1")
    assert cache._key(paths, fast_profile, None) != here
    monkeypatch.undo()
    monkeypatch.setattr(table, "host_cpu", lambda: "Some Other CPU (4 CPUs)")
    assert cache._key(paths, fast_profile, None) != here
    monkeypatch.undo()
    assert cache._key(paths, fast_profile, None) == here


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_measurement(run_cli, models, fast_profile_path,
                                                                            tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(blocker / "cache"))  # a folder under a file: never creatable
    code, out, err = run_cli("bench", models / "small.onnx", "--profile", fast_profile_path)
    assert code == 0 and "| p50 (ms) |" in out and "small.onnx" in out
    assert err.startswith("warning: the measurement could not be cached: ") and str(blocker) in err
    assert "EDGEKD_CACHE_DIR" in err and "Traceback" not in err


def test_a_model_that_fails_the_onnx_checker_says_why(run_cli, fast_profile_path, tmp_path):
    from onnx import TensorProto

    model = _cast_model(tmp_path / "loose.onnx", TensorProto.FLOAT, [1, 1, 8, 8])  # its output has no shape
    code, out, err = run_cli("validate", model, "--profile", fast_profile_path)
    assert code == 1 and "checker FAILED" in out
    assert f"note: '{model.name}' fails the ONNX checker: Field 'shape' of 'type' is required but missing" in out


def test_bench_checks_input_shape_against_the_input_not_a_weight_listed_among_inputs(run_cli, fast_profile_path,
                                                                                    tmp_path):
    """Older exports (keep_initializers_as_inputs) list the weights in graph.input, often before the input."""
    import onnx

    model = onnx.load(str(_cast_model(tmp_path / "m.onnx", onnx.TensorProto.FLOAT, ["n", 1, 4, 4])))
    weight = onnx.helper.make_tensor("w", onnx.TensorProto.FLOAT, [16, 3], [0.0] * 48)
    model.graph.initializer.append(weight)
    model.graph.input.insert(0, onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [16, 3]))
    onnx.save(model, str(tmp_path / "m.onnx"))
    code, out, err = run_cli("bench", tmp_path / "m.onnx", "--input-shape", "2,1,4,4", "--profile",
                             fast_profile_path, "--no-cache")
    assert code == 0 and "m.onnx" in out, err


def test_a_model_input_of_unknown_rank_asks_for_input_shape(run_cli, fast_profile_path, tmp_path):
    """onnxruntime gives such an input's shape as [], a scalar's: it was timed on one, or failed on it."""
    from onnx import TensorProto

    model = _cast_model(tmp_path / "norank.onnx", TensorProto.FLOAT, None)
    code, _, err = run_cli("bench", model, "--profile", fast_profile_path, "--no-cache")
    assert code == 2 and "Traceback" not in err
    assert f"input 'x' of model '{model}' has no shape recorded" in err and "--input-shape 1,3,224,224" in err
    code, out, err = run_cli("bench", model, "--input-shape", "1,1,8,8", "--profile", fast_profile_path, "--no-cache")
    assert code == 0 and "norank.onnx" in out, err
    import onnxruntime as ort  # its ORT-format copy, whose inputs onnxruntime reads: the same shape []

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "norank.ort")
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    code, out, err = run_cli("bench", tmp_path / "norank.ort", "--input-shape", "1,1,8,8", "--profile",
                             fast_profile_path, "--no-cache")
    assert code == 0 and "norank.ort" in out, err


def test_a_model_that_fails_at_the_given_shape_is_named_with_the_shape(run_cli, fast_profile_path, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
    to = helper.make_tensor("to", TensorProto.INT64, [2], [1, 64])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "to"], ["y"])], "g", [x], [y], [to])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(tmp_path / "r.onnx"))
    code, out, err = run_cli("bench", tmp_path / "r.onnx", "--input-shape", "1,1,8,8", "--profile",
                             fast_profile_path, "--no-cache")
    assert code == 0, err
    code, _, err = run_cli("bench", tmp_path / "r.onnx", "--input-shape", "1,1,16,16", "--profile",
                           fast_profile_path, "--no-cache")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: model '{tmp_path / 'r.onnx'}' fails to run on input shape 1,1,16,16: Reshape node")
    assert err.rstrip().endswith("; check --input-shape against what the model takes")
    assert "onnxruntime_src" not in err and ".h:" not in err and "installation" not in err


def test_each_model_takes_its_own_input_shape_as_an_nchw_model_and_its_channels_last_twin_need(
        run_cli, fast_profile_path, tmp_path):
    """One --input-shape fits one layout: a model whose height and width are open, benched against its
    channels-last twin, takes a shape per model, in order."""
    from onnx import TensorProto

    nchw = _cast_model(tmp_path / "nchw.onnx", TensorProto.FLOAT, ["n", 1, "h", "w"])
    nhwc = _cast_model(tmp_path / "nhwc.onnx", TensorProto.FLOAT, ["n", "h", "w", 1])
    args = ["bench", nchw, "--vs", nhwc, "--profile", fast_profile_path, "--no-cache"]
    code, _, err = run_cli(*args, "--input-shape", "1,1,16,16")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"sets dimension 3 to 16, and '{nhwc}' fixes it at 1 (n, h, w, 1)" in err
    assert err.rstrip().endswith("give one --input-shape per model, in order: --input-shape 1,1,16,16 "
                                 "--input-shape 1,16,16,1")
    report = tmp_path / "b.json"
    code, _, err = run_cli(*args, "--input-shape", "1,1,16,16", "--input-shape", "1,16,16,1", "--json", report)
    assert code == 0, err
    assert [m["input_shape"] for m in json.loads(report.read_text())["models"]] == [[1, 1, 16, 16], [1, 16, 16, 1]]
    code, _, err = run_cli(*args, "--input-shape", "1,1,16,16", "--input-shape", "1,16,16,1", "--input-shape",
                           "1,1,8,8")
    assert code == 2 and "--input-shape is given 3 times for 2 models; give it once for every model, or 2 " \
                         "times, once per model in order (MODEL's, then each --vs's)" in err
    code, _, err = run_cli(*args, "--input-shape", "1,1,16,16", "--input-shape", "1,16,16,3")
    assert code == 2 and "fixes it at 1 (n, h, w, 1); keep the model's fixed dimensions, e.g. 1,16,16,1" in err


@pytest.mark.parametrize("dims, example", [
    (["n", "c", "h", "w"], "1,3,224,224"),  # all open: RGB at 224, NCHW
    (["n", "c", 16, 16], "1,3,16,16"),  # open channels: 3, not a 224-channel image
    (["n", 16, 16, "c"], "1,16,16,3"),  # a fixed side first: channels last
    (["n", 1, "h", 16], "1,1,16,16"),  # the other side where one is fixed
    (["n", 8, "h", "w"], "1,8,224,224"),  # 8 channels, NCHW (was read as a side: 1,8,8,3)
])
def test_the_input_shape_example_fills_open_channels_and_sides_sensibly(run_cli, fast_profile_path, tmp_path,
                                                                        dims, example):
    from onnx import TensorProto

    model = _cast_model(tmp_path / "open.onnx", TensorProto.FLOAT, dims)
    code, _, err = run_cli("bench", model, "--profile", fast_profile_path, "--no-cache")
    assert code == 2 and f"pass --input-shape, e.g. --input-shape {example}" in err, err
    code, _, err = run_cli("validate", model, "--input-shape", "1,2", "--profile", fast_profile_path)
    assert code == 2 and f"pass 4 numbers, e.g. {example}" in err, err


def test_the_input_shape_example_takes_the_datas_channels_and_size():
    from edgekd.input_shape import shape_example

    assert shape_example(["n", "c", "h", "w"], 4, (1, 28, 28)) == "4,1,28,28"
    assert shape_example(["n", "h", "w", 3], 1, (1, 24, 32)) == "1,24,32,3"  # a fixed channel count stays
    assert shape_example(["n", "f"], 1, (1, 8, 8)) == "1,64"  # flat rows of C*H*W values


def test_a_changed_external_data_file_is_measured_anew(fast_profile, tmp_path):
    """The weights of a model saved with external data live outside the .onnx: editing them changes the model."""
    import onnx

    from edgekd.latency import cache

    model = onnx.load(str(pixel_onnx(tmp_path / "p.onnx")))
    for init in model.graph.initializer:  # only raw tensors go to external data
        init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init), init.name))
    onnx.save(model, str(tmp_path / "e.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="e.data", size_threshold=0)
    paths = [tmp_path / "e.onnx"]
    before = cache._key(paths, fast_profile, None)
    data = bytearray((tmp_path / "e.data").read_bytes())
    data[0] ^= 1
    (tmp_path / "e.data").write_bytes(bytes(data))
    assert cache._key(paths, fast_profile, None) != before
