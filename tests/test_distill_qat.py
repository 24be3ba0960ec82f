"""Quantization-aware KD: the QAT phase inside the one loop, freezing, resume, and the onnx-int8-qat exporter
(checker, every convolution an int8 kernel in onnxruntime's optimised graph, agreement with the torch QAT
model). A tiny mbv2 student (residual add, squeeze-excitation) on 16x16 digits; the loop tests use the
8x8 synthetic data and TinyNet of test_distill."""

from __future__ import annotations

from dataclasses import replace

import edgekd.exporters.onnx_int8_qat  # noqa: F401  (registers onnx-int8-qat)
import numpy as np
import onnx
import pytest
import torch
from edgekd.exporters.onnx_int8_qat import check_overrides, optimized_op_types
from test_distill import TinyNet, student, tiny_data

from edgekd.distill import qat, qat_plan, trainer
from edgekd.distill.targets import predict
from edgekd.distill.trainer import distill
from edgekd.errors import ConfigError, ExportError
from edgekd.export import ExportRequest, get_exporter
from edgekd.plots import calibrated_point
from edgekd.types import DistillConfig, DistillResult

MBV2 = {"stem": 8, "widths": [8, 16, 24], "depths": [1, 1, 1], "expands": [2, 2, 2], "kernels": [3, 3, 3],
        "se": [1, 0, 0]}
INT8_CONV = "QLinearConv"
FP32_CONVS = ("Conv", "FusedConv", "NchwcConv", "ConvInteger")


pytestmark = pytest.mark.usefixtures("one_thread")


def build(space: str, data, config: dict | None = None, seed: int = 0):
    from edgekd.search.spaces import SPACES

    torch.manual_seed(seed)
    chosen = SPACES.get(space)
    return chosen.build(config or chosen.smallest(), data.input_shape, data.num_classes)


@pytest.fixture(scope="module")
def trained(small_data):
    """The mbv2 student after 4 fp32 and 2 QAT epochs (cross-entropy; no teacher needed here)."""
    model = build("mbv2", small_data, MBV2)
    config = DistillConfig(epochs=6, qat_epochs=2, lr=2e-2, augment=False)
    return distill(model, small_data, config, progress=False), config


@pytest.fixture(scope="module")
def artifact(trained, small_data, tmp_path_factory):
    result, _ = trained
    out = tmp_path_factory.mktemp("qat")
    return get_exporter("onnx-int8-qat")(ExportRequest("student-int8", "student", out, result.model,
                                                       small_data.x_val[:1], small_data.x_train[:256]))


def test_bad_qat_settings_are_refused():
    with pytest.raises(ConfigError, match=r"qat_epochs \(4\) must be fewer than epochs \(4\).*raise epochs"):
        DistillConfig(epochs=4, qat_epochs=4)
    with pytest.raises(ConfigError, match="qat_epochs must be a whole number >= 0"):
        DistillConfig(epochs=4, qat_epochs=-1)
    with pytest.raises(ConfigError, match=r"qat_freeze_bn_epochs \(3\) is more than qat_epochs \(2\)"):
        DistillConfig(epochs=4, qat_epochs=2, qat_freeze_bn_epochs=3)
    with pytest.raises(ConfigError, match="qat_reduce_range must be true or false"):
        DistillConfig(epochs=4, qat_epochs=2, qat_reduce_range="yes")
    for bad in (0, -1e-3, float("nan"), True):
        with pytest.raises(ConfigError, match="qat_lr must be a positive number.*--qat-lr"):
            DistillConfig(epochs=4, qat_epochs=2, qat_lr=bad)
    config = DistillConfig(epochs=6, qat_epochs=2, qat_freeze_observer_epochs=0)
    assert config.qat_start == 5 and DistillConfig.from_dict(config.to_dict()) == config
    assert config.qat_peak_lr == config.lr / 10 and DistillConfig(epochs=6, qat_lr=3e-4).qat_peak_lr == 3e-4


