"""manifest.json (versioned, machine-readable) and report.md (for people) from one run."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from importlib import metadata
from typing import Any

from edgekd.textfmt import decimals, md_code, one_line
from edgekd.types import ValidationReport

MANIFEST_SCHEMA = "edgekd.manifest"
MANIFEST_VERSION = 1
_TOOLS = ("edgekd", "torch", "onnx", "onnxruntime", "onnxscript", "torch-pruning", "numpy")


def tool_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_manifest(validation: ValidationReport, profile: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The manifest: every artifact with hash, size, accuracy, parity, latency and verdicts."""
    teacher = next((r for r in validation.reports if r.artifact.role == "teacher"), None)
    artifacts = []
    for r in validation.reports:
        entry = r.to_dict()
        entry["primary"] = r.artifact.name == validation.primary
        if teacher is not None and teacher.latency and r.latency:
            entry["speedup_vs_teacher"] = teacher.latency.p50_ms / r.latency.p50_ms
            entry["size_ratio_vs_teacher"] = teacher.artifact.size_bytes / r.artifact.size_bytes
        artifacts.append(entry)
    return {
        "schema": MANIFEST_SCHEMA,
        "schema_version": MANIFEST_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tools": tool_versions(),
        "profile": profile,
        "budget": validation.budget.to_dict(),
        "primary": validation.primary,
        "passed": validation.passed,
        "notes": list(validation.notes),
        **validation.latency_dict(),
        "artifacts": artifacts,
        **extra,
    }


SUMMARY_HEADER = ("artifact", "accuracy", "size (KB)", "p50 (ms)", "p90 (ms)", "speedup vs teacher", "verdict")


def summary_rows(manifest: dict[str, Any]) -> list[tuple[bool, tuple[str, ...]]]:
    """(is primary, cells) per artifact, cells as in SUMMARY_HEADER: the table report.md and report.html share."""
    rows = []
    teacher = next((a for a in manifest["artifacts"] if a["artifact"]["role"] == "teacher"), None)
    for a in manifest["artifacts"]:
        art, lat = a["artifact"], a["latency"] or {}
        acc = f"{a['accuracy'] * 100:.2f}%" if a["accuracy"] is not None else "-"
        # a ratio of latencies: none where either is unknown, whatever the (edited) manifest still records
        timed = a["latency"] and teacher is not None and teacher["latency"]
        speed = f"{a['speedup_vs_teacher']:.2f}x" if "speedup_vs_teacher" in a and timed else "-"
        if not a["verdicts"]:
            verdict = "reference"
        else:
            failed = [k for k, ok in a["verdicts"].items() if not ok]
            verdict = "pass" if not failed and a["checker_ok"] else "FAIL: " + ", ".join(failed or ["checker"])
        rows.append((bool(a.get("primary")), (art["name"], acc, f"{art['size_bytes'] / 1024:.1f}",
                                              _ms(lat.get("p50_ms")), _ms(lat.get("p90_ms")), speed, verdict)))
    return rows


def _ms(value: float | None) -> str:
    """A latency cell: "-" where none was measured, as for accuracy (not "nan")."""
    return f"{value:.3f}" if value is not None else "-"


def summary_table(manifest: dict[str, Any]) -> str:
    """Markdown table: teacher vs students, accuracy, size, p50, speedup, verdict."""
    rows = ["| " + " | ".join(SUMMARY_HEADER) + " |", "|---|---:|---:|---:|---:|---:|---|"]
    for primary, cells in summary_rows(manifest):
        name = f"**{cells[0]}** (primary)" if primary else cells[0]
        rows.append("| " + " | ".join((name, *cells[1:])) + " |")
    return "\n".join(rows)


