"""Must-show figures of the foundation: the full `compress` chain on the embedded digits.

Runs `edgekd compress` as `make demo` does (default teacher, host-cpu-1t, 0.5 ms / 128 KB budget),
then re-measures teacher fp32, student fp32 and student int8 interleaved, in several independent
rounds, and reports medians of the per-round p50 ratios. Writes benchmarks/results/pipeline_digits.{md,json}.

    .venv/bin/python benchmarks/pipeline_digits.py [--rounds 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgekd.latency.measure import measure
from edgekd.pipeline import CompressConfig, compress
from edgekd.profiles import load_profile
from edgekd.report import tool_versions

sys.path.insert(0, str(Path(__file__).parent))
from results_io import add_force, refuse_replacing, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TARGETS = {"accuracy_gap_pt": 1.0, "size_ratio": 10.0, "speedup": 3.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="host-cpu-1t")
    ap.add_argument("--out", default=str(RESULTS / "pipeline_digits"), help="OUT.json and OUT.md are written")
    add_force(ap)
    args = ap.parse_args()
    refuse_replacing(args.out, args.force)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        res = compress(CompressConfig(out=str(out), profile=args.profile, budget_ms=0.5, max_size_kb=128,
                                      seed=args.seed, progress=False), log=print)
        arts = {a["artifact"]["name"]: a for a in res.manifest["artifacts"]}
        names = ["teacher-fp32", "student-fp32", "student-int8"]
        profile = load_profile(args.profile)
        rounds = [measure([out / arts[n]["artifact"]["path"] for n in names], profile) for _ in range(args.rounds)]
    p50 = {n: [r[i].p50_ms for r in rounds] for i, n in enumerate(names)}
    speed = {n: statistics.median(t / s for t, s in zip(p50["teacher-fp32"], p50[n])) for n in names[1:]}
    int8_vs_fp32 = statistics.median(f / q for f, q in zip(p50["student-fp32"], p50["student-int8"]))
    teacher, int8 = arts["teacher-fp32"], arts["student-int8"]
    figures = {
        "teacher_accuracy": teacher["accuracy"],
        "student_fp32_accuracy": arts["student-fp32"]["accuracy"],
        "student_int8_accuracy": int8["accuracy"],
        "accuracy_gap_pt": (teacher["accuracy"] - int8["accuracy"]) * 100,
        "teacher_fp32_bytes": teacher["artifact"]["size_bytes"],
        "student_int8_bytes": int8["artifact"]["size_bytes"],
        "student_fp32_bytes": arts["student-fp32"]["artifact"]["size_bytes"],
        "size_ratio": teacher["artifact"]["size_bytes"] / int8["artifact"]["size_bytes"],
        "speedup_int8_vs_teacher": speed["student-int8"],
        "speedup_fp32_vs_teacher": speed["student-fp32"],
        "int8_vs_fp32_student": int8_vs_fp32,
        "p50_ms_median": {n: statistics.median(v) for n, v in p50.items()},
        "p50_ms_rounds": p50,
        "primary": res.manifest["primary"],
        "student": res.manifest["student"]["spec"],
    }
    checks = {
        "int8 accuracy within 1.0 pt of teacher": figures["accuracy_gap_pt"] <= TARGETS["accuracy_gap_pt"],
        "int8 file >= 10x smaller than teacher fp32": figures["size_ratio"] >= TARGETS["size_ratio"],
        "int8 p50 >= 3x faster than teacher fp32": figures["speedup_int8_vs_teacher"] >= TARGETS["speedup"],
    }
    meta = {"machine": platform.processor() or platform.machine(), "platform": platform.platform(),
            "profile": args.profile, "seed": args.seed, "rounds": args.rounds,
            "measure": profile.measure, "tools": tool_versions(), "seconds": time.perf_counter() - start}
    write_results(args.out, {"figures": figures, "checks": checks, "meta": meta}, _markdown(figures, checks, meta),
                  force=args.force)


def _markdown(f: dict, checks: dict, meta: dict) -> str:
    med = f["p50_ms_median"]
    lines = [
        "## Pipeline on digits (`benchmarks/pipeline_digits.py`)",
        "",
        f"Profile `{meta['profile']}`, seed {meta['seed']}; latency: {meta['rounds']} independent rounds, each "
        f"interleaving the three models ({meta['measure']['repeats']} repeats x {meta['measure']['runs_per_repeat']}"
        " runs); speedups are medians of per-round p50 ratios.",
        "",
        "| model | test accuracy | file size (KB) | p50 (ms, median of rounds) | speedup vs teacher |",
        "|---|---:|---:|---:|---:|",
        f"| teacher fp32 | {f['teacher_accuracy'] * 100:.2f}% | {f['teacher_fp32_bytes'] / 1024:.1f} | "
        f"{med['teacher-fp32']:.3f} | 1.00x |",
        f"| student fp32 | {f['student_fp32_accuracy'] * 100:.2f}% | {f['student_fp32_bytes'] / 1024:.1f} | "
        f"{med['student-fp32']:.3f} | "
        f"{f['speedup_fp32_vs_teacher']:.2f}x |",
        f"| student int8 | {f['student_int8_accuracy'] * 100:.2f}% | {f['student_int8_bytes'] / 1024:.1f} | "
        f"{med['student-int8']:.3f} | {f['speedup_int8_vs_teacher']:.2f}x |",
        "",
        f"Student int8 vs its fp32 twin: {f['int8_vs_fp32_student']:.2f}x; shipped as primary: `{f['primary']}`.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| int8 accuracy within 1.0 pt of teacher | {abs(f['accuracy_gap_pt']):.2f} pt "
        f"{'below' if f['accuracy_gap_pt'] >= 0 else 'above'} teacher | "
        f"{'yes' if checks['int8 accuracy within 1.0 pt of teacher'] else 'NO'} |",
        f"| int8 file >= 10x smaller than teacher fp32 | {f['size_ratio']:.1f}x | "
        f"{'yes' if checks['int8 file >= 10x smaller than teacher fp32'] else 'NO'} |",
        f"| int8 p50 >= 3x faster than teacher fp32 | {f['speedup_int8_vs_teacher']:.2f}x | "
        f"{'yes' if checks['int8 p50 >= 3x faster than teacher fp32'] else 'NO'} |",
        "",
        f"Machine: {meta['platform']}; onnxruntime {meta['tools']['onnxruntime']}, torch {meta['tools']['torch']}; "
        f"{meta['seconds']:.0f} s in all.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
