"""Packages that are also their stage function: ``edgekd.search`` and ``edgekd.distill``.

The public API offers ``from edgekd import search, distill`` (functions), and the same names are
subpackages. Once a subpackage is imported, Python binds it to that name on ``edgekd``, so the name can
only ever mean the package; the package is therefore made callable, with the function's signature.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable
from typing import Any


class CallablePackage(types.ModuleType):
    """A package whose call runs its stage function."""

    __call_target__: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__call_target__(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.__call_target__)


def make_callable(package: str, function: Callable[..., Any]) -> None:
    """Make the imported package ``package`` call ``function`` (keeps its attributes and submodules)."""
    module = sys.modules[package]
    module.__class__ = CallablePackage
    module.__call_target__ = function