def budget_text(budget: dict[str, Any]) -> str:
    limits = []
    if budget.get("latency_ms") is not None:
        limits.append(f"p50 <= {budget['latency_ms']:g} ms")
    if budget.get("max_size_kb") is not None:
        limits.append(f"size <= {budget['max_size_kb']:g} KB")
    if budget.get("min_accuracy") is not None:
        limits.append(f"accuracy >= {budget['min_accuracy'] * 100:g}%")
    if budget.get("max_accuracy_drop") is not None:
        limits.append(f"accuracy at most {budget['max_accuracy_drop']:g} points below the teacher")
    return ", ".join(limits) or "none"


def _batches(manifest: dict[str, Any]) -> str:
    """The batch each artifact was timed at, as its latency records the shape it was fed: a model whose input
    fixes the batch (a user's ONNX teacher) runs at its own, whatever the profile's batch_size. The profile's
    for a manifest from before the shapes were recorded."""
    fed = {a["artifact"]["name"]: ((a.get("latency") or {}).get("input_shape") or [None])[0]
           for a in manifest["artifacts"]}
    known = {name: batch for name, batch in fed.items() if batch is not None}
    if not known:
        return f"batch {manifest['profile']['measure']['batch_size']}"
    if len(set(known.values())) == 1:
        return f"batch {next(iter(known.values()))}"
    return "batch " + ", ".join(f"{batch} ({name})" for name, batch in known.items())


def _repeats(manifest: dict[str, Any]) -> str:
    """The repeats each artifact's shown run took: a noisy stretch doubles one artifact's (latency/worker.py),
    so the teacher's count, listed first, is not the others'. One count where they agree."""
    counts = {a["artifact"]["name"]: (a.get("latency") or {}).get("repeats") for a in manifest["artifacts"]}
    known = {name: n for name, n in counts.items() if n is not None}
    if not known:
        return "?"
    if len(set(known.values())) == 1:
        return str(next(iter(known.values())))
    return ", ".join(f"{n} ({name})" for name, n in known.items())


def latency_method(manifest: dict[str, Any]) -> str:
    """One sentence on how the latencies were measured (from the recorded profile)."""
    if not any(a.get("latency") for a in manifest["artifacts"]):
        return "Latency: not measured (the manifest records none), so there are no speedups."
    measure = manifest["profile"]["measure"]
    rounds = int(manifest.get("latency_rounds", 1))
    host = manifest["profile"].get("host")
    text = (f"Latency{f' on {host}' if host else ''}: {_repeats(manifest)} interleaved repeats of "
            f"{measure['runs_per_repeat']} runs at {_batches(manifest)}, after {measure['warmup_runs']} "
            "warm-up runs")
    if rounds == 1:
        return text + "; speedups are p50 ratios from that one run."
    speedup = manifest.get("int8_speedup")
    text += (f"; {rounds} such runs, each artifact shown from its median run; speedups are p50 ratios of those "
             "median runs")
    if speedup:
        runs = ", ".join(f"{v:.2f}x" for v in speedup["runs"])
        if "pairs" in speedup:
            from edgekd.types import Ratio

            found = Ratio.from_dict(speedup)
            text += (f". The int8 student's speedup over its fp32 twin, which decides what ships, is the median of "
                     f"{found.pairs} repeat-by-repeat ratios over the {rounds} runs: {_speedup(found.median)}x "
                     f"({found.interval(decimals(_speedup(found.median)))}; per run {runs})")
        else:  # a manifest from before the repeats were paired
            text += (f". The int8 student's speedup over its fp32 twin, which decides what ships, is the median of "
                     f"the {rounds} runs' ratios: {_speedup(speedup['median'])}x ({runs})")
    return text + "."


def _speedup(ratio: float) -> str:
    """The int8 speedup with the digits the ship note gave it, so both read the same side of the line."""
    from edgekd.validate import int8_speedup_figures

    return int8_speedup_figures(ratio)[0]


