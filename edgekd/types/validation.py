"""What export and validation hand on: artifacts and their reports against a budget."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edgekd.types.measures import Budget, LatencyStats, Ratio


@dataclass(frozen=True)
class Artifact:
    """One exported model file."""

    name: str  # e.g. "student-int8"
    role: str  # "teacher" | "student"
    precision: str  # "fp32" | "int8"; a model made elsewhere may be "fp16", "int16" or "a16w8" (16-bit activations)
    path: str
    exporter: str
    opset: int
    sha256: str
    size_bytes: int  # the file and any external data files it needs (details["external_data"])
    details: dict[str, Any] = field(default_factory=dict, hash=False)  # exporter specifics, e.g. excluded nodes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def size_note(self) -> str:
        """Where a size shown beside the file's name also counts other files, which ones."""
        files = self.details.get("external_data") or []
        return f" (with its external data: {', '.join(files)})" if files else ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        return cls(**data)


@dataclass(frozen=True)
class Parity:
    top1_agreement: float
    max_abs_diff: float
    reference: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parity:
        return cls(float(data["top1_agreement"]), float(data["max_abs_diff"]), str(data["reference"]))


@dataclass(frozen=True)
class ArtifactReport:
    """Validation of one artifact on one profile."""

    artifact: Artifact
    checker_ok: bool
    parity: Parity | None
    accuracy: float | None
    latency: LatencyStats | None
    verdicts: dict[str, bool] = field(hash=False)
    # top-1 accuracy on each class of the data's test split (by its name), where it has images
    class_accuracy: dict[str, float] | None = field(default=None, hash=False)

    @property
    def passed(self) -> bool:
        return self.checker_ok and all(self.verdicts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact.to_dict(),
            "checker_ok": self.checker_ok,
            "parity": self.parity.to_dict() if self.parity else None,
            "accuracy": self.accuracy,
            "latency": self.latency.to_dict() if self.latency else None,
            "verdicts": dict(self.verdicts),
            "passed": self.passed,
            **({"class_accuracy": dict(self.class_accuracy)} if self.class_accuracy is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactReport:
        """From ``to_dict``'s keys, or a manifest's artifact entry (its other keys, such as ``primary``, ``ort``
        and the ratios to the teacher, are derived or belong to the manifest, and are ignored)."""
        parity, latency, classes = data.get("parity"), data.get("latency"), data.get("class_accuracy")
        return cls(
            artifact=Artifact.from_dict(data["artifact"]),
            checker_ok=bool(data["checker_ok"]),
            parity=Parity.from_dict(parity) if parity else None,
            accuracy=data.get("accuracy"),
            latency=LatencyStats.from_dict(latency) if latency else None,
            verdicts={str(k): bool(v) for k, v in data["verdicts"].items()},
            class_accuracy={str(k): float(v) for k, v in classes.items()} if classes is not None else None,
        )


@dataclass(frozen=True)
class ValidationReport:
    """All artifacts of one run, validated side by side, and which one ships."""

    profile: str
    budget: Budget
    reports: tuple[ArtifactReport, ...]
    primary: str  # name of the artifact that ships
    notes: tuple[str, ...] = ()
    rounds: int = 1  # interleaved latency runs; each artifact reports its median run
    int8_speedup: tuple[float, ...] = ()  # fp32 p50 / int8 p50 of the students, per run (empty without twins)
    int8_ratio: Ratio | None = None  # what decided the ship: the same, repeat by repeat over all runs

    def get(self, name: str) -> ArtifactReport:
        for report in self.reports:
            if report.artifact.name == name:
                return report
        raise KeyError(name)

    @property
    def passed(self) -> bool:
        return self.get(self.primary).passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "budget": self.budget.to_dict(),
            "primary": self.primary,
            "passed": self.passed,
            "notes": list(self.notes),
            **self.latency_dict(),
            "artifacts": [r.to_dict() for r in self.reports],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """From ``to_dict``'s keys (``validate --json``) or a run's ``manifest.json``, whose profile is the full
        profile rather than its name; ``passed`` is recomputed from the verdicts. Anything else (another
        file, or one edited by hand) is refused naming what is missing, not as a KeyError."""
        from edgekd.errors import ArtifactError

        try:
            return cls._read(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"has no {exc.args[0]!r}" if isinstance(exc, KeyError) else f"is malformed ({exc})"
            raise ArtifactError(f"this is not a validation report: it {what}",
                                "pass the dict of a file written by 'validate --json' or a run's manifest.json") \
                from None

    @classmethod
    def _read(cls, data: dict[str, Any]) -> ValidationReport:
        profile = data["profile"]
        speedup = data.get("int8_speedup") or {}
        return cls(
            profile=str(profile["name"] if isinstance(profile, dict) else profile),
            budget=Budget.from_dict(data["budget"]),
            reports=tuple(ArtifactReport.from_dict(a) for a in data["artifacts"]),
            primary=str(data["primary"]),
            notes=tuple(data.get("notes") or ()),
            rounds=int(data.get("latency_rounds", 1)),
            int8_speedup=tuple(float(x) for x in speedup.get("runs") or ()),
            int8_ratio=Ratio.from_dict(speedup) if "pairs" in speedup else None,
        )

    def latency_dict(self) -> dict[str, Any]:
        """How latency was decided: the run count and the int8 student's speedup over its fp32 twin."""
        import statistics

        speedup = None
        if self.int8_ratio is not None:
            speedup = {**self.int8_ratio.to_dict(), "runs": list(self.int8_speedup)}
        elif self.int8_speedup:
            speedup = {"median": statistics.median(self.int8_speedup), "runs": list(self.int8_speedup)}
        return {"latency_rounds": self.rounds, "int8_speedup": speedup}
