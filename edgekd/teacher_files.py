"""A teacher's files, read without running code from them: state dicts (``torch.save``, safetensors, training
checkpoints holding one, saved from a wrapper) and ``torch.export`` programs."""

from __future__ import annotations

import logging
import re
import zipfile
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
    if is_torchscript(path):  # torch.load would warn, then refuse in words about its own defaults
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
    return ExportedTeacher(program)


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
    """Callable wrapper around an ExportedProgram with nn.Module's eval()/train() no-ops."""

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

