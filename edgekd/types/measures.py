"""What a student must meet (Budget), what a latency measurement found (LatencyStats), and how two models
measured together compare (Ratio)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from edgekd.errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """What the deployed student must meet. ``None`` means unconstrained. Accuracy is measured on the
    data's test split: ``min_accuracy`` as a fraction, ``max_accuracy_drop`` in percentage points below the
    teacher measured in the same validation."""

    latency_ms: float | None = None
    max_size_kb: float | None = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None

    def __post_init__(self) -> None:
        flags = {"latency_ms": "--budget-ms", "max_size_kb": "--max-size-kb", "min_accuracy": "--min-accuracy",
                 "max_accuracy_drop": "--max-accuracy-drop"}
        for name, flag in flags.items():
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"{flag} must be a number, got {value!r}", "pass a positive number")
        for name, flag in (("latency_ms", "--budget-ms"), ("max_size_kb", "--max-size-kb")):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{flag} must be positive, got {value:g}", f"pass {flag} greater than 0")
        if self.min_accuracy is not None and not 0 < self.min_accuracy <= 1:
            raise ConfigError(f"--min-accuracy is a fraction in (0, 1], got {self.min_accuracy:g}",
                              "pass e.g. 0.97 for 97%")
        if self.max_accuracy_drop is not None and not 0 <= self.max_accuracy_drop < 100:
            raise ConfigError(f"--max-accuracy-drop is in percentage points below the teacher, got "
                              f"{self.max_accuracy_drop:g}", "pass e.g. 1.0 to allow one point less than the teacher")

    @property
    def max_bytes(self) -> int | None:
        """``max_size_kb`` in bytes (1 KB = 1024 bytes), what file sizes are compared with; None when unlimited."""
        return None if self.max_size_kb is None else int(self.max_size_kb * 1024)

    @property
    def checks_accuracy(self) -> bool:
        return self.min_accuracy is not None or self.max_accuracy_drop is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        return cls(**data)


@dataclass(frozen=True)
class LatencyStats:
    """A latency distribution measured on a profile's runtime, in milliseconds."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    cv: float  # coefficient of variation of the per-repeat medians
    runs: int
    repeats: int
    onnxruntime: str = ""  # the runtime version that measured it, as the device reported it ("" if unknown)
    # The undisturbed latency on a shared machine (see calibrate.measure_relative); 0 when the runner
    # cannot tell (onnxruntime_perf_test prints no low percentile).
    p10_ms: float = 0.0
    # Each repeat's median, in measuring order. Models measured together took turns repeat by repeat, so
    # their k-th repeats ran moments apart and pair up (see latency.compare); empty when not reported.
    repeat_p50_ms: tuple[float, ...] = ()
    # The input shape the runner fed, batch first: a model with a fixed batch runs at it whatever the profile's
    # measure.batch_size, so two models' times may be for different work. Empty when not reported.
    input_shape: tuple[int, ...] = ()

    @property
    def batch(self) -> int | None:
        """The batch the latency is for; None when the runner did not report its input shape."""
        return self.input_shape[0] if self.input_shape else None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["repeat_p50_ms"] = list(self.repeat_p50_ms)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        return cls(**{**data, "repeat_p50_ms": tuple(float(x) for x in data.get("repeat_p50_ms") or ()),
                      "input_shape": tuple(int(x) for x in data.get("input_shape") or ())})


MIN_PAIRS = 6  # fewer paired samples cannot bracket a median with 95% confidence, whatever their values


@dataclass(frozen=True)
class Ratio:
    """One model's latency over another's, measured together: the median of their repeat-by-repeat ratios
    and a ~95% interval around it (see latency.compare)."""

    median: float
    low: float
    high: float
    pairs: int  # paired samples behind it (one per repeat, or one per run when repeats are not reported)

    def straddles(self, limit: float) -> bool:
        """The interval holds ``limit``: the data cannot yet tell which side the true ratio is on."""
        return self.low <= limit < self.high

    @property
    def confident(self) -> bool:
        return self.pairs >= MIN_PAIRS

    def interval(self, decimals: int = 2) -> str:
        """The interval in words, with ``decimals`` decimals: as many as the ratio it goes with is shown with,
        so that "1.02-1.02x" never sits beside a verdict drawn at 1.020x."""
        bounds = f"{self.low:.{decimals}f}-{self.high:.{decimals}f}x"
        if self.confident:
            return f"95% interval {bounds}"
        return f"range {bounds} (too few paired repeats for a 95% interval)"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ratio:
        """From ``to_dict``'s keys; other keys beside them (a manifest's per-run list) are ignored."""
        return cls(float(data["median"]), float(data["low"]), float(data["high"]), int(data["pairs"]))
