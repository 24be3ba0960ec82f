"""A teacher's files, read without running code from them: state dicts (``torch.save``, safetensors, training
checkpoints holding one, saved from a wrapper) and ``torch.export`` programs."""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekd.errors import ModelError, first_line


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``): a zip with the scripted code inside."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/__torch__" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_weights(model: Any, path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"weights file '{path}' does not exist", "check the --weights path")
    refuse_model_as_weights(path)
    if is_torchscript(path):  # torch.load would warn, then refuse in words about its own defaults
        raise ModelError(f"weights file '{path}' is a TorchScript archive, not a state dict",
                         f"save the state dict instead: torch.save(torch.jit.load('{path}').state_dict(), "
                         "'state_dict.pt'), if its names match the module --teacher builds")
    state = _read_safetensors(path) if path.suffix.lower() == ".safetensors" else _read_torch(path)
    state = _as_tensors(_model_state(state, set(model.state_dict()), path))
    result = _try_load(model, state)
    if result:
        raise ModelError(f"weights '{path}' do not match the model: {result[0]}", result[1])


def is_exported_program(path: Path) -> bool:
    """Whether ``path`` is a ``torch.export.save`` archive (a zip holding its program as JSON)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(("/models/model.json", "serialized_exported_program.json"))
                       for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def refuse_model_as_weights(path: Path) -> None:
    """A whole model file passed as --weights: torch.load would refuse it in words about its archive or its own
    defaults, none of which says that the file belongs to --teacher."""
    name = path.suffix.lower()
    if name == ".onnx":
        raise ModelError(f"'{path}' is an ONNX model, not weights",
                         f"pass it as --teacher {path}, without --weights")
    if name == ".pt2" or is_exported_program(path):
        raise ModelError(f"'{path}' is a torch.export program, not weights",
                         f"pass it as --teacher {path}, without --weights")


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
        with _checkpoint_globals():
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


@contextmanager
def _checkpoint_globals() -> Iterator[None]:
    """Allow, for this load alone, what training scripts save beside the state dict: numpy scalars (a best
    accuracy), dtypes and arrays, and the ``argparse.Namespace`` of the run's arguments. Each only rebuilds data
    (the values inside still load through the weights-only rules), so a checkpoint holding one still runs no
    code; any other class is refused as before. Scoped, so the process's own torch.load keeps torch's rules."""
    import argparse

    import numpy as np
    import torch

    core = getattr(np, "_core", None)
    multiarray = core.multiarray if core is not None else np.core.multiarray
    allowed: list[Any] = [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype, argparse.Namespace]
    allowed += [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    if core is not None:  # saved under numpy 1, they are named numpy.core.multiarray.*
        allowed += [(multiarray.scalar, "numpy.core.multiarray.scalar"),
                    (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
    already = torch.serialization.get_safe_globals()
    with torch.serialization.safe_globals([g for g in allowed if g not in already]):  # theirs stay on leaving
        yield


def _model_state(state: dict, model_keys: set[str], path: Path) -> dict:
    """The model's state dict in ``state``: as it is, under a wrapper's key prefix, or one level down in a
    checkpoint under a key of the training script's own (``{'net': state_dict, 'acc': ...}``), taken where its
    keys match the model's exactly. Two that do and hold different weights (an EMA copy beside the model, a
    student beside its teacher) are refused by name: loading either would be a guess."""
    own = _strip_wrapper_prefix(state, model_keys, path)
    if model_keys <= own.keys():
        return own
    nested = {key: _strip_wrapper_prefix(value, model_keys, path) for key, value in state.items()
              if isinstance(key, str) and isinstance(value, dict)}
    found = {key: inner for key, inner in nested.items() if inner.keys() == model_keys}
    if len(found) > 1 and not _same_weights(list(found.values())):
        keys = ", ".join(f"'{key}'" for key in found)
        first = next(iter(found))
        load = f"torch.load('{path}', weights_only=True)"  # as edgekd loads it: an untrusted file runs no code
        raise ModelError(f"weights file '{path}' holds the model's weights under several keys ({keys}), each "
                         "different", f"save the one you want alone, e.g. torch.save({load}['{first}'], "
                         "'teacher.pt'), and pass that file")
    return next(iter(found.values())) if found else own


def _strip_wrapper_prefix(state: dict, model_keys: set[str], path: Path) -> dict:
    """The state under the key prefix that makes it this model's, when it was saved from a wrapper.

    DataParallel and DDP save keys under ``module.``, ``torch.compile`` under ``_orig_mod.``, and a training
    wrapper (a LightningModule, say) under its attribute name, beside keys of its own (a loss, an EMA copy).
    Only a prefix under which the keys match the model's exactly is taken, so a real mismatch is still reported;
    two such prefixes holding different weights (``ema.`` and ``model.``) are refused by name.
    """
    if model_keys <= state.keys():
        return state
    prefixes: dict[str, int] = {}
    for key in state:
        parts = key.split(".") if isinstance(key, str) else []
        for depth in range(1, min(len(parts), 4)):
            prefix = ".".join(parts[:depth]) + "."
            prefixes[prefix] = prefixes.get(prefix, 0) + 1
    found: dict[str, dict] = {}
    for prefix, count in prefixes.items():
        if count != len(model_keys):
            continue
        inner = {key[len(prefix):]: value for key, value in state.items()
                 if isinstance(key, str) and key.startswith(prefix)}
        if inner.keys() == model_keys:
            found[prefix] = inner
    if len(found) > 1 and not _same_weights(list(found.values())):
        names = ", ".join(f"'{prefix}'" for prefix in found)
        first = next(iter(found))
        raise ModelError(f"weights file '{path}' holds the model's weights under several key prefixes ({names}), "
                         "each different (an EMA copy beside the model, say)",
                         f"save the one you want alone, e.g. the weights under '{first}', from the checkpoint's "
                         f"state dict sd: torch.save({{k.removeprefix('{first}'): v for k, v in sd.items() "
                         f"if k.startswith('{first}')}}, 'teacher.pt'), and pass that file")
    return next(iter(found.values())) if found else state


def _same_weights(states: list[dict]) -> bool:
    """Whether the state dicts hold equal values key by key: copies of one model, any of which is the model."""
    import torch

    first, *rest = states
    try:
        return all(torch.equal(torch.as_tensor(first[key]), torch.as_tensor(other[key]))
                   for other in rest for key in first)
    except (TypeError, ValueError, RuntimeError):  # values that are not arrays: not known to be the same
        return False


def _as_tensors(state: dict) -> dict:
    """``state`` with numpy arrays as tensors: weights converted from another framework (JAX, Keras) with
    ``.numpy()`` and saved as they are, which load_state_dict refuses ("expected torch.Tensor")."""
    import numpy as np
    import torch

    return {key: torch.from_numpy(np.array(value)) if isinstance(value, np.ndarray) and value.dtype.kind in "biufc"
            else value for key, value in state.items()}


def _try_load(model: Any, state: dict) -> tuple[str, str] | None:
    """Why ``state`` does not load into ``model``, and what to do about it; None when it loaded."""
    exact = "pass the weights saved from this exact architecture"
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        # torch's first line only names the model ("Error(s) in loading state_dict for Net:"); the reason follows
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        sizes = [ln for ln in lines if "size mismatch" in ln]
        if sizes:
            return sizes[0][:200], exact
        reason = next((ln for ln in lines if not ln.startswith("Error(s) in loading")), lines[0] if lines else "")
        if "expected torch.Tensor" in reason:
            return reason[:200], "save its values as tensors: torch.save(model.state_dict(), path)"
        return reason[:200], exact
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        return ", ".join(parts), exact
    return None


def load_exported(path: Path) -> ExportedTeacher:
    """The program at ``path``, callable as a module; refused unless it takes one image batch of any size."""
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
    check_inference_mode(program, path)
    return ExportedTeacher(program)


def check_inference_mode(program: Any, path: Path | str) -> None:
    """A program exported in training mode keeps it: its dropout draws anew at every call and its BatchNorm
    normalises by the batch and updates its running statistics, whatever eval() is asked of it (an exported
    program has no eval mode to switch to, and a branch on ``self.training`` was traced as it ran). Such a
    teacher would distil a moving, noisy target, so it is refused by what its graph does."""
    why = _training_behaviour(program)
    if why:
        raise ModelError(f"'{path}' was exported in training mode ({why})",
                         "call model.eval() before torch.export.export(model, ...) and save the program again")


def _training_behaviour(program: Any) -> str | None:
    import torch

    mutated = program.graph_signature.buffers_to_mutate
    if mutated:  # a decomposed program's BatchNorm statistics, or any other state its forward changes
        return f"its forward updates the buffer '{next(iter(mutated.values()))}'"
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if _argument(node, "training") is True and isinstance(_argument(node, "running_mean"), torch.fx.Node):
            return "its BatchNorm normalises by the batch and updates its running statistics"
        if torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ()):
            if "dropout" in name and _argument(node, "train") is False:
                continue  # dropout exported in eval mode: the identity
            return ("its dropout draws at random at every call" if "dropout" in name
                    else f"its forward draws random numbers ({name})")
    return None


def _argument(node: Any, name: str) -> Any:
    """The argument ``name`` of the aten call ``node``, by its schema; None where the op takes none so named."""
    schema = getattr(node.target, "_schema", None)
    names = [a.name for a in schema.arguments] if schema is not None else []
    if name not in names:
        return None
    index = names.index(name)
    return node.args[index] if index < len(node.args) else node.kwargs.get(name)


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


class ExportedTeacher:
    """Callable wrapper around an ExportedProgram with nn.Module's eval()/train() no-ops: a program has no
    mode to switch, and one exported in training mode is refused on loading (``check_inference_mode``)."""

    def __init__(self, program: Any) -> None:
        self.program = program
        self.module = program.module()

    def __call__(self, x: Any) -> Any:
        return self.module(x)

    def eval(self) -> ExportedTeacher:
        return self

    def train(self, mode: bool = True) -> ExportedTeacher:
        return self

    def parameters(self) -> Any:
        return self.module.parameters()

    def named_modules(self) -> Any:
        return self.module.named_modules()


def logits_program(teacher: ExportedTeacher, sample: Any) -> ExportedTeacher:
    """``teacher``, whose forward returns a mapping holding ``logits``, exported again around a wrapper that
    returns that tensor alone: what distillation reads, and the program the teacher's ONNX file is written from."""
    import torch

    from edgekd.teacher_logits import LogitsOf

    try:
        program = torch.export.export(LogitsOf(teacher.module), (sample,),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as exc:
        raise ModelError(f"the program's 'logits' output cannot be taken alone ({first_line(exc, 160)})",
                         "export a wrapper whose forward returns the logits tensor alone") from None
    return ExportedTeacher(program)
