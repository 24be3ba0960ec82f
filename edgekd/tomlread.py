"""TOML parsing on every Python edgekd installs on: the standard library's ``tomllib`` from 3.11, and on 3.10
(Ubuntu 22.04's system Python) the ``tomli`` package it was taken from, a dependency there only."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from tomllib import TOMLDecodeError, loads  # novermin: reached on 3.11 and later only
else:  # pragma: no cover - exercised on Python 3.10 only
    from tomli import TOMLDecodeError, loads

__all__ = ["TOMLDecodeError", "loads"]
