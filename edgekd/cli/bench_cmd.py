"""`edgekd bench`: latency of models measured interleaved on a profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekd.cli.base import check_report_files, cli, parse_shape
from edgekd.fsutil import write_json


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
    from edgekd.torchrun import check_alone

    check_alone("bench")  # distill alone runs under torchrun
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
        # the cache holds a comparison whole (ratios only hold within one run): none of its models was cached
        click.echo(f"note: {names}: cv above the profile's max_cv ({prof.measure['max_cv']:.0%}) even after measuring "
                   "twice as long, so the figures are rough, and this comparison (every model in it) was not cached; "
                   "rerun when the machine is quieter, or raise measure.repeats in the profile")
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
