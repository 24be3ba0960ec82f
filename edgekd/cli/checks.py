"""The checking commands: validate, bench, gate and report, over ONNX files and manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekd.cli.base import check_distinct_outputs, check_report_files, cli, parse_shape
from edgekd.fsutil import write_json, write_text


@cli.command()
@click.argument("model", type=str)
@click.option("--profile", default="host-cpu-1t", show_default=True,
              help="Device profile name or .toml path (with --manifest: the recorded profile unless given).")
@click.option("--data", type=str, help="Measure accuracy on this data's test split (.npz, image folder, .csv "
              "list of images or 'digits').")
@click.option("--resolution", type=str, help="Resize --data images to one side (square) or HEIGHTxWIDTH, e.g. 240x320.")
@click.option("--normalize", type=str, help="Normalisation of --data: dataset, none or MEAN/STD (default: the one "
                                            "the manifest or the model's metadata records, else dataset).")
@click.option("--channels", type=click.Choice(["1", "3"]), help="Convert --data to the channels the model takes: 3 "
              "repeats grayscale, 1 takes RGB's luminance (default: as the model's metadata records).")
@click.option("--seed", type=int, help="Seed of the train/validation/test split of --data (default: the one the "
                                       "model's metadata records, the split it was trained on, else 0).")
@click.option("--budget-ms", type=float, help="Fail (exit 1) when p50 latency exceeds this.")
@click.option("--max-size-kb", type=float, help="Fail (exit 1) when the file is larger than this, in KiB.")
@click.option("--min-accuracy", type=float, help="Fail (exit 1) when test accuracy on --data is below this "
                                                 "fraction (e.g. 0.97).")
@click.option("--input-shape", type=str, help="Concrete input shape for dynamic dimensions, e.g. 1,3,224,224.")
@click.option("--manifest", type=str, help="Re-check MODEL against its entry in this manifest.json: hash, size, "
                                           "opset, operators, signature, accuracy and latency as recorded.")
@click.option("--artifact", type=str, help="With --manifest: the entry to compare with (default: by file name).")
@click.option("--accuracy-tolerance", type=float,
              help="With --manifest: allowed accuracy difference from the record, as a fraction (default 0.005).")
@click.option("--latency-tolerance", type=float,
              help="With --manifest: how much slower than recorded p50 still passes (default 0.10).")
@click.option("--rounds", type=int, help="With --manifest: latency rounds, their median decides (default 3).")
@click.option("--json", "json_out", type=str, help="Also write the validation report as JSON here.")
@click.option("--force", is_flag=True, help="Replace an existing --json file.")
@click.pass_context
def validate(ctx: click.Context, model: str, profile: str, data: str | None, resolution: str | None,
             normalize: str | None, channels: str | None, seed: int | None, budget_ms: float | None,
             max_size_kb: float | None,
             min_accuracy: float | None,
             input_shape: str | None, manifest: str | None,
             artifact: str | None, accuracy_tolerance: float | None, latency_tolerance: float | None,
             rounds: int | None, json_out: str | None, force: bool) -> None:
    """Check an ONNX model: checker, size, latency on a profile, optional accuracy and budget; or, with
    --manifest, re-check it against the manifest entry it was shipped with (exit 1 when a check fails)."""
    from edgekd.errors import ConfigError

    check_report_files(force, ("--json", json_out), inputs=_validate_reads(model, data, manifest, profile))

    if manifest:
        given = [f for f, v in (("--budget-ms", budget_ms), ("--max-size-kb", max_size_kb),
                                ("--min-accuracy", min_accuracy), ("--input-shape", input_shape), ("--seed", seed))
                 if v is not None]
        if given:
            raise ConfigError(f"{given[0]} does not apply with --manifest (the manifest entry is the reference)",
                              "drop it, or use `edgekd gate` to check thresholds")
        explicit = ctx.get_parameter_source("profile") is click.core.ParameterSource.COMMANDLINE
        _recheck(ctx, model, manifest, artifact, data, resolution, normalize, channels,
                 profile if explicit else None, accuracy_tolerance, latency_tolerance, rounds, json_out)
        return
    _needs("--manifest", ("--artifact", artifact), ("--rounds", rounds), ("--latency-tolerance", latency_tolerance),
           ("--accuracy-tolerance", accuracy_tolerance))
    if data is None:
        _needs("--data", ("--resolution", resolution), ("--normalize", normalize), ("--channels", channels),
               ("--seed", seed))
    from edgekd.latency.cache import noisy
    from edgekd.profiles import load_profile
    from edgekd.types import Budget
    from edgekd.validate import artifact_from_file
    from edgekd.validate import validate as run

    budget = Budget(budget_ms, max_size_kb, min_accuracy)
    prof = load_profile(profile)
    shape = parse_shape(input_shape) if input_shape else None
    art = artifact_from_file(model)
    dataset = None
    if data is not None:  # an empty --data is refused by load_data, not skipped
        from edgekd.data_match import load_data_for, split_seed

        dataset = load_data_for(art.path, data, resolution=resolution, normalize=normalize, channels=channels,
                                seed=seed)
        for note in dataset.notes:
            click.echo(f"warning: {note}", err=True)
    report = run([art], prof, budget, dataset, input_shape=shape)
    r = report.reports[0]
    lat = r.latency
    click.echo(f"{art.path}: {art.precision}, opset {art.opset}, {art.size_bytes / 1024:.1f} KB{art.size_note}, "
               f"checker {'ok' if r.checker_ok else 'FAILED'}")
    at = f" at batch {lat.batch}" if lat.batch is not None else ""
    click.echo(f"latency on {prof.name}{at}: p50 {lat.p50_ms:.3f} ms, p90 {lat.p90_ms:.3f} ms, "
               f"p99 {lat.p99_ms:.3f} ms (cv {lat.cv:.1%}, {lat.runs} runs)")
    if lat.batch is not None and shape is None and lat.batch != prof.measure["batch_size"]:
        click.echo(f"note: the model's batch is fixed at {lat.batch}, so it ran at that batch, not at the "
                   f"profile's measure.batch_size ({prof.measure['batch_size']})")
    if noisy([lat], prof):
        click.echo(f"note: cv above the profile's max_cv ({prof.measure['max_cv']:.0%}) even after measuring twice "
                   "as long: the latency is rough; rerun when the machine is quieter")
    if r.accuracy is not None:
        lowest = sorted((acc, name) for name, acc in (r.class_accuracy or {}).items())[:3]
        weakest = (" (lowest classes: " + ", ".join(f"{name} {acc:.1%}" for acc, name in lowest) + ")"
                   if len(r.class_accuracy or {}) > 3 else "")
        click.echo(f"accuracy on {dataset.name} test split ({len(dataset.y_test)} images): {r.accuracy * 100:.2f}%"
                   f"{weakest}")
    for name, ok in r.verdicts.items():
        click.echo(f"{name}: {'pass' if ok else 'FAIL'}")
    for note in report.notes:
        click.echo(f"note: {note}")
    if json_out:
        record = report.to_dict()
        if dataset is not None:  # what the accuracy was measured on, and what makes it doubtful, for a CI step
            record["data"] = {"given": data, "name": dataset.name, "test_images": len(dataset.y_test),
                              "seed": split_seed(art.path, seed)}
            record["notes"] = [*(f"warning: {n}" for n in dataset.notes), *record["notes"]]
        write_json(json_out, record)
    if not r.passed:
        ctx.exit(1)


def _validate_reads(model: str, data: str | None, manifest: str | None, profile: str) -> list[Any]:
    """What validate reads, which --json must not replace even with --force: the model with its external
    weights, the data, the manifest with every file it lists (the recheck times one of them beside the
    model), and the profile's file; for a CSV list of images, the folders holding its images."""
    from edgekd.errors import EdgeKDError
    from edgekd.gate import manifest_files
    from edgekd.image_list import listed_folders
    from edgekd.onnxfile import model_files
    from edgekd.profiles import profile_file

    try:
        listed = manifest_files(Path(manifest)) if manifest and Path(manifest).is_file() else []
    except EdgeKDError:  # refused with its own message when the recheck reads it
        listed = []
    return [*model_files(model), data, *listed_folders(data), manifest, *listed, profile_file(profile)]


