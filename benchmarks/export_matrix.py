"""Export matrix and int8 speed-up: every kind of model through every registered exporter, on digits.

Rows: an mbv2 student with squeeze-excitation, a resnet student (both distilled from the default
teacher), the default teacher pruned to half its channels per stage (then distilled), and the user-style
teacher ``examples/byo_model/se_teacher.py`` (squeeze-excitation, hardswish, grouped convolutions; trained
on the labels). Columns: every exporter in ``edgekd.export`` (``onnx-int8-qat`` exports a QAT twin of the
row: the trained model fine-tuned with quantization-aware epochs).

Each cell: export, the ONNX checker, parity with the torch model it came from (top-1 agreement on the
test split; max |logit difference|, which must stay within 1e-3 for fp32), test accuracy, size, and for
int8 the speed-up over the row's fp32 export: all of a row's artifacts measured interleaved in one run,
``--rounds`` times, median of the per-round p50 ratios. A cell passes when every check passes (int8:
top-1 agreement >= 97% and at least 1.02x faster than fp32, the thresholds of ``edgekd.validate``);
otherwise it names the failed check or the exporter's error.

The second table compares onnxruntime's QDQ quantizer (``onnx-int8``) with Intel Neural Compressor
(``inc``) on the same models, from the same interleaved rounds.

Writes benchmarks/results/export_matrix.{md,json}.

    .venv/bin/python benchmarks/export_matrix.py [--epochs 3] [--qat-epochs 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_io import add_force, refuse_replacing, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SE_TEACHER = Path(__file__).resolve().parents[1] / "examples" / "byo_model" / "se_teacher.py"
QAT = "onnx-int8-qat"
EXPECTED = ("onnx-fp32", "onnx-int8", "inc", QAT)  # reported even when one is not registered
MBV2_SE = {"stem": 16, "widths": [16, 32, 48], "depths": [1, 2, 2], "expands": [4, 4, 4], "kernels": [3, 3, 3],
           "se": [1, 1, 1]}
RESNET = {"stem": 16, "widths": [16, 32, 64], "depths": [1, 2, 2]}
PRUNE_KEEP = 0.5


@dataclass
class Row:
    """One model of the matrix; ``qat`` is its QAT twin, or the reason there is none."""

    name: str
    description: str
    model: Any
    teacher: Any  # what it was distilled from (None: trained on labels); the QAT twin learns from it too
    train_s: float
    qat: Any = None


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _first(exc: BaseException) -> str:
    """The exception's first line (an EdgeKDError's problem; fix), whole."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


# -- rows --------------------------------------------------------------------------------------------------------

def _train(model: Any, data: Any, teacher: Any, config: Any) -> tuple[Any, float]:
    from edgekd.distill.trainer import distill

    start = time.perf_counter()
    result = distill(model, data, config, teacher=teacher, loss="kd" if teacher is not None else None,
                     progress=False)
    return result.model, time.perf_counter() - start


def _se_teacher(num_classes: int) -> Any:
    spec = importlib.util.spec_from_file_location("se_teacher", SE_TEACHER)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.build(num_classes)


def build_rows(data: Any, teacher: Any, epochs: int, seed: int = 0) -> list[Row]:
    """The four models, trained for ``epochs`` (students and the pruned teacher by KD from ``teacher``)."""
    import torch

    from edgekd.search.spaces import SPACES, resolve_space
    from edgekd.types import DistillConfig

    config = DistillConfig(epochs=epochs, lr=5e-3, weight_decay=1e-4, augment=False, seed=seed)
    shape, classes = data.input_shape, data.num_classes
    pruned_space = resolve_space("pruned", teacher, shape)
    plans = [
        ("mbv2-se", f"mbv2 student, squeeze-excitation in every stage {MBV2_SE}",
         lambda: SPACES.get("mbv2").build(MBV2_SE, shape, classes), teacher),
        ("resnet", f"resnet student {RESNET}", lambda: SPACES.get("resnet").build(RESNET, shape, classes), teacher),
        ("pruned-teacher", f"default teacher, {PRUNE_KEEP:.0%} of the channels kept in each of its "
         f"{len(pruned_space.stages)} stages (torch-pruning), distilled",
         lambda: pruned_space.build({"keep": [PRUNE_KEEP] * len(pruned_space.stages)}, shape, classes), teacher),
        ("se-teacher", "examples/byo_model/se_teacher.py: squeeze-excitation, hardswish, grouped convs; "
         "trained on the labels", lambda: _se_teacher(classes), None),
    ]
    rows = []
    for name, description, make, source in plans:
        torch.manual_seed(seed)
        model, seconds = _train(make(), data, source, config)
        _log(f"trained {name} in {seconds:.0f} s ({sum(p.numel() for p in model.parameters()):,} parameters)")
        rows.append(Row(name, description, model, source, seconds))
    return rows


