"""`edgekd gate`: the CI check of a model or manifest against its budgets, with its JUnit, markdown and JSON
reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekd.cli.base import (
    NOTHING_WRITTEN,
    check_distinct_outputs,
    check_report_files,
    cli,
    data_reading_options,
    needs,
)
from edgekd.errors import EdgeKDError
from edgekd.fsutil import check_not_input, json_text


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
@data_reading_options
@click.option("--seed", type=int, help="Seed of the train/validation/test split of --data, one for the model and "
              "its baseline (default: the one a manifest records, the split it was measured on, else 0).")
@click.option("--profile", type=str, help="Device profile for latency and accuracy (default: a manifest's own "
              "profile, else host-cpu-1t).")
@click.option("--allowed-ops", type=str, help="Comma-separated operator types the target runtime supports.")
@click.option("--max-opset", type=int, help="Highest opset the target runtime supports.")
@click.option("--ops-config", type=str, help="The required_operators.config a reduced onnxruntime build (your app's) "
              "was compiled with: the manifest's ORT-format copy may need no operator outside it.")
@click.option("--artifact", type=str, help="Which artifact of a manifest to gate, and of a manifest --baseline to "
              "compare with (default: each one's primary; a .onnx TARGET is compared with the baseline's artifact of "
              "its file name, else of its sha256, else the primary).")
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
    from edgekd.torchrun import check_alone

    check_alone("gate")  # distill alone runs under torchrun
    from edgekd.gate import GateIncomplete, run_gate

    given = {k: v for k, v in flags.items() if v is not None}
    step_summary = _step_summary_file()
    outputs = (("--junit", junit), ("--summary", summary), ("--json", json_out))
    check_distinct_outputs(*outputs, ("$GITHUB_STEP_SUMMARY", step_summary))
    settings, values = Path(config_path or "pyproject.toml"), {}
    try:
        config = _config(target, settings, config_path is not None, given, values)
        inputs = (settings, *_files_read(target, config))
    except EdgeKDError as exc:
        # A refusal of the settings is the gate's error as much as one found while gating: under --force, the
        # reports must not keep the last run's PASS (when they can be written without touching an input).
        known = _files_read(target, _Known(values))
        if known is not None:
            _report_error(exc, target, given, (settings, *known), force, outputs, step_summary)
        raise
    check_report_files(force, *outputs, inputs=inputs)
    if step_summary:  # appended to, not replaced, yet an input it names (the model) would be broken all the same
        check_not_input(step_summary, inputs, "$GITHUB_STEP_SUMMARY")
    said = _no_latency_from(settings, config, given)
    try:
        result = run_gate(target, config, log=lambda m: click.echo(m, err=True))  # stdout: the report alone
    except GateIncomplete as exc:
        # Still exit 2 (the gate could not run), but CI's upload step gets the checks done and the error.
        _report_gate(said(exc.result), junit, summary, json_out, step_summary)
        raise
    except EdgeKDError as exc:
        # Bad input found while gating (data, a model file, a baseline): the reports asked for say so as an
        # error. Without them CI's upload step has nothing, and under --force it would upload the last run's PASS.
        _report_gate(said(_errored(exc, target, config.artifact, config.notes)), junit, summary, json_out,
                     step_summary, echo=False)
        raise
    result = said(result)
    _report_gate(result, junit, summary, json_out, step_summary)
    if not result.passed:
        ctx.exit(1)


def _config(target: str, settings: Path, required: bool, given: dict[str, Any], values: dict[str, Any]) -> Any:
    """The GateConfig of the flags ``given`` over the pyproject ``settings`` (merged into ``values``, for a refusal
    to read), and every refusal of how they combine, before any report is checked or anything measured."""
    from edgekd.gate import build_config, check_not_folder, pyproject_settings
    from edgekd.tomlread import from_file

    check_not_folder(Path(target), "target")  # before "no thresholds": a run's folder is gated by its manifest
    from_settings = pyproject_settings(settings, required=required)
    values.update(from_settings)
    values.update(given)  # flags win
    if "artifact" in given and not _is_json(target) and not _is_json(values.get("baseline")):
        needs("a manifest.json TARGET or a manifest.json --baseline", ("--artifact", given["artifact"]),
              why=" (it picks one of its artifacts)")
    flagged = _flags_over_settings(values, given)
    # a value of the file's refused names the file and its key, not a flag nobody typed
    config = from_file(lambda v: build_config(v, target), values, [k for k in from_settings if k not in given],
                       where=f"{settings}: [tool.edgekd.gate]", file=f"'{settings}'", spell=lambda k: k,
                       flag=lambda k: f"--{k.replace('_', '-')}")
    if flagged:
        from dataclasses import replace

        config = replace(config, notes=(*config.notes, *flagged))
    timing = [(f"--{k.replace('_', '-')}", given.get(k)) for k in ("rounds", "latency_tolerance")]
    if config.no_latency and (flag := next((f for f, v in timing if v is not None), None)):
        from edgekd.errors import ConfigError

        if "no_latency" in given:
            raise ConfigError(f"{flag} sets how latency is measured, and --no-latency skips every latency check",
                              f"drop {flag}, or --no-latency")
        # the user typed no --no-latency: name the file it came from, and the flag that overrides it there
        raise ConfigError(f"{flag} sets how latency is measured, and no-latency = true in [tool.edgekd.gate] of "
                          f"'{settings}' skips every latency check",
                          f"drop {flag}, or remove no-latency from '{settings}' (or pass --max-latency, which "
                          "overrides it, to check a latency limit)")
    if not config.measures_latency:  # given on the command line, it would go unread
        needs("--max-latency or --baseline", *timing, why=" (it only sets how the latency checks measure)")
    if config.min_accuracy is None and config.max_accuracy_drop is None and config.min_class_accuracy is None:
        needs("--min-accuracy, --min-class-accuracy or --max-accuracy-drop",
              *((f"--{k}", given.get(k)) for k in _DATA_FLAGS), why=" (it only feeds the accuracy checks)")
    return config


def _is_json(path: Any) -> bool:
    return isinstance(path, str) and path.lower().endswith(".json")


class _Known:
    """The paths a gate refused in its settings had read so far (``values``, flags over pyproject), where
    files_read looks for a GateConfig's: the inputs its errored reports must keep clear of."""

    def __init__(self, values: dict[str, Any]) -> None:
        for key in ("baseline", "data", "ops_config", "profile"):
            value = values.get(key)
            setattr(self, key, value if isinstance(value, (str, Path)) else None)


