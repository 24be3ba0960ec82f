"""One exception hierarchy. The library raises; only the CLI formats and exits.

Every message names what is wrong and, through ``fix``, what to do about it, so the
CLI can print a single actionable line.
"""

from __future__ import annotations

from collections.abc import Callable


class EdgeKDError(Exception):
    """Base of every error edgekd raises on purpose."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.problem}; {self.fix}" if self.fix else self.problem


class EdgeKDWarning(UserWarning):
    """A warning edgekd gives through the Python API when no ``log`` is passed (the CLI prints it instead)."""


def api_log(log: Callable[[str], None] | None) -> Callable[[str], None]:
    """The sink a stage says its messages to: ``log`` when given, else one that keeps progress messages quiet
    and passes warnings on as ``EdgeKDWarning``: dropped with the progress, a notebook user shipped a student at
    chance and never saw the warning that said so."""
    return log if log is not None else _warn_only


def _warn_only(message: str) -> None:
    if message.startswith("warning: "):
        import warnings

        warnings.warn(message.removeprefix("warning: "), EdgeKDWarning, stacklevel=3)


def did_you_mean(name: str, known: list[str]) -> str:
    """"did you mean 'x'? " for the closest known name to a mistyped one, else ""."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean '{close[0]}'? " if close else ""


class ConfigError(EdgeKDError):
    """A recipe, flag or option value is invalid."""


class ProfileError(EdgeKDError):
    """A device profile is unknown or malformed."""


class DataError(EdgeKDError):
    """A dataset is missing, unreadable or does not fit the model."""


class ModelError(EdgeKDError):
    """A teacher or student model cannot be built, loaded or run."""


class BudgetError(EdgeKDError):
    """No candidate can meet the latency or size budget."""


class OutputError(EdgeKDError):
    """The output location cannot be written safely."""


class ExportError(EdgeKDError):
    """An artifact could not be exported or quantized."""


class RunnerError(EdgeKDError):
    """Latency could not be measured on the device."""


class ArtifactError(EdgeKDError):
    """An artifact file is missing, corrupt or not ONNX."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """A library's exception in one line of edgekd's: its message's first line, cut to ``limit`` characters,
    or its type's name when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def require_number(name: str, value: object, whole: bool = False) -> None:
    """A ConfigError naming the setting unless ``value`` is a finite number (a whole one with ``whole``): a
    string ("3") or a bool passed from Python reached a range check and failed there as a raw TypeError."""
    import math
    import numbers

    kind = numbers.Integral if whole else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):  # type: ignore[arg-type]
        raise ConfigError(f"{name} must be {'a whole number' if whole else 'a number'}, got {value!r}",
                          f"pass {name} as {'an integer' if whole else 'a number'}")


def kind_of(value: object) -> str:
    """``value`` as an error names a wrong one: a path or string by its text, None as None, anything else by
    its type with its article ("an int", "a dict")."""
    from pathlib import PurePath

    if value is None:
        return "None"
    if isinstance(value, (str, PurePath)):
        return f"the {'string' if isinstance(value, str) else 'path'} '{value}'"
    kind = type(value).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"