def qat_twin(row: Row, data: Any, qat_epochs: int, seed: int = 0) -> Any:
    """The row's trained model, fine-tuned: one more fp32 epoch, then ``qat_epochs`` quantization-aware."""
    from edgekd.types import DistillConfig

    config = DistillConfig(epochs=qat_epochs + 1, qat_epochs=qat_epochs, lr=1e-3, weight_decay=1e-4,
                           augment=False, seed=seed)
    model, _ = _train(copy.deepcopy(row.model), data, row.teacher, config)
    return model


# -- cells -------------------------------------------------------------------------------------------------------

def run_cell(exporter: str, model: Any, data: Any, out_dir: Path, profile: Any, source: Any = None,
             options: dict[str, Any] | None = None, name: str = "model") -> dict[str, Any]:
    """Export ``model`` with ``exporter`` and check the file: ONNX checker, parity with ``model`` on the test
    split, test accuracy, size. ``source`` is the fp32 Artifact for exporters that start from one. Never raises
    for the exporter's or the model's failures: they become the cell's ``reasons``. Speed comes later
    (``measure_speed``)."""
    from edgekd.export import ExportRequest, get_exporter

    cell: dict[str, Any] = {"exporter": exporter, "status": "FAIL", "reasons": [], "checks": {}}
    request = ExportRequest(f"{name}-{exporter}", "student", out_dir, model, data.x_val[:1],
                            calibration=data.x_train[:256], source=source, options=dict(options or {}))
    start = time.perf_counter()
    try:
        artifact = get_exporter(exporter)(request)
    except Exception as exc:
        cell["export_s"] = time.perf_counter() - start
        cell["reasons"].append(f"export failed: {_first(exc)}")
        return cell
    cell["export_s"] = time.perf_counter() - start
    cell.update(path=artifact.path, precision=artifact.precision, opset=artifact.opset,
                size_bytes=artifact.size_bytes, details=_details(artifact.details))
    cell["checks"]["export"] = True
    _check_file(cell, model, data, profile)
    _settle(cell)
    return cell


def _check_file(cell: dict[str, Any], model: Any, data: Any, profile: Any) -> None:
    from edgekd.distill.trainer import predict
    from edgekd.latency.runtime import open_session, run_batches
    from edgekd.validate import FP32_MAX_ABS_DIFF, INT8_MIN_AGREEMENT, _parity, check_onnx

    ok, message = check_onnx(cell["path"])
    cell["checks"]["checker"] = ok
    if not ok:
        cell["reasons"].append(f"ONNX checker: {message}")
    try:
        logits = run_batches(open_session(cell["path"], profile), data.x_test)
    except Exception as exc:
        cell["checks"]["runs"] = False
        cell["reasons"].append(f"onnxruntime could not run it: {_first(exc)}")
        return
    reference = predict(model, data.x_test)
    parity = _parity(logits, reference, type(model).__name__)
    cell.update(accuracy=float((logits.argmax(1) == data.y_test).mean()),
                torch_accuracy=float((reference.argmax(1) == data.y_test).mean()),
                top1_agreement=parity.top1_agreement, max_abs_diff=parity.max_abs_diff, parity_vs=parity.reference)
    if cell["precision"] == "fp32":
        ok = parity.max_abs_diff <= FP32_MAX_ABS_DIFF
        failed = f"parity: max |logit diff| {parity.max_abs_diff:.2e} > {FP32_MAX_ABS_DIFF:.0e}"
    else:
        ok = parity.top1_agreement >= INT8_MIN_AGREEMENT
        failed = f"parity: top-1 agreement {parity.top1_agreement:.1%} < {INT8_MIN_AGREEMENT:.0%}"
    cell["checks"]["parity"] = ok
    if not ok:
        cell["reasons"].append(failed)


def _settle(cell: dict[str, Any]) -> None:
    cell["status"] = "pass" if cell["checks"] and all(cell["checks"].values()) else "FAIL"


def _details(details: dict[str, Any]) -> dict[str, Any]:
    """What each exporter decided (kept short for the JSON: no operator lists or signatures)."""
    keep = ("format", "calibration", "excluded_nodes", "config", "trials", "tried", "fp32_metric", "int8_metric",
            "folded_weight_quantizers", "scales_carried", "kept_fp32", "fp32_convs", "torch_agreement")
    return {k: details[k] for k in keep if k in details}


