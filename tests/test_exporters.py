from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import fixed_batch_net, run_uninstalled

from edgekd.errors import ConfigError, DataError, ExportError, OutputError
from edgekd.export import ExportRequest, exporter_names, get_exporter


@pytest.fixture(scope="module")
def student(small_data):
    import torch

    from edgekd.search.spaces import SPACES

    torch.manual_seed(0)
    config = {"stem": 16, "widths": [16, 32, 64], "depths": [1, 2, 2], "expands": [4, 4, 4], "kernels": [3, 3, 3]}
    return SPACES.get("mbv2").build(config, small_data.input_shape, small_data.num_classes).eval()


@pytest.fixture(scope="module")
def fp32_artifact(student, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return get_exporter("onnx-fp32")(ExportRequest("s", "student", out, student, small_data.x_val[:1]))


def test_registry_lists_builtin_exporters():
    assert {"onnx-fp32", "onnx-int8", "inc"} <= set(exporter_names())
    with pytest.raises(ConfigError, match="unknown exporter 'nope'; choose one of: .*onnx-fp32"):
        get_exporter("nope")


def test_an_exporters_folder_in_the_users_project_does_not_hide_the_built_in_ones(tmp_path):
    """A top-level package named exporters was taken by the user's own exporters/ (first on sys.path): every
    export then failed with 'unknown exporter', listing none."""
    import subprocess
    import sys

    (tmp_path / "exporters").mkdir()
    (tmp_path / "exporters" / "__init__.py").write_text('"""my app\'s own exporters"""\n')
    (tmp_path / "use.py").write_text("from edgekd.export import exporter_names\nprint(exporter_names())\n")
    done = subprocess.run([sys.executable, "use.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {"onnx-fp32", "onnx-int8", "onnx-int8-qat", "inc"} <= set(eval(done.stdout))


def test_a_checkout_on_sys_path_without_installing_finds_its_exporters(tmp_path):
    """The repository put on PYTHONPATH as it is (a GPU machine, a quick try) has no installed mapping of its
    exporters/ folder to edgekd.exporters: it is loaded from beside the package."""
    import shutil
    from pathlib import Path

    import edgekd

    root = Path(edgekd.__file__).resolve().parent.parent
    for name in ("edgekd", "exporters", "profiles"):
        shutil.copytree(root / name, tmp_path / "checkout" / name, ignore=shutil.ignore_patterns("__pycache__"))
    where, names = run_uninstalled("from edgekd.export import exporter_names; import edgekd; print(edgekd.__file__); "
                                   "print(exporter_names())", tmp_path / "checkout", tmp_path / "checkout")
    assert where.startswith(str(tmp_path / "checkout")) and "onnx-int8" in eval(names)


def test_an_entry_point_naming_an_exporter_function_registers_it(monkeypatch):
    """A plugin's entry point was imported and its function thrown away: only self-registering modules worked."""
    import importlib.metadata
    import sys
    import types

    import edgekd.export as export

    def mine(request):
        return request

    plugin = types.ModuleType("my_plugin")
    plugin.mine = mine
    monkeypatch.setitem(sys.modules, "my_plugin", plugin)
    point = importlib.metadata.EntryPoint("my-exp", "my_plugin:mine", "edgekd.exporters")
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [point] if group == "edgekd.exporters" else [])
    monkeypatch.setattr(export, "_loaded", False)
    monkeypatch.setattr(export.EXPORTERS, "_items", dict(export.EXPORTERS._items))
    assert export.get_exporter("my-exp") is mine


def test_fp32_is_single_file_with_dynamic_batch_and_matches_torch(fp32_artifact, student, small_data):
    import onnxruntime as ort

    from edgekd.distill.trainer import predict

    model = onnx.load(fp32_artifact.path)
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert not any(n.metadata_props for n in model.graph.node)  # debug metadata stripped
    sess = ort.InferenceSession(fp32_artifact.path, providers=["CPUExecutionProvider"])
    x = small_data.x_test[:37]
    got = sess.run(None, {"input": x})[0]
    np.testing.assert_allclose(got, predict(student, x), atol=1e-4)
    assert fp32_artifact.opset == 18 and len(fp32_artifact.sha256) == 64
    # The oldest IR version that carries opset 18, so onnxruntime before 1.16 (IR 9 at most) loads it too.
    assert model.ir_version == 8 == fp32_artifact.details["ir_version"]


def test_int8_is_qdq_and_smaller(fp32_artifact, small_data, tmp_path):
    art = get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:64],
                                                  source=fp32_artifact))
    model = onnx.load(art.path)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert art.precision == "int8" and art.size_bytes < fp32_artifact.size_bytes
    # Only the domains its nodes use: the quantizer's pre-processing imports eight more (org.pytorch.aten,
    # com.microsoft.nchwc, ...) that a strict runtime or converter may refuse.
    assert {o.domain for o in model.opset_import} <= {n.domain for n in model.graph.node} | {""}
    assert not any(n.metadata_props or n.doc_string for n in model.graph.node)
    assert model.ir_version == 8


def test_an_mlps_first_layer_is_quantized_and_the_estimate_follows(small_data, tmp_path):
    # a first convolution stays fp32 (it sees a raw image of few channels); a first fully connected layer
    # holds most of an MLP's weights, and keeping it fp32 kept the int8 file nearly the fp32 one's size
    import torch

    from edgekd.search.file_size import estimate_int8_bytes, shipped_bytes

    torch.manual_seed(0)
    pixels = small_data.input_shape[1] * small_data.input_shape[2]
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(pixels, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)).eval()
    fp32 = get_exporter("onnx-fp32")(ExportRequest("m", "student", tmp_path, mlp, small_data.x_val[:1]))
    art = get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:64],
                                                  source=fp32))
    gemms = [n.name for n in onnx.load(fp32.path).graph.node if n.op_type == "Gemm"]
    assert list(art.details["excluded_nodes"]) == gemms[-1:]  # the classifier alone
    assert art.size_bytes < 0.4 * fp32.size_bytes
    written = shipped_bytes(mlp, small_data, small_data.x_train[:32], "int8")
    assert abs(estimate_int8_bytes(mlp) / written - 1) < 0.08