def test_qat_fine_tunes_the_student_a_run_without_qat_ends_with(monkeypatch):
    data = tiny_data()
    base = DistillConfig(epochs=3, lr=5e-2, batch_size=32, augment=True, seed=1)
    plain = distill(student(), data, base, progress=False)
    started = {}
    begin = trainer._begin_qat

    def spy(run, state):
        begin(run, state)
        started["lr"] = run.opt.param_groups[0]["lr"]
        started["weights"] = {k: v.clone() for k, v in run.student.state_dict().items() if "act_quant" not in k
                              and "input_quant" not in k}

    monkeypatch.setattr(trainer, "_begin_qat", spy)
    qat_run = distill(student(), data, replace(base, epochs=5, qat_epochs=2, qat_lr=4e-3), progress=False)
    # The fp32 epochs follow the schedule of a 3-epoch run: QAT starts from that run's best epoch ...
    fp32 = plain.model.state_dict()
    assert started["weights"].keys() == fp32.keys()
    assert all(torch.equal(started["weights"][k], fp32[k]) for k in fp32)
    assert [h.val_accuracy for h in qat_run.history[:3]] == [h.val_accuracy for h in plain.history]
    assert started["lr"] == pytest.approx(4e-3)  # ... with its own learning rate


def test_the_calibrated_student_is_kept_when_no_qat_epoch_validates_better(monkeypatch):
    data = tiny_data()
    config = DistillConfig(epochs=4, qat_epochs=2, lr=5e-2, batch_size=32, augment=False)
    validate, calls = trainer._validate, []

    def qat_epochs_validate_worse(run):
        calls.append(qat.qat_plan(run.student) is not None)
        first_qat = calls.count(True) == 1
        return validate(run) if not calls[-1] or first_qat else (0.0, float("inf"))

    kept = {}
    begin = trainer._begin_qat

    def spy(run, state):
        begin(run, state)
        kept.update({k: v.clone() for k, v in run.student.state_dict().items()})

    monkeypatch.setattr(trainer, "_validate", qat_epochs_validate_worse)
    monkeypatch.setattr(trainer, "_begin_qat", spy)
    result = distill(student(), data, config, progress=False)
    assert calls == [False, False, True, True, True]  # 2 fp32 epochs, the calibrated student, 2 QAT epochs
    assert result.best_epoch == config.qat_start - 1 == 2
    assert result.kept_calibrated and "quantized before QAT" in result.selection()
    assert calibrated_point(result.to_dict()) == ([2], [result.best_val_accuracy * 100])
    final = result.model.state_dict()
    assert final.keys() == kept.keys() and all(torch.equal(final[k], kept[k]) for k in kept)


def test_the_qat_phase_fake_quantizes_the_student_in_place(trained):
    result, config = trained
    model, plan = result.model, qat.qat_plan(result.model)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert plan is not None and len(plan.convs) == len(convs)
    assert all(isinstance(m, qat.QATConv2d) and m._in for m in convs)  # every conv, the first one included
    assert sum(1 for _, bn, _ in plan.convs if bn) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert plan.weight_qmax == qat_plan.REDUCED_WEIGHT_QMAX
    assert {"input_quant", "stages.0.act_quant", "stages.0.body.2.act_quant"} <= set(qat.quantizers(model))
    assert all(0 < scale and 0 <= zero <= 255 for scale, zero in qat.qparams(model).values())
    assert len(result.history) == config.epochs and result.best_epoch >= config.qat_start - 1
    assert not any(s.module in ("pool", "fc") for s in plan.sites)  # the classifier stays fp32


def test_unmirrorable_operations_are_refused_before_training(small_data):
    class ScalarAdd(TinyNet):
        def forward(self, x):
            return super().forward(x + 1.0)

    with pytest.raises(ConfigError, match=r"cannot mirror how onnxruntime quantizes: add.*drop --qat-epochs "
                                          r"\(qat_epochs=0 in Python\)"):
        qat.prepare_qat(ScalarAdd(), torch.zeros(2, 1, 8, 8))
    model = TinyNet()
    qat.prepare_qat(model, torch.zeros(2, 1, 8, 8), reduce_range=False)
    assert qat.qat_plan(model).weight_qmax == qat.WEIGHT_QMAX
    with pytest.raises(ConfigError, match="already prepared"):
        qat.prepare_qat(model, torch.zeros(2, 1, 8, 8))


