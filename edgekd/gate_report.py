"""What a gate's result becomes for CI: a markdown summary, JUnit XML and GitHub Actions annotations."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekd.gate import GateResult


def summary_markdown(result: GateResult) -> str:
    lines = [f"### edgekd gate: {'PASS' if result.passed else 'FAIL'} `{result.target}`", "",
             "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.message} |" for c in result.checks]
    if result.notes:
        lines += [""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def junit_xml(result: GateResult) -> str:
    from xml.sax.saxutils import escape, quoteattr

    failures = sum(not c.passed for c in result.checks)
    cases = []
    for c in result.checks:
        body = "" if c.passed else f"<failure message={quoteattr(c.message)}/>"
        cases.append(f'  <testcase classname="edgekd.gate" name={quoteattr(c.name)}>{body}</testcase>')
    # Where the thresholds and the profile came from, for whoever reads the CI report.
    notes = "".join(f"  <system-out>{escape(n)}</system-out>\n" for n in result.notes)
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="edgekd-gate" tests="{len(result.checks)}" '
            f'failures="{failures}">\n' + "\n".join(cases) + "\n" + notes + "</testsuite>\n")


def annotations(result: GateResult) -> list[str]:
    """GitHub Actions workflow commands, one per failed check."""
    return [f"::error title=edgekd gate {c.name}::{c.message}" for c in result.checks if not c.passed]
