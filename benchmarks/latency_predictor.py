"""Latency-model accuracy: predicted vs measured p50 for random students never used in calibration.

For each profile: calibrate (or reuse a valid table), export N random `mbv2` students as the
pipeline does (fp32 and int8), measure them interleaved in chunks, predict each from the table, and
compare with two baselines fitted on the same calibration networks: latency linear in MACs and
linear in parameters. Measurement noise is reported beside it: a subset measured twice.
Writes benchmarks/results/latency_predictor.{md,json}.

    .venv/bin/python benchmarks/latency_predictor.py [--n 200] [--profiles host-cpu-1t,host-cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekd.latency.calibrate import (
    PRECISIONS,
    calibrate,
    measure_networks,
    measure_relative,
    reference_model,
    sample_specs,
)
from edgekd.latency.predict import LatencyPredictor
from edgekd.latency.table import load_table
from edgekd.profiles import load_profile
from edgekd.report import tool_versions
from edgekd.search.spaces import SPACES, build_student

RESULTS = Path(__file__).parent / "results"
SHAPE, CLASSES = (1, 32, 32), 10


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--profiles", default="host-cpu-1t,host-cpu")
    ap.add_argument("--noise-subset", type=int, default=30)
    args = ap.parse_args()
    space = SPACES.get("mbv2")
    calib_keys = {s.key() for s in sample_specs(space, 48, 12345)}
    specs = [s for s in sample_specs(space, args.n + 30, 777) if s.key() not in calib_keys][:args.n]
    macs, params = _complexity(specs)
    results, meta = {}, {"n": len(specs), "platform": platform.platform(), "tools": tool_versions()}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = _export_all(specs, Path(tmp))
        meta["export_seconds"] = time.perf_counter() - t0
        for name in args.profiles.split(","):
            results[name] = _profile_run(name, space, specs, paths, macs, params, args.noise_subset)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latency_predictor.json").write_text(json.dumps({"results": results, "meta": meta}, indent=2) + "\n")
    md = _markdown(results, meta)
    (RESULTS / "latency_predictor.md").write_text(md)
    print(md)


def _complexity(specs: list) -> tuple[np.ndarray, np.ndarray]:
    import torch
    import torch_pruning as tp

    macs, params = [], []
    for spec in specs:
        model = build_student(spec, SHAPE, CLASSES).eval()
        ops, n = tp.utils.count_ops_and_params(model, torch.zeros(1, *SHAPE))
        macs.append(ops)
        params.append(n)
    return np.asarray(macs, float), np.asarray(params, float)


def _export_all(specs: list, folder: Path) -> dict[str, list[str]]:
    import torch

    from edgekd.export import ExportRequest, get_exporter

    fp32, int8 = get_exporter("onnx-fp32"), get_exporter("onnx-int8")
    calib = np.random.default_rng(0).standard_normal((32, *SHAPE)).astype(np.float32)
    out: dict[str, list[str]] = {"fp32": [], "int8": []}
    for i, spec in enumerate(specs):
        torch.manual_seed(i)
        model = build_student(spec, SHAPE, CLASSES).eval()
        a = fp32(ExportRequest(f"c{i}", "student", folder, model, calib[:1]))
        b = int8(ExportRequest(f"c{i}q", "student", folder, calibration=calib, source=a))
        out["fp32"].append(a.path)
        out["int8"].append(b.path)
    return out


def _measure(paths: list[str], profile, ref: Path, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(p50 in reference units, p50 in ms), each chunk interleaved with the reference network."""
    units, ms = [], []
    for i in range(0, len(paths), chunk):
        u, ref_ms = measure_relative(paths[i:i + chunk], profile, ref)
        units += u
        ms += [x * ref_ms for x in u]
    return np.asarray(units), np.asarray(ms)


