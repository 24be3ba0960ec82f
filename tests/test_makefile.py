"""The Makefile's setup step, as a new user's machine meets it."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_python_older_than_3_10_is_named_before_anything_is_installed(tmp_path):
    """torch 2.13 has no wheel before Python 3.10: pip said only "no matching distribution", and the .venv made
    with the old Python stayed for the next try."""
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\nexit 1\n")  # answers the version check as an older Python does
    old.chmod(0o755)
    stamp = tmp_path / "venv" / ".installed"  # the setup step of a .venv of its own
    done = subprocess.run(["make", "-s", "-C", str(ROOT), str(stamp), f"PYTHON={old}", f"VENV={tmp_path / 'venv'}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"error: {old} is not Python 3.10 or later; pass one: make {stamp} PYTHON=python3.11" in done.stderr
    assert not (tmp_path / "venv").exists()
