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


def test_a_provider_the_runtime_lacks_is_refused_rather_than_measured_on_the_cpu(two_models, fast_profile):
    """onnxruntime falls back to the CPU without a word when a listed provider is missing."""
    import dataclasses

    runtime = {**fast_profile.runtime, "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    gpu = dataclasses.replace(fast_profile, runtime=runtime)
    with pytest.raises(RunnerError, match=r"onnxruntime .* here has no CUDAExecutionProvider \(it has .*"
                                          r"CPUExecutionProvider\), so the profile's device cannot be measured; "
                                          "install the onnxruntime build with that provider"):
        measure([two_models[0]], gpu, shape=(1, 1, 32, 32))
