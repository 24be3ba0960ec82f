"""A measured figure beside its limit reads as its verdict; a name from user data stays one line and unchanged."""

import pytest

from edgekd.textfmt import figures, md_code, md_code_to_html, one_line, sizes


@pytest.mark.parametrize("measured, limit, decimals, passed, at_most, expected", [
    (0.05504, 0.055, 3, False, True, ("0.05504", "0.05500")),  # a FAIL rounded onto its limit gets the digit
    (1.104, 1.1, 2, False, True, ("1.104", "1.100")),
    (1.0198, 1.02, 2, False, False, ("1.0198", "1.0200")),  # a floor: just under it
    (49.96, 50.0, 1, False, False, ("49.96", "50.00")),
    (0.05496, 0.055, 3, True, True, ("0.055", "0.055")),  # a PASS at its limit after rounding reads as at it
    (2.0000000001, 2.0, 2, True, True, ("2.00", "2.00")),  # passed within a tolerance: not printed past the limit
    (0.2, 0.5, 3, True, True, ("0.200", "0.500")),
])
def test_figures_read_as_their_verdict(measured, limit, decimals, passed, at_most, expected):
    assert figures(measured, limit, decimals, passed, at_most) == expected


def test_sizes_are_kb_unless_kb_rounds_a_failed_file_onto_its_limit():
    assert sizes(87626, 100 * 1024, True) == ("85.6 KB", "100.0 KB")
    assert sizes(164454, 164453, False) == ("164454 bytes", "164453 bytes")
    assert sizes(164454, 164453.6, False) == ("164454.0 bytes", "164453.6 bytes")
    assert sizes(164453, 164454, True) == ("160.6 KB", "160.6 KB")


def test_one_line_writes_control_characters_as_escapes():
    assert one_line("three\nnewline") == r"three\nnewline"
    assert one_line("zero\x1b[31m\x0c\t\x85\u2028") == r"zero\x1b[31m\x0c\t\x85\u2028"
    assert one_line("<b>é|`x`</b>") == "<b>é|`x`</b>"  # printable text is left alone


def test_one_line_writes_a_lone_surrogate_as_an_escape_so_the_name_can_be_written_as_utf8():
    name = b"caf\xe9".decode("utf-8", "surrogateescape")  # a folder name from a Windows zip, as Python reads it
    assert one_line(name) == r"caf\udce9"
    one_line(name).encode("utf-8")  # no UnicodeEncodeError


@pytest.mark.parametrize("name, markdown", [
    ("cat", "`cat`"),
    ("dog`s toy", "``dog`s toy``"),
    ("``x", "``` ``x ```"),
    ("a`", "`` a` ``"),
    (" pad ", "`  pad  `"),
])
def test_a_code_span_shows_a_name_unchanged_in_markdown_and_in_html(name, markdown):
    from html import escape

    assert md_code(name) == markdown
    assert md_code_to_html(f"class {md_code(name)} <b>") == f"class <code>{escape(name)}</code> &lt;b&gt;"


def test_html_from_markdown_keeps_a_lone_backtick_as_text():
    assert md_code_to_html("a ` b `c` d") == "a <code>b</code>c` d"  # CommonMark takes the padding off
    assert md_code_to_html("one `` two") == "one `` two"
