"""Training-free student search: sample a space, keep what fits the size limit, rank by a proxy,
then measure the best-ranked candidates on the profile and choose the best one under the budget."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.data import Dataset
from edgekd.errors import ConfigError, ModelError, api_log
from edgekd.heartbeat import Heartbeat
from edgekd.profiles import DeviceProfile
from edgekd.search.choosing import SLACK, build_candidate, measure_and_choose, to_measure
from edgekd.search.file_size import SizeCheck, estimate_int8_bytes, fp32_bytes, ruled_out, shipped_bytes
from edgekd.search.latency_model import ANCHORS
from edgekd.search.ruler import Ruler
from edgekd.search.teacher_fit import teacher_fit
from edgekd.types import Budget, Candidate, SearchResult, StudentSpec
from edgekd.types.search import LOWEST_SCORE

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
    opset: int = 18  # of the files the run ships: their size, checked against --max-size-kb, depends on it
    ort: bool = False  # the run ships ORT-format copies too (--ort): --max-size-kb holds the larger file

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
                                  f"pass --{flag} {low} or more (SearchConfig({name}=...) in Python)"
                                  if name in ("candidates", "anchors")
                                  else f"pass {name} = {low} or more")
        check_seed(self.seed)
        if not isinstance(self.labels, bool):
            raise ConfigError(f"search setting labels is {self.labels!r}, not true or false", "pass labels = true "
                              "or false")
        if not isinstance(self.ort, bool):
            raise ConfigError(f"search setting ort is {self.ort!r}, not true or false", "pass ort = true or false")
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
    import torch

    from edgekd.api_args import require_budget, require_config, require_dataset
    from edgekd.profiles import load_profile
    from edgekd.search.proxies import PROXIES, make_probe, require_init
    from edgekd.search.spaces import resolve_space
    from edgekd.teacher import api_teacher

    # What the other stages hand over: default_teacher()/load_teacher()'s Teacher, a profile by name, no budget.
    require_dataset(data)
    if config is not None:
        require_config("config", config, SearchConfig)
    teacher = api_teacher(teacher, data)
    profile = load_profile(profile)  # a name, a .toml path (str or pathlib.Path) or a DeviceProfile, as validate takes
    require_budget(budget)
    budget = budget if budget is not None else Budget()
    config = config or SearchConfig()
    log = api_log(log)
    start = time.perf_counter()
    spaces = [resolve_space(name, teacher, data.input_shape) for name in config.spaces()]
    for space in spaces:  # a grouped convolution pins channels of a teacher-derived space: said once, here
        if getattr(space, "note", None):
            log(f"search: {space.name}: {space.note}")
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
    # The search seeds torch's generator (each candidate's weights, the latency anchors) on a fork: the caller's
    # comes back as it was, not reset to config.seed.
    with torch.random.fork_rng(devices=[]), Ruler(profile, data.input_shape, data.num_classes) as ruler:
        fit = teacher_fit(teacher, data.input_shape, budget, ruler, log, data)
        if fit is not None:
            log(fit.message(budget))
        return _search(data, profile, budget, config, spaces, proxy, probe, calib, ruler, rng, progress, log, start)


def _search(data: Dataset, profile: DeviceProfile, budget: Budget, config: SearchConfig,
            spaces: list[Any], proxy: Any, probe: Any, calib: np.ndarray, ruler: Ruler,
            rng: np.random.Generator, progress: bool, log: Any, start: float) -> SearchResult:
    from tqdm.auto import tqdm

    from edgekd.ort_format import platform_for
    from edgekd.search.evolution import EXHAUSTED, evolve, pareto_front
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
        model = build_candidate(spec, by_name, data, config)
        size = estimate_int8_bytes(model) if config.precision == "int8" else fp32_bytes(model)
        nparams = sum(p.numel() for p in model.parameters())
        predicted = models[spec.space].predict(spec, model)
        too_slow = budget.latency_ms is not None and predicted > budget.latency_ms * SLACK
        too_big = ruled_out(size, budget.max_bytes)
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
    if len(scored) < config.candidates:  # the evolution ran out of new students: the space is small
        log(f"search: scored {len(scored)}/{config.candidates} candidates: the space holds few distinct students "
            f"(the evolution drew ones already scored {EXHAUSTED * config.candidates} times); pass --candidates "
            f"{len(scored)} or fewer, or another --space")
    ranked = sorted(to_measure(scored, budget, config.precision), key=lambda c: c.score, reverse=True)
    ort_platform = platform_for(profile) if config.ort else None
    sizes = SizeCheck(budget.max_bytes,
                      lambda c: shipped_bytes(build_candidate(c.spec, by_name, data, config), data, calib,
                                              config.precision, config.opset, ort_platform), ort=config.ort)
    measured, too_big, chosen, scale = measure_and_choose(ranked, data, profile, budget, config, by_name, models,
                                                          calib, sizes, log, ruler, spare=scored)
    note = speed_note(ruler)
    if note:
        log(note)
    if sizes.written:
        files = f"{config.precision} files and their ORT-format copies" if config.ort else f"{config.precision} files"
        log(f"search: wrote the {files} of {sizes.written} candidate(s) to check them against "
            f"--max-size-kb {budget.max_size_kb:g} (those near it, and the one chosen); "
            + size_check_counts(sizes, (*too_big, *measured))
            + underestimates_text(sizes.underestimate))
    final = listed(ranked, measured, too_big)
    sources = "; ".join(f"{n}: {m.source}" for n, m in models.items())
    return SearchResult(chosen, final, config.proxy, len(scored), len(measured), time.perf_counter() - start,
                        f"predicted ({sources}) + measured beside the reference network (its p50 "
                        f"{ruler.ms():.4f} ms)", tuple(c.spec.key() for c in pareto_front(final)),
                        config.precision, scale, sized_with_ort=config.ort,
                        size_scale={} if sizes.limit is None else {s.name: sizes.factor(s.name) for s in spaces})


def size_check_counts(sizes: SizeCheck, judged: tuple[Candidate, ...]) -> str:
    """How many written files came out over the limit, apart from the candidates over it by their estimate
    alone (never written): counted together they once read as every written file over, the chosen one too."""
    by_key: dict[str, Candidate] = {}
    for cand in judged:  # one candidate may be listed twice; its written file, when it has one, decides
        if cand.file_bytes is not None or cand.spec.key() not in by_key:
            by_key[cand.spec.key()] = cand
    unique = by_key.values()
    over_file = sum(c.file_bytes is not None and not sizes.fits(c) for c in unique)
    over_estimate = sum(c.file_bytes is None and not sizes.fits(c) for c in unique)
    text = f"{over_file} came out over it and cannot be chosen"
    if over_estimate:
        verb = "is" if over_estimate == 1 else "are"
        text += f"; {over_estimate} more {verb} over it by estimate alone (not written)"
    return text


def listed(ranked: list[Candidate], measured: list[Candidate], too_big: list[Candidate]) -> tuple[Candidate, ...]:
    """The result's candidates: the ranking, each as its measurement or written file left it, then the
    candidates measured from outside it (those predicted over the budget, timed beside a fastest-looking one
    that measured over it), one of which may be the choice."""
    by_key = {c.spec.key(): c for c in (*too_big, *measured)}
    keys = {c.spec.key() for c in ranked}
    extra = {k: c for k, c in by_key.items() if k not in keys}
    return tuple(by_key.get(c.spec.key(), c) for c in ranked) + tuple(extra.values())


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


def underestimates_text(underestimate: dict[str, float]) -> str:
    """"; 'mbv2' estimates were up to 12% low" for each space whose written files came out larger than their
    estimates by enough to say: under half a percent printed as "up to 0% low"."""
    return "".join(f"; '{space}' estimates were up to {(r - 1) * 100:.0f}% low" for space, r in underestimate.items()
                   if r >= 1.005)
