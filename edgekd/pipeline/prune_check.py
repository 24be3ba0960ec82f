"""What compress says of a student pruned toward --target-ms once the shipped file is measured: pruning
times the student at one precision, and the file that ships can run far faster than the target it was
pruned for (a slower int8 kernel on the profile ships the fp32 twin), with accuracy given up for nothing."""

from __future__ import annotations

from typing import Any

FAR_BELOW = 0.5  # a shipped p50 under this share of --target-ms means the student was pruned more than needed


def overshoot_note(report: Any, pruning: dict[str, Any] | None, pruned_for: str) -> str | None:
    """A note when the primary artifact of ``report`` measures under half the target it was pruned toward at
    precision ``pruned_for``; None when nothing was pruned or it is near its target."""
    if not pruning or not pruning.get("steps"):
        return None
    shipped = report.get(report.primary)
    target = float(pruning["target_ms"])
    if shipped.latency is None or shipped.latency.p50_ms >= target * FAR_BELOW:
        return None
    precision = shipped.artifact.precision
    if precision != pruned_for:
        cause = (f"pruning measured the student at {pruned_for} (--precision {pruned_for}), and the {precision} "
                 f"twin ships (see the int8 note)")
    else:
        measured = pruning.get("measured_ms")
        cause = ("the profile measured it slower while pruning"
                 + (f" ({measured:.3f} ms)" if isinstance(measured, (int, float)) else ""))
    fix = (f"search and prune with --precision {precision}, the precision that ships here, or raise --target-ms"
           if precision != pruned_for else "raise --target-ms to keep more channels")
    return (f"{shipped.artifact.name} measures {shipped.latency.p50_ms:.3f} ms, under half the --target-ms {target:g} "
            f"it was pruned toward: {cause}; it was pruned more than the target needs, at a cost in accuracy: {fix}")
