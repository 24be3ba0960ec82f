"""The gate's accuracy checks (edgekd/gate_accuracy.py): each model, the baseline too, fed the input it records."""

import json

import pytest

from edgekd.gate_accuracy import accuracy_checks
from edgekd.gate_config import GateConfig, for_target


@pytest.fixture
def grayscale_model(tmp_path):
    """A model edgekd exported from one-channel data: its metadata records the channels it was fed."""
    from conftest import pixel_onnx

    from edgekd.data import Preprocess
    from edgekd.onnx_metadata import PREPROCESS_KEY

    record = Preprocess(1.0, (0.0,), (1.0,), "as stored", to_channels=1).to_dict()
    return pixel_onnx(tmp_path / "gray.onnx", metadata={PREPROCESS_KEY: json.dumps(record)})


def test_channels_convert_only_for_the_model_that_records_none(tmp_path, grayscale_model):
    """A baseline exported elsewhere takes RGB, the gated model the grayscale its metadata records: --channels 3
    for the baseline was applied to both, and the gated model's refusal asked for --channels 1 (no way through)."""
    from conftest import foreign_onnx, pixel_data

    rgb = foreign_onnx(tmp_path / "rgb.onnx", (3, 4, 4), 4)  # no edgekd metadata
    data = pixel_data(tmp_path / "pixels.npz")
    # as run_gate hands it on: with the target's defaults (the seed and profile left out) in
    config = for_target(GateConfig(max_accuracy_drop=100, baseline=str(rgb), data=str(data), channels=3,
                                   no_latency=True), grayscale_model)
    notes: list[str] = []
    checks, shape = accuracy_checks(grayscale_model, rgb, config, notes)
    assert [c.name for c in checks] == ["accuracy drop"] and shape == (1, 4, 4)
    assert ("--channels 3 not applied to 'gray.onnx': it is fed the 1 channel its metadata records (--channels "
            "converts for a model recording none)") in notes