def measure_speed(cells: list[dict[str, Any]], profile: Any, shape: tuple[int, ...], rounds: int) -> None:
    """Measure the fp32 cell (first) and every exported int8 cell interleaved, ``rounds`` times; each int8
    cell gets the median of its per-round p50 ratios fp32/int8 and the speed check."""
    from edgekd.latency.measure import measure
    from edgekd.validate import INT8_MIN_GAIN

    fp32, int8 = cells[0], [c for c in cells[1:] if c.get("path")]
    if not fp32.get("path") or not int8:
        return
    runs = [measure([c["path"] for c in [fp32, *int8]], profile, shape) for _ in range(rounds)]
    fp32["p50_ms"], fp32["cv"] = [r[0].p50_ms for r in runs], [r[0].cv for r in runs]
    fp32["speedup"] = 1.0
    for i, cell in enumerate(int8, start=1):
        cell["p50_ms"] = [r[i].p50_ms for r in runs]
        cell["cv"] = [r[i].cv for r in runs]
        cell["speedup_rounds"] = [f / q for f, q in zip(fp32["p50_ms"], cell["p50_ms"])]
        cell["speedup"] = statistics.median(cell["speedup_rounds"])
        ok = cell["speedup"] >= 1 + INT8_MIN_GAIN
        cell["checks"]["speed"] = ok
        if not ok:
            cell["reasons"].append(f"speed: int8 is not faster than fp32 ({cell['speedup']:.2f}x, needs >= "
                                   f"{1 + INT8_MIN_GAIN:.2f}x)")
        _settle(cell)


# -- the run -----------------------------------------------------------------------------------------------------

def available_exporters() -> tuple[list[str], dict[str, str]]:
    """(columns, why a column cannot run): the expected exporters, then any other registered one."""
    from edgekd.export import exporter_names

    names = exporter_names()
    missing = {n: "not registered in edgekd.export.EXPORTERS" for n in EXPECTED if n not in names}
    return list(EXPECTED) + [n for n in names if n not in EXPECTED], missing


def run_row(row: Row, columns: list[str], missing: dict[str, str], data: Any, out: Path, profile: Any,
            args: argparse.Namespace) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    fp32_artifact = None
    for exporter in columns:
        if exporter in missing:
            cells.append({"exporter": exporter, "status": "n/a", "reasons": [f"not available: {missing[exporter]}"],
                          "checks": {}})
            continue
        model, options = row.model, {}
        if exporter == "inc":
            options = {"eval_data": (data.x_val, data.y_val), "tolerable_loss": args.inc_tolerable_loss}
        if exporter == QAT:
            model = row.qat
            if isinstance(model, str):
                cells.append({"exporter": exporter, "status": "FAIL", "reasons": [model], "checks": {}})
                continue
        cell = run_cell(exporter, model, data, out, profile, source=fp32_artifact, options=options, name=row.name)
        if exporter == "onnx-fp32" and cell.get("path"):
            from edgekd.validate import artifact_from_file

            fp32_artifact = artifact_from_file(cell["path"])
        _log(f"{row.name} / {exporter}: {cell['status']} {'; '.join(cell['reasons'])} ({cell['export_s']:.1f} s)")
        cells.append(cell)
    ordered = sorted(cells, key=lambda c: c["exporter"] != "onnx-fp32")  # fp32 first: the speed reference
    try:
        measure_speed([c for c in ordered if c["status"] != "n/a"], profile, (1, *data.input_shape), args.rounds)
    except Exception as exc:  # a failed measurement fails the row's int8 cells, not the run
        for cell in ordered[1:]:
            if cell.get("path"):
                cell["checks"]["speed"] = False
                cell["reasons"].append(f"speed: measurement failed: {_first(exc)}")
                _settle(cell)
    for cell in cells:
        cell.pop("path", None)  # a temporary folder
    return cells


def _attach_qat(rows: list[Row], data: Any, args: argparse.Namespace) -> None:
    for row in rows:
        start = time.perf_counter()
        try:
            row.qat = qat_twin(row, data, args.qat_epochs)
            _log(f"QAT twin of {row.name} in {time.perf_counter() - start:.0f} s")
        except Exception as exc:
            row.qat = f"QAT training failed: {_first(exc)}"
            _log(f"{row.name}: {row.qat}")


def machine() -> dict[str, Any]:
    from edgekd.latency.table import cpu_info

    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor(),
                            "cpu_count": os.cpu_count(), "loadavg_start": list(os.getloadavg())}
    name, flags = cpu_info()
    if name:
        info["cpu"] = name
    if flags:
        info["int8_flags"] = list(flags)
    return info