def _needs(needed: str, *given: tuple[str, Any], why: str = "") -> None:
    """Refuse the first (flag, value) given without ``needed``, which alone gives it a meaning (said in ``why``)."""
    from edgekd.errors import ConfigError

    flag = next((f for f, v in given if v is not None), None)
    if flag:
        raise ConfigError(f"{flag} needs {needed}{why}", f"pass {needed}, or drop {flag}")


def _recheck(ctx: click.Context, model: str, manifest: str, artifact: str | None, data: str | None,
             resolution: str | None, normalize: str | None, channels: str | None, profile: str | None,
             accuracy_tolerance: float | None,
             latency_tolerance: float | None, rounds: int | None, json_out: str | None) -> None:
    """`validate --manifest`: a per-check table; exit 1 when any check fails."""
    from edgekd.manifest_check import RecheckConfig, recheck, recheck_table
    from edgekd.preprocess import parse_channels

    given = {"accuracy_tolerance": accuracy_tolerance, "latency_tolerance": latency_tolerance, "rounds": rounds}
    config = RecheckConfig(artifact=artifact, data=data, resolution=resolution, normalize=normalize,
                           channels=parse_channels(channels), profile=profile,
                           **{k: v for k, v in given.items() if v is not None})  # else RecheckConfig's defaults
    result = recheck(model, manifest, config)
    click.echo(f"{model} against manifest entry '{result.artifact}' of {manifest}")
    click.echo(recheck_table(result))
    if json_out:
        write_json(json_out, result.to_dict())
    failed = [c.name for c in result.checks if not c.passed]
    click.echo("PASS: the artifact matches its manifest entry" if not failed else f"FAIL: {', '.join(failed)}")
    if failed:
        ctx.exit(1)


