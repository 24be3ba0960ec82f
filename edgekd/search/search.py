"""Training-free student search: sample a space, keep what fits the size limit, rank by a proxy,
then measure the best-ranked candidates on the profile and choose the best one under the budget."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgekd.data import Dataset
from edgekd.errors import BudgetError, ConfigError, ModelError
from edgekd.heartbeat import Heartbeat
from edgekd.profiles import DeviceProfile, profile_arg
from edgekd.search.file_size import SizeCheck, estimate_int8_bytes, fp32_bytes, shipped_bytes
from edgekd.search.latency_model import ANCHORS, TABLE_SOURCE
from edgekd.search.ruler import Ruler
from edgekd.search.teacher_fit import teacher_fit
from edgekd.types import Budget, Candidate, SearchResult, StudentSpec

# A candidate predicted up to 10% over --budget-ms is still measured: the prediction's own error.
SLACK = 1.1
# Measured candidates of a space needed before their measured/predicted ratio corrects its other predictions.
SCALE_AFTER = 3
# The reference's slowest reading over its fastest during a search beyond which the search says so.
SWING = 1.25


@dataclass(frozen=True)
class SearchConfig:
    space: str = "mbv2"  # one space, or several separated by commas ("mbv2,resnet")
    proxy: str = "params"  # chosen by the rule in benchmarks/preregistered.md; see README "Search quality"
    candidates: int = 100  # distinct candidates evaluated by the evolution
    population: int = 24
    tournament: int = 6
    precision: str = "int8"  # what ships: latency and size limits are checked for this precision
    anchors: int = ANCHORS  # networks measured to fit the latency of a space with no calibrated table
    measure_top: int = 5  # best-ranked candidates measured per round
    rounds: int = 3  # measurement rounds before falling back to the fastest candidate
    probe_batch: int = 64
    seed: int = 0
    labels: bool = True  # False: the labels are placeholders; the proxies take the teacher's predicted classes

    def __post_init__(self) -> None:
        import numbers

        from edgekd.data import check_seed

        if isinstance(self.space, (list, tuple)):  # the API's ["mbv2", "resnet"], as the flag's "mbv2,resnet"
            object.__setattr__(self, "space", ",".join(map(str, self.space)))
        if not isinstance(self.space, str):
            raise ConfigError(f"space {self.space!r} is not a space name", 'pass e.g. "mbv2" or "mbv2,resnet"')
        least = {"candidates": 1, "measure_top": 1, "rounds": 1, "probe_batch": 2, "anchors": 3, "population": 2,
                 "tournament": 1}
        for name, low in least.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                flag = {"anchors": "latency-anchors"}.get(name, name.replace("_", "-"))
                raise ConfigError(f"search setting {name} is {value!r}, not a whole number of at least {low}",
                                  f"pass --{flag} {low} or more" if name in ("candidates", "anchors")
                                  else f"pass {name} = {low} or more")
        check_seed(self.seed)
        if not isinstance(self.labels, bool):
            raise ConfigError(f"search setting labels is {self.labels!r}, not true or false", "pass labels = true "
                              "or false")
        if self.population < 2 or not 1 <= self.tournament <= self.population:
            raise ConfigError(f"population {self.population} / tournament {self.tournament} is not usable",
                              "use a population of 2 or more and a tournament between 1 and the population")
        if self.precision not in ("fp32", "int8"):
            raise ConfigError(f"unknown precision '{self.precision}'", "choose one of: fp32, int8")
        self.spaces()  # unknown names fail here, listing the valid ones
        from edgekd.search.proxies import PROXIES

        PROXIES.get(self.proxy)

    def spaces(self) -> list[str]:
        from edgekd.search.spaces import SPACES

        names = [n.strip() for n in self.space.split(",") if n.strip()]
        if not names:
            raise ConfigError("no search space given", f"choose from: {', '.join(SPACES.names())}")
        for name in names:
            SPACES.get(name)
        return list(dict.fromkeys(names))


def search(teacher: Any, data: Dataset, profile: DeviceProfile, budget: Budget,
           config: SearchConfig | None = None, progress: bool = True,
           log: Any = None) -> SearchResult:
    """Evolve students of ``config.space`` under ``budget``, ranked by ``config.proxy``; measure the
    best-ranked on ``profile`` and return the best one that meets the budget."""
    from edgekd.profiles import load_profile
    from edgekd.search.proxies import PROXIES, make_probe, require_init
    from edgekd.search.spaces import resolve_space
    from edgekd.teacher import Teacher

    # What the other stages hand over: default_teacher()/load_teacher()'s Teacher, a profile by name, no budget.
    teacher = teacher.module if isinstance(teacher, Teacher) else teacher
    profile = load_profile(profile) if isinstance(profile, str) else profile
    budget = budget if budget is not None else Budget()
    if not isinstance(budget, Budget):
        raise ConfigError(f"budget {budget!r} is not a Budget", "pass Budget(latency_ms, max_size_kb), e.g. "
                          "Budget(0.5, 128)")
    config = config or SearchConfig()
    log = log or (lambda _m: None)
    start = time.perf_counter()
    spaces = [resolve_space(name, teacher, data.input_shape) for name in config.spaces()]
    proxy = PROXIES.get(config.proxy)
    rng = np.random.default_rng(config.seed)
    idx = rng.permutation(len(data.y_train))[:config.probe_batch]
    probe = make_probe(teacher, data.x_train[idx], data.y_train[idx] if config.labels else None)
    if probe.cam is None and config.proxy in ("diswot", "diswot_params"):
        log(f"search: the teacher exposes no 4-D feature map, so {config.proxy} compares logit relations only")
    if config.proxy == "diswot_init":
        require_init(probe)  # before any latency is measured
    if config.proxy == "params" and budget.latency_ms is None and budget.max_size_kb is None:
        log("warning: search: no --budget-ms or --max-size-kb, so the params proxy picks the largest student of the "
            "space, which may be no faster than the teacher; pass the device's budget")
    calib = data.x_train[rng.permutation(len(data.x_train))[:64]]
    with Ruler(profile, data.input_shape, data.num_classes) as ruler:
        fit = teacher_fit(teacher, data.input_shape, budget, ruler)
        if fit is not None:
            log(fit.message(budget))
        return _search(data, profile, budget, config, spaces, proxy, probe, calib, ruler, rng, progress, log, start)


def _search(data: Dataset, profile: DeviceProfile, budget: Budget, config: SearchConfig,
            spaces: list[Any], proxy: Any, probe: Any, calib: np.ndarray, ruler: Ruler,
            rng: np.random.Generator, progress: bool, log: Any, start: float) -> SearchResult:
    from tqdm.auto import tqdm

    from edgekd.search.evolution import evolve, pareto_front
    from edgekd.search.latency_model import latency_model

    # The reference network's p50 converts every space's predictions to ms, and every measured candidate,
    # timed beside it, too (``ruler``); it also says which runtime a remote device runs now.
    models = {s.name: latency_model(s, profile, data.input_shape, data.num_classes, config.precision, calib,
                                    anchors=config.anchors, seed=config.seed, reference_ms=ruler.ms,
                                    log=log, reference_runtime=ruler.runtime)
              for s in spaces}
    for name, model in models.items():
        log(f"search: '{name}' {config.precision} latency: {model.source}")
    by_name = {s.name: s for s in spaces}

    def evaluate(spec: StudentSpec) -> Candidate:
        model = _build(spec, by_name, data, config)
        size = estimate_int8_bytes(model) if config.precision == "int8" else fp32_bytes(model)
        nparams = sum(p.numel() for p in model.parameters())
        predicted = models[spec.space].predict(spec, model)
        too_slow = budget.latency_ms is not None and predicted > budget.latency_ms * SLACK
        too_big = budget.max_bytes is not None and size > budget.max_bytes
        score = float("-inf") if too_slow or too_big else proxy_score(proxy, model, probe, config.proxy, spec)
        return Candidate(spec, nparams, size, score, predicted_ms=predicted)

    bar = tqdm(total=config.candidates, desc="search", disable=not progress, leave=False, unit="cand")
    beat, scored_so_far = Heartbeat(None if progress else log), 0

    def step() -> None:
        nonlocal scored_so_far
        bar.update(1)
        scored_so_far += 1
        beat.tick(f"search: scored {scored_so_far}/{config.candidates} candidates",
                  done=scored_so_far == config.candidates)

    scored = evolve(spaces, evaluate, config.candidates, rng, config.population, config.tournament, on_step=step)
    bar.close()
    ranked = sorted(_fits(scored, budget, config.precision), key=lambda c: c.score, reverse=True)
    sizes = SizeCheck(budget.max_bytes,
                      lambda c: shipped_bytes(_build(c.spec, by_name, data, config), data, calib, config.precision))
    measured, too_big, chosen = _measure_until_feasible(ranked, data, profile, budget, config, by_name, models,
                                                        calib, sizes, log, ruler, spare=scored)
    note = speed_note(ruler)
    if note:
        log(note)
    if sizes.written:
        over = sum(not sizes.fits(c) for c in (*too_big, *measured))
        log(f"search: wrote the {config.precision} files of {sizes.written} candidate(s) to check them against "
            f"--max-size-kb {budget.max_size_kb:g} (those near it, and the one chosen); {over} came out over it "
            "and cannot be chosen"
            + "".join(f"; '{s}' estimates were up to {(r - 1) * 100:.0f}% low" for s, r in sizes.underestimate.items()
                      if r > 1))
    by_key = {c.spec.key(): c for c in (*too_big, *measured)}
    final = tuple(by_key.get(c.spec.key(), c) for c in ranked)
    sources = "; ".join(f"{n}: {m.source}" for n, m in models.items())
    return SearchResult(chosen, final, config.proxy, len(scored), len(measured), time.perf_counter() - start,
                        f"predicted ({sources}) + measured beside the reference network (its p50 "
                        f"{ruler.ms():.4f} ms)", tuple(c.spec.key() for c in pareto_front(final)),
                        config.precision)


LOWEST_SCORE = -float(np.finfo(np.float64).max)  # a proxy's "nothing at all", still within the limits


def proxy_score(proxy: Any, model: Any, probe: Any, name: str, spec: StudentSpec) -> float:
    """``proxy``'s score of a candidate within the limits. A score of -inf marks a candidate over them, so a
    proxy's own -inf (synflow's log of a saliency of 0: no signal reaches the output) becomes the lowest
    finite score, ranked last but still a candidate; a NaN or +inf ranks nothing and is refused."""
    score = float(proxy(model, probe))
    if score == float("-inf"):
        return LOWEST_SCORE
    if not np.isfinite(score):
        raise ModelError(f"the {name} proxy scored the '{spec.space}' candidate {spec.config} {score}, which ranks "
                         "nothing", "choose another --proxy (params always gives a score)")
    return score


def speed_note(ruler: Ruler) -> str | None:
    """What the log says when the reference read far apart during the search: the machine's speed moved, and
    the milliseconds the search reports are at the speed of its first runs."""
    fastest, slowest = ruler.spread()
    if slowest <= fastest * SWING:
        return None
    return (f"search: the machine's speed varied while it measured (the reference network read {fastest:.3f}-"
            f"{slowest:.3f} ms); every candidate was timed beside it and converted at {ruler.ms():.3f} ms, so all "
            f"were judged at one speed")


def _fits(scored: list[Candidate], budget: Budget, precision: str) -> list[Candidate]:
    """The candidates predicted within budget; when none is, the fastest few small enough (the fastest and
    the ``FASTEST_TRIED`` after it), so that measurements rather than the prediction decide (and say by how
    much the budget is missed). Those come unscored, so nothing but their speed can choose among them."""
    fits = [c for c in scored if np.isfinite(c.score)]
    if fits:
        return fits
    small = [c for c in scored if budget.max_bytes is None or c.size_bytes <= budget.max_bytes]
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


def _measure_until_feasible(ranked: list[Candidate], data: Dataset, profile: DeviceProfile, budget: Budget,
                            config: SearchConfig, spaces: dict[str, Any], latency: dict[str, Any],
                            calib: np.ndarray, sizes: SizeCheck, log: Any = None, ruler: Ruler | None = None,
                            spare: Sequence[Candidate] = ()) -> tuple[list[Candidate], list[Candidate], Candidate]:
    """Measure the fastest-looking candidate, then the ranking's head in rounds, interleaved within a round,
    until the best-scored one within both limits cannot be beaten by a candidate not measured yet.
    Candidates whose space measured slower than predicted are judged by the corrected prediction, so rounds
    are not spent on the ones that will miss the budget. ``spare`` holds the other scored candidates (those
    predicted over the budget): when the fastest-looking one measures over it, the next fastest-looking are
    measured beside it from all of them, since its own prediction has just been proved wrong. Returns
    (measured, written too big without being measured, chosen)."""
    log = log or (lambda _m: None)

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
    for _ in range(config.rounds):
        batch, queue = queue[:config.measure_top], queue[config.measure_top:]
        if not batch:
            break
        done, chosen = _choose(done + measure(batch), budget, sizes)
        # a space whose files came out larger than estimated, or whose candidates measured slower than
        # predicted, rules out more of the rest (never fewer)
        scale = latency_scale(done)
        queue = [c for c in queue if sizes.may_fit(c) and _may_meet(c, budget, scale)]
        if chosen is not None and (not queue or chosen.score >= queue[0].score):
            break
    if chosen is not None and budget.latency_ms is not None:
        done, chosen = _near_misses_again(done, chosen, budget, sizes, config.measure_top, measure, log)
    slow = {name: r for name, r in scale.items() if r >= 1.005}  # what the log would round to 0% is not news
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
    return done, too_big, chosen


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
            or cand.predicted_ms * scale.get(cand.spec.space, 1.0) <= budget.latency_ms * SLACK)


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
            kb, said = smallest.shipped_bytes / 1024, f"the smallest {precision} file the search wrote is"
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


def _build(spec: StudentSpec, spaces: dict[str, Any], data: Dataset, config: SearchConfig) -> Any:
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

    models = [_build(cand.spec, spaces, data, config) for cand in cands]
    with tempfile.TemporaryDirectory(prefix="edgekd-search-") as tmp:
        paths = export_for_timing(models, config.precision, calib, Path(tmp), batch=ruler.batch)
        timed = ruler.measure(paths, calib.shape[1:])
    for cand, (stats, _units) in zip(cands, timed):
        check_runtime(latency[cand.spec.space], stats, profile)
    return [replace(c, latency_ms=units * ruler.ms()) for c, (_stats, units) in zip(cands, timed)]


def check_runtime(model: Any, stats: Any, profile: DeviceProfile) -> None:
    """A table calibrated with another onnxruntime than the device now runs predicts the wrong latencies.
    A local profile's table is checked when it is loaded; a remote device says its version only when
    it measures, so its table is checked here."""
    from edgekd.errors import ProfileError

    stamped = model.onnxruntime
    if stamped and stats.onnxruntime and stamped != stats.onnxruntime:
        raise ProfileError(f"the latency table of '{profile.name}' was calibrated with onnxruntime {stamped}, but "
                           f"the device now runs {stats.onnxruntime}",
                           f"recalibrate: run `edgekd profiles calibrate {profile_arg(profile)}`")
