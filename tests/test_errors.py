"""The sink the Python API's stages say their messages to when no ``log`` is passed."""

import warnings

import pytest

from edgekd.errors import EdgeKDWarning, api_log


def test_without_a_log_a_warning_is_an_edgekd_warning_and_progress_is_quiet():
    with pytest.warns(EdgeKDWarning, match=r"^the student is still near chance$"):
        api_log(None)("warning: the student is still near chance")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        api_log(None)("distill: epoch 1/40")


def test_a_log_passed_hears_every_message_as_it_is():
    lines: list[str] = []
    for message in ("warning: w", "search: s"):
        api_log(lines.append)(message)
    assert lines == ["warning: w", "search: s"]
