"""onnxfile: what a model file's signature records, and --input-shape checked against it."""

from pathlib import Path

import pytest

from edgekd.errors import ArtifactError, ConfigError
from edgekd.input_shape import check_input_shape
from edgekd.onnxfile import describe, load_model


def _conv(path: Path, x_shape, weights_as_input: bool) -> Path:
    """x -> Conv(W) -> y; ``weights_as_input``: W also listed in graph.input before x, as older exporters
    (keep_initializers_as_inputs) and converters wrote it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((16, 3, 3, 3), np.float32), "W")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inputs = [helper.make_tensor_value_info("W", TensorProto.FLOAT, [16, 3, 3, 3])] if weights_as_input else []
    graph = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"])], "g", [*inputs, x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_weights_listed_as_inputs_are_not_the_models_input(tmp_path):
    path = _conv(tmp_path / "m.onnx", ["N", 3, "H", "W"], weights_as_input=True)
    details = describe(load_model(path))
    assert details["inputs"] == [{"name": "x", "dtype": "float", "shape": ["N", 3, "H", "W"]}]
    check_input_shape(path, details, (1, 3, 32, 32))  # checked against x, not against the weight W
    with pytest.raises(ConfigError, match=r"sets dimension 1 to 1, and '.*m\.onnx' fixes it at 3 \(N, 3, H, W\)"):
        check_input_shape(path, details, (1, 1, 32, 32))


def test_an_input_of_unknown_rank_takes_any_shape_and_a_scalar_none(tmp_path):
    """An input with no shape at all is not a scalar: its rank is unknown, so --input-shape says what it is."""
    unknown = _conv(tmp_path / "unknown.onnx", None, weights_as_input=False)
    details = describe(load_model(unknown))
    assert details["inputs"][0]["shape"] is None and details["outputs"][0]["shape"] is None
    check_input_shape(unknown, details, (1, 3, 32, 32))
    scalar = _conv(tmp_path / "scalar.onnx", [], weights_as_input=False)
    details = describe(load_model(scalar))
    assert details["inputs"][0]["shape"] == []
    with pytest.raises(ArtifactError, match=r"input 'x' of model '.*scalar.onnx' is a scalar \(rank 0\), not a "
                                            "batch of images or tensors edgekd can feed; re-export the model"):
        check_input_shape(scalar, details, (1, 3, 32, 32))


def test_a_scalar_input_or_none_at_all_is_refused_as_such_not_as_a_missing_shape(tmp_path, run_cli):
    """A scalar input was "has no shape recorded ... pass --input-shape", and --input-shape 1 then asked for
    "0 numbers, e.g. " (nothing); a model without inputs was said to have "0 inputs ()"."""
    import onnx
    from onnx import TensorProto, helper

    def save(name, inputs, nodes, inits=()):
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        graph = helper.make_graph(nodes, "g", inputs, [out], list(inits))
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
                  str(tmp_path / name))
        return tmp_path / name

    scalar = save("scalar.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
                  [helper.make_node("Relu", ["x"], ["y"])])
    zero = save("zero.onnx", [], [helper.make_node("Relu", ["c"], ["y"])],
                [helper.make_tensor("c", TensorProto.FLOAT, [1, 4], [1, 2, 3, 4])])
    for extra in ((), ("--input-shape", "1")):
        code, _, err = run_cli("bench", scalar, *extra)
        assert code == 2 and err == (f"error: input 'x' of model '{scalar}' is a scalar (rank 0), not a batch of "
                                     "images or tensors edgekd can feed; re-export the model taking a batch first, "
                                     "e.g. images of shape (1, 3, 224, 224)\n")
    code, _, err = run_cli("bench", zero)
    assert code == 2 and err.startswith(f"error: model '{zero}' has no inputs, so there is nothing for edgekd to "
                                        "feed it; ")


def test_a_git_lfs_pointer_given_as_a_model_is_named_as_one(tmp_path, run_cli):
    """A CI checkout without LFS leaves a pointer where the model was: told to re-export it, the user was sent the
    wrong way (gate said so of a manifest's file only)."""
    pointer = tmp_path / "model.onnx"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 127528\n")
    for command in (("validate", pointer, "--data", "digits"), ("gate", pointer, "--max-size", "1MB")):
        code, out, err = run_cli(*command)
        assert (code, out) == (2, "") and err == (f"error: '{pointer}' is a Git LFS pointer, not the model; check it "
                                                  "out with LFS (actions/checkout's `lfs: true`, or git lfs pull)\n")


def test_a_pytorch_file_given_as_a_model_is_named_as_one(tmp_path, run_cli):
    import pickle

    import torch

    from edgekd.errors import ArtifactError

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"w": torch.zeros(2)}, run / "student.pt")
    (run / "distill.json").write_text("{}")
    code, out, err = run_cli("validate", run / "student.pt", "--data", "digits")
    assert (code, out) == (2, "") and err == (
        f"error: '{run / 'student.pt'}' is a PyTorch file (torch.save), not an ONNX model; export it first: "
        f"`edgekd compress --distilled {run}` exports and validates this distill run's student\n")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "weights.bin")  # any name: the zip says torch
    with pytest.raises(ArtifactError, match="is a PyTorch file .* export it to .onnx first"):
        load_model(tmp_path / "weights.bin")
    (tmp_path / "old.pth").write_bytes(pickle.dumps({"w": [0.0]}, protocol=2))  # torch's legacy format: a pickle
    with pytest.raises(ArtifactError, match="is a PyTorch file"):
        load_model(tmp_path / "old.pth")
    (tmp_path / "junk.onnx").write_bytes(b"\x80junk")  # a pickle's first byte, not a torch name: not called one
    with pytest.raises(ArtifactError, match="is not a readable ONNX model"):
        load_model(tmp_path / "junk.onnx")