def test_bn_statistics_and_observers_freeze_for_the_last_epochs(monkeypatch):
    data = tiny_data()
    snapshots = {}
    record = trainer._record

    def snapshot(run, state, epoch, *args):
        bn = run.student.features[1]
        quants = qat.quantizers(run.student)
        snapshots[epoch] = (bn.running_mean.clone(),
                            torch.stack([torch.stack([q.min_val, q.max_val]) for q in quants.values()])
                            if quants else None)
        return record(run, state, epoch, *args)

    monkeypatch.setattr(trainer, "_record", snapshot)
    config = DistillConfig(epochs=5, qat_epochs=3, qat_freeze_bn_epochs=2, qat_freeze_observer_epochs=1,
                           lr=5e-2, batch_size=32, augment=False)
    distill(student(), data, config, progress=False)
    bn = {e: s[0] for e, s in snapshots.items()}
    obs = {e: s[1] for e, s in snapshots.items()}
    assert obs[2] is None and obs[3] is not None  # QAT starts at epoch 3
    assert not torch.equal(bn[2], bn[3])  # epoch 3 still updates BN statistics ...
    assert torch.equal(bn[3], bn[4]) and torch.equal(bn[4], bn[5])  # ... frozen for the last 2 epochs
    assert not torch.equal(obs[3], obs[4])  # the observers move in epoch 4 ...
    assert torch.equal(obs[4], obs[5])  # ... and are frozen in the last one


@pytest.mark.parametrize("stop_after", [2, 3])
def test_a_run_stopped_at_or_inside_the_qat_phase_resumes_to_the_same_weights(tmp_path, monkeypatch, stop_after):
    data = tiny_data()
    config = DistillConfig(epochs=4, qat_epochs=2, lr=5e-2, batch_size=32, augment=True, seed=2)
    whole = distill(student(), data, config, progress=False, checkpoint=tmp_path / "whole.pt")
    epoch_once = trainer._train_epoch

    def stop(run, epoch, *args):
        if epoch > stop_after:
            raise KeyboardInterrupt
        return epoch_once(run, epoch, *args)

    monkeypatch.setattr(trainer, "_train_epoch", stop)
    with pytest.raises(KeyboardInterrupt):
        distill(student(), data, config, progress=False, checkpoint=tmp_path / "cut.pt")
    monkeypatch.setattr(trainer, "_train_epoch", epoch_once)
    resumed = distill(student(), data, config, progress=False, checkpoint=tmp_path / "cut.pt", resume=True)
    assert resumed.best_epoch == whole.best_epoch and qat.qat_plan(resumed.model) is not None
    final = [torch.load(tmp_path / name, weights_only=True)["student"] for name in ("whole.pt", "cut.pt")]
    assert final[0].keys() == final[1].keys() and any("act_quant" in k for k in final[0])
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])


def test_the_exported_int8_model_passes_the_checker_and_runs_every_conv_as_int8(artifact, trained):
    model = trained[0].model
    onnx.checker.check_model(artifact.path, full_check=True)
    assert artifact.exporter == "onnx-int8-qat" and artifact.precision == "int8"
    ops = optimized_op_types(artifact.path)
    assert not any(ops[op] for op in FP32_CONVS)
    assert ops[INT8_CONV] == len(qat.qat_plan(model).convs)
    assert ops["QLinearAdd"] and ops["QLinearMul"] and ops["QLinearSigmoid"]
    details = artifact.details
    assert details["fp32_convs"] == 0 and details["scales_carried"] == len(qat.quantizers(model))
    assert details["calibration"] == "none (QAT-learned scales)"  # the manifest said minmax over the inputs
    assert [n.split()[0] for n in details["kept_fp32"]] == ["Gemm"]  # only the classifier


def test_the_int8_model_agrees_with_the_torch_qat_model(artifact, trained, small_data):
    import onnxruntime as ort

    session = ort.InferenceSession(artifact.path, providers=["CPUExecutionProvider"])
    int8 = session.run(None, {"input": small_data.x_test})[0]
    fake = predict(trained[0].model, small_data.x_test)
    agreement = float((int8.argmax(1) == fake.argmax(1)).mean())
    assert agreement >= 0.995, agreement
    assert artifact.details["torch_agreement"] >= 0.995
    assert float((int8.argmax(1) == small_data.y_test).mean()) > 0.8  # it learned digits