def _profile_run(name: str, space, specs, paths, macs, params, noise_subset: int) -> dict:
    profile = load_profile(name)
    t0 = time.perf_counter()
    try:
        table = load_table(profile, "mbv2", SHAPE, CLASSES)
        calib_seconds = table.seconds
        reused = True
    except Exception:
        table = calibrate(profile, "mbv2", SHAPE, CLASSES, log=print)
        calib_seconds = time.perf_counter() - t0
        reused = False
    predictor = LatencyPredictor(table, space)
    calib_specs = sample_specs(space, 48, 12345)
    c_macs, c_params = _complexity(calib_specs)
    out = {"calibration_seconds": calib_seconds, "table_reused": reused, "reference_ms": table.reference_ms}
    with tempfile.TemporaryDirectory() as tmp:
        ref = reference_model(SHAPE, CLASSES, Path(tmp))
        calib_measured, _ = measure_networks(calib_specs, profile, SHAPE, CLASSES, ref)
        for precision in PRECISIONS:
            measured, measured_ms = _measure(paths[precision], profile, ref)
            again, _ = _measure(paths[precision][:noise_subset], profile, ref)
            t = time.perf_counter()
            predicted = np.asarray([predictor.predict_units(s, precision) for s in specs])
            rate = len(specs) / (time.perf_counter() - t)
            y_cal = np.asarray(calib_measured[precision])
            out[precision] = {
                "edgekd": _scores(predicted, measured),
                "edgekd_absolute_ms": _scores(predicted * table.reference_ms, measured_ms),
                "linear_in_macs": _scores(_linear(c_macs, y_cal, macs), measured),
                "linear_in_params": _scores(_linear(c_params, y_cal, params), measured),
                "noise_remeasure": _scores(again, measured[:noise_subset]),
                "predictions_per_second": rate,
                "measured_ms_range": [float(measured_ms.min()), float(measured_ms.max())],
                "measured_units": measured.tolist(),
                "predicted_units": predicted.tolist(),
            }
    return out


def _linear(x_cal: np.ndarray, y_cal: np.ndarray, x: np.ndarray) -> np.ndarray:
    a, b = np.polyfit(x_cal, y_cal, 1)
    return a * x + b


def _scores(pred: np.ndarray, meas: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    err = np.abs(pred - meas) / meas
    return {"within_5pct": float((err <= 0.05).mean()), "within_10pct": float((err <= 0.10).mean()),
            "median_abs_err_pct": float(np.median(err) * 100), "spearman": float(spearmanr(pred, meas)[0])}


def _markdown(results: dict, meta: dict) -> str:
    lines = ["## Latency model (`benchmarks/latency_predictor.py`)", "",
             f"{meta['n']} random `mbv2` students (none used in calibration), exported as the pipeline does; "
             "measured p50 (interleaved in chunks of 8 with a fixed reference network; latencies in units of the "
             "reference's p50 from the same run, which cancels the machine's drift) vs predicted. Baselines are "
             "fitted on the same 48 calibration networks, in the same units. `edgekd_absolute_ms` compares "
             "milliseconds directly, with the reference's latency from calibration time (drift included). "
             "*noise_remeasure* compares a second measurement of the first 30 students with the first.",
             "", "| profile | precision | method | within ±5% | within ±10% | median error | Spearman |",
             "|---|---|---|---:|---:|---:|---:|"]
    for name, res in results.items():
        for precision in PRECISIONS:
            for method in ("edgekd", "edgekd_absolute_ms", "linear_in_macs", "linear_in_params",
                           "noise_remeasure"):
                s = res[precision][method]
                lines.append(f"| {name} | {precision} | {method} | {s['within_5pct']:.1%} | {s['within_10pct']:.1%} "
                             f"| {s['median_abs_err_pct']:.1f}% | {s['spearman']:.3f} |")
    lines.append("")
    for name, res in results.items():
        rate = min(res[p]["predictions_per_second"] for p in PRECISIONS)
        lines.append(f"- `{name}`: calibration {res['calibration_seconds']:.0f} s"
                     f"{' (table reused)' if res['table_reused'] else ''}; {rate:,.0f} predictions/s; measured "
                     f"fp32 {res['fp32']['measured_ms_range'][0]:.3f}-{res['fp32']['measured_ms_range'][1]:.3f} ms.")
    lines += ["", f"Machine: {meta['platform']}; onnxruntime {meta['tools']['onnxruntime']}; "
              f"export of all students {meta['export_seconds']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
