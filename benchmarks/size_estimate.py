"""How close is the search's int8 size estimate to the file that ships?

Samples random students of each space (``pruned`` from the default teacher's architecture) at each
resolution, writes each one's int8 file as compress ships it (onnx-fp32, then the onnx-int8 exporter,
metadata stamped; BatchNorm statistics set as training leaves them, see ``edgekd/search/file_size.py``)
and compares it with ``estimate_int8_bytes`` and with the estimate the search used before (1 byte a
weight, 9 bytes an output channel, 1.4 KB a layer). Reports estimate/file per space: min, median, max
and the share within ±5%. No latency is measured: about 3 s a student.

Writes benchmarks/results/size_estimate.{md,json}.

    .venv/bin/python benchmarks/size_estimate.py [--per-space 12] [--resolutions 16,32] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_io import write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SPACES = ("mbv2", "resnet", "pruned")


def parameter_count_estimate(model: Any) -> int:
    """The estimate the search used until 2026-12-04: weights, 9 bytes an output channel, 1.4 KB a layer."""
    import torch

    total = 2048
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            total += module.weight.numel() + module.weight.shape[0] * 9 + 1400
    return total


def summarise(ratios: list[float]) -> dict[str, float]:
    r = np.asarray(ratios, dtype=float)
    return {"min": float(r.min()), "median": float(np.median(r)), "max": float(r.max()),
            "within_5pct": float(np.mean(np.abs(r - 1.0) <= 0.05))}


def measure(per_space: int, resolutions: list[int], seed: int) -> list[dict[str, Any]]:
    import torch

    from edgekd.data import load_digits
    from edgekd.models import resnet
    from edgekd.search.file_size import estimate_int8_bytes, shipped_bytes
    from edgekd.search.spaces import resolve_space
    from edgekd.teacher import TeacherRecipe

    rows = []
    rng = np.random.default_rng(seed)
    for res in resolutions:
        data = load_digits(resolution=res)
        recipe = TeacherRecipe()
        teacher = resnet(data.input_shape[0], data.num_classes, recipe.stem, recipe.widths, recipe.depths).eval()
        for name in SPACES:
            space = resolve_space(name, teacher, data.input_shape)
            for _ in range(per_space):
                config = space.sample(rng)
                torch.manual_seed(0)
                model = space.build(config, data.input_shape, data.num_classes).eval()
                file = shipped_bytes(model, data, data.x_train[:64], "int8")
                rows.append({"space": name, "resolution": res, "config": config,
                             "params": int(sum(p.numel() for p in model.parameters())), "file_bytes": file,
                             "estimate": estimate_int8_bytes(model), "old_estimate": parameter_count_estimate(model)})
                print(f"{name} {res}px: file {file} B, estimate {rows[-1]['estimate']} B", flush=True)
    return rows


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    for key in sorted({(r["space"], r["resolution"]) for r in rows}, key=lambda k: (SPACES.index(k[0]), k[1])):
        sel = [r for r in rows if (r["space"], r["resolution"]) == key]
        groups[f"{key[0]} {key[1]}px"] = {
            "n": len(sel),
            "estimate": summarise([r["estimate"] / r["file_bytes"] for r in sel]),
            "old_estimate": summarise([r["old_estimate"] / r["file_bytes"] for r in sel]),
        }
    overall = {"estimate": summarise([r["estimate"] / r["file_bytes"] for r in rows]),
               "old_estimate": summarise([r["old_estimate"] / r["file_bytes"] for r in rows])}
    return {"groups": groups, "overall": overall}


def markdown(out: dict[str, Any]) -> str:
    def cells(s: dict[str, float]) -> str:
        return f"{s['min']:.3f} | {s['median']:.3f} | {s['max']:.3f} | {s['within_5pct'] * 100:.0f}%"

    lines = ["## Search's int8 size estimate vs the file that ships (`benchmarks/size_estimate.py`)", "",
             f"{out['n']} random students (seed {out['seed']}), each written as compress ships its int8 file. "
             "Estimate / file size: min | median | max | share within ±5%. 'before' is the parameter-count "
             "estimate the search used until 2026-12-04.", "",
             "| space | n | estimate min | median | max | within ±5% | before: min | median | max | within ±5% |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, g in out["groups"].items():
        lines.append(f"| {name} | {g['n']} | {cells(g['estimate'])} | {cells(g['old_estimate'])} |")
    o = out["overall"]
    lines.append(f"| all | {out['n']} | {cells(o['estimate'])} | {cells(o['old_estimate'])} |")
    lines += ["", f"{out['seconds']:.0f} s in all."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-space", type=int, default=12)
    parser.add_argument("--resolutions", default="16,32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "size_estimate"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = measure(args.per_space, [int(x) for x in args.resolutions.split(",")], args.seed)
    out = {"n": len(rows), "seed": args.seed, **report(rows), "seconds": time.perf_counter() - start, "rows": rows}
    write_results(args.out, out, markdown(out))


if __name__ == "__main__":
    main()
