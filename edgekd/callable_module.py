"""Modules that are also their stage function: ``edgekd.search``, ``edgekd.distill``, ``edgekd.validate``.

The public API offers ``from edgekd import search, distill, validate`` (functions), and the same names are
a subpackage or module of ``edgekd``. Once one is imported, Python binds it to that name on ``edgekd``, so
the name can only ever mean the module; the module is therefore made callable, with the function's
signature, and keeps its other attributes.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable
from typing import Any


class CallableModule(types.ModuleType):
    """A module whose call runs its stage function."""

    __call_target__: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__call_target__(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.__call_target__)


def make_callable(module_name: str, function: Callable[..., Any]) -> None:
    """Make the imported module ``module_name`` call ``function``."""
    module = sys.modules[module_name]
    module.__class__ = CallableModule
    module.__call_target__ = function
