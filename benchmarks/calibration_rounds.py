"""Does calibrating with more rotated runs per chunk predict better on a noisy machine?

Calibrates each space several times into scratch tables, taking turns between the round counts (ABBA by
default), and scores every table on students whose latency a ``latency_predictor.py`` run measured: the share
predicted within ±5% and ±10% (reference units, as that benchmark's ``edgekd`` rows). The rule it was run
under is in ``preregistered.md`` ("Calibration rounds on a noisy machine"). Run it on the machine that ran the
``latency_predictor.py`` source, right after it: its students are drawn around the calibration networks of the
table that run left in the profile's folder, and their measurements are that machine's (a source whose
``meta.cpu`` is another CPU is refused).

    .venv/bin/python benchmarks/latency_predictor.py --seed 779 --profiles host-cpu-1t --spaces mbv2,resnet \\
        --out /tmp/latency_predictor_seed779
    .venv/bin/python benchmarks/calibration_rounds.py \\
        --source /tmp/latency_predictor_seed779.json [--order 3,5,5,3] [--spaces mbv2,resnet]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_predictor import cpu_label  # noqa: E402
from latency_predictor import draw_students as students  # noqa: E402  (the source run's draw, as it drew it)
from results_io import add_force, refuse_replacing, write_results  # noqa: E402

from edgekd.latency.fit_check import agreement as score  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "calibration_rounds"
SHAPE, CLASSES, PROFILE = (1, 32, 32), 10, "host-cpu-1t"


def run(source: dict, order: list[int], spaces: list[str], log: Any = print) -> dict:
    from edgekd.errors import ProfileError
    from edgekd.latency.calibrate import calibrate
    from edgekd.latency.predict import LatencyPredictor
    from edgekd.latency.table import load_table
    from edgekd.profiles import load_profile
    from edgekd.search.spaces import resolve_space

    profile = load_profile(PROFILE)
    seed, n = source["meta"]["seed"], source["meta"]["n"]
    measured = source["results"][PROFILE]
    # The source run's students are fixed by its own table's calibration networks, which they were drawn around.
    drawn = {}
    for name in spaces:
        try:
            keys = set(load_table(profile, name, SHAPE, CLASSES).networks["keys"])
        except ProfileError as exc:
            raise SystemExit(f"error: {exc.problem}; run `edgekd profiles calibrate {PROFILE} --space {name}` "
                             f"here first (benchmarks/latency_predictor.py --seed {seed} does, as it measures a "
                             "source)") from None
        drawn[name] = students(resolve_space(name, None, SHAPE), seed, n, keys)
    runs = []
    with tempfile.TemporaryDirectory(prefix="edgekd-rounds-") as tmp:
        for i, rounds in enumerate(order):
            for name in spaces:
                space = resolve_space(name, None, SHAPE)
                start = time.perf_counter()
                table = calibrate(profile, name, SHAPE, CLASSES, rounds=rounds,
                                  path=Path(tmp) / f"{i}-{name}.latency.json")
                seconds = time.perf_counter() - start
                predictor = LatencyPredictor(table, space)
                row = {"turn": i, "rounds": rounds, "space": name, "seconds": seconds}
                for precision in ("fp32", "int8"):
                    predicted = np.asarray([predictor.predict_units(s, precision) for s in drawn[name]])
                    row[precision] = score(predicted, np.asarray(measured[name][precision]["measured_units"]))
                runs.append(row)
                log(f"turn {i} ({rounds} rounds) {name}: fp32 {row['fp32']['within_10pct']:.1%}, "
                    f"int8 {row['int8']['within_10pct']:.1%} within ±10% ({seconds:.0f} s)")
    return {"profile": PROFILE, "order": order, "spaces": spaces, "source_seed": seed, "n": n, "runs": runs}


def check_measured_here(source: dict, path: str) -> None:
    """The source's students are scored against this machine's calibrations: measured on another CPU, they
    would grade every table by how much that CPU differs (as distill_augment.py's --baseline is checked)."""
    here = cpu_label()
    if source["meta"].get("cpu") != here:
        raise SystemExit(f"error: {path} was measured on {source['meta'].get('cpu') or 'an unrecorded CPU'}, not on "
                         f"this machine's {here or 'unknown CPU'}; run benchmarks/latency_predictor.py --seed "
                         f"{source['meta'].get('seed')} here first and pass its --out as --source")


def turn_scores(record: dict) -> list[dict]:
    """Per calibration turn: its round count and its within ±10% averaged over spaces and precisions."""
    out = []
    for turn in sorted({r["turn"] for r in record["runs"]}):
        rows = [r for r in record["runs"] if r["turn"] == turn]
        values = [r[p]["within_10pct"] for r in rows for p in ("fp32", "int8")]
        out.append({"turn": turn, "rounds": rows[0]["rounds"], "within_10pct": statistics.mean(values),
                    "seconds_max": max(r["seconds"] for r in rows)})
    return out


def markdown(record: dict) -> str:
    lines = ["# Calibration rounds", "",
             f"`{record['profile']}`: each space calibrated {len(record['order'])} times into scratch tables, in "
             f"the order {', '.join(map(str, record['order']))} (rotated runs per chunk), each table predicting "
             f"the {record['n']} students of draw {record['source_seed']} measured by `latency_predictor.py`; "
             "share within ±10% (±5%) in reference units. Rule: `benchmarks/preregistered.md`. Rerun: "
             "`python benchmarks/calibration_rounds.py --source <that run's JSON>`.", "",
             "| turn | rounds | space | fp32 ±10% (±5%) | int8 ±10% (±5%) | calibration (s) |",
             "|---|---:|---|---:|---:|---:|"]
    for r in record["runs"]:
        cells = [f"{r[p]['within_10pct']:.1%} ({r[p]['within_5pct']:.1%})" for p in ("fp32", "int8")]
        lines.append(f"| {r['turn']} | {r['rounds']} | {r['space']} | {cells[0]} | {cells[1]} | {r['seconds']:.0f} |")
    lines += ["", "| turn | rounds | mean within ±10% (spaces x precisions) | slowest calibration (s) |",
              "|---|---:|---:|---:|"]
    lines += [f"| {t['turn']} | {t['rounds']} | {t['within_10pct']:.1%} | {t['seconds_max']:.0f} |"
              for t in turn_scores(record)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True, help="a latency_predictor.py JSON measured on this machine")
    ap.add_argument("--order", default="3,5,5,3", help="round counts, one calibration per entry, in turn")
    ap.add_argument("--spaces", default="mbv2,resnet")
    ap.add_argument("--out", default=str(RESULTS))
    add_force(ap)
    args = ap.parse_args()
    refuse_replacing(args.out, args.force)
    source = json.loads(Path(args.source).read_text())
    check_measured_here(source, args.source)
    record = run(source, [int(x) for x in args.order.split(",")], args.spaces.split(","))
    record["source"] = args.source
    record["date"] = time.strftime("%Y-%m-%d")
    write_results(args.out, record, markdown(record), force=args.force)


if __name__ == "__main__":
    main()
