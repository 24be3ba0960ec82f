"""The pipeline commands: compress, search and distill, which share compress's options and recipes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgekd.cli.base import cli, on_interrupt, on_os_error, with_options
from edgekd.types.distill import KEEP_RULES  # plain dataclasses: keeps the CLI's imports light

_COMPRESS_OPTIONS = [
    click.option("--out", "-o", type=str, help="Output folder (created whole or not at all; default: "
                                                   "edgekd-out)."),
    click.option("--teacher", type=str, help="file.py:factory, package.module:factory, either with literal "
                                             "arguments, e.g. 'torchvision.models:resnet18(num_classes=10)', or a "
                                             "torch.export .pt2 file, or an .onnx model (logit losses only). Default: "
                                             "the embedded ResNet teacher."),
    click.option("--weights", type=str, help="State dict or training checkpoint for --teacher "
                                             "(loaded with weights_only=True), or a .safetensors file."),
    click.option("--data", type=str, help="A .npz file (x, y), an image folder (one sub-folder per class), a "
                                          ".csv file listing images (path,label), or 'digits' (the embedded "
                                          "default)."),
    click.option("--resolution", type=str, help="Resize images to one side (square, e.g. 224) or HEIGHTxWIDTH "
                                                "(e.g. 240x320). Default: as stored (an image folder: its first "
                                                "image's size); digits: 32."),
    click.option("--normalize", type=str, help="Input normalisation, as your teacher was trained: dataset "
                                               "(default: the data's own mean and std), none (pixels scaled to "
                                               "[0, 1]), or MEAN/STD, e.g. 0.485,0.456,0.406/0.229,0.224,0.225."),
    click.option("--channels", type=click.Choice(["1", "3"]), help="Channels your teacher takes, when the data "
                                                                   "has others: 3 repeats grayscale to RGB, 1 takes "
                                                                   "RGB's luminance."),
    click.option("--profile", type=str, help="Device profile name or .toml path (default: host-cpu-1t)."),
    click.option("--budget-ms", type=float, help="Latency budget: p50 on the profile, in milliseconds."),
    click.option("--max-size-kb", type=float, help="Size budget of the shipped artifact, in KiB."),
    click.option("--min-accuracy", type=float, help="Accuracy budget: the shipped student's test accuracy, a "
                                                    "fraction (e.g. 0.97)."),
    click.option("--max-accuracy-drop", type=float, help="Accuracy budget: at most this many percentage points "
                                                         "below the teacher's test accuracy (e.g. 1.0)."),
    click.option("--space", type=str, help="Student search space(s), comma-separated: mbv2, resnet, pruned "
                                           "(the teacher with fewer channels) (default: mbv2)."),
    click.option("--proxy", type=str, help="Training-free score: diswot, diswot_params, diswot_init, naswot, synflow, "
                                           "grad_norm, zico, params (default: params, the largest student the budgets "
                                           "allow, which distilled best on held-out digits draws; see the README's "
                                           "Search quality)."),
    click.option("--candidates", type=int, help="Distinct candidates the evolutionary search scores (default: 100)."),
    click.option("--latency-anchors", type=int,
                 help="Networks measured to fit the latency of a space with no calibrated table (default: 32; "
                      "fewer: a quicker, less accurate fit). The fit is cached for the next run on the same "
                      "profile and input."),
    click.option("--precision", type=click.Choice(["int8", "fp32"]),
                 help="Deployment precision the search checks the budgets for, and the one that ships and that "
                      "pruning (--target-ms) measures (default: int8; with --search, the file's)."),
    click.option("--epochs", type=int, help="Distillation epochs (default: 40); with --target-ms, the fine-tune "
                                            "epochs after the --prune-steps pruning steps (one KD epoch each)."),
    click.option("--lr", type=float, help="Peak learning rate (default: 0.005)."),
    click.option("--batch-size", type=int, help="Training batch size (default: 64)."),
    click.option("--temperature", type=float, help="KD temperature (default: 4)."),
    click.option("--alpha", type=float, help="Weight of the KD term vs. labels (default: 0.9)."),
    click.option("--losses", type=str, help="Distillation losses with weights, e.g. kd:1,dkd:0.5 "
                                            "(kd, dkd, dist, hint, rkd, at; ce: labels only; default: kd)."),
    click.option("--hint-student", type=str, help="Student module paths tapped for hint/at/rkd (comma-separated)."),
    click.option("--hint-teacher", type=str, help="Teacher module paths paired with --hint-student."),
    click.option("--augment/--no-augment", default=None,
                 help="Shift the training images by up to 2 pixels while distilling, the teacher labelling each "
                      "shifted batch (default); --no-augment for data whose content must stay in place (the "
                      "teacher's outputs are then computed once)."),
    click.option("--labels/--no-labels", default=None, help="--no-labels: the data's labels are placeholders "
                                                            "(unlabelled data): learn from the teacher's soft labels "
                                                            "alone, and score the search's proxies against the "
                                                            "teacher's predicted classes."),
    click.option("--qat-epochs", type=int, help="Run the last N distillation epochs quantization-aware."),
    click.option("--qat-lr", type=float, help="Peak learning rate of the quantization-aware epochs "
                                              "(default: --lr / 10)."),
    click.option("--qat-full-range/--qat-reduced-range", default=None,
                 help="QAT int8 weights in [-127, 127], for CPUs with int8 dot products (x86 VNNI, ARM), or in "
                      "[-64, 64] (default: safe on every x86 CPU, where older int8 kernels saturate)."),
    click.option("--keep-epoch", type=click.Choice(KEEP_RULES),
                 help="Whose weights distillation keeps: the best validation epoch, or the latest one within one "
                      "standard error of it (near-best; a small validation set tells epochs apart by chance) "
                      "(default: best)."),
    click.option("--target-ms", type=float, help="Prune during KD until the measured latency reaches this (ms): "
                                               "--prune-steps steps of one KD epoch each, then --epochs fine-tune "
                                               "epochs (trains prune-steps + epochs epochs in all)."),
    click.option("--prune-steps", type=int, help="Pruning steps (KD between them) to the planned ratio (default: 8)."),
    click.option("--prune-importance", type=str, help="Channel importance: l2, l1, fpgm, lamp, taylor (default: l2)."),
    click.option("--prune-round-to", type=int, help="Keep pruned channel counts multiples of this."),
    click.option("--seed", type=int, help="Random seed (default: 0)."),
    click.option("--calibration", type=click.Choice(["minmax", "entropy", "percentile"]),
                 help="int8 calibration method (default: minmax)."),
    click.option("--opset", type=int, help="ONNX opset of the shipped files (default: 18); down to 13 for an "
                                           "older runtime (not with --qat-epochs)."),
    click.option("--latency-rounds", type=int, help="Interleaved validation runs; the int8 student ships only if "
                                                    "the median of their speedups over fp32 is >= 1.02x (default: 3)."),
    click.option("--ort/--no-ort", default=None,
                 help="Also write each student in ORT format (student-int8.ort, with the operator list of a reduced "
                      "onnxruntime build) for onnxruntime mobile, optimised for the profile's platform (default: "
                      "--no-ort)."),
    click.option("--search", "search_file", type=str, help="Reuse the search.json written by `edgekd search`."),
    click.option("--distilled", type=str, help="Export, validate and report the student `edgekd distill --out DIR` "
                                               "trained in DIR, without searching or training again."),
    click.option("--config", "recipe", type=str, help="Recipe TOML with the same keys as these flags; flags win. A "
                                                      "flag changes a recipe's value but cannot clear one (a "
                                                      "budget, --teacher): remove that key from the recipe."),
    click.option("--force", is_flag=True, help="Replace a non-empty output folder."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bars or stage messages; warnings are still "
                                                     "printed (to stderr)."),
]


# Options of compress that the search stage does not take.
_TRAINING_ONLY = {"--epochs", "--lr", "--batch-size", "--temperature", "--alpha", "--calibration", "--search",
                  "--augment", "--losses", "--hint-student", "--hint-teacher", "--qat-epochs", "--qat-lr",
                  "--qat-full-range", "--keep-epoch", "--target-ms",
                  "--prune-steps", "--prune-importance", "--prune-round-to", "--latency-rounds",
                  "--min-accuracy", "--max-accuracy-drop", "--distilled"}
# Options of compress that distill does not take: accuracy is budgeted where the ONNX files are validated.
_EXPORT_ONLY = {"--calibration", "--latency-rounds", "--min-accuracy", "--max-accuracy-drop", "--distilled", "--ort"}


def _flag(option: Any) -> str:
    probe = option(lambda: None)
    return probe.__click_params__[0].opts[0]


# search writes one JSON file, not a folder: its --out and --force say so.
_SEARCH_FILE_OPTIONS = {
    "--out": click.option("--out", "-o", type=str,
                          help="Ranking JSON file to write (default: search.json); compress and distill take it "
                               "with --search."),
    "--force": click.option("--force", is_flag=True, help="Replace an existing --out file."),
    "--opset": click.option("--opset", type=int, help="ONNX opset the candidates' files are written at, whose size "
                                                      "--max-size-kb checks (default: 18; below 18 the files are "
                                                      "larger); compress and distill ship at the file's opset."),
    "--ort": click.option("--ort/--no-ort", default=None,
                          help="Size the candidates by the larger of their .onnx and ORT-format copy, as compress "
                               "--ort holds both to --max-size-kb (default: --no-ort, the .onnx alone)."),
}


def _search_options() -> list:
    return [_SEARCH_FILE_OPTIONS.get(_flag(o), o) for o in _COMPRESS_OPTIONS if _flag(o) not in _TRAINING_ONLY]


# distill keeps its checkpoint when interrupted, by design: its --out is not all-or-nothing as compress's is.
_DISTILL_OUT = click.option("--out", "-o", type=str,
                            help="Output folder (default: edgekd-distill): student.pt, distill.json and search.json "
                                 "once the run finishes, and checkpoint.pt after every epoch, kept when the run "
                                 "is interrupted so that --resume continues it.")


def _distill_options() -> list:
    return [_DISTILL_OUT if _flag(o) == "--out" else o for o in _COMPRESS_OPTIONS if _flag(o) not in _EXPORT_ONLY] + [
        click.option("--resume", is_flag=True, help="Continue the run whose checkpoint.pt is in --out.")]


def _merged_options(ctx: click.Context, recipe: str | None, quiet: bool, flags: dict[str, Any],
                    silent: bool = False) -> tuple:
    """Recipe values overlaid with the flags given on the command line (flags win); plus --force and a logger,
    which with --quiet still says warnings (a result to doubt is no progress message), and ``silent`` nothing."""
    from edgekd.pipeline.recipe import load_recipe

    values: dict[str, Any] = load_recipe(recipe) if recipe else {}
    force = bool(flags.pop("force"))
    for name, value in flags.items():
        given = ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        if value is not None and (given or name not in values):
            values[name] = value
    def log(msg: str) -> None:
        if not silent and (not quiet or msg.startswith("warning:")):
            click.echo(f"[edgekd] {msg}", err=True)

    return values, force, log


def _compress_config(ctx: click.Context, recipe: str | None, values: dict[str, Any], **extra: Any) -> Any:
    """CompressConfig of the merged ``values``, where a refusal of the recipe's value (``epochs = 0``) names the
    recipe and its key, not the flag (--epochs) nobody typed; a flag's own is named as a flag."""
    from edgekd.pipeline import CompressConfig
    from edgekd.tomlread import from_file

    return from_file(lambda v: CompressConfig(**v, **extra), values,
                     [k for k in values if recipe and not _given(ctx, k)], where=f"recipe '{recipe}':",
                     file=f"'{recipe}'", spell=_recipe_key, flag=lambda k: f"--{_recipe_key(k)}")