def _files_read(target: str, config: Any) -> list[Path] | None:
    """files_read's inputs; None for a refused run's when they cannot be told (a manifest that cannot be read may
    list any file beside it), so that no report is written over one."""
    from edgekd.gate import files_read

    if isinstance(config, _Known):
        try:
            return files_read(target, config)  # type: ignore[arg-type]
        except (EdgeKDError, OSError, ValueError, TypeError, KeyError):
            return None
    return files_read(target, config)


def _errored(exc: EdgeKDError, target: str, artifact: str | None, notes: tuple[str, ...]) -> Any:
    """The result of a gate ended by ``exc``: one errored check named gate, which CI shows as an error."""
    from edgekd.gate import Check, GateResult

    return GateResult(target, (Check("gate", False, exc.message, errored=True),), notes,
                      artifact if _is_json(target) else None)  # a .onnx target's --artifact is the baseline's


def _report_error(exc: EdgeKDError, target: str, given: dict[str, Any], inputs: tuple[Any, ...], force: bool,
                  outputs: tuple[tuple[str, str | None], ...], step_summary: str | None) -> None:
    """The settings' refusal ``exc`` in the reports asked for, as an error found while gating is; none written
    where the reports themselves would be refused (an existing one without --force, or an input)."""
    from edgekd.fsutil import check_not_input

    try:
        check_report_files(force, *outputs, inputs=inputs)
        if step_summary:
            check_not_input(step_summary, inputs, "$GITHUB_STEP_SUMMARY")
    except EdgeKDError:
        return  # the refusal the user sees is ``exc``; the reports are left as they were
    junit, summary, json_out = (path for _, path in outputs)
    _report_gate(_errored(exc, target, given.get("artifact"), ()), junit, summary, json_out, step_summary,
                 echo=False)


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
        for key in ("rounds", "latency_tolerance", "input_shape"):  # they only feed the latency checks
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