def _ort_copy(onnx_path: Path, to: Path) -> Path:
    """``onnx_path`` saved in onnxruntime's ORT format at ``to``, whatever its name."""
    import shutil

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(onnx_path.with_suffix(".tmp.ort"))
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    shutil.move(options.optimized_model_filepath, to)
    return to


def test_a_model_in_the_other_format_than_its_name_says_is_told_to_be_renamed(tmp_path, run_cli):
    """An ORT file named .onnx was "Wire format was corrupt ... re-export it"; an .onnx named .ort "not a readable
    ORT-format file": both whole files, only misnamed."""
    import shutil

    from conftest import pixel_onnx

    from edgekd.ort_format import check_ort_file

    model = pixel_onnx(tmp_path / "m.onnx")
    ort_named_onnx = _ort_copy(model, tmp_path / "o.onnx")
    onnx_named_ort = Path(shutil.copy(model, tmp_path / "x.ort"))
    with pytest.raises(ArtifactError, match=r"'.*o\.onnx' is an ORT-format model, not an ONNX model; rename it "
                                            r"to .*o\.ort: edgekd reads"):
        load_model(ort_named_onnx)
    for refuse in (load_model, check_ort_file):
        with pytest.raises(ArtifactError, match=r"'.*x\.ort' is an ONNX model, not an ORT-format file, though named "
                                                r"\.ort; rename it to .*x\.onnx"):
            refuse(onnx_named_ort)
    check_ort_file(_ort_copy(model, tmp_path / "m.ort"))  # a real one passes
    code, _, err = run_cli("bench", ort_named_onnx)
    assert code == 2 and err.startswith("error: ") and "rename it to" in err and err.count("\n") == 1


