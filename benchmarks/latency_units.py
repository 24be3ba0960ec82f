"""Which latency units repeat, and which does a calibrated table predict best?

Calibration, search's fits and ``latency_predictor.py`` measure models in chunks beside a fixed reference network,
in rotated runs, and turn each chunk's runs into units of the reference. The arms (``ARMS``) differ in how:

- ``fastest_state``: each model's fastest 10th percentile over the runs, over the reference's (edgekd's reading);
- ``paired_median``: the median, over every repeat of every run, of the model's repeat median over the reference's
  in the same repeat (``latency.compare.paired_ratios``: samples taken moments apart);
- ``resnet_reference``: the fastest state, over a ``resnet`` reference network (``SECOND_REFERENCE``, fp32) instead
  of edgekd's ``mbv2`` one. When an arm needs it, every run carries both references.

All arms are judged on the same raw measurements: one calibration per space, a draw of students it never saw, and a
second measurement of some of them are measured once with every run recorded; then calibration and the students
are replayed from the record for each arm, so each arm gets its own table (entries and fit) and its own measured
students, with no difference of machine state between them. Per space and precision: the share of students
predicted within ±5% / ±10% of their measured units, and the share whose second measurement agreed with the first.
Rules the runs were read by: ``preregistered.md`` ("How interleaved runs become reference units", "Which network is
the reference").

    .venv/bin/python benchmarks/latency_units.py [--arms fastest_state,paired_median] [--spaces mbv2,resnet]
                                                 [--n 120] [--seed 781] [--noise-subset 30] [--out ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_predictor import draw_students  # noqa: E402  (the students a latency_predictor run would draw)
from results_io import add_force, refuse_replacing, write_results  # noqa: E402

from edgekd.latency import calibrate as calib  # noqa: E402
from edgekd.latency import quick_export  # noqa: E402
from edgekd.latency.compare import paired_ratios  # noqa: E402
from edgekd.latency.fit_check import agreement  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "latency_units"
SHAPE, CLASSES, PROFILE = (1, 32, 32), 10, "host-cpu-1t"
PRECISIONS = ("fp32", "int8")


# edgekd's own reading, taken once at import: the arms patch calibrate.relative_units while they run.
fastest_state = calib.relative_units


def paired_median(runs: list[list[Any]]) -> list[float]:
    """Each model's median repeat-by-repeat ratio to the reference over all the runs."""
    return [statistics.median(paired_ratios(runs, i, 0)) for i in range(1, len(runs[0]))]


# arm -> (reading, which reference: 0 edgekd's, 1 SECOND_REFERENCE)
ARMS: dict[str, tuple[Callable[[list[list[Any]]], list[float]], int]] = {
    "fastest_state": (fastest_state, 0), "paired_median": (paired_median, 0), "resnet_reference": (fastest_state, 1)}
SECOND_REFERENCE = ("resnet", {"stem": 12, "widths": [12, 24, 32], "depths": [1, 2, 1]})


class Record:
    """Stands in for ``calibrate.measure_rotated``: measures and keeps every run while recording (with
    ``second``, a second reference model, in every run), then hands the same runs back in the same order while
    replaying. ``reference`` picks which reference leads the runs handed back (the other is left out)."""

    def __init__(self, measure: Callable[..., list[list[Any]]], second: Path | None = None) -> None:
        self.measure = measure
        self.second = second
        self.runs: list[list[list[Any]]] = []
        self.position: int | None = None  # None: recording
        self.reference = 0

    def replay(self) -> None:
        self.position = 0

    def __call__(self, paths: list, profile: Any, ref: Path, rounds: int) -> list[list[Any]]:
        if self.position is None:
            runs = self.measure([self.second, *paths] if self.second else paths, profile, ref, rounds)
            self.runs.append(runs)
        else:
            if self.position >= len(self.runs) or len(self.runs[self.position][0]) != len(paths) + 1 + bool(
                    self.second):
                raise RuntimeError("the replay asked for other measurements than the recording made")
            runs = self.runs[self.position]
            self.position += 1
        if not self.second:
            return runs
        return [[run[self.reference], *run[2:]] for run in runs]


