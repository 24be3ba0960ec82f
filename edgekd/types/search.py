"""What search hands on: a student architecture, its scored candidates and the ranked result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StudentSpec:
    """A point in a search space: the space's name and its JSON-able architecture config."""

    space: str
    config: dict[str, Any] = field(hash=False)

    def key(self) -> str:
        import json

        return f"{self.space}:{json.dumps(self.config, sort_keys=True)}"

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "config": self.config}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentSpec:
        return cls(space=data["space"], config=dict(data["config"]))

    @classmethod
    def from_key(cls, key: str) -> StudentSpec:
        """The spec whose ``key()`` this is ("space:{config as JSON}")."""
        import json

        space, _, config = key.partition(":")
        return cls(space=space, config=json.loads(config))


def size_kb_text(size_bytes: int, file_bytes: int | None) -> str:
    """A candidate's size for a table: the written file's in KB, or the estimate marked with '~'."""
    return f"{file_bytes / 1024:.1f}" if file_bytes is not None else f"~{size_bytes / 1024:.1f}"


# A candidate predicted up to 10% over --budget-ms is still measured: the prediction's own error.
SLACK = 1.1


def slower_than_predicted(scale: dict[str, float]) -> dict[str, float]:
    """The spaces whose measured candidates ran slower than predicted by enough to say (the search's log and
    the report read the same): under half a percent prints as 0% or 1.00x, a correction of nothing."""
    return {name: r for name, r in scale.items() if r >= 1.005}


def predicted_within(predicted_ms: float, budget_ms: float, scale: float = 1.0) -> bool:
    """Whether a prediction, times its space's measured correction, leaves a candidate worth measuring: the
    search's filter and the table's reason for a candidate it passed over read the same rule."""
    return predicted_ms * scale <= budget_ms * SLACK


def broken_limits(latency_ms: float | None, file_bytes: int | None, budget_ms: float | None,
                  max_size_kb: float | None, predicted_ms: float | None = None, scale: float = 1.0,
                  size_bytes: int | None = None, size_scale: float = 1.0) -> str:
    """The limits a ranked candidate is known to break, for a table: its measured latency over the budget,
    its written file over the size limit (an estimate proves neither); '' when none is known broken. An
    unmeasured one was passed over on its prediction, which the table shows as it was made: when only the
    correction of its space (``scale``, measured / predicted, ``SearchResult.latency_scale``) put it over
    the budget, a reader could not tell why from the table's figures, so the correction is named. So is the
    size correction (``size_scale``, ``SearchResult.size_scale``) that put an unwritten estimate
    (``size_bytes``) under the limit over it."""
    broken = []
    if budget_ms is not None and latency_ms is not None and latency_ms > budget_ms:
        broken.append("over --budget-ms")
    if budget_ms is not None and latency_ms is None and predicted_ms is not None:
        if not predicted_within(predicted_ms, budget_ms):
            broken.append("predicted over --budget-ms")
        elif not predicted_within(predicted_ms, budget_ms, scale):
            broken.append(f"predicted over after correction (x{scale:.2f})")
    if max_size_kb is not None and file_bytes is not None and file_bytes > int(max_size_kb * 1024):
        broken.append("over --max-size-kb")
    elif (max_size_kb is not None and file_bytes is None and size_bytes is not None
          and size_bytes * size_scale > int(max_size_kb * 1024) >= size_bytes):
        broken.append(f"expected over --max-size-kb after correction (x{size_scale:.2f})")
    return ", ".join(broken)


# A proxy's own "nothing at all" (synflow's log of 0): ranked last yet still a candidate, as -inf marks one over
# the limits; shown as "lowest" and left out of plots.
LOWEST_SCORE = -1.7976931348623157e308


def score_text(score: float) -> str:
    """A candidate's score as tables print it: -inf (over the limits, unscored) as such, LOWEST_SCORE as "lowest"."""
    return "lowest" if score == LOWEST_SCORE else f"{score:.3f}"


@dataclass(frozen=True)
class Candidate:
    """A scored student candidate; latency is measured, or ``None`` when not measured yet."""

    spec: StudentSpec
    params: int
    size_bytes: int
    score: float
    latency_ms: float | None = None
    predicted_ms: float | None = None  # from the profile's calibrated latency table, when there is one
    file_bytes: int | None = None  # the shipped file's real size, when the search wrote it (near --max-size-kb)

    @property
    def shipped_bytes(self) -> int:
        """The written file's size when known, the estimate otherwise."""
        return self.file_bytes if self.file_bytes is not None else self.size_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "params": self.params,
            "size_bytes": self.size_bytes,
            "score": self.score,
            "latency_ms": self.latency_ms,
            "predicted_ms": self.predicted_ms,
            "file_bytes": self.file_bytes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(
            spec=StudentSpec.from_dict(data["spec"]),
            params=int(data["params"]),
            size_bytes=int(data["size_bytes"]),
            score=float(data["score"]),
            latency_ms=data.get("latency_ms"),
            predicted_ms=data.get("predicted_ms"),
            file_bytes=None if data.get("file_bytes") is None else int(data["file_bytes"]),
        )


@dataclass(frozen=True)
class SearchResult:
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    proxy: str
    evaluated: int
    measured: int
    seconds: float
    latency_source: str = "measured"  # or "predicted+measured" with a calibrated table
    pareto: tuple[str, ...] = ()  # spec keys of the candidates on the score-vs-latency Pareto front
    precision: str = "fp32"  # the deployment precision the latency constraint was checked for
    # per space, the measured / predicted latency the candidates not measured were judged by (at least 1);
    # {} in files written before it was recorded
    latency_scale: dict[str, float] = field(default_factory=dict, hash=False)
    # The files written against --max-size-kb were the larger of each .onnx and its ORT-format copy (a search
    # for a run with --ort); False in files written before it was recorded
    sized_with_ort: bool = False
    # per space, the factor its unwritten candidates' size estimates were grown by against --max-size-kb (the
    # largest written file / estimate seen; ORT_GROWTH with --ort before any): {} with no size limit, or in files
    # written before it was recorded
    size_scale: dict[str, float] = field(default_factory=dict, hash=False)
    # The search.json this result was read from, when it was: a copy written for a run that reuses it keeps
    # what that search was measured on and for (search_file.search_record), not the reusing run's.
    record: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_source": self.latency_source,
            "precision": self.precision,
            "pareto": list(self.pareto),
            "latency_scale": dict(self.latency_scale),
            "sized_with_ort": self.sized_with_ort,
            "size_scale": dict(self.size_scale),
            "chosen": self.chosen.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "proxy": self.proxy,
            "evaluated": self.evaluated,
            "measured": self.measured,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchResult:
        return cls(
            chosen=Candidate.from_dict(data["chosen"]),
            candidates=tuple(Candidate.from_dict(c) for c in data["candidates"]),
            proxy=data["proxy"],
            evaluated=int(data["evaluated"]),
            measured=int(data["measured"]),
            seconds=float(data["seconds"]),
            latency_source=data.get("latency_source", "measured"),
            pareto=tuple(data.get("pareto", ())),
            precision=data.get("precision", "fp32"),
            latency_scale={str(k): float(v) for k, v in (data.get("latency_scale") or {}).items()},
            sized_with_ort=data.get("sized_with_ort") is True,
            size_scale={str(k): float(v) for k, v in (data.get("size_scale") or {}).items()},
        )