def _recipe_key(field: str) -> str:
    return "search" if field == "search_file" else field.replace("_", "-")


@cli.command()
@with_options(_COMPRESS_OPTIONS)
@click.pass_context
def compress(ctx: click.Context, recipe: str | None, quiet: bool, **flags: Any) -> None:
    """Search, distill, export (fp32 + int8 ONNX) and validate a student for a device budget."""
    from edgekd.pipeline import compress as run
    from edgekd.report import summary_table

    values, force, log = _merged_options(ctx, recipe, quiet, flags)
    if values.get("distilled"):
        _refuse_training_flags(ctx)
        _say_recipe_training_keys(ctx, values, log)
        _refuse_search_with_distilled(ctx, values, recipe)
    _refuse_search_flags(ctx, values)
    config = _compress_config(ctx, recipe, values, force=force, progress=not quiet and sys.stderr.isatty())
    _refuse_recipe_as_out(recipe, config.out)
    on_interrupt(lambda: f"interrupted: nothing was written to {config.out}/ (to make a long training resumable, "
                 "run it as `edgekd distill --out DIR`, continue it with --resume, then ship it with "
                 "`edgekd compress --distilled DIR`)")
    result = run(config, log=log)
    manifest = result.manifest
    click.echo(summary_table(manifest))
    for note in manifest["notes"]:
        click.echo(f"note: {note}")
    verdict = "PASS" if result.passed else "FAIL"
    click.echo(f"{verdict}: primary artifact {manifest['primary']} -> {str(result.out).rstrip('/')}/ "
               "(report.html, report.md, manifest.json)")
    if not result.passed:
        ctx.exit(1)


