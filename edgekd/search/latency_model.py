"""Latency of a candidate on the profile, cheap enough for search's inner loop.

A space calibrated on the profile (``edgekd profiles calibrate NAME --space S``) is predicted from its
block table. Any other space (the teacher-derived ``pruned`` family, or a space not calibrated yet)
gets a small model fitted on the spot: a handful of the space's networks are exported as they will
ship, measured interleaved on the profile, and latency is fitted linearly on MACs and layer count.
Either way, the best candidates are measured before one is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.profiles import DeviceProfile
from edgekd.types import StudentSpec


@dataclass(frozen=True, eq=False)
class LatencyModel:
    predict: Callable[[StudentSpec, Any], float]  # (spec, built module) -> ms
    source: str  # said in search.json and the report
    onnxruntime: str = ""  # the runtime version a calibrated table was measured with
    units: Callable[[StudentSpec, Any], float] | None = None  # the same in units of the reference network


def latency_model(space: Any, profile: DeviceProfile, input_shape: tuple[int, int, int], num_classes: int,
                  precision: str, calibration: np.ndarray, anchors: int = 8, seed: int = 0) -> LatencyModel:
    table = _table_model(space, profile, input_shape, num_classes, precision)
    if table is not None:
        return table
    return fitted_model(space, profile, input_shape, num_classes, precision, calibration, anchors, seed)


def _table_model(space: Any, profile: DeviceProfile, input_shape: tuple[int, int, int], num_classes: int,
                 precision: str) -> LatencyModel | None:
    from edgekd.errors import ProfileError
    from edgekd.latency.predict import LatencyPredictor
    from edgekd.latency.table import load_table

    if not hasattr(space, "all_blocks"):
        return None
    try:
        table = load_table(profile, space.name, input_shape, num_classes)
    except ProfileError:
        return None
    predictor = LatencyPredictor(table, space)
    ref_ms = _reference_now(profile, input_shape, num_classes)
    return LatencyModel(lambda spec, _model: predictor.predict(spec, precision, ref_ms), "latency table",
                        table.stamp.onnxruntime, lambda spec, _model: predictor.predict_units(spec, precision))


def _reference_now(profile: DeviceProfile, input_shape: tuple[int, int, int], num_classes: int) -> float:
    """The reference network's p50 on the profile today. The table is in its units; converting with the
    p50 from calibration day carries the machine's drift since then (predictions 15-40% off in ms here
    on a shared machine, while the units stayed within 10%)."""
    import tempfile
    from pathlib import Path

    from edgekd.latency.calibrate import reference_model
    from edgekd.latency.measure import measure

    with tempfile.TemporaryDirectory(prefix="edgekd-ref-") as tmp:
        return measure([reference_model(input_shape, num_classes, Path(tmp))], profile)[0].p50_ms


def cost_features(model: Any, input_shape: tuple[int, int, int]) -> list[float]:
    """[MMACs, conv/linear layers, 1]: what the fitted model is linear in. Counted with hooks on one
    forward pass (torch-pruning's counter deep-copies the model first: half the search's time)."""
    import torch

    macs = [0]
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]

    def hook(module: Any, _inputs: Any, out: Any) -> None:
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs[0] += out.numel() * k
        else:
            macs[0] += out.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return [macs[0] / 1e6, float(len(layers)), 1.0]


def fitted_model(space: Any, profile: DeviceProfile, input_shape: tuple[int, int, int], num_classes: int,
                 precision: str, calibration: np.ndarray, anchors: int = 8, seed: int = 0) -> LatencyModel:
    """Measure ``anchors`` networks of ``space`` (its smallest plus random ones) and fit their latency on
    cost features. Measured as calibration measures (interleaved with the reference network, three
    rotated runs, in its units), so one disturbed run does not bend the fit; ms = units x the
    reference's p50 in those runs."""
    import tempfile
    from pathlib import Path

    import torch

    from edgekd.latency.calibrate import measure_relative, reference_model
    from edgekd.latency.quick_export import export_for_timing
    from edgekd.search.spaces import smallest

    rng = np.random.default_rng(seed + 7919)
    specs = {StudentSpec(space.name, smallest(space)).key(): StudentSpec(space.name, smallest(space))}
    for _ in range(anchors * 20):
        if len(specs) >= anchors:
            break
        spec = StudentSpec(space.name, space.sample(rng))
        specs.setdefault(spec.key(), spec)
    models = []
    for spec in specs.values():
        torch.manual_seed(seed)
        models.append(space.build(spec.config, input_shape, num_classes))
    with tempfile.TemporaryDirectory(prefix="edgekd-anchors-") as tmp:
        ref = reference_model(input_shape, num_classes, Path(tmp))
        paths = export_for_timing(models, precision, calibration, Path(tmp))
        units, ref_ms = measure_relative(paths, profile, ref, rounds=3)
    x = np.asarray([cost_features(m, input_shape) for m in models])
    y = np.asarray(units)
    # Relative least squares, as for the calibrated table: small networks matter as much as big ones.
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    floor = 0.5 * float(y.min())

    def predict_units(_spec: StudentSpec, model: Any) -> float:
        return max(float(np.dot(coef, cost_features(model, input_shape))), floor)

    return LatencyModel(lambda spec, model: predict_units(spec, model) * ref_ms,
                        f"fitted on {len(models)} measured '{space.name}' networks (MACs, layers)",
                        units=predict_units)