def main() -> None:
    import torch

    from edgekd.data import load_data
    from edgekd.profiles import load_profile
    from edgekd.teacher import default_teacher

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", default="host-cpu-1t")
    ap.add_argument("--inc-tolerable-loss", type=float, default=0.01)
    ap.add_argument("--out", default=str(RESULTS / "export_matrix"),
                    help="where the table goes: OUT.md and OUT.json (another machine's run beside the recorded one)")
    add_force(ap)
    args = ap.parse_args()
    refuse_replacing(args.out, args.force)
    torch.set_num_threads(1)  # tiny models; the machine is shared
    start, info = time.perf_counter(), machine()
    data, profile = load_data(None), load_profile(args.profile)
    teacher = default_teacher(data, progress=False).module
    columns, missing = available_exporters()
    rows = build_rows(data, teacher, args.epochs)
    if QAT in columns and QAT not in missing:
        _attach_qat(rows, data, args)
    with tempfile.TemporaryDirectory() as tmp:
        matrix = {row.name: run_row(row, columns, missing, data, Path(tmp), profile, args) for row in rows}
    info["loadavg_end"] = list(os.getloadavg())
    settings = {"profile": args.profile, "epochs": args.epochs, "qat_epochs": args.qat_epochs, "rounds": args.rounds,
                "inc_tolerable_loss": args.inc_tolerable_loss, "seed": 0, "data": data.describe()}
    out = assemble(settings, columns, [{"name": r.name, "description": r.description, "train_s": r.train_s,
                                        "parameters": sum(p.numel() for p in r.model.parameters())} for r in rows],
                   matrix, info, time.perf_counter() - start)
    write_results(args.out, out, markdown(out), force=args.force, json_default=_jsonable)


