"""The whole-network correction a calibrated table fits: each network's features (its blocks' isolated latencies
summed by where they run, its block count, the tensors crossing block edges) and the robust least squares on
relative error that maps them to the network's measured latency."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.latency.table import block_key
from edgekd.types import StudentSpec


def fit_relative(rows: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares weighted by 1/y (the error that matters is relative, and small networks must not
    be ignored), refitted without the networks whose measurement was an outlier: residuals beyond
    4 robust standard deviations (and 3%), which a shared machine produces now and then."""
    coef = relative_lstsq(rows, y)
    r = rows @ coef / y - 1.0
    spread = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    keep = np.abs(r) <= max(4.0 * spread, 0.03)
    if keep.sum() >= rows.shape[1] * 2 and not keep.all():
        coef = relative_lstsq(rows[keep], y[keep])
    return coef


def relative_lstsq(rows: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on relative error (rows and targets divided by y)."""
    coef, *_ = np.linalg.lstsq(rows / y[:, None], np.ones_like(y), rcond=None)
    return coef


def resolution_levels(space: Any, input_shape: tuple[int, ...], num_classes: int) -> tuple[tuple[int, int], ...]:
    """The input resolutions the space's inner blocks run at, largest first."""
    found = {tuple(k[-2:]) for k in space.all_blocks(tuple(input_shape), num_classes) if k[0] not in ("stem", "head")}
    return tuple(sorted(found, reverse=True))  # type: ignore[arg-type]


def feature_names(levels: tuple[tuple[int, int], ...]) -> list[str]:
    """The names of ``network_features``' terms, in their order."""
    return ["stem", "head", *(f"blocks_at_{h}x{w}" for h, w in levels), "block_count", "edge_elements_1e4", "1"]


def network_features(space: Any, entries: dict[str, float], spec: StudentSpec, input_shape: tuple[int, ...],
                     num_classes: int, levels: tuple[tuple[int, int], ...]) -> list[float]:
    """What the whole-network correction is fitted on: the blocks' isolated latencies summed by where
    they run (stem, head, inner blocks per input resolution: an isolated block's overheads, such as
    session calls, layout reorders and int8 quantize/dequantize at its edges, weigh differently at
    each size), the block count, and the tensor elements crossing inner block edges (the reorders and
    quantization an isolated block pays at its edges and a network pays once)."""
    keys = space.blocks(spec.config, input_shape, num_classes)
    stem = head = 0.0
    at = dict.fromkeys(levels, 0.0)
    io = 0
    for k in keys:
        value = entries[block_key(k)]
        if k[0] == "stem":
            stem += value
        elif k[0] == "head":
            head += value
        else:
            at[tuple(k[-2:])] += value  # type: ignore[index]
        if k[0] in ("ir", "basic"):  # (kind, cin, cout, stride, ..., h, w)
            (cin, cout, stride), (h, w) = k[1:4], k[-2:]
            io += cin * h * w + cout * ((h - 1) // stride + 1) * ((w - 1) // stride + 1)
    return [stem, head, *at.values(), float(len(keys)), io / 1e4, 1.0]