def test_int8_without_calibration_is_refused(fp32_artifact, tmp_path):
    with pytest.raises(ExportError, match="calibration"):
        get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, source=fp32_artifact))


def test_untraceable_model_gives_export_error(small_data, tmp_path):
    import torch

    class DataDependent(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow cannot be exported
                return x.flatten(1)[:, :10]
            return -x.flatten(1)[:, :10]

    with pytest.raises(ExportError, match="could not export"):
        get_exporter("onnx-fp32")(ExportRequest("bad", "student", tmp_path, DataDependent(), small_data.x_val[:1]))
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize("opset", [17, 18])
def test_a_forward_that_branches_on_the_batch_size_is_refused_at_export(small_data, tmp_path, opset):
    """Traced at a batch of 2, the file kept that branch and answered one image otherwise than torch, with a
    dynamic batch in its signature and no word; a phone runs one image."""
    import torch

    class ByBatch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(small_data.x_val[0].size, 10)

        def forward(self, x):
            y = self.fc(x.flatten(1))
            return y if x.shape[0] > 1 else -y

    torch.manual_seed(0)
    with pytest.raises(ExportError, match=r"'bb' exported to ONNX answers one image otherwise than torch .*branches "
                                          r"on the batch size.*; compute the same thing for any batch size"):
        get_exporter("onnx-fp32")(ExportRequest("bb", "student", tmp_path, ByBatch(), small_data.x_val[:1],
                                                opset=opset))
    assert not (tmp_path / "bb.onnx").exists()


def test_artifact_records_signature_and_ops(fp32_artifact):
    details = fp32_artifact.details
    assert "Conv" in details["op_types"]
    assert details["inputs"][0]["name"] == "input" and details["inputs"][0]["dtype"] == "float"
    assert isinstance(details["inputs"][0]["shape"][0], str)  # the symbolic batch dimension
    assert details["outputs"][0]["shape"][1] == 10


def test_int8_calibration_methods(fp32_artifact, small_data, tmp_path):
    art = get_exporter("onnx-int8")(ExportRequest("e", "student", tmp_path, calibration=small_data.x_train[:32],
                                                  source=fp32_artifact, options={"calibration": "percentile"}))
    assert art.details["calibration"] == "Percentile" and art.details["excluded_nodes"]
    with pytest.raises(ConfigError, match="unknown calibration method 'magic'"):
        get_exporter("onnx-int8")(ExportRequest("m", "student", tmp_path, calibration=small_data.x_train[:8],
                                                source=fp32_artifact, options={"calibration": "magic"}))


def _outlier_net_onnx(path):
    """Conv -> ReLU -> Conv whose first activation is a narrow bulk with a few large values: KL-divergence
    calibration clips those, min/max keeps them."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                                torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)).eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 12, 12),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    return path


def _activation_scales(path) -> dict[str, float]:
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1}


def test_entropy_calibration_picks_other_ranges_than_minmax(tmp_path):
    """quantize_static's own entropy search had as many bins as quantized bins, so its only candidate was the
    min/max range: the "entropy" file was byte-identical to minmax's and recorded as Entropy."""
    from edgekd.validate import artifact_from_file

    src = artifact_from_file(_outlier_net_onnx(tmp_path / "net.onnx"))
    x = np.random.default_rng(0).normal(size=(64, 1, 12, 12)).astype(np.float32)
    x[::16, :, 3:6, 3:6] = 40.0  # a few outliers in a few images
    files = {m: get_exporter("onnx-int8")(ExportRequest(m, "student", tmp_path, calibration=x, source=src,
                                                        opset=17, options={"calibration": m}))
             for m in ("minmax", "entropy")}
    assert files["entropy"].details["calibration"] == "Entropy"
    assert files["entropy"].sha256 != files["minmax"].sha256
    minmax, entropy = (_activation_scales(files[m].path) for m in ("minmax", "entropy"))
    assert minmax.keys() == entropy.keys()
    assert any(entropy[k] < 0.5 * minmax[k] for k in minmax)  # the outliers are clipped


def test_entropy_calibration_is_refused_where_onnxruntime_cannot_apply_it(fp32_artifact, small_data, tmp_path,
                                                                         monkeypatch):
    import onnxruntime.quantization as ortq

    def old_quantize_static(model_input, model_output, calibration_data_reader, **kwargs):
        raise AssertionError("not reached")

    monkeypatch.setattr(ortq, "quantize_static", old_quantize_static)
    refused = (r"onnxruntime \S+ cannot apply entropy calibration .*; use calibration minmax or percentile, or "
               r"upgrade onnxruntime")
    with pytest.raises(ConfigError, match=refused):
        get_exporter("onnx-int8")(ExportRequest("e", "student", tmp_path, calibration=small_data.x_train[:8],
                                                source=fp32_artifact, options={"calibration": "entropy"}))
    from edgekd.pipeline import CompressConfig

    with pytest.raises(ConfigError, match=refused):  # where compress reads its settings, not after the training
        CompressConfig(calibration="entropy")
    CompressConfig(calibration="percentile")


def test_int8_can_quantize_the_first_conv(fp32_artifact, small_data, tmp_path):
    def first_conv_weight_is_int8(path: str) -> bool:
        graph = onnx.load(path).graph
        producers = {o: n.op_type for n in graph.node for o in n.output}
        conv = next(n for n in graph.node if n.op_type == "Conv")
        return producers.get(conv.input[1]) == "DequantizeLinear"

    default = get_exporter("onnx-int8")(ExportRequest("d", "student", tmp_path, calibration=small_data.x_train[:32],
                                                      source=fp32_artifact))
    every = get_exporter("onnx-int8")(ExportRequest("a", "student", tmp_path, calibration=small_data.x_train[:32],
                                                    source=fp32_artifact, options={"quantize_first_conv": True}))
    assert len(default.details["excluded_nodes"]) == 2 and not first_conv_weight_is_int8(default.path)
    assert len(every.details["excluded_nodes"]) == 1 and first_conv_weight_is_int8(every.path)


# -- inc: neural-compressor accuracy-aware tuning -----------------------------------------------------------------


@pytest.fixture(scope="module")
def inc_artifact(student, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("inc") / "not" / "made"  # made for the file, as the other exporters do
    return get_exporter("inc")(ExportRequest("inc", "student", out, student, small_data.x_val[:1],
                                             calibration=small_data.x_train[:64],
                                             options={"tolerable_loss": 0.2}))  # plumbing: one trial is enough


def test_inc_is_tuned_folded_single_file_int8(inc_artifact, fp32_artifact, small_data):
    import onnxruntime as ort

    assert Path(inc_artifact.path).parent.name == "made" and Path(inc_artifact.path).is_file()

    model = onnx.load(inc_artifact.path)
    assert {o.domain for o in model.opset_import} <= {n.domain for n in model.graph.node} | {""}

    model = onnx.load(inc_artifact.path)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "Clip" not in ops
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    assert any(i.data_type == onnx.TensorProto.INT8 for i in model.graph.initializer)  # weights stored as int8
    assert inc_artifact.precision == "int8" and inc_artifact.exporter == "inc"
    assert inc_artifact.size_bytes < fp32_artifact.size_bytes / 2
    details = inc_artifact.details
    assert details["folded_weight_quantizers"] > 0 and details["trials"] >= 1 and details["config"]
    assert details["int8_metric"] >= details["fp32_metric"] * 0.8 and "onnxruntime" in details["metric"]
    assert list(details["tried"].values())[-1] == details["int8_metric"]
    x = small_data.x_test[:64]
    runs = [ort.InferenceSession(a.path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for a in (fp32_artifact, inc_artifact)]
    assert (runs[0].argmax(1) == runs[1].argmax(1)).mean() >= 0.8
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


@pytest.mark.parametrize("options, message", [
    ({"tolerable_loss": 1.5}, "outside \\[0, 1\\)"),
    ({"tolerable_loss": "1%"}, "outside \\[0, 1\\)"),
    ({"max_trials": 0}, "not a positive integer"),
    ({"speed": "max"}, "unknown inc option 'speed'; valid: eval_data, max_trials, tolerable_loss"),
    ({"eval_data": ([1.0], [1, 2])}, "1 inputs and 2 labels"),
])
def test_inc_rejects_bad_options(student, small_data, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        get_exporter("inc")(ExportRequest("i", "student", tmp_path, student, small_data.x_val[:1],
                                          calibration=small_data.x_train[:8], options=options))


@pytest.mark.parametrize("which", ["calibration", "eval_data", "calibration beside eval_data"])
def test_inc_refuses_inputs_shaped_unlike_the_model_s_before_tuning(student, small_data, tmp_path, which):
    """With eval_data, calibration inputs of the wrong size reached the model only inside the tuning, and the error
    blamed neural-compressor and said to use another exporter."""
    from edgekd.errors import DataError

    # RGB for a grayscale student (not constant: constant calibration inputs are refused for that first)
    wrong = np.random.default_rng(0).normal(size=(8, 3, *small_data.x_train.shape[2:])).astype(np.float32)
    calibration = small_data.x_train[:8] if which == "eval_data" else wrong
    options = {"eval_data": (wrong if which == "eval_data" else small_data.x_val[:8], np.zeros(8, np.int64))} \
        if "eval_data" in which else {}
    what = "eval_data inputs" if which == "eval_data" else "calibration inputs"
    with pytest.raises(DataError, match=f"inc {what} of shape \\(3, .*\\) per sample do not fit the model's "
                                        "input \\(1, "):
        get_exporter("inc")(ExportRequest("i", "student", tmp_path, student, small_data.x_val[:1],
                                          calibration=calibration, options=options))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["false", "no", 0, None])
def test_int8_yes_no_options_are_booleans(fp32_artifact, small_data, tmp_path, value):
    # "false" is a truthy string: taken as a bool it quantized the first convolution it was asked to keep
    with pytest.raises(ConfigError, match=f"onnx-int8 quantize_first_conv {value!r} is not True or False"):
        get_exporter("onnx-int8")(ExportRequest("m", "student", tmp_path, calibration=small_data.x_train[:8],
                                                source=fp32_artifact, options={"quantize_first_conv": value}))


def test_inc_writes_nothing_to_stderr_nor_a_log_folder_in_home(tmp_path):
    """neural-compressor's import warned "Auto detect accelerator" twice and "hw aligned scales not supported",
    torch's pytree warned about torchao's enum, and its fp8 logger made ~/.habana_logs/inc_log.txt; run in a
    fresh process, as each is said once per process."""
    import os
    import subprocess
    import sys

    code = """
import numpy as np, torch
from pathlib import Path
from edgekd.export import ExportRequest, get_exporter
from edgekd.search.spaces import SPACES
torch.manual_seed(0)
config = {"stem": 8, "widths": [8, 8, 8], "depths": [1, 1, 1], "expands": [2, 2, 2], "kernels": [3, 3, 3]}
model = SPACES.get("mbv2").build(config, (1, 8, 8), 4).eval()
x = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)
get_exporter("inc")(ExportRequest("inc", "student", Path("out"), model, x[:1], calibration=x,
                                  options={"tolerable_loss": 0.5}))
import os
assert "LOG_LEVEL_INC" not in os.environ  # set for INC's import alone: child processes inherit nothing
"""
    (tmp_path / "out").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL_INC", "LOG_LEVEL_ALL")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**env, "HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "inc.onnx").is_file()
    assert done.stderr == "" and done.stdout == ""
    assert not (tmp_path / "home" / ".habana_logs").exists()


def test_inc_needs_a_torch_model_and_calibration(fp32_artifact, small_data, tmp_path):
    with pytest.raises(ExportError, match="inc needs a torch model, a sample input and calibration inputs"):
        get_exporter("inc")(ExportRequest("i", "student", tmp_path, source=fp32_artifact,
                                          calibration=small_data.x_train[:8]))


def test_inc_says_when_no_configuration_meets_the_tolerance(student, small_data, tmp_path, monkeypatch):
    import edgekd.exporters.inc as inc

    monkeypatch.setattr(inc, "_ort_logits", lambda path, x: np.zeros((len(x), 10), np.float32))  # every int8 wrong
    from edgekd.distill.trainer import predict

    labels = predict(student, small_data.x_train[:32]).argmax(1)  # fp32 scores 1.0
    with pytest.raises(ExportError, match="no int8 configuration kept the top-1 accuracy on eval_data within 1.0% "
                                          "of fp32 in onnxruntime .*; raise tolerable_loss"):
        get_exporter("inc")(ExportRequest("i", "student", tmp_path, student, small_data.x_val[:1],
                                          calibration=small_data.x_train[:32], options={
                                              "max_trials": 1, "eval_data": (small_data.x_train[:32], labels)}))
    assert not (tmp_path / "i.onnx").exists()
    with pytest.raises(ExportError, match="the fp32 model scores 0 on the top-1 accuracy on eval_data"):
        get_exporter("inc")(ExportRequest("i", "student", tmp_path, student, small_data.x_val[:1],
                                          calibration=small_data.x_train[:32], options={
                                              "eval_data": (small_data.x_train[:32], (labels + 1) % 10)}))


def test_a_failed_inc_export_leaves_an_earlier_file_as_it_was(student, fp32_artifact, small_data, tmp_path,
                                                              monkeypatch):
    """inc folded and rewrote its file in place before the checker ran: a step that failed left it half-written,
    over an earlier good file of that name."""
    import shutil

    import edgekd.exporters.inc as inc

    earlier = tmp_path / "i.onnx"
    earlier.write_bytes(b"an earlier file")

    def tune(exported, request, metric, limits, to_onnx, trial):  # the tuning itself is tested above
        shutil.copyfile(fp32_artifact.path, trial)
        return {}

    def tidy(path):
        Path(path).write_bytes(b"half")
        raise ExportError("tidying failed", "report it")

    monkeypatch.setattr(inc, "_tune", tune)
    monkeypatch.setattr(inc, "tidy_for_device", tidy)
    with pytest.raises(ExportError, match="tidying failed"):
        get_exporter("inc")(ExportRequest("i", "student", tmp_path, student, small_data.x_val[:1],
                                          calibration=small_data.x_train[:8], options={"max_trials": 1},
                                          force=True))
    assert earlier.read_bytes() == b"an earlier file" and sorted(p.name for p in tmp_path.iterdir()) == ["i.onnx"]


def test_inc_untraceable_model_gives_export_error(small_data, tmp_path):
    import torch

    class DataDependent(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x.flatten(1)[:, :10]
            return -x.flatten(1)[:, :10]

    model = DataDependent().train()
    with pytest.raises(ExportError, match="could not capture the model"):
        get_exporter("inc")(ExportRequest("bad", "student", tmp_path, model, small_data.x_val[:1],
                                          calibration=small_data.x_train[:8]))
    assert model.training  # the caller's module is left in the mode it was in


def test_inc_keeps_no_layer_fp32_in_a_two_layer_model():
    # keeping both layers fp32 would leave nothing in int8: no configuration may claim to, nor repeat another
    import torch
    from edgekd.exporters.inc import _tuning_space

    two = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    assert [name for name, _ in _tuning_space(two)] == [
        "uint8 activations, minmax", "uint8 activations, KL", "int8 activations, minmax"]
    three = torch.nn.Sequential(two[0], torch.nn.Conv2d(4, 4, 1), *two[1:])
    assert [name for name, _ in _tuning_space(three)][1:] == [
        "uint8 activations, minmax, first/last layer fp32", "uint8 activations, KL, first/last layer fp32",
        "int8 activations, minmax, first/last layer fp32"]


def test_weight_quantizer_folding_is_exact(tmp_path):
    import onnxruntime as ort
    from edgekd.exporters.inc import fold_weight_quantization
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    scale = (np.abs(w).reshape(4, -1).max(1) / 127).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(scale, "s"),
             numpy_helper.from_array(np.zeros(4, np.int8), "z"), numpy_helper.from_array(np.int8(-127), "lo"),
             numpy_helper.from_array(np.int8(127), "hi")]
    nodes = [helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"], axis=0),
             helper.make_node("Clip", ["wq", "lo", "hi"], ["wc"]),
             helper.make_node("DequantizeLinear", ["wc", "s", "z"], ["wd"], axis=0),
             helper.make_node("Conv", ["x", "wd"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    x = rng.normal(size=(1, 2, 5, 5)).astype(np.float32)
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert fold_weight_quantization(path) == 1
    folded = onnx.load(str(path))
    assert [n.op_type for n in folded.graph.node] == ["DequantizeLinear", "Conv"]
    assert {i.name for i in folded.graph.initializer} == {"wc", "s", "z"}  # the fp32 weight is gone
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)
    assert fold_weight_quantization(path) == 0  # nothing left to fold


# --- --opset: older runtimes -------------------------------------------------------------------------------

@pytest.mark.parametrize("opset, ir", [(13, 7), (17, 8)])
def test_fp32_and_int8_at_an_older_opset(student, small_data, tmp_path, opset, ir):
    import onnxruntime as ort

    from edgekd.distill.trainer import predict

    fp32 = get_exporter("onnx-fp32")(ExportRequest("s", "student", tmp_path, student, small_data.x_val[:1],
                                                   opset=opset))
    model = onnx.load(fp32.path)
    assert fp32.opset == opset and model.ir_version == ir  # the oldest IR that carries the opset
    x = small_data.x_test[:5]  # another batch size than exported with: the batch stays dynamic
    got = ort.InferenceSession(fp32.path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, predict(student, x), atol=1e-4)
    int8 = get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:32],
                                                   source=fp32, opset=opset))
    assert int8.opset == opset and {"QuantizeLinear", "DequantizeLinear"} <= set(int8.details["op_types"])


def test_int8_refuses_an_opset_other_than_its_sources(fp32_artifact, small_data, tmp_path):
    with pytest.raises(ExportError, match="onnx-int8 keeps the opset of its source, and '.*s.onnx' is at opset 18, "
                                          "not the 13 asked for; pass opset=18"):
        get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:8],
                                                source=fp32_artifact, opset=13))


