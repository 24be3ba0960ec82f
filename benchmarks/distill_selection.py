"""Which epoch distillation keeps: the best validation epoch, or the latest one within one standard error of
it (``--keep-epoch best`` / ``near-best``), on digits with compress's distillation defaults.

Each (student, seed) is distilled once per rule. The rule only chooses whose weights a run returns, so the two
runs must have the same history; the script checks that, then compares the kept students' test accuracy,
paired by seed. For `make demo`'s student it also counts the seeds that end within 1 point of the teacher
(the foundation issue's figure, for the fp32 student here; int8 is exported by `compress`).

Writes benchmarks/results/distill_selection.{md,json}.

    .venv/bin/python benchmarks/distill_selection.py [--seeds 1,2,3,4,5] [--epochs 40]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_force, refuse_replacing, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "distill_selection"
STUDENTS = {  # name -> mbv2 config
    # What `make demo`'s search chose on digits, int8 under 0.5 ms and 128 KB (69,260 parameters).
    "demo": {"stem": 16, "widths": [12, 32, 32], "depths": [2, 2, 1], "expands": [4, 6, 6], "kernels": [5, 5, 5],
             "se": [0, 1, 0]},
    # distill_methods.py's student (20,558 parameters).
    "small": {"stem": 12, "widths": [12, 24, 32], "depths": [1, 2, 2], "expands": [3, 3, 3], "kernels": [3, 3, 3]},
}
RULES = ("best", "near-best")


def _cpu() -> str:
    from edgekd.latency.table import cpu_info

    return cpu_info()[0] or platform.processor() or platform.machine()


def setup() -> tuple[Any, Any, float]:
    """Digits, this machine's default teacher and its test accuracy."""
    from edgekd.data import load_data
    from edgekd.distill.trainer import accuracy, predict
    from edgekd.teacher import default_teacher

    data = load_data(None)
    teacher = default_teacher(data, progress=False).module
    return data, teacher, accuracy(predict(teacher, data.x_test), data.y_test)


def distil_one(cfg: dict, seed: int, config: Any, data: Any, teacher: Any) -> tuple[dict, Any]:
    """The mbv2 student ``cfg`` initialised with ``seed`` and distilled with ``config``: its test accuracy, kept
    epoch, validation accuracy and seconds, and the DistillResult."""
    import torch

    from edgekd.distill.trainer import accuracy, distill, predict
    from edgekd.search.spaces import SPACES

    torch.manual_seed(seed)
    student = SPACES.get("mbv2").build(cfg, data.input_shape, data.num_classes)
    started = time.perf_counter()
    result = distill(student, data, config, teacher=teacher, progress=False)
    return {"test": accuracy(predict(result.model, data.x_test), data.y_test), "epoch": result.best_epoch,
            "val": result.best_val_accuracy, "seconds": round(time.perf_counter() - started, 1)}, result


def run(students: dict[str, dict], seeds: list[int], epochs: int, log: Any = print) -> dict:
    from edgekd.pipeline import CompressConfig
    from edgekd.report import tool_versions

    data, teacher, teacher_acc = setup()
    rows = []
    for name, cfg in students.items():
        for seed in seeds:
            row: dict[str, Any] = {"student": name, "seed": seed}
            histories = []
            for rule in RULES:
                # Without augmentation, as compress distilled when this was run (distill_augment.py reuses
                # these runs as its baseline).
                config = CompressConfig(epochs=epochs, seed=seed, keep_epoch=rule, augment=False).distill_config()
                row[rule], result = distil_one(cfg, seed, config, data, teacher)
                histories.append([(h.epoch, h.train_loss, h.val_accuracy) for h in result.history])
            if histories[0] != histories[1]:
                raise SystemExit(f"{name} seed {seed}: the two rules' runs trained differently; the comparison "
                                 "assumes the rule only chooses among the same epochs")
            row["val_by_epoch"] = [v for _, _, v in histories[0]]
            row["params"] = sum(p.numel() for p in result.model.parameters())
            rows.append(row)
            log(f"{name} seed {seed}: " + ", ".join(f"{r} epoch {row[r]['epoch']} test {row[r]['test']:.4f}"
                                                      for r in RULES))
    return {"teacher_test": teacher_acc, "rows": rows, "summary": summarise(rows, teacher_acc),
            "meta": {"date": time.strftime("%Y-%m-%d"), "cpu": _cpu(), "seeds": seeds, "epochs": epochs,
                     "validation_images": len(data.y_val), "test_images": len(data.y_test),
                     "recipe": "compress defaults: KD T=4 alpha 0.9, lr 5e-3 one-cycle, batch 64, no augmentation",
                     "tools": tool_versions()}}


def _paired(diffs: list[float]) -> dict[str, float]:
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return {"mean": statistics.mean(diffs), "se": se, "n": len(diffs)}


