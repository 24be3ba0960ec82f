import numpy as np
import onnx
import pytest

from edgekd.errors import ConfigError, ExportError
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
    assert {"onnx-fp32", "onnx-int8"} <= set(exporter_names())
    with pytest.raises(ConfigError, match="unknown exporter 'nope'; choose one of: .*onnx-fp32"):
        get_exporter("nope")


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


def test_int8_is_qdq_and_smaller(fp32_artifact, small_data, tmp_path):
    art = get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:64],
                                                  source=fp32_artifact))
    ops = {n.op_type for n in onnx.load(art.path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert art.precision == "int8" and art.size_bytes < fp32_artifact.size_bytes


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