def space_run(profile: Any, name: str, n: int, seed: int, noise_subset: int, folder: Path,
              log: Callable[[str], None] = print, shape: tuple[int, int, int] = SHAPE, classes: int = CLASSES,
              measure: Callable[..., list[list[Any]]] | None = None, arms: tuple[str, ...] = tuple(ARMS),
              **calibration: Any) -> dict[str, Any]:
    """Calibrate ``name`` (``calibration``: calibrate's keyword arguments), measure ``n`` students of draw
    ``seed`` and ``noise_subset`` of them again, once; score every arm on those runs. Returns
    {arm: {precision: scores}, "measured_seconds": ..., "runs_recorded": ...}."""
    from edgekd.latency.predict import LatencyPredictor
    from edgekd.search.spaces import resolve_space

    space = resolve_space(name, None, shape)
    second = _second_reference(folder, shape, classes) if any(ARMS[a][1] for a in arms) else None
    record = Record(measure or calib.measure_rotated, second)
    out: dict[str, Any] = {}
    start = time.perf_counter()
    runtime = ""
    for i, reading in enumerate(arms):
        units, record.reference = ARMS[reading]
        # A replay measures nothing, so it exports nothing either: only the number of files is checked.
        skip: dict[str, Any] = {}
        if i:
            record.replay()
            skip = {"export_fixed": _no_file, "_quantize": _no_file, "device_runtime": lambda *_a, _r=runtime: _r}
        timing_export = _no_files if i else quick_export.export_for_timing
        with patch.multiple(calib, measure_rotated=record, relative_units=units, **skip), \
                patch.multiple(quick_export, export_for_timing=timing_export):
            table = calib.calibrate(profile, name, shape, classes, path=folder / f"{reading}-{name}.latency.json",
                                    log=log if not i else None, **calibration)
            students = draw_students(space, seed, n, set(table.networks["keys"]))
            ref = _reference(folder, shape, classes)
            first, _ = calib.measure_networks(students, profile, shape, classes, ref)
            again, _ = calib.measure_networks(students[:noise_subset], profile, shape, classes, ref)
        if record.position not in (None, len(record.runs)):
            raise RuntimeError("the replay used fewer measurements than the recording made")
        if not i:
            out["measured_seconds"] = time.perf_counter() - start
            runtime = table.stamp.onnxruntime
        predictor = LatencyPredictor(table, space)
        out[reading] = {}
        for p in PRECISIONS:
            measured = np.asarray(first[p])
            predicted = np.asarray([predictor.predict_units(s, p) for s in students])
            out[reading][p] = {"predicted": agreement(predicted, measured),
                               "remeasured": agreement(np.asarray(again[p]), measured[:noise_subset]),
                               "measured_units": [float(x) for x in measured]}
        log(f"{name} {reading}: " + ", ".join(f"{p} {out[reading][p]['predicted']['within_10pct']:.1%} predicted, "
                                            f"{out[reading][p]['remeasured']['within_10pct']:.1%} re-measured"
                                            for p in PRECISIONS) + " within ±10%")
    out["students"], out["runs_recorded"] = n, len(record.runs)
    return out


def _no_file(*args: Any, **_kwargs: Any) -> Any:
    return next((a for a in args if isinstance(a, Path)), None)


def _no_files(models: list[Any], _precision: str, _calibration: Any, folder: Path, prefix: str = "cand",
              batch: int = 1) -> list[Path]:
    return [folder / f"{prefix}{i}.onnx" for i in range(len(models))]


def _reference(folder: Path, shape: tuple[int, int, int], classes: int) -> Path:
    ref = folder / "reference.onnx"
    return ref if ref.is_file() else calib.reference_model(shape, classes, folder)


