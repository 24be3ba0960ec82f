"""An ONNX model as the teacher (edgekd.onnx_teacher): fed and read as validate does, distilled from on logits,
copied as the run's teacher file; what needs its layers in PyTorch is refused by name."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.errors import ArtifactError, ConfigError, DataError, ModelError
from edgekd.teacher import load_teacher


class _ChannelsLastSoftmax(torch.nn.Module):
    """A TensorFlow export's habits around a torch classifier: NHWC input, probabilities out."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.softmax(self.inner(x.permute(0, 3, 1, 2)), 1)


class _ArgMax(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).argmax(1)


def _export(module, example, path, dynamic=True, dtype=torch.float32):
    torch.onnx.export(module.eval(), (example.to(dtype),), str(path), dynamo=False, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}} if dynamic else None)
    return str(path)


@pytest.fixture(scope="module")
def onnx_files(teacher, small_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx-teacher")
    x = torch.from_numpy(small_data.x_val[:1])
    return {
        "plain": _export(teacher.module, x, folder / "plain.onnx"),
        "keras": _export(_ChannelsLastSoftmax(teacher.module), x.permute(0, 2, 3, 1), folder / "keras.onnx"),
        "batch1": _export(teacher.module, x, folder / "batch1.onnx", dynamic=False),
        "argmax": _export(_ArgMax(teacher.module), x, folder / "argmax.onnx"),
    }


def test_an_onnx_teacher_gives_the_logits_its_torch_model_does(onnx_files, teacher, small_data):
    x = torch.from_numpy(small_data.x_val[:37])
    expected = teacher.module(x).detach()
    plain = load_teacher(onnx_files["plain"])
    assert plain.module.bind(small_data) == () and plain.source == f"ONNX model {onnx_files['plain']}"
    assert torch.allclose(plain.module(x), expected, atol=1e-4)
    # a fixed batch of 1 is run image by image
    one = load_teacher(onnx_files["batch1"]).module
    one.bind(small_data)
    assert torch.allclose(one(x), expected, atol=1e-4)


def test_channels_last_input_and_a_softmax_are_fed_and_read_as_a_tensorflow_export_needs(onnx_files, teacher,
                                                                                         small_data):
    keras = load_teacher(onnx_files["keras"]).module
    notes = keras.bind(small_data)
    assert any("takes NHWC input" in n for n in notes) and any("ends in a softmax" in n for n in notes)
    x = torch.from_numpy(small_data.x_val[:16])
    assert torch.allclose(keras(x), torch.log_softmax(teacher.module(x), 1).detach(), atol=1e-4)


@pytest.mark.parametrize("tail", [["Identity"], ["Identity", "Flatten"], ["Flatten", "Identity", "Identity"]])
def test_a_softmax_followed_by_nodes_that_keep_its_values_is_read_by_its_log(onnx_files, teacher, small_data,
                                                                            tmp_path, tail):
    # An exporter's trailing Identity after the Softmax: refused as probabilities, with PyTorch's advice.
    import onnx

    from edgekd.teacher import check_fits

    model = onnx.load(onnx_files["keras"])
    output = model.graph.output[0].name
    last = next(node for node in model.graph.node if output in node.output)
    assert last.op_type == "Softmax"
    last.output[:] = ["probabilities"]
    for i, op in enumerate(tail):
        into = output if i == len(tail) - 1 else f"kept{i}"
        model.graph.node.append(onnx.helper.make_node(op, ["probabilities" if i == 0 else f"kept{i - 1}"], [into]))
    onnx.save(model, str(tmp_path / "tail.onnx"))
    tailed = load_teacher(str(tmp_path / "tail.onnx"))
    assert any("ends in a softmax" in n for n in tailed.module.bind(small_data))
    check_fits(tailed, small_data)
    x = torch.from_numpy(small_data.x_val[:16])
    assert torch.allclose(tailed.module(x), torch.log_softmax(teacher.module(x), 1).detach(), atol=1e-4)


class _ProbsAndLogits(torch.nn.Module):
    """A model returning its probabilities first and its logits after, each named as class scores."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        logits = self.inner(x)
        return torch.softmax(logits, 1), logits


def test_of_probabilities_and_logits_both_named_as_scores_the_logits_are_read(teacher, small_data, tmp_path,
                                                                             fast_profile):
    # 'probs' came first and was read, through the log of its clipped probabilities, with a note saying "the
    # first is read when none is named logits" beside an output named logits
    from edgekd.latency.runtime import predictions_on_test_split

    path = tmp_path / "two.onnx"
    x = torch.from_numpy(small_data.x_val[:16])
    torch.onnx.export(_ProbsAndLogits(teacher.module).eval(), (x[:1],), str(path), dynamo=False,
                      input_names=["input"], output_names=["probs", "logits"], dynamic_axes={"input": {0: "batch"}})
    two = load_teacher(str(path)).module
    said = ("'two.onnx' has 2 outputs; accuracy is read from 'logits', named as class scores and not ending in a "
            "softmax, as 'probs' does, of the 2 that give 10 classes")
    assert two.bind(small_data) == (said,) and not two.log_of
    assert torch.allclose(two(x), teacher.module(x).detach(), atol=1e-4)
    scores, _, notes = predictions_on_test_split(path, fast_profile, small_data)  # validate reads the same
    assert notes[0] == said and np.allclose(scores, teacher.module(torch.from_numpy(small_data.x_test)).detach(),
                                            atol=1e-4)


class _SharpSoftmax(torch.nn.Module):
    """Probabilities of logits far apart: gaps of up to ``gap`` between the top class and the others."""

    def __init__(self, inner: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x):
        return torch.softmax(self.inner(x) * self.scale, 1)


def test_a_softmax_s_log_keeps_gaps_as_wide_as_float32_holds(teacher, small_data, tmp_path):
    # a floor of 1e-12 under the probabilities flattened every gap past 27.6 to 27.6, for a note saying they
    # were the logits up to a constant
    x = torch.from_numpy(small_data.x_val[:16])
    logits = teacher.module(x).detach()
    scale = 80 / float((logits.max(1, keepdim=True).values - logits).max())  # the widest gap at 80
    sharp = load_teacher(_export(_SharpSoftmax(teacher.module, scale), x[:1], tmp_path / "sharp.onnx")).module
    notes = sharp.bind(small_data)
    assert torch.allclose(sharp(x), torch.log_softmax(logits * scale, 1), atol=1e-3)
    assert any("which are its logits up to a constant (a class about 103 or more below the top one has a "
               "probability of 0 in float32, and is read as 103 below)" in n for n in notes), notes


class _HandMadeSoftmax(torch.nn.Module):
    """Probabilities out, computed without a Softmax node (exp over its sum)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        scores = self.inner(x).exp()
        return scores / scores.sum(1, keepdim=True)


def test_an_onnx_teacher_giving_probabilities_is_told_how_to_export_it(teacher, small_data, tmp_path):
    # It was told to "return the scores before the softmax (log-probabilities from log_softmax work too)",
    # PyTorch advice for a model that may come from another framework
    from edgekd.teacher import check_fits

    made = load_teacher(_export(_HandMadeSoftmax(teacher.module), torch.from_numpy(small_data.x_val[:1]),
                                tmp_path / "probs.onnx"))
    made.module.bind(small_data)
    with pytest.raises(ModelError, match=r"teacher '.*probs.onnx' outputs probabilities \(every row is >= 0 and "
                                         r"sums to 1\), and distillation needs logits") as exc:
        check_fits(made, small_data)
    assert exc.value.fix.startswith("export the model without its final softmax") and "log_softmax" not in exc.value.fix


def test_distillation_learns_from_an_onnx_teacher(onnx_files, small_data):
    from test_distill_qat import MBV2, build

    from edgekd.distill.trainer import distill
    from edgekd.types import DistillConfig

    keras = load_teacher(onnx_files["keras"]).module
    keras.bind(small_data)
    config = DistillConfig(epochs=3, lr=2e-2, augment=True, losses="kd:1,dkd:0.5")
    result = distill(build("mbv2", small_data, MBV2), small_data, config, teacher=keras, progress=False)
    assert result.best_val_accuracy > 0.4  # chance is 0.1


def test_compress_copies_an_onnx_teacher_as_the_run_s_teacher_file(onnx_files, fast_profile_path, tmp_path, run_cli):
    import json

    import onnx

    # its weights in a file beside it, as large exports keep them: they travel with it into the run folder
    onnx.save(onnx.load(onnx_files["keras"]), str(tmp_path / "keras.onnx"), save_as_external_data=True,
              location="keras.weights", size_threshold=0)
    out = tmp_path / "out"
    code, _, err = run_cli("compress", "--teacher", tmp_path / "keras.onnx", "--data", "digits", "--resolution", "16",
                           "--profile", fast_profile_path, "--budget-ms", "50", "--candidates", "4", "--epochs", "1",
                           "--out", out, "--quiet")
    assert code in (0, 1), err
    manifest = json.loads((out / "manifest.json").read_text())
    teacher = next(a for a in manifest["artifacts"] if a["artifact"]["role"] == "teacher")
    assert teacher["artifact"]["exporter"] == "user onnx" and teacher["accuracy"] > 0.5
    assert manifest["teacher"]["source"].startswith("ONNX model ")
    assert teacher["artifact"]["details"]["inputs"][0]["shape"][1:] == [16, 16, 1]  # the user's file, as it was
    assert teacher["artifact"]["details"]["external_data"] == ["keras.weights"] and (out / "keras.weights").is_file()
    from edgekd.fsutil import sha256

    weights = out / "keras.weights"  # what ships: its size counted and its bytes hashed, after the metadata stamp
    assert teacher["artifact"]["size_bytes"] == (out / "teacher-fp32.onnx").stat().st_size + weights.stat().st_size
    assert teacher["artifact"]["details"]["external_sha256"] == {"keras.weights": sha256(weights)}
    recheck = ["validate", out / "teacher-fp32.onnx", "--manifest", out / "manifest.json", "--rounds", "1",
               "--latency-tolerance", "0.9"]
    code, said, err = run_cli(*recheck)
    assert code == 0 and "| external data | pass |" in said, said + err
    changed = bytearray(weights.read_bytes())
    changed[-1] ^= 1  # one weight's last bit: the same size, another model
    weights.write_bytes(bytes(changed))
    code, said, err = run_cli(*recheck)
    assert code == 1 and "external weight files differ from the record: keras.weights" in said, said + err
    # the note on its channels-last input names the shipped file, not the staging folder it was checked in
    assert "'teacher-fp32.onnx' takes channels-last (NHWC) input" in " ".join(manifest["notes"])
    import onnxruntime as ort

    meta = ort.InferenceSession(str(out / "teacher-fp32.onnx")).get_modelmeta().custom_metadata_map
    assert json.loads(meta["edgekd.preprocess"])["layout"] == "NHWC"  # as it is fed, not the data's NCHW
    assert "staging" not in json.dumps(manifest["notes"])


def test_a_teacher_file_s_metadata_says_the_layout_the_teacher_is_fed(onnx_files, small_data, tmp_path):
    """compress stamped the data's NCHW onto a user's teacher taking NHWC: a pipeline following the metadata fed
    the file images it refuses, or reads wrongly."""
    import json
    from pathlib import Path

    import onnxruntime as ort

    from edgekd.onnx_metadata import LAYOUT_RECORDS
    from edgekd.pipeline.exporting import copied_teacher, stamp_teacher
    from edgekd.preprocess import describe_preprocess

    for name, layout in (("keras", "NHWC"), ("plain", "NCHW")):
        teacher = load_teacher(onnx_files[name])
        teacher.module.bind(small_data)
        folder = tmp_path / name
        folder.mkdir()
        stamped = stamp_teacher(copied_teacher(Path(onnx_files[name]), folder), teacher, small_data)
        meta = ort.InferenceSession(stamped.path).get_modelmeta().custom_metadata_map
        recorded = json.loads(meta["edgekd.preprocess"])
        assert recorded["layout"] == layout and describe_preprocess(recorded).startswith(f"grayscale {layout} ")
        assert {k: v for k, v in recorded.items() if k != "layout"} == {
            k: v for k, v in small_data.preprocess.to_dict().items() if k != "layout"}
    assert LAYOUT_RECORDS["flat"] == "NCHW flattened to (N, C*H*W)"


@pytest.mark.parametrize("args, error, message", [
    (["--weights", "w.pt"], ModelError, "is an ONNX model, which holds its own weights"),
    (["--losses", "kd:1,hint:1"], ConfigError, "the feature loss hint taps the teacher's layers, and teacher"),
    (["--space", "pruned"], ConfigError, "the 'pruned' space (--space pruned) cuts channels from the teacher's own"),
])
def test_what_needs_the_teacher_in_pytorch_is_refused_by_name(onnx_files, fast_profile_path, tmp_path, run_cli,
                                                              args, error, message):
    code, out, err = run_cli("compress", "--teacher", onnx_files["plain"], "--data", "digits", "--resolution", "16",
                             "--profile", fast_profile_path, "--budget-ms", "50", "--out", tmp_path / "o", *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_onnx_teachers_that_cannot_teach_this_data_are_refused_by_name(onnx_files, small_data, teacher, tmp_path):
    with pytest.raises(ModelError, match="outputs class indices, and distillation learns from scores"):
        load_teacher(onnx_files["argmax"]).module.bind(small_data)
    raw = _export(teacher.module.float(), torch.zeros(1, 1, 16, 16), tmp_path / "raw.onnx")
    import onnx

    model = onnx.load(raw)
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE  # not float32: a cast inside
    model.graph.node.insert(0, onnx.helper.make_node("Cast", ["input"], ["as_float"], to=onnx.TensorProto.FLOAT))
    for node in model.graph.node[1:]:
        node.input[:] = ["as_float" if i == "input" else i for i in node.input]
    onnx.save(model, str(tmp_path / "double.onnx"))
    load_teacher(str(tmp_path / "double.onnx")).module.bind(small_data)  # float64 is a float type: taken
    bigger = replace(small_data, x_test=np.zeros((2, 1, 20, 20), np.float32), x_val=np.zeros((2, 1, 20, 20),
                                                                                             np.float32))
    with pytest.raises(DataError, match="takes 1x16x16 inputs, and data 'digits' has 1x20x20 images"):
        load_teacher(onnx_files["plain"]).module.bind(bigger)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="is not a readable ONNX model"):
        load_teacher(str(tmp_path / "junk.onnx"))
    with pytest.raises(ModelError, match="teacher model '.*absent.onnx' does not exist"):
        load_teacher(str(tmp_path / "absent.onnx"))


def test_an_onnx_teacher_with_external_weights_is_copied_with_them(onnx_files, tmp_path):
    import onnx

    from edgekd.pipeline.exporting import copied_teacher

    model = onnx.load(onnx_files["plain"])
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.bin",
              size_threshold=0)
    folder = tmp_path / "run"
    folder.mkdir()
    art = copied_teacher(tmp_path / "ext.onnx", folder)
    assert (folder / "teacher-fp32.onnx").is_file() and (folder / "ext.bin").is_file()
    assert art.name == "teacher-fp32" and art.role == "teacher" and art.details["external_data"] == ["ext.bin"]


