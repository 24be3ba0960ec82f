"""`edgekd report`: a run's report.html rendered again from its folder."""

from __future__ import annotations

import click

from edgekd.cli.base import cli


@cli.command()
@click.argument("out_dir", type=str)
@click.option("--force", is_flag=True, help="Replace an existing report.html.")
def report(out_dir: str, force: bool) -> None:
    """Render OUT_DIR/report.html (plots: Pareto front, latency, training curves) from its manifest.json."""
    from edgekd.report_html import write_html_report

    # its warnings (files gone or changed since the manifest) on stderr, apart from what was written
    click.echo(f"wrote {write_html_report(out_dir, force=force, log=lambda msg: click.echo(msg, err=True))}")
