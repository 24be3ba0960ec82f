"""Thin click commands over the Python API. The one place an EdgeKDError becomes a message and exit code.

Exit codes: 0 success, 1 a check failed (budget, verdict), 2 bad input or usage, 130 interrupted (Ctrl-C),
143 terminated (SIGTERM); either way nothing half-written is left.
"""

from __future__ import annotations

import sys

import click

from edgekd.cli import bench_cmd, gate_cmd, profile_cmds, report_cmd, stages, validate_cmd  # noqa: F401  (each registers its commands on the group)
from edgekd.cli.base import (
    NOTHING_WRITTEN,
    cli,
    follower_rank,
    interrupted_message,
    on_interrupt,
    on_os_error,
    os_error_line,
)
from edgekd.errors import EdgeKDError

__all__ = ["cli", "main"]


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job, `kill`, a container stopping), unwound like Ctrl-C: Python's default would
    end the process on the spot and leave a staging folder beside --out and temporary files behind."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


def usage_line(exc: click.UsageError) -> str:
    """A click usage error (a bad value, an unknown option or command) as one line: the message and where the
    command's help is, as every other error of the CLI is said."""
    ctx = exc.ctx
    where = ctx.command_path if ctx is not None else "edgekd"
    option = (ctx.help_option_names or ["--help"])[-1] if ctx is not None else "--help"
    message = " ".join(exc.format_message().split()).rstrip(".")
    return f"error: {message}{' ' if message.endswith('?') else '; '}try '{where} {option}' for help"


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns edgekd errors into one clean line and exit code."""
    import signal
    import threading

    on_interrupt(lambda: NOTHING_WRITTEN)  # until the command says otherwise (main may run more than once)
    on_os_error(None)
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set a handler
    before = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    ctrl_c = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        _run(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, before)
            if ctrl_c is not None:  # None: a handler set outside Python, which cannot be put back from here
                signal.signal(signal.SIGINT, ctrl_c)


# click 8.2 names `edgekd` alone apart from other usage errors; 8.1 (which pyproject allows) shows its help itself
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _run(argv: list[str] | None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="edgekd", standalone_mode=False)
    except EdgeKDError as exc:
        _say(f"error: {exc.message}")
        sys.exit(exc.exit_code)
    except OSError as exc:  # disk full, permission denied, ...: the system's own words, without a traceback
        _say(f"error: {os_error_line(exc)}")
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # click's own four lines (usage, hint, blank, error), said in one
        if isinstance(exc, _NO_ARGS):  # `edgekd` alone: its help, as click shows it
            exc.show()
        else:
            click.echo(usage_line(exc), err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:  # click turns Ctrl-C into Abort
        _deaf_to_ctrl_c()  # first: a second Ctrl-C while the line is made (it reads the disk) cut it off
        _say(interrupted_message(), error=False)
        # click 8.2 raises its Abort `from` the interrupt, 8.1 inside the handler: __cause__ or __context__.
        sys.exit(143 if any(isinstance(e, Terminated) for e in (exc, exc.__cause__, exc.__context__)) else 130)
    sys.exit(rv if isinstance(rv, int) else 0)


def _deaf_to_ctrl_c() -> None:
    """Once the run is interrupted, a second Ctrl-C (users press it twice) cut off the line that says so, or
    landed in torch's exit-time finalizers and printed their traceback after it: it is ignored while the run
    says what it left, unwinds and exits."""
    import atexit
    import threading

    if threading.current_thread() is not threading.main_thread():  # only it may set a handler
        return
    _ignore_ctrl_c()
    # main() gives an in-process caller its own handler back; for the process's exit it is ignored again before
    # torch's finalizers run (atexit runs the last registered first, and torch registered its own on import).
    atexit.unregister(_ignore_ctrl_c)
    atexit.register(_ignore_ctrl_c)


def _ignore_ctrl_c() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _say(line: str, error: bool = True) -> None:
    """An error or interruption line on stderr. Under torchrun rank 0 speaks for every rank: the same Ctrl-C
    reaches them all, so a follower says no interruption. A follower's error may be its own (node 2 lacks
    --data), and torchrun reports only its exit code: it is said, marked with the rank."""
    rank = follower_rank()
    if not rank:
        click.echo(line, err=True)
    elif error:
        click.echo(f"[rank {rank}] {line}", err=True)
