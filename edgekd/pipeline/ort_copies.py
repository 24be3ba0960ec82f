"""The students' ORT-format copies (``--ort``): made, checked and timed beside their .onnx, and the
verdicts and notes they add to the validation report."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgekd.run_inputs import Log


def ort_copies(report: Any, staging: Path, profile: Any, data: Any, rounds: int, log: Log) -> dict[str, Any]:
    """Each student's ORT-format copy, checked against its .onnx on the test images and timed beside it on
    the profile (``edgekd.ort_format``)."""
    from edgekd.ort_format import loads_text, platform_for, to_ort, with_latency

    target = platform_for(profile)
    students = [r.artifact for r in report.reports if r.artifact.role == "student"]
    orts = {a.name: to_ort(staging / a.path, target, data.x_test, a.precision) for a in students}
    log(f"export: ORT format for onnxruntime mobile and reduced builds ({target}): "
        + ", ".join(f"{o.path} ({o.top1_agreement:.2%} top-1 agreement with its .onnx; {loads_text(o.format_version)})"
                    for o in orts.values()))
    orts = with_latency(orts, staging, profile, rounds)
    log(f"validate: ORT-format copies timed beside their .onnx on '{profile.name}' ({rounds} interleaved runs): "
        + ", ".join(f"{o.path} p50 {o.p50_ms:.3f} ms, {o.vs_onnx:.2f}x its .onnx's" for o in orts.values()))
    return {name: dataclasses.replace(o, over_budget=over_budget(o, report.budget)) for name, o in orts.items()}


def over_budget(copy: Any, budget: Any) -> tuple[str, ...]:
    """The limits of ``budget`` the copy misses ("size", "latency"), held as its .onnx is (its p50 against
    the latency budget, its bytes against the size budget)."""
    slow = budget.latency_ms is not None and copy.p50_ms is not None and copy.p50_ms > budget.latency_ms
    large = budget.max_size_kb is not None and copy.size_bytes > budget.max_size_kb * 1024
    return tuple(what for what, missed in (("size", large), ("latency", slow)) if missed)


ORT_SLOWER_NOTED = 1.10  # an ORT copy this much slower than its .onnx is said, within the budget or not


def with_ort_verdicts(report: Any, orts: dict[str, Any], ships: str | None = None) -> Any:
    """``report`` with an ``ort`` verdict on each student that has an ORT copy: a copy that computes other
    outputs than the file validated, or that misses the latency or size budget its .onnx is held to (the copy
    is what a mobile app ships), fails its artifact, and the run when that one ships. A copy much slower than
    its .onnx is said either way. ``ships``: the precision the search checked the budget for (``ship_decision``)."""
    if not orts:
        return report
    budget_ms, max_kb = report.budget.latency_ms, report.budget.max_size_kb
    missed = {name: over_budget(o, report.budget) for name, o in orts.items()}
    slow = {name for name, said in missed.items() if "latency" in said}
    large = {name for name, said in missed.items() if "size" in said}
    reports = tuple(dataclasses.replace(r, verdicts={**r.verdicts, "ort": orts[r.artifact.name].agrees
                                                     and not missed[r.artifact.name]})
                    if r.artifact.name in orts else r for r in report.reports)
    notes = [f"{orts[name].path} is {orts[name].size_bytes / 1024:.1f} KB, over the {max_kb:g} KB budget its .onnx "
             "is held to (an ORT-format file stores its weights as converted), so its artifact fails: drop --ort to "
             "ship the .onnx, or raise --max-size-kb"
             for name in sorted(large)]
    for name, o in orts.items():
        if not o.agrees:
            notes.append(f"{o.path} does not compute what {name}.onnx does on the test images (top-1 agreement "
                         f"{o.top1_agreement:.2%}, largest difference {o.max_abs_diff:.3g}): ship the .onnx file")
        if o.vs_onnx is None or (name not in slow and o.vs_onnx < ORT_SLOWER_NOTED):
            continue
        why = (f"{o.path} takes {o.p50_ms:.3f} ms on '{report.profile}', over the {budget_ms:g} ms budget"
               if name in slow else f"{o.path} is slower than {name}.onnx on '{report.profile}'")
        notes.append(f"{why} ({o.vs_onnx:.2f}x its .onnx's p50, measured side by side): an ORT-format file keeps "
                     f"the optimisations of its conversion ({o.platform}), where onnxruntime gives the .onnx this "
                     "device's at load; ship the .onnx to a device with the full onnxruntime")
    # The ship decision was made on the .onnx verdicts: made again, an int8 student within budget ships where
    # the fp32 twin chosen before fails its ORT copy's checks.
    from edgekd.validate import ship_decision

    _, before = ship_decision(report.reports, report.int8_ratio, report.rounds, report.budget, ships)
    primary, decided = ship_decision(reports, report.int8_ratio, report.rounds, report.budget, ships)
    kept = [n for n in report.notes if n not in before]
    return dataclasses.replace(report, reports=reports, primary=primary, notes=(*decided, *kept, *notes))