def test_an_int8_onnx_teacher_is_copied_under_its_precision_s_name(onnx_files, tmp_path):
    """An int8 (or fp16) teacher was shipped as teacher-fp32.onnx, its manifest entry saying int8."""
    from onnxruntime.quantization import quantize_dynamic

    from edgekd.pipeline.exporting import copied_teacher

    quantize_dynamic(onnx_files["plain"], str(tmp_path / "q.onnx"))
    folder = tmp_path / "run"
    folder.mkdir()
    art = copied_teacher(tmp_path / "q.onnx", folder)
    assert (art.name, art.precision, Path(art.path).name) == ("teacher-int8", "int8", "teacher-int8.onnx")
    assert [p.name for p in folder.iterdir()] == ["teacher-int8.onnx"]


def test_a_weight_only_quantized_onnx_teacher_is_copied_as_int8(onnx_files, small_data, teacher, tmp_path):
    """Its weights int8 behind DequantizeLinear and no QuantizeLinear: it was copied and recorded as teacher-fp32."""
    import onnx
    from onnx import helper, numpy_helper

    from edgekd.pipeline.exporting import copied_teacher

    model = onnx.load(onnx_files["plain"])
    graph, dequantize = model.graph, []
    for init in [i for i in model.graph.initializer if len(i.dims) >= 2]:
        weight = numpy_helper.to_array(init)
        scale = np.float32(np.abs(weight).max() / 127)
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(np.round(weight / scale).astype(np.int8), f"{init.name}_q"),
                                  numpy_helper.from_array(np.array(scale), f"{init.name}_s")])
        dequantize.append(helper.make_node("DequantizeLinear", [f"{init.name}_q", f"{init.name}_s"], [init.name]))
    nodes = [*dequantize, *graph.node]  # each weight dequantized before the node that reads it
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(tmp_path / "w8.onnx"))
    x = torch.from_numpy(small_data.x_val[:16])
    w8 = load_teacher(str(tmp_path / "w8.onnx")).module
    w8.bind(small_data)
    assert (w8(x).argmax(1) == teacher.module(x).argmax(1)).float().mean() > 0.9  # it still teaches
    (tmp_path / "run").mkdir()
    art = copied_teacher(tmp_path / "w8.onnx", tmp_path / "run")
    assert (art.name, art.precision, Path(art.path).name) == ("teacher-int8", "int8", "teacher-int8.onnx")


