"""Latency-model accuracy: predicted vs measured latency for random students never used in calibration,
for every search space.

For each profile and space: calibrate the space (or reuse a valid table; the ``pruned`` family of
the default teacher has no table and is predicted as search predicts it, from a fit on
``latency_model.ANCHORS`` measured networks of that family), export N random students as they run
(fp32 and int8), measure them interleaved in chunks with the reference network (three rotated runs
per chunk, each model's fastest 10th percentile kept: the calibration's own protocol,
``relative_units``), predict each, and compare with two baselines fitted on the same calibration
networks: latency linear in MACs and linear in parameters. Measurement noise is reported beside it:
a subset measured a second time. A side check shows that the quick
TorchScript export timed here runs as fast as the dynamo export that ships. Writes
benchmarks/results/latency_predictor.{md,json}.

    .venv/bin/python benchmarks/latency_predictor.py [--n 200] [--profiles host-cpu-1t,host-cpu]
                                                     [--spaces mbv2,resnet,pruned] [--seed 777]
                                                     [--out benchmarks/results/latency_predictor]

A run over some of the spaces keeps the other spaces' rows from the last results file, and says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.latency.calibrate import (
    PRECISIONS,
    calibrate,
    measure_rotated,
    passes_for,
    reference_model,
    relative_units,
    sample_specs,
)
from edgekd.latency.fit_check import agreement
from edgekd.latency.network_fit import relative_lstsq
from edgekd.latency.predict import LatencyPredictor
from edgekd.latency.quick_export import export_for_timing
from edgekd.latency.table import cpu_info, load_table
from edgekd.profiles import load_profile
from edgekd.report import tool_versions
from edgekd.search.cost_features import conv_records, cost_features, layout_features
from edgekd.search.latency_model import ANCHORS, fitted_model
from edgekd.search.spaces import resolve_space
from edgekd.types import StudentSpec

sys.path.insert(0, str(Path(__file__).parent))
from results_io import add_force, refuse_replacing, results_paths, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SHAPE, CLASSES = (1, 32, 32), 10
METHODS = ("edgekd", "edgekd_absolute_ms", "linear_in_macs", "linear_in_params", "noise_remeasure")
PREDICTION_REPEATS = 7
SEED = 777  # the students' draw recorded in results/latency_predictor.json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--profiles", default="host-cpu-1t,host-cpu")
    ap.add_argument("--spaces", default="mbv2,resnet,pruned")
    ap.add_argument("--noise-subset", type=int, default=30)
    ap.add_argument("--passes", type=int, default=None,
                    help="measurement passes per student, median kept (default: 1 on one thread, else 3)")
    ap.add_argument("--seed", type=int, default=SEED,
                    help="draw of students; another seed gives a fresh set to test a fit's terms on")
    ap.add_argument("--out", default=str(RESULTS / "latency_predictor"),
                    help="results path without suffix (.json and .md are written)")
    add_force(ap)
    args = ap.parse_args()
    refuse_replacing(args.out, args.force)
    teacher = _teacher()
    calib = np.random.default_rng(0).standard_normal((32, *SHAPE)).astype(np.float32)
    results: dict[str, Any] = {}
    meta: dict[str, Any] = {"n": args.n, "seed": args.seed, "noise_subset": args.noise_subset,
                            "platform": platform.platform(), "cpu": cpu_label(),
                            "tools": tool_versions(), "export_seconds": {}, "run": time.strftime("%Y-%m-%d")}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ref = reference_model(SHAPE, CLASSES, Path(tmp))
        for name in args.profiles.split(","):
            profile = load_profile(name)
            results[name] = {}
            for space_name in args.spaces.split(","):
                space = resolve_space(space_name, teacher, SHAPE)
                results[name][space_name] = _space_run(profile, space, args.n, args.noise_subset, calib, ref,
                                                       Path(tmp), meta, args.passes or passes_for(profile),
                                                       args.seed)
        meta["parity_quick_vs_shipped_export"] = _export_parity(load_profile(args.profiles.split(",")[0]), ref, calib)
    meta["total_seconds"] = time.perf_counter() - start
    results, meta = _keep_other_rows(results, meta, args.profiles.split(","), args.spaces.split(","),
                                     results_paths(args.out)[0])
    write_results(args.out, {"results": results, "meta": meta}, _markdown(results, meta), force=args.force)


def cpu_label() -> str:
    """This machine's CPU as a run's ``meta.cpu`` records it: what a study reusing the run checks it ran here."""
    cpu, flags = cpu_info()
    return " ".join(filter(None, (cpu, ", ".join(flags))))


def _keep_other_rows(results: dict, meta: dict, profiles: list[str], spaces: list[str],
                     path: Path | None = None) -> tuple[dict, dict]:
    """A rerun of some profiles and spaces keeps every other (profile, space) row of the results file
    ``path`` when that file drew the same students (seed, n, and the re-measured subset: the header states
    them once for every row); each rerun row says when and at which commit it was measured."""
    path = path or RESULTS / "latency_predictor.json"
    old = json.loads(path.read_text()) if path.exists() else {"results": {}}
    differ = [key for key, default in (("seed", SEED), ("n", None), ("noise_subset", 30))
              if old["results"] and old["meta"].get(key, default) != meta.get(key, default)]
    if differ:
        was = ", ".join(f"{key} {old['meta'].get(key)}" for key in differ)
        print(f"note: {path} drew other students ({was}); its other rows are not kept", flush=True)
        old = {"results": {}}
    kept = {p: {s: r for s, r in rows.items() if not (p in profiles and s in spaces)}
            for p, rows in old["results"].items()}
    if not any(kept.values()):
        return results, meta
    stamp = f"{meta['run']}, commit {_commit()}"
    for rows in results.values():
        for res in rows.values():
            res["measured_in"] = stamp
    merged = {p: {**kept.get(p, {}), **results.get(p, {})} for p in dict.fromkeys([*old["results"], *results])}
    base = old["meta"].get("base_meta", old["meta"])
    return merged, {**meta, "rerun": {"profiles": profiles, "spaces": spaces}, "base_meta": base}


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _teacher() -> Any:
    """The default teacher's architecture (weights do not change latency)."""
    import torch

    from edgekd.models import resnet
    from edgekd.teacher import TeacherRecipe

    r = TeacherRecipe()
    torch.manual_seed(0)
    return resnet(SHAPE[0], CLASSES, r.stem, r.widths, r.depths).eval()