@cli.command()
@click.argument("model", type=str)
@click.option("--vs", "others", multiple=True, help="Another model (.onnx or .ort) to measure interleaved with "
                                                      "MODEL (repeatable); ratios are against MODEL.")
@click.option("--profile", default="host-cpu-1t", show_default=True, help="Device profile name or .toml path.")
@click.option("--input-shape", "input_shapes", multiple=True, help="Concrete input shape for dynamic dimensions, "
              "e.g. 1,3,224,224: once for every model, or once per model in order (MODEL's, then each --vs's), as "
              "models of other layouts need (1,3,64,64 for an NCHW model, 1,64,64,3 for its channels-last twin).")
@click.option("--no-cache", is_flag=True, help="Measure again even if this comparison is cached.")
@click.option("--json", "json_out", type=str, help="Also write the results as JSON here.")
@click.option("--force", is_flag=True, help="Replace an existing --json file.")
def bench(model: str, others: tuple[str, ...], profile: str, input_shapes: tuple[str, ...], no_cache: bool,
          json_out: str | None, force: bool) -> None:
    """Measure latency of MODEL (and --vs models, interleaved) on a device profile.

    MODEL is an .onnx file or an ORT-format .ort copy (compress --ort), which runs with the optimisations of its
    conversion: `edgekd bench student-fp32.ort --vs student-fp32.onnx` shows what that costs on the device."""
    from edgekd.input_shape import check_has_batch
    from edgekd.latency.cache import measure_cached, noisy
    from edgekd.latency.compare import ratio
    from edgekd.onnxfile import model_files
    from edgekd.ort_format import check_ort_file, ort_inputs
    from edgekd.profiles import load_profile, profile_file
    from edgekd.validate import artifact_from_file

    # What bench reads, which --json must not replace even with --force: the models with their external
    # weights, and the profile's file (a user's board profile is theirs, like their model).
    reads = [f for p in (model, *others) for f in model_files(p)]
    check_report_files(force, ("--json", json_out), inputs=(*reads, profile_file(profile)))
    prof = load_profile(profile)
    paths = [model, *others]
    shapes = _bench_shapes(input_shapes, len(paths))
    details = []
    for p in paths:
        if Path(p).suffix.lower() == ".ort":  # an ORT-format copy is timed as it ships (onnxruntime reads it)
            check_ort_file(p)
            details.append(ort_inputs(p))
        else:  # a clear error for a missing or non-ONNX file before any measuring
            details.append(artifact_from_file(p).details)
        check_has_batch(p, details[-1])
    _check_bench_shapes(paths, details, shapes, len(input_shapes) == 1)
    shape = shapes if len(input_shapes) > 1 else shapes[0]
    stats, cached = measure_cached(paths, prof, shape, use_cache=not no_cache, log=lambda m: click.echo(m, err=True))
    # How many times faster than MODEL, repeat by repeat (the repeats ran side by side), with its interval.
    vs = [ratio([stats], 0, i) for i in range(len(stats))]
    said = ""
    if cached:  # a board's runtime, and which board answers, are not in the cache key (this host cannot see them
        # without measuring): an unnamed adb device or a host name such as raspberrypi.local may be another board
        said = " (cached result)" if prof.is_local else (
            f" (cached result, measured on the device with onnxruntime {stats[0].onnxruntime or '(version unknown)'};"
            " pass --no-cache after upgrading it or when the device behind this profile changed)")
    click.echo(f"profile {prof.name}{said}")
    click.echo("| model | batch | p50 (ms) | p90 (ms) | p99 (ms) | cv | speedup vs first | 95% interval |")
    click.echo("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, (p, s, r) in enumerate(zip(paths, stats, vs)):
        span = f"{r.low:.2f}-{r.high:.2f}x" if i and r.confident else ""
        click.echo(f"| {p} | {s.batch or '?'} | {s.p50_ms:.3f} | {s.p90_ms:.3f} | {s.p99_ms:.3f} | {s.cv:.1%} | "
                   f"{r.median:.2f}x | {span} |")
    _warn_mixed_batches(paths, stats, int(prof.measure["batch_size"]))
    shaky = noisy(stats, prof)
    if shaky:
        names = ", ".join(paths[i] for i in shaky)
        click.echo(f"note: {names}: cv above the profile's max_cv ({prof.measure['max_cv']:.0%}) even after measuring "
                   "twice as long, so the figures are rough and were not cached; rerun when the machine is quieter, "
                   "or raise measure.repeats in the profile")
    if json_out:
        write_json(json_out, {"profile": prof.name, "cached": cached,
                              "models": [{"path": p, **s.to_dict(), "noisy": i in shaky, "vs_first": r.to_dict()}
                                         for i, (p, s, r) in enumerate(zip(paths, stats, vs))]})


def _bench_shapes(given: tuple[str, ...], models: int) -> list[tuple[int, ...] | None]:
    """bench's --input-shape, once for every model or once per model in order, as one shape (or None) per model."""
    from edgekd.errors import ConfigError

    if len(given) not in (0, 1, models):
        raise ConfigError(f"--input-shape is given {len(given)} times for {models} models",
                          f"give it once for every model, or {models} times, once per model in order (MODEL's, then "
                          "each --vs's)")
    shapes = [parse_shape(s) for s in given]
    return shapes * models if len(shapes) == 1 else shapes or [None] * models


def _check_bench_shapes(paths: list[str], details: list[dict[str, Any]], shapes: list[tuple[int, ...] | None],
                        shared: bool) -> None:
    """Each model takes its shape; one shape given for all that a --vs model cannot take is refused with the
    per-model form, in that model's layout where its channels are last."""
    from edgekd.errors import ConfigError
    from edgekd.input_shape import check_input_shape, image_sample, shape_example

    for i, (p, found, shape) in enumerate(zip(paths, details, shapes)):
        if shape is None:
            continue
        try:
            check_input_shape(p, found, shape)
        except ConfigError as exc:
            dims = (found.get("inputs") or [{}])[0].get("shape")
            if not shared or i == 0 or not dims:
                raise
            own = shape_example(dims, shape[0], image_sample(shape))
            each = " ".join(f"--input-shape {','.join(map(str, shape)) if j != i else own}"
                            for j in range(len(paths)))
            raise ConfigError(exc.problem, f"give one --input-shape per model, in order: {each}") from None


def _warn_mixed_batches(paths: list[str], stats: list[Any], batch_size: int) -> None:
    """Say when the models ran at different batches: a model with a fixed batch runs at it whatever the
    profile's measure.batch_size, and its speedup over one timed at a larger batch compares unequal work."""
    batches = [s.batch for s in stats]
    if len({b for b in batches if b is not None}) < 2:
        return
    each = ", ".join(f"{p} at {b}" for p, b in zip(paths, batches) if b is not None)
    click.echo(f"warning: the models ran at different batches ({each}): a model with a fixed batch runs at it, "
               f"not at the profile's measure.batch_size ({batch_size}), so the speedups compare unequal work; "
               "export the models with one batch, or pass --input-shape with the fixed one", err=True)


@cli.command()
@click.argument("target", type=str)
@click.option("--max-size", type=str, help="Largest allowed file on disk, e.g. 128KB, 1.5MiB (bare number: KB). "
              "Binary units: KB and KiB are 1024 bytes, MB and MiB 1024² bytes.")
@click.option("--max-latency", type=str, help="Largest allowed p50 on the profile, e.g. 2ms, 800us (bare: ms).")
@click.option("--latency-tolerance", type=float, help="Noise allowance on latency checks (default 0.10).")
@click.option("--rounds", type=int, help="Independent measurement rounds; their median decides (default 3).")
@click.option("--baseline", type=str, help="A baseline manifest.json or .onnx: fail only on a real regression.")
@click.option("--no-latency", is_flag=True, default=None, help="Check no latency (nor --baseline's latency "
              "regression): size, opset and accuracy only, for a runner that is not the device.")
@click.option("--max-size-growth", type=float, help="Largest allowed growth of the file over --baseline's, a "
              "fraction (0.05: 5%).")
@click.option("--min-accuracy", type=float, help="Minimum test accuracy (a fraction) on --data.")
@click.option("--max-accuracy-drop", type=float, help="Most accuracy points allowed below --baseline's, both "
              "measured on --data (without --baseline, on a manifest: below its teacher's recorded accuracy).")
@click.option("--min-class-accuracy", type=float, help="Minimum test accuracy of every class (a fraction) on --data.")
@click.option("--data", type=str, help="Data for the accuracy checks (.npz, image folder, .csv list of images or "
              "'digits').")
@click.option("--resolution", type=str, help="Resize --data images to one side (square) or HEIGHTxWIDTH, e.g. 240x320.")
@click.option("--normalize", type=str, help="Normalisation of --data: dataset, none or MEAN/STD (default: the one "
                                            "the manifest or the model's metadata records, else dataset).")
@click.option("--channels", type=click.Choice(["1", "3"]), help="Convert --data to the channels the model takes: 3 "
              "repeats grayscale, 1 takes RGB's luminance (default: as the model's metadata records).")
@click.option("--profile", type=str, help="Device profile for latency and accuracy (default: a manifest's own "
              "profile, else host-cpu-1t).")
@click.option("--allowed-ops", type=str, help="Comma-separated operator types the target runtime supports.")
@click.option("--max-opset", type=int, help="Highest opset the target runtime supports.")
@click.option("--ops-config", type=str, help="The required_operators.config a reduced onnxruntime build (your app's) "
              "was compiled with: the manifest's ORT-format copy may need no operator outside it.")
@click.option("--artifact", type=str, help="Which artifact of a manifest to gate (default: its primary).")
@click.option("--input-shape", type=str, help="Concrete input shape for a model with dynamic dimensions, for the "
              "latency checks, e.g. 1,3,224,224.")
@click.option("--config", "config_path", type=str, help="pyproject.toml whose [tool.edgekd.gate] table holds default "
              "thresholds (default: ./pyproject.toml when there is one).")
@click.option("--junit", type=str, help="Write a JUnit XML report here.")
@click.option("--summary", type=str, help="Write a markdown summary here (also appended to $GITHUB_STEP_SUMMARY).")
@click.option("--json", "json_out", type=str, help="Write the verdict, every check and the notes as JSON here.")
@click.option("--force", is_flag=True, help="Replace existing --junit, --summary and --json files.")
@click.pass_context
def gate(ctx: click.Context, target: str, config_path: str | None, junit: str | None, summary: str | None,
         json_out: str | None, force: bool, **flags: Any) -> None:
    """Fail a CI build (exit 1) when TARGET (.onnx or manifest.json) breaks its budget; 2 on bad input.

    A manifest gated without any threshold is held to the budget it was built for."""
    from pathlib import Path

    from edgekd.gate import GateIncomplete, build_config, files_read, pyproject_settings, run_gate

    given = {k: v for k, v in flags.items() if v is not None}
    if "artifact" in given and not target.lower().endswith(".json"):
        _needs("a manifest.json TARGET", ("--artifact", given["artifact"]), why=" (it picks one of its artifacts)")
    settings = Path(config_path or "pyproject.toml")
    values = pyproject_settings(settings, required=config_path is not None)
    values.update(given)  # flags win
    flagged = _flags_over_settings(values, given)
    config = build_config(values, target)
    if flagged:
        from dataclasses import replace

        config = replace(config, notes=(*config.notes, *flagged))
    timing = [(f"--{k.replace('_', '-')}", given.get(k)) for k in ("rounds", "latency_tolerance")]
    if config.no_latency and (flag := next((f for f, v in timing if v is not None), None)):
        from edgekd.errors import ConfigError

        raise ConfigError(f"{flag} sets how latency is measured, and --no-latency skips every latency check",
                          f"drop {flag}, or --no-latency")
    if not config.measures_latency:  # given on the command line, it would go unread
        _needs("--max-latency or --baseline", *timing, why=" (it only sets how the latency checks measure)")
    step_summary = _step_summary_file()
    outputs = (("--junit", junit), ("--summary", summary), ("--json", json_out))
    check_distinct_outputs(*outputs, ("$GITHUB_STEP_SUMMARY", step_summary))
    # Checked once the settings are known (a baseline or data may come from pyproject), before any measuring.
    check_report_files(force, *outputs, inputs=(settings, *files_read(target, config)))
    if config.min_accuracy is None and config.max_accuracy_drop is None and config.min_class_accuracy is None:
        _needs("--min-accuracy, --min-class-accuracy or --max-accuracy-drop",
               *((f"--{k}", given.get(k)) for k in _DATA_FLAGS), why=" (it only feeds the accuracy checks)")
    try:
        result = run_gate(target, config)
    except GateIncomplete as exc:
        # Still exit 2 (the gate could not run), but CI's upload step gets the checks done and the error.
        _report_gate(exc.result, junit, summary, json_out, step_summary)
        raise
    _report_gate(result, junit, summary, json_out, step_summary)
    if not result.passed:
        ctx.exit(1)


def _flags_over_settings(values: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """Latency flags win over the pyproject settings they contradict, as every flag wins over its own key:
    --no-latency on a runner that cannot time drops the file's max_latency (and a baseline left with nothing to
    compare), and --max-latency (or a --baseline given alone) drops its no_latency. Returns the notes saying so."""
    dropped: list[str] = []
    if given.get("no_latency"):
        if "max_latency" in values and "max_latency" not in given:
            dropped.append(f"max_latency = {values.pop('max_latency')!r}")
        compares = any(k in values for k in ("max_size_growth", "max_accuracy_drop"))
        if "baseline" in values and "baseline" not in given and not compares:
            dropped.append(f"baseline = {values.pop('baseline')!r}")
        for key in ("rounds", "latency_tolerance"):
            if key in values and key not in given:
                values.pop(key)
        return [f"not checked: {', '.join(dropped)} from the gate settings (--no-latency)"] if dropped else []
    # a --baseline given to compare sizes or accuracy keeps the file's no_latency; one given alone asks for timing
    compares = any(k in values for k in ("max_size_growth", "max_accuracy_drop"))
    timed = "max_latency" in given or ("baseline" in given and not compares)
    if values.get("no_latency") and "no_latency" not in given and timed:
        values.pop("no_latency")
        return ["the gate settings' no_latency = true is overridden by the latency flags given"]
    return []


def _report_gate(result: Any, junit: str | None, summary: str | None, json_out: str | None,
                 step_summary: str | None) -> None:
    """The gate's result on stdout and in every report file asked for, with GitHub annotations under Actions."""
    import os

    from edgekd.gate_report import annotations, junit_xml, summary_markdown

    text = summary_markdown(result)
    click.echo(text)
    if junit:
        write_text(junit, junit_xml(result))
    if summary:
        write_text(summary, text)
    if json_out:
        write_json(json_out, result.to_dict())
    if step_summary:
        _append_step_summary(step_summary, text)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in annotations(result):
            click.echo(line)


_DATA_FLAGS = ("data", "resolution", "normalize", "channels")


def _step_summary_file() -> str | None:
    """$GITHUB_STEP_SUMMARY, checked before anything is measured: a gate's verdict should not end in an error
    about where its summary goes, and one that does should name the variable, which the user never typed."""
    import os
    from pathlib import Path

    from edgekd.errors import OutputError

    name = os.environ.get("GITHUB_STEP_SUMMARY")
    if not name:
        return None
    path = Path(name)
    if path.is_dir():
        problem = "is a folder"
    elif not path.parent.is_dir():
        problem = "is in a folder that does not exist"
    elif not os.access(path if path.exists() else path.parent, os.W_OK):
        problem = "is not writable"
    else:
        return name
    raise OutputError(f"$GITHUB_STEP_SUMMARY '{name}' {problem}", _STEP_SUMMARY_FIX)


_STEP_SUMMARY_FIX = "point GITHUB_STEP_SUMMARY at a writable file (GitHub Actions sets it), or unset it"


def _append_step_summary(name: str, text: str) -> None:
    from edgekd.errors import OutputError

    try:
        with open(name, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise OutputError(f"cannot append the summary to $GITHUB_STEP_SUMMARY '{name}' ({exc.strerror or exc})",
                          _STEP_SUMMARY_FIX) from None


@cli.command()
@click.argument("out_dir", type=str)
@click.option("--force", is_flag=True, help="Replace an existing report.html.")
def report(out_dir: str, force: bool) -> None:
    """Render OUT_DIR/report.html (plots: Pareto front, latency, training curves) from its manifest.json."""
    from edgekd.report_html import write_html_report

    click.echo(f"wrote {write_html_report(out_dir, force=force)}")
