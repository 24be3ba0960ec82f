"""TOML parsing on every Python edgekd installs on: the standard library's ``tomllib`` from 3.11, and on 3.10
(Ubuntu 22.04's system Python) the ``tomli`` package it was taken from, a dependency there only; and the
naming of a settings file's value that a later check refuses (``from_file``)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from edgekd.errors import EdgeKDError

if sys.version_info >= (3, 11):
    from tomllib import TOMLDecodeError, loads  # novermin: reached on 3.11 and later only
else:  # pragma: no cover - exercised on Python 3.10 only
    from tomli import TOMLDecodeError, loads

__all__ = ["TOMLDecodeError", "from_file", "loads"]

T = TypeVar("T")


def from_file(build: Callable[[dict[str, Any]], T], values: dict[str, Any], file_keys: Iterable[str], *,
              where: str, file: str, spell: Callable[[str], str], flag: Callable[[str], str]) -> T:
    """``build(values)``, where a refusal caused by a value read from a settings file (one of ``file_keys``, the
    keys whose value is the file's, not a flag's) names the file (``file``; ``where`` leads the message) and the
    key as written there (``spell``) instead of the flag (``flag``) nobody typed. The checks are written once,
    for flags; which key a refusal is about is found by building again without each file key: one whose absence
    clears (else changes) the refusal caused it. Only an error path pays for the extra builds."""
    try:
        return build(values)
    except EdgeKDError as exc:
        file_keys = [k for k in file_keys if k in values]
        keys = _culprits(build, values, file_keys, exc.message)
        if not keys:
            raise  # the flags' own (or the file's, caught before): named as it is
        raise _named(exc, keys, file_keys, values, (where, file), spell, flag) from None


def _culprits(build: Callable[[dict[str, Any]], Any], values: dict[str, Any], keys: list[str],
              message: str) -> list[str]:
    cleared, changed = [], []
    for key in keys:
        try:
            build({k: v for k, v in values.items() if k != key})
        except Exception as other:  # noqa: BLE001 - any other failure is another refusal, not the user's error
            if not isinstance(other, EdgeKDError) or other.message != message:
                changed.append(key)
            continue
        cleared.append(key)
    return cleared or changed


def _named(exc: EdgeKDError, keys: list[str], file_keys: list[str], values: dict[str, Any],
           source: tuple[str, str], spell: Callable[[str], str], flag: Callable[[str], str]) -> EdgeKDError:
    """``exc`` led by the ``keys`` that caused it, each flag of a file key (``file_keys``) named as its key."""
    import json

    where, file = source

    def reworded(text: str) -> str:
        for key in file_keys:
            name = re.escape(flag(key))
            # "pass --rounds 3" asks for a flag's value: in the file it is "set rounds = 3"
            text = re.sub(rf"\bpass {name}(?![\w-]) (?=[-0-9\"'.A-Z])", f"set {spell(key)} = ", text)
            # a flag named beside the file's key ("--profile or [tool.edgekd.gate] profile") says both already
            text = re.sub(rf"{name}(?![\w-])(?! or \[)", spell(key), text)
        return text

    said = ", ".join(f"{spell(k)} = {json.dumps(values[k], default=str)}" for k in keys)
    fix = f"fix it in {file}: {reworded(exc.fix)}" if exc.fix else f"fix it in {file}"
    try:
        return type(exc)(f"{where} {said}: {reworded(exc.problem)}", fix)
    except TypeError:  # pragma: no cover - a subclass taking other arguments keeps its own message
        return exc
