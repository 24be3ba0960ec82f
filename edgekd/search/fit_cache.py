"""Latency fits of uncalibrated spaces, kept between runs.

Fitting a space measures 32 of its networks: half a minute on 16x16 digits, minutes at 224x224, paid
again by every ``compress`` or ``search`` of the same teacher on the same profile. A fit is kept in the
cache under everything that decides what was measured: the anchor networks themselves (each one's
module structure and every convolution's channels, kernel and output size, from a forward pass), the
precision, input shape and classes, the profile's measuring settings, and for a local profile the
onnxruntime version and the CPU (a remote device's version is checked when the fit is reused, see
``Fit.onnxruntime``). Weights and calibration images are not part of it: they change no
layer's shape, and so no kernel the runtime picks. A fit is kept in units of the reference network, so
a reused one is converted with today's reference p50, as a calibrated table is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekd.profiles import DeviceProfile

FIT_VERSION = 4  # bump when what a fit holds, or how it is measured, changes (2: layer terms; 3: int8 depthwise;
# 4: int8 quantizes a first fully connected layer)

Records = tuple[tuple[int, int, int, int, int], ...]


@dataclass(frozen=True)
class Fit:
    """Latency in units of the reference network, fitted on measured anchor networks."""
    layout: str  # one of cost_features.LAYOUTS
    coef: tuple[float, ...]
    floor: float  # no prediction goes below this many units
    records: tuple[Records, ...]  # per anchor network, as cost_features.conv_records
    units: tuple[float, ...]  # per anchor network, measured
    ref_ms: float  # the reference's p50 in the fitting runs
    measured: str  # when, as an ISO date and time (said when the fit is reused)
    # The runtime version the device reported while measuring. A local profile's key holds this host's
    # version already; a remote device says its version only when it measures, so a reused fit is
    # checked against the reference measured that day ("" in fits kept before it was recorded).
    onnxruntime: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fit:
        return cls(str(d["layout"]), tuple(float(c) for c in d["coef"]), float(d["floor"]),
                   tuple(tuple(tuple(int(v) for v in r) for r in net) for net in d["records"]),
                   tuple(float(u) for u in d["units"]), float(d["ref_ms"]), str(d["measured"]),
                   str(d.get("onnxruntime", "")))


def fit_key(space: str, models: list[Any], records: list[list[tuple[int, ...]]], profile: DeviceProfile,
            input_shape: tuple[int, int, int], num_classes: int, precision: str) -> str:
    from edgekd import __version__
    from edgekd.latency.quick_export import timing_batch
    from edgekd.latency.table import host_cpu, host_runtime

    parts: list[Any] = [FIT_VERSION, __version__, space, precision, list(input_shape), num_classes,
                        [repr(m) for m in models], records, profile.digest()]
    if profile.is_local:  # "this host": an upgrade or another CPU measures anew
        parts += [host_runtime(), host_cpu()]
    batch = timing_batch(profile)
    if batch != 1:  # fits kept under this digest before they were timed at its batch measured batch 1
        parts.append({"batch": batch})
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def fit_path(key: str) -> Path:
    from edgekd.teacher import cache_dir

    return cache_dir() / "latency-fits" / f"{key}.json"


def load_fit(key: str) -> Fit | None:
    """The fit kept under ``key``, or None; an unreadable entry is dropped, never trusted."""
    path = fit_path(key)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != FIT_VERSION:
            raise ValueError("another fit version")
        return Fit.from_dict(data["fit"])
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None


def save_fit(key: str, fit: Fit, about: dict[str, Any]) -> str | None:
    """Keep ``fit`` (written atomically); ``about`` says in words what it was measured for. Returns the
    warning to log when it could not be kept, or None: a cache must not cost the search it served."""
    from edgekd.fsutil import write_json
    from edgekd.teacher import uncached_warning

    path = fit_path(key)
    try:
        write_json(path, {"version": FIT_VERSION, "about": about, "fit": asdict(fit)})
    except OSError as exc:
        return uncached_warning("the latency fit could not be kept for the next run", path, exc)
    return None