def summarise(rows: list[dict], teacher_acc: float) -> dict:
    return paired_summary(rows, RULES, teacher_acc)


def paired_summary(rows: list[dict], arms: tuple[str, str], teacher_acc: float) -> dict:
    """Per student and over all rows: each arm's test accuracy (mean, std, seeds within 1 point of the teacher),
    its kept epoch and seconds (medians), and ``arms[1] - arms[0]`` in points, paired by seed."""
    def diff(mine: list[dict]) -> dict[str, float]:
        return _paired([100 * (r[arms[1]]["test"] - r[arms[0]]["test"]) for r in mine])

    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["student"] for r in rows):
        mine = [r for r in rows if r["student"] == name]
        out[name] = {
            **{arm: {"mean": statistics.mean(r[arm]["test"] for r in mine),
                     "std": statistics.pstdev(r[arm]["test"] for r in mine),
                     "epoch_median": statistics.median(r[arm]["epoch"] for r in mine),
                     "seconds_median": statistics.median(r[arm]["seconds"] for r in mine),
                     "within_1pt_of_teacher": sum(r[arm]["test"] >= teacher_acc - 0.01 for r in mine)}
               for arm in arms},
            "diff_points": diff(mine), "seeds": len(mine)}
    out["all"] = {"diff_points": diff(rows)}
    return out


def student_lines(record: dict, cells: Any) -> list[str]:
    """One table row per student: its name, parameters, then ``cells(its summary)``."""
    params = {r["student"]: r["params"] for r in record["rows"]}
    return [f"| {name} | {params[name]:,} | " + " | ".join(cells(s)) + " |"
            for name, s in record["summary"].items() if name != "all"]


def accuracy_cell(arm: dict) -> str:
    return f"{100 * arm['mean']:.2f} ± {100 * arm['std']:.2f}"


def diff_cell(student: dict) -> str:
    return f"{student['diff_points']['mean']:+.2f} ± {student['diff_points']['se']:.2f}"


def near_teacher_cell(student: dict, arms: tuple[str, str]) -> str:
    return " / ".join(str(student[a]["within_1pt_of_teacher"]) for a in arms) + f" of {student['seeds']}"


def pairs_line(record: dict, arms: tuple[str, str]) -> str:
    d = record["summary"]["all"]["diff_points"]
    return f"All {d['n']} (student, seed) pairs: {arms[1]} - {arms[0]} = {d['mean']:+.2f} ± {d['se']:.2f} points."


def arguments(doc: str) -> argparse.ArgumentParser:
    """The options both distillation benchmarks take."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--students", default=",".join(STUDENTS), help=f"of: {', '.join(STUDENTS)}")
    return parser


def markdown(record: dict) -> str:
    meta = record["meta"]
    lines = ["# Which epoch distillation keeps (digits)", "",
             f"Run {meta['date']} on {meta['cpu']}; seeds {', '.join(map(str, meta['seeds']))}; {meta['epochs']} "
             f"epochs, {meta['recipe']}; {meta['validation_images']} validation and {meta['test_images']} test "
             f"images; teacher (this machine's default) {record['teacher_test'] * 100:.2f}% on test. Rerun: "
             "`python benchmarks/distill_selection.py`.", "",
             "*best*: the best validation epoch (ties to the lower validation loss). *near-best*: the latest epoch "
             "within one standard error of the best validation accuracy (at least one image). Both from the "
             "same training trajectory (checked). Test accuracy, mean ± std over seeds; difference paired by "
             "seed, ± its standard error.", "",
             "| student | params | best: test % | best: epoch (median) | near-best: test % | near-best: epoch "
             "(median) | near-best - best (points) | seeds within 1 pt of the teacher (best / near-best) |",
             "|---|---:|---|---:|---|---:|---|---|"]
    lines += student_lines(record, lambda s: [
        accuracy_cell(s["best"]), f"{s['best']['epoch_median']:g}", accuracy_cell(s["near-best"]),
        f"{s['near-best']['epoch_median']:g}", diff_cell(s), near_teacher_cell(s, RULES)])
    lines += ["", pairs_line(record, RULES), "",
              "| student | seed | best: epoch, test % | near-best: epoch, test % |", "|---|---:|---|---|"]
    for r in record["rows"]:
        lines.append(f"| {r['student']} | {r['seed']} | {r['best']['epoch']}, {100 * r['best']['test']:.2f} | "
                     f"{r['near-best']['epoch']}, {100 * r['near-best']['test']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_force(parser)
    args = parser.parse_args()
    refuse_replacing(args.out, args.force)
    students = {name: STUDENTS[name] for name in args.students.split(",")}
    record = run(students, [int(s) for s in args.seeds.split(",")], args.epochs)
    write_results(args.out, record, markdown(record), force=args.force)


if __name__ == "__main__":
    main()
