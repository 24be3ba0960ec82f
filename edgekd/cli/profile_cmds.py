"""`edgekd profiles`: list, show and calibrate device profiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgekd.cli.base import cli, on_interrupt


@cli.group()
def profiles() -> None:
    """List, inspect and calibrate device profiles (calibrate: measure a space's latency table on one)."""


@profiles.command("list")
def profiles_list() -> None:
    """Every profile found: built-in and in the user profile folder."""
    from edgekd.errors import ProfileError
    from edgekd.profiles import builtin_dir, load_profile, profile_names, user_dir

    try:
        folder: Path | None = user_dir()
    except ProfileError as exc:  # a file, not a folder: the built-ins are still listed, the setting named
        click.echo(f"warning: {exc.message}", err=True)
        folder = None
    for name in profile_names(user=folder is not None):
        try:  # as `show` and --profile load it, so each name listed is one they find
            p = load_profile(name) if folder else load_profile(builtin_dir() / f"{name}.toml")
        except ProfileError as exc:  # one broken file does not hide the others
            click.echo(f"warning: {exc.message}", err=True)
            continue
        threads = p.runtime["intra_op_threads"] or "all"
        click.echo(f"{p.name:<16} {p.runner['kind']:<6} threads={threads!s:<4} {p.description}")
    where = f"add your own .toml files to {folder}" if folder else "point EDGEKD_PROFILE_DIR at a folder of your own"
    click.echo(f"({where} or pass --profile path/to/file.toml)")


@profiles.command("show")
@click.argument("name")
def profiles_show(name: str) -> None:
    """Print one profile, resolved with defaults, as JSON, with the latency tables calibrated for it and
    whether search can use each here."""
    from edgekd.latency.fit_check import trust
    from edgekd.latency.table import resume_why, table_summaries, unfinished_calibrations
    from edgekd.profiles import load_profile

    profile = load_profile(name)
    tables = table_summaries(profile, trust)
    unfinished = []  # each with whether calibrate resumes it, as tables say whether search can use them
    for partial in unfinished_calibrations(profile):
        why = resume_why(partial, profile)
        unfinished.append({"path": str(partial), "resumable": why is None, **({"why": why} if why else {})})
    running = [str(p) for p in unfinished_calibrations(profile, running=True)]
    click.echo(json.dumps({**profile.to_dict(), "latency_tables": tables, "interrupted_calibrations": unfinished,
                           "running_calibrations": running}, indent=2, ensure_ascii=False))


@profiles.command("calibrate")
@click.argument("name")
@click.option("--space", default="mbv2", show_default=True,
              help="Search space whose blocks to calibrate: mbv2 or resnet (search fits the pruned family itself).")
@click.option("--input-shape", default="1,32,32", show_default=True, help="Input C,H,W the students will see.")
@click.option("--classes", default=10, show_default=True, type=int, help="Number of classes.")
@click.option("--networks", default=96, show_default=True, type=int,
              help="Whole networks measured to fit the correction.")
@click.option("--force", is_flag=True, help="Measure again over a table search can use (it is replaced).")
def profiles_calibrate(name: str, space: str, input_shape: str, classes: int, networks: int, force: bool) -> None:
    """Measure a space's blocks on the profile's device and write its latency table (resumable)."""
    from edgekd.latency.calibrate import calibrate, partial_path
    from edgekd.latency.table import table_path
    from edgekd.profiles import load_profile
    from edgekd.torchrun import check_alone

    check_alone("profiles calibrate")  # two processes timing at once would each time the other's load
    shape = _image_shape(input_shape)
    prof = load_profile(name)
    path = table_path(prof, space, shape, classes)  # type: ignore[arg-type]
    _check_replacing(prof, space, shape, classes, path, force)
    partial = partial_path(path)
    on_interrupt(lambda: f"interrupted: the blocks measured so far are kept in {partial}; run the same command "
                 "again to resume" if partial.is_file() else "interrupted: nothing was written")
    table = calibrate(prof, space, shape, classes, networks=networks, force=force,  # type: ignore[arg-type]
                      log=lambda m: click.echo(f"[edgekd] {m}", err=True))
    click.echo(f"wrote {path} ({sum(len(v) for v in table.entries.values())} entries, "
               f"{table.seconds:.0f} s)")


def _check_replacing(prof: Any, space: str, shape: tuple[int, int, int], classes: int, path: Path,
                     force: bool) -> None:
    """A table search can use is kept unless --force (on a board it may stand for hours of measuring); one it
    cannot use (another onnxruntime, profile settings or edgekd; damaged) is replaced, and the log says which."""
    from edgekd.errors import ConfigError, ProfileError
    from edgekd.latency.table import load_table

    if not path.is_file():
        return
    try:
        table = load_table(prof, space, shape, classes, path=path)
    except ProfileError as exc:
        _check_not_anothers(prof, path, force)
        click.echo(f"[edgekd] calibrate {prof.name}: replaces {path}, which search cannot use ({exc.problem})",
                   err=True)
        return
    if force:
        click.echo(f"[edgekd] calibrate {prof.name}: replaces {path} (--force)", err=True)
        return
    from edgekd.latency.calibrate import partial_path

    runtime = f", onnxruntime {table.stamp.onnxruntime}" if table.stamp.onnxruntime else ""
    have = (f"profile '{prof.name}' already has a latency table search can use for space '{space}' at input "
            f"{','.join(map(str, shape))} with {classes} classes ({path}: {table.calibration_networks} "
            f"networks{runtime})")
    partial = partial_path(path)
    if partial.is_file():  # a --force run was interrupted: its measured blocks wait to be resumed, not redone
        raise ConfigError(f"{have}, and an interrupted recalibration of it is pending ({partial})",
                          "pass --force to resume it (the new table replaces this one), or delete the .partial "
                          "file to keep this table")
    raise ConfigError(have, "pass --force to measure it again (the new table replaces it), or keep it")


def _check_not_anothers(prof: Any, path: Path, force: bool) -> None:
    """A table this profile cannot use that another profile file of the same name still can (a copy
    fast-2t.toml of fast.toml with its name kept: tables are named after ``name``) is kept unless --force:
    replaced, it cost that profile its table (hours on a board), and calibrating that one in turn cost this."""
    from edgekd.errors import ConfigError
    from edgekd.latency.table import owning_file, shared_name_fix

    other = None if force else owning_file(path, prof)
    if other is not None:
        raise ConfigError(f"{path} is the latency table of profile file {other} (also named '{prof.name}', with "
                          f"other settings), and calibrating {prof.source} would replace it", shared_name_fix(prof,
                                                                                                           other))


def _image_shape(text: str) -> tuple[int, int, int]:
    """--input-shape as C,H,W, refused with a C,H,W example (parse_shape's are a model's N,C,H,W, which
    calibrate does not take)."""
    import math

    from edgekd.errors import ConfigError
    from edgekd.validate import MAX_INPUT_VALUES

    try:
        dims = tuple(int(d.strip()) for d in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise ConfigError(f"--input-shape '{text}' must be C,H,W (three positive integers)",
                          "write it as e.g. 1,32,32 or 3,224,224")
    count = math.prod(dims)
    if count > MAX_INPUT_VALUES:
        raise ConfigError(f"--input-shape {text} is {count:,} values an image ({count * 4 / 2**30:,.1f} GiB as "
                          f"float32), more than the {MAX_INPUT_VALUES:,} edgekd measures with",
                          "pass a smaller C,H,W, e.g. 3,224,224")
    return dims  # type: ignore[return-value]
