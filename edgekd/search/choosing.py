"""The search's second half: measure the ranking's head on the profile, beside the reference network, and
choose the best-scored candidate within both limits; measurements correct the predictions they contradict,
and a budget no candidate meets is said with the fastest one's measurement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.data import Dataset
from edgekd.errors import BudgetError, api_log
from edgekd.profiles import DeviceProfile, profile_arg
from edgekd.search.file_size import SizeCheck, ruled_out
from edgekd.search.latency_model import TABLE_SOURCE
from edgekd.search.ruler import Ruler
from edgekd.types import Budget, Candidate, StudentSpec
from edgekd.types.search import (  # noqa: F401  (SLACK: this module's API, as before)
    SLACK,
    predicted_within,
    slower_than_predicted,
)

if TYPE_CHECKING:
    from edgekd.search.search import SearchConfig

# Measured candidates of a space needed before their measured/predicted ratio corrects its other predictions.
SCALE_AFTER = 3


def to_measure(scored: list[Candidate], budget: Budget, precision: str) -> list[Candidate]:
    """The candidates predicted within budget; when none is, the fastest few small enough (the fastest and
    the ``FASTEST_TRIED`` after it), so that measurements rather than the prediction decide (and say by how
    much the budget is missed). Those come unscored, so nothing but their speed can choose among them."""
    fits = [c for c in scored if np.isfinite(c.score)]
    if fits:
        return fits
    small = [c for c in scored if not ruled_out(c.size_bytes, budget.max_bytes)]
    if not small:
        smallest = min(scored, key=lambda c: c.size_bytes)
        raise BudgetError(f"no candidate fits --max-size-kb {budget.max_size_kb:g}: the smallest needs about "
                          f"{smallest.size_bytes / 1024:.1f} KB ({precision})",
                          f"raise --max-size-kb to at least {smallest.size_bytes / 1024:.1f}")
    # Predictions clamped at a fit's floor tie: the smaller network is the faster-looking, whatever order
    # the evolution met them in.
    return sorted(small, key=lambda c: (c.predicted_ms, c.params))[:1 + FASTEST_TRIED]


NEAR_MISS = 1.25  # a candidate measured this far over the budget may have met a busy stretch: measured again
FASTEST_TRIED = 3  # more fastest-looking candidates measured before a budget is declared out of reach


def measure_and_choose(ranked: list[Candidate], data: Dataset, profile: DeviceProfile, budget: Budget,
                       config: SearchConfig, spaces: dict[str, Any], latency: dict[str, Any],
                       calib: np.ndarray, sizes: SizeCheck, log: Any = None, ruler: Ruler | None = None,
                       spare: Sequence[Candidate] = ()
                       ) -> tuple[list[Candidate], list[Candidate], Candidate, dict[str, float]]:
    """Measure the fastest-looking candidate, then the ranking's head in rounds, interleaved within a round,
    until the best-scored one within both limits cannot be beaten by a candidate not measured yet.
    Candidates whose space measured slower than predicted are judged by the corrected prediction, so rounds
    are not spent on the ones that will miss the budget. ``spare`` holds the other scored candidates (those
    predicted over the budget): when the fastest-looking one measures over it, the next fastest-looking are
    measured beside it from all of them, since its own prediction has just been proved wrong. Returns
    (measured, written too big without being measured, chosen, the per-space correction the rest were judged
    by: the largest ``latency_scale`` of a round, since the queue a round filters stays filtered; {} when no
    round ran)."""
    log = api_log(log)

    def measure(cands: list[Candidate]) -> list[Candidate]:
        return _measure(cands, data, config, spaces, latency, profile, calib, ruler)

    # Predictions tie where a fit's floor clamps them, small networks all: among equals the smallest is the
    # fastest-looking, not the best-scored (under `params`, the largest).
    def speed(c: Candidate) -> tuple[float, int, float]:
        return (c.predicted_ms, c.params, -c.score)

    by_speed = sorted(ranked, key=speed)
    fastest = by_speed[0]
    done = measure([fastest])
    if budget.latency_ms is not None and done[0].latency_ms > budget.latency_ms:
        # One disturbed measurement on a shared machine must not fail the whole search, nor one prediction that
        # ranked the wrong network fastest: it is measured again beside the next fastest-looking ones, from
        # every candidate small enough (a ranking of one has no other).
        keys = {c.spec.key() for c in by_speed}
        extra = {c.spec.key(): c for c in spare if c.spec.key() not in keys and sizes.may_fit(c)}
        by_speed = by_speed + sorted(extra.values(), key=speed)
        others = by_speed[1:1 + FASTEST_TRIED]
        log(f"search: the fastest-looking candidate measured {done[0].latency_ms:.3f} ms, over --budget-ms "
            f"{budget.latency_ms:g}; measuring it again beside the next {len(others)}")
        again = measure([fastest, *others])
        done = [min([done[0], *again], key=lambda c: c.latency_ms)]
        fastest = next(c for c in by_speed if c.spec.key() == done[0].spec.key())
    if budget.latency_ms is not None and done[0].latency_ms > budget.latency_ms:
        raise BudgetError(
            f"no candidate can meet --budget-ms {budget.latency_ms:g} on '{profile.name}': the fastest "
            f"candidate measured {done[0].latency_ms:.3f} ms ({config.precision})",
            f"raise --budget-ms to at least {done[0].latency_ms * 1.1:.3f} or choose a faster profile")
    # Unscored candidates (all of them, when none was predicted within budget) were there to find the fastest,
    # which they did: the rounds would only time them again.
    queue = [c for c in ranked if c.spec.key() != fastest.spec.key() and np.isfinite(c.score)]
    # The fastest one is the choice until a better-scored one is measured within the limits; a ranking that
    # holds nothing else (every other candidate predicted over the budget) ends with it.
    done, chosen = _choose(done, budget, sizes)
    scale: dict[str, float] = {}
    judged: dict[str, float] = {}  # per space, the largest correction a round ruled candidates out by
    for _ in range(config.rounds):
        batch, queue = queue[:config.measure_top], queue[config.measure_top:]
        if not batch:
            break
        done, chosen = _choose(done + measure(batch), budget, sizes)
        # a space whose files came out larger than estimated, or whose candidates measured slower than
        # predicted, rules out more of the rest (never fewer)
        scale = latency_scale(done)
        judged = {name: max(r, judged.get(name, r)) for name, r in {**judged, **scale}.items()}
        queue = [c for c in queue if sizes.may_fit(c) and _may_meet(c, budget, scale)]
        if chosen is not None and (not queue or chosen.score >= queue[0].score):
            break
    if chosen is not None and budget.latency_ms is not None:
        done, chosen = _near_misses_again(done, chosen, budget, sizes, config.measure_top, measure, log)
    slow = slower_than_predicted(scale)
    if slow and budget.latency_ms is not None:
        log("search: " + "; ".join(f"'{n}' candidates measured {(r - 1) * 100:.0f}% slower than predicted (median)"
                                   for n, r in slow.items())
            + ", so the rest were judged by the corrected prediction")
    if chosen is not None and chosen.spec.key() == fastest.spec.key() and budget.latency_ms is not None:
        missed = [c for c in done if c.score > chosen.score and c.latency_ms is not None
                  and c.latency_ms > budget.latency_ms]
        if missed:
            log(_fell_back(missed, budget, profile, latency, spaces, data))
    too_big: list[Candidate] = []
    if chosen is None:
        done, chosen = _smallest_try(queue, sizes, too_big, measure, done, budget)
    done, chosen = _confirmed(done, chosen, budget, sizes)
    if chosen is None:
        raise _neither(done, too_big, budget, config.precision, profile, sizes)
    return done, too_big, chosen, judged


def _near_misses_again(done: list[Candidate], chosen: Candidate, budget: Budget, sizes: SizeCheck, top: int,
                       measure: Any, log: Any) -> tuple[list[Candidate], Candidate | None]:
    """Better-scored candidates that missed the budget by less than NEAR_MISS are measured once more, with
    the chosen one beside them, and each keeps its faster reading: a busy stretch of a shared machine only
    ever slows a run, and one such reading would otherwise hand the choice to a smaller student."""
    limit = budget.latency_ms * NEAR_MISS
    near = [c for c in sorted(done, key=lambda c: c.score, reverse=True)
            if c.score > chosen.score and c.latency_ms is not None and budget.latency_ms < c.latency_ms <= limit
            and sizes.may_fit(c)][:top]
    if not near:
        return done, chosen
    log(f"search: {len(near)} better-ranked candidate(s) measured within {(NEAR_MISS - 1) * 100:.0f}% over "
        f"--budget-ms {budget.latency_ms:g}; measuring them again")
    again = {c.spec.key(): c for c in measure([*near, chosen])}
    done = [min(c, again[c.spec.key()], key=lambda m: m.latency_ms) if c.spec.key() in again else c for c in done]
    return _choose(done, budget, sizes)


def _fell_back(missed: list[Candidate], budget: Budget, profile: DeviceProfile, latency: dict[str, Any],
               spaces: dict[str, Any], data: Dataset) -> str:
    """The warning for a search that chose its fastest candidate because the better-ranked ones it measured
    (``missed``) missed the budget: the latency model mispredicts this ranking's favourites, and the choice
    is the fastest student rather than the best one. A calibrated table predicts far better than a fit."""
    worst = max((c.latency_ms / c.predicted_ms for c in missed if c.predicted_ms), default=1.0)
    fitted = sorted(n for n, model in latency.items()
                    if model.source != TABLE_SOURCE and hasattr(spaces.get(n), "all_blocks"))
    c, h, w = data.input_shape
    hint = (f"; calibrate a latency table so that predictions hold: `edgekd profiles calibrate {profile_arg(profile)} "
            f"--space {fitted[0]} --input-shape {c},{h},{w} --classes {data.num_classes}`" if fitted else "")
    return (f"warning: search: none of the {len(missed)} better-ranked candidates it measured met --budget-ms "
            f"{budget.latency_ms:g} (measured up to {worst:.1f}x their prediction), so it chose its fastest "
            f"candidate, which may be far from the best student under the budget{hint}")


def latency_scale(measured: list[Candidate]) -> dict[str, float]:
    """Per space with ``SCALE_AFTER`` or more measured candidates, the median of measured / predicted
    latency, at least 1: what a stale reference measurement or a latency model's bias on the ranking's
    favourites (deep networks with many small layers) costs. Only ever rules candidates out; one predicted
    over the budget was never scored, so a space that measures faster admits nothing new."""
    ratios: dict[str, list[float]] = {}
    for c in measured:
        if c.latency_ms is not None and c.predicted_ms:
            ratios.setdefault(c.spec.space, []).append(c.latency_ms / c.predicted_ms)
    return {name: max(1.0, float(np.median(r))) for name, r in ratios.items() if len(r) >= SCALE_AFTER}


def _may_meet(cand: Candidate, budget: Budget, scale: dict[str, float]) -> bool:
    return (budget.latency_ms is None or cand.predicted_ms is None
            or predicted_within(cand.predicted_ms, budget.latency_ms, scale.get(cand.spec.space, 1.0)))


def _choose(done: list[Candidate], budget: Budget, sizes: SizeCheck) -> tuple[list[Candidate], Candidate | None]:
    """The best-scored measured candidate within both limits, with ``done`` as its files left it. Files are
    written best-first and only near the limit, so a search writes the one or two it chooses between, not
    one for every candidate it times (and the final choice's, ``_confirmed``)."""
    done = list(done)
    for i in sorted(range(len(done)), key=lambda i: done[i].score, reverse=True):
        cand = done[i]
        too_slow = cand.latency_ms is None or (budget.latency_ms is not None and cand.latency_ms > budget.latency_ms)
        if too_slow or not sizes.may_fit(cand):
            continue
        done[i] = sizes.check(cand)
        if sizes.fits(done[i]):
            return done, done[i]
    return done, None


def _confirmed(done: list[Candidate], chosen: Candidate | None, budget: Budget,
               sizes: SizeCheck) -> tuple[list[Candidate], Candidate | None]:
    """The choice with its own file written, when only its estimate said it fits the size limit: an
    estimate can be far off for a teacher's own layers. A file over the limit passes the choice to the
    next best candidate, whose file is written in turn."""
    while chosen is not None and sizes.limit is not None and chosen.file_bytes is None:
        i = next(i for i, c in enumerate(done) if c.spec.key() == chosen.spec.key())
        done[i] = sizes.check(chosen, confirm=True)
        if sizes.fits(done[i]):
            return done, done[i]
        done, chosen = _choose(done, budget, sizes)
    return done, chosen


def _smallest_try(queue: list[Candidate], sizes: SizeCheck, too_big: list[Candidate], measure: Any,
                  done: list[Candidate], budget: Budget) -> tuple[list[Candidate], Candidate | None]:
    """When the ranking's head left nothing within both limits (the fastest candidate's file over the size
    limit, the rest too slow), the smallest candidate left is the last one worth measuring."""
    if sizes.limit is None or not queue:
        return done, None
    cand = sizes.check(min(queue, key=sizes.corrected))
    if not sizes.fits(cand):
        too_big.append(cand)
        return done, None
    return _choose(done + measure([cand]), budget, sizes)


def _neither(done: list[Candidate], too_big: list[Candidate], budget: Budget, precision: str,
             profile: DeviceProfile, sizes: SizeCheck) -> BudgetError:
    """No measured candidate meets both limits (the fastest one meets the latency budget, so its file broke
    the size limit, or is expected to): say which limit the search could not meet, and by how much."""
    limit_kb = budget.max_size_kb or 0.0
    fitting = [c for c in done if sizes.may_fit(c)]
    if not fitting:
        written = [c for c in (*done, *too_big) if c.file_bytes is not None]
        if written:
            smallest = min(written, key=lambda c: c.shipped_bytes)
            copy = " (the larger of its .onnx and ORT-format copy)" if sizes.ort else ""
            kb, said = smallest.shipped_bytes / 1024, f"the smallest {precision} file{copy} the search wrote is"
        else:
            smallest = min(done, key=sizes.corrected)
            kb, said = sizes.corrected(smallest) / 1024, "the smallest measured needs about"
        return BudgetError(f"no candidate fits --max-size-kb {limit_kb:g}: {said} {kb:.1f} KB (estimated "
                           f"{smallest.size_bytes / 1024:.1f} KB)", f"raise --max-size-kb to at least {kb:.1f}")
    quickest = min(fitting, key=lambda c: c.latency_ms)  # type: ignore[arg-type, return-value]
    return BudgetError(f"no candidate meets both --budget-ms {budget.latency_ms:g} and --max-size-kb {limit_kb:g} "
                       f"on '{profile.name}': the fastest one within the size limit measured "
                       f"{quickest.latency_ms:.3f} ms ({precision}, {quickest.shipped_bytes / 1024:.1f} KB)",
                       f"raise --budget-ms to at least {quickest.latency_ms * 1.1:.3f}, or --max-size-kb")


def build_candidate(spec: StudentSpec, spaces: dict[str, Any], data: Dataset, config: SearchConfig) -> Any:
    """The candidate's module, with the same initial weights at every stage of the search."""
    import torch

    torch.manual_seed(config.seed)
    return spaces[spec.space].build(spec.config, data.input_shape, data.num_classes)


def _measure(cands: list[Candidate], data: Dataset, config: SearchConfig, spaces: dict[str, Any],
             latency: dict[str, Any], profile: DeviceProfile, calib: np.ndarray, ruler: Ruler) -> list[Candidate]:
    """Export each candidate at the search's precision and time them together, beside the reference network:
    each one's latency is its p50 in units of the reference's, times the search's one figure for the
    reference (``Ruler``)."""
    import tempfile
    from pathlib import Path

    from edgekd.latency.quick_export import export_for_timing

    models = [build_candidate(cand.spec, spaces, data, config) for cand in cands]
    with tempfile.TemporaryDirectory(prefix="edgekd-search-") as tmp:
        paths = export_for_timing(models, config.precision, calib, Path(tmp), batch=ruler.batch)
        timed = ruler.measure(paths, calib.shape[1:])
    for cand, (stats, _units) in zip(cands, timed):
        classes = f" --classes {data.num_classes}" if data is not None else ""  # a caller timing models alone has none
        check_runtime(latency[cand.spec.space], stats, profile,
                      f"--space {cand.spec.space} --input-shape {','.join(map(str, calib.shape[1:]))}{classes}")
    return [replace(c, latency_ms=units * ruler.ms()) for c, (_stats, units) in zip(cands, timed)]


def check_runtime(model: Any, stats: Any, profile: DeviceProfile, table_flags: str = "") -> None:
    """A table calibrated with another onnxruntime than the device now runs predicts the wrong latencies.
    A local profile's table is checked when it is loaded; a remote device says its version only when
    it measures, so its table is checked here."""
    from edgekd.errors import ProfileError

    stamped = model.onnxruntime
    if stamped and stats.onnxruntime and stamped != stats.onnxruntime:
        raise ProfileError(f"the latency table of '{profile.name}' was calibrated with onnxruntime {stamped}, but "
                           f"the device now runs {stats.onnxruntime}",
                           f"recalibrate: run `edgekd profiles calibrate {profile_arg(profile)} "
                           f"{table_flags + ' ' if table_flags else ''}--force`")