def assemble(settings: dict[str, Any], columns: list[str], rows: list[dict[str, Any]],
             matrix: dict[str, list[dict[str, Any]]], info: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The JSON result: settings, the matrix, the onnx-int8 vs inc table, machine and tool versions."""
    from importlib import metadata

    from edgekd.report import tool_versions

    tools = tool_versions()
    for name in ("neural-compressor", "torchao"):
        try:
            tools[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            tools[name] = "not installed"
    return {**settings, "columns": columns, "rows": rows, "matrix": matrix, "int8_vs_inc": int8_vs_inc(matrix),
            "machine": info, "tools": tools, "seconds": seconds}


def _jsonable(value: Any) -> Any:
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else str(value)


# -- tables ------------------------------------------------------------------------------------------------------

def int8_vs_inc(matrix: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per model: onnx-int8's and inc's speed-up over the same fp32 export, from the same interleaved rounds."""
    out = []
    for row, cells in matrix.items():
        by = {c["exporter"]: c for c in cells}
        ort, inc = by.get("onnx-int8", {}), by.get("inc", {})
        entry: dict[str, Any] = {"model": row}
        for key, cell in (("onnx_int8", ort), ("inc", inc)):
            entry[key] = {k: cell.get(k) for k in ("speedup", "speedup_rounds", "accuracy", "top1_agreement",
                                                   "size_bytes", "status", "reasons")}
        if ort.get("p50_ms") and inc.get("p50_ms"):
            entry["inc_over_ort_p50"] = statistics.median(i / o for i, o in zip(inc["p50_ms"], ort["p50_ms"]))
        details = inc.get("details") or {}
        entry["inc_config"] = details.get("config") and f"{details['config']} (trial {details['trials']})"
        entry["fp32_accuracy"] = by.get("onnx-fp32", {}).get("accuracy")
        out.append(entry)
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _x(cell: dict[str, Any]) -> str:
    rounds = cell.get("speedup_rounds")
    if cell.get("speedup") is None:
        return "-"
    if not rounds:
        return "1.00x (ref)"
    return f"{cell['speedup']:.2f}x ({min(rounds):.2f}-{max(rounds):.2f})"


def _short(cell: dict[str, Any]) -> str:
    speed = _x(cell).split(" (")[0] if cell.get("speedup_rounds") else ""
    if cell["status"] == "pass":
        return f"pass, {speed or 'fp32'}, {_pct(cell.get('accuracy'))}"
    if cell["status"] == "n/a":
        return "n/a"
    what = ", ".join(k for k, ok in cell["checks"].items() if not ok) or "export"
    return f"FAIL ({what}{', ' + speed if speed else ''})"


def markdown(out: dict[str, Any]) -> str:
    columns, matrix = out["columns"], out["matrix"]
    lines = ["## Export matrix (`benchmarks/export_matrix.py`)", "",
             f"Digits at 32x32, profile `{out['profile']}`; models trained {out['epochs']} epochs"
             f" (QAT twins: +1 fp32 and {out['qat_epochs']} QAT epochs). Speed: fp32 and every int8 export of a "
             f"model measured interleaved, {out['rounds']} rounds, median of the per-round p50 ratios fp32/int8. "
             "Pass = exported, ONNX checker, parity (fp32: max |logit diff| <= 1e-3; int8: top-1 agreement >= 97% "
             "with its torch model), and int8 at least 1.02x faster than fp32. `onnx-int8-qat` exports the row's QAT "
             "twin and is compared with that torch model; its accuracy includes the extra epochs.", "",
             "| model | " + " | ".join(f"`{c}`" for c in columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {row} | " + " | ".join(_short(c) for c in cells) + " |" for row, cells in matrix.items()]
    lines += ["", "Each cell: status, speed-up over fp32, test accuracy. Details:", "",
              "| model | exporter | status | export s | top-1 agreement | max abs logit diff | accuracy "
              "(torch) | p50 ms | int8 speed-up (min-max) | size KB | reason |",
              "|---|---|---|---:|---:|---:|---|---:|---|---:|---|"]
    for row, cells in matrix.items():
        for c in cells:
            acc = f"{_pct(c.get('accuracy'))} ({_pct(c.get('torch_accuracy'))})" if c.get("accuracy") else "-"
            diff = f"{c['max_abs_diff']:.1e}" if c.get("max_abs_diff") is not None else "-"
            size = f"{c['size_bytes'] / 1024:.0f}" if c.get("size_bytes") else "-"
            secs = f"{c['export_s']:.1f}" if c.get("export_s") is not None else "-"
            p50 = f"{statistics.median(c['p50_ms']):.3f}" if c.get("p50_ms") else "-"
            lines.append(f"| {row} | `{c['exporter']}` | {c['status']} | {secs} | {_pct(c.get('top1_agreement'))} | "
                         f"{diff} | {acc} | {p50} | {_x(c)} | {size} | {'; '.join(c['reasons']) or '-'} |")
    lines += ["", "Models:", ""] + [f"- **{r['name']}** ({r['parameters']:,} parameters): {r['description']}"
                                    for r in out["rows"]]
    lines += ["", *_inc_table(out), "", _footer(out), ""]
    return "\n".join(lines)


def _inc_table(out: dict[str, Any]) -> list[str]:
    lines = ["## int8 speed-up over fp32: onnxruntime QDQ (`onnx-int8`) vs Intel Neural Compressor (`inc`)", "",
             f"Same models and fp32 export; fp32, onnx-int8 and inc measured interleaved in each of {out['rounds']} "
             f"rounds; medians of the per-round p50 ratios (min-max). inc: accuracy-aware, tolerable loss "
             f"{out['inc_tolerable_loss']:.0%} of the fp32 validation accuracy.", "",
             "| model | onnx-int8 speed-up | inc speed-up | inc p50 / onnx-int8 p50 | accuracy fp32 / onnx-int8 / inc "
             "| inc configuration |", "|---|---|---|---:|---|---|"]
    for e in out["int8_vs_inc"]:
        ratio = f"{e['inc_over_ort_p50']:.2f}" if e.get("inc_over_ort_p50") else "-"
        accs = " / ".join(_pct(a) for a in (e["fp32_accuracy"], e["onnx_int8"]["accuracy"], e["inc"]["accuracy"]))
        speeds = [_x(e[k]) if e[k].get("speedup") is not None else "; ".join(e[k]["reasons"] or ["-"])
                  for k in ("onnx_int8", "inc")]
        lines.append(f"| {e['model']} | {speeds[0]} | {speeds[1]} | {ratio} | {accs} | {e['inc_config'] or '-'} |")
    return lines


def _footer(out: dict[str, Any]) -> str:
    m, t = out["machine"], out["tools"]
    tools = ", ".join(f"{k} {t[k]}" for k in ("torch", "onnx", "onnxruntime", "neural-compressor") if k in t)
    return (f"Machine: {m.get('cpu', m['processor'])}, {m['cpu_count']} cores (int8 instructions: "
            f"{', '.join(m.get('int8_flags', [])) or 'unknown'}), load average {m['loadavg_start'][0]:.1f} at the "
            f"start (a shared machine). {tools}. Took {out['seconds'] / 60:.1f} min.")


if __name__ == "__main__":
    main()
