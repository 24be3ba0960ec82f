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
from typing import Any

import numpy as np

from edgekd.fsutil import write_json
from edgekd.latency.quick_export import export_fixed
from edgekd.latency.table import LatencyTable, Stamp, block_key, save_table, table_path
from edgekd.profiles import DeviceProfile
from edgekd.types import StudentSpec

PRECISIONS = ("fp32", "int8")
# A fixed network measured in every chunk. Entries are stored relative to it, so the machine getting
# faster or slower between chunks (2x was seen here under load) cancels out; see STACK.md on drift.
REFERENCE = {"stem": 12, "widths": [12, 24, 32], "depths": [1, 2, 2], "expands": [4, 4, 4], "kernels": [3, 3, 3]}


def calibrate(profile: DeviceProfile, space_name: str = "mbv2", input_shape: tuple[int, int, int] = (1, 32, 32),
              num_classes: int = 10, networks: int = 48, chunk: int = 24, seed: int = 12345,
              path: Path | None = None, log: Callable[[str], None] | None = None) -> LatencyTable:
    """Measure ``space_name``'s blocks and ``networks`` whole networks on ``profile``; write and return the table."""
    from edgekd.errors import ConfigError
    from edgekd.search.spaces import SPACES

    if networks < 2 * len(FEATURES):
        raise ConfigError(f"--networks {networks} is too few to fit the latency model",
                          f"pass at least {2 * len(FEATURES)}")
    log = log or (lambda _m: None)
    space = SPACES.get(space_name)
    path = path or table_path(profile, space_name)
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = Stamp.current(profile, space_name, input_shape, num_classes)
    start = time.perf_counter()
    entries, refs = _resume(partial, stamp)
    keys = space.all_blocks(input_shape, num_classes)
    with tempfile.TemporaryDirectory(prefix="edgekd-ref-") as tmp:
        ref = reference_model(input_shape, num_classes, Path(tmp))
        for precision in PRECISIONS:
            todo = [k for k in keys if block_key(k) not in entries[precision]]
            log(f"calibrate {profile.name}: {len(keys) - len(todo)}/{len(keys)} {precision} blocks already measured")
            for i in range(0, len(todo), chunk):
                units, ref_ms = _measure_blocks(space, todo[i:i + chunk], precision, profile, ref)
                entries[precision].update(units)
                refs.append(ref_ms)
                write_json(partial, {"stamp": stamp.to_dict(), "entries": entries, "refs": refs})  # resume point
                log(f"calibrate {profile.name}: {precision} blocks "
                    f"{len(keys) - len(todo) + min(i + chunk, len(todo))}/{len(keys)}")
        fit, net_refs = _fit(space, entries, profile, input_shape, num_classes, networks, seed, ref, log)
    table = LatencyTable(stamp, entries, fit, networks, time.perf_counter() - start,
                         float(np.median(refs + net_refs)))
    save_table(table, path)
    partial.unlink(missing_ok=True)
    return table


