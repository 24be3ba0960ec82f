"""Calibrate a profile: measure every block of a search space on the device (fp32 and int8, as
exported and optimised by the runtime), then fit the whole-network correction on measured networks.

Progress is saved after every chunk, so an interrupted calibration resumes where it stopped.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgekd.errors import api_log
from edgekd.fsutil import exclusive, write_json
from edgekd.latency.fit_check import cross_validate, not_cross_validated
from edgekd.latency.network_fit import feature_names, fit_relative, network_features, resolution_levels
from edgekd.latency.quick_export import export_fixed, timing_batch
from edgekd.latency.table import (
    DEFAULT_NETWORKS,
    LatencyTable,
    Stamp,
    block_key,
    save_table,
    source_of,
    table_path,
)
from edgekd.profiles import DeviceProfile
from edgekd.types import StudentSpec

PRECISIONS = ("fp32", "int8")
# A fixed network measured in every chunk. Entries are stored relative to it, so the machine getting
# faster or slower between chunks (2x was seen here under load) cancels out; see STACK.md on drift.
REFERENCE = {"stem": 12, "widths": [12, 24, 32], "depths": [1, 2, 2], "expands": [4, 4, 4], "kernels": [3, 3, 3]}


def partial_path(table: Path) -> Path:
    """Where an unfinished calibration of ``table`` keeps its measurements to resume from."""
    return table.with_name(table.name + ".partial")


def calibrate(profile: DeviceProfile, space_name: str = "mbv2", input_shape: tuple[int, int, int] = (1, 32, 32),
              num_classes: int = 10, networks: int = DEFAULT_NETWORKS, chunk: int = 24, seed: int = 12345,
              path: Path | None = None, log: Callable[[str], None] | None = None, rounds: int = 3,
              force: bool = False) -> LatencyTable:
    """Measure ``space_name``'s blocks and ``networks`` whole networks on ``profile`` (each run ``rounds``
    times, see ``measure_relative``); write and return the table. An interrupted calibration left by another
    profile file of the same name is refused unless ``force`` (then deleted, as one of other settings is)."""
    from edgekd.errors import ConfigError
    from edgekd.latency.runners import probe_device
    from edgekd.search.spaces import SPACES

    if num_classes < 1:
        raise ConfigError(f"--classes {num_classes} is not a number of classes", "pass the classes your model "
                          "predicts, e.g. --classes 10")
    tabled = [n for n in SPACES.names() if hasattr(SPACES.get(n), "all_blocks")]
    if space_name not in SPACES:  # the registry's own error lists spaces this refuses just below
        raise ConfigError(f"unknown search space '{space_name}'", f"choose one of: {', '.join(tabled)}")
    space = SPACES.get(space_name)
    if not hasattr(space, "all_blocks"):
        raise ConfigError(f"the '{space_name}' space has no latency table to calibrate: its networks come from your "
                          "teacher at search time, and search measures some of them to fit their latency (and keeps "
                          "the fit)", f"calibrate one of: {', '.join(tabled)}")
    need = 2 * len(feature_names(resolution_levels(space, input_shape, num_classes)))
    if (most := distinct_networks(space)) < need:  # else "at least" and "at most" below would contradict
        raise ConfigError(f"space '{space_name}' holds {most} different networks, fewer than the {need} the latency "
                          f"model's fit needs at input {'x'.join(map(str, input_shape))}",
                          "search it without a table: search fits a space's latency on the spot from a few of its "
                          "networks")
    if networks < need:
        raise ConfigError(f"--networks {networks} is too few to fit the latency model", f"pass at least {need}")
    if networks > most:
        raise ConfigError(f"--networks {networks} is more than the {most} different networks space '{space_name}' "
                          "holds", f"pass at most {most}")
    probe_device(profile)  # before the reference's export: everything after it measures on the device
    log = api_log(log)
    path = path or table_path(profile, space_name, input_shape, num_classes)
    with exclusive(path.with_name(path.name + ".lock"), f"a calibration of {path.name}"):
        return _calibrate(profile, space, space_name, input_shape, num_classes, networks, chunk, seed, path, log,
                          rounds, force)


def _calibrate(profile: DeviceProfile, space: Any, space_name: str, input_shape: tuple[int, int, int],
               num_classes: int, networks: int, chunk: int, seed: int, path: Path, log: Callable[[str], None],
               rounds: int, force: bool = False) -> LatencyTable:
    partial = partial_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    keys = space.all_blocks(input_shape, num_classes)
    with tempfile.TemporaryDirectory(prefix="edgekd-ref-") as tmp:
        ref = reference_model(input_shape, num_classes, Path(tmp), timing_batch(profile))
        stamp = Stamp.current(profile, space_name, input_shape, num_classes, device_runtime(profile, ref))
        entries, refs, nets, before = _resume(partial, stamp)
        if partial.is_file() and not any(entries.values()) and not nets["keys"]:
            _check_not_anothers(partial, profile, force)
            # kept, it would be named as this run's progress if this run were interrupted before its first save
            log(f"calibrate {profile.name}: {partial} was an interrupted calibration with other settings (the "
                "profile's, onnxruntime's or edgekd's) or is unreadable; deleted, starting over")
            partial.unlink()

        def elapsed() -> float:  # the parts before an interruption count too: the table says what it cost
            return before + time.perf_counter() - start

        def save() -> None:  # the resume point: blocks and networks measured so far, and the time they took
            write_json(partial, {"stamp": stamp.to_dict(), "entries": entries, "refs": refs, "networks": nets,
                                 "seconds": elapsed(), "profile_source": source_of(profile),
                                 # to name the setting that changed when `profiles show` says it cannot resume
                                 "profile_settings": profile.measured_settings()})

        for precision in PRECISIONS:
            todo = [k for k in keys if block_key(k) not in entries[precision]]
            log(f"calibrate {profile.name}: {len(keys) - len(todo)}/{len(keys)} {precision} blocks already measured")
            for i in range(0, len(todo), chunk):
                units, ref_ms = _measure_blocks(space, todo[i:i + chunk], precision, profile, ref, rounds)
                entries[precision].update(units)
                refs.append(ref_ms)
                save()
                log(f"calibrate {profile.name}: {precision} blocks "
                    f"{len(keys) - len(todo) + min(i + chunk, len(todo))}/{len(keys)}")
        fit, net_refs, measured = _fit(space, entries, profile, input_shape, num_classes, networks, seed, ref, log,
                                       rounds, nets, save)
    table = LatencyTable(stamp, entries, fit, networks, elapsed(), float(np.median(refs + net_refs)), measured,
                         profile.measured_settings(), source_of(profile))
    save_table(table, path)
    partial.unlink(missing_ok=True)
    say_trust(table, space, profile.name, log)
    return table


def _check_not_anothers(partial: Path, profile: DeviceProfile, force: bool) -> None:
    """A resume point of another profile file of the same name (its calibration interrupted, on its own board)
    is that profile's progress, not settings this one has left behind: kept unless ``force``."""
    from edgekd.errors import ConfigError
    from edgekd.latency.table import owning_file, shared_name_fix

    other = None if force else owning_file(partial, profile)
    if other is not None:
        raise ConfigError(f"{partial} is an interrupted calibration of profile file {other} (also named "
                          f"'{profile.name}', with other settings), which the same command for that file resumes",
                          shared_name_fix(profile, other))


