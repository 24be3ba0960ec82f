"""How figures and names read in a message: a measured figure beside its limit, and a name from user data
(a class folder, an .npz's class_names) on one line, whatever characters it holds."""

from __future__ import annotations

import re

# Past this many extra decimals two different floats still printing alike are as good as equal to a reader.
_MORE_DECIMALS = 12


def figures(measured: float, limit: float, decimals: int, passed: bool, at_most: bool = True) -> tuple[str, str]:
    """``measured`` and ``limit`` with ``decimals`` decimals, or with as many more as it takes for the printed
    figures to read as the verdict ``passed`` (``at_most``: the check is measured <= limit, else >=). Rounding
    puts a failed figure just past its limit onto it ("0.055 ms, limit 0.055 ms" on a FAIL); a passing one is
    never printed past its limit, as rounding keeps the order."""
    for extra in range(_MORE_DECIMALS + 1):
        shown = f"{measured:.{decimals + extra}f}", f"{limit:.{decimals + extra}f}"
        if _reads_passed(*shown, at_most) == passed:
            return shown
    return repr(measured), repr(limit)


def decimals(shown: str) -> int:
    """The decimals a figure was printed with ("1.0198" -> 4): those of the figures printed beside it."""
    return len(shown.partition(".")[2])


def _reads_passed(measured: str, limit: str, at_most: bool) -> bool:
    return float(measured) <= float(limit) if at_most else float(measured) >= float(limit)


def sizes(measured: int, limit: float, passed: bool) -> tuple[str, str]:
    """A file size and its limit in KB (one decimal), or in bytes where KB would round one onto the other."""
    kb = f"{measured / 1024:.1f}", f"{limit / 1024:.1f}"
    if _reads_passed(*kb, at_most=True) == passed:
        return f"{kb[0]} KB", f"{kb[1]} KB"
    measured_bytes, limit_bytes = figures(measured, limit, 0, passed)
    return f"{measured_bytes} bytes", f"{limit_bytes} bytes"


# C0 and C1 control characters, the line and paragraph separators some renderers break lines at, and lone
# surrogates: a file or folder name that is not UTF-8 (from a Windows zip) reaches Python as one, and no UTF-8
# output (a report file, the terminal) can hold it.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(name: str) -> str:
    """``name`` with its control characters (a newline, a tab, ESC) and lone surrogates written as Python
    escapes (``\\n``, ``\\x1b``, ``\\udce9``), as repr() would: a class name from user data then stays on one
    line of a message, cannot move a terminal's cursor and can be written as UTF-8, while the name is still
    recognisable."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], name)


def md_code(text: str) -> str:
    """``text`` as a markdown code span that shows it unchanged: fenced by one backtick more than its longest
    run of backticks, and padded with a space where it starts or ends with a backtick or a space (CommonMark
    takes one space off each side of a padded span)."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_code_to_html(text: str) -> str:
    """Markdown ``text`` whose only markup is code spans (as ``md_code`` writes them) as HTML: the spans as
    <code>, everything escaped, so a name shows as it was (backticks included)."""
    from html import escape

    parts, at = [], 0
    for opening in re.finditer("`+", text):
        if opening.start() < at:
            continue  # inside a span already taken
        fence = opening.group()
        closing = re.compile(f"(?<!`){fence}(?!`)").search(text, opening.end())
        if closing is None:
            continue  # a lone backtick run is text
        code = text[opening.end():closing.start()]
        if len(code) > 1 and code.startswith(" ") and code.endswith(" ") and code.strip(" "):
            code = code[1:-1]
        parts += [escape(text[at:opening.start()]), f"<code>{escape(code)}</code>"]
        at = closing.end()
    return "".join(parts) + escape(text[at:])