def _no_latency_from(settings: Path, config: Any, given: dict[str, Any]) -> Any:
    """What the result's notes should say of a no_latency set in the settings file, not on the command line:
    "(--no-latency)" sent the user looking for a flag nobody typed. A function of the result."""
    from dataclasses import replace

    if not config.no_latency or "no_latency" in given:
        return lambda result: result
    source = f"(no_latency = true in '{settings}')"
    return lambda result: replace(result, notes=tuple(n.replace("(--no-latency)", source) for n in result.notes))


def _report_gate(result: Any, junit: str | None, summary: str | None, json_out: str | None,
                 step_summary: str | None, echo: bool = True) -> None:
    """The gate's result in every report file asked for, and (``echo``) on stdout, with GitHub annotations under
    Actions; a gate ended by an error says it in its one error line instead."""
    import os

    from edgekd.gate_report import annotations, junit_xml, summary_markdown

    text = summary_markdown(result)
    if echo:
        click.echo(text)
    _write_reports(((junit, "--junit", junit_xml(result)), (summary, "--summary", text),
                    (json_out, "--json", json_text(result.to_dict()))), step_summary, text)
    if echo and os.environ.get("GITHUB_ACTIONS") == "true":
        for line in annotations(result):
            click.echo(line)


_DATA_FLAGS = ("data", "resolution", "normalize", "channels", "seed")


def _step_summary_file() -> str | None:
    """$GITHUB_STEP_SUMMARY, checked before anything is measured: a gate's verdict should not end in an error
    about where its summary goes, and one that does should name the variable, which the user never typed."""
    import os

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


def _write_reports(reports: tuple[tuple[str | None, str, str], ...], step_summary: str | None, text: str) -> None:
    """The (path, flag, text) ``reports`` asked for, all or none (each staged, then all renamed at once), then
    ``text`` appended to ``step_summary``, last: appended to, it cannot be staged. Written one by one, a Ctrl-C
    between them left this run's verdict in some and the last run's in others, under "nothing was written":
    an interruption now says which were written by then."""
    from edgekd.cli.base import on_interrupt
    from edgekd.fsutil import write_texts

    asked = [(path, flag) for path, flag, _ in reports if path]
    if step_summary:
        asked.append((step_summary, "$GITHUB_STEP_SUMMARY"))
    written: list[str | Path] = []
    on_interrupt(lambda: _reports_interrupted(asked, written))
    write_texts([(path, body) for path, _, body in reports if path], written)
    if step_summary:
        _append_step_summary(step_summary, text)
        written.append(step_summary)


def _reports_interrupted(asked: list[tuple[str, str]], written: list[str | Path]) -> str:
    """The interruption line of a gate stopped while writing its reports (or after)."""
    if not written:
        return NOTHING_WRITTEN
    done = [f"{flag} '{path}'" for path, flag in asked if path in written]
    left = [f"{flag} '{path}'" for path, flag in asked if path not in written]
    if not left:
        return f"interrupted: the reports were written ({', '.join(done)})"
    return (f"interrupted while writing the reports: {', '.join(done)} written, {', '.join(left)} left as "
            f"{'they were' if len(left) > 1 else 'it was'}; run the gate again for a whole set of this run's")


def _append_step_summary(name: str, text: str) -> None:
    from edgekd.errors import OutputError

    try:
        with open(name, "a+b") as fh:
            # after a line another step left unended, the heading must start a line of its own to be one
            ended = fh.tell() == 0 or (fh.seek(-1, 2), fh.read(1))[1] == b"\n"
            fh.write(("" if ended else "\n").encode() + text.encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"cannot append the summary to $GITHUB_STEP_SUMMARY '{name}' ({exc.strerror or exc})",
                          _STEP_SUMMARY_FIX) from None
