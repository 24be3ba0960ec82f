"""What a gate's result becomes for CI: a markdown summary, JUnit XML and GitHub Actions annotations.

A message can quote user data (a class name, a file name) holding any character: each output escapes what
its format gives a meaning to, so a name cannot break a table row, an XML file or a workflow command."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from edgekd.textfmt import md_code, one_line

if TYPE_CHECKING:
    from edgekd.gate import Check, GateResult


def summary_markdown(result: GateResult) -> str:
    errors = sum(c.errored for c in result.checks)
    failed = any(not c.passed and not c.errored for c in result.checks)
    # A check that failed is a verdict even when another could not run: the headline says both.
    verdict = ("PASS" if result.passed else "FAIL" if not errors else
               f"FAIL, and ERROR: {errors} check{'s' * (errors > 1)} could not run" if failed else "ERROR")
    gated = f" (artifact {md_code(_line(result.artifact))})" if result.artifact else ""
    lines = [f"### edgekd gate: {verdict} {md_code(_line(result.target))}{gated}", "",
             "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {_cell(c.name)} | {_outcome(c)} | {_cell(c.message)} |" for c in result.checks]
    if result.notes:
        lines += [""] + [f"- {_line(n)}" for n in result.notes]
    return "\n".join(lines) + "\n"


def _outcome(check: Check) -> str:
    return "pass" if check.passed else "**ERROR**" if check.errored else "**FAIL**"


def _line(text: str) -> str:
    """``text`` on one markdown line: its line breaks as spaces, other control characters as escapes (the
    summary is echoed to a terminal too)."""
    return one_line(re.sub(r"\r\n|[\r\n]", " ", text))


def _cell(text: str) -> str:
    """``text`` inside one markdown table cell, where a ``|`` would start another cell."""
    return _line(text).replace("|", r"\|")


# Characters XML 1.0 allows (its Char production); any other makes the whole file unreadable to a CI server.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot hold written as Python escapes (``\\x1b``)."""
    return _NOT_XML.sub(lambda m: repr(m.group())[1:-1], text)


def junit_xml(result: GateResult) -> str:
    from xml.sax.saxutils import escape, quoteattr

    errors = sum(c.errored for c in result.checks)
    failures = sum(not c.passed and not c.errored for c in result.checks)
    # A manifest's artifact in the class name: several artifacts of one manifest, gated in a CI matrix and
    # merged into one test report, stay apart there.
    classname = quoteattr(_xml_text("edgekd.gate" + (f".{result.artifact}" if result.artifact else "")))
    cases = []
    for c in result.checks:
        # A check that could not run (the device not reached) is JUnit's error, which CI servers tell from a failure.
        kind = "error" if c.errored else "failure"
        body = "" if c.passed else f"<{kind} message={quoteattr(_xml_text(c.message))}/>"
        cases.append(f'  <testcase classname={classname} name={quoteattr(_xml_text(c.name))}>{body}</testcase>')
    # Where the thresholds and the profile came from, for whoever reads the CI report: one element, as the
    # common JUnit schema allows one <system-out> per suite.
    said = "\n".join(result.notes)
    notes = f"  <system-out>{escape(_xml_text(said))}</system-out>\n" if said else ""
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="edgekd-gate" tests="{len(result.checks)}" '
            f'failures="{failures}" errors="{errors}">\n' + "\n".join(cases) + "\n" + notes + "</testsuite>\n")


def annotations(result: GateResult) -> list[str]:
    """GitHub Actions workflow commands, one per failed (or errored) check, encoded as the runner decodes them."""
    return [f"::error title={_command_property(f'edgekd gate {c.name}')}::{_command_data(c.message)}"
            for c in result.checks if not c.passed]


def _command_data(text: str) -> str:
    """A workflow command's message: a newline would end the command, and the runner decodes %XX. A lone
    surrogate (a file name that is not UTF-8) is written as an escape, as the summary writes it."""
    text = _SURROGATE.sub(lambda m: repr(m.group())[1:-1], text)
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _command_property(text: str) -> str:
    """A workflow command's property value: as its message, and ``:`` and ``,`` end a property."""
    return _command_data(text).replace(":", "%3A").replace(",", "%2C")
