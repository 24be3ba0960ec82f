"""How much the search's choice depends on the machine's moment: the same search repeated, then every student
it chose re-measured side by side.

A search with a fixed seed scores the same candidates in the same order; only its latency readings differ
from one repeat to the next. So the spread of the students it chooses, re-measured together in one run, is
the part of the choice that the machine's speed at the time decided.

    python benchmarks/search_repeat.py                      # repeat, then re-measure (results/search_repeat)
    python benchmarks/search_repeat.py repeat --label X     # one more repeat per space, recorded under X
    python benchmarks/search_repeat.py remeasure            # re-measure what is recorded and write the table

``repeat`` runs whatever ``edgekd`` Python imports, so two versions can take turns on one record (run the
other one with ``PYTHONPATH=<its checkout>``); ``remeasure`` then times all their choices in the same runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_force, refuse_replacing, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_repeat"
# The budgets search_quality.py recorded for these spaces (results/search_quality.json), on host-cpu-1t, int8.
BUDGETS = {"pruned": 0.699, "resnet": 0.136}


def _version() -> str:
    """The commit of the edgekd being imported (with "+" when its checkout has changes)."""
    import edgekd

    root = Path(edgekd.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "edgekd"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


def _setup(profile_name: str) -> tuple[Any, Any, Any]:
    from edgekd.data import load_data
    from edgekd.profiles import load_profile
    from edgekd.teacher import default_teacher

    data = load_data(None)
    return data, default_teacher(data, progress=False).module, load_profile(profile_name)


def repeat(args: argparse.Namespace) -> None:
    """One search per space with the imported edgekd, appended to the record."""
    from edgekd.errors import BudgetError
    from edgekd.search import SearchConfig, search
    from edgekd.types import Budget

    data, teacher, profile = _setup(args.profile)
    record = _load(args.record)
    label = args.label or _version()
    for space in args.spaces.split(","):
        lines: list[str] = []
        start = time.perf_counter()
        run = {"label": label, "space": space, "budget_ms": BUDGETS[space], "seed": args.seed,
               "candidates": args.candidates, "profile": args.profile}
        try:
            found = search(teacher, data, profile, Budget(latency_ms=BUDGETS[space]),
                           SearchConfig(space=space, proxy="params", candidates=args.candidates, precision="int8",
                                        seed=args.seed), progress=False, log=lines.append)
        except BudgetError as exc:  # a search that found nothing under the budget is a result too
            run.update(seconds=round(time.perf_counter() - start, 1), error=exc.message)
            print(f"{label} {space}: failed: {exc.message}", flush=True)
        else:
            chosen = found.chosen
            run.update(seconds=round(time.perf_counter() - start, 1), spec=chosen.spec.to_dict(),
                       params=chosen.params, search_ms=chosen.latency_ms, predicted_ms=chosen.predicted_ms,
                       measured=found.measured)
            print(f"{label} {space}: {chosen.spec.key()} ({chosen.params} params) read {chosen.latency_ms:.3f} ms "
                  f"in the search", flush=True)
        run["log"] = [line for line in lines if "slower" in line or "again" in line or "varied" in line]
        record["runs"].append(run)
        _save(args.record, record)


def remeasure(args: argparse.Namespace) -> None:
    """Every distinct chosen student of a space, with the reference network, timed in the same rotated
    interleaved runs; each keeps its median p50 over the runs."""
    import tempfile

    import torch

    from edgekd.latency.calibrate import measure_rotated, reference_model
    from edgekd.latency.quick_export import export_for_timing
    from edgekd.search.spaces import resolve_space
    from edgekd.types import StudentSpec

    data, teacher, profile = _setup(args.profile)
    record = _load(args.record)
    calib = data.x_train[:64]
    timed: dict[str, dict[str, float]] = {}
    for space in dict.fromkeys(r["space"] for r in record["runs"]):
        runs = [r for r in record["runs"] if r["space"] == space and "spec" in r]
        specs = {_key(r): StudentSpec.from_dict(r["spec"]) for r in runs}  # each chosen student once, in order
        keys = list(specs)
        family = resolve_space(space, teacher, data.input_shape)
        models = []
        for spec in specs.values():
            torch.manual_seed(runs[0]["seed"])  # as the search builds its candidates
            models.append(family.build(spec.config, data.input_shape, data.num_classes))
        with tempfile.TemporaryDirectory(prefix="edgekd-repeat-") as tmp:
            paths = export_for_timing(models, "int8", calib, Path(tmp))
            ref = reference_model(data.input_shape, data.num_classes, Path(tmp))
            rounds = measure_rotated(paths, profile, ref, args.rounds)
        for i, key in enumerate(keys):
            timed[key] = {"ms": statistics.median(r[i + 1].p50_ms for r in rounds),
                          "units": statistics.median(r[i + 1].p50_ms / r[0].p50_ms for r in rounds)}
        print(f"{space}: re-measured {len(keys)} students, {args.rounds} rounds", flush=True)
    record["remeasured"] = {"date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "profile": args.profile,
                            "students": timed}
    write_results(args.out, record, markdown(record), force=args.force)


def summary(record: dict) -> list[dict]:
    """Per space and label: how many searches, how many distinct students they chose, and the chosen
    students' re-measured latency (median, range, share over the budget)."""
    timed = record["remeasured"]["students"]
    rows = []
    for space in dict.fromkeys(r["space"] for r in record["runs"]):
        for label in dict.fromkeys(r["label"] for r in record["runs"] if r["space"] == space):
            tried = [r for r in record["runs"] if r["space"] == space and r["label"] == label]
            runs = [r for r in tried if "spec" in r]
            budget = tried[0]["budget_ms"]
            ms = [timed[_key(r)]["ms"] for r in runs] or [float("nan")]
            rows.append({
                "space": space, "label": label, "budget_ms": budget, "searches": len(tried),
                "failed": len(tried) - len(runs), "students": len({_key(r) for r in runs}),
                "median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
                "range_ms": max(ms) - min(ms), "over_budget": sum(m > budget for m in ms) / len(ms),
                "params_median": statistics.median(r["params"] for r in runs),
                "search_vs_remeasured": statistics.median([abs(r["search_ms"] / timed[_key(r)]["ms"] - 1)
                                                           for r in runs] or [float("nan")]),
                "seconds_median": statistics.median(r["seconds"] for r in tried)})
    return rows