def int8_text(manifest: dict[str, Any]) -> str | None:
    """How much of each int8 file runs in int8, when nodes fell back to fp32: an "int8" file that is mostly
    fp32 is barely smaller than its twin, and a reader of the table should not have to guess why. A QAT file
    gets no fallback, which is said too: the log said so, the report did not."""
    parts, skipped = [], []
    for entry in manifest.get("artifacts", []):
        art = entry["artifact"]
        why = (art.get("details") or {}).get("int8_fallback_skipped")
        if why:
            skipped.append(f"`{art['name']}` gets {why}.")
        fallback = (art.get("details") or {}).get("int8_fallback")
        if not fallback or not fallback.get("rounds"):
            continue
        rounds = fallback["rounds"]
        total, kept = rounds[0]["quantized"], rounds[fallback["best_round"]]["quantized"]
        if total and kept < total:
            parts.append(f"`{art['name']}` runs {kept} of its {total} quantizable nodes in int8; the other "
                         f"{total - kept} stay fp32, where int8 ran slower on this profile")
    said = ["; ".join(parts) + " (node by node in `int8_fallback`, manifest.json)."] if parts else []
    return " ".join(said + skipped) or None


def input_text(preprocess: dict[str, Any]) -> str:
    """What a deployment pipeline must feed the shipped model."""
    from edgekd.data import describe_preprocess

    return f"{describe_preprocess(preprocess)} (what the shipped models expect; `data.preprocess` in manifest.json)"


def class_text(manifest: dict[str, Any], shown: int = 5) -> str | None:
    """The classes the shipped student loses most on against the teacher (test split, top-1): an average over
    classes can hide one that compression broke."""
    entries = {a["artifact"]["role"] if not a["primary"] else "primary": a for a in manifest["artifacts"]}
    teacher, primary = entries.get("teacher"), entries.get("primary")
    if not teacher or not primary or not teacher.get("class_accuracy") or not primary.get("class_accuracy"):
        return None
    drops = sorted(((teacher["class_accuracy"][c] - acc, c) for c, acc in primary["class_accuracy"].items()
                    if c in teacher["class_accuracy"] and acc < teacher["class_accuracy"][c]), reverse=True)
    untested = _untested(manifest, primary["class_accuracy"])
    if not drops:
        return (f"Per class: `{primary['artifact']['name']}` is at least as accurate as the teacher on every class "
                f"with test images.{untested}")
    listed = ", ".join(f"{md_code(one_line(c))} {teacher['class_accuracy'][c]:.1%} -> "
                       f"{primary['class_accuracy'][c]:.1%}" for _, c in drops[:shown])
    return (f"Per class, where `{primary['artifact']['name']}` loses most against the teacher (test split, top-1; "
            f"every class with test images in `manifest.json`, `class_accuracy`): {listed}"
            + (f", and {len(drops) - shown} more class(es) lower" if len(drops) > shown else "") + f".{untested}")


def _untested(manifest: dict[str, Any], measured: dict[str, Any]) -> str:
    """The sentence naming the data's classes with no test image, which no per-class figure covers."""
    missing = [c for c in (manifest.get("data") or {}).get("class_names") or [] if c not in measured]
    if not missing:
        return ""
    shown = ", ".join(md_code(one_line(c)) for c in missing[:20]) + (
        f" and {len(missing) - 20} more" if len(missing) > 20 else "")
    return f" Not measured, with no test image: {shown}."


def pruned_from_search(student: dict[str, Any]) -> dict[str, Any] | None:
    """The pruning record of a student that pruning-aware distillation (--target-ms) took channels from, else
    None: its config, parameter count and predicted latency in the manifest are then the searched network's,
    not the shipped one's."""
    pruning = (student.get("distill") or {}).get("pruning")
    if not pruning:
        return None
    shipped, searched = pruning.get("params"), student.get("searched_params", student.get("params"))
    return pruning if pruning.get("steps") or (shipped is not None and shipped != searched) else None