def test_an_fp32_file_below_opset_13_is_refused_with_advice_that_works(small_data, tmp_path, fast_profile):
    """It was told to pass opset=12, which ExportRequest refuses; the fallback named an --opset never given."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekd.int8_fallback import int8_with_fallback
    from edgekd.validate import artifact_from_file

    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 6, 6])], [weight])
    path = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7), str(path))
    calibration = np.random.default_rng(0).normal(size=(8, 1, 8, 8)).astype(np.float32)
    expected = r"'.*old\.onnx' is at opset 12, and int8 needs opset 13 or later.*export the fp32 model again at opset"
    with pytest.raises(ExportError, match=expected):
        get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path / "out", calibration=calibration,
                                                source=artifact_from_file(path)))
    with pytest.raises(ExportError, match=expected):
        int8_with_fallback(path, calibration, fast_profile, tmp_path / "out")


def test_opsets_the_exporters_cannot_write_are_refused(student, small_data, tmp_path):
    with pytest.raises(ConfigError, match=r"--opset 12 is outside 13\.\.\d+; pass 18"):
        ExportRequest("s", "student", tmp_path, student, small_data.x_val[:1], opset=12)
    for name in ("onnx-int8-qat", "inc"):
        request = ExportRequest("s", "student", tmp_path, student, small_data.x_val[:1],
                                calibration=small_data.x_train[:8], opset=17)
        with pytest.raises(ExportError, match=f"{name} exports at opset 18 or later, not 17; pass --opset 18"):
            get_exporter(name)(request)


def test_a_pt2_program_exports_at_opset_18_or_later_only(student, small_data, tmp_path):
    import torch

    x = torch.from_numpy(np.repeat(small_data.x_val[:1], 2, axis=0))
    program = torch.export.export(student, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    with pytest.raises(ExportError, match="is a torch.export program, which exports at opset 18 or later, not 17"):
        get_exporter("onnx-fp32")(ExportRequest("p", "teacher", tmp_path, program, small_data.x_val[:1], opset=17))
    assert not (tmp_path / "p.onnx").exists()


def test_a_pt2_programs_batch_is_named_batch_not_torchs_symbol(student, small_data, tmp_path):
    # the program's symbol for its batch (s77) named the ONNX file's batch dimension, which a device app reads
    import torch

    x = torch.from_numpy(np.repeat(small_data.x_val[:1], 2, axis=0))
    program = torch.export.export(student, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    art = get_exporter("onnx-fp32")(ExportRequest("p", "teacher", tmp_path, program, small_data.x_val[:1]))
    graph = onnx.load(art.path).graph
    assert [v.type.tensor_type.shape.dim[0].dim_param for v in [*graph.input, *graph.output]] == ["batch", "batch"]


def test_a_file_at_another_opset_than_asked_is_not_passed_off(fp32_artifact, tmp_path):
    import shutil

    from edgekd.exporters._common import finish

    copy = tmp_path / "other.onnx"
    shutil.copy(fp32_artifact.path, copy)
    with pytest.raises(ExportError, match="onnx-fp32 wrote opset 18 for 'other', not the 17 asked for"):
        finish(copy, "other", "student", "fp32", "onnx-fp32", opset=17)
    assert not copy.exists()


# --- the caller's files and modules are left as they were ------------------------------------------------------

def test_int8_never_writes_over_its_source(fp32_artifact, small_data, tmp_path):
    import dataclasses
    import shutil

    from edgekd.fsutil import sha256

    source = tmp_path / "m.onnx"
    shutil.copy(fp32_artifact.path, source)
    with pytest.raises(OutputError, match="onnx-int8 would write its output over its source model '.*m.onnx'; "
                                          "pick another name or output folder"):
        get_exporter("onnx-int8")(ExportRequest("m", "student", tmp_path, calibration=small_data.x_train[:8],
                                                source=dataclasses.replace(fp32_artifact, path=str(source))))
    assert sha256(source) == fp32_artifact.sha256


def test_a_failed_int8_export_deletes_no_file_it_did_not_write(fp32_artifact, small_data, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("quantizer failed")

    monkeypatch.setattr("onnxruntime.quantization.quantize_static", fail)
    earlier = tmp_path / "q.onnx"
    earlier.write_bytes(b"an earlier run's file")
    with pytest.raises(ExportError, match="could not quantize .*: quantizer failed"):
        get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:8],
                                                source=fp32_artifact, force=True))
    assert earlier.read_bytes() == b"an earlier run's file"


def test_int8_refuses_misspelt_options(fp32_artifact, small_data, tmp_path):
    with pytest.raises(ConfigError, match="unknown onnx-int8 options 'calibraton', 'quantise_first_conv'; did you "
                                          "mean 'calibration'\\? valid: calibration, nodes_to_exclude, "
                                          "quantize_first_conv$"):
        get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:8],
                                                source=fp32_artifact,
                                                options={"quantise_first_conv": True, "calibraton": "entropy"}))


def test_a_failed_fp32_export_leaves_an_earlier_file_as_it_was(small_data, tmp_path):
    """torch wrote over the earlier file, then the failure deleted it."""
    import torch

    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10] if float(x.sum()) > 0 else x.flatten(1)[:, 10:20]

    earlier = tmp_path / "f.onnx"
    earlier.write_bytes(b"an earlier run's file")
    with pytest.raises(ExportError, match="torch could not export 'f' to ONNX"):
        get_exporter("onnx-fp32")(ExportRequest("f", "student", tmp_path, Branchy(), small_data.x_val[:1],
                                                force=True))
    assert earlier.read_bytes() == b"an earlier run's file" and sorted(tmp_path.iterdir()) == [earlier]


def test_an_existing_file_is_replaced_only_with_force(small_data, tmp_path):
    """An exporter wrote over out_dir/<name>.onnx without a word: a run's shipped file, which its manifest records
    by sha256, was replaced and the run's gate failed its integrity check, nothing saying why."""
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(small_data.x_val[0].size, 10))
    earlier = tmp_path / "f.onnx"
    earlier.write_bytes(b"a shipped file")
    with pytest.raises(OutputError, match=f"^'{earlier}' already exists; choose another name or output folder, or "
                                          "pass force=True to replace it$"):
        get_exporter("onnx-fp32")(ExportRequest("f", "student", tmp_path, model, small_data.x_val[:1]))
    assert earlier.read_bytes() == b"a shipped file"
    with pytest.raises(ConfigError, match="^force must be true or false, got 'false'"):
        ExportRequest("f", "student", tmp_path, model, small_data.x_val[:1], force="false")
    art = get_exporter("onnx-fp32")(ExportRequest("f", "student", tmp_path, model, small_data.x_val[:1], force=True))
    assert art.path == str(earlier) and earlier.read_bytes() != b"a shipped file"


