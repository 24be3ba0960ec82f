"""The `edgekd` click group and the small helpers its commands share."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import click

from edgekd import __version__
from edgekd.fsutil import check_new_file


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekd")
def cli() -> None:
    """edgekd: compress a PyTorch model into a small, fast int8 ONNX student for an edge device."""


# What an interruption (Ctrl-C) leaves behind, as the running command knows it: one callable at a time.
_ON_INTERRUPT: list[Callable[[], str]] = []


def on_interrupt(say: Callable[[], str]) -> None:
    """Register the line printed if the command is interrupted (evaluated then: what is on disk by then)."""
    _ON_INTERRUPT[:] = [say]


NOTHING_WRITTEN = "interrupted: nothing was written"


def follower_rank() -> int:
    """This process's torchrun rank when it is one other than 0, else 0. Rank 0 alone says what every rank
    would (the same interruption; what it ran into); a follower says only an error of its own, marked with
    its rank. Read without importing torch for an error line; a malformed environment is refused by the
    command itself."""
    from edgekd.errors import ConfigError
    from edgekd.torchrun import env_world

    try:
        return env_world()[1]
    except ConfigError:
        return 0


def interrupted_message() -> str:
    return _ON_INTERRUPT[0]() if _ON_INTERRUPT else NOTHING_WRITTEN


# The folder the running command writes, and what it has kept there (evaluated when a write fails), for a disk
# full or a permission error: one callable at a time, as _ON_INTERRUPT.
_ON_OS_ERROR: list[Callable[[], tuple[str, str]]] = []


def on_os_error(say: Callable[[], tuple[str, str]] | None) -> None:
    """Register the (folder written, note on what it keeps) said with an OSError; None: nothing to say."""
    _ON_OS_ERROR[:] = [say] if say is not None else []


def os_error_line(exc: OSError) -> str:
    """An OSError (disk full, permission denied) as one line that names where it happened: shutil.copyfile and
    os.replace name the file written second, and their first is a source in a roomy /tmp staging folder; an
    error with no file (torch.save into an open file) names the folder the command writes."""
    folder, note = _ON_OS_ERROR[0]() if _ON_OS_ERROR else ("", "")
    written = exc.filename2 if exc.filename2 is not None else exc.filename
    where = f": {written}" if written is not None else (f" writing to {folder}/" if folder else "")
    return f"{exc.strerror or exc}{where}; check free space and permissions there{f'; {note}' if note else ''}"


def check_report_files(force: bool, *files: tuple[str, str | None], inputs: Iterable[Any] = ()) -> None:
    """Refuse (flag, path) report outputs that would clobber a file or replace one of the command's
    ``inputs``, before anything is measured."""
    inputs = list(inputs)
    for flag, path in files:
        if path is not None:
            check_new_file(path, force, flag, inputs, api_switch=None)  # the CLI's own flags: no Python advice


def check_distinct_outputs(*files: tuple[str, str | None]) -> None:
    """Refuse two (flag, path) outputs that name one file, before anything is measured: the second write
    would replace the first (--junit and --summary), or append to it ($GITHUB_STEP_SUMMARY), --force or not."""
    from pathlib import Path

    from edgekd.errors import OutputError

    seen: dict[Path, str] = {}
    for flag, path in files:
        if path is None or not str(path).strip():
            continue  # an empty path is refused by check_new_file, naming its flag
        where = Path(path).resolve()
        if where in seen:
            fix = (f"drop {seen[where]}: the summary is appended to $GITHUB_STEP_SUMMARY already"
                   if (seen[where], flag) == ("--summary", "$GITHUB_STEP_SUMMARY")
                   else f"give {seen[where]} and {flag} different files")
            raise OutputError(f"{seen[where]} and {flag} both name '{path}', and each report needs a file "
                              "of its own", fix)
        seen[where] = flag


def parse_shape(text: str) -> tuple[int, ...]:
    from edgekd.preprocess import parse_shape as parse

    return parse(text)


def needs(needed: str, *given: tuple[str, Any], why: str = "") -> None:
    """Refuse the first (flag, value) given without ``needed``, which alone gives it a meaning (said in ``why``)."""
    from edgekd.errors import ConfigError

    flag = next((f for f, v in given if v is not None), None)
    if flag:
        raise ConfigError(f"{flag} needs {needed}{why}", f"pass {needed}, or drop {flag}")


def with_options(options: list) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator applying click ``options`` so that --help lists them in this order."""
    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return wrap


def data_reading_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--resolution, --normalize and --channels: how validate and gate read --data for the model they check."""
    return with_options([
        click.option("--resolution", type=str,
                     help="Resize --data images to one side (square) or HEIGHTxWIDTH, e.g. 240x320."),
        click.option("--normalize", type=str, help="Normalisation of --data: dataset, none or MEAN/STD (default: "
                                                   "the one the manifest or the model's metadata records, else "
                                                   "dataset)."),
        click.option("--channels", type=click.Choice(["1", "3"]), help="Convert --data to the channels the model "
                     "takes: 3 repeats grayscale, 1 takes RGB's luminance (default: as the model's metadata "
                     "records; gate feeds each model, the baseline too, the channels its metadata records, and "
                     "--channels only to one recording none)."),
    ])(command)