def student_size_text(student: dict[str, Any]) -> str:
    """What the Student line says, in brackets after the searched config: the parameters that ship, and for a
    pruned student that it was pruned, toward what and from how many."""
    searched = f"{student.get('searched_params', student['params']):,}"  # manifests before it had the searched one
    pruning = (student.get("distill") or {}).get("pruning")
    if not pruning:
        return f"{searched} parameters"
    target = f"{pruning['target_ms']:g} ms target"
    if pruned_from_search(student) is None:
        return f"{searched} parameters; not pruned: under the {target} already"
    if pruning.get("profile"):  # the target held where pruning measured: compress --distilled may ship elsewhere
        target += f" on '{pruning['profile']}' at batch {pruning.get('batch') or 1}"
    toward = (f"pruned to the {target}" if pruning.get("reached", True) else
              f"pruned toward the {target} (not reached"
              + (f": {pruning['measured_ms']:.3f} ms measured while pruning)" if pruning.get("measured_ms") else ")"))
    shipped = f", {pruning['params']:,} parameters shipped" if pruning.get("params") is not None else ""
    return f"{toward} from the searched {searched}-parameter student{shipped}"


def training_text(manifest: dict[str, Any]) -> str | None:
    """How the shipped student was trained, for the Training line: the losses, the epochs run, quantization-aware
    epochs (its fake-quant int8 is the one exported), pruning-aware steps and which epoch was kept. A QAT run
    showed in the manifest alone (its exporter and qat_start), and a reader took its int8 for a post-training one."""
    student = manifest.get("student") or {}
    distill, recipe = student.get("distill"), manifest.get("recipe") or {}
    if not distill or not distill.get("history"):
        return None
    epochs = len(distill["history"])
    losses = str(recipe.get("losses") or "kd")
    try:
        from edgekd.types.distill import parse_losses

        labels_only = [name for name, _ in parse_losses(losses)] == ["ce"]  # "ce:1" as "ce"
    except Exception:  # an edited recipe: said as written
        labels_only = False
    said = [f"{losses} from the teacher" if not labels_only else f"the labels alone ({losses})",
            f"{epochs} epoch{'s' if epochs != 1 else ''}"]
    taps = distill.get("taps")
    if isinstance(taps, dict) and taps.get("student") and taps.get("teacher"):
        pairs = ", ".join(f"{s} -> {t}" for s, t in zip(taps["student"], taps["teacher"]))
        said.append(f"tapping {pairs} (student -> teacher layers)")
    if distill.get("qat_start") is not None:
        said.append(f"quantization-aware (fake-quant) from epoch {distill['qat_start']}, the int8 student exported "
                    "from it")
    pruning = distill.get("pruning") or {}
    if pruning.get("steps"):
        steps = len(pruning["steps"])
        said.append(f"pruning-aware toward {pruning['target_ms']:g} ms in {steps} step{'s' if steps != 1 else ''}")
    metric = ("validation accuracy" if distill.get("selected_on", "val_labels") == "val_labels"
              else "agreement with the teacher")
    best = distill.get("best_val_accuracy")
    rule = "" if distill.get("keep", "best") == "best" else f", rule {distill['keep']}"
    if distill.get("best_epoch") is None:  # optional in the schema
        return ", ".join(said)
    kept = f"kept epoch {distill['best_epoch']}" + (f" ({metric} {best:.2%}{rule})" if best is not None else "")
    return "; ".join([", ".join(said), kept])


def _ort_speed(ort: dict[str, Any], name: str) -> str:
    """The copy's p50 and how it compares with its .onnx (manifests before edgekd timed copies have neither)."""
    if ort.get("p50_ms") is None or ort.get("vs_onnx") is None:
        return ""
    return f", p50 {ort['p50_ms']:.3f} ms, {ort['vs_onnx']:.2f}x `{name}.onnx`'s"


