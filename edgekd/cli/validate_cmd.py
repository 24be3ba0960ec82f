"""`edgekd validate`: one ONNX model checked (checker, size, latency on a profile, accuracy), or re-checked
against its manifest entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekd.cli.base import check_report_files, cli, data_reading_options, needs, parse_shape
from edgekd.fsutil import write_json


@cli.command()
@click.argument("model", type=str)
@click.option("--profile", default="host-cpu-1t", show_default=True,
              help="Device profile name or .toml path (with --manifest: the recorded profile unless given).")
@click.option("--data", type=str, help="Measure accuracy on this data's test split (.npz, image folder, .csv "
              "list of images or 'digits').")
@data_reading_options
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
    from edgekd.torchrun import check_alone

    check_alone("validate")  # distill alone runs under torchrun
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
    needs("--manifest", ("--artifact", artifact), ("--rounds", rounds), ("--latency-tolerance", latency_tolerance),
           ("--accuracy-tolerance", accuracy_tolerance))
    if data is None:
        needs("--data", ("--resolution", resolution), ("--normalize", normalize), ("--channels", channels),
               ("--seed", seed))
    from edgekd.latency.cache import noisy
    from edgekd.profiles import computed_here, load_profile
    from edgekd.textfmt import one_line
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
                                seed=seed, log=lambda m: click.echo(m, err=True))
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
    # the latency line names the device; the accuracy is this host's
    here = [] if prof.is_local else [f"the accuracy was {computed_here(prof)}; the latency is the device's"]
    if r.accuracy is not None:
        lowest = sorted((acc, name) for name, acc in (r.class_accuracy or {}).items())[:3]
        weakest = (" (lowest classes: " + ", ".join(f"{one_line(name)} {acc:.1%}" for acc, name in lowest) + ")"
                   if len(r.class_accuracy or {}) > 3 else "")
        click.echo(f"accuracy on {dataset.name} test split ({len(dataset.y_test)} images): {r.accuracy * 100:.2f}%"
                   f"{weakest}")
        if here:
            click.echo(f"note: {here[0]}")
    for name, ok in r.verdicts.items():
        click.echo(f"{name}: {'pass' if ok else 'FAIL'}")
    for note in report.notes:
        click.echo(f"note: {note}")
    if json_out:
        record = report.to_dict()
        if dataset is not None:  # what the accuracy was measured on, and what makes it doubtful, for a CI step
            from edgekd.validate import data_record

            record["data"] = data_record(art, dataset, data, split_seed(art.path, seed), normalize, resolution,
                                         channels)
            record["notes"] = [*(f"warning: {n}" for n in dataset.notes), *(f"note: {n}" for n in here),
                               *record["notes"]]
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
    result = recheck(model, manifest, config, log=lambda m: click.echo(m, err=True))
    click.echo(f"{model} against manifest entry '{result.artifact}' of {manifest}")
    click.echo(recheck_table(result))
    for note in result.notes:
        click.echo(f"note: {note}")
    if json_out:
        write_json(json_out, result.to_dict())
    failed = [c.name for c in result.checks if not c.passed]
    click.echo("PASS: the artifact matches its manifest entry" if not failed else f"FAIL: {', '.join(failed)}")
    if failed:
        ctx.exit(1)