def _stage_out(ctx: click.Context, values: dict[str, Any], default: str, log: Any) -> str:
    """A stage command's --out, from its command line only: a recipe's `out` names compress's folder, and a
    search file or distill folder written there would make the recipe's own compress refuse it."""
    recipe_out = values.pop("out", None)
    if ctx.get_parameter_source("out") is click.core.ParameterSource.COMMANDLINE:
        return ctx.params["out"]  # an empty --out is refused later, not read as the default
    if recipe_out is not None:
        log(f"the recipe's out ({recipe_out}) names compress's output folder; {ctx.info_name} writes {default} "
            "(pass --out to choose)")
    return default


# The recipe key naming what a stage command writes, for compress to take: (key, as the recipe spells it,
# what it names, what the stage does instead of reading it).
_STAGE_PRODUCT = {"search": ("search_file", "search", "the ranking compress and distill reuse", "ranks anew"),
                  "distill": ("distilled", "distilled", "the student compress ships", "trains anew")}


def _drop_stage_product(ctx: click.Context, values: dict[str, Any], out: str, log: Any) -> None:
    """A recipe's search (given to `search`) or distilled (given to `distill`) names what that stage makes,
    for the recipe's compress: the stage makes it anew rather than reading it, which it did without a word,
    writing its default --out while compress went on reusing the older file. Dropped, it is no input that
    --force must not replace when --out names it."""
    key, spelled, what, does = _STAGE_PRODUCT[ctx.info_name]
    named = values.pop(key, None)
    if named is None or not str(out).strip() or Path(named).resolve() == Path(out).resolve():
        return
    log(f"the recipe's {spelled} ({named}) names {what}; {ctx.info_name} {does} and writes {out} "
        f"(pass --out {named} to write it there)")