def _ort_failed(entry: dict[str, Any], budget: dict[str, Any]) -> str:
    """", FAILED: <why>" for a copy compress rejected (its outputs, or the budget its .onnx is held to), else ""."""
    o = entry["ort"]
    agrees = o.get("agrees", o["passed"])  # before "agrees" was recorded, "passed" was the agreement alone
    over = o.get("over_budget")
    if over is None and agrees and entry["verdicts"].get("ort") is False:  # an older manifest: from its budget
        over = [what for what, missed in (
            ("size", budget.get("max_size_kb") is not None and o["size_bytes"] > budget["max_size_kb"] * 1024),
            ("latency", budget.get("latency_ms") is not None and (o.get("p50_ms") or 0) > budget["latency_ms"]))
            if missed] or ["size or latency"]
    why = ([] if agrees else [f"its outputs differ from `{entry['artifact']['name']}.onnx`'s"]) + (
        [f"over the {' and '.join(over)} budget"] if over else [])
    return f", FAILED: {' and '.join(why)}" if why else ""


def ort_text(manifest: dict[str, Any]) -> str | None:
    """The ORT-format copies (compress --ort), for a reader deploying with onnxruntime mobile: a copy compress
    rejected, for its outputs or for the budget, is marked FAILED with why."""
    entries = [a for a in manifest["artifacts"] if a.get("ort")]
    if not entries:
        return None
    copies = [(a["artifact"]["name"], a["ort"]) for a in entries]
    failed = [_ort_failed(a, manifest.get("budget") or {}) for a in entries]
    listed = "; ".join(f"`{o['path']}` ({o['size_bytes'] / 1024:.1f} KB, {o['top1_agreement']:.2%} top-1 agreement "
                       f"with `{name}.onnx`{said}{_ort_speed(o, name)}; operators for a "
                       f"reduced build in `{o['operators']}`)" for (name, o), said in zip(copies, failed))
    first = copies[0][1]
    runtime = ""
    if "format_version" in first:  # manifests written before edgekd recorded it have no such key
        from edgekd.ort_format import loads_text

        runtime = (f" Written by onnxruntime {first.get('converted_with', '?')}'s converter in "
                   f"{loads_text(first['format_version'])}.")
    return f"ORT format for onnxruntime mobile ({first['platform']}): {listed}.{runtime}"


def render_markdown(manifest: dict[str, Any]) -> str:
    profile = manifest["profile"]
    lines = [
        "# edgekd report",
        "",
        f"- Verdict: **{'PASS' if manifest['passed'] else 'FAIL'}** (primary artifact `{manifest['primary']}`)",
        f"- Profile: `{profile['name']}`: {profile['description']}",
        f"- Budget: {budget_text(manifest['budget'])}",
        f"- Data: {manifest.get('data', {}).get('name', '?')}, test set of {manifest.get('data', {}).get('test', '?')}"
        " images",
        f"- Teacher: {manifest.get('teacher', {}).get('source', '?')}",
    ]
    if profile.get("runner", {}).get("kind", "local") != "local":  # the latencies are the device's, not these
        lines[5] += (f"; accuracy computed on this host with {profile['name']}'s runtime settings, not on its "
                     "device")
    preprocess = (manifest.get("data") or {}).get("preprocess")
    if preprocess:
        lines.insert(6, f"- Input: {input_text(preprocess)}")
    student = manifest.get("student")
    if student:
        lines.append(f"- Student: `{student['spec']['space']}` {student['spec']['config']} "
                     f"({student_size_text(student)})")
    if training_text(manifest):
        lines.append(f"- Training: {training_text(manifest)}")
    lines += ["", summary_table(manifest), "", latency_method(manifest)]
    if int8_text(manifest):
        lines += ["", int8_text(manifest)]  # type: ignore[list-item]
    if ort_text(manifest):
        lines += ["", ort_text(manifest)]  # type: ignore[list-item]
    if class_text(manifest):
        lines += ["", class_text(manifest)]  # type: ignore[list-item]
    if manifest["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in manifest["notes"]]
    lines += ["", f"Tools: {', '.join(f'{k} {v}' for k, v in manifest['tools'].items())}", ""]
    return "\n".join(lines)
