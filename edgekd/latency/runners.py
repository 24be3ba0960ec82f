"""Runners: where a profile's models are measured, chosen by the profile's ``[runner] kind``.

``local`` runs the standalone worker (``worker.py``) in a separate Python process on this machine;
``ssh`` and ``adb`` (``remote.py``) copy the worker and the models to a host or an Android device
and run it there. Every command is an argv list.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgekd.errors import ArtifactError, RunnerError
from edgekd.latency.measure import Shapes, per_model
from edgekd.latency.runner_io import call, garbled, json_line, reason, worker_stats
from edgekd.profiles import DeviceProfile, runner_defaults
from edgekd.registry import Registry
from edgekd.types import LatencyStats

WORKER = Path(__file__).with_name("worker.py")


class Runner(Protocol):
    def measure(self, paths: Sequence[str | Path], shape: Shapes = None) -> list[LatencyStats]: ...
    def probe(self) -> None: ...


RUNNERS: Registry[Any] = Registry("runner")


def get_runner(profile: DeviceProfile) -> Runner:
    """The runner the profile's ``[runner] kind`` names, configured by the profile (a profile name or .toml
    path is loaded, as ``search`` takes one)."""
    from edgekd.latency import remote  # noqa: F401  (registers ssh and adb)
    from edgekd.profiles import load_profile

    profile = load_profile(profile)
    return RUNNERS.get(profile.runner.get("kind", "local"))(profile)


def probe_device(profile: DeviceProfile) -> None:
    """Ask a remote profile's device one quick question before a stage spends its first minute on data, a
    teacher and exports, when every such stage ends up measuring on the device: one that is not there, or lacks
    what the profile measures with, fails in seconds with the words a measurement would use. This host's
    runner checks that this onnxruntime has the profile's providers."""
    get_runner(profile).probe()


def _settings(profile: DeviceProfile) -> dict[str, Any]:
    return {**runner_defaults(profile.runner.get("kind", "local")), **profile.runner}


def _existing(paths: Sequence[str | Path]) -> list[Path]:
    out = [Path(p) for p in paths]
    for path in out:
        if not path.is_file():
            raise ArtifactError(f"model file '{path}' does not exist", "check the path")
    return out


def _spec(models: Sequence[str], labels: Sequence[Path], shape: Shapes,
          profile: DeviceProfile) -> dict[str, Any]:
    shapes = per_model(shape, len(models))
    # one shape for all is written as before; models fed other shapes get "shapes", one per model
    each = {} if len(set(shapes)) <= 1 else {"shapes": [list(s) if s else None for s in shapes]}
    return {"models": list(models), "labels": [str(p) for p in labels],
            "shape": list(shapes[0]) if shapes and shapes[0] and not each else None, **each,
            "runtime": dict(profile.runtime), "measure": dict(profile.measure),
            # The worker stops itself past this: killing the local ssh or adb leaves the remote side running.
            "timeout_s": float(_settings(profile)["timeout_s"])}


@RUNNERS.register("local")
@dataclass(frozen=True)
class LocalRunner:
    """The worker in a separate Python process (this interpreter) on this machine."""

    profile: DeviceProfile

    def probe(self) -> None:
        """The profile's providers, which this host's onnxruntime must have (the worker runs on this very
        Python): checked in milliseconds, before a stage loads its data and teacher, not at its first
        measurement."""
        from edgekd.latency.runtime import check_providers

        check_providers(self.profile)

    def measure(self, paths: Sequence[str | Path], shape: Shapes = None) -> list[LatencyStats]:
        models = _existing(paths)
        if not models:
            return []
        timeout = float(_settings(self.profile)["timeout_s"])
        where = "the local latency worker"
        with tempfile.TemporaryDirectory(prefix="edgekd-run-") as tmp:
            spec = Path(tmp) / "spec.json"
            # absolute, links not followed: onnxruntime tells an ORT-format file by its .ort name, which a link
            # into an object store (DVC, Bazel) has and its target often lacks
            spec.write_text(json.dumps(_spec([str(p.absolute()) for p in models], models, shape, self.profile)),
                            encoding="utf-8")
            proc = call([sys.executable, str(WORKER), str(spec)], timeout, where, "measuring",
                         "raise runner.timeout_s in the profile or measure fewer models")
        data = json_line(proc.stdout)
        if data is None:
            if proc.returncode != 0:
                raise RunnerError(f"{where} failed (exit {proc.returncode}): {reason(proc)}",
                                  "check that numpy and onnxruntime import in this Python")
            raise garbled(proc.stdout)
        return worker_stats(data, proc.stdout, len(models), None)


def _stage(models: Sequence[Path], folder: Path) -> list[str]:
    """Lay the models out in ``folder`` as m0/model.onnx, m1/..., each with the external data files it
    names, at the same place beside it; relative paths. An ORT-format file keeps its .ort suffix, by which
    onnxruntime tells the format."""
    import onnx

    from edgekd.onnxfile import external_files

    rel = []
    for i, path in enumerate(models):
        sub = folder / f"m{i}"
        sub.mkdir()
        is_ort = path.suffix.lower() == ".ort"  # one flatbuffer file: no protobuf, no external data
        name = "model.ort" if is_ort else "model.onnx"
        _place(path, sub / name)
        try:
            data_files = [] if is_ort else external_files(path, onnx.load(str(path), load_external_data=False))
        except Exception:  # not a readable model: the device's runtime says so, in the error measure raises
            data_files = []
        for data in data_files:
            staged = sub / data.relative_to(path.parent)  # the location the model refers to, kept
            staged.parent.mkdir(parents=True, exist_ok=True)
            _place(data, staged)
        rel.append(f"m{i}/{name}")
    return rel


def _place(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