def _build(space: Any, specs: list[StudentSpec]) -> list[Any]:
    import torch

    models = []
    for i, spec in enumerate(specs):
        torch.manual_seed(i)
        models.append(space.build(spec.config, SHAPE, CLASSES).eval())
    return models


def _measure(paths: list[Path], profile: Any, ref: Path, chunk: int = 8, rounds: int = 3,
             passes: int = 1) -> tuple[np.ndarray, ...]:
    """(units, ms): each chunk run ``rounds`` times in rotated order, interleaved with the reference;
    units as calibration stores them (``relative_units``), ms = p50, median over the runs. With several
    ``passes`` every chunk is measured once per pass, so a model's measurements lie minutes apart, and
    each model keeps its median over the passes."""
    units, ms = [], []
    for _ in range(passes):
        units.append([])
        ms.append([])
        for i in range(0, len(paths), chunk):
            runs = measure_rotated(paths[i:i + chunk], profile, ref, rounds)
            units[-1] += relative_units(runs)
            ms[-1] += list(np.median([[s.p50_ms for s in rest] for _r, *rest in runs], axis=0))
    return np.median(units, axis=0), np.median(ms, axis=0)


def draw_students(space: Any, seed: int, n: int, seen: set[str]) -> list[StudentSpec]:
    """The students a run measures: ``n`` of draw ``seed``, leaving out the calibration networks (``seen``)."""
    return [s for s in sample_specs(space, n + 64, seed) if s.key() not in seen][:n]


