"""Gate stability: an unchanged model gated against its own baseline manifest must never fail, and a
model made ~30% slower must fail every time (±10% latency tolerance, noise-aware gate).

Writes benchmarks/results/gate_stability.{md,json}.

    .venv/bin/python benchmarks/gate_stability.py [--gates 10] [--profile host-cpu-1t]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _conv_stack(path: Path, layers: int) -> Path:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[m for i in range(layers) for m in (
        torch.nn.Conv2d(1 if i == 0 else 32, 32, 3, padding=1), torch.nn.ReLU())])
    torch.onnx.export(model.eval(), (torch.zeros(1, 1, 32, 32),), str(path), dynamo=False, input_names=["input"])
    return path


def _baseline_manifest(model: Path, profile_name: str) -> Path:
    from edgekd.profiles import load_profile
    from edgekd.report import build_manifest
    from edgekd.types import Budget
    from edgekd.validate import artifact_from_file, validate, with_paths_relative

    profile = load_profile(profile_name)
    report = validate([artifact_from_file(model, role="student")], profile, Budget())
    manifest = build_manifest(with_paths_relative(report, model.parent), profile.to_dict(), {})
    path = model.parent / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


def main() -> None:
    from edgekd.gate import GateConfig, run_gate
    from edgekd.latency.measure import measure
    from edgekd.profiles import load_profile
    from edgekd.report import tool_versions

    ap = argparse.ArgumentParser()
    ap.add_argument("--gates", type=int, default=10)
    ap.add_argument("--profile", default="host-cpu-1t")
    ap.add_argument("--tolerance", type=float, default=0.10)
    args = ap.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base_dir, slow_dir = Path(tmp) / "base", Path(tmp) / "slow"
        base_dir.mkdir()
        slow_dir.mkdir()
        base = _conv_stack(base_dir / "model.onnx", 10)
        slow = _conv_stack(slow_dir / "model.onnx", 13)  # 30% more convolutions
        manifest = _baseline_manifest(base, args.profile)
        a, b = measure([base, slow], load_profile(args.profile))
        true_ratio = b.p50_ms / a.p50_ms
        config = GateConfig(baseline=str(manifest), latency_tolerance=args.tolerance, profile=args.profile)
        unchanged = [run_gate(str(base), config) for _ in range(args.gates)]
        slower = [run_gate(str(slow), config) for _ in range(args.gates)]
    ratios = lambda results: [next(c.measured for c in r.checks if c.name == "regression") for r in results]  # noqa: E731
    out = {
        "gates": args.gates, "tolerance": args.tolerance, "profile": args.profile,
        "slow_model_ratio_measured": true_ratio,
        "unchanged_false_failures": sum(not r.passed for r in unchanged),
        "unchanged_ratios": ratios(unchanged),
        "slower_detected": sum(not r.passed for r in slower),
        "slower_ratios": ratios(slower),
        "platform": platform.platform(), "tools": tool_versions(), "seconds": time.perf_counter() - start,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gate_stability.json").write_text(json.dumps(out, indent=2) + "\n")
    md = "\n".join([
        "## Gate stability (`benchmarks/gate_stability.py`)", "",
        f"{args.gates} gates each, profile `{args.profile}`, latency tolerance ±{args.tolerance:.0%}, 3 rounds per "
        "gate, baseline re-measured interleaved with the candidate.", "",
        "| case | failures | gate's measured ratio to baseline (min-max) |", "|---|---:|---|",
        f"| unchanged model vs its own baseline manifest | {out['unchanged_false_failures']}/{args.gates} | "
        f"{min(out['unchanged_ratios']):.3f}-{max(out['unchanged_ratios']):.3f} |",
        f"| model with 30% more convolutions (measured {true_ratio:.2f}x slower) | "
        f"{out['slower_detected']}/{args.gates} | {min(out['slower_ratios']):.3f}-{max(out['slower_ratios']):.3f} |",
        "", f"Targets: 0 false failures; every slower gate fails. Took {out['seconds']:.0f} s.", ""])
    (RESULTS / "gate_stability.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
