"""Feature taps: forward hooks that keep the outputs of submodules named by path, and the learned
projector that maps a student map onto its teacher map for ``hint``."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from edgekd.errors import ConfigError, ModelError

POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


class Taps:
    """Hooks on ``model``'s submodules at ``paths``; inside ``capture()`` each forward keeps their outputs."""

    def __init__(self, model: nn.Module, paths: Sequence[str], role: str = "model") -> None:
        self.paths = tuple(paths)
        self.role = role
        self._active = False
        self._out: dict[str, torch.Tensor] = {}
        modules = [find_module(model, path, role) for path in self.paths]
        self._handles = [m.register_forward_hook(self._hook(p)) for m, p in zip(modules, self.paths)]

    def _hook(self, path: str) -> Any:
        def keep(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self._active:
                return
            if not isinstance(output, torch.Tensor):
                raise ConfigError(f"{self.role} module '{path}' returns {type(output).__name__}, not a tensor",
                                  "tap a module whose output is a feature map")
            # A copy: a later in-place op (ReLU(inplace=True)) must not change what the loss sees.
            self._out[path] = output.clone()

        return keep

    @contextmanager
    def capture(self) -> Iterator[Taps]:
        self._out.clear()
        self._active = True
        try:
            yield self
        finally:
            self._active = False

    def features(self) -> tuple[torch.Tensor, ...]:
        missing = [p for p in self.paths if p not in self._out]
        if missing:
            raise ModelError(f"{self.role} modules {missing} did not run in the forward pass",
                             "tap modules that the model's forward() calls")
        return tuple(self._out[p] for p in self.paths)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._out.clear()


def find_module(model: nn.Module, path: str, role: str = "model",
                candidates: Sequence[str] | None = None) -> nn.Module:
    """``model.get_submodule(path)``, or a ConfigError that lists ``candidates`` (default: every named
    module) and the closest names."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = list(candidates) if candidates else [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(path, [n for n, _ in model.named_modules() if n], n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"{role} has no module '{path}'",
                          f"{hint}tap one of: {_shorten(names)}") from None


def _shorten(names: Sequence[str], limit: int = 24) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names) - limit} more; see model.named_modules())"


def output_shapes(model: nn.Module, example: torch.Tensor) -> tuple[tuple[int, ...], dict[str, Any]]:
    """Run ``model`` once on ``example`` (eval mode, no grad, training flag restored): the output shape
    and, in the order they last finish, every named submodule's output shape (at its last call) and type."""
    seen: dict[str, Any] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                # Ordered by each module's last call: a ReLU module reused after every BatchNorm (torchvision's
                # self.relu) finishes last, and keeping its first place made the default tap the BatchNorm.
                seen.pop(name, None)
                seen[name] = (tuple(output.shape), module)

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with evaluating(model), torch.no_grad():
            out = model(example)
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"the model returned {type(out).__name__}, not a tensor of logits",
                         "pass a model whose forward() returns one (N, classes) tensor")
    return tuple(out.shape), seen


@contextmanager
def evaluating(model: Any) -> Iterator[Any]:
    """``model`` in eval mode, and afterwards every submodule in the mode its caller had it in: a caller's
    teacher is theirs, and ``train(was)`` would thaw the BatchNorms of one training with them frozen. A
    torch.export or ONNX teacher wrapper may have no training flag, or no ``eval``: it is left as it is."""
    modules = model.modules() if callable(getattr(model, "modules", None)) else [model]
    modes = [(m, m.training) for m in modules if isinstance(getattr(m, "training", None), bool)]
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def runs_on(model: Any, batch: Any) -> bool:
    """Whether ``model``, in eval mode and without gradients, takes ``batch`` without raising: how a failure
    is told apart as the batch's size (a forward fixing it to one) or its missing batch dimension."""
    import torch

    try:
        with evaluating(model), torch.no_grad():
            model(batch)
    except Exception:  # a user's forward may raise anything
        return False
    return True