@pytest.mark.parametrize("exporter", ["onnx-fp32", "onnx-int8-qat"])
def test_exporters_without_options_refuse_any(exporter, small_data, tmp_path):
    """Options given to an exporter that reads none were ignored in silence."""
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(small_data.x_val[0].size, 10))
    with pytest.raises(ConfigError, match=f"unknown {exporter} option 'calibration'") as exc:
        get_exporter(exporter)(ExportRequest("f", "student", tmp_path, model, small_data.x_val[:1], opset=18,
                                             options={"calibration": "entropy"}))
    assert exc.value.fix == f"{exporter} takes no options: leave them out"
    assert list(tmp_path.iterdir()) == []


def test_fp32_export_leaves_the_module_in_its_own_mode(small_data, tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 14 * 14, 10)).train()
    model[1].eval()  # a frozen BatchNorm in a model still training
    get_exporter("onnx-fp32")(ExportRequest("f", "student", tmp_path, model, small_data.x_val[:1]))
    assert [m.training for m in model] == [True, False, True, True] and model.training


# --- a fixed batch size ---------------------------------------------------------------------------------------

def _fixed_batch_onnx(path, batch, res):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10)).eval()
    torch.onnx.export(model, (torch.zeros(batch, 1, res, res),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"])  # no dynamic axes: the batch is fixed
    return path


def test_int8_calibrates_a_fixed_batch_model_in_batches_it_accepts(small_data, tmp_path):
    from edgekd.exporters.onnx_int8 import _Reader

    from edgekd.onnxfile import describe, load_model
    from edgekd.validate import artifact_from_file

    res = small_data.input_shape[1]
    one = artifact_from_file(_fixed_batch_onnx(tmp_path / "one.onnx", 1, res))
    art = get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:5],
                                                  source=one, opset=17))
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(art.details["op_types"])

    four = _fixed_batch_onnx(tmp_path / "four.onnx", 4, res)
    (four_input,) = describe(load_model(four))["inputs"]

    def batches(n):
        reader = _Reader.for_input(small_data.x_train[:n], four_input, "four.onnx")
        return [len(b["input"]) for b in iter(reader.get_next, None)]

    assert batches(10) == [4, 4]  # the remainder is dropped
    assert batches(3) == [4]  # too few for one batch: repeated to fill it
    # the record counts the inputs calibration used, and says what was dropped or repeated
    for given, used, note in [(10, 8, "2 of 10 input(s) dropped: the model's fixed batch size is 4"),
                              (3, 3, "3 input(s) repeated to fill one batch of 4, the model's fixed batch size"),
                              (8, 8, None)]:
        art = get_exporter("onnx-int8")(ExportRequest(f"q{given}", "student", tmp_path, opset=17, source=
                                                      artifact_from_file(four), calibration=small_data.x_train[:given]))
        assert (art.details["calibration_samples"], art.details.get("calibration_note")) == (used, note)
    with pytest.raises(DataError, match=r"calibration inputs of shape \(1, 8, 8\) per sample do not fit input "
                                        rf"'input' \(4, 1, {res}, {res}\) of 'four.onnx'; calibrate with inputs"):
        _Reader.for_input(small_data.x_train[:4, :, :8, :8], four_input, "four.onnx")


