"""Thin click commands over the Python API. The one place an EdgeKDError becomes a message and exit code.

Exit codes: 0 success, 1 a check failed (budget, verdict), 2 bad input or usage.
"""

from __future__ import annotations

import sys

import click

from edgekd.cli import checks, profile_cmds, stages  # noqa: F401  (each registers its commands on the group)
from edgekd.cli.base import NOTHING_WRITTEN, cli, interrupted_message, on_interrupt
from edgekd.errors import EdgeKDError

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns edgekd errors into one clean line and exit code."""
    on_interrupt(lambda: NOTHING_WRITTEN)  # until the command says otherwise (main may run more than once)
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
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo(interrupted_message(), err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
