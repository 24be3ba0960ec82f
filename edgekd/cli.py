"""Thin click commands over the Python API. The one place an EdgeKDError becomes a message and exit code.

Exit codes: 0 success, 1 a check failed (budget, verdict), 2 bad input or usage.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from edgekd import __version__
from edgekd.errors import EdgeKDError
from edgekd.fsutil import check_new_file, write_json, write_text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekd")
def cli() -> None:
    """edgekd: compress a PyTorch model into a small, fast int8 ONNX student for an edge device."""


_COMPRESS_OPTIONS = [
    click.option("--out", "-o", type=str, help="Output folder (created whole or not at all)."),
    click.option("--teacher", type=str, help="file.py:factory, package.module:factory, or a torch.export .pt2 file. "
                                             "Default: the embedded ResNet teacher."),
    click.option("--weights", type=str, help="State-dict file for --teacher (loaded with weights_only=True)."),
    click.option("--data", type=str, help="A .npz file (x, y), an image folder (one sub-folder per class), "
                                          "or 'digits' (the embedded default)."),
    click.option("--resolution", type=int, help="Resize images to this square side (digits default: 32)."),
    click.option("--normalize", type=str, help="Input normalisation, as your teacher was trained: dataset "
                                               "(default: the data's own mean and std), none (pixels scaled to "
                                               "[0, 1]), or MEAN/STD, e.g. 0.485,0.456,0.406/0.229,0.224,0.225."),
    click.option("--profile", type=str, help="Device profile name or .toml path (default: host-cpu-1t)."),
    click.option("--budget-ms", type=float, help="Latency budget: p50 on the profile, in milliseconds."),
    click.option("--max-size-kb", type=float, help="Size budget of the shipped artifact, in KiB."),
    click.option("--min-accuracy", type=float, help="Accuracy budget: the shipped student's test accuracy, a "
                                                    "fraction (e.g. 0.97)."),
    click.option("--max-accuracy-drop", type=float, help="Accuracy budget: at most this many percentage points "
                                                         "below the teacher's test accuracy (e.g. 1.0)."),
    click.option("--space", type=str, help="Student search space(s), comma-separated: mbv2, resnet, pruned "
                                           "(the teacher with fewer channels) (default: mbv2)."),
    click.option("--proxy", type=str, help="Training-free score: diswot, diswot_init, naswot, synflow, grad_norm, "
                                           "params (default: diswot)."),
    click.option("--candidates", type=int, help="Distinct candidates the evolutionary search scores (default: 100)."),
    click.option("--latency-anchors", type=int,
                 help="Networks measured to fit the latency of a space with no calibrated table (default: 32; "
                      "fewer: a quicker, less accurate fit)."),
    click.option("--precision", type=click.Choice(["int8", "fp32"]),
                 help="Deployment precision the search checks the budgets for (default: int8)."),
    click.option("--epochs", type=int, help="Distillation epochs (default: 40)."),
    click.option("--lr", type=float, help="Peak learning rate (default: 0.005)."),
    click.option("--batch-size", type=int, help="Training batch size (default: 64)."),
    click.option("--temperature", type=float, help="KD temperature (default: 4)."),
    click.option("--alpha", type=float, help="Weight of the KD term vs. labels (default: 0.9)."),
    click.option("--losses", type=str, help="Distillation losses with weights, e.g. kd:1,dkd:0.5 "
                                            "(kd, dkd, dist, hint, rkd, at; default: kd)."),
    click.option("--hint-student", type=str, help="Student module paths tapped for hint/at/rkd (comma-separated)."),
    click.option("--hint-teacher", type=str, help="Teacher module paths paired with --hint-student."),
    click.option("--labels/--no-labels", default=None, help="--no-labels: learn from the teacher's soft labels "
                                                            "alone (unlabelled data)."),
    click.option("--qat-epochs", type=int, help="Run the last N distillation epochs quantization-aware."),
    click.option("--qat-lr", type=float, help="Peak learning rate of the quantization-aware epochs "
                                              "(default: --lr / 10)."),
    click.option("--qat-full-range/--qat-reduced-range", default=None,
                 help="QAT int8 weights in [-127, 127], for CPUs with int8 dot products (x86 VNNI, ARM), or in "
                      "[-64, 64] (default: safe on every x86 CPU, where older int8 kernels saturate)."),
    click.option("--target-ms", type=float, help="Prune during KD until the measured latency reaches this (ms)."),
    click.option("--prune-steps", type=int, help="Pruning steps (KD between them) to the planned ratio (default: 8)."),
    click.option("--prune-importance", type=str, help="Channel importance: l2, l1, fpgm, lamp, taylor (default: l2)."),
    click.option("--prune-round-to", type=int, help="Keep pruned channel counts multiples of this."),
    click.option("--seed", type=int, help="Random seed (default: 0)."),
    click.option("--calibration", type=click.Choice(["minmax", "entropy", "percentile"]),
                 help="int8 calibration method (default: minmax)."),
    click.option("--latency-rounds", type=int, help="Interleaved validation runs; the int8 student ships only if "
                                                    "the median of their speedups over fp32 is >= 1.02x (default: 3)."),
    click.option("--search", "search_file", type=str, help="Reuse the search.json written by `edgekd search`."),
    click.option("--distilled", type=str, help="Export, validate and report the student `edgekd distill --out DIR` "
                                               "trained in DIR, without searching or training again."),
    click.option("--config", "recipe", type=str, help="Recipe TOML with the same keys as these flags; flags win."),
    click.option("--force", is_flag=True, help="Replace a non-empty output folder."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bars or stage messages."),
]


# Options of compress that the search stage does not take.
_TRAINING_ONLY = {"--epochs", "--lr", "--batch-size", "--temperature", "--alpha", "--calibration", "--search",
                  "--losses", "--hint-student", "--hint-teacher", "--labels", "--qat-epochs", "--qat-lr",
                  "--qat-full-range", "--target-ms",
                  "--prune-steps", "--prune-importance", "--prune-round-to", "--latency-rounds",
                  "--min-accuracy", "--max-accuracy-drop", "--distilled"}
# Options of compress that distill does not take: accuracy is budgeted where the ONNX files are validated.
_EXPORT_ONLY = {"--calibration", "--latency-rounds", "--min-accuracy", "--max-accuracy-drop", "--distilled"}


def _flag(option: Any) -> str:
    probe = option(lambda: None)
    return probe.__click_params__[0].opts[0]


# search writes one JSON file, not a folder: its --out and --force say so.
_SEARCH_FILE_OPTIONS = {
    "--out": click.option("--out", "-o", type=str,
                          help="Ranking JSON file to write (default: search.json); compress and distill take it "
                               "with --search."),
    "--force": click.option("--force", is_flag=True, help="Replace an existing --out file."),
}


def _search_options() -> list:
    return [_SEARCH_FILE_OPTIONS.get(_flag(o), o) for o in _COMPRESS_OPTIONS if _flag(o) not in _TRAINING_ONLY]


def _distill_options() -> list:
    return [o for o in _COMPRESS_OPTIONS if _flag(o) not in _EXPORT_ONLY] + [
        click.option("--resume", is_flag=True, help="Continue the run whose checkpoint.pt is in --out.")]


def _with_options(options: list) -> Any:
    def wrap(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return wrap


def _merged_options(ctx: click.Context, recipe: str | None, quiet: bool, flags: dict[str, Any]) -> tuple:
    """Recipe values overlaid with the flags given on the command line (flags win); plus --force and a logger."""
    from edgekd.pipeline import load_recipe

    values: dict[str, Any] = load_recipe(recipe) if recipe else {}
    force = bool(flags.pop("force"))
    for name, value in flags.items():
        given = ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        if value is not None and (given or name not in values):
            values[name] = value
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(f"[edgekd] {msg}", err=True))
    return values, force, log


@cli.command()
@_with_options(_COMPRESS_OPTIONS)
@click.pass_context
def compress(ctx: click.Context, recipe: str | None, quiet: bool, **flags: Any) -> None:
    """Search, distill, export (fp32 + int8 ONNX) and validate a student for a device budget."""
    from edgekd.pipeline import CompressConfig
    from edgekd.pipeline import compress as run
    from edgekd.report import summary_table

    values, force, log = _merged_options(ctx, recipe, quiet, flags)
    if values.get("distilled"):
        _refuse_training_flags(ctx)
    config = CompressConfig(**values, force=force, progress=not quiet and sys.stderr.isatty())
    result = run(config, log=log)
    manifest = result.manifest
    click.echo(summary_table(manifest))
    for note in manifest["notes"]:
        click.echo(f"note: {note}")
    verdict = "PASS" if result.passed else "FAIL"
    click.echo(f"{verdict}: primary artifact {manifest['primary']} -> {result.out}/ "
               "(report.html, report.md, manifest.json)")
    if not result.passed:
        ctx.exit(1)


def _refuse_training_flags(ctx: click.Context) -> None:
    """With --distilled the student is trained already: a search or training flag would be ignored."""
    from edgekd.distilled import TRAINED_WITH
    from edgekd.errors import ConfigError

    given = [k for k in TRAINED_WITH if ctx.get_parameter_source(k) is click.core.ParameterSource.COMMANDLINE]
    if given:
        raise ConfigError(f"--{given[0].replace('_', '-')} does not apply with --distilled (the student is trained "
                          "already, with the recipe in its distill.json)",
                          "drop it, or train again without --distilled")


@cli.command("search")
@_with_options(_search_options())
@click.pass_context
def search_cmd(ctx: click.Context, recipe: str | None, quiet: bool, **flags: Any) -> None:
    """Rank students for a budget without training them; write the ranking (--out, a JSON file)."""
    from edgekd.pipeline import CompressConfig, run_search

    values, force, log = _merged_options(ctx, recipe, quiet, flags)
    out = values.pop("out", None) or "search.json"
    config = CompressConfig(**values, progress=not quiet and sys.stderr.isatty())
    result = run_search(config, out, force=force, log=log)
    click.echo(f"| rank | params | est. {result.precision} KB | score | measured ms | predicted ms | space | config |")
    click.echo("|---:|---:|---:|---:|---:|---:|---|---|")
    for rank, c in enumerate(result.candidates[:10], 1):
        ms = f"{c.latency_ms:.3f}" if c.latency_ms is not None else "-"
        pred = f"{c.predicted_ms:.3f}" if c.predicted_ms is not None else "-"
        click.echo(f"| {rank} | {c.params:,} | {c.size_bytes / 1024:.1f} | {c.score:.3f} | {ms} | {pred} | "
                   f"{c.spec.space} | {c.spec.config} |")
    click.echo(f"{result.evaluated} candidates scored, {len(result.pareto)} on the score/latency Pareto front, "
               f"{result.measured} measured")
    click.echo(f"chose {result.chosen.spec.space} {result.chosen.spec.config} -> {out} (compress with --search {out})")


@cli.command("distill")
@_with_options(_distill_options())
@click.pass_context
def distill_cmd(ctx: click.Context, recipe: str | None, quiet: bool, resume: bool, **flags: Any) -> None:
    """Train the searched student from the teacher (KD losses, QAT, pruning toward --target-ms); write
    student.pt, student-fp32.onnx and distill.json to --out, with a checkpoint after every epoch."""
    from edgekd.pipeline import CompressConfig, run_distill

    values, force, log = _merged_options(ctx, recipe, quiet, flags)
    out = values.pop("out", None) or "edgekd-distill"
    config = CompressConfig(**values, force=force, progress=not quiet and sys.stderr.isatty())
    trained = run_distill(config, out, resume=resume, log=log)
    click.echo(f"best validation accuracy {trained.best_val_accuracy * 100:.2f}% at {trained.selection()} "
               f"-> {out}/ (student.pt, distill.json)")


@cli.command()
@click.argument("model", type=str)
@click.option("--profile", default="host-cpu-1t", show_default=True,
              help="Device profile name or .toml path (with --manifest: the recorded profile unless given).")
@click.option("--data", type=str, help="Measure accuracy on this data's test split (.npz, folder or 'digits').")
@click.option("--resolution", type=int, help="Resize --data images to this square side.")
@click.option("--normalize", type=str, help="Normalisation of --data: dataset, none or MEAN/STD (default: with "
                                            "--manifest the recorded one, else dataset).")
@click.option("--budget-ms", type=float, help="Fail (exit 1) when p50 latency exceeds this.")
@click.option("--max-size-kb", type=float, help="Fail (exit 1) when the file is larger than this, in KiB.")
@click.option("--min-accuracy", type=float, help="Fail (exit 1) when test accuracy on --data is below this "
                                                 "fraction (e.g. 0.97).")
@click.option("--input-shape", type=str, help="Concrete input shape for dynamic dimensions, e.g. 1,3,224,224.")
@click.option("--manifest", type=str, help="Re-check MODEL against its entry in this manifest.json: hash, size, "
                                           "opset, operators, signature, accuracy and latency as recorded.")
@click.option("--artifact", type=str, help="With --manifest: the entry to compare with (default: by file name).")
@click.option("--accuracy-tolerance", type=float, default=0.005, show_default=True,
              help="With --manifest: allowed accuracy difference from the record, as a fraction.")
@click.option("--latency-tolerance", type=float, default=0.10, show_default=True,
              help="With --manifest: how much slower than recorded p50 still passes.")
@click.option("--rounds", type=int, default=3, show_default=True, help="With --manifest: latency rounds (median).")
@click.option("--json", "json_out", type=str, help="Also write the validation report as JSON here.")
@click.option("--force", is_flag=True, help="Replace an existing --json file.")
@click.pass_context
def validate(ctx: click.Context, model: str, profile: str, data: str | None, resolution: int | None,
             normalize: str | None, budget_ms: float | None, max_size_kb: float | None, min_accuracy: float | None,
             input_shape: str | None, manifest: str | None,
             artifact: str | None, accuracy_tolerance: float, latency_tolerance: float, rounds: int,
             json_out: str | None, force: bool) -> None:
    """Check an ONNX model: checker, size, latency on a profile, optional accuracy and budget; or, with
    --manifest, re-check it against the manifest entry it was shipped with (exit 1 when a check fails)."""
    from edgekd.errors import ConfigError

    _check_report_files(force, ("--json", json_out))

    if manifest:
        given = [f for f, v in (("--budget-ms", budget_ms), ("--max-size-kb", max_size_kb),
                                ("--min-accuracy", min_accuracy), ("--input-shape", input_shape)) if v is not None]
        if given:
            raise ConfigError(f"{given[0]} does not apply with --manifest (the manifest entry is the reference)",
                              "drop it, or use `edgekd gate` to check thresholds")
        explicit = ctx.get_parameter_source("profile") is click.core.ParameterSource.COMMANDLINE
        _recheck(ctx, model, manifest, artifact, data, resolution, normalize, profile if explicit else None,
                 accuracy_tolerance, latency_tolerance, rounds, json_out)
        return
    if artifact:
        raise ConfigError("--artifact needs --manifest", "pass --manifest manifest.json")
    from edgekd.data import load_data
    from edgekd.latency.cache import noisy
    from edgekd.profiles import load_profile
    from edgekd.types import Budget
    from edgekd.validate import artifact_from_file
    from edgekd.validate import validate as run

    budget = Budget(budget_ms, max_size_kb, min_accuracy)
    prof = load_profile(profile)
    shape = _parse_shape(input_shape) if input_shape else None
    art = artifact_from_file(model)
    dataset = load_data(data, resolution=resolution, normalize=normalize) if data else None
    report = run([art], prof, budget, dataset, input_shape=shape)
    r = report.reports[0]
    lat = r.latency
    click.echo(f"{art.path}: {art.precision}, opset {art.opset}, {art.size_bytes / 1024:.1f} KB, "
               f"checker {'ok' if r.checker_ok else 'FAILED'}")
    click.echo(f"latency on {prof.name}: p50 {lat.p50_ms:.3f} ms, p90 {lat.p90_ms:.3f} ms, p99 {lat.p99_ms:.3f} ms "
               f"(cv {lat.cv:.1%}, {lat.runs} runs)")
    if noisy([lat], prof):
        click.echo(f"note: cv above the profile's max_cv ({prof.measure['max_cv']:.0%}) even after measuring twice "
                   "as long: the latency is rough; rerun when the machine is quieter")
    if r.accuracy is not None:
        click.echo(f"accuracy on {dataset.name} test split: {r.accuracy * 100:.2f}%")
    for name, ok in r.verdicts.items():
        click.echo(f"{name}: {'pass' if ok else 'FAIL'}")
    if json_out:
        write_json(json_out, report.to_dict())
    if not r.passed:
        ctx.exit(1)


def _recheck(ctx: click.Context, model: str, manifest: str, artifact: str | None, data: str | None,
             resolution: int | None, normalize: str | None, profile: str | None, accuracy_tolerance: float,
             latency_tolerance: float, rounds: int, json_out: str | None) -> None:
    """`validate --manifest`: a per-check table; exit 1 when any check fails."""
    from edgekd.validate import RecheckConfig, recheck, recheck_table

    config = RecheckConfig(artifact=artifact, data=data, resolution=resolution, normalize=normalize,
                           profile=profile, accuracy_tolerance=accuracy_tolerance,
                           latency_tolerance=latency_tolerance, rounds=rounds)
    result = recheck(model, manifest, config)
    click.echo(f"{model} against manifest entry '{result.artifact}' of {manifest}")
    click.echo(recheck_table(result))
    if json_out:
        write_json(json_out, result.to_dict())
    failed = [c.name for c in result.checks if not c.passed]
    click.echo("PASS: the artifact matches its manifest entry" if not failed else f"FAIL: {', '.join(failed)}")
    if failed:
        ctx.exit(1)


def _check_report_files(force: bool, *files: tuple[str, str | None]) -> None:
    """Refuse (flag, path) report outputs that would clobber a file, before anything is measured."""
    for flag, path in files:
        if path:
            check_new_file(path, force, flag)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        from edgekd.errors import ConfigError

        raise ConfigError(f"--input-shape '{text}' is not a list of positive integers", "write it as 1,3,224,224")
    return dims


@cli.command()
@click.argument("model", type=str)
@click.option("--vs", "others", multiple=True, help="Another ONNX model to measure interleaved with MODEL "
                                                      "(repeatable); ratios are against MODEL.")
@click.option("--profile", default="host-cpu-1t", show_default=True, help="Device profile name or .toml path.")
@click.option("--input-shape", type=str, help="Concrete input shape for dynamic dimensions, e.g. 1,3,224,224.")
@click.option("--no-cache", is_flag=True, help="Measure again even if this comparison is cached.")
@click.option("--json", "json_out", type=str, help="Also write the results as JSON here.")
@click.option("--force", is_flag=True, help="Replace an existing --json file.")
def bench(model: str, others: tuple[str, ...], profile: str, input_shape: str | None, no_cache: bool,
          json_out: str | None, force: bool) -> None:
    """Measure latency of MODEL (and --vs models, interleaved) on a device profile."""
    from edgekd.latency.cache import measure_cached, noisy
    from edgekd.onnxfile import check_input_shape
    from edgekd.profiles import load_profile
    from edgekd.validate import artifact_from_file

    _check_report_files(force, ("--json", json_out))
    prof = load_profile(profile)
    shape = _parse_shape(input_shape) if input_shape else None
    paths = [model, *others]
    for p in paths:
        art = artifact_from_file(p)  # a clear error for a missing or non-ONNX file before any measuring
        if shape:
            check_input_shape(p, art.details, shape)
    stats, cached = measure_cached(paths, prof, shape, use_cache=not no_cache)
    base = stats[0].p50_ms
    click.echo(f"profile {prof.name}{' (cached result)' if cached else ''}")
    click.echo("| model | p50 (ms) | p90 (ms) | p99 (ms) | cv | vs first |")
    click.echo("|---|---:|---:|---:|---:|---:|")
    for p, s in zip(paths, stats):
        click.echo(f"| {p} | {s.p50_ms:.3f} | {s.p90_ms:.3f} | {s.p99_ms:.3f} | {s.cv:.1%} | "
                   f"{base / s.p50_ms:.2f}x |")
    shaky = noisy(stats, prof)
    if shaky:
        names = ", ".join(paths[i] for i in shaky)
        click.echo(f"note: {names}: cv above the profile's max_cv ({prof.measure['max_cv']:.0%}) even after measuring "
                   "twice as long, so the figures are rough and were not cached; rerun when the machine is quieter, "
                   "or raise measure.repeats in the profile")
    if json_out:
        write_json(json_out, {"profile": prof.name, "cached": cached,
                              "models": [{"path": p, **s.to_dict(), "noisy": i in shaky}
                                         for i, (p, s) in enumerate(zip(paths, stats))]})


@cli.command()
@click.argument("target", type=str)
@click.option("--max-size", type=str, help="Largest allowed file on disk, e.g. 128KB, 1.5MiB (bare number: KB).")
@click.option("--max-latency", type=str, help="Largest allowed p50 on the profile, e.g. 2ms, 800us (bare: ms).")
@click.option("--latency-tolerance", type=float, help="Noise allowance on latency checks (default 0.10).")
@click.option("--rounds", type=int, help="Independent measurement rounds; their median decides (default 3).")
@click.option("--baseline", type=str, help="A baseline manifest.json or .onnx: fail only on a real regression.")
@click.option("--min-accuracy", type=float, help="Minimum test accuracy (a fraction) on --data.")
@click.option("--data", type=str, help="Data for --min-accuracy (.npz, image folder or 'digits').")
@click.option("--resolution", type=int, help="Resize --data images to this square side.")
@click.option("--normalize", type=str, help="Normalisation of --data: dataset, none or MEAN/STD (default: a "
                                            "manifest's recorded one, else dataset).")
@click.option("--profile", type=str, help="Device profile for latency and accuracy (default: a manifest's own "
              "profile, else host-cpu-1t).")
@click.option("--allowed-ops", type=str, help="Comma-separated operator types the target runtime supports.")
@click.option("--max-opset", type=int, help="Highest opset the target runtime supports.")
@click.option("--artifact", type=str, help="Which artifact of a manifest to gate (default: its primary).")
@click.option("--config", "config_path", type=str, default="pyproject.toml", show_default=True,
              help="pyproject.toml whose [tool.edgekd.gate] table holds default thresholds.")
@click.option("--junit", type=str, help="Write a JUnit XML report here.")
@click.option("--summary", type=str, help="Write a markdown summary here (also appended to $GITHUB_STEP_SUMMARY).")
@click.option("--force", is_flag=True, help="Replace existing --junit and --summary files.")
@click.pass_context
def gate(ctx: click.Context, target: str, config_path: str, junit: str | None, summary: str | None, force: bool,
         **flags: Any) -> None:
    """Fail a CI build (exit 1) when TARGET (.onnx or manifest.json) breaks its budget; 2 on bad input.

    A manifest gated without any threshold is held to the budget it was built for."""
    import os
    from pathlib import Path

    from edgekd.gate import annotations, build_config, junit_xml, pyproject_settings, run_gate, summary_markdown

    _check_report_files(force, ("--junit", junit), ("--summary", summary))
    values = pyproject_settings(Path(config_path))
    values.update({k: v for k, v in flags.items() if v is not None})  # flags win
    result = run_gate(target, build_config(values, target))
    text = summary_markdown(result)
    click.echo(text)
    if junit:
        write_text(junit, junit_xml(result))
    if summary:
        write_text(summary, text)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as fh:
            fh.write(text)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in annotations(result):
            click.echo(line)
    if not result.passed:
        ctx.exit(1)


@cli.command()
@click.argument("out_dir", type=str)
@click.option("--force", is_flag=True, help="Replace an existing report.html.")
def report(out_dir: str, force: bool) -> None:
    """Render OUT_DIR/report.html (plots: Pareto front, latency, training curves) from its manifest.json."""
    from edgekd.report_html import write_html_report

    click.echo(f"wrote {write_html_report(out_dir, force=force)}")


@cli.group()
def profiles() -> None:
    """List and inspect device profiles."""


@profiles.command("list")
def profiles_list() -> None:
    """Every profile found: built-in and in the user profile folder."""
    from edgekd.profiles import list_profiles, user_dir

    for p in list_profiles():
        threads = p.runtime["intra_op_threads"] or "all"
        click.echo(f"{p.name:<16} {p.runner['kind']:<6} threads={threads!s:<4} {p.description}")
    click.echo(f"(add your own .toml files to {user_dir()} or pass --profile path/to/file.toml)")


@profiles.command("show")
@click.argument("name")
def profiles_show(name: str) -> None:
    """Print one profile, resolved with defaults, as JSON."""
    from edgekd.profiles import load_profile

    click.echo(json.dumps(load_profile(name).to_dict(), indent=2))


@profiles.command("calibrate")
@click.argument("name")
@click.option("--space", default="mbv2", show_default=True, help="Search space whose blocks to calibrate.")
@click.option("--input-shape", default="1,32,32", show_default=True, help="Input C,H,W the students will see.")
@click.option("--classes", default=10, show_default=True, type=int, help="Number of classes.")
@click.option("--networks", default=96, show_default=True, type=int,
              help="Whole networks measured to fit the correction.")
def profiles_calibrate(name: str, space: str, input_shape: str, classes: int, networks: int) -> None:
    """Measure a space's blocks on the profile's device and write its latency table (resumable)."""
    from edgekd.latency.calibrate import calibrate
    from edgekd.profiles import load_profile

    shape = _parse_shape(input_shape)
    if len(shape) != 3:
        from edgekd.errors import ConfigError

        raise ConfigError(f"--input-shape '{input_shape}' must be C,H,W", "write it as 1,32,32")
    prof = load_profile(name)
    from edgekd.latency.table import table_path

    table = calibrate(prof, space, shape, classes, networks=networks,  # type: ignore[arg-type]
                      log=lambda m: click.echo(f"[edgekd] {m}", err=True))
    click.echo(f"wrote {table_path(prof, space)} ({sum(len(v) for v in table.entries.values())} entries, "
               f"{table.seconds:.0f} s)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns edgekd errors into one clean line and exit code."""
    try:
        rv = cli.main(args=argv, prog_name="edgekd", standalone_mode=False)
    except EdgeKDError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # disk full, permission denied, ...: the system's own words, without a traceback
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"error: {exc.strerror or exc}{where}; check free space and permissions there", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted: nothing was written", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