def test_new_weights_in_an_external_data_file_change_the_teacher_s_fingerprint(onnx_files, tmp_path):
    """Only the .onnx file was hashed: a teacher retrained into its data file resumed a run distilled from the old
    weights. A one-file teacher keeps the fingerprint (its file's sha256) that its checkpoints recorded."""
    import onnx

    from edgekd.distill.checkpoint import arch_fingerprint, weights_fingerprint
    from edgekd.fsutil import sha256

    plain = load_teacher(onnx_files["plain"]).module
    assert weights_fingerprint(plain) == arch_fingerprint(plain) == sha256(onnx_files["plain"])[:16]
    path = tmp_path / "ext.onnx"
    onnx.save(onnx.load(onnx_files["plain"]), str(path), save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    before, graph = load_teacher(str(path)).module, path.read_bytes()
    data = bytearray((tmp_path / "ext.onnx.data").read_bytes())
    for tensor in onnx.load(str(path), load_external_data=False).graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            where = {e.key: int(e.value) for e in tensor.external_data if e.key in ("offset", "length")}
            start, end = where.get("offset", 0), where.get("offset", 0) + where["length"]
            data[start:end] = (np.frombuffer(bytes(data[start:end]), np.float32) * 3).tobytes()
    (tmp_path / "ext.onnx.data").write_bytes(bytes(data))
    after = load_teacher(str(path)).module
    assert path.read_bytes() == graph and weights_fingerprint(after) != weights_fingerprint(before)
    assert arch_fingerprint(after) != arch_fingerprint(before)


def _scorer(path, dtype="FLOAT", shape=("N", 1, 16, 16), second_input=False):
    """A hand-built ONNX classifier of 16x16 digits: its input of ``dtype`` and ``shape`` (None: no shape
    recorded), optionally a second input added to its scores."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT), helper.make_node("Flatten", ["xf"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["scores"] if second_input else ["y"])]
    inputs = [helper.make_tensor_value_info("x", getattr(TensorProto, dtype), shape)]
    if second_input:
        nodes.append(helper.make_node("Add", ["scores", "x2"], ["y"]))
        inputs.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 10]))
    graph = helper.make_graph(nodes, "scorer", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                     ["N", 10])],
                              [numpy_helper.from_array(np.zeros((256, 10), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_an_onnx_teacher_with_two_inputs_is_refused_as_one_needing_one(tmp_path):
    # It loaded, then failed on the first batch as "data images ... do not fit the teacher (Required inputs ...
    # are missing)" with advice on the data's resolution.
    with pytest.raises(ModelError, match=r"teacher '.*two.onnx' takes 2 inputs \(x, x2\), and a teacher must take "
                                         "exactly one, the image batch; export the teacher with the images as its "
                                         "only input"):
        load_teacher(_scorer(tmp_path / "two.onnx", second_input=True))


def test_an_onnx_teacher_without_a_recorded_input_shape_is_told_so(tmp_path, small_data):
    teacher = load_teacher(_scorer(tmp_path / "norank.onnx", shape=None)).module  # was "takes  inputs"
    with pytest.raises(DataError, match=r"input 'x' of '.*norank.onnx' has no shape recorded, so edgekd cannot "
                                        r"tell how to feed it the data's images; export the model with its input "
                                        r"shape recorded, e.g. \(batch, channels, height, width\)"):
        teacher.bind(small_data)


def test_an_onnx_teacher_taking_uint8_is_told_to_take_floats_not_to_leave_out_data(tmp_path):
    with pytest.raises(ModelError, match="teacher '.*u8.onnx' takes uint8 input, and a teacher is fed the "
                                         "normalised float images the student trains on") as exc:
        load_teacher(_scorer(tmp_path / "u8.onnx", dtype="UINT8"))
    assert "--data" not in exc.value.message and "--normalize" in exc.value.fix