def say_trust(table: LatencyTable, space: Any, name: str, log: Callable[[str], None]) -> None:
    """How far to trust ``table`` on profile ``name``'s device (its fit cross-validated per precision, with
    advice when low), or in one line why there is no figure: a silent calibration read as one to trust."""
    found = cross_validate(table, space)
    for accuracy in found:
        log(f"calibrate {name}: {accuracy.line()}")
        if advice := accuracy.advice():
            log(f"warning: {advice}")
    if not found and (why := not_cross_validated(table, space)):
        log(f"calibrate {name}: {why}")


def _resume(partial: Path,
            stamp: Stamp) -> tuple[dict[str, dict[str, float]], list[float], dict[str, list], float]:
    """(block entries, reference p50s, networks measured, seconds spent) kept by an interrupted calibration of
    the same stamp; empty ones to start from otherwise (also for a file not as this code writes it)."""
    empty: dict[str, dict[str, float]] = {p: {} for p in PRECISIONS}
    if not partial.is_file():
        return empty, [], _no_networks(), 0.0
    try:
        data = json.loads(partial.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty, [], _no_networks(), 0.0
    # valid JSON that is not the object save() writes ([] or null, cut short or edited by hand): start over
    if not isinstance(data, dict) or data.get("stamp") != stamp.to_dict():  # or another runtime or profile version
        return empty, [], _no_networks(), 0.0
    try:
        nets = data.get("networks") or {}
        kept = {k: list(nets.get(k, [])) for k in ("keys", "refs", *PRECISIONS)}
        if not all(len(kept[p]) == len(kept["keys"]) for p in PRECISIONS):
            kept = _no_networks()  # not as this code writes it: measure the networks again
        entries = {p: dict(data.get("entries", {}).get(p, {})) for p in PRECISIONS}
        refs = list(data.get("refs", []))
        seconds = data.get("seconds", 0.0)
        seconds = float(seconds) if isinstance(seconds, (int, float)) and 0 <= seconds < float("inf") else 0.0
    except (AttributeError, TypeError, ValueError):
        return empty, [], _no_networks(), 0.0
    return entries, refs, kept, seconds


def _no_networks() -> dict[str, list]:
    return {"keys": [], "refs": [], **{p: [] for p in PRECISIONS}}


def reference_model(input_shape: tuple[int, ...], num_classes: int, folder: Path, batch: int = 1) -> Path:
    """The fixed reference network, exported as the pipeline exports students, at ``batch`` (the profile's
    ``timing_batch``: its units must be those of the models timed beside it)."""
    import torch

    from edgekd.search.spaces import SPACES

    torch.manual_seed(0)
    model = SPACES.get("mbv2").build(REFERENCE, tuple(input_shape), num_classes).eval()  # type: ignore[arg-type]
    path = folder / "reference.onnx"
    export_fixed(model, (batch, *input_shape), path)
    return path


def device_runtime(profile: DeviceProfile, ref: Path) -> str:
    """The onnxruntime version the profile's device runs, as it reports it while measuring ``ref``
    (a runner that cannot tell, such as onnxruntime_perf_test, gives "")."""
    from edgekd.latency.measure import measure

    return measure([ref], profile)[0].onnxruntime


class Relative(NamedTuple):
    units: list[float]  # each model's latency in units of the reference's
    ref_ms: float  # the reference's p50 in those runs
    onnxruntime: str  # the runtime version the device reported ("" if it reported none)


def measure_relative(paths: list, profile: DeviceProfile, ref: Path, rounds: int = 1, passes: int = 1) -> Relative:
    """Latency of each model in units of the reference's, measured interleaved with it. The run is
    repeated ``rounds`` times in rotated order (``measure_rotated``) and combined by ``relative_units``;
    with several ``passes`` that whole measurement is repeated and each model keeps its median over the
    passes. Runners that report no p10 (onnxruntime_perf_test) fall back to the median."""
    units, refs, runtime = [], [], ""
    for _ in range(passes):
        runs = measure_rotated(paths, profile, ref, rounds)
        units.append(relative_units(runs))
        refs += [r[0].p50_ms for r in runs]
        runtime = runtime or runs[0][0].onnxruntime
    return Relative([float(u) for u in np.median(units, axis=0)], float(np.median(refs)), runtime)


def passes_for(profile: DeviceProfile) -> int:
    """Measurement passes a profile needs for repeatable units. On one thread one pass repeats itself
    (40 pruned students measured 6 times, 2 minutes apart: every pair of passes agreed within 10% for
    97-100% of them). On several threads sharing this 2-core machine with its neighbours, one pass agreed
    with another for only 80% (fp32) and 85% (int8) of them, while the median of 3 passes agreed with
    the median of 3 others for 93.5% and 99.5%. A multi-threaded run waits for its slowest thread, so any
    device whose cores are not all free gets the three passes; they cost time, not accuracy."""
    return 1 if profile.threads == 1 else 3


def relative_units(runs: list[list[Any]]) -> list[float]:
    """Each model's fastest 10th percentile over the runs over the reference's (``runs``: per run, the
    LatencyStats of [reference, *models]).

    A shared machine's neighbours put it into slow stretches lasting seconds, and a slow stretch does
    not slow models in proportion: measured here, a 0.10 ms student slowed by 31% while its 0.13 ms
    reference slowed by 8%, so a ratio taken inside a slow stretch is wrong whatever percentile it
    uses. Slow stretches only ever add time, so each model keeps the fastest state any run caught.
    Eight repeated 3-run measurements of that pair gave units 0.749-0.764 this way, and 0.747-0.997 as
    the median of per-run ratios (the previous protocol). Within a run the 10th percentile, not the
    median, already skips a neighbour's short bursts."""
    ref = min(undisturbed(r[0]) for r in runs)
    return [min(undisturbed(r[i]) for r in runs) / ref for i in range(1, len(runs[0]))]


def measure_rotated(paths: list, profile: DeviceProfile, ref: Path, rounds: int) -> list[list[Any]]:
    """``rounds`` interleaved runs of the reference and ``paths``, the models' order rotated each run;
    per run, the LatencyStats of [reference, *paths] in the order given."""
    from edgekd.latency.measure import measure

    runs = []
    for r in range(rounds):
        shift = r * len(paths) // rounds
        ref_stats, *stats = measure([ref, *paths[shift:], *paths[:shift]], profile)
        runs.append([ref_stats, *stats[len(paths) - shift:], *stats[:len(paths) - shift]])
    return runs


def undisturbed(stats: Any) -> float:
    return stats.p10_ms or stats.p50_ms


def _measure_blocks(space: Any, keys: list[tuple], precision: str, profile: DeviceProfile,
                    ref: Path, rounds: int = 3) -> tuple[dict[str, float], float]:
    import torch

    batch = timing_batch(profile)
    with tempfile.TemporaryDirectory(prefix="edgekd-calib-") as tmp:
        paths = []
        for i, key in enumerate(keys):
            torch.manual_seed(i)
            module, shape = space.build_block(key)
            shape = (batch, *shape[1:])  # a block runs at the batch its network will
            fp32 = Path(tmp) / f"b{i}.onnx"
            export_fixed(module.eval(), shape, fp32)
            # The int8 exporter keeps stem and classifier in fp32, so only inner blocks are quantized here.
            if precision == "int8" and key[0] not in ("stem", "head"):
                q = Path(tmp) / f"b{i}.int8.onnx"
                _quantize(fp32, shape, q)
                fp32 = q
            paths.append(fp32)
        units, ref_ms, _ = measure_relative(paths, profile, ref, rounds)
    return {block_key(k): u for k, u in zip(keys, units)}, ref_ms


def _quantize(src: Path, shape: tuple[int, ...], out: Path) -> None:
    """Quantize a block exactly as the onnx-int8 exporter quantizes a network (pre-processing included)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekd.quiet import ROOT, quiet

    pre = out.with_suffix(".pre.onnx")
    rng = np.random.default_rng(0)
    batches = iter([{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])

    class Reader:
        def get_next(self) -> dict | None:
            return next(batches, None)

    with quiet(ROOT):
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _fit(space: Any, entries: dict, profile: DeviceProfile, input_shape: tuple[int, int, int], num_classes: int,
         networks: int, seed: int, ref: Path, log: Callable[[str], None], rounds: int,
         nets: dict[str, list] | None = None, save: Callable[[], None] | None = None) -> tuple[dict, list[float], dict]:
    """Least squares of measured network latency on ``network_features``, per precision (reference units);
    also returns the measured networks (spec keys and units), kept in the table for refits and baselines.
    ``nets`` holds the networks measured so far (an interrupted run's), extended and ``save``d chunk by chunk."""
    specs = sample_specs(space, networks, seed)
    measured, refs = measure_networks(specs, profile, input_shape, num_classes, ref, rounds=rounds, done=nets,
                                      save=save, log=lambda m: log(f"calibrate {profile.name}: {m}"))
    levels = resolution_levels(space, input_shape, num_classes)
    fit = {}
    for precision in PRECISIONS:
        rows = np.asarray([network_features(space, entries[precision], spec, input_shape, num_classes, levels)
                           for spec in specs])
        coef = fit_relative(rows, np.asarray(measured[precision]))
        fit[precision] = [float(c) for c in coef]
        terms = " + ".join(f"{c:.4f}*{n}" for c, n in zip(coef, feature_names(levels)))
        log(f"calibrate {profile.name}: {precision} fit = {terms}")
    return fit, refs, {"keys": [s.key() for s in specs], **measured}


def distinct_networks(space: Any) -> int:
    """How many different networks ``space`` holds: every combination of its genes' options."""
    import math

    return math.prod(len(options) for _name, _index, options in space.genes())


def sample_specs(space: Any, n: int, seed: int) -> list[StudentSpec]:
    """``n`` different networks of ``space`` (all it holds, when that is fewer: more would never be drawn)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, StudentSpec] = {}
    want = min(n, distinct_networks(space))
    while len(seen) < want:
        spec = StudentSpec(space.name, space.sample(rng))
        seen.setdefault(spec.key(), spec)
    return list(seen.values())


def measure_networks(specs: list[StudentSpec], profile: DeviceProfile, input_shape: tuple[int, int, int],
                     num_classes: int, ref: Path, chunk: int = 8, rounds: int = 3,
                     done: dict[str, list] | None = None, save: Callable[[], None] | None = None,
                     log: Callable[[str], None] | None = None) -> tuple[dict[str, list[float]], list[float]]:
    """Export each spec as it would run (fp32, and int8 quantized as the onnx-int8 exporter does) and
    measure them, one precision at a time in chunks interleaved with the reference (``rounds`` runs
    each, see ``measure_relative``): the protocol ``benchmarks/latency_predictor.py`` measures with,
    so the fit carries no bias from a different mix of models. Results in reference units, plus the
    reference's p50 in each chunk.

    ``done`` (keys, refs and units per precision) is what an interrupted run measured: the networks it lists,
    when they are the first of ``specs`` and end on a chunk's end, are kept, and the rest are added to it in
    place, ``save`` called after each chunk; ``log`` hears how far it is."""
    import torch

    from edgekd.latency.quick_export import export_for_timing
    from edgekd.search.spaces import build_student

    calib = np.random.default_rng(0).standard_normal((32, *input_shape)).astype(np.float32)
    keys = [s.key() for s in specs]
    state = done if done is not None else _no_networks()
    kept = len(state["keys"])
    if state["keys"] != keys[:kept] or (kept % chunk and kept != len(keys)):  # other networks: start over
        state.update(_no_networks())
        kept = 0
    if kept and log:
        log(f"{kept}/{len(specs)} networks already measured")
    out: dict[str, list[float]] = {p: state[p] for p in PRECISIONS}
    refs: list[float] = state["refs"]
    for start in range(kept, len(specs), chunk):
        models = []
        for i, spec in enumerate(specs[start:start + chunk]):
            torch.manual_seed(i)
            models.append(build_student(spec, input_shape, num_classes).eval())
        for precision in PRECISIONS:
            with tempfile.TemporaryDirectory(prefix="edgekd-nets-") as tmp:
                paths = export_for_timing(models, precision, calib, Path(tmp), prefix="n", batch=timing_batch(profile))
                units, ref_ms, _ = measure_relative(paths, profile, ref, rounds)
            out[precision] += units
            refs.append(ref_ms)
        state["keys"] += keys[start:start + chunk]
        if save:
            save()
        if log:
            log(f"networks {len(state['keys'])}/{len(specs)}")
    return out, refs