def _second_reference(folder: Path, shape: tuple[int, int, int], classes: int) -> Path:
    import torch

    from edgekd.latency.quick_export import export_fixed
    from edgekd.search.spaces import SPACES

    path = folder / "second-reference.onnx"
    if not path.is_file():
        torch.manual_seed(0)
        space, config = SECOND_REFERENCE
        export_fixed(SPACES.get(space).build(config, shape, classes).eval(), (1, *shape), path)
    return path


def summary(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per arm, means over the rows (spaces x precisions) of predicted and re-measured within ±10%."""
    out = {}
    for reading in record["arms"]:
        rows = [record["spaces"][s][reading][p] for s in record["spaces"] for p in PRECISIONS]
        out[reading] = {"predicted_within_10pct": statistics.mean(r["predicted"]["within_10pct"] for r in rows),
                        "remeasured_within_10pct": statistics.mean(r["remeasured"]["within_10pct"] for r in rows)}
    return out


def markdown(record: dict[str, Any]) -> str:
    arms = record["arms"]
    lines = [f"# Reference units: {' vs '.join(arms)}", "",
             f"`{record['profile']}` on {record['cpu']}, {record['date']}. Per space: one calibration, "
             f"{record['n']} students of draw {record['seed']} and {record['noise_subset']} of them measured "
             "again, each measured once and read by every arm (replayed from the recorded runs). Rule: "
             "`benchmarks/preregistered.md`. Rerun: `python benchmarks/latency_units.py --arms "
             f"{','.join(arms)} --seed {record['seed']}`.", "",
             "| space | precision | arm | students predicted within ±10% (±5%) | median error | "
             "second measurement within ±10% of the first |",
             "|---|---|---|---:|---:|---:|"]
    for name, res in record["spaces"].items():
        for p in PRECISIONS:
            for reading in arms:
                pred, again = res[reading][p]["predicted"], res[reading][p]["remeasured"]
                lines.append(f"| {name} | {p} | {reading} | {pred['within_10pct']:.1%} ({pred['within_5pct']:.1%}) | "
                             f"{pred['median_abs_err_pct']:.1f}% | {again['within_10pct']:.1%} |")
    lines += ["", "| arm | mean predicted within ±10% | mean second measurement within ±10% |", "|---|---:|---:|"]
    lines += [f"| {r} | {s['predicted_within_10pct']:.1%} | {s['remeasured_within_10pct']:.1%} |"
              for r, s in summary(record).items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    from edgekd.latency.table import cpu_info
    from edgekd.profiles import load_profile

    ap = argparse.ArgumentParser()
    ap.add_argument("--arms", default="fastest_state,paired_median", help=f"of {', '.join(ARMS)}")
    ap.add_argument("--spaces", default="mbv2,resnet")
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--seed", type=int, default=781, help="the students' draw (latency_predictor.draw_students)")
    ap.add_argument("--noise-subset", type=int, default=30)
    ap.add_argument("--out", default=str(RESULTS))
    add_force(ap)
    args = ap.parse_args()
    refuse_replacing(args.out, args.force)
    arms = tuple(args.arms.split(","))
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"error: unknown arm '{unknown[0]}'; choose from {', '.join(ARMS)}")
    profile = load_profile(PROFILE)
    cpu, flags = cpu_info()
    record: dict[str, Any] = {"profile": PROFILE, "cpu": " ".join(filter(None, (cpu, ", ".join(flags)))),
                              "date": time.strftime("%Y-%m-%d"), "arms": list(arms), "n": args.n, "seed": args.seed,
                              "noise_subset": args.noise_subset, "spaces": {}}
    with tempfile.TemporaryDirectory(prefix="edgekd-units-") as tmp:
        for name in args.spaces.split(","):
            record["spaces"][name] = space_run(profile, name, args.n, args.seed, args.noise_subset, Path(tmp),
                                               arms=arms)
    record["summary"] = summary(record)
    write_results(args.out, record, markdown(record), force=args.force)


if __name__ == "__main__":
    main()
