"""Which onnxruntime releases load edgekd's artifacts, and compute what this one does.

A phone app or a board ships the onnxruntime it was built with, often releases behind the one edgekd converts
and validates with. This script takes compress runs (``--run DIR``; by default two quick runs on digits are
made in a temporary folder: one at the default opset 18 with ``--ort``, one with ``--opset 15``) and, for each
onnxruntime release in ``--runtimes``, loads every student file there (``.onnx`` and ``.ort``) in a virtual
environment holding that release and numpy only, runs the test images through it one at a time, and compares
the outputs with this process's onnxruntime: top-1 agreement and the largest difference. A file that does not
load gets onnxruntime's reason, as edgekd words it (``edgekd.latency.worker.load_failure``). The runs' ORT
copies are also listed with the p50 their run recorded beside their .onnx on its profile.

Each release is installed with pip into a venv of the first ``--python`` interpreter (default: this one) that
has a wheel for it (old releases need old Pythons: 1.10 has none past 3.9), kept under ``--venvs`` for the next
run; a run that could install none of the older releases it was asked for writes nothing.
``current`` stands for this process's onnxruntime, with no venv.

Writes benchmarks/results/runtime_compat.{md,json}.

    .venv/bin/python benchmarks/runtime_compat.py --python ~/.pyenv/versions/3.7.16/bin/python \\
        --python ~/.pyenv/versions/3.11.7/bin/python [--runtimes 1.10.0,1.14.1,current] [--run DIR ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_io import add_force, refuse_replacing, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"
RUNTIMES = "1.10.0,1.14.1,1.15.1,1.16.3,1.18.1,1.20.1,1.22.1,current"
STUDENTS = ("student-fp32.onnx", "student-int8.onnx", "student-fp32.ort", "student-int8.ort")

# Runs in the release's venv: stdlib, numpy and onnxruntime only, and Python 3.7 syntax.
CHILD = """
import json, sys
import numpy as np
import onnxruntime as ort
x = np.load(sys.argv[1])
answers = []
for i, path in enumerate(sys.argv[3:]):
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:
        answers.append({"file": path, "loaded": False, "error": str(exc)})
        continue
    name = session.get_inputs()[0].name
    y = np.concatenate([session.run(None, {name: x[k:k + 1]})[0] for k in range(len(x))])
    np.save("%s/%d.npy" % (sys.argv[2], i), y)
    answers.append({"file": path, "loaded": True})
