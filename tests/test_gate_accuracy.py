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


def test_a_baseline_recording_no_preprocessing_fed_the_gated_manifests_is_said(tmp_path, grayscale_model):
    """Beside a manifest, a baseline exported elsewhere was fed the normalisation the manifest records, with no
    word: gated or validated alone the same file gets the data's own mean and std, so its accuracy, and the drop
    verdict resting on it, depended on its role unseen."""
    from conftest import pixel_data, pixel_onnx

    from edgekd.data import Preprocess

    foreign = pixel_onnx(tmp_path / "foreign.onnx")  # no edgekd metadata
    data = pixel_data(tmp_path / "pixels.npz")
    record = Preprocess(1.0, (0.0,), (1.0,), "as stored")  # what for_target takes from a gated manifest
    config = for_target(GateConfig(max_accuracy_drop=100, baseline=str(foreign), data=str(data), normalize=record,
                                   no_latency=True), grayscale_model)
    notes: list[str] = []
    checks, _ = accuracy_checks(grayscale_model, foreign, config, notes)
    assert checks[0].passed and "vs the baseline's 100.00%" in checks[0].message, checks[0].message
    assert ("'foreign.onnx' records no preprocessing, so it was fed the one the gated manifest records (pixel, mean "
            "0, std 1), as a model trained on the same data would be (validated or gated alone it is fed the data's "
            "own mean and std); pass --normalize none, dataset or MEAN/STD to feed both models another") in notes
    assert not any("gray.onnx" in note and "preprocessing" in note for note in notes)  # it records its own
    notes = []  # --normalize feeds both the one it names: nothing assumed, nothing said
    accuracy_checks(grayscale_model, foreign, for_target(GateConfig(
        max_accuracy_drop=100, baseline=str(foreign), data=str(data), normalize="none", no_latency=True),
        grayscale_model), notes)
    assert not any("preprocessing" in note for note in notes), notes


def test_a_baseline_of_another_fixed_size_is_scored_at_its_own(tmp_path, run_cli):
    """A release that changed its input size: each --resolution was refused by one of the two models, whose error
    asked for the size the other refuses, so no flags measured the accuracy drop."""
    import os

    from conftest import foreign_onnx, pixel_data

    small, large = foreign_onnx(tmp_path / "small.onnx", (1, 4, 4), 4), foreign_onnx(tmp_path / "large.onnx",
                                                                                     (1, 8, 8), 4)
    data = pixel_data(tmp_path / "pixels.npz")
    config = for_target(GateConfig(max_accuracy_drop=100, baseline=str(large), data=str(data), normalize="none",
                                   no_latency=True), small)
    notes: list[str] = []
    checks, shape = accuracy_checks(small, large, config, notes)
    assert [c.name for c in checks] == ["accuracy drop"] and shape == (1, 4, 4)
    assert ("the baseline 'large.onnx' takes 8x8 images and 'small.onnx' was scored on 4x4: the baseline was scored "
            "on the same test images at 8x8, its own fixed size (one --resolution cannot serve both)") in notes
    code, out, err = run_cli("gate", small, "--baseline", large, "--data", data, "--normalize", "none",
                             "--max-accuracy-drop", "100", "--no-latency", "--config", os.devnull)
    assert code == 0 and "the baseline 'large.onnx' takes 8x8 images" in out, out + err