def _weight_only(path: Path, op: str) -> Path:
    """x (N, 16) -> MatMul by a weight stored as int8: behind a DequantizeLinear (weight-only quantization,
    onnxruntime's quantize for LLMs, tf2onnx's), or inside onnxruntime's MatMulNBits (4-bit blocks)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    if op == "DequantizeLinear":
        inits = [numpy_helper.from_array(np.ones((16, 4), np.int8), "w_q"),
                 numpy_helper.from_array(np.array(0.1, np.float32), "w_s"),
                 numpy_helper.from_array(np.array(0, np.int8), "w_z")]
        nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"]),
                 helper.make_node("MatMul", ["x", "w"], ["y"])]
    else:
        inits = [numpy_helper.from_array(np.ones((4, 1, 8), np.uint8), "w_q"),
                 numpy_helper.from_array(np.ones(4, np.float32), "w_s")]
        nodes = [helper.make_node("MatMulNBits", ["x", "w_q", "w_s"], ["y"], domain="com.microsoft", K=16, N=4,
                                  bits=4, block_size=16)]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=8), str(path))
    return path


@pytest.mark.parametrize("op", ["DequantizeLinear", "MatMulNBits"])
def test_a_model_quantized_weight_only_is_int8(tmp_path, op):
    # Its int8 weights were left out of the count and it read as fp32: a run copied it as teacher-fp32.onnx and
    # compared its students with it as with the fp32 teacher
    from edgekd.onnxfile import is_int8, precision_of, quantized_ops
    from edgekd.validate import artifact_from_file

    path = _weight_only(tmp_path / "w.onnx", op)
    model = load_model(path)
    assert is_int8(model) and precision_of(model) == "int8" and quantized_ops(model) == [op]
    assert artifact_from_file(path).precision == "int8"


def _qdq(path: Path, activations: str | None, weights: str | None) -> Path:
    """x -> [QuantizeLinear/DequantizeLinear to ``activations``] -> MatMul with weights [stored as ``weights``,
    behind a DequantizeLinear] -> y, as onnxruntime's quantize_static writes a QDQ model; None leaves that part
    in float. Opset 21, which quantizes to 16 bits."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes, fed, weight = [], [], "x", "w"
    if activations:
        inits += [numpy_helper.from_array(np.array(0.01, np.float32), "x_s"),
                  numpy_helper.from_array(np.array(0, activations), "x_z")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
                  helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_d"])]
        fed = "x_d"
    if weights:
        inits += [numpy_helper.from_array(np.ones((16, 4), weights), "w_q"),
                  numpy_helper.from_array(np.array(0.1, np.float32), "w_s"),
                  numpy_helper.from_array(np.array(0, weights), "w_z")]
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"]))
    else:
        inits.append(numpy_helper.from_array(np.ones((16, 4), np.float32), "w"))
    nodes.append(helper.make_node("MatMul", [fed, weight], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), str(path))
    return path


@pytest.mark.parametrize("activations, weights, label", [
    ("uint8", "int8", "int8"),  # quantize_static's default
    ("int16", "int16", "int16"),  # QInt16 activations and weights (A16W16)
    ("uint16", "uint8", "a16w8"),  # QUInt16 activations, QUInt8 weights: the NPU (QNN) recipe
    ("int16", None, "int16"),  # 16-bit activations, float weights
    (None, "int16", "int16"),  # weight-only, 16-bit: read as fp32 (an int16 weight was no stored integer)
    (None, "uint8", "int8"),
])
def test_a_model_quantized_to_16_bits_is_labelled_by_its_bits_not_int8(tmp_path, run_cli, activations, weights,
                                                                        label):
    """Any QDQ model read "int8", int16 (A16W16) and A16W8 ones too, in validate's line, --json and the gate."""
    import json

    from edgekd.onnxfile import precision_of
    from edgekd.validate import artifact_from_file

    path = _qdq(tmp_path / "q.onnx", activations, weights)
    assert precision_of(load_model(path)) == label
    assert artifact_from_file(path).precision == label
    schema = json.loads((Path(__file__).parents[1] / "edgekd" / "schemas" / "manifest-v1.schema.json").read_text())
    enum = schema["$defs"]["entry"]["properties"]["artifact"]["properties"]["precision"]["enum"]
    assert label in enum  # a run whose --teacher is such a file records it in its manifest
    if label == "a16w8":  # the line a user reads
        code, out, err = run_cli("validate", path, "--input-shape", "1,16")
        assert code == 0 and out.startswith(f"{path}: a16w8, opset 21"), out + err
