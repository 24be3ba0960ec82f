"""Teachers: the embedded default (trained on the fly, cached) and a user's own model.

A user's teacher is ``module_or_file.py:factory`` (with literal arguments if it takes any) plus a
state-dict file, a ``torch.export`` ``.pt2`` program, or (the Python API) a module already in memory.
Checkpoints load with ``weights_only=True``: a checkpoint never runs code.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import Dataset
from edgekd.errors import DataError, ModelError, first_line
from edgekd.types import DistillConfig


@dataclass(frozen=True)
class TeacherRecipe:
    """The embedded default teacher: a small ResNet trained on the default data."""

    stem: int = 24
    widths: tuple[int, ...] = (24, 48, 96)
    depths: tuple[int, ...] = (2, 2, 2)
    training: DistillConfig = field(default_factory=lambda: DistillConfig(
        epochs=15, lr=3e-3, weight_decay=1e-4, augment=True, seed=0))

    def digest(self, data: Dataset) -> str:
        """Of what changes the trained teacher. Training options left at their defaults are left out, so a
        new option added to DistillConfig does not make every cached teacher stale."""
        recipe = asdict(self)
        defaults = DistillConfig().to_dict()
        recipe["training"] = {k: v for k, v in self.training.to_dict().items() if v != defaults.get(k)}
        payload = json.dumps({"recipe": recipe, "data": data.describe(), "version": 2}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class Teacher:
    module: Any  # torch.nn.Module in eval mode
    source: str  # how it was obtained, for the manifest
    exportable: bool = True  # an eager nn.Module (or .pt2 program) the ONNX exporter accepts
    origin: str | None = None  # what runs compare to tell teachers apart (teacher_origin); None: in memory


DEFAULT_ORIGIN = "default resnet teacher"  # one per data, which runs compare on their own


def cache_dir() -> Path:
    env = os.environ.get("EDGEKD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekd"


def uncached_warning(what: str, path: Path, exc: Exception) -> str:
    """The line logged when a cache entry cannot be written: a cache only saves work, so the run goes on."""
    return f"warning: {what}: {getattr(exc, 'strerror', None) or exc} ({path}); check EDGEKD_CACHE_DIR"


def default_teacher(data: Dataset, recipe: TeacherRecipe | None = None, progress: bool = True,
                    log: Callable[[str], None] | None = None) -> Teacher:
    """The default ResNet teacher for ``data``: loaded from the cache, or trained and cached (``log``
    hears the epochs when there is no progress bar)."""
    import torch

    from edgekd.distill.trainer import distill
    from edgekd.models import resnet, stem_pools

    recipe = recipe or TeacherRecipe()
    c, h, w = data.input_shape
    pools = stem_pools(min(h, w), 1)  # none at digits' 32x32; large images pooled as the students are
    model = resnet(c, data.num_classes, recipe.stem, recipe.widths, recipe.depths, pools=pools)
    path = cache_dir() / "teachers" / f"resnet-{recipe.digest(data)}.pt"
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            model.eval()
            return Teacher(model, f"default resnet teacher (cached {path})", origin=DEFAULT_ORIGIN)
        except Exception:  # a corrupt cache entry is retrained, never trusted
            path.unlink(missing_ok=True)
    torch.manual_seed(recipe.training.seed)
    model = resnet(c, data.num_classes, recipe.stem, recipe.widths, recipe.depths, pools=pools)
    distill(model, data, recipe.training, teacher=None, progress=progress, desc="teacher: training", log=log)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        # minutes of training are not thrown away for a cache: the run goes on, and says so
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        (log or (lambda _m: None))(uncached_warning("the trained teacher could not be cached (the next run "
                                                    "trains it again)", path, exc))
        return Teacher(model, "default resnet teacher (trained, not cached)", origin=DEFAULT_ORIGIN)
    return Teacher(model, f"default resnet teacher (trained, cached {path})", origin=DEFAULT_ORIGIN)


_FACTORY_REF = re.compile(r"(?P<module>.+):(?P<name>[A-Za-z_]\w*)\s*(?:\((?P<args>.*)\))?\s*", re.DOTALL)


def parse_factory_ref(spec: str) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
    """``module_or_file.py:factory`` or ``...:factory(arg, key=value)`` -> (module, name, args, kwargs).
    Arguments are Python literals only (numbers, strings, booleans, None, lists, tuples, dicts), read
    with ``ast.literal_eval``: a recipe or command line never runs code of its own."""
    import ast

    match = _FACTORY_REF.fullmatch(spec)
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

    def full(path: str) -> str:
        return str(Path(path).expanduser().resolve())

    match = _FACTORY_REF.fullmatch(spec)
    if spec.endswith(".pt2") or spec.lower().endswith(".onnx") or match is None:
        named = full(spec)
    else:  # the file of file.py:factory, as _import tells a file from a module name
        ref = match["module"]
        named = full(ref) + spec[len(ref):] if ref.endswith(".py") or os.sep in ref else spec
    return named + (f" with weights {full(weights)}" if weights else "")


def check_no_weights(spec: str | None, weights: str | None) -> None:
    """A .pt2 program or an .onnx model holds its weights: ``weights`` given with one would go unread."""
    if weights is None or not isinstance(spec, str):
        return
    kind = "a torch.export program" if spec.endswith(".pt2") else "an ONNX model" if spec.lower().endswith(
        ".onnx") else None
    if kind is not None:
        raise ModelError(f"teacher '{spec}' is {kind}, which holds its own weights",
                         "drop --weights (or pass file.py:factory with them)")


def load_teacher(spec: str, weights: str | None = None) -> Teacher:
    """A user's teacher: ``file.py:factory`` / ``package.module:factory`` (optionally with literal
    arguments, ``factory(num_classes=10)``) with ``weights``, a ``.pt2`` file, or an ``.onnx`` model
    (``edgekd.onnx_teacher``)."""
    check_no_weights(spec, weights)
    return replace(_load_teacher(spec, weights), origin=teacher_origin(spec, weights))


def _load_teacher(spec: str, weights: str | None) -> Teacher:
    if spec.endswith(".pt2"):
        return _load_exported(Path(spec))
    if spec.lower().endswith(".onnx"):
        return _load_onnx(Path(spec).expanduser())
    if _FACTORY_REF.fullmatch(spec) is None:
        _refuse_model_file(spec)
    module_ref, factory_name, args, kwargs = parse_factory_ref(spec)
    module = _import(module_ref)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise ModelError(f"'{module_ref}' has no factory '{factory_name}'",
                         f"callables defined there: {', '.join(names) or 'none'}")
    try:
        model = factory(*args, **kwargs)
    except Exception as exc:
        raise ModelError(f"factory '{spec}' failed: {type(exc).__name__}: {exc}",
                         f"pass its arguments as literals, e.g. --teacher '{module_ref}:{factory_name}"
                         "(num_classes=10)', or fix the factory") from None
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"factory '{spec}' returned {type(model).__name__}, not a torch.nn.Module",
                         "return the model instance from the factory")
    if weights is None:
        raise ModelError(f"teacher '{spec}' needs its trained weights", "pass --weights path/to/state_dict.pt")
    # float32 on the CPU, where edgekd distils and exports, whatever device or dtype the factory chose;
    # before the weights load, so that they keep their full precision
    model = model.float().cpu()
    _load_weights(model, Path(weights))
    return Teacher(model.eval(), f"{spec} with weights {weights}")


# Files users hand over as the teacher itself: they hold weights or a traced graph, not code that builds
# the module edgekd trains against (and prunes, and reads features from).
_WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".tar", ".safetensors")
_GRAPH_SUFFIXES = (".ptl", ".jit", ".torchscript", ".tflite")


def _refuse_model_file(spec: str) -> None:
    """A model or weights file passed as ``--teacher``: say what edgekd needs instead of only the form."""
    suffix = Path(spec).suffix.lower()
    build = "--teacher my_model.py:build --weights state_dict.pt, a torch.export .pt2 file or an .onnx model"
    if suffix in _GRAPH_SUFFIXES or (suffix in _WEIGHT_SUFFIXES and _is_torchscript(Path(spec))):
        raise ModelError(f"teacher '{spec}' is a TorchScript or mobile model; edgekd needs the module in Python",
                         f"pass {build} exported from the code that scripted it")
    if suffix in _WEIGHT_SUFFIXES:
        raise ModelError(f"teacher '{spec}' is a weights file; edgekd needs the code that builds the model too",
                         f"pass --teacher my_model.py:build --weights {spec} (a state dict, or a checkpoint "
                         "holding one), or a torch.export .pt2 file")


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``): a zip with the scripted code inside."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/__torch__" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def from_module(module: Any) -> Teacher:
    """A teacher handed over in memory (the Python API). edgekd works on a float32 CPU copy in eval mode
    (it distils and exports on the CPU), so the caller's module keeps its device, dtype, mode and weights
    whatever the run does."""
    import copy

    try:
        model = copy.deepcopy(module)
    except Exception as exc:
        raise ModelError(f"the teacher module cannot be copied ({type(exc).__name__}: {exc})",
                         "pass it as file.py:factory with weights, or as a torch.export .pt2 file") from None
    cls = type(module)
    return Teacher(model.float().cpu().eval(), f"in-memory module {cls.__module__}.{cls.__qualname__} (Python API)")


def logits_only(teacher: Teacher, data: Dataset) -> Teacher:
    """``teacher``, or (when its forward returns a mapping with ``logits``, as Hugging Face models do) the
    same module taken by its logits (``edgekd.teacher_logits``)."""
    import torch

    sample = torch.from_numpy(np.ascontiguousarray(data.x_val[:2]))
    try:
        with torch.inference_mode():
            out = teacher.module(sample)
    except Exception:
        return teacher  # check_fits names what does not fit
    from edgekd.teacher_logits import LogitsOf, gives_logits_mapping

    if not gives_logits_mapping(out) or not isinstance(teacher.module, torch.nn.Module):
        return teacher
    return replace(teacher, module=LogitsOf(teacher.module).eval(), source=f"{teacher.source}, its 'logits' output")


def check_fits(teacher: Teacher, data: Dataset) -> None:
    """Run one sample through the teacher; shape errors become a DataError naming both shapes."""
    import torch

    sample = torch.from_numpy(np.ascontiguousarray(data.x_val[:4]))
    try:
        with torch.inference_mode():
            out = teacher.module(sample)
    except Exception as exc:
        first = first_line(exc, 160)
        raise DataError(f"data images of shape {data.input_shape} do not fit the teacher ({first})",
                        "pass data at the resolution and channel count the teacher was trained on "
                        "(see --resolution and --channels)") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise ModelError(f"the teacher's forward returns {what}, not (batch, classes) logits",
                         "make forward return the logits tensor alone, or a dict holding it under 'logits' (wrap "
                         "the model if it returns auxiliary outputs)")
    if out.shape[1] != data.num_classes:
        raise DataError(f"the teacher predicts {out.shape[1]} classes but the data has {data.num_classes}",
                        "pass data with as many classes as the teacher predicts")
    # Softmax outputs as logits would distil a nearly uniform target at any temperature.
    if len(out) > 1 and float(out.min()) >= 0 and torch.allclose(out.float().sum(1), torch.ones(len(out)), atol=1e-3):
        raise ModelError("the teacher's forward returns probabilities (every row is >= 0 and sums to 1), and "
                         "distillation needs logits", "return the scores before the softmax (log-probabilities "
                         "from log_softmax work too)")


def _import(ref: str) -> Any:
    # The user's own packages in the folder edgekd runs from import, as with `python -m` (a console script
    # leaves that folder off the path); last, so an installed package of the same name still wins.
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)
    if ref.endswith(".py") or os.sep in ref:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise ModelError(f"teacher module file '{ref}' does not exist", "check the path before ':'")
        name = f"edgekd_user_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
        # As `python my_model.py` would: the file's own folder is importable, for the helper modules beside
        # it (`from layers import Block`), at import time or later inside the factory or forward.
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ModelError(f"importing '{ref}' failed: {type(exc).__name__}: {exc}", "fix that file") from None
        return module
    try:
        return importlib.import_module(ref)
    except ImportError as exc:
        raise _not_importable(ref, exc) from None
    except Exception as exc:  # found, but running it raised (ValueError, SyntaxError, ...): one line, as for a .py
        said = f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
        raise ModelError(f"importing '{ref}' failed: {said}",
                         f"fix that module (python -c 'import {ref}' shows where)") from None


def _not_importable(ref: str, exc: ImportError) -> ModelError:
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


def _load_weights(model: Any, path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"weights file '{path}' does not exist", "check the --weights path")
    if _is_torchscript(path):  # torch.load would warn, then refuse in words about its own defaults
        raise ModelError(f"weights file '{path}' is a TorchScript archive, not a state dict",
                         f"save the state dict instead: torch.save(torch.jit.load('{path}').state_dict(), "
                         "'state_dict.pt'), if its names match the module --teacher builds")
    state = _read_safetensors(path) if path.suffix.lower() == ".safetensors" else _read_torch(path)
    state = _strip_wrapper_prefix(state, set(model.state_dict()))
    result = _try_load(model, state)
    if result:
        raise ModelError(f"weights '{path}' do not match the model: {result}",
                         "pass the weights saved from this exact architecture")


def _read_safetensors(path: Path) -> dict:
    """A ``.safetensors`` file (Hugging Face's and timm's format: tensors only, nothing that runs)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModelError(f"weights file '{path}' is in the safetensors format, which needs the safetensors package",
                         "pip install safetensors (or install edgekd[safetensors]), or save the weights with "
                         "torch.save(model.state_dict(), path)") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        first = first_line(exc, 160)
        raise ModelError(f"weights file '{path}' is not a readable safetensors file ({first})",
                         "save it again with safetensors.torch.save_file(model.state_dict(), path)") from None


