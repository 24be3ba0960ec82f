"""How close is the search's size estimate (int8 and fp32) to the file that ships?

Samples random students of each space (``pruned`` from the default teacher's architecture) at each
resolution, writes each one's int8 file as compress ships it (onnx-fp32, then the onnx-int8 exporter,
metadata stamped; BatchNorm statistics set as training leaves them, see ``edgekd/search/file_size.py``)
and compares it with ``estimate_int8_bytes`` and with the estimate the search used before (1 byte a
weight, 9 bytes an output channel, 1.4 KB a layer); the fp32 file (a ``--precision fp32`` search's
limit) against ``fp32_bytes``. Reports estimate/file per space: min, median, max and the share within
±5%. No latency is measured: about 6 s a student.

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
from results_io import add_force, refuse_replacing, write_results  # noqa: E402

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


def old_fp32_estimate(model: Any) -> int:
    """The fp32 estimate the search used until 2026-12-04: 4 bytes a parameter, 200 bytes a module, 2 KB."""
    return 4 * sum(p.numel() for p in model.parameters()) + 200 * sum(1 for _ in model.modules()) + 2048


def summarise(ratios: list[float]) -> dict[str, float]:
    r = np.asarray(ratios, dtype=float)
    return {"min": float(r.min()), "median": float(np.median(r)), "max": float(r.max()),
            "within_5pct": float(np.mean(np.abs(r - 1.0) <= 0.05))}


def measure(per_space: int, resolutions: list[int], seed: int) -> list[dict[str, Any]]:
    import torch

    from edgekd.data import load_digits
    from edgekd.models import resnet
    from edgekd.search.file_size import estimate_int8_bytes, fp32_bytes, shipped_bytes
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
                fp32_file = shipped_bytes(model, data, data.x_train[:64], "fp32")
                rows.append({"space": name, "resolution": res, "config": config,
                             "params": int(sum(p.numel() for p in model.parameters())), "file_bytes": file,
                             "estimate": estimate_int8_bytes(model), "old_estimate": parameter_count_estimate(model),
                             "fp32_file_bytes": fp32_file, "fp32_estimate": fp32_bytes(model),
                             "fp32_old_estimate": old_fp32_estimate(model)})
                print(f"{name} {res}px: int8 file {file} B, estimate {rows[-1]['estimate']} B; fp32 file {fp32_file} "
                      f"B, estimate {rows[-1]['fp32_estimate']} B", flush=True)
    return rows


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    for key in sorted({(r["space"], r["resolution"]) for r in rows}, key=lambda k: (SPACES.index(k[0]), k[1])):
        sel = [r for r in rows if (r["space"], r["resolution"]) == key]
        groups[f"{key[0]} {key[1]}px"] = {
            "n": len(sel),
            "estimate": summarise([r["estimate"] / r["file_bytes"] for r in sel]),
            "old_estimate": summarise([r["old_estimate"] / r["file_bytes"] for r in sel]),
            **_fp32(sel),
        }
    overall = {"estimate": summarise([r["estimate"] / r["file_bytes"] for r in rows]),
               "old_estimate": summarise([r["old_estimate"] / r["file_bytes"] for r in rows]), **_fp32(rows)}
    return {"groups": groups, "overall": overall}


def _fp32(rows: list[dict[str, Any]]) -> dict[str, Any]:
    fp32 = [r for r in rows if "fp32_file_bytes" in r]  # older records measured int8 only
    if not fp32:
        return {}
    return {"fp32_estimate": summarise([r["fp32_estimate"] / r["fp32_file_bytes"] for r in fp32]),
            "fp32_old_estimate": summarise([r["fp32_old_estimate"] / r["fp32_file_bytes"] for r in fp32])}


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
    if "fp32_estimate" in o:
        lines += ["", "### fp32 (`fp32_bytes`, the limit of a `--precision fp32` search)", "",
                  "The same students' fp32 files as compress ships them. Estimate / file size; 'before' is the "
                  "estimate the search used until 2026-12-04 (4 bytes a parameter, 200 bytes a module).", "",
                  "| space | n | estimate min | median | max | within ±5% | before: min | median | max | within ±5% |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {name} | {g['n']} | {cells(g['fp32_estimate'])} | {cells(g['fp32_old_estimate'])} |"
                  for name, g in out["groups"].items()]
        lines.append(f"| all | {out['n']} | {cells(o['fp32_estimate'])} | {cells(o['fp32_old_estimate'])} |")
    lines += ["", f"{out['seconds']:.0f} s in all."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-space", type=int, default=12)
    parser.add_argument("--resolutions", default="16,32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "size_estimate"))
    add_force(parser)
    args = parser.parse_args(argv)
    refuse_replacing(args.out, args.force)
    start = time.perf_counter()
    rows = measure(args.per_space, [int(x) for x in args.resolutions.split(",")], args.seed)
    out = {"n": len(rows), "seed": args.seed, **report(rows), "seconds": time.perf_counter() - start, "rows": rows}
    write_results(args.out, out, markdown(out), force=args.force)


if __name__ == "__main__":
    main()
