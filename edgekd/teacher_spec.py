"""What a ``--teacher`` string names, read without importing anything (a factory reference with literal
arguments, a ``.pt2`` program or an ``.onnx`` model, the files it reads), and how a factory's module is
imported: a file beside its helpers, or an installed package, with the user's folders on the path only
while it loads."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edgekd.errors import ModelError, first_line

FACTORY_REF = re.compile(r"(?P<module>.+):(?P<name>[A-Za-z_]\w*)\s*(?:\((?P<args>.*)\))?\s*", re.DOTALL)


def parse_factory_ref(spec: str) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
    """``module_or_file.py:factory`` or ``...:factory(arg, key=value)`` -> (module, name, args, kwargs).
    Arguments are Python literals only (numbers, strings, booleans, None, lists, tuples, dicts), read
    with ``ast.literal_eval``: a recipe or command line never runs code of its own."""
    import ast

    match = FACTORY_REF.fullmatch(spec)
    if match is None:
        raise ModelError(f"teacher '{spec}' is not of the form module_or_file.py:factory or file.pt2",
                         "pass e.g. --teacher my_model.py:build --weights model.pt, or "
                         "--teacher 'my_model.py:build(num_classes=10)' for a factory that takes arguments")
    if match["args"] is None or not match["args"].strip():
        return match["module"], match["name"], (), {}
    literal = "pass numbers, strings, True/False/None, lists or dicts, e.g. build(num_classes=10, width=0.5)"
    try:
        call = ast.parse(f"f({match['args']})", mode="eval").body
    except SyntaxError:
        raise ModelError(f"the arguments of teacher factory '{spec}' do not parse", literal) from None
    try:
        args = tuple(ast.literal_eval(a) for a in call.args)  # type: ignore[attr-defined]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}  # type: ignore[attr-defined]
    except ValueError:
        raise ModelError(f"the arguments of teacher factory '{spec}' are not all literals", literal) from None
    if None in kwargs:  # **mapping
        raise ModelError(f"the arguments of teacher factory '{spec}' unpack a mapping (**)", literal)
    return match["module"], match["name"], args, kwargs


def teacher_origin(spec: str | None, weights: str | None) -> str | None:
    """``spec`` and ``weights`` with their files resolved, so that runs of one teacher compare equal however
    its paths are spelled and whichever folder they run from; None when there is no spec."""
    if not isinstance(spec, str) or not spec:
        return None
    named, full_weights = resolved_spec(spec, weights)
    return named + (f" with weights {full_weights}" if full_weights else "")


def resolved_spec(spec: str, weights: Any) -> tuple[str, str | None]:
    """``spec`` and ``weights`` with their files as absolute paths: they name the same files from any folder."""

    def full(path: Any) -> str:
        return str(Path(path).expanduser().resolve())

    file = spec_file(spec)
    return spec if file is None else full(file) + spec[len(file):], full(weights) if weights else None


def is_program(spec: str) -> bool:
    """A torch.export program's path: .pt2 in any case, as .onnx is (T.PT2 from a case-insensitive disk)."""
    return spec.lower().endswith(".pt2")


def is_onnx(spec: str) -> bool:
    return spec.lower().endswith(".onnx")


def _is_file_ref(ref: str) -> bool:
    """The module part of file.py:factory, told from package.module as import_ref tells them."""
    return ref.lower().endswith(".py") or os.sep in ref


def layerless_kind(spec: Any) -> str | None:
    """What a teacher spec names when it is a file holding its own weights and no PyTorch modules (a .pt2
    program or an .onnx model), in words; None for a factory."""
    if not isinstance(spec, str):
        return None
    return "a torch.export program" if is_program(spec) else "an ONNX model" if is_onnx(spec) else None


def spec_file(spec: str) -> str | None:
    """The file a teacher spec names, as it spells it: a .pt2 or .onnx path, or the file of file.py:factory
    (as import_ref tells a file from a module name); None for package.module:factory, which is imported."""
    match = FACTORY_REF.fullmatch(spec)
    if is_program(spec) or is_onnx(spec) or match is None:
        return spec
    ref = match["module"]
    return ref if _is_file_ref(ref) else None


