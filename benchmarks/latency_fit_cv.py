"""How many measured networks does the table-less latency fit need, and which terms?

Reads the students that `latency_predictor.py` measured (their units in `results/latency_predictor.json`),
rebuilds the same students, and cross-validates the fit search uses on a space with no calibrated table
(`cost_features.choose_layout`): N random students fitted, the others predicted, many draws. Reports the
mean share within ±10% and its 10th percentile over draws (a bad draw is what a search gets unlucky
with), for each anchor count, for the terms search uses (MACs by channel layout, the int8 output
elements, the per-layer terms of ``cost_features.fit_features``) and for the earlier sets without some of
them. No measurement: minutes.

Writes benchmarks/results/latency_fit_cv.{md,json}.

    .venv/bin/python benchmarks/latency_fit_cv.py [--spaces pruned,mbv2,resnet] [--anchors 8,16,32,48] [--draws 60]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from latency_predictor import RESULTS, SEED, SHAPE, _build, _teacher, draw_students  # noqa: E402
from results_io import add_force, refuse_replacing, write_results  # noqa: E402

# (label, features: "layout" (layout_features), "layers" (fit_features less its int8 depthwise terms) or
# "search" (fit_features), with the int8 output elements (None: on int8), with the im2col layouts)
TERMS = (("MACs by layout", "layout", False, False), ("MACs by layout, im2col layouts too", "layout", False, True),
         ("+ output elements", "layout", True, False), ("+ output elements, im2col layouts too", "layout", True, True),
         ("+ layers and gated maps, im2col layouts too", "layers", None, True),
         ("+ layers, gated maps and depthwise tails, im2col layouts too", "search", None, True))


def _without_depthwise(records: list, layout: str, activations: bool = False) -> list[float]:
    from edgekd.search.cost_features import fit_features, int8_depthwise_terms

    full = fit_features(records, layout, activations)
    return full[:-1 - len(int8_depthwise_terms(records))] + [1.0] if activations else full


def _features(name: str) -> Any:
    from edgekd.search.cost_features import fit_features, layout_features

    return {"layout": layout_features, "layers": _without_depthwise, "search": fit_features}[name]


def cross_validate(records: list, y: np.ndarray, anchors: int, activations: bool, draws: int,
                   seed: int = 1, im2col: bool = True, terms: str = "search") -> dict:
    """Share of held-out networks predicted within ±10% by a fit on ``anchors`` random ones: mean and
    10th percentile over ``draws``, and how often each layout was chosen (without ``im2col``, among the
    layouts without that term; ``terms`` names the features, as in TERMS)."""
    from edgekd.search.cost_features import IM2COL, LAYOUTS, choose_layout

    layouts = LAYOUTS if im2col else tuple(lay for lay in LAYOUTS if not lay.endswith(IM2COL))
    features = _features(terms)

    rng = np.random.default_rng(seed)
    shares, chosen = [], {}
    for _ in range(draws):
        order = rng.permutation(len(y))
        fit, rest = order[:anchors], order[anchors:]
        layout, coef = choose_layout([records[i] for i in fit], y[fit], activations, layouts, features)
        chosen[layout] = chosen.get(layout, 0) + 1
        predicted = np.asarray([float(np.dot(coef, features(records[i], layout, activations))) for i in rest])
        shares.append(float(np.mean(np.abs(predicted / y[rest] - 1.0) <= 0.10)))
    return {"within_10pct_mean": float(np.mean(shares)), "within_10pct_p10": float(np.quantile(shares, 0.1)),
            "layouts": chosen}


def _markdown(out: dict) -> str:
    counts = out["anchors"]
    lines = ["## Table-less latency fit: anchors and terms (`benchmarks/latency_fit_cv.py`)", "",
             f"The students measured by `latency_predictor.py` ({out['source']}; {out['n']} per space, none used "
             "in calibration), cross-validated: N of them fitted with the fit search uses on a space with no "
             f"calibrated table (`choose_layout`), the other {out['n']} - N predicted, {out['draws']} draws. Share "
             "within ±10%: mean over draws (10th percentile over draws). 'search' marks the terms search uses "
             "(MACs by channel layout with the im2col layouts as candidates, the number of layers and the "
             "elements of squeeze-excitation-gated maps; int8 also the layers' output elements and the "
             "depthwise channel tails and kernel pointers). The other rows are earlier term sets, for "
             "comparison.", "",
             "| profile | space | precision | terms | " + " | ".join(f"N={n}" for n in counts) + " |",
             "|---|---|---|---|" + "---:|" * len(counts)]
    for row in out["rows"]:
        terms = row["terms"] + (" (search)" if row["search"] else "")
        lines.append(f"| {row['profile']} | {row['space']} | {row['precision']} | {terms} | " + " | ".join(
            f"{row['cv'][str(n)]['within_10pct_mean']:.1%} ({row['cv'][str(n)]['within_10pct_p10']:.1%})"
            for n in counts) + " |")
    return "\n".join(lines + [""])


def students(space: Any, n: int, seed: int = SEED) -> list:
    """The students latency_predictor.py measured, in its order: its draw (``seed``), less a calibrated
    space's calibration networks (``calibrate``'s default draw)."""
    import inspect

    from edgekd.latency.calibrate import calibrate, sample_specs

    defaults = inspect.signature(calibrate).parameters
    seen = ({s.key() for s in sample_specs(space, defaults["networks"].default, defaults["seed"].default)}
            if hasattr(space, "all_blocks") else set())
    return draw_students(space, seed, n, seen)


def aligned(records: list, run: dict) -> bool:
    """Whether the rebuilt students are the measured ones: plain MACs rank them exactly as the benchmark's
    own MACs baseline did (a linear fit with a positive slope keeps MACs' ranking)."""
    from scipy.stats import spearmanr

    from edgekd.search.cost_features import layout_features

    recorded = run["fp32"].get("linear_in_macs", {}).get("spearman")
    if recorded is None:  # no MACs baseline recorded (pruned rows): the draw has no calibration skips
        return True
    macs = [layout_features(r, "macs")[0] for r in records]
    if len(macs) != len(run["fp32"]["measured_units"]):
        return False
    return abs(float(spearmanr(macs, run["fp32"]["measured_units"]).statistic) - recorded) < 1e-9


def _check_sizes(results: dict, n: int, source: Path) -> None:
    """Every row must hold the n students the header states: a partial rerun with another --n (before
    latency_predictor.py refused to merge one) leaves rows that cannot be rebuilt from that n."""
    for profile, rows in results.items():
        for space, run in rows.items():
            sizes = {len(run[p]["measured_units"]) for p in ("fp32", "int8") if "measured_units" in run.get(p, {})}
            if sizes and sizes != {n}:
                raise SystemExit(f"error: {source} says n {n} but its '{profile}' '{space}' row holds "
                                 f"{min(sizes)} students; rerun benchmarks/latency_predictor.py with one --n "
                                 "for every row")


def main() -> None:
    from edgekd.search.cost_features import conv_records
    from edgekd.search.spaces import resolve_space

    ap = argparse.ArgumentParser()
    ap.add_argument("--spaces", default="pruned,mbv2,resnet")
    ap.add_argument("--anchors", default="8,16,32,48")
    ap.add_argument("--draws", type=int, default=60)
    ap.add_argument("--source", default=str(RESULTS / "latency_predictor.json"))
    ap.add_argument("--out", default=str(RESULTS / "latency_fit_cv"))
    add_force(ap)
    args = ap.parse_args()
    refuse_replacing(args.out, args.force)
    try:
        counts = [int(n) for n in args.anchors.split(",")]
    except ValueError:
        raise SystemExit(f"error: --anchors '{args.anchors}' is not a list of integers; write e.g. 8,16,32") from None
    source = Path(args.source)
    if not source.is_file():
        raise SystemExit(f"error: {source} not found; run benchmarks/latency_predictor.py first")
    recorded = json.loads(source.read_text())
    n, seed = recorded["meta"]["n"], recorded["meta"].get("seed", SEED)
    _check_sizes(recorded["results"], n, source)
    if not all(3 <= c < n for c in counts) or args.draws < 1:
        raise SystemExit(f"error: anchors must lie in 3..{n - 1} and --draws be positive; write e.g. 8,16,32")
    start = time.perf_counter()
    rows = []
    teacher = _teacher()
    for name in args.spaces.split(","):
        runs = {p: s[name] for p, s in recorded["results"].items() if name in s}
        if not runs:
            raise SystemExit(f"error: {source} has no '{name}' rows; run benchmarks/latency_predictor.py "
                             f"--spaces {name}")
        space = resolve_space(name, teacher, SHAPE)
        records = [conv_records(m, SHAPE) for m in _build(space, students(space, n, seed))]
        for profile, run in runs.items():
            if not aligned(records, run):
                raise SystemExit(f"error: the rebuilt '{name}' students are not the ones {source} measured on "
                                 f"'{profile}'; rerun benchmarks/latency_predictor.py --spaces {name}")
        for (profile, run), precision, (terms, features, activations, im2col) in itertools.product(
                runs.items(), ("fp32", "int8"), TERMS):
            if features == "layers" and precision == "fp32":
                continue  # fp32 fits have no depthwise terms: the search row is this one
            activations = precision == "int8" if activations is None else activations
            y = np.asarray(run[precision]["measured_units"])
            cv = {str(c): cross_validate(records, y, c, activations, args.draws, im2col=im2col,
                                         terms=features) for c in counts}
            rows.append({"profile": profile, "space": name, "precision": precision, "terms": terms,
                         "search": features == "search", "cv": cv})
            print(f"[{time.perf_counter() - start:6.1f}s] {profile} {name} {precision} {terms}: "
                  + ", ".join(f"{c} {v['within_10pct_mean']:.1%}" for c, v in cv.items()), flush=True)
    stamp = recorded["meta"].get("run", "?")
    out = {"source": f"{source.name}, run {stamp}, draw {seed}", "n": n, "draws": args.draws, "anchors": counts,
           "rows": rows, "seconds": time.perf_counter() - start}
    write_results(args.out, out, _markdown(out), force=args.force)


if __name__ == "__main__":
    main()