def test_a_model_with_a_fixed_batch_fails_in_one_line_that_says_so(small_data, tmp_path):
    import logging



    class Seen(logging.Handler):  # torch's own handler holds the real stderr, which no capture fixture sees
        records: list = []

        def emit(self, record):
            self.records.append(record.getMessage())

    guards = logging.getLogger("torch._guards")
    guards.addHandler(seen := Seen())
    try:
        with pytest.raises(ExportError, match=r"inconsistencies were found: Eq\(s\d+, 1\) is inconsistent!; the "
                                              r"model fixes its batch size .*x\.flatten\(1\)"):
            get_exporter("onnx-fp32")(ExportRequest("b", "student", tmp_path, fixed_batch_net(), small_data.x_val[:1]))
    finally:
        guards.removeHandler(seen)
    assert not seen.records  # a page of traceback ("Error while creating guard: ...") before


def test_an_example_input_of_another_layout_than_the_model_takes_is_named_in_the_fix(small_data, tmp_path):
    import torch

    rgb = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    rgb(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ExportError, match=r"expected input\[.*\] to have 3 channels, but got 1 .*; the example "
                                          r"input is 1x16x16 per sample \(NCHW\), which is not the layout"):
        get_exporter("onnx-fp32")(ExportRequest("rgb", "student", tmp_path, rgb.eval(), small_data.x_val[:1]))