def _read_torch(path: Path) -> dict:
    """A ``torch.save`` state dict, or a training checkpoint holding one, loaded without running code."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:  # a whole pickled model, or a checkpoint with objects beside its tensors
            raise ModelError(f"weights file '{path}' holds a pickled {found[1]}, which loading would run code "
                             "from (edgekd loads weights with weights_only=True)",
                             "save the state dict alone: torch.save(model.state_dict(), path) (from this file, "
                             "if you trust it: load it with weights_only=False and save its state dict)") from None
        first = first_line(exc, 160)
        raise ModelError(f"weights file '{path}' cannot be loaded safely ({first})",
                         "save it with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ModelError(f"weights file '{path}' holds {type(state).__name__}, not a state dict",
                         "save it with torch.save(model.state_dict(), path)")
    return state


def _strip_wrapper_prefix(state: dict, model_keys: set[str]) -> dict:
    """The state under the key prefix that makes it this model's, when it was saved from a wrapper.

    DataParallel and DDP save keys under ``module.``, ``torch.compile`` under ``_orig_mod.``, and a training
    wrapper (a LightningModule, say) under its attribute name, beside keys of its own (a loss, an EMA copy).
    Only a prefix under which the keys match the model's exactly is taken, so a real mismatch is still reported.
    """
    if model_keys <= state.keys():
        return state
    prefixes: dict[str, int] = {}
    for key in state:
        parts = key.split(".")
        for depth in range(1, min(len(parts), 4)):
            prefix = ".".join(parts[:depth]) + "."
            prefixes[prefix] = prefixes.get(prefix, 0) + 1
    for prefix, count in sorted(prefixes.items(), key=lambda item: -item[1]):
        if count != len(model_keys):
            continue
        inner = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if inner.keys() == model_keys:
            return inner
    return state


def _try_load(model: Any, state: dict) -> str | None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
        return (lines[0] if lines else str(exc).splitlines()[0])[:200]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        return ", ".join(parts)
    return None


def _load_exported(path: Path) -> Teacher:
    import torch

    if not path.is_file():
        raise ModelError(f"teacher program '{path}' does not exist", "check the .pt2 path")
    fix = "save one with torch.export.save(torch.export.export(model, (x,)), path)"
    if not zipfile.is_zipfile(path):  # torch would log its own traceback before raising
        raise ModelError(f"'{path}' is not a torch.export program (not a .pt2 archive)", fix)
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.ERROR)  # torch logs a traceback as a warning before it raises
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        first = first_line(exc, 160)
        raise ModelError(f"'{path}' is not a torch.export program ({first})", fix) from None
    finally:
        logger.setLevel(level)
    _check_batch_is_dynamic(program, path)
    return Teacher(_ExportedTeacher(program), f"torch.export program {path}")


def _load_onnx(path: Path) -> Teacher:
    from edgekd.onnx_teacher import OnnxTeacher

    if not path.is_file():
        raise ModelError(f"teacher model '{path}' does not exist", "check the .onnx path")
    return Teacher(OnnxTeacher(path), f"ONNX model {path}")


def _check_batch_is_dynamic(program: Any, path: Path) -> None:
    """A program exported from one example, without dynamic_shapes, only accepts batches of that size:
    training and scoring feed others, so it is refused here rather than deep inside distillation."""
    from torch.export.graph_signature import InputKind

    dynamic = "dynamic_shapes=({0: torch.export.Dim('batch')},))"
    fix = ("export it with a dynamic batch, from an example of 2 or more images: "
           f"torch.export.export(model, (x,), {dynamic}")
    names = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    if len(names) != 1:
        raise ModelError(f"'{path}' takes {len(names)} inputs; edgekd feeds a teacher one image batch",
                         "export a wrapper whose forward(x) takes the image batch alone and supplies any other input "
                         f"itself, with a dynamic batch: torch.export.export(wrapper, (x,), {dynamic}")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == names[0])
    value = node.meta.get("val")
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) and isinstance(shape[0], int):
        raise ModelError(f"'{path}' was exported for a fixed batch of {shape[0]} (input {tuple(shape)})", fix)


class _ExportedTeacher:
    """Callable wrapper around an ExportedProgram with nn.Module's eval()/train() no-ops."""

    def __init__(self, program: Any) -> None:
        self.program = program
        self.module = program.module()

    def __call__(self, x: Any) -> Any:
        return self.module(x)

    def eval(self) -> _ExportedTeacher:
        return self

    def train(self, mode: bool = True) -> _ExportedTeacher:
        return self

    def parameters(self) -> Any:
        return self.module.parameters()

    def named_modules(self) -> Any:
        return self.module.named_modules()