def default_tap(seen: dict[str, Any], role: str, terms: Sequence[tuple[str, float]] = ()) -> str:
    """The last module (in execution order) that outputs a 4-D feature map wider than one position, pooling
    layers excepted. A 1x1 map (a conv head after the global pool, pooling done in forward()) holds no spatial
    layout: ``at`` on it is identically 0, and ``hint`` resizes the student's map down to its centre."""
    maps = [name for name in feature_maps(seen) if not isinstance(seen[name][1], POOLS)]
    spatial = [name for name in maps if math.prod(seen[name][0][2:]) > 1]
    if spatial:
        return spatial[-1]
    has = (f"no 4-D feature map wider than 1x1 (its 4-D outputs, {_shorten(maps, 6)}, come after global pooling)"
           if maps else "no module that outputs a 4-D feature map")
    both = "--hint-student and --hint-teacher together (student_taps and teacher_taps in the Python API)"
    from edgekd.distill.losses import LOSSES

    spatial_only = [name for name, _ in terms if LOSSES.get(name).spatial]
    if spatial_only:
        raise ConfigError(f"'{spatial_only[0]}' compares where in a feature map the activations are, and the {role} "
                          f"has {has}", f"drop {spatial_only[0]} from --losses; hint and rkd can tap other layers, "
                                        f"vectors too, named with {both}")
    raise ConfigError(f"the {role} has {has}, so there is no default layer to tap",
                      f"name the layers to tap with {both}; hint and rkd also take vectors (N, C)")


def feature_maps(seen: dict[str, Any]) -> list[str]:
    """Names of the modules whose output is a 4-D feature map: the usual tap candidates."""
    return [name for name, (shape, _) in seen.items() if len(shape) == 4]


def tap_shapes(seen: dict[str, Any], paths: Sequence[str], role: str) -> list[tuple[int, ...]]:
    """Output shapes of the tapped modules, from ``output_shapes``' record."""
    out = []
    for path in paths:
        if path not in seen:
            raise ConfigError(f"{role} module '{path}' produced no tensor in a forward pass",
                              f"tap one of: {_shorten(list(seen))}")
        out.append(seen[path][0])
    return out


def per_sample(shape: Sequence[int]) -> str:
    """A tapped output's shape as a user reads it: the probe batch's size, 2, read as 2 channels or 2 samples."""
    return "(" + ", ".join(["N", *(str(d) for d in shape[1:])]) + ")"


class Projector(nn.Module):
    """Maps a student feature (N, Cs[, H, W]) onto the teacher's (N, Ct[, H', W']): 1x1 conv + BN
    (a linear layer for vectors), then resized to the teacher's spatial size (``resized``)."""

    def __init__(self, student: Sequence[int], teacher: Sequence[int]) -> None:
        super().__init__()
        if len(student) != len(teacher) or len(student) not in (2, 4):
            raise ConfigError(f"cannot project a student feature of shape {per_sample(student)} onto a teacher "
                              f"feature of shape {per_sample(teacher)}",
                              "tap layers that both give 4-D maps (or both vectors)")
        if len(student) == 4:
            self.map = nn.Sequential(nn.Conv2d(student[1], teacher[1], 1, bias=False), nn.BatchNorm2d(teacher[1]))
        else:
            self.map = nn.Linear(student[1], teacher[1])
        self.size = tuple(teacher[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.map(x)
        return resized(y, self.size) if self.size else y


def resized(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``x`` (N, C, H, W) at the spatial ``size`` of the map it is compared with: averaged over areas where it
    shrinks on both sides (bilinear sampling at a quarter of the size read one pixel in 16, and a student map
    larger than the teacher's was matched by a few of its pixels), bilinear where it grows."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if all(s <= d for s, d in zip(size, x.shape[-2:])):
        return nn.functional.adaptive_avg_pool2d(x, size)
    return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