def _refuse_recipe_as_out(recipe: str | None, out: str) -> None:
    """The recipe is an input like the teacher: --force must not write the run over it, or wipe the folder
    that holds it."""
    from edgekd.fsutil import check_not_input

    if str(out).strip():  # an empty --out is refused as empty by the stage, not as the current folder
        check_not_input(out, [recipe], "--out", folder=True)


def _refuse_training_flags(ctx: click.Context) -> None:
    """With --distilled the student is trained already: a search or training flag would be ignored."""
    from edgekd.distilled import TRAINED_WITH
    from edgekd.errors import ConfigError

    given = [k for k in TRAINED_WITH if _given(ctx, k)]
    if given:
        split = ", whose seed also split the data" if given[0] == "seed" else ""
        raise ConfigError(f"--{given[0].replace('_', '-')} does not apply with --distilled (the student is trained "
                          f"already, with the recipe in its distill.json{split})",
                          "drop it, or train again without --distilled")


def _say_recipe_training_keys(ctx: click.Context, values: dict[str, Any], log: Any) -> None:
    """A recipe's search and training keys with distilled are passed over, not refused as their flags are (a
    recipe shared with `distill` holds them), and said: they went unread without a word, a seed among them
    though it also picks the split the shipped student is scored on."""
    from edgekd.distilled import TRAINED_WITH

    unread = [k.replace("_", "-") for k in TRAINED_WITH if k in values and not _given(ctx, k)]
    if unread:
        log(f"the recipe's {', '.join(unread)} {'does' if len(unread) == 1 else 'do'} not apply with distilled: "
            f"the student was trained with those in {Path(values['distilled']) / 'distill.json'}")


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE


def _refuse_search_with_distilled(ctx: click.Context, values: dict[str, Any], recipe: str | None) -> None:
    """--distilled with a search file, each named as the user gave it: a flag, or a key of the recipe."""
    from edgekd.errors import ConfigError

    if not values.get("search_file"):
        return
    search, distilled = (f"--{flag}" if _given(ctx, key) else f"the recipe's {flag} ('{values[key]}')"
                         for key, flag in (("search_file", "search"), ("distilled", "distilled")))
    raise ConfigError(f"{distilled} and {search} cannot be combined: the distilled folder holds the search its "
                      "student came from", "drop --search" if _given(ctx, "search_file") else
                      f"remove the search key from '{recipe}', or leave --distilled out")


def _refuse_search_flags(ctx: click.Context, values: dict[str, Any], resumed: Path | None = None) -> None:
    """Search flags with a search file, or with ``resumed``: the search.json of the run --resume continues,
    which trains the student that search chose."""
    from edgekd.errors import ConfigError
    from edgekd.pipeline.resumed import SEARCH_KEYS

    # --precision also sets the precision pruning measures (--target-ms); a search file's own decides that, and
    # what ships
    given = [k for k in SEARCH_KEYS if _given(ctx, k) and not (k == "precision" and values.get("target_ms")
                                                              and not values.get("search_file"))]
    if not given:
        return
    flag = f"--{given[0].replace('_', '-')}"
    if values.get("search_file"):
        raise ConfigError(f"{flag} does not apply with the search file '{values['search_file']}': its student was "
                          "chosen already, by the search that wrote it",
                          f"drop {flag}, or run `edgekd search` with it and pass the file it writes")
    if resumed is not None and resumed.is_file():
        raise ConfigError(f"{flag} does not apply with --resume: the run continues training the student its "
                          f"search chose ('{resumed}')",
                          f"drop {flag}, or start the run over with --force instead of --resume (it replaces the "
                          "run) to search with it")


@cli.command("search")
@with_options(_search_options())
@click.pass_context
def search_cmd(ctx: click.Context, recipe: str | None, quiet: bool, **flags: Any) -> None:
    """Rank students for a budget without training them; write the ranking (--out, a JSON file)."""
    from edgekd.pipeline import run_search
    from edgekd.types.search import broken_limits, score_text, size_kb_text

    values, force, log = _merged_options(ctx, recipe, quiet, flags)
    out = _stage_out(ctx, values, "search.json", log)
    _drop_stage_product(ctx, values, out, log)
    _refuse_recipe_as_out(recipe, out)
    config = _compress_config(ctx, recipe, values, progress=not quiet and sys.stderr.isatty())
    result = run_search(config, out, force=force, log=log)
    click.echo(f"| rank | params | {result.precision} KB (~ estimated) | score | measured ms | predicted ms | "
               "chosen / limit broken | space | config |")
    click.echo("|---:|---:|---:|---:|---:|---:|---|---|---|")
    chosen = result.chosen.spec.key()
    for rank, c in enumerate(result.candidates[:10], 1):
        ms = f"{c.latency_ms:.3f}" if c.latency_ms is not None else "-"
        pred = f"{c.predicted_ms:.3f}" if c.predicted_ms is not None else "-"
        size = size_kb_text(c.size_bytes, c.file_bytes)
        # Why a better-scored candidate was passed over: the limit its measurement, file, or corrected
        # prediction or size estimate broke.
        mark = "chosen" if c.spec.key() == chosen else broken_limits(
            c.latency_ms, c.file_bytes, config.budget_ms, config.max_size_kb, c.predicted_ms,
            result.latency_scale.get(c.spec.space, 1.0), c.size_bytes, result.size_scale.get(c.spec.space, 1.0))
        click.echo(f"| {rank} | {c.params:,} | {size} | {score_text(c.score)} | {ms} | {pred} | {mark} | "
                   f"{c.spec.space} | {c.spec.config} |")
    click.echo(f"{result.evaluated} candidates scored, {len(result.pareto)} on the score/latency Pareto front, "
               f"{result.measured} measured")
    import shlex

    # quoted: a path with a space pasted as it was gave --search its first word and compress two stray arguments
    click.echo(f"chose {result.chosen.spec.space} {result.chosen.spec.config} -> {out} "
               f"(compress with --search {shlex.quote(str(out))})")