def test_an_fp32_model_with_external_data_is_pre_processed_from_one_file_without_a_word(fp32_artifact, small_data,
                                                                                     tmp_path, caplog, monkeypatch):
    import logging

    from onnxruntime.quantization import shape_inference

    from edgekd.validate import artifact_from_file

    user = tmp_path / "user"
    user.mkdir()
    onnx.save(onnx.load(fp32_artifact.path), str(user / "m.onnx"), save_as_external_data=True,
              location="m.onnx.data", size_threshold=0)
    real, given = shape_inference.quant_pre_process, []

    def pre_process(source, *args, **kwargs):  # onnxruntime optimizes a copy where external files are not
        model = onnx.load(source, load_external_data=False)
        given.append([t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL])
        shape_inference.logger.error("ONNX Runtime Model Optimization Failed! (as it says when it gives up)")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(shape_inference, "quant_pre_process", pre_process)
    with caplog.at_level(logging.INFO):
        art = get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:16],
                                                      source=artifact_from_file(user / "m.onnx")))
    assert given == [[]] and art.precision == "int8"
    assert not [r for r in caplog.records if "Optimization Failed" in r.getMessage()]


def _raw_pixel_model(path, elem_type):
    """A classifier whose preprocessing is inside: it takes ``elem_type`` pixels (n, 1, 8, 8) and casts them."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.normal(size=(3, 4 * 6 * 6)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Conv", ["xf", "w"], ["c"]), helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "raw", [helper.make_tensor_value_info("x", elem_type, ["n", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def test_a_model_taking_uint8_pixels_is_calibrated_with_them(tmp_path):
    import onnxruntime as ort

    from edgekd.validate import artifact_from_file

    source = artifact_from_file(_raw_pixel_model(tmp_path / "u8.onnx", onnx.TensorProto.UINT8))
    pixels = np.random.default_rng(1).integers(0, 256, (32, 1, 8, 8), dtype=np.uint8)
    art = get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=pixels, source=source))
    session = ort.InferenceSession(art.path, providers=["CPUExecutionProvider"])
    assert art.details["inputs"][0]["dtype"] == "uint8" and session.run(None, {"x": pixels})[0].shape == (32, 3)
    with pytest.raises(DataError, match=r"calibration inputs range from 0\.01 to 1\.01, which input 'x' of "
                                        r"'.*u8\.onnx' \(uint8\) cannot hold as they are; calibrate with the raw "
                                        r"values the model takes \(uint8, 0\.\.255\)"):
        get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, source=source, force=True,
                                                calibration=pixels.astype(np.float32) / 255 + 0.01))


def test_a_model_input_calibration_cannot_feed_is_refused(tmp_path):
    from edgekd.validate import artifact_from_file

    source = artifact_from_file(_raw_pixel_model(tmp_path / "b.onnx", onnx.TensorProto.BOOL))
    with pytest.raises(ExportError, match=r"input 'x' of '.*b\.onnx' takes bool, which onnx-int8 cannot calibrate "
                                          r"with; give the model a float or integer image input"):
        get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, source=source,
                                                calibration=np.eye(8, dtype=np.float32)[None, None].repeat(4, 0)))


def test_the_batch_of_one_check_leaves_a_file_the_local_runtime_cannot_run_to_validate(small_data, tmp_path,
                                                                                       monkeypatch):
    """An fp32 export at an opset (or with an operator) this onnxruntime cannot run is allowed; the check then
    raised onnxruntime's own error, a traceback, instead of leaving the verdict to validate."""
    import onnxruntime
    import torch

    def refuse(*_args, **_kwargs):
        raise RuntimeError("NOT_IMPLEMENTED : Could not find an implementation for Gemm(13)")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(small_data.x_val[0].size, 10))
    art = get_exporter("onnx-fp32")(ExportRequest("ok", "student", tmp_path, model, small_data.x_val[:1]))
    assert Path(art.path).exists()


