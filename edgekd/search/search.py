"""Training-free student search: sample a space, keep what fits the size limit, rank by a proxy,
then measure the best-ranked candidates on the profile and choose the best one under the budget."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import Dataset
from edgekd.errors import BudgetError, ConfigError
from edgekd.profiles import DeviceProfile
from edgekd.types import Budget, Candidate, SearchResult, StudentSpec


@dataclass(frozen=True)
class SearchConfig:
    space: str = "mbv2"
    proxy: str = "diswot"
    candidates: int = 100  # sampled from the space
    measure_top: int = 5  # best-ranked candidates measured per round
    rounds: int = 3  # measurement rounds before falling back to the fastest candidate
    probe_batch: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.measure_top < 1 or self.rounds < 1 or self.probe_batch < 2:
            raise ConfigError("search sizes must be positive (candidates, measure_top, rounds, probe_batch >= 2)",
                              "pass positive values")


def estimate_int8_bytes(model: Any) -> int:
    """Size of the int8 QDQ file: 1 byte per weight, int32 bias + fp32 scale + zero point per channel,
    plus a per-node graph overhead. Validation later checks the real file."""
    import torch

    total = 0
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            out = module.weight.shape[0]
            total += module.weight.numel() + out * (4 + 4 + 1) + 1400  # + Q/DQ nodes and names
    return total + 2048


def search(teacher: Any, data: Dataset, profile: DeviceProfile, budget: Budget,
           config: SearchConfig | None = None, progress: bool = True) -> SearchResult:
    """Rank ``config.candidates`` students by ``config.proxy`` and return the best one within ``budget``."""
    import torch
    from tqdm.auto import tqdm

    from edgekd.search.proxies import PROXIES, make_probe
    from edgekd.search.spaces import SPACES

    config = config or SearchConfig()
    space = SPACES.get(config.space)
    proxy = PROXIES.get(config.proxy)
    start = time.perf_counter()
    specs = _sample_specs(space, config)
    idx = np.random.default_rng(config.seed).permutation(len(data.y_train))[:config.probe_batch]
    probe = make_probe(teacher, data.x_train[idx], data.y_train[idx])
    predictor = _predictor(profile, config.space, data)
    scored: list[Candidate] = []
    for spec in tqdm(specs, desc="score candidates", disable=not progress, leave=False):
        torch.manual_seed(config.seed)
        model = space.build(spec.config, data.input_shape, data.num_classes)
        size = estimate_int8_bytes(model)
        nparams = sum(p.numel() for p in model.parameters())
        predicted = predictor.predict(spec, "fp32") if predictor else None
        too_slow = predicted is not None and budget.latency_ms is not None and predicted > budget.latency_ms * 1.1
        if too_slow or (budget.max_size_kb is not None and size > budget.max_size_kb * 1024):
            scored.append(Candidate(spec, nparams, size, float("-inf"), predicted_ms=predicted))
            continue
        scored.append(Candidate(spec, nparams, size, proxy(model, probe), predicted_ms=predicted))
    fits = [c for c in scored if c.score != float("-inf")]
    if not fits and predictor is not None and budget.latency_ms is not None:
        fits = [min(scored, key=lambda c: c.predicted_ms)]  # let the measurement give the verdict
    if not fits:
        smallest = min(scored, key=lambda c: c.size_bytes)
        raise BudgetError(f"no candidate fits --max-size-kb {budget.max_size_kb:g}: the smallest needs about "
                          f"{smallest.size_bytes / 1024:.1f} KB",
                          f"raise --max-size-kb to at least {smallest.size_bytes / 1024:.1f}")
    ranked = sorted(fits, key=lambda c: c.score, reverse=True)
    measured = _measure_until_feasible(ranked, data, profile, budget, config)
    feasible = [c for c in measured if budget.latency_ms is None or c.latency_ms <= budget.latency_ms]
    chosen = max(feasible, key=lambda c: c.score)
    by_key = {c.spec.key(): c for c in measured}
    final = tuple(by_key.get(c.spec.key(), c) for c in ranked)
    return SearchResult(chosen, final, config.proxy, len(scored), len(measured), time.perf_counter() - start,
                        "predicted+measured" if predictor else "measured")


def _predictor(profile: DeviceProfile, space: str, data: Dataset) -> Any:
    """The profile's calibrated latency model for this space and input, or None (then we only measure)."""
    from edgekd.errors import ProfileError
    from edgekd.latency.predict import LatencyPredictor
    from edgekd.latency.table import load_table
    from edgekd.search.spaces import SPACES

    try:
        table = load_table(profile, space, data.input_shape, data.num_classes)
    except ProfileError:
        return None
    return LatencyPredictor(table, SPACES.get(space))


def _sample_specs(space: Any, config: SearchConfig) -> list[StudentSpec]:
    rng = np.random.default_rng(config.seed)
    seen: dict[str, StudentSpec] = {}
    smallest = StudentSpec(space.name, space.smallest())
    seen[smallest.key()] = smallest
    attempts = 0
    while len(seen) < config.candidates and attempts < config.candidates * 20:
        spec = StudentSpec(space.name, space.sample(rng))
        seen.setdefault(spec.key(), spec)
        attempts += 1
    return list(seen.values())


def _measure_until_feasible(ranked: list[Candidate], data: Dataset, profile: DeviceProfile, budget: Budget,
                            config: SearchConfig) -> list[Candidate]:
    """Measure the fastest-looking candidate, then the ranking's head in rounds, interleaved within a round."""
    fastest = min(ranked, key=lambda c: (c.size_bytes, -c.score))
    done: list[Candidate] = _measure([fastest], data, profile)
    if budget.latency_ms is not None and done[0].latency_ms > budget.latency_ms:
        raise BudgetError(
            f"no candidate can meet --budget-ms {budget.latency_ms:g} on '{profile.name}': the fastest "
            f"candidate measured {done[0].latency_ms:.3f} ms",
            f"raise --budget-ms to at least {done[0].latency_ms * 1.1:.3f} or choose a faster profile")
    queue = [c for c in ranked if c.spec.key() != fastest.spec.key()]
    for round_ in range(config.rounds):
        batch = queue[round_ * config.measure_top:(round_ + 1) * config.measure_top]
        if not batch:
            break
        done += _measure(batch, data, profile)
        if budget.latency_ms is None or any(c.latency_ms <= budget.latency_ms for c in done[1:]):
            break
    return done


def _measure(cands: list[Candidate], data: Dataset, profile: DeviceProfile) -> list[Candidate]:
    """Export each candidate to fp32 ONNX and measure them together. fp32 is what ships when int8
    is not faster, so a budget met in fp32 holds for whichever artifact ships."""
    import torch

    from edgekd.export import ExportRequest, get_exporter
    from edgekd.latency.measure import measure
    from edgekd.search.spaces import build_student

    exporter = get_exporter("onnx-fp32")
    with tempfile.TemporaryDirectory(prefix="edgekd-search-") as tmp:
        paths = []
        for i, cand in enumerate(cands):
            torch.manual_seed(0)
            model = build_student(cand.spec, data.input_shape, data.num_classes)
            art = exporter(ExportRequest(name=f"cand{i}", role="student", out_dir=Path(tmp), model=model,
                                         sample=data.x_val[:1]))
            paths.append(art.path)
        stats = measure(paths, profile)
    return [replace(c, latency_ms=s.p50_ms) for c, s in zip(cands, stats)]
