"""How many measured networks does the table-less latency fit need, and which terms?

Reads the `pruned` students that `latency_predictor.py` measured (their units in
`results/latency_predictor.json`), rebuilds the same students, and cross-validates the fit search
uses (`latency_model.choose_layout`): N random students fitted, the others predicted, many draws.
Reports the mean share within ±10% and its 10th percentile over draws (a bad draw is what a search
gets unlucky with), for each anchor count, with and without the int8 output-elements term, and with
and without the im2col layouts (``+im2col`` in ``latency_model.LAYOUTS``). No measurement: a few
minutes.

Writes benchmarks/results/latency_fit_cv.{md,json}.

    .venv/bin/python benchmarks/latency_fit_cv.py [--anchors 8,16,32,48] [--draws 60]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from latency_predictor import RESULTS, SHAPE, _build, _teacher  # noqa: E402
from results_io import write_results  # noqa: E402


def cross_validate(records: list, y: np.ndarray, anchors: int, activations: bool, draws: int,
                   seed: int = 1, im2col: bool = True) -> dict:
    """Share of held-out networks predicted within ±10% by a fit on ``anchors`` random ones: mean and
    10th percentile over ``draws``, and how often each layout was chosen (without ``im2col``, among the
    layouts without that term)."""
    from edgekd.search.latency_model import IM2COL, LAYOUTS, choose_layout, layout_features

    layouts = LAYOUTS if im2col else tuple(lay for lay in LAYOUTS if not lay.endswith(IM2COL))

    rng = np.random.default_rng(seed)
    shares, chosen = [], {}
    for _ in range(draws):
        order = rng.permutation(len(y))
        fit, rest = order[:anchors], order[anchors:]
        layout, coef = choose_layout([records[i] for i in fit], y[fit], activations, layouts)
        chosen[layout] = chosen.get(layout, 0) + 1
        predicted = np.asarray([float(np.dot(coef, layout_features(records[i], layout, activations))) for i in rest])
        shares.append(float(np.mean(np.abs(predicted / y[rest] - 1.0) <= 0.10)))
    return {"within_10pct_mean": float(np.mean(shares)), "within_10pct_p10": float(np.quantile(shares, 0.1)),
            "layouts": chosen}


def _markdown(out: dict) -> str:
    counts = out["anchors"]
    lines = ["## Table-less latency fit: anchors and terms (`benchmarks/latency_fit_cv.py`)", "",
             f"The `pruned` students measured by `latency_predictor.py` ({out['source']}), cross-validated: N of "
             "them fitted with the fit search uses on its anchors (`choose_layout`), the other "
             f"{out['n']} - N predicted, {out['draws']} draws. Share "
             "within ±10%: mean over draws (10th percentile over draws). 'search' marks the terms search uses "
             "(int8: MACs by layout + output elements; fp32: MACs by layout; both with the layouts that add "
             "unblocked convolutions' im2col elements as candidates).", "",
             "| profile | precision | terms | " + " | ".join(f"N={n}" for n in counts) + " |",
             "|---|---|---|" + "---:|" * len(counts)]
    for row in out["rows"]:
        terms = "+ output elements" if row["activations"] else "MACs by layout"
        terms += ", im2col layouts too" if row["im2col"] else ""
        if row["activations"] == (row["precision"] == "int8") and row["im2col"]:
            terms += " (search)"
        lines.append(f"| {row['profile']} | {row['precision']} | {terms} | " + " | ".join(
            f"{row['cv'][str(n)]['within_10pct_mean']:.1%} ({row['cv'][str(n)]['within_10pct_p10']:.1%})"
            for n in counts) + " |")
    return "\n".join(lines + [""])


def main() -> None:
    from edgekd.latency.calibrate import sample_specs
    from edgekd.search.latency_model import conv_records
    from edgekd.search.spaces import resolve_space

    ap = argparse.ArgumentParser()
    ap.add_argument("--anchors", default="8,16,32,48")
    ap.add_argument("--draws", type=int, default=60)
    ap.add_argument("--source", default=str(RESULTS / "latency_predictor.json"))
    ap.add_argument("--out", default=str(RESULTS / "latency_fit_cv"))
    args = ap.parse_args()
    try:
        counts = [int(n) for n in args.anchors.split(",")]
    except ValueError:
        raise SystemExit(f"error: --anchors '{args.anchors}' is not a list of integers; write e.g. 8,16,32") from None
    source = Path(args.source)
    if not source.is_file():
        raise SystemExit(f"error: {source} not found; run benchmarks/latency_predictor.py --spaces pruned first")
    recorded = json.loads(source.read_text())
    runs = {p: s["pruned"] for p, s in recorded["results"].items() if "pruned" in s}
    if not runs:
        raise SystemExit(f"error: {source} has no pruned rows; run benchmarks/latency_predictor.py --spaces pruned")
    n = recorded["meta"]["n"]
    if not all(3 <= c < n for c in counts) or args.draws < 1:
        raise SystemExit(f"error: anchors must lie in 3..{n - 1} and --draws be positive; write e.g. 8,16,32")
    start = time.perf_counter()
    space = resolve_space("pruned", _teacher(), SHAPE)
    # The same students in the same order as the benchmark measured them (the pruned space has no table,
    # so none is skipped as a calibration network).
    records = [conv_records(m, SHAPE) for m in _build(space, sample_specs(space, n + 64, 777)[:n])]
    rows = []
    for (profile, run), precision, activations, im2col in itertools.product(
            runs.items(), ("fp32", "int8"), (False, True), (False, True)):
        y = np.asarray(run[precision]["measured_units"])
        cv = {str(c): cross_validate(records, y, c, activations, args.draws, im2col=im2col) for c in counts}
        rows.append({"profile": profile, "precision": precision, "activations": activations, "im2col": im2col,
                     "cv": cv})
        print(f"[{time.perf_counter() - start:6.1f}s] {profile} {precision} activations={activations} "
              f"im2col={im2col}: " + ", ".join(f"{c} {v['within_10pct_mean']:.1%}" for c, v in cv.items()),
              flush=True)
    stamp = recorded["meta"].get("run", "?")
    out = {"source": f"{source.name}, run {stamp}", "n": n, "draws": args.draws, "anchors": counts, "rows": rows,
           "seconds": time.perf_counter() - start}
    write_results(args.out, out, _markdown(out))


if __name__ == "__main__":
    main()
