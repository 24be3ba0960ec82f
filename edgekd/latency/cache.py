"""Measurement cache keyed by (model sha256s, profile digest, input shape, and for a local profile the
onnxruntime version and the CPU).

Models measured together are cached together: a ratio is only meaningful between models measured
in the same interleaved run, so a cached comparison is never stitched from two separate runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from edgekd.errors import api_log
from edgekd.fsutil import sha256, write_json
from edgekd.latency.measure import Shapes, per_model
from edgekd.profiles import DeviceProfile
from edgekd.types import LatencyStats


def _key(paths: Sequence[str | Path], profile: DeviceProfile, shape: Shapes) -> str:
    from edgekd.latency.table import host_cpu, host_runtime
    from edgekd.onnxfile import model_files

    shapes = per_model(shape, len(paths))
    fed = shapes[0] if len(set(shapes)) <= 1 else tuple(shapes)  # one shape for all: keyed as it always was
    # External weights are part of the model: an edited data file must measure anew, like an edited .onnx.
    parts = [",".join(sha256(f) for f in model_files(p)) for p in paths] + [profile.digest(),
                                                                          repr(fed if shapes else None)]
    if profile.is_local:  # "this host": an upgrade or another CPU measures anew
        parts += [host_runtime(), host_cpu()]
    # A remote device is known only by its profile's settings (runner.host, runner.serial): which board answers
    # there, and its runtime, cannot be seen without measuring, so bench's cached line says when to pass --no-cache.
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _path(key: str) -> Path:
    from edgekd.teacher import cache_dir

    return cache_dir() / "latency" / f"{key}.json"


def measure_cached(paths: Sequence[str | Path], profile: DeviceProfile, shape: Shapes = None,
                   use_cache: bool = True,
                   log: Callable[[str], None] | None = None) -> tuple[list[LatencyStats], bool]:
    """Measure (or recall) ``paths`` on ``profile``; returns (stats, came_from_cache). ``log`` hears when
    the result could not be cached: an unwritable cache must not cost the measurement."""
    from edgekd.latency.measure import measure
    from edgekd.teacher import uncached_warning

    key = _key(paths, profile, shape)
    path = _path(key)
    if use_cache and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            cached = [LatencyStats.from_dict(d) for d in data["stats"]]
            if all(s.input_shape for s in cached):  # else from before the fed shape was kept: measure anew
                return cached, True
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # a corrupt entry is dropped, never trusted
    stats = measure(paths, profile, shape)
    if not noisy(stats, profile):  # a noisy stretch is not remembered: the next call measures again
        try:
            write_json(path, {"profile": profile.name, "models": [str(p) for p in paths],
                              "stats": [s.to_dict() for s in stats]})
        except OSError as exc:
            api_log(log)(uncached_warning("the measurement could not be cached", path, exc))
    return stats, False


def noisy(stats: Sequence[LatencyStats], profile: DeviceProfile) -> list[int]:
    """Indices of the measurements whose per-repeat medians still vary more than the profile's
    ``measure.max_cv`` after the runner measured twice as long."""
    limit = float(profile.measure["max_cv"])
    return [i for i, s in enumerate(stats) if s.cv > limit]