def markdown(record: dict) -> str:
    meta = record["remeasured"]
    first = record["runs"][0]
    out = [
        "# Search repeatability",
        "",
        f"The same search (proxy `params`, int8, `{first['profile']}`, seed {first['seed']}, {first['candidates']} "
        f"candidates) repeated under each space's recorded budget, the versions taking turns; then every student "
        f"the searches chose re-measured side by side on {meta['date']} ({meta['rounds']} rotated interleaved "
        f"rounds, median p50); over budget: the share of the searches that chose a student whose re-measured "
        f"p50 is over the budget; failed: searches that chose nothing. Rerun: "
        f"`python benchmarks/search_repeat.py` for one version; for two, their `repeat` steps in turns, then "
        f"`remeasure` (the script's docstring).",
        "",
        "| space | budget (ms) | version | searches | failed | distinct students | re-measured ms: median [min, max] "
        "| range | over budget | median params | search's reading vs re-measured (median abs) | search time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary(record):
        out.append(f"| {row['space']} | {row['budget_ms']:g} | {row['label']} | {row['searches']} | {row['failed']} "
                   f"| {row['students']} "
                   f"| {row['median_ms']:.3f} [{row['min_ms']:.3f}, {row['max_ms']:.3f}] | {row['range_ms']:.3f} "
                   f"| {row['over_budget']:.0%} | {row['params_median']:,.0f} | {row['search_vs_remeasured']:.0%} "
                   f"| {row['seconds_median']:.0f} |")
    return "\n".join(out) + "\n"


def _key(run: dict) -> str:
    from edgekd.types import StudentSpec

    return StudentSpec.from_dict(run["spec"]).key()


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def _save(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", nargs="?", choices=("all", "repeat", "remeasure"), default="all")
    parser.add_argument("--spaces", default="pruned,resnet")
    parser.add_argument("--repeats", type=int, default=8, help="searches per space (step 'all')")
    parser.add_argument("--label", default="", help="the record's name for this version (default: its commit)")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--profile", default="host-cpu-1t")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--record", type=Path, default=RESULTS.with_name("search_repeat_runs.json"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_force(parser)
    args = parser.parse_args()
    if args.step in ("all", "remeasure"):
        refuse_replacing(args.out, args.force)
    unknown = set(args.spaces.split(",")) - set(BUDGETS)
    if unknown:
        parser.error(f"no recorded budget for {', '.join(sorted(unknown))}; choose from {', '.join(BUDGETS)}")
    if args.step in ("all", "repeat"):
        if args.step == "all" and args.record.exists():
            parser.error(f"{args.record} holds an earlier record; delete it, or add to it with the 'repeat' step")
        for _ in range(args.repeats if args.step == "all" else 1):
            repeat(args)
    if args.step in ("all", "remeasure"):
        remeasure(args)


if __name__ == "__main__":
    main()
