"""Regularised (aging) evolution under hard constraints, and the Pareto front of its results.

Real et al., "Regularized Evolution for Image Classifier Architecture Search", 2019: keep a
population of feasible candidates; each step, the best of a random tournament is mutated and the
oldest member dies. Infeasible children (over the latency or size limit) are recorded but never
join the population, so the constraints are hard.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgekd.search.spaces import mutate, smallest
from edgekd.types import Candidate, StudentSpec

Evaluate = Callable[[StudentSpec], Candidate]  # score -inf means infeasible
EXHAUSTED = 50  # draws per candidate asked for that found nothing new: the space holds no more, or few


def evolve(spaces: Sequence[Any], evaluate: Evaluate, budget: int, rng: np.random.Generator,
           population: int = 24, tournament: int = 6, on_step: Callable[[], None] | None = None) -> list[Candidate]:
    """Evaluate up to ``budget`` distinct candidates; returns all of them in evaluation order."""
    seen: dict[str, Candidate] = {}
    alive: deque[Candidate] = deque()

    def add(spec: StudentSpec) -> None:
        cand = evaluate(spec)
        seen[spec.key()] = cand
        if on_step:
            on_step()
        if np.isfinite(cand.score):
            alive.append(cand)
            if len(alive) > population:
                alive.popleft()

    by_name = {space.name: space for space in spaces}
    for space in spaces:  # each space's smallest member: the fallback when the budget is tight
        spec = StudentSpec(space.name, smallest(space))
        if spec.key() not in seen and len(seen) < budget:
            add(spec)
    stale = 0
    while len(seen) < budget and stale < EXHAUSTED * budget:
        if len(alive) < population:  # still seeding, or the feasible population is thin
            space = spaces[int(rng.integers(len(spaces)))]
            spec = StudentSpec(space.name, space.sample(rng))
        else:
            picks = rng.choice(len(alive), size=min(tournament, len(alive)), replace=False)
            parent = max((alive[int(i)] for i in picks), key=lambda c: c.score)
            space = by_name[parent.spec.space]
            spec = StudentSpec(space.name, mutate(space, parent.spec.config, rng))
        if spec.key() in seen:
            stale += 1
            continue
        add(spec)
    return list(seen.values())


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """Candidates no other beats on both score (higher) and latency (lower); sorted by latency."""
    points = [c for c in cands if np.isfinite(c.score) and _latency(c) is not None]
    points.sort(key=lambda c: (_latency(c), -c.score))
    front: list[Candidate] = []
    best = -np.inf
    for c in points:
        if c.score > best:
            front.append(c)
            best = c.score
    return front


def _latency(c: Candidate) -> float | None:
    return c.latency_ms if c.latency_ms is not None else c.predicted_ms