print(json.dumps({"onnxruntime": ort.__version__, "python": "%d.%d.%d" % sys.version_info[:3], "files": answers}))
"""


def quick_runs(folder: Path) -> list[Path]:
    """Two small compress runs of digits: the default opset 18 with ORT copies, and --opset 15."""
    from edgekd.pipeline import CompressConfig, compress

    runs = []
    for name, opset, ort_copies in (("opset18", 18, True), ("opset15", 15, False)):
        out = folder / name
        compress(CompressConfig(out=str(out), data="digits", budget_ms=0.5, max_size_kb=128, epochs=3,
                                candidates=20, opset=opset, ort=ort_copies, progress=False))
        runs.append(out)
    return runs


def answers(python: str, files: list[Path], x_path: Path, folder: Path) -> tuple[dict[str, Any] | None, str]:
    """CHILD's answer under ``python`` (its onnxruntime version, Python version and, per file, whether it
    loaded), with the outputs of each file that did under "outputs"; (None, why) when the child failed."""
    folder.mkdir()
    done = subprocess.run([python, "-c", CHILD, str(x_path), str(folder), *map(str, files)], capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    got["outputs"] = {a["file"]: np.load(folder / f"{i}.npy") for i, a in enumerate(got["files"]) if a["loaded"]}
    return got, ""


def venv_for(version: str, pythons: list[str], venvs: Path) -> tuple[Path | None, str]:
    """A venv holding onnxruntime ``version`` (and numpy 1.x for releases built before numpy 2), made with
    the first interpreter pip finds a wheel for; (None, why) when none has one."""
    numpy = "numpy<2" if tuple(int(p) for p in version.split(".")[:2]) < (1, 19) else "numpy"
    reasons = []
    for python in pythons:
        tag = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
        env = venvs / f"ort-{version}-py{tag}"
        ready = env / "bin" / "python"
        if ready.exists() and (env / ".installed").exists():
            return ready, ""
        subprocess.run([python, "-m", "venv", "--clear", str(env)], check=True, capture_output=True)
        done = subprocess.run([str(ready), "-m", "pip", "install", "--quiet", "--only-binary", ":all:",
                               f"onnxruntime=={version}", numpy], capture_output=True, text=True)
        if done.returncode == 0:
            (env / ".installed").write_text("")
            return ready, ""
        reasons.append(f"Python {tag}: no wheel" if "No matching distribution" in done.stderr
                       else f"Python {tag}: pip failed ({done.stderr.strip().splitlines()[-1][:120]})")
    return None, "; ".join(reasons) or "no --python given"


def check(version: str, python: Path | None, files: list[Path], x_path: Path, ref: dict[str, np.ndarray],
          tmp: Path) -> dict[str, Any]:
    """One release's answers for every file, compared with the reference's outputs."""
    from edgekd.latency.worker import load_failure

    got, why = answers(str(python or sys.executable), files, x_path, tmp / f"answers-{version}")
    if got is None:
        return {"runtime": version, "error": why}
    rows = []
    for answer in got["files"]:
        path = Path(answer["file"])
        row = {"run": path.parent.name, "file": path.name, "loaded": answer["loaded"]}
        if not answer["loaded"]:
            row["error"] = load_failure(RuntimeError(answer["error"]), path.name, got["onnxruntime"])[0]
        elif answer["file"] in ref:  # else the reference itself cannot load it (said in the table)
            y, expected = got["outputs"][answer["file"]], ref[answer["file"]]
            row["top1_agreement"] = float((y.argmax(1) == expected.argmax(1)).mean())
            row["max_abs_diff"] = float(np.abs(y - expected).max())
        rows.append(row)
    return {"runtime": got["onnxruntime"], "python": got["python"], "files": rows}


def ort_speeds(runs: list[Path]) -> list[dict[str, Any]]:
    """Each ORT copy's p50 beside its .onnx on the run's profile, as the run recorded it."""
    rows = []
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        for entry in manifest["artifacts"]:
            ort = entry.get("ort") or {}
            if ort.get("vs_onnx") is not None:
                latency = entry.get("latency") or {}
                rows.append({"run": run.name, "file": ort["path"], "profile": manifest["profile"]["name"],
                             "platform": ort["platform"], "p50_ms": ort["p50_ms"], "vs_onnx": ort["vs_onnx"],
                             "onnx_p50_ms": latency.get("p50_ms")})
    return rows


def summary(result: dict[str, Any]) -> list[str]:
    """One row per release, one column per (run, file type): whether every such file loaded and agreed."""
    kinds = sorted({(row["run"], Path(row["file"]).suffix) for e in result["runtimes"] for row in e.get("files", [])},
                   key=lambda k: (k[1], k[0]))
    lines = ["| onnxruntime | Python | " + " | ".join(f"{run} `{suffix}`" for run, suffix in kinds) + " |",
             "|---|---|" + "---|" * len(kinds)]
    for entry in result["runtimes"]:
        if "files" not in entry:
            lines.append(f"| {entry['runtime']} | - | " + " | ".join("not installed" for _ in kinds) + " |")
            continue
        cells = []
        for run, suffix in kinds:
            rows = [r for r in entry["files"] if (r["run"], Path(r["file"]).suffix) == (run, suffix)]
            if not rows:
                cells.append("-")
            elif not all(r["loaded"] for r in rows):
                cells.append("refused")
            else:
                agree = [r["top1_agreement"] for r in rows if "top1_agreement" in r]
                cells.append(f"loads, agrees {min(agree):.0%}" if agree else "loads")
        lines.append(f"| {entry['runtime']} | {entry['python']} | " + " | ".join(cells) + " |")
    return lines


def speed_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["### ORT copies against their .onnx, on the run's profile", "",
             "The p50s the run recorded, each copy timed beside its .onnx in the same interleaved runs (the ratio "
             "is the median of the runs' ratios).", "",
             "| run | file | profile | converted for | p50 (ms) | x its .onnx |", "|---|---|---|---|---:|---:|"]
    lines += [f"| {r['run']} | `{r['file']}` | {r['profile']} | {r['platform']} | {r['p50_ms']:.3f} | "
              f"{r['vs_onnx']:.2f}x |" for r in rows]
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> str:
    lines = [f"## onnxruntime releases loading edgekd's artifacts ({result['date']}, {result['machine']})", "",
             f"Reference: onnxruntime {result['reference']} (this process). {result['images']} test images, one "
             "at a time; agreement is top-1 with the reference's outputs (the lowest over a cell's files).", "",
             *summary(result), "", *speed_table(result.get("ort_speed", [])), "### Every file", "",
             "| onnxruntime | Python | run | file | loads | top-1 agreement | largest difference |",
             "|---|---|---|---|---|---:|---:|"]
    for entry in result["runtimes"]:
        if "files" not in entry:
            lines.append(f"| {entry['runtime']} | - | - | - | not installed: {entry['error']} | | |")
            continue
        for row in entry["files"]:
            if row["loaded"] and "top1_agreement" not in row:
                lines.append(f"| {entry['runtime']} | {entry['python']} | {row['run']} | `{row['file']}` | yes | "
                             "(the reference cannot load it) | |")
            elif row["loaded"]:
                lines.append(f"| {entry['runtime']} | {entry['python']} | {row['run']} | `{row['file']}` | yes | "
                             f"{row['top1_agreement']:.2%} | {row['max_abs_diff']:.3g} |")
            else:
                lines.append(f"| {entry['runtime']} | {entry['python']} | {row['run']} | `{row['file']}` | no: "
                             f"{row['error']} | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", default=RUNTIMES, help="comma-separated onnxruntime versions, or current")
    parser.add_argument("--python", action="append", default=[], help="interpreter for the venvs (repeatable; "
                        "default: this one, which has no wheels for the oldest releases)")
    parser.add_argument("--run", action="append", default=[], help="compress output folder(s) (default: two "
                        "quick runs of digits)")
    parser.add_argument("--venvs", default=None, help="where the venvs are kept (default: edgekd's cache folder)")
    parser.add_argument("--images", type=int, default=200, help="test images fed to every file")
    parser.add_argument("--out", default=str(RESULTS / "runtime_compat"))
    add_force(parser)
    args = parser.parse_args(argv)
    refuse_replacing(args.out, args.force)
    runtimes = [v.strip() for v in args.runtimes.split(",") if v.strip()]
    pythons = args.python or [sys.executable]
    venvs = Path(args.venvs) if args.venvs else _cache_dir() / "runtime-compat"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekd-runtime-compat-") as tmp_name:
        tmp = Path(tmp_name)
        runs = [Path(r) for r in args.run] or quick_runs(tmp)
        files = [run / name for run in runs for name in STUDENTS if (run / name).exists()]
        if not files:
            raise SystemExit(f"no student files ({', '.join(STUDENTS)}) in {', '.join(map(str, runs))}")
        from edgekd.data import load_data, recorded_data

        recorded = recorded_data(json.loads((runs[0] / "manifest.json").read_text()))
        if recorded.source is None:
            raise SystemExit(f"the data of {runs[0]} ({recorded.named}) is not here: pass runs made on data at hand")
        x = load_data(recorded.source, resolution=recorded.resolution, seed=recorded.seed).x_test[:args.images]
        x_path = tmp / "x.npy"
        np.save(x_path, x)
        # This process's onnxruntime, asked as the releases are (one image at a time, in a process of its own):
        # a file it cannot load has no reference, and each release is asked about it all the same.
        reference, why = answers(sys.executable, files, x_path, tmp / "reference")
        if reference is None:
            raise SystemExit(f"this process's onnxruntime could not run the files: {why}")
        ref = reference["outputs"]
        speeds = ort_speeds(runs)
        entries = []
        for version in runtimes:
            if version == "current":
                entries.append(check(version, None, files, x_path, ref, tmp))
                continue
            python, why = venv_for(version, pythons, venvs)
            entries.append(check(version, python, files, x_path, ref, tmp) if python else
                           {"runtime": version, "error": why})
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "reference": ort.__version__, "images": int(len(x)), "runs": [r.name for r in runs],
              "ort_speed": speeds,
              "seconds": round(time.perf_counter() - start, 1), "runtimes": entries}
    refuse_untested(runtimes, entries)
    write_results(args.out, result, markdown(result), force=args.force)
    return result


def refuse_untested(runtimes: list[str], entries: list[dict[str, Any]]) -> None:
    """A table whose older releases could none be installed says nothing about them; written over the
    recorded one, it would lose what that one tested."""
    asked = [(version, entry) for version, entry in zip(runtimes, entries) if version != "current"]
    if asked and all("files" not in entry for _, entry in asked):
        version, entry = asked[0]
        raise SystemExit(f"error: no release of --runtimes but current was tested ({version}: {entry['error']}); "
                         "pass --python with interpreters that have wheels for them (1.10 needs Python <= 3.9), "
                         "or --runtimes current")


def _cache_dir() -> Path:
    from edgekd.teacher import cache_dir

    return cache_dir()


if __name__ == "__main__":
    main()