def test_optimized_op_types_tells_fp32_convs_from_int8_kernels(trained, small_data, tmp_path):
    fp32 = get_exporter("onnx-fp32")(ExportRequest("fp32", "student", tmp_path,
                                                   qat.export_copy(trained[0].model, fake_quant=False),
                                                   small_data.x_val[:1]))
    ops = optimized_op_types(fp32.path)
    assert not ops[INT8_CONV] and sum(ops[op] for op in FP32_CONVS) > 0
    assert optimized_op_types(fp32.path, level="basic")["Conv"] == len(qat.qat_plan(trained[0].model).convs)


def test_a_resnet_student_mirrors_onnxruntime_and_fuses_fully(small_data, tmp_path):
    model = build("resnet", small_data)  # BasicBlock: ReLU after the residual add, 1x1 shortcut convs
    qat.prepare_qat(model, torch.from_numpy(small_data.x_train[:2]))
    qat.calibrate(model, torch.from_numpy(small_data.x_train))
    art = get_exporter("onnx-int8-qat")(ExportRequest("r", "student", tmp_path, model, small_data.x_val[:1],
                                                      small_data.x_train[:64]))
    ops = optimized_op_types(art.path)
    assert ops[INT8_CONV] == len(qat.qat_plan(model).convs) and not any(ops[op] for op in FP32_CONVS)
    assert ops["QLinearAdd"] == 3


def test_exporting_a_student_trained_without_qat_is_refused(small_data, tmp_path):
    with pytest.raises(ExportError, match="not trained with quantization-aware training.*qat_epochs > 0"):
        get_exporter("onnx-int8-qat")(ExportRequest("s", "student", tmp_path, build("mbv2", small_data),
                                                     small_data.x_val[:1], small_data.x_train[:8]))
    assert not list(tmp_path.iterdir())


def test_qat_scales_are_what_the_int8_file_uses(artifact, trained):
    """The exporter's own cross-check, run again from the outside: every QuantizeLinear carries a learned
    (scale, zero point) of the QAT student."""
    learned = set(np.round([s for s, _ in qat.qparams(trained[0].model).values()], 12))
    graph = onnx.load(artifact.path).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    used = {round(float(inits[n.input[1]]), 12) for n in graph.node if n.op_type == "QuantizeLinear"}
    assert used and used <= learned


def test_the_placement_check_reports_every_difference(artifact):
    learned = _onnx_qparams(artifact.path)
    assert check_overrides(artifact.path, learned) == []
    first = next(iter(learned))
    changed = {**learned, first: (learned[first][0] * 2, learned[first][1]), "extra": (0.1, 0)}
    del changed[list(learned)[-1]]
    problems = check_overrides(artifact.path, changed)
    assert len(problems) == 3
    assert any("quantized by onnxruntime only" in p for p in problems)
    assert any("'extra' is fake-quantized in torch only" in p for p in problems)
    assert any(p.startswith(f"'{first}' has scale/zero point") for p in problems)


def _onnx_qparams(path) -> dict[str, tuple[float, int]]:
    graph = onnx.load(path).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    return {n.input[0]: (float(inits[n.input[1]]), int(inits[n.input[2]]))
            for n in graph.node if n.op_type == "QuantizeLinear"}


class SqueezeExcite(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        nn = torch.nn
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, 8, 1), nn.ReLU(),
                                  nn.Conv2d(8, channels, 1), nn.Hardsigmoid())

    def forward(self, x):
        return x * self.gate(x)