def _resume(partial: Path, stamp: Stamp) -> tuple[dict[str, dict[str, float]], list[float]]:
    empty: dict[str, dict[str, float]] = {p: {} for p in PRECISIONS}
    if not partial.is_file():
        return empty, []
    try:
        data = json.loads(partial.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty, []
    if data.get("stamp") != stamp.to_dict():  # another runtime or profile version: start over
        return empty, []
    return {p: dict(data.get("entries", {}).get(p, {})) for p in PRECISIONS}, list(data.get("refs", []))


def reference_model(input_shape: tuple[int, ...], num_classes: int, folder: Path) -> Path:
    """The fixed reference network, exported as the pipeline exports students."""
    import torch

    from edgekd.search.spaces import SPACES

    torch.manual_seed(0)
    model = SPACES.get("mbv2").build(REFERENCE, tuple(input_shape), num_classes).eval()  # type: ignore[arg-type]
    path = folder / "reference.onnx"
    export_fixed(model, (1, *input_shape), path)
    return path


def measure_relative(paths: list, profile: DeviceProfile, ref: Path) -> tuple[list[float], float]:
    """p50 of each model in units of the reference's p50, measured interleaved in the same run."""
    from edgekd.latency.measure import measure

    stats = measure([ref, *paths], profile)
    ref_ms = stats[0].p50_ms
    return [s.p50_ms / ref_ms for s in stats[1:]], ref_ms


def _measure_blocks(space: Any, keys: list[tuple], precision: str, profile: DeviceProfile,
                    ref: Path) -> tuple[dict[str, float], float]:
    import torch

    with tempfile.TemporaryDirectory(prefix="edgekd-calib-") as tmp:
        paths = []
        for i, key in enumerate(keys):
            torch.manual_seed(i)
            module, shape = space.build_block(key)
            fp32 = Path(tmp) / f"b{i}.onnx"
            export_fixed(module.eval(), shape, fp32)
            # The int8 exporter keeps stem and classifier in fp32, so only inner blocks are quantized here.
            if precision == "int8" and key[0] not in ("stem", "head"):
                q = Path(tmp) / f"b{i}.int8.onnx"
                _quantize(fp32, shape, q)
                fp32 = q
            paths.append(fp32)
        units, ref_ms = measure_relative(paths, profile, ref)
    return {block_key(k): u for k, u in zip(keys, units)}, ref_ms


def _quantize(src: Path, shape: tuple[int, ...], out: Path) -> None:
    """Quantize a block exactly as the onnx-int8 exporter quantizes a network (pre-processing included)."""
    import logging

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice goes to the root logger
    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    src = pre
    rng = np.random.default_rng(0)
    batches = iter([{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])

    class Reader:
        def get_next(self) -> dict | None:
            return next(batches, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _fit(space: Any, entries: dict, profile: DeviceProfile, input_shape: tuple[int, int, int], num_classes: int,
         networks: int, seed: int, ref: Path, log: Callable[[str], None]) -> tuple[dict[str, list[float]], list[float]]:
    """Least squares of measured network p50 on [block sum, block count, 1], per precision (reference units)."""
    specs = sample_specs(space, networks, seed)
    measured, refs = measure_networks(specs, profile, input_shape, num_classes, ref)
    fit = {}
    for precision in PRECISIONS:
        rows = np.asarray([network_features(space, entries[precision], spec, input_shape, num_classes)
                           for spec in specs])
        y = np.asarray(measured[precision])
        # Weighted by 1/y: the error that matters is relative, and small networks must not be ignored.
        coef, *_ = np.linalg.lstsq(rows / y[:, None], np.ones_like(y), rcond=None)
        fit[precision] = [float(c) for c in coef]
        terms = " + ".join(f"{c:.4f}*{n}" for c, n in zip(coef, FEATURES))
        log(f"calibrate {profile.name}: {precision} fit = {terms}")
    return fit, refs


FEATURES = ("block_sum", "inner_block_sum", "blocks", "io_elements_1e4", "1")


def network_features(space: Any, entries: dict[str, float], spec: StudentSpec, input_shape: tuple[int, ...],
                     num_classes: int) -> list[float]:
    """What the whole-network correction is fitted on: the blocks' isolated latencies (all, and inner
    blocks alone, whose quantize/reorder edges a network does not pay), their count, and the tensor
    elements crossing block edges (the layout reorders an isolated block pays)."""
    keys = space.blocks(spec.config, input_shape, num_classes)
    total = sum(entries[block_key(k)] for k in keys)
    inner = sum(entries[block_key(k)] for k in keys if k[0] not in ("stem", "head"))
    io = 0
    for k in keys:
        if k[0] in ("ir", "basic"):  # (kind, cin, cout, stride, ..., h, w)
            (cin, cout, stride), (h, w) = k[1:4], k[-2:]
            io += cin * h * w + cout * ((h - 1) // stride + 1) * ((w - 1) // stride + 1)
    return [total, inner, float(len(keys)), io / 1e4, 1.0]


def sample_specs(space: Any, n: int, seed: int) -> list[StudentSpec]:
    rng = np.random.default_rng(seed)
    seen: dict[str, StudentSpec] = {}
    while len(seen) < n:
        spec = StudentSpec(space.name, space.sample(rng))
        seen.setdefault(spec.key(), spec)
    return list(seen.values())


def measure_networks(specs: list[StudentSpec], profile: DeviceProfile, input_shape: tuple[int, int, int],
                     num_classes: int, ref: Path, chunk: int = 8) -> tuple[dict[str, list[float]], list[float]]:
    """Export each spec as the pipeline does (fp32 and int8) and measure them, one precision at a time in
    chunks interleaved with the reference: the same protocol ``benchmarks/latency_predictor.py`` measures
    with, so the fit carries no bias from a different mix of models. Results in reference units, plus the
    reference's p50 in each chunk."""
    import torch

    from edgekd.export import ExportRequest, get_exporter
    from edgekd.search.spaces import build_student

    fp32_exp, int8_exp = get_exporter("onnx-fp32"), get_exporter("onnx-int8")
    calib = np.random.default_rng(0).standard_normal((32, *input_shape)).astype(np.float32)
    out: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    refs: list[float] = []
    for start in range(0, len(specs), chunk):
        with tempfile.TemporaryDirectory(prefix="edgekd-nets-") as tmp:
            paths: dict[str, list[str]] = {p: [] for p in PRECISIONS}
            for i, spec in enumerate(specs[start:start + chunk]):
                torch.manual_seed(i)
                model = build_student(spec, input_shape, num_classes).eval()
                a = fp32_exp(ExportRequest(f"n{i}", "student", Path(tmp), model, calib[:1]))
                b = int8_exp(ExportRequest(f"n{i}q", "student", Path(tmp), calibration=calib, source=a))
                paths["fp32"].append(a.path)
                paths["int8"].append(b.path)
            for precision in PRECISIONS:
                units, ref_ms = measure_relative(paths[precision], profile, ref)
                out[precision] += units
                refs.append(ref_ms)
    return out, refs