def spec_sources(spec: str) -> list[str]:
    """The files and folders loading the teacher ``spec`` reads, which no output may replace: its file, or for
    package.module:factory the top-level package's folder (or module file) that import would find. That one
    is looked up as Python would, without running it: a dotted name's parents would run on lookup."""
    file = spec_file(spec)
    if file is not None:
        return [file]
    match = FACTORY_REF.fullmatch(spec)
    top = match["module"].split(".")[0] if match else ""
    if not top.isidentifier():
        return []
    try:
        with importable(*user_folders(top)):  # where import_ref finds it
            found = importlib.util.find_spec(top)  # a top-level name: nothing is imported to find it
    except Exception:  # any finder's failure: the import itself says what is wrong, later
        return []
    if found is None:
        return []
    places = list(found.submodule_search_locations or ()) or ([found.origin] if found.has_location else [])
    return [_as_spelled(place) for place in places if place and os.path.exists(place)]


def _as_spelled(place: str) -> str:
    """``place`` relative to the working folder when it lies there, as the user would name it."""
    path, here = Path(place), Path.cwd()
    return str(path.relative_to(here)) if path.is_relative_to(here) else place


def check_no_weights(spec: str | None, weights: str | None) -> None:
    """A .pt2 program or an .onnx model holds its weights: ``weights`` given with one would go unread."""
    if weights is None or not isinstance(spec, str):
        return
    kind = layerless_kind(spec)
    if kind is not None:
        raise ModelError(f"teacher '{spec}' is {kind}, which holds its own weights",
                         "drop --weights (or pass file.py:factory with them)")
    from edgekd.teacher_files import refuse_model_as_weights

    if isinstance(weights, (str, os.PathLike)):
        refuse_model_as_weights(Path(weights))  # said here, before the data loads and the teacher is built


def user_folders(ref: str) -> tuple[list[str], list[str]]:
    """The folders the teacher ``ref`` imports from, put first and last on sys.path while it loads: a file's
    own folder first, as `python my_model.py` has it, for the helper modules beside it (`from layers import
    Block`), even one named like an installed module; and the folder edgekd runs from, last, as with
    `python -m` (a console script leaves it off the path), so an installed package of the same name wins."""
    front = [str(Path(ref).expanduser().resolve().parent)] if _is_file_ref(ref) else []
    return front, [os.getcwd()]


def import_ref(ref: str) -> Any:
    """The module ``ref`` names, imported with user_folders(ref) on the path."""
    if not _is_file_ref(ref):
        return _import_module(ref)
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ModelError(f"teacher module file '{ref}' does not exist", "check the path before ':'")
    name = f"edgekd_user_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelError(f"importing '{ref}' failed: {type(exc).__name__}: {exc}", "fix that file") from None
    return module


def _import_module(ref: str) -> Any:
    try:
        return importlib.import_module(ref)
    except ImportError as exc:
        raise _notimportable(ref, exc) from None
    except Exception as exc:  # found, but running it raised (ValueError, SyntaxError, ...): one line, as for a .py
        said = f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
        raise ModelError(f"importing '{ref}' failed: {said}",
                         f"fix that module (python -c 'import {ref}' shows where)") from None


@contextlib.contextmanager
def importable(front: Sequence[str] = (), back: Sequence[str] = ()) -> Iterator[None]:
    """``front`` first and ``back`` last on sys.path (those not there already) until the block ends. Left
    there, a file in the user's folder (an `onnx_model.py`, a `statistics.py`) would be imported in place of
    the module of that name that edgekd or its libraries import later; the modules imported from them while
    the block ran stay imported, so the teacher keeps its helpers."""
    added = [f for f in front if f not in sys.path]
    added += [b for b in back if b not in sys.path and b not in added]
    sys.path[:0] = [f for f in front if f in added]
    sys.path.extend(b for b in back if b in added and b not in front)
    try:
        yield
    finally:
        for entry in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def _notimportable(ref: str, exc: ImportError) -> ModelError:
    top = ref.split(".")[0]
    if isinstance(exc, ModuleNotFoundError) and exc.name == top and top in _TORCH_FAMILY:
        fix = (f"install it beside torch from the CPU index, so pip does not swap torch for a CUDA build: "
               f"pip install {top} --index-url https://download.pytorch.org/whl/cpu")
    elif isinstance(exc, ModuleNotFoundError) and exc.name == top:
        fix = f"install the package that provides '{top}' in this environment, or pass a .py file path"
    else:
        fix = "pass a .py file path or an importable module name"
    return ModelError(f"cannot import teacher module '{ref}' ({exc})", fix)


# Packages built against one torch release: a plain `pip install` of them may replace the CPU torch.
_TORCH_FAMILY = ("torchvision", "torchaudio", "torchtext")
