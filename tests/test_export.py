"""ExportRequest's checks, made before any export work: the opset the local onnxruntime runs int8 at, and
calibration inputs that can calibrate."""

import numpy as np
import onnx
import pytest

from edgekd import export
from edgekd.errors import ConfigError, DataError
from edgekd.export import ExportRequest, check_opset, runs_qdq


@pytest.fixture
def qdq_up_to(monkeypatch):
    """The local onnxruntime made to run Q/DQ up to opset ``newest`` only (the probe's cache cleared around it)."""
    import onnxruntime

    real = onnxruntime.InferenceSession

    def limit(newest):
        def session(model, *args, **kwargs):
            opset = onnx.load_from_string(model).opset_import[0].version
            if opset > newest:
                raise RuntimeError(f"NOT_IMPLEMENTED : Could not find an implementation for QuantizeLinear({opset})")
            return real(model, *args, **kwargs)

        monkeypatch.setattr(onnxruntime, "InferenceSession", session)
        runs_qdq.cache_clear()

    yield limit
    runs_qdq.cache_clear()


def test_an_opset_the_local_onnxruntime_cannot_quantize_at_is_refused_before_any_work(qdq_up_to, tmp_path):
    from edgekd.pipeline import CompressConfig

    qdq_up_to(20)
    message = r"--opset 21 is newer than onnxruntime .* can run int8 at .*the newest it runs is 20; pass --opset 20"
    with pytest.raises(ConfigError, match=message):
        ExportRequest("s", "student", tmp_path, opset=21, calibration=np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ConfigError, match=message):
        CompressConfig(opset=21)
    check_opset(20)
    assert runs_qdq.cache_info().currsize == 2  # one probe per opset, not one per request
    ExportRequest("t", "teacher", tmp_path, opset=21)  # an fp32 export runs no Q/DQ


def test_a_probe_that_fails_for_another_reason_refuses_no_opset(monkeypatch):
    """A runtime that cannot open the probe for a reason of its own (memory, a trimmed build) said every opset
    was too new, down to 13, which it then refused too."""
    import onnxruntime

    def session(*_args, **_kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad allocation")

    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    runs_qdq.cache_clear()
    try:
        assert runs_qdq(18) and runs_qdq(13)
        check_opset(18)
    finally:
        runs_qdq.cache_clear()


def test_the_opsets_accepted_are_those_the_installed_onnxruntime_runs_int8_at():
    runs_qdq.cache_clear()
    newest = onnx.defs.onnx_opset_version()
    for opset in range(export.MIN_OPSET, newest + 1):
        if runs_qdq(opset):
            check_opset(opset)
        else:
            with pytest.raises(ConfigError, match=f"--opset {opset} is newer than onnxruntime"):
                check_opset(opset)
    assert runs_qdq(export.DEFAULT_OPSET)


@pytest.mark.parametrize("value, count", [(np.inf, "1 infinite value"), (np.nan, "1 NaN value")])
def test_calibration_inputs_with_nan_or_infinity_are_refused(tmp_path, value, count):
    x = np.linspace(0, 1, 256, dtype=np.float32).reshape(4, 1, 8, 8)  # not constant: that is refused too
    x[2, 0, 3, 3] = value
    with pytest.raises(DataError, match=rf"calibration inputs hold {count} \(of 256\); replace them"):
        ExportRequest("q", "student", tmp_path, calibration=x)
    x[1] = np.nan
    with pytest.raises(DataError, match=r"hold 64 NaN and 1 infinite values|hold 65 NaN values"):
        ExportRequest("q", "student", tmp_path, calibration=x)
    ExportRequest("q", "student", tmp_path, calibration=np.nan_to_num(x))


@pytest.mark.parametrize("value, dtype", [(0.0, np.float32), (0.5, np.float64), (255, np.uint8)])
def test_constant_calibration_inputs_are_refused(tmp_path, value, dtype):
    """Blank images (or a buffer never filled) were accepted: the int8 file predicted class 0 for every digit."""
    x = np.full((8, 1, 8, 8), value, dtype)
    with pytest.raises(DataError, match=rf"the calibration inputs are constant \(every value is {value:g}\), "
                                        r"which .* single class; calibrate with representative inputs"):
        ExportRequest("q", "student", tmp_path, calibration=x)
    x[3, 0, 2, 2] = 1  # one value apart is not constant: nothing here can tell whether it is enough
    ExportRequest("q", "student", tmp_path, calibration=x)