def test_an_out_dir_that_does_not_exist_yet_is_made_for_the_file(student, small_data, tmp_path):
    """The API's ExportRequest named a folder to write into; one not made yet was a raw FileNotFoundError."""
    out = tmp_path / "new" / "folder"
    art = get_exporter("onnx-fp32")(ExportRequest("s", "student", out, student, small_data.x_val[:1]))
    assert Path(art.path) == out / "s.onnx" and (out / "s.onnx").is_file()
    int8 = get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path / "other", calibration=small_data.x_val,
                                                   source=art))
    assert Path(int8.path).is_file()


def test_a_sample_given_as_a_tensor_is_taken_as_calibration_is(student, small_data, tmp_path):
    import torch

    sample = torch.from_numpy(small_data.x_val[:1]).requires_grad_()
    art = get_exporter("onnx-fp32")(ExportRequest("t", "student", tmp_path, student, sample))
    assert Path(art.path).is_file()



def test_an_operator_newer_than_the_opset_names_the_opset_and_torch_prints_no_graph(small_data, tmp_path, capfd):
    """Below opset 18 torch's TorchScript exporter printed its whole IR graph from C++ (a hundred lines on
    stdout, past sys.stdout) before failing, and the fix said to make the model traceable."""
    import torch

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)
            self.fc = torch.nn.Linear(16, 10)

        def forward(self, x):
            rows = x.squeeze(1)  # 16 tokens of 16 pixels
            return self.fc(self.attn(rows, rows, rows, need_weights=False)[0].mean(1))  # scaled_dot_product_attention

    print("before")
    with pytest.raises(ExportError, match=r"'aten::scaled_dot_product_attention' to ONNX opset version 13 is not "
                                          r"supported.*; pass --opset 14 or later \(or leave --opset out for 18\)$"):
        get_exporter("onnx-fp32")(ExportRequest("a", "student", tmp_path, Attention().eval(), small_data.x_val[:1],
                                                opset=13))
    print("after")  # stdout is the user's again
    assert capfd.readouterr().out == "before\nafter\n"


