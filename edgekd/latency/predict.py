"""Predict a student's latency on a profile from its calibrated block table (no measurement).

predicted = a linear function of the blocks' isolated latencies (see ``network_features``), fitted
on whole networks measured during calibration: isolated blocks pay session overhead, layout reorders
and (for int8) quantize/dequantize at their edges that a whole network pays once.

Everything is in units of a fixed reference network measured interleaved with each chunk, so the
machine's drift between chunks cancels out. Milliseconds = units x the reference's p50: the one
from calibration by default, or a fresh measurement of it (``reference_ms``) to follow today's machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgekd.errors import ProfileError
from edgekd.latency.network_fit import network_features, resolution_levels
from edgekd.latency.table import LatencyTable
from edgekd.types import StudentSpec


class LatencyPredictor:
    def __init__(self, table: LatencyTable, space: Any) -> None:
        self.table = table
        self.space = space
        self._shape = table.stamp.input_shape
        self._classes = table.stamp.num_classes
        self._levels = resolution_levels(space, self._shape, self._classes)

    def predict(self, spec: StudentSpec, precision: str = "fp32", reference_ms: float | None = None) -> float:
        """Predicted p50 in milliseconds for ``spec`` deployed at ``precision`` ("fp32" or "int8")."""
        return self.predict_units(spec, precision) * (reference_ms or self.table.reference_ms)

    def predict_units(self, spec: StudentSpec, precision: str = "fp32") -> float:
        """Predicted p50 in units of the reference network's p50."""
        entries = self.table.entries.get(precision)
        if entries is None:
            raise ProfileError(f"latency table has no '{precision}' entries", "recalibrate the profile")
        try:
            features = network_features(self.space, entries, spec, self._shape, self._classes, self._levels)
        except KeyError as exc:
            raise ProfileError(f"latency table lacks block {exc.args[0]}",
                               "recalibrate: the search space changed since calibration") from None
        fit = self.table.fit[precision]
        if len(fit) != len(features):
            raise ProfileError("latency table was fitted on other features", "recalibrate the profile")
        return apply_fit(fit, features)


def apply_fit(fit: Sequence[float], features: Sequence[float]) -> float:
    """A network's latency in reference units from its ``network_features`` and a fit's coefficients."""
    value = sum(c * f for c, f in zip(fit, features))
    # A network never costs less than a fraction of its isolated blocks; guards extrapolation.
    return max(value, 0.1 * sum(features[:-3]))