def _space_run(profile: Any, space: Any, n: int, noise_subset: int, calib: np.ndarray, ref: Path,
               tmp: Path, meta: dict, passes: int = 1, seed: int = SEED) -> dict:
    t0 = time.perf_counter()
    out: dict[str, Any] = {"passes": passes}
    if hasattr(space, "all_blocks"):
        try:
            table = load_table(profile, space.name, SHAPE, CLASSES)
            out["table_reused"] = True
        except Exception:
            table = calibrate(profile, space.name, SHAPE, CLASSES, log=print)
            out["table_reused"] = False
        out["calibration_seconds"] = table.seconds
        seen = set(table.networks["keys"])
        predictor = LatencyPredictor(table, space)
        cal_specs = [StudentSpec(space.name, json.loads(k.split(":", 1)[1])) for k in table.networks["keys"]]
        cal_cost = np.asarray([_cost(m) for m in _build(space, cal_specs)])
    else:
        table = predictor = None
        seen = set()
    specs = draw_students(space, seed, n, seen)
    models = _build(space, specs)
    cost = np.asarray([_cost(m) for m in models])
    for precision in PRECISIONS:
        folder = tmp / f"{profile.name}-{space.name}-{precision}"
        folder.mkdir()
        t = time.perf_counter()
        paths = export_for_timing(models, precision, calib, folder)
        meta["export_seconds"][f"{space.name}-{precision}"] = time.perf_counter() - t
        if table is None:
            model = fitted_model(space, profile, SHAPE, CLASSES, precision, calib)
        measured, measured_ms = _measure(paths, profile, ref, passes=passes)
        again, again_ms = _measure(paths[:noise_subset], profile, ref, passes=passes)
        if table is not None:
            predicted, rate = _timed_predictions(
                lambda prec=precision: [predictor.predict_units(s, prec) for s in specs])
        else:
            predicted, rate = _timed_predictions(
                lambda fit=model: [fit.units(s, m) for s, m in zip(specs, models)])
        res: dict[str, Any] = {"predictions_per_second": rate, "prediction_passes": PREDICTION_REPEATS,
                               "measured_ms_range": [float(measured_ms.min()), float(measured_ms.max())]}
        if table is not None:
            y_cal = np.asarray(table.networks[precision])
            res.update({
                "edgekd": _scores(predicted, measured),
                "edgekd_absolute_ms": _scores(predicted * table.reference_ms, measured_ms),
                "linear_in_macs": _scores(_linear(cal_cost[:, 0], y_cal, cost[:, 0]), measured),
                "linear_in_params": _scores(_linear(cal_cost[:, 1], y_cal, cost[:, 1]), measured),
                "noise_remeasure": _scores(again, measured[:noise_subset]),
                "measured_units": measured.tolist(), "predicted_units": predicted.tolist()})
        else:
            predicted_ms = np.asarray([model.predict(s, m) for s, m in zip(specs, models)])
            # The baseline: the same anchors fitted linearly in MACs (what this model was before layouts).
            a_records, a_units = zip(*model.anchors)
            coef = relative_lstsq(np.asarray([layout_features(r, "macs") for r in a_records]), np.asarray(a_units))
            macs_fit = np.asarray([float(coef @ layout_features(conv_records(m, SHAPE), "macs")) for m in models])
            res.update({"edgekd": _scores(predicted, measured),
                        "edgekd_absolute_ms": _scores(predicted_ms, measured_ms),
                        "linear_in_macs": _scores(macs_fit, measured),
                        "noise_remeasure": _scores(again, measured[:noise_subset]),
                        "source": model.source,
                        "measured_units": measured.tolist(), "predicted_units": predicted.tolist()})
        out[precision] = res
        print(f"{profile.name} {space.name} {precision}: " + ", ".join(
            f"{k} {v['within_10pct']:.1%}" for k, v in res.items() if isinstance(v, dict) and "within_10pct" in v),
            flush=True)
    out["seconds"] = time.perf_counter() - t0
    return out


def _timed_predictions(predict_all: Any, repeats: int = PREDICTION_REPEATS) -> tuple[np.ndarray, float]:
    """(predictions, predictions per second): all students predicted ``repeats`` times, rate from the median
    pass. One pass over 200 students lasts 10-30 ms, so a single pause of the shared machine (or of the
    garbage collector) could halve a one-pass rate."""
    seconds, predicted = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        predicted = predict_all()
        seconds.append(time.perf_counter() - t)
    return np.asarray(predicted), len(predicted) / float(np.median(seconds))


def _cost(model: Any) -> tuple[float, float]:
    return cost_features(model, SHAPE)[0], float(sum(p.numel() for p in model.parameters()))


def _export_parity(profile: Any, ref: Path, calib: np.ndarray, n: int = 8) -> dict:
    """The quick export timed here vs the dynamo export that ships, side by side (fp32, mbv2)."""
    from edgekd.export import ExportRequest, get_exporter

    space = resolve_space("mbv2")
    models = _build(space, sample_specs(space, n, 4242))
    with tempfile.TemporaryDirectory() as tmp:
        quick = export_for_timing(models, "fp32", calib, Path(tmp))
        shipped = [Path(get_exporter("onnx-fp32")(ExportRequest(f"s{i}", "student", Path(tmp), m, calib[:1])).path)
                   for i, m in enumerate(models)]
        units, _ = _measure(quick + shipped, profile, ref, chunk=2 * n)
    ratio = units[n:] / units[:n]
    return {"n": n, "median_ratio_shipped_over_quick": float(np.median(ratio)),
            "max_abs_deviation_pct": float(np.max(np.abs(ratio - 1)) * 100)}