@cli.command("distill")
@with_options(_distill_options())
@click.pass_context
def distill_cmd(ctx: click.Context, recipe: str | None, quiet: bool, resume: bool, **flags: Any) -> None:
    """Train the searched student from the teacher (KD losses, QAT, pruning toward --target-ms); write
    student.pt, student-fp32.onnx (student-int8.onnx instead with --qat-epochs), distill.json and search.json to --out,
    with a checkpoint after every epoch (none while pruning)."""
    from edgekd.distill.ddp import launched
    from edgekd.pipeline import run_distill

    follower = launched()[1] != 0  # under torchrun rank 0 speaks for every process
    if resume and flags.get("force"):
        from edgekd.errors import ConfigError

        raise ConfigError("--force and --resume cannot be combined: --resume continues the run in --out, and "
                          "--force would replace it", "drop --force to continue the run, or --resume to start over")
    values, force, log = _merged_options(ctx, recipe, quiet, flags, silent=follower)
    out = _stage_out(ctx, values, "edgekd-distill", log)
    _drop_stage_product(ctx, values, out, log)
    _refuse_search_flags(ctx, values, Path(out) / "search.json" if resume and str(out).strip() else None)
    _refuse_recipe_as_out(recipe, out)
    config = _compress_config(ctx, recipe, values, force=force, progress=not quiet and sys.stderr.isatty())
    wrote: list[Path] = []  # the checkpoints this run wrote, as the stage reports them
    replaces = not resume and force and _holds_files(out)
    on_interrupt(lambda: _distill_interrupted(out, resume, force, replaces, bool(wrote)))
    on_os_error(lambda: (str(out).rstrip("/"), _distill_kept(out, resume, force, bool(wrote))))
    trained = run_distill(config, out, resume=resume, log=log, on_checkpoint=wrote.append)
    if not follower:
        click.echo(f"{trained.kept_line()} -> {str(out).rstrip('/')}/ ({', '.join(_distill_files(Path(out)))})")


_DISTILL_FILES = ("student.pt", "student-fp32.onnx", "student-int8.onnx", "distill.json", "search.json",
                  "checkpoint.pt")


def _distill_files(out: Path) -> list[str]:
    """The files the run left in ``out``, as they are (QAT writes student-int8.onnx and no fp32 file; pruning
    no checkpoint), in the order a user reads them."""
    return [name for name in _DISTILL_FILES if (out / name).is_file()]


def _holds_files(out: str) -> bool:
    try:
        return bool(str(out).strip()) and Path(out).is_dir() and any(Path(out).iterdir())
    except OSError:  # refused with its reason by the stage
        return False


def _distill_kept(out: str, resume: bool, force: bool, wrote: bool) -> str:
    """What a distill that failed writing (a disk full) kept to continue from, as ``_distill_interrupted`` says it."""
    checkpoint = Path(out) / "checkpoint.pt"
    if wrote or (resume and checkpoint.is_file()):
        how = "with --resume instead of --force" if force else "with --resume"
        return f"{checkpoint} holds the last finished epoch; run the same command {how} to continue"
    return ""


def _earlier_run_line(out: str) -> str:
    """Where the earlier run a --force run stopped before its first checkpoint is, as the disk has it: put back
    as --out, or, if putting it back failed, still set aside beside it (said with the command that puts it back)."""
    import os

    from edgekd.distilled import put_back, set_aside_runs

    ours = [left for left in set_aside_runs(out) if left.name.split(".edgekd-replaced-")[-1].split("-")[0]
            == str(os.getpid())]
    if ours:
        return (f"interrupted: nothing was written; the earlier run in {out}/ is kept as '{ours[-1]}' (this one "
                f"stopped before its first checkpoint); put it back with {put_back(out, ours[-1])}")
    return (f"interrupted: nothing was written; the earlier run in {out}/ is as it was (this one stopped before "
            "its first checkpoint)")


def _distill_interrupted(out: str, resume: bool, force: bool, replaces: bool, wrote: bool) -> str:
    """What an interrupted distill left, as the run knows it: a checkpoint it wrote (or, resumed, the one it
    continued from), else nothing. A checkpoint already in --out is no evidence: after a --force run stopped
    before its first epoch ended, it is the earlier run's, put back, and resuming it needs that run's settings."""
    kept = _distill_kept(out, resume, force, wrote)
    if kept:
        return f"interrupted: {kept}"
    if replaces:
        return _earlier_run_line(out)
    return f"interrupted: nothing was written to {out}/"