class HardNet(torch.nn.Module):
    """MobileNetV3-style: conv-bn-hardswish, a squeeze-excite gate ending in hardsigmoid, a LeakyReLU, a
    tanh after an unfolded conv; every convolution's output feeds an activation onnxruntime keeps fp32
    (or, for LeakyReLU, fuses into QLinearLeakyRelu)."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.Hardswish(), SqueezeExcite(8),
            nn.Conv2d(8, 16, 3, 2, 1, groups=2, bias=False), nn.BatchNorm2d(16), nn.LeakyReLU(0.1),
            nn.Conv2d(16, 16, 1), nn.Tanh())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.features(x))


def test_convs_feeding_hard_activations_quantize_their_output_as_onnxruntime_does(small_data, tmp_path):
    torch.manual_seed(0)
    config = DistillConfig(epochs=3, qat_epochs=1, lr=2e-2, augment=False)
    model = distill(HardNet(), small_data, config, progress=False).model
    plan = qat.qat_plan(model)
    # the outputs of the folded stem conv (its BN), of the SE's expand conv and of the unfolded 1x1 conv
    assert {"features.1.act_quant", "features.3.gate.3.act_quant", "features.7.act_quant"} <= {
        s.name for s in plan.sites}
    art = get_exporter("onnx-int8-qat")(ExportRequest("hard", "student", tmp_path, model, small_data.x_val[:1],
                                                      small_data.x_train[:256]))
    onnx.checker.check_model(art.path, full_check=True)
    ops = optimized_op_types(art.path)
    assert ops[INT8_CONV] == len(plan.convs) == 5 and not any(ops[op] for op in FP32_CONVS)
    assert ops["QLinearMul"] and ops["QLinearLeakyRelu"]
    assert art.details["fp32_convs"] == 0 and art.details["scales_carried"] == len(plan.sites)
    import onnxruntime as ort

    session = ort.InferenceSession(art.path, providers=["CPUExecutionProvider"])
    int8 = session.run(None, {"input": small_data.x_test})[0]
    agreement = float((int8.argmax(1) == predict(model, small_data.x_test).argmax(1)).mean())
    assert agreement >= 0.995 and art.details["torch_agreement"] >= 0.995, agreement


def test_distill_refuses_a_student_qat_cannot_mirror_before_its_fp32_epochs(monkeypatch, tmp_path):
    """A transformer-style student (LayerNorm) used to train its fp32 epochs and fail when QAT began."""
    class Normed(TinyNet):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.LayerNorm(8)

        def forward(self, x):
            return super().forward(self.norm(x))

    monkeypatch.setattr(trainer, "_train_epoch", lambda *a, **k: pytest.fail("an epoch ran before the refusal"))
    with pytest.raises(ConfigError, match=r"cannot mirror how onnxruntime quantizes: LayerNorm \('norm'\)"):
        distill(Normed(), tiny_data(), DistillConfig(epochs=3, qat_epochs=1), progress=False,
                checkpoint=tmp_path / "checkpoint.pt")
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_quantized_tensor_returned_by_the_model_is_refused_before_training():
    class ConvOut(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ConfigError, match=r"quantizes the model's output 'conv'.*end the model with a Linear"):
        qat.prepare_qat(ConvOut(), torch.zeros(2, 1, 8, 8))


def test_a_selected_qat_epoch_is_named_as_an_epoch():
    for qat_start, best in ((None, 4), (3, 4), (3, 3)):
        result = DistillResult(None, best, 0.9, (), qat_start=qat_start)
        assert not result.kept_calibrated and result.selection() == f"epoch {best}"
        assert calibrated_point(result.to_dict()) is None
    assert DistillResult(None, 2, 0.9, (), qat_start=3).kept_calibrated


def test_observers_are_calibrated_on_a_seeded_draw_of_every_class(small_data):
    """Image folders load in class order: the first 1024 training images would leave the last classes'
    ranges unseen. Here the last half is the bright one, and the input's observer sees it."""
    model = build("resnet", small_data)
    x = torch.zeros(2048, *small_data.input_shape)
    x[1024:] = 5.0
    qat.prepare_qat(model, x[:2])
    qat.calibrate(model, x, seed=3)
    assert max(q.max_val.item() for q in qat.quantizers(model).values()) >= 5.0
    again = build("resnet", small_data)
    qat.prepare_qat(again, x[:2])
    qat.calibrate(again, x, seed=3)
    assert all(torch.equal(a.max_val, b.max_val) for a, b in
               zip(qat.quantizers(model).values(), qat.quantizers(again).values()))  # the seed decides the draw


def test_distill_calibrates_with_its_own_seed(monkeypatch):
    seeds = []
    real = qat.calibrate
    monkeypatch.setattr(qat, "calibrate",
                        lambda model, x, seed=0, **kw: seeds.append(seed) or real(model, x, seed=seed))
    distill(student(), tiny_data(), DistillConfig(epochs=2, qat_epochs=1, augment=False, seed=7), progress=False)
    assert seeds == [7]