def test_an_operator_no_older_opset_writes_is_sent_to_the_default_opset():
    import torch
    from edgekd.exporters._common import export_fix

    unsupported = torch.onnx.errors.UnsupportedOperatorError("aten::fft_rfft2", 13, None)
    assert export_fix(unsupported, (2, 1, 16, 16)) == ("leave --opset out to export at 18, which torch's newer "
                                                       "exporter writes")



def _heads(key: str):
    import torch

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16 * 16, 10)

        def forward(self, x):
            features = x.flatten(1)  # 256 wide, first in the dict
            return {"features": features, key: self.fc(features)}

    return Heads().eval()


def _outputs(artifact) -> list[tuple[str, list]]:
    graph = onnx.load(artifact.path).graph
    return [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]) for o in graph.output]


@pytest.mark.parametrize("opset", [13, 18])
def test_a_dict_holding_logits_exports_them_alone_under_that_name(small_data, tmp_path, opset):
    """The first output was named logits whatever it was: here the 256-wide features, which a device app reading
    'logits' took for the scores."""
    art = get_exporter("onnx-fp32")(ExportRequest("h", "student", tmp_path, _heads("logits"), small_data.x_val[:1],
                                                  opset=opset))
    assert _outputs(art) == [("logits", ["batch", 10])]


def test_a_dict_of_other_outputs_names_each_by_its_key(small_data, tmp_path):
    art = get_exporter("onnx-fp32")(ExportRequest("h", "student", tmp_path, _heads("scores"), small_data.x_val[:1]))
    assert _outputs(art) == [("features", ["batch", 256]), ("scores", ["batch", 10])]


def test_a_tuple_names_its_first_output_logits_and_the_rest_by_position(small_data, tmp_path):
    import torch

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16 * 16, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)), x.flatten(1)

    art = get_exporter("onnx-fp32")(ExportRequest("p", "student", tmp_path, Pair().eval(), small_data.x_val[:1]))
    assert _outputs(art) == [("logits", ["batch", 10]), ("output_1", ["batch", 256])]


def test_a_fixed_batch_at_an_older_opset_is_named_not_taken_for_another_input_size(small_data, tmp_path):
    """torch's TorchScript exporter says only "mat1 and mat2 shapes cannot be multiplied", which the fix read as an
    example input of the wrong size."""


    with pytest.raises(ExportError, match=r"shapes cannot be multiplied .*; the model fixes its batch size .*"
                                          r"x\.flatten\(1\)"):
        get_exporter("onnx-fp32")(ExportRequest("b", "student", tmp_path, fixed_batch_net(), small_data.x_val[:1],
                                                opset=13))


def test_a_float64_sample_is_taken_as_float32(student, small_data, tmp_path):
    """numpy's default dtype: the export failed on "Input type (double) and bias type (float) should be the same"."""
    sample = small_data.x_val[:1].astype(np.float64)
    art = get_exporter("onnx-fp32")(ExportRequest("d", "student", tmp_path, student, sample))
    assert Path(art.path).is_file()


def test_a_sample_without_its_batch_dimension_is_refused_saying_so(student, small_data, tmp_path):
    """A torch convolution takes an unbatched image, and the export failed later on "False != True"."""
    image = small_data.x_val[0]
    with pytest.raises(ExportError, match=r"^the sample input of shape \(1, 16, 16\) for 'n' has no batch dimension; "
                                          r"pass it as a batch of one, of shape \(1, 1, 16, 16\)"):
        get_exporter("onnx-fp32")(ExportRequest("n", "student", tmp_path, student, image))


def test_a_model_adding_its_own_channel_axis_keeps_its_batch_of_one_sample(tmp_path):
    """(1, 16) fed to x.unsqueeze(1) -> Conv1d(1, ...) was refused as an image without its batch dimension."""
    import torch

    class Signal(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(1, 4, 3, padding=1)
            self.fc = torch.nn.Linear(64, 3)

        def forward(self, x):
            return self.fc(self.conv(x.unsqueeze(1)).flatten(1))

    art = get_exporter("onnx-fp32")(ExportRequest("s", "student", tmp_path, Signal(), np.zeros((1, 16), np.float32)))
    assert Path(art.path).is_file()


def test_int8_refuses_a_source_that_is_already_int8(fp32_artifact, small_data, tmp_path):
    """The quantizer's output of a QDQ model failed the ONNX checker (not in SSA form), and the error said to
    report it."""
    int8 = get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:8],
                                                   source=fp32_artifact))
    with pytest.raises(ExportError, match=r"^'q\.onnx' is already quantized \(it holds DequantizeLinear, "
                                          r"QuantizeLinear nodes\); pass the fp32 model it was made from"):
        get_exporter("onnx-int8")(ExportRequest("qq", "student", tmp_path, calibration=small_data.x_train[:8],
                                                source=int8))
