"""What a gate run finds: each check with its verdict and measured figure, and the whole result CI reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    message: str
    measured: Any = None
    # Could not be run (the device was not reached): no verdict on the model, so CI shows an error, not a failure.
    errored: bool = False


@dataclass(frozen=True)
class GateResult:
    target: str
    checks: tuple[Check, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = ()
    # The manifest's artifact gated (None for a model file given itself): one manifest's artifacts gated side by
    # side in a CI matrix are told apart in every report by it.
    artifact: str | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def errored(self) -> bool:
        return any(c.errored for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """The verdict for a dashboard or a later CI step: each check with its measured figure (bytes, ms,
        a ratio, an accuracy fraction or points, as its name says), and where thresholds came from."""
        return {"target": self.target, "artifact": self.artifact, "passed": self.passed, "errored": self.errored,
                "checks": [{"name": c.name, "passed": c.passed, "message": c.message, "measured": c.measured,
                            "errored": c.errored} for c in self.checks], "notes": list(self.notes)}
