"""What compress says of a student pruned toward --target-ms once the shipped file is measured: pruning
times the student at one precision, and the file that ships can run far faster than the target it was
pruned for (a slower int8 kernel on the profile ships the fp32 twin), with accuracy given up for nothing."""

from __future__ import annotations

from typing import Any

FAR_BELOW = 0.5  # a shipped p50 under this share of --target-ms means the student was pruned more than needed
OVER = 1.1  # a shipped p50 over this share of --target-ms is past the target, not measurement noise about it


def pruned_on(pruning: dict[str, Any] | None) -> str | None:
    """The profile and batch pruning measured on, in words ("'host-cpu-1t' (batch 1)"), or None for a record
    written before they were kept."""
    if not pruning or not pruning.get("profile"):
        return None
    return f"'{pruning['profile']}' (batch {pruning.get('batch') or 1})"


def pruned_elsewhere(pruning: dict[str, Any] | None, profile: Any) -> str | None:
    """A warning when a student pruned toward --target-ms is validated on another profile than pruning measured
    on (compress --distilled --profile OTHER): its latency there was never measured, and the target may not hold."""
    from edgekd.latency.quick_export import timing_batch

    was = pruned_on(pruning)
    if was is None or profile is None or (pruning["profile"] == profile.name
                                          and pruning.get("profile_digest") in (None, profile.digest())):
        return None
    here = f"'{profile.name}' (batch {timing_batch(profile)})"
    return (f"the student was pruned toward --target-ms {pruning['target_ms']:g} on {was}, and is validated on "
            f"{here}, which pruning never measured: the target may not hold there; distill again with this "
            "--profile to prune for it")


def overshoot_note(report: Any, pruning: dict[str, Any] | None, pruned_for: str,
                   profile: Any = None) -> str | None:
    """A note when the primary artifact of ``report`` measures under half the target it was pruned toward at
    precision ``pruned_for``, or over it by more than noise (the report said "pruned to the target" of a file
    measured 40% over it, with no word); None without pruning, or near the target."""
    if not pruning or pruning.get("target_ms") is None:
        return None
    shipped = report.get(report.primary)
    target = float(pruning["target_ms"])
    if shipped.latency is None:
        return None
    p50, precision = shipped.latency.p50_ms, shipped.artifact.precision
    if p50 > target * OVER:
        return _over_note(shipped.artifact.name, p50, target, precision, pruned_for, pruning, profile)
    if not pruning.get("steps") or p50 >= target * FAR_BELOW:
        return None
    if precision != pruned_for:
        cause = (f"pruning measured the student at {pruned_for} (--precision {pruned_for}), and the {precision} "
                 f"twin ships (see the int8 note)")
    else:
        measured = pruning.get("measured_ms")
        cause = ("the profile measured it slower while pruning"
                 + (f" ({measured:.3f} ms)" if isinstance(measured, (int, float)) else ""))
    fix = (f"search and prune with --precision {precision}, the precision that ships here, or raise --target-ms"
           if precision != pruned_for else "raise --target-ms to keep more channels")
    return (f"{shipped.artifact.name} measures {p50:.3f} ms, under half the --target-ms {target:g} "
            f"it was pruned toward: {cause}; it was pruned more than the target needs, at a cost in accuracy: {fix}")


def _over_note(name: str, p50: float, target: float, precision: str, pruned_for: str,
               pruning: dict[str, Any], profile: Any = None) -> str:
    """The shipped file measures past the target: another precision ships than pruning timed, or the
    profile measured it faster while pruning than now."""
    measured = pruning.get("measured_ms")
    then = f" ({measured:.3f} ms)" if isinstance(measured, (int, float)) else ""
    if pruning.get("reached") is False and precision == pruned_for:  # pruning stopped short, and said so then
        return (f"{name} measures {p50:.3f} ms, over the --target-ms {target:g} it was pruned toward: pruning ended "
                f"at {pruned_for}{then} short of it (see the warning of the distill stage); a lower --target-ms, "
                "more --prune-steps, or a smaller student from the search prunes further")
    toward = "it was pruned toward" if pruning.get("steps") else "it measured under while pruning (nothing was pruned)"
    elsewhere = pruned_elsewhere(pruning, profile)
    if elsewhere is not None:  # pruned for another device or batch: the machine's noise is not the cause
        from edgekd.latency.quick_export import timing_batch

        cause = (f"pruning measured it at {pruned_for}{then} on {pruned_on(pruning)}, and it is validated on "
                 f"'{profile.name}' (batch {timing_batch(profile)})")
        fix = f"distill again with --profile {profile.name} to prune for this profile"
    elif precision != pruned_for:
        cause = (f"pruning measured the student at {pruned_for}{then}, and the {precision} twin ships (see the int8 "
                 "note)")
        fix = f"search and prune with --precision {precision}, the precision that ships here"
    else:
        cause = f"pruning measured it at {precision}{then} on this profile, and it measures slower now"
        fix = ("check the latency on a quiet machine with `edgekd validate`, or lower --target-ms to prune with "
               "a margin")
    return f"{name} measures {p50:.3f} ms, over the --target-ms {target:g} {toward}: {cause}; {fix}"
