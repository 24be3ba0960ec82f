"""Is the search-quality ground truth measurable, and does the proxy ranking depend on the recipe?

`search_quality.py` ranks 30 students per space by their accuracy after one short distillation recipe.
On digits that recipe trains every student to within a point or two of the teacher, so the ranking may
be mostly seed noise. This script takes the students recorded in `search_quality.json` and distils
them again with other recipes (fewer epochs, or a fraction of the training images), several seeds
each, and reports for every recipe the spread of accuracies, how well one seed ranks the students as
another does (Kendall tau), and every proxy's tau against the seeds' mean. The recorded recipe is
reported from the recorded accuracies, without training again.

Writes benchmarks/results/search_truth.{md,json}.

    .venv/bin/python benchmarks/search_truth.py [--spaces mbv2,resnet] [--recipes 2@1,15@0.2] [--seeds 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_io import add_force, refuse_replacing, write_results  # noqa: E402
from search_quality import PROXY_NAMES, RESULTS, _distill  # noqa: E402


def parse_recipes(text: str) -> list[tuple[int, float]]:
    """"EPOCHS@FRACTION,..." -> [(epochs, fraction of the training images)]."""
    recipes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        epochs, _, fraction = part.partition("@")
        try:
            recipe = (int(epochs), float(fraction or 1))
        except ValueError:
            raise SystemExit(f"error: recipe '{part}' is not EPOCHS@FRACTION; write e.g. 2@1 or 15@0.2") from None
        if recipe[0] < 1 or not 0 < recipe[1] <= 1:
            raise SystemExit(f"error: recipe '{part}' needs epochs >= 1 and a fraction in (0, 1]; write e.g. 15@0.2")
        recipes.append(recipe)
    return recipes


def subset(data: Any, fraction: float, seed: int = 1) -> Any:
    """``data`` with a random ``fraction`` of its training images (validation and test untouched)."""
    if fraction >= 1:
        return data
    keep = np.random.default_rng(seed).permutation(len(data.y_train))[:max(1, int(fraction * len(data.y_train)))]
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])


def summary(accuracies: list[list[float]], scores: list[dict[str, float]]) -> dict:
    """Per student a list of seed accuracies, and its proxy scores: the spread of the seeds' mean, tau
    between every pair of seeds, and every proxy's tau against the mean."""
    from scipy.stats import kendalltau

    mean = [statistics.mean(a) for a in accuracies]
    seeds = len(accuracies[0])
    pairs = [float(kendalltau([a[i] for a in accuracies], [a[j] for a in accuracies]).statistic)
             for i, j in itertools.combinations(range(seeds), 2)]
    return {"accuracy_min": min(mean), "accuracy_max": max(mean), "accuracy_std": statistics.pstdev(mean),
            "seed_tau": pairs, "seed_tau_mean": statistics.mean(pairs) if pairs else None,
            "tau": {p: float(kendalltau([s[p] for s in scores], mean).statistic) for p in PROXY_NAMES}}


def _markdown(out: dict) -> str:
    # the proxies the recorded run scored: a results file written before a proxy was added still renders
    names = [p for p in PROXY_NAMES if all(p in row["summary"]["tau"] for row in out["rows"])]
    lines = ["# Search-quality ground truth: does it repeat, and under which recipe?", "",
             f"The students recorded in `{out['source']}` ({out['source_run']}), distilled again with other recipes "
             f"(KD, T=4; a recipe is epochs @ the fraction of training images), {out['seeds']} seeds each; "
             "accuracy on the full test split. 'recorded' is the benchmark's own recipe, from its recorded "
             f"accuracies. Rerun: `{out['command']}`.", "",
             "| space | recipe | accuracy (mean over seeds), min-max | seed vs seed tau | "
             + " | ".join(names) + " |", "|---|---|---|---|" + "---|" * len(names)]
    for row in out["rows"]:
        s = row["summary"]
        seed = "n/a" if s["seed_tau_mean"] is None else f"{s['seed_tau_mean']:+.2f}"
        lines.append(f"| {row['space']} | {row['recipe']} | {s['accuracy_min'] * 100:.1f}-{s['accuracy_max'] * 100:.1f}"
                     f" | {seed} | " + " | ".join(f"{s['tau'][p]:+.2f}" for p in names) + " |")
    return "\n".join(lines + [""])


def main() -> None:
    from edgekd.data import load_data
    from edgekd.search.spaces import resolve_space
    from edgekd.teacher import default_teacher
    from edgekd.types import StudentSpec

    ap = argparse.ArgumentParser()
    ap.add_argument("--spaces", default="mbv2,resnet")
    ap.add_argument("--recipes", default="2@1,15@0.2", help="EPOCHS@FRACTION of the training images, comma-separated")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--source", default=str(RESULTS / "search_quality.json"))
    ap.add_argument("--out", default=str(RESULTS / "search_truth"))
    add_force(ap)
    args = ap.parse_args()
    refuse_replacing(args.out, args.force)
    recipes = parse_recipes(args.recipes)
    if args.seeds < 1:
        raise SystemExit(f"error: --seeds must be at least 1, got {args.seeds}; pass 2 to see seed-vs-seed tau")
    source = Path(args.source)
    if not source.is_file():
        raise SystemExit(f"error: {source} not found; run benchmarks/search_quality.py first or pass --source")
    recorded = json.loads(source.read_text())
    studies = {s["space"]: s for s in recorded["spaces"]}
    spaces = [n.strip() for n in args.spaces.split(",") if n.strip()]
    missing = [n for n in spaces if n not in studies]
    if missing:
        raise SystemExit(f"error: {source} has no students of {', '.join(missing)}; "
                         f"choose from {', '.join(studies)}")
    import torch

    torch.set_num_threads(1)  # tiny models: one thread per process is fastest on shared cores
    start = time.perf_counter()
    data = load_data(None, seed=0)
    teacher = default_teacher(data, progress=False).module
    rows = []
    for name in spaces:
        study = studies[name]
        scores = [c["scores"] for c in study["candidates"]]
        rows.append({"space": name, "recipe": f"recorded ({recorded['epochs']}@1)",
                     "summary": summary([c["accuracies"] for c in study["candidates"]], scores)})
        space = resolve_space(name, teacher, data.input_shape)
        for epochs, fraction in recipes:
            train = subset(data, fraction)
            accs = [[_distill(space, StudentSpec.from_dict(c["spec"]), train, teacher, epochs, seed)[0]
                     for seed in range(args.seeds)] for c in study["candidates"]]
            rows.append({"space": name, "recipe": f"{epochs}@{fraction:g}", "accuracies": accs,
                         "summary": summary(accs, scores)})
            print(f"[{time.perf_counter() - start:7.1f}s] {name} {epochs}@{fraction:g}: "
                  f"seed tau {rows[-1]['summary']['seed_tau_mean']:+.2f}", flush=True)
    out = {"source": source.name, "source_run": f"{recorded['per_space']} students per space", "seeds": args.seeds,
           "command": "make bench-search-truth", "rows": rows, "seconds": time.perf_counter() - start}
    write_results(args.out, out, _markdown(out), force=args.force)


if __name__ == "__main__":
    main()
