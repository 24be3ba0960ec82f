"""Latency of a candidate on the profile, cheap enough for search's inner loop.

A space calibrated on the profile (``edgekd profiles calibrate NAME --space S``) is predicted from its
block table. Any other space (the teacher-derived ``pruned`` family, or a space not calibrated yet)
gets a small model fitted on the spot: a handful of the space's networks are exported as they will
ship, measured interleaved on the profile, and latency is fitted linearly on MACs split by channel
layout (``LAYOUTS``), the layout chosen on those networks; the fit is kept for the next run
(``fit_cache``). Either way, the best candidates are measured before one is chosen.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.errors import api_log
from edgekd.profiles import DeviceProfile, profile_arg
from edgekd.search.cost_features import (
    choose_layout,
    conv_records,
    fit_features,
    layer_pixels,
    records_from_modules,
)
from edgekd.search.fit_cache import Fit, fit_key, fit_path, load_fit, save_fit
from edgekd.types import StudentSpec

# Networks measured to fit a space with no calibrated table. benchmarks/latency_fit_cv.py, on 200
# measured pruned students (fit N, predict the rest, 60 draws), one thread, within 10%: fp32 94.0% with
# 16, 96.2% with 32; int8 95.8% and 98.2%; and the unlucky draws gain most (10th percentile 88.6% ->
# 93.5% fp32, 89.7% -> 95.2% int8). 32 cost about 7 s more on one thread, 30 s on two (three passes).
ANCHORS = 32
TABLE_SOURCE = "latency table"  # a LatencyModel's source when a calibrated table predicts
ANCHOR_SEED = 7919  # draws a fit's anchor networks (anchor_networks)


@dataclass(frozen=True, eq=False)
class LatencyModel:
    predict: Callable[[StudentSpec, Any], float]  # (spec, built module) -> ms
    source: str  # said in search.json and the report
    onnxruntime: str = ""  # the runtime version a calibrated table was measured with
    units: Callable[[StudentSpec, Any], float] | None = None  # the same in units of the reference network
    # A fitted model's anchors: (conv_records, measured units) per network, for comparing fits side by side.
    anchors: tuple[tuple[Any, float], ...] = ()


def latency_model(space: Any, profile: DeviceProfile, input_shape: tuple[int, int, int], num_classes: int,
                  precision: str, calibration: np.ndarray, anchors: int = ANCHORS, seed: int = 0,
                  reference_ms: Callable[[], float] | None = None,
                  log: Callable[[str], None] | None = None,
                  reference_runtime: Callable[[], str] | None = None) -> LatencyModel:
    """``reference_ms`` gives today's p50 of the reference network (default: measured now, or for a fit
    measured now, the reference's p50 in its runs); a search passes its one figure to all its spaces.
    ``reference_runtime`` gives the onnxruntime version a remote device reported in that measurement
    (default: measured now). ``log`` hears why a calibrated table is not used and that networks are being
    measured instead (minutes on a large input, with no progress bar in a CI log)."""
    log = api_log(log)
    measured = functools.cache(lambda: reference_stats(profile, input_shape, num_classes))  # once, if at all
    given = reference_ms  # a search's one figure for the reference converts a fresh fit too
    reference_ms = reference_ms or (lambda: measured().p50_ms)
    reference_runtime = reference_runtime or (lambda: measured().onnxruntime)
    table = _table_model(space, profile, input_shape, num_classes, precision, reference_ms, log)
    if table is not None:
        return table
    how = ""
    if hasattr(space, "all_blocks"):
        c, h, w = input_shape
        how = (f"; `edgekd profiles calibrate {profile_arg(profile)} --space {space.name} --input-shape {c},{h},{w} "
               f"--classes {num_classes}` makes a table that spares this")
    models = anchor_networks(space, input_shape, num_classes, anchors, seed)
    records = [conv_records(m, input_shape) for m in models]
    key = fit_key(space.name, models, records, profile, input_shape, num_classes, precision)
    fit = load_fit(key)
    if fit is not None and not profile.is_local and fit.onnxruntime:
        now = reference_runtime()
        if now and now != fit.onnxruntime:  # the device was upgraded: its kernels, and so its latencies, differ
            log(f"search: the kept '{space.name}' {precision} latency fit was measured with onnxruntime "
                f"{fit.onnxruntime}, and '{profile.name}' now runs {now}: measuring it again")
            fit = None
    if fit is not None:
        # The key holds the profile's settings, not its name: the fit may have been measured under another name.
        log(f"search: '{space.name}' {precision} latency from the fit of {len(fit.units)} networks measured with "
            f"this profile's settings (digest {profile.digest()}) at {fit.measured}, kept in {fit_path(key)} "
            "(delete it to measure again)")
        return model_from_fit(fit, space, models[0], input_shape, precision, reference_ms(),
                              f"; kept from {fit.measured}")
    log(f"search: measuring {len(models)} '{space.name}' networks ({precision}) on '{profile.name}' to fit its "
        f"latency{how}")
    fit = measure_fit(models, records, profile, input_shape, num_classes, precision, calibration)
    warning = save_fit(key, fit, {"space": space.name, "precision": precision, "input_shape": list(input_shape),
                                  "classes": num_classes, "profile": profile.name})
    if warning:
        log(warning)
    return model_from_fit(fit, space, models[0], input_shape, precision, given() if given else fit.ref_ms)


def _table_model(space: Any, profile: DeviceProfile, input_shape: tuple[int, int, int], num_classes: int,
                 precision: str, reference_ms: Callable[[], float],
                 log: Callable[[str], None]) -> LatencyModel | None:
    from edgekd.errors import ProfileError
    from edgekd.latency.fit_check import cross_validate, not_cross_validated
    from edgekd.latency.predict import LatencyPredictor
    from edgekd.latency.table import find_table, load_table

    if not hasattr(space, "all_blocks"):
        return None
    try:
        table = load_table(profile, space.name, input_shape, num_classes)
    except ProfileError as exc:
        if find_table(profile, space.name, input_shape, num_classes):  # calibrated once, now stale: say so
            log(f"warning: {exc.message}")
        return None
    predictor = LatencyPredictor(table, space)
    checked = cross_validate(table, space)
    for accuracy in checked:
        if accuracy.precision == precision:  # how far to trust the table on this device, before it steers the search
            log(f"search: '{space.name}' latency table, {accuracy.line()}")
            if advice := accuracy.advice():
                log(f"warning: '{space.name}' latency table: {advice}")
    if not checked and (why := not_cross_validated(table, space)):  # no figure without a word
        log(f"search: '{space.name}' latency table, no trust figure: {why}")
    ref_ms = reference_ms()
    return LatencyModel(lambda spec, _model: predictor.predict(spec, precision, ref_ms), TABLE_SOURCE,
                        table.stamp.onnxruntime, lambda spec, _model: predictor.predict_units(spec, precision))


def reference_stats(profile: DeviceProfile, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """The reference network measured on the profile now (a LatencyStats: its p50, and the runtime version
    the device reported). Tables and fits are in its units; converting with the p50 from calibration day
    carries the machine's drift since then (predictions 15-40% off in ms here on a shared machine, while
    the units stayed within 10%)."""
    import tempfile
    from pathlib import Path

    from edgekd.latency.calibrate import reference_model
    from edgekd.latency.measure import measure
    from edgekd.latency.quick_export import timing_batch

    with tempfile.TemporaryDirectory(prefix="edgekd-ref-") as tmp:
        return measure([reference_model(input_shape, num_classes, Path(tmp), timing_batch(profile))], profile)[0]



def anchor_networks(space: Any, input_shape: tuple[int, int, int], num_classes: int, anchors: int = ANCHORS,
                    seed: int = 0) -> list[Any]:
    """The networks a fit of ``space`` measures: its smallest plus random ones, built as seeded. Which ones
    does not follow ``seed``: the kept fit (``fit_cache``) is found by its networks, so a search with another
    --seed reuses it (7919 is what seed 0 drew with, so the fits it kept still match)."""
    import torch

    from edgekd.search.spaces import smallest

    rng = np.random.default_rng(ANCHOR_SEED)
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
    return models


def measure_fit(models: list[Any], records: list[list[tuple[int, int, int, int, int]]], profile: DeviceProfile,
                input_shape: tuple[int, int, int], num_classes: int, precision: str,
                calibration: np.ndarray) -> Fit:
    """Measure ``models`` (with their ``conv_records``) and fit their latency on MACs by channel layout
    (``choose_layout``). Measured as calibration measures (interleaved with the reference network, three
    rotated runs, in its units; median of ``passes_for(profile)`` such measurements), so one disturbed
    run does not bend the fit."""
    import tempfile
    from datetime import datetime, timezone
    from pathlib import Path

    from edgekd.latency.calibrate import measure_relative, passes_for, reference_model
    from edgekd.latency.quick_export import export_for_timing, timing_batch

    batch = timing_batch(profile)
    with tempfile.TemporaryDirectory(prefix="edgekd-anchors-") as tmp:
        ref = reference_model(input_shape, num_classes, Path(tmp), batch)
        paths = export_for_timing(models, precision, calibration, Path(tmp), batch=batch)
        units, ref_ms, runtime = measure_relative(paths, profile, ref, rounds=3, passes=passes_for(profile))
    y = np.asarray(units)
    layout, coef = choose_layout(records, y, activations=precision == "int8")
    return Fit(layout, tuple(float(c) for c in coef), 0.5 * float(y.min()),
               tuple(tuple(tuple(r) for r in net) for net in records), tuple(units), ref_ms,
               datetime.now(timezone.utc).isoformat(timespec="seconds"), runtime)


def model_from_fit(fit: Fit, space: Any, first: Any, input_shape: tuple[int, int, int], precision: str,
                   ref_ms: float, note: str = "") -> LatencyModel:
    """Predictions from ``fit`` in ms (units x ``ref_ms``); ``first`` is one of its anchor networks."""
    int8 = precision == "int8"
    coef = np.asarray(fit.coef)
    # A family whose networks share their layers and resolutions (a pruned teacher) is read off the
    # modules: search's inner loop predicts tens of thousands of candidates.
    pixels = layer_pixels(first, input_shape) if getattr(space, "fixed_geometry", False) else ()

    def predict_units(_spec: StudentSpec, model: Any) -> float:
        found = records_from_modules(model, pixels) if pixels else None
        found = found if found is not None else conv_records(model, input_shape)
        return max(float(np.dot(coef, fit_features(found, fit.layout, int8))), fit.floor)

    records = [list(net) for net in fit.records]
    return LatencyModel(lambda spec, model: predict_units(spec, model) * ref_ms,
                        f"fitted on {len(fit.units)} measured '{space.name}' networks (MACs by channel layout "
                        f"'{fit.layout}'{', output elements and depthwise tails' if int8 else ''}, chosen on them)"
                        f"{note}",
                        units=predict_units, anchors=tuple(zip(records, fit.units)))


def fitted_model(space: Any, profile: DeviceProfile, input_shape: tuple[int, int, int], num_classes: int,
                 precision: str, calibration: np.ndarray, anchors: int = ANCHORS, seed: int = 0) -> LatencyModel:
    """Measure ``anchors`` networks of ``space`` (``anchor_networks``) and fit them (``measure_fit``), never
    from the cache; ms = units x the reference's p50 in those runs."""
    models = anchor_networks(space, input_shape, num_classes, anchors, seed)
    records = [conv_records(m, input_shape) for m in models]
    fit = measure_fit(models, records, profile, input_shape, num_classes, precision, calibration)
    return model_from_fit(fit, space, models[0], input_shape, precision, fit.ref_ms)
