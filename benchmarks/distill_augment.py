"""Distillation with and without random shifts of the training images (``augment``), on digits with compress's
other distillation defaults: the same students and seeds as ``distill_selection.py``.

With augmentation the teacher labels every shifted batch afresh (its outputs cannot be computed once), so the
student learns the teacher's function on images it has not seen, at the cost of a teacher pass per batch. Each
(student, seed) is distilled once per setting, paired by seed.

``--baseline results/distill_selection.json`` takes the no-augmentation runs from that record instead of training
them again (its *best* columns are exactly those runs); the script refuses a record of other seeds, epochs or
teacher accuracy.

Writes benchmarks/results/distill_augment.{md,json}.

    .venv/bin/python benchmarks/distill_augment.py [--seeds 1,2,3,4,5] [--baseline PATH]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_selection import (  # noqa: E402
    STUDENTS,
    _cpu,
    accuracy_cell,
    arguments,
    diff_cell,
    distil_one,
    near_teacher_cell,
    paired_summary,
    pairs_line,
    setup,
    student_lines,
)
from results_io import add_force, refuse_replacing, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "distill_augment"
SETTINGS = ("plain", "augment")


def _train(cfg: dict, seed: int, epochs: int, augment: bool, data: Any, teacher: Any) -> dict:
    from edgekd.pipeline import CompressConfig

    config = CompressConfig(epochs=epochs, seed=seed, augment=augment).distill_config()
    done, result = distil_one(cfg, seed, config, data, teacher)
    return {**done, "params": sum(p.numel() for p in result.model.parameters())}


def baseline_runs(path: Path, students: list[str], seeds: list[int], epochs: int, teacher_acc: float) -> dict:
    """(student, seed) -> the no-augmentation run recorded by distill_selection.py (its *best* rule)."""
    record = json.loads(path.read_text())
    meta = record["meta"]
    if meta["epochs"] != epochs or abs(record["teacher_test"] - teacher_acc) > 1e-9 or meta["cpu"] != _cpu():
        raise SystemExit(f"{path} was run on {meta['cpu']} with {meta['epochs']} epochs and a teacher at "
                         f"{record['teacher_test']:.4f}, not on {_cpu()} with {epochs} and {teacher_acc:.4f}: "
                         "run without --baseline")
    runs = {(r["student"], r["seed"]): {**r["best"], "params": r["params"]} for r in record["rows"]}
    missing = [(s, n) for s in students for n in seeds if (s, n) not in runs]
    if missing:
        raise SystemExit(f"{path} has no run for {missing[0][0]} seed {missing[0][1]}: run without --baseline")
    return runs


def run(students: dict[str, dict], seeds: list[int], epochs: int, baseline: Path | None = None,
        log: Any = print) -> dict:
    from edgekd.report import tool_versions

    data, teacher, teacher_acc = setup()
    recorded = baseline_runs(baseline, list(students), seeds, epochs, teacher_acc) if baseline else {}
    rows = []
    for name, cfg in students.items():
        for seed in seeds:
            plain = recorded.get((name, seed)) or _train(cfg, seed, epochs, False, data, teacher)
            row = {"student": name, "seed": seed, "params": plain["params"], "plain": plain,
                   "augment": _train(cfg, seed, epochs, True, data, teacher)}
            rows.append(row)
            log(f"{name} seed {seed}: plain {plain['test']:.4f}, augment {row['augment']['test']:.4f}")
    return {"teacher_test": teacher_acc, "rows": rows, "summary": summarise(rows, teacher_acc),
            "meta": {"date": time.strftime("%Y-%m-%d"), "cpu": _cpu(), "seeds": seeds, "epochs": epochs,
                     "baseline": str(baseline) if baseline else None, "test_images": len(data.y_test),
                     "recipe": "compress defaults: KD T=4 alpha 0.9, lr 5e-3 one-cycle, batch 64, best epoch",
                     "tools": tool_versions()}}


def summarise(rows: list[dict], teacher_acc: float) -> dict:
    return paired_summary(rows, SETTINGS, teacher_acc)


def markdown(record: dict) -> str:
    meta = record["meta"]
    source = (f" The no-augmentation runs are `{Path(meta['baseline']).name}`'s *best* runs (same seeds, recipe "
              "and teacher), their seconds from that run.") if meta["baseline"] else ""
    lines = ["# Distillation with and without augmentation (digits)", "",
             f"Run {meta['date']} on {meta['cpu']}; seeds {', '.join(map(str, meta['seeds']))}; {meta['epochs']} "
             f"epochs, {meta['recipe']}; teacher (this machine's default) {record['teacher_test'] * 100:.2f}% on "
             f"{meta['test_images']} test images.{source} Rerun: `python benchmarks/distill_augment.py`.", "",
             "*augment*: every training batch shifted by up to 2 pixels, the teacher labelling each shifted batch. "
             "Test accuracy, mean ± std over seeds; difference paired by seed, ± its standard error.", "",
             "| student | params | plain: test % | augment: test % | augment - plain (points) | seconds per run "
             "(median, plain / augment) | seeds within 1 pt of the teacher (plain / augment) |",
             "|---|---:|---|---|---|---|---|"]
    lines += student_lines(record, lambda s: [
        accuracy_cell(s["plain"]), accuracy_cell(s["augment"]), diff_cell(s),
        f"{s['plain']['seconds_median']:.0f} / {s['augment']['seconds_median']:.0f}", near_teacher_cell(s, SETTINGS)])
    lines += ["", pairs_line(record, SETTINGS), "", "| student | seed | plain test % | augment test % |",
              "|---|---:|---|---|"]
    for r in record["rows"]:
        lines.append(f"| {r['student']} | {r['seed']} | {100 * r['plain']['test']:.2f} | "
                     f"{100 * r['augment']['test']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--baseline", type=Path, help="distill_selection.py's JSON: reuse its no-augmentation runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_force(parser)
    args = parser.parse_args()
    refuse_replacing(args.out, args.force)
    students = {name: STUDENTS[name] for name in args.students.split(",")}
    record = run(students, [int(s) for s in args.seeds.split(",")], args.epochs, args.baseline)
    write_results(args.out, record, markdown(record), force=args.force)


if __name__ == "__main__":
    main()
