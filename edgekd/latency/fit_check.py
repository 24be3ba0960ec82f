"""A calibrated table's own accuracy on its device: the whole-network fit cross-validated on the networks
calibration measured.

A table predicts from its blocks' isolated latencies and a fit on whole networks. How well that holds on a
given device is not known in advance: on a quiet machine the recorded tables predicted 95-100% of unseen
students within ±10% on one thread, on a noisier one 72-88% (README, Latency model). Each network is predicted
by a fit made without it (k folds), so the figure needs no measurement beyond calibration's and is printed
with every calibration: a user sees how far to trust the table before a search leans on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgekd.latency.table import LatencyTable

FOLDS = 8
TRUSTED = 0.90  # a table whose left-out networks fall below this share within ±10% comes with advice


@dataclass(frozen=True)
class FitAccuracy:
    precision: str
    networks: int  # calibration networks predicted, each by a fit made without it
    folds: int
    within_5pct: float
    within_10pct: float
    median_abs_err_pct: float

    def line(self) -> str:
        return (f"{self.precision}: {self.within_10pct:.0%} of its {self.networks} calibration networks predicted "
                f"within ±10% when left out of the fit ({self.within_5pct:.0%} within ±5%, median error "
                f"{self.median_abs_err_pct:.1f}%)")

    def advice(self) -> str | None:
        """What to do when the figure is low; None when it is not. A busy device during calibration, or one
        that does not follow the table's form, leaves the search misjudging more candidates' latency."""
        if self.within_10pct >= TRUSTED:
            return None
        return (f"under {TRUSTED:.0%} of the calibration networks were predicted within ±10% ({self.precision}): "
                "the device was probably busy while calibrating; calibrate again with --force while it is idle "
                "(search re-measures its best candidates either way)")


def agreement(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """How close predictions came to measurements: the shares within ±5% and ±10%, and the median error (%)."""
    err = np.abs(np.asarray(predicted) - measured) / measured
    return {"within_5pct": float((err <= 0.05).mean()), "within_10pct": float((err <= 0.10).mean()),
            "median_abs_err_pct": float(np.median(err) * 100)}


def networks_needed(table: LatencyTable, space: Any, folds: int = FOLDS) -> int:
    """The fewest calibration networks ``table``'s fit can be cross-validated on: every fold's fit, made
    without its share of them, needs as many as calibration itself requires (two per feature)."""
    from edgekd.latency.network_fit import feature_names, resolution_levels

    need = 2 * len(feature_names(resolution_levels(space, table.stamp.input_shape, table.stamp.num_classes)))
    count = need
    while count - math.ceil(count / folds) < need:
        count += 1
    return count


def not_cross_validated(table: LatencyTable, space: Any, folds: int = FOLDS) -> str | None:
    """Why ``cross_validate`` gives ``table`` no figure, in one line with the fix; None when it can give one.
    Calibration takes fewer networks than the folds need, and a figure missing without a word reads as an
    oversight, or as a table with nothing to doubt."""
    kept = len(table.networks.get("keys", []))
    if not kept:
        return ("the table keeps no calibration networks to cross-validate (an older edgekd wrote it); calibrate "
                "again with --force for a trust figure")
    needed = networks_needed(table, space, folds)
    if kept < needed:
        return (f"too few networks ({kept}) to cross-validate the table; calibrate with --networks {needed} or more "
                "and --force for a trust figure")
    return None


def cross_validate(table: LatencyTable, space: Any, folds: int = FOLDS) -> list[FitAccuracy]:
    """Per precision, the table's fit re-made ``folds`` times, each time without every ``folds``-th network,
    and scored on the networks it left out. Empty for a table too small to split (or one that kept no
    networks): ``not_cross_validated`` says which."""
    from edgekd.latency.network_fit import fit_relative, network_features, resolution_levels
    from edgekd.latency.predict import apply_fit
    from edgekd.types import StudentSpec

    keys = table.networks.get("keys", [])
    shape, classes = table.stamp.input_shape, table.stamp.num_classes
    levels = resolution_levels(space, shape, classes)
    if not keys or len(keys) < networks_needed(table, space, folds):
        return []
    specs = [StudentSpec.from_key(k) for k in keys]
    fold = np.arange(len(specs)) % folds
    out = []
    for precision, entries in table.entries.items():
        measured = np.asarray(table.networks.get(precision, []), dtype=float)
        if len(measured) != len(specs):
            continue
        rows = np.asarray([network_features(space, entries, s, shape, classes, levels) for s in specs])
        predicted = np.empty_like(measured)
        for k in range(folds):
            coef = fit_relative(rows[fold != k], measured[fold != k])
            predicted[fold == k] = [apply_fit(coef, r) for r in rows[fold == k]]
        out.append(FitAccuracy(precision, len(specs), folds, **agreement(predicted, measured)))
    return out


def trust(table: LatencyTable) -> dict[str, Any]:
    """What `profiles show` adds to a usable table: its cross-validated share of calibration networks predicted
    within ±10% per precision, and the advice a search would print when that is low ({} for a space not
    registered here). A table with no figure keeps the mapping, empty, so readers of it go on working, and
    says why beside it ("left_out_note")."""
    from edgekd.search.spaces import SPACES

    if table.stamp.space not in SPACES.names():
        return {}
    space = SPACES.get(table.stamp.space)
    found = cross_validate(table, space)
    out: dict[str, Any] = {"left_out_within_10pct": {a.precision: round(a.within_10pct, 3) for a in found}}
    if not found and (why := not_cross_validated(table, space)):
        out["left_out_note"] = why
    low = [a for a in found if a.advice()]
    if low:  # one advice naming every low precision: calibration warned of each
        out["advice"] = replace(low[0], precision=", ".join(a.precision for a in low)).advice()
    return out