def _linear(x_cal: np.ndarray, y_cal: np.ndarray, x: np.ndarray) -> np.ndarray:
    a, b = np.polyfit(x_cal, y_cal, 1)
    return a * x + b


def _scores(pred: np.ndarray, meas: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    return {**agreement(pred, meas), "spearman": float(spearmanr(pred, meas)[0])}


def _markdown(results: dict, meta: dict) -> str:
    lines = ["## Latency model (`benchmarks/latency_predictor.py`)", "",
             f"{meta['n']} random students per search space (draw {meta.get('seed', SEED)}; none used in "
             "calibration), exported as they run "
             "(fp32, and int8 QDQ as the onnx-int8 exporter quantizes); each measured in chunks of 8 interleaved "
             "with a fixed reference network, three rotated runs per chunk; on a profile running more than one "
             "thread, every chunk is measured in 3 passes over all students (minutes apart) and each student "
             "keeps its median over them (`passes` per row in the JSON), because one pass of a 2-thread "
             "measurement repeats poorly on this shared machine. `edgekd` compares in units of the "
             "reference: each model's fastest 10th percentile over the three runs (a shared machine's slow "
             "stretches slow small models out of proportion, see `relative_units`), which cancels the "
             "machine's drift; "
             "`edgekd_absolute_ms` compares predicted milliseconds (units x the reference's p50 at calibration "
             "time) with measured p50 milliseconds, drift included. Baselines are fitted on the same calibration "
             "networks, in the same units. *noise_remeasure* compares a second measurement of the first "
             f"{meta.get('noise_subset', 30)} students with the first. `pruned` is the default teacher's pruned "
             "family: it has no block table "
             f"and is predicted as search predicts it, from {ANCHORS} networks of the family measured on the spot "
             "with the same protocol, linear in MACs split by channel layout (the layout chosen on those networks "
             "by leave-one-out among `cost_features.LAYOUTS`, some of which also count the im2col elements of "
             "convolutions that cannot block; int8 adds the layers' output elements); its "
             "`linear_in_macs` baseline is the same networks fitted on plain MACs (what search used before) and it "
             "has no parameter baseline. The anchor count of each row is in its `source` below.",
             "", "| profile | space | precision | method | within ±5% | within ±10% | median error | Spearman |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for name, spaces in results.items():
        for space, res in spaces.items():
            for precision in PRECISIONS:
                for method in METHODS:
                    s = res[precision].get(method)
                    if s is None:
                        continue
                    lines.append(f"| {name} | {space} | {precision} | {method} | {s['within_5pct']:.1%} | "
                                 f"{s['within_10pct']:.1%} | {s['median_abs_err_pct']:.1f}% | {s['spearman']:.3f} |")
    lines.append("")
    for name, spaces in results.items():
        for space, res in spaces.items():
            rate = min(res[p]["predictions_per_second"] for p in PRECISIONS)
            calib = (f"calibration {res['calibration_seconds']:.0f} s{' (table reused)' if res['table_reused'] else ''}"
                     if "calibration_seconds" in res else
                     f"no table (fp32 {res['fp32'].get('source', 'fitted')}; "
                     f"int8 {res['int8'].get('source', 'fitted')})")
            timed = res["fp32"].get("prediction_passes", 1)  # rows from before the rate took the median pass
            lines.append(f"- `{name}` / `{space}`: {calib}; {rate:,.0f} predictions/s "
                         f"({f'median of {timed} passes' if timed > 1 else 'one pass'}); measured fp32 "
                         f"{res['fp32']['measured_ms_range'][0]:.3f}-{res['fp32']['measured_ms_range'][1]:.3f} ms.")
    p = meta["parity_quick_vs_shipped_export"]
    lines += ["", f"Quick export vs shipped (dynamo) export, {p['n']} mbv2 students side by side: median latency ratio "
              f"{p['median_ratio_shipped_over_quick']:.3f}, largest deviation {p['max_abs_deviation_pct']:.1f}%.",
              "", f"Machine: {meta['platform']}{f' ({cpu})' if (cpu := meta.get('cpu')) else ''}; onnxruntime "
              f"{meta['tools']['onnxruntime']}; whole run {meta['total_seconds'] / 60:.0f} min."]
    rerun = [f"`{name}` / `{space}` ({res['measured_in']})" for name, rows in results.items()
             for space, res in rows.items() if "measured_in" in res]
    if rerun:
        lines += ["", f"Rerun on their own: {'; '.join(rerun)}. The other rows are from the last full run "
                  f"({meta['base_meta'].get('run', 'earlier')}, {meta['base_meta']['total_seconds'] / 60:.0f} min)."]
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main()
