"""The search's ruler: the fixed reference network, measured at the start of a search and beside every
batch of candidates it times, so that every latency the search compares is on one scale.

A shared machine's speed swings within seconds with no load of its own: here the reference network's median
over 200 runs ranged 0.069-0.120 ms across 12 batches half a second apart, in one process and one session, and
the same five pruned students read 0.28-0.43 ms in one run and 0.50-0.84 ms in another. Milliseconds from two
runs are therefore not comparable, while models timed in the same interleaved run share most of the swing (ten
runs of five students beside the reference: 86% of their readings within 10% of their median in units of it,
68% in milliseconds). So each candidate
is measured in units of the reference timed beside it, and the search converts units to milliseconds with one
figure for the whole search: the median p50 of the reference over ``START_RUNS`` separate runs at its start,
the same figure that converts the latency model's predictions. A candidate timed in a fast stretch and one
timed in a slow stretch are then judged against the budget alike.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.profiles import DeviceProfile

START_RUNS = 5  # separate runs of the reference the search's milliseconds come from (about 2 s on a host)


class Ruler:
    def __init__(self, profile: DeviceProfile, input_shape: tuple[int, int, int], num_classes: int) -> None:
        from edgekd.latency.quick_export import timing_batch

        self.profile = profile
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.batch = timing_batch(profile)  # what everything timed beside the reference is exported and fed at
        self.readings: list[Any] = []  # the reference's LatencyStats, one per run, in order
        self._ms: float | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._path: Path | None = None

    def __enter__(self) -> Ruler:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._folder is not None:
            self._folder.cleanup()
            self._folder, self._path = None, None

    def reference(self) -> Path:
        """The reference network's file, exported once per search."""
        if self._path is None:
            from edgekd.latency.calibrate import reference_model

            self._folder = tempfile.TemporaryDirectory(prefix="edgekd-ref-")
            self._path = reference_model(self.input_shape, self.num_classes, Path(self._folder.name), self.batch)
        return self._path

    def ms(self) -> float:
        """The reference's p50 that converts units to milliseconds: the median over the first ``START_RUNS``
        runs, measured on first use and fixed for the rest of the search."""
        if self._ms is None:
            from edgekd.latency.measure import measure

            while len(self.readings) < START_RUNS:
                self.readings.append(measure([self.reference()], self.profile)[0])
            self._ms = float(np.median([r.p50_ms for r in self.readings[:START_RUNS]]))
        return self._ms

    def runtime(self) -> str:
        """The onnxruntime version the device reported while timing the reference ("" if it reports none)."""
        self.ms()
        return next((r.onnxruntime for r in self.readings if r.onnxruntime), "")

    def measure(self, paths: Sequence[Path], sample_shape: Sequence[int] | None = None) -> list[tuple[Any, float]]:
        """Time ``paths`` interleaved with the reference in one run, fed inputs of ``sample_shape`` (C, H, W) at
        the profile's batch: per path, its LatencyStats and its p50 in units of the reference's p50 in that run."""
        from edgekd.latency.measure import measure

        shape = (self.batch, *sample_shape) if sample_shape is not None else None
        ref, *stats = measure([self.reference(), *paths], self.profile, shape)
        self.readings.append(ref)
        return [(s, s.p50_ms / ref.p50_ms) for s in stats]

    def spread(self) -> tuple[float, float]:
        """The fastest and slowest p50 the reference read during the search (0, 0 before any)."""
        p50 = [r.p50_ms for r in self.readings] or [0.0]
        return min(p50), max(p50)
