"""Distillation methods on digits, all in one run, mean ± std over seeds.

1. Losses: a student trained without a teacher vs each registered loss (with the label term), on digits
   and on a harder setting (a student under 5k parameters).
2. int8: onnxruntime post-training quantization of the KD student vs quantization-aware KD exported with
   onnx-int8-qat (accuracy, agreement with the torch QAT model, fp32 student beside them).
3. Pruning: pruning-aware KD to a latency target (measured) vs torch-pruning's own MACs-ratio pruning at
   the same MACs followed by the same fine-tuning; measured latency and accuracy of both.

Writes benchmarks/results/distill_methods.{md,json}.

    .venv/bin/python benchmarks/distill_methods.py [--seeds 3] [--epochs 12]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from results_io import add_force, refuse_replacing, write_results

RESULTS = Path(__file__).parent / "results"
METHODS = ("none", "kd", "dkd", "dist", "hint", "rkd", "at")
STUDENT = {"stem": 12, "widths": [12, 24, 32], "depths": [1, 2, 2], "expands": [3, 3, 3], "kernels": [3, 3, 3]}
TINY = {"stem": 8, "widths": [8, 8, 16], "depths": [1, 1, 1], "expands": [2, 2, 2], "kernels": [3, 3, 3]}
SETTINGS = {  # name -> (mbv2 config, share of training labels kept)
    "digits": (STUDENT, 1.0),
    "10% of the labels": (STUDENT, 0.1),
    "tiny (<5k params)": (TINY, 1.0),
}
WIDE = {"stem": 16, "widths": [32, 48, 64], "depths": [1, 1, 1]}  # resnet student for the pruning study


def _student(cfg: dict, data: Any, seed: int, space: str = "mbv2") -> Any:
    import torch

    from edgekd.search.spaces import SPACES

    torch.manual_seed(seed)
    return SPACES.get(space).build(cfg, data.input_shape, data.num_classes)


def _test_acc(model: Any, data: Any) -> float:
    from edgekd.distill.trainer import accuracy, predict

    return accuracy(predict(model, data.x_test), data.y_test)


def _onnx_acc(path: str, data: Any) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {name: data.x_test[i:i + 256]})[0]
                             for i in range(0, len(data.x_test), 256)])
    return float((logits.argmax(1) == data.y_test).mean()), logits.argmax(1)


def _train(model: Any, data: Any, cfg: Any, teacher: Any, method: str) -> Any:
    return _train_result(model, data, cfg, teacher, method).model


def _train_result(model: Any, data: Any, cfg: Any, teacher: Any, method: str) -> Any:
    from edgekd.distill.trainer import distill

    if method == "none":
        return distill(model, data, cfg, teacher=None, progress=False)
    return distill(model, data, replace(cfg, losses=method), teacher=teacher, progress=False)


def _few_labels(data: Any, share: float, method: str) -> Any:
    """``share`` of the training labels kept (stratified by seed 0). Without a teacher, the student trains on
    the labelled images alone; with one, on every image (teacher soft labels) plus the kept labels."""
    if share >= 1.0:
        return data
    rng = np.random.default_rng(0)
    keep = np.zeros(len(data.y_train), bool)
    for c in np.unique(data.y_train):
        idx = np.flatnonzero(data.y_train == c)
        keep[rng.permutation(idx)[:max(1, round(share * len(idx)))]] = True
    if method == "none":
        return replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])
    return replace(data, y_train=np.where(keep, data.y_train, -1))


def losses_study(data: Any, teacher: Any, base: Any, seeds: int, log: Any) -> dict:
    out: dict[str, dict] = {}
    for setting, (cfg, share) in SETTINGS.items():
        rows = {}
        for method in METHODS:
            train = _few_labels(data, share, method)
            # Trained on fewer images, the no-teacher student gets as many optimizer steps as the others.
            epochs = base.epochs if len(train.y_train) == len(data.y_train) else round(base.epochs / share)
            accs = [_test_acc(_train(_student(cfg, data, s), train, replace(base, seed=s, epochs=epochs), teacher,
                                     method), data) for s in range(seeds)]
            rows[method] = {"mean": statistics.mean(accs), "std": statistics.pstdev(accs), "runs": accs}
            log(f"losses {setting} {method}: {statistics.mean(accs):.4f}")
        params = sum(p.numel() for p in _student(cfg, data, 0).parameters())
        out[setting] = {"params": params, "label_share": share, "methods": rows}
    return out


INT8_SETTINGS = {"digits": STUDENT, "tiny (<5k params)": TINY}


def int8_study(data: Any, teacher: Any, base: Any, seeds: int, qat_epochs: int, log: Any) -> dict:
    settings = {name: _int8_setting(name, cfg, data, teacher, base, seeds, qat_epochs, log)
                for name, cfg in INT8_SETTINGS.items()}
    return {"settings": settings, "qat_epochs": qat_epochs,
            "run": {"date": time.strftime("%Y-%m-%d"), "cpu": _cpu(), "seeds": seeds}}


def _int8_setting(name: str, cfg: dict, data: Any, teacher: Any, base: Any, seeds: int, qat_epochs: int,
                  log: Any) -> dict:
    from edgekd.distill.qat import export_copy
    from edgekd.distill.trainer import predict
    from edgekd.export import ExportRequest, get_exporter

    res: dict[str, list] = {"fp32": [], "ptq": [], "ptq_all_convs": [], "qat_fp32": [], "qat_int8": [],
                            "qat_agreement": [], "qat_best_epoch": []}
    for s in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            kd_result = _train_result(_student(cfg, data, s), data, replace(base, seed=s), teacher, "kd")
            kd = kd_result.model
            fp32 = get_exporter("onnx-fp32")(ExportRequest("fp32", "student", Path(tmp), kd, data.x_val[:1]))
            ptq = get_exporter("onnx-int8")(ExportRequest("ptq", "student", Path(tmp), calibration=data.x_train[:256],
                                                          source=fp32))
            res["fp32"].append(_test_acc(kd, data))
            res["ptq"].append(_onnx_acc(ptq.path, data)[0])
            # The placement QAT trains for: every convolution int8, the first included.
            ptq_all = get_exporter("onnx-int8")(ExportRequest("ptq-all", "student", Path(tmp),
                                                              calibration=data.x_train[:256], source=fp32,
                                                              options={"quantize_first_conv": True}))
            res["ptq_all_convs"].append(_onnx_acc(ptq_all.path, data)[0])
            # QAT fine-tunes the KD student above: its fp32 epochs are that run's, same seed and schedule.
            # Weights in [-127, 127] as onnx-int8 quantizes them for PTQ (the QAT default, [-64, 64], guards
            # x86 CPUs without VNNI, where both would lose alike; the agreement column shows it).
            qat_cfg = replace(base, seed=s, epochs=base.epochs + qat_epochs, qat_epochs=qat_epochs,
                              qat_reduce_range=False)
            qat_result = _train_result(_student(cfg, data, s), data, qat_cfg, teacher, "kd")
            fp32_epochs = [h.val_accuracy for h in qat_result.history[:base.epochs]]
            if fp32_epochs != [h.val_accuracy for h in kd_result.history]:
                raise SystemExit(f"int8 {name} seed {s}: the QAT run's fp32 epochs differ from the KD run's")
            qat = qat_result.model
            res["qat_best_epoch"].append(qat_result.best_epoch)
            art = get_exporter("onnx-int8-qat")(ExportRequest("qat", "student", Path(tmp), qat, data.x_val[:1],
                                                              calibration=data.x_train[:256]))
            acc, pred = _onnx_acc(art.path, data)
            torch_pred = predict(qat, data.x_test).argmax(1)
            res["qat_int8"].append(acc)
            res["qat_fp32"].append(_test_acc(export_copy(qat, fake_quant=False), data))
            res["qat_agreement"].append(float((pred == torch_pred).mean()))
        log(f"int8 {name} seed {s}: fp32 {res['fp32'][-1]:.4f} ptq {res['ptq'][-1]:.4f} "
            f"ptq-all-convs {res['ptq_all_convs'][-1]:.4f} qat {acc:.4f} "
            f"agreement {res['qat_agreement'][-1]:.4f} best epoch {qat_result.best_epoch}")
    params = sum(p.numel() for p in _student(cfg, data, 0).parameters())
    return {**{k: {"mean": statistics.mean(v), "std": statistics.pstdev(v), "runs": v} for k, v in res.items()},
            "params": params, "qat_minus_ptq": _paired(res["qat_int8"], res["ptq"])}


def _paired(a: list[float], b: list[float]) -> dict:
    """Mean paired difference a - b in points, and its standard error."""
    diff = [100 * (x - y) for x, y in zip(a, b)]
    se = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else float("nan")
    return {"mean": statistics.mean(diff), "se": se}


def prune_study(data: Any, teacher: Any, base: Any, seeds: int, profile: Any, ratio: float, log: Any) -> dict:
    import torch_pruning as tp

    from edgekd.distill.prune import PruneConfig, prune_distill
    from edgekd.distill.prune_layers import importance, output_layers
    from edgekd.distill.trainer import distill
    from edgekd.latency.quick_export import measure_modules
    from edgekd.search.cost_features import cost_features

    rows = []
    for s in range(seeds):
        trained = _train(_student(WIDE, data, s, "resnet"), data, replace(base, seed=s), teacher, "kd")
        # The target derives from the start's latency: its p50 in the fastest of three runs, as edgekd's
        # pruning clock reads it, since one run on a shared machine can be 20% slow (0.134-0.171 ms for one
        # architecture in three seeds' single runs here) and slow stretches only add time.
        start_ms = min(measure_modules([trained], profile, "fp32", data.x_train[:64])[0].p50_ms for _ in range(3))
        target = ratio * start_ms
        plan_log: list[str] = []
        ours = prune_distill(copy.deepcopy(trained), data, replace(base, seed=s),
                             PruneConfig(target_ms=target, steps=8, finetune_epochs=base.epochs), profile,
                             teacher=teacher, log=plan_log.append)
        macs = cost_features(ours.model, data.input_shape)[0]
        # torch-pruning's own way: one MACs-ratio prune to the same MACs, then the same fine-tuning.
        baseline = copy.deepcopy(trained)
        full = cost_features(baseline, data.input_shape)[0]
        lo, hi = 0.0, 0.95
        for _ in range(12):  # the channel ratio whose MACs match ours
            mid = (lo + hi) / 2
            probe = copy.deepcopy(trained)
            import torch

            tp.pruner.MetaPruner(probe, torch.zeros(1, *data.input_shape), importance=importance("l2"),
                                 pruning_ratio=mid, ignored_layers=output_layers(probe, data.input_shape)).step()
            lo, hi = (mid, hi) if cost_features(probe, data.input_shape)[0] > macs else (lo, mid)
        tp.pruner.MetaPruner(baseline, torch.zeros(1, *data.input_shape), importance=importance("l2"),
                             pruning_ratio=hi, ignored_layers=output_layers(baseline, data.input_shape)).step()
        baseline = distill(baseline, data, replace(base, seed=s), teacher=teacher, progress=False).model
        # In ms on edgekd's own ruler (the unpruned student's p50 it measured), so the check needs no second
        # absolute time: on this machine two p50 readings of one model differ by up to 20% between calls.
        ours_ms, base_ms = (u * ours.scale_ms for u in _side_by_side(trained, [ours.model, baseline], profile, data))
        row = {"seed": s, "start_ms": start_ms, "target_ms": target, "full_mmacs": full,
               "scale_ms": ours.scale_ms,
               "ours": {"ms": ours_ms, "mmacs": macs, "accuracy": _test_acc(ours.model, data),
                        "steps": len(ours.steps), "own_ms": ours.measured_ms, "ratio": ours.ratio,
                        "stage_ratios": list(ours.stage_ratios), "log": plan_log},
               "macs_ratio": {"ms": base_ms, "mmacs": cost_features(baseline, data.input_shape)[0],
                              "accuracy": _test_acc(baseline, data), "ratio": hi}}
        rows.append(row)
        log(f"prune seed {s}: target {target:.4f} ms; ours {ours_ms:.4f} ms acc {row['ours']['accuracy']:.4f}; "
            f"MACs-ratio {base_ms:.4f} ms acc {row['macs_ratio']['accuracy']:.4f}")
    return {"rows": rows, "run": {"date": time.strftime("%Y-%m-%d"), "cpu": _cpu(), "seeds": seeds}}


def _side_by_side(reference: Any, models: list, profile: Any, data: Any) -> list[float]:
    """Latency of ``models`` in units of the unpruned ``reference``, measured beside it as the pruning
    clock measures (six rotated runs, each model's fastest 10th percentile): an independent look, not
    the tool's own reading."""
    import tempfile

    from edgekd.latency.calibrate import measure_relative
    from edgekd.latency.quick_export import export_for_timing

    with tempfile.TemporaryDirectory(prefix="bench-prune-") as tmp:
        ref, *paths = export_for_timing([reference, *models], "fp32", data.x_train[:64], Path(tmp))
        return measure_relative(paths, profile, ref, rounds=6).units


def _cpu() -> str:
    """The CPU, with whether it has int8 dot-product instructions (VNNI): int8 accuracy and speed depend on it."""
    from edgekd.latency.table import cpu_info

    name, flags = cpu_info()
    if not name and not flags:
        return platform.processor() or platform.machine()
    vnni = any("vnni" in f for f in flags)
    return f"{name or platform.machine()}, {'with' if vnni else 'without'} VNNI"


def _run_line(out: dict, run: dict | None) -> list[str]:
    """Where and when a study ran, and whether the int8 study was rerun on its own."""
    if not run:
        return []
    alone = (" (rerun alone with `--only`: every column of this table is this run's own; the other tables may "
             "come from another run and machine)") if run.get("alone") else ""
    note = f" {run['note'].rstrip('.')}." if run.get("note") else ""
    return [f"Run {run['date']} on {run['cpu']}, {run.get('seeds', out['seeds'])} seeds{alone}.{note}", ""]


def _pm(d: dict | None) -> str:
    return "n/a" if d is None else f"{d['mean'] * 100:.2f} ± {d['std'] * 100:.2f}"


def _markdown(out: dict) -> str:
    lines = ["# Distillation methods (digits)", "",
             f"Resolution {out['resolution']}, {out['epochs']} epochs, {out['seeds']} seeds (mean ± std of test "
             f"accuracy, %). Rerun: `{out['command']}`.", "", "## Losses vs no teacher", "",
             "| setting | params | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for setting, row in out["losses"].items():
        lines.append(f"| {setting} | {row['params']:,} | " + " | ".join(_pm(row["methods"][m]) for m in METHODS)
                     + " |")
    q = out["int8"]
    kept = ", ".join(f"{name} {sum(e == out['epochs'] for e in row['qat_best_epoch']['runs'])} of "
                     f"{len(row['qat_best_epoch']['runs'])}" for name, row in q["settings"].items())
    lines += ["", "## Post-training int8 vs quantization-aware KD", "", *_run_line(out, q.get("run")),
              "PTQ int8 keeps the first convolution in fp32 (the `onnx-int8` default); *PTQ, every conv int8* "
              "quantizes it too, the placement QAT-KD trains for and ships. QAT-KD fine-tunes the KD student "
              f"that PTQ quantizes (its first {out['epochs']} epochs are that run's, checked) for "
              f"{q['qat_epochs']} more epochs with fake quantization, and keeps the calibrated student before "
              f"any QAT step when no QAT epoch validates better (seeds where it did: {kept}). Both use int8 "
              "weights in [-127, 127] (`qat_reduce_range=False`, as `onnx-int8` quantizes). *QAT - PTQ*: mean "
              "paired difference in points ± its standard error.", "",
              "| setting | params | KD fp32 | PTQ int8 (onnx-int8) | PTQ, every conv int8 | QAT-KD fp32 twin | "
              "QAT-KD int8 (onnx-int8-qat) | QAT - PTQ | torch/ONNX agreement |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, r in q["settings"].items():
        d = r["qat_minus_ptq"]
        lines.append(f"| {name} | {r['params']:,} | {_pm(r['fp32'])} | {_pm(r['ptq'])} | {_pm(r['ptq_all_convs'])} | "
                     f"{_pm(r['qat_fp32'])} | {_pm(r['qat_int8'])} | {d['mean']:+.2f} ± {d['se']:.2f} | "
                     f"{r['qat_agreement']['mean'] * 100:.2f}% (min {min(r['qat_agreement']['runs']) * 100:.2f}%) |")
    lines += ["", f"## Pruning-aware KD to a latency target vs MACs-ratio pruning at the same MACs "
              f"(profile {out['profile']})", "", *_run_line(out, out["prune"].get("run")),
              "The unpruned student's ms: as the benchmark measured it to set the target (p50, fastest of three "
              "runs), and edgekd's ruler (the p50 its pruning clock measured). Ours and MACs-ratio: units of the "
              "unpruned student measured beside it afterwards, times edgekd's ruler.", "",
              "| seed | unpruned ms: start / ruler | target ms | ours ms (vs target) | edgekd's own reading | "
              "ours acc | MACs-ratio ms | MACs-ratio acc | MMACs ours / theirs |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in out["prune"]["rows"]:
        o, b = r["ours"], r["macs_ratio"]
        own = f"{o['own_ms']:.4f}" if "own_ms" in o else "n/a"
        ruler = f"{r['scale_ms']:.4f}" if "scale_ms" in r else "n/a"
        lines.append(f"| {r['seed']} | {r['start_ms']:.4f} / {ruler} | {r['target_ms']:.4f} | {o['ms']:.4f} "
                     f"({o['ms'] / r['target_ms'] - 1:+.1%}) | {own} | {o['accuracy'] * 100:.2f} | {b['ms']:.4f} | "
                     f"{b['accuracy'] * 100:.2f} | {o['mmacs']:.2f} / {b['mmacs']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    from edgekd.data import load_data
    from edgekd.profiles import load_profile
    from edgekd.report import tool_versions
    from edgekd.teacher import default_teacher
    from edgekd.types import DistillConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--qat-epochs", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--prune-ratio", type=float, default=0.6, help="latency target as a fraction of the start")
    ap.add_argument("--profile", default="host-cpu-1t")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "distill_methods"))
    ap.add_argument("--run-note", default="",
                    help="said beside the run's date, e.g. what else the machine was running")
    ap.add_argument("--only", choices=("losses", "int8", "prune"),
                    help="rerun one study and keep the others from the existing results file")
    add_force(ap)
    args = ap.parse_args()
    args.force = args.force or bool(args.only)  # these modes add to the results at --out, as asked
    refuse_replacing(args.out, args.force)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {msg}", flush=True)

    data = load_data(None, resolution=args.resolution, seed=0)
    teacher = default_teacher(data, progress=False).module
    base = DistillConfig(epochs=args.epochs, batch_size=64, lr=5e-3, weight_decay=1e-4, augment=False)
    profile = load_profile(args.profile)
    studies = {"losses": lambda: losses_study(data, teacher, base, args.seeds, log),
               "int8": lambda: int8_study(data, teacher, base, args.seeds, args.qat_epochs, log),
               "prune": lambda: prune_study(data, teacher, base, args.seeds, profile, args.prune_ratio, log)}
    out = {"resolution": args.resolution, "epochs": args.epochs, "seeds": args.seeds, "profile": profile.name,
           "machine": f"{platform.machine()}, threads {args.threads}", "versions": tool_versions(),
           "command": "make bench-distill"}
    if args.only:
        previous = json.loads(Path(args.out + ".json").read_text())
        for key in ("resolution", "epochs", "profile"):  # more seeds for one study is fine: it says so
            if previous[key] != out[key]:
                raise SystemExit(f"--only {args.only}: the existing results used {key} {previous[key]}, not "
                                 f"{out[key]}; rerun every study")
        out.update({name: previous[name] for name in studies}, **{args.only: studies[args.only]()}, only=args.only,
                   seeds=previous["seeds"])
        out[args.only].setdefault("run", {})["alone"] = True
        out["seconds"] = {**({"all": previous["seconds"]} if not isinstance(previous["seconds"], dict)
                             else previous["seconds"]), args.only: time.perf_counter() - start}
    else:
        out.update({name: run() for name, run in studies.items()})
        out["seconds"] = time.perf_counter() - start
    if args.run_note:
        for study in ("losses", "int8", "prune"):
            if args.only in (None, study) and isinstance(out.get(study), dict):
                out[study].setdefault("run", {})["note"] = args.run_note
    write_results(args.out, out, _markdown(out), force=args.force)


if __name__ == "__main__":
    main()
