"""The ``pruned`` space: the teacher itself with a channel keep ratio per stage, realised with
torch-pruning's dependency graph, so any user teacher has a student family.

A stage is a run of convolutions at one output resolution (found by running the teacher once),
which lines up with where residual connections couple channels; the hidden fully connected layers (a
VGG-style head, or a teacher that is an MLP) make one more. The student keeps the teacher's most
important channels (L2 group magnitude) and their weights: distillation starts from them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

from edgekd.distill.prune_layers import (
    check_prunable,
    check_runs_pruned,
    fixed_text,
    ignored_layers,
    output_layers,
    stage_ratio_dict,
)
from edgekd.distill.prune_layers import importance as make_importance
from edgekd.errors import ModelError
from edgekd.search.spaces import SPACES, Gene, GeneSpace

KEEPS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)


@dataclass(frozen=True)
class PrunedFamily:
    """Registered under ``pruned``; ``bind`` makes the space for one teacher."""

    name: str = "pruned"

    def bind(self, teacher: Any, input_shape: tuple[int, int, int]) -> PrunedSpace:
        stages = prune_stages(teacher, input_shape)
        fixed, note = fixed_stages(teacher, input_shape, stages)
        if len(fixed) == len(stages):
            raise ModelError(f"the 'pruned' space has nothing to prune in this teacher: {note}",
                             "choose --space mbv2 or resnet")
        return PrunedSpace(teacher, tuple(input_shape), stages, fixed=fixed, note=note)  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class PrunedSpace(GeneSpace):
    teacher: Any
    input_shape: tuple[int, int, int]
    stages: tuple[tuple[str, ...], ...]  # conv module names per stage, in execution order
    name: str = "pruned"
    fixed: tuple[int, ...] = ()  # stages with no layer pruning may touch: their keep gene is 1.0 alone
    note: str | None = None  # which layers grouped convolutions pin, said once by the search
    fixed_geometry: ClassVar[bool] = True  # every student keeps the teacher's layers and resolutions

    def genes(self) -> list[Gene]:
        # A fixed stage keeps one option, so that the keep the search records is the one built; a keep
        # recorded for it before (search.json) still builds, as the pruner leaves its layers alone anyway.
        return [("keep", i, (1.0,) if i in self.fixed else KEEPS) for i in range(len(self.stages))]

    def build(self, config: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> Any:
        keep = [float(k) for k in config["keep"]]
        if len(keep) != len(self.stages):
            raise ModelError(f"pruned student has {len(keep)} keep ratios but the teacher has {len(self.stages)} "
                             "stages", "search again with this teacher (`edgekd search --space pruned`)")
        if any(not 0.0 < k <= 1.0 for k in keep):
            raise ModelError(f"keep ratios must be within (0, 1], got {keep}", "use ratios such as 0.5 or 0.75")
        return prune(self.teacher, self.input_shape, {i: k for i, k in enumerate(keep)}, self.stages)


def prune(teacher: Any, input_shape: tuple[int, int, int], keep: dict[int, float],
          stages: tuple[tuple[str, ...], ...], importance: str = "l2") -> Any:
    """A pruned copy of ``teacher`` keeping ``keep[stage]`` of each stage's channels (plan, check, apply)."""
    import torch
    import torch_pruning as tp

    from edgekd.quiet import quiet

    model = copy.deepcopy(teacher).eval()
    check_prunable(model)
    if all(keep[i] >= 1.0 for i in range(len(stages))):
        return model
    ratios = stage_ratio_dict(model, stages, [1.0 - keep[i] for i in range(len(stages))])
    example = torch.zeros(1, *input_shape)
    with quiet():  # torch-pruning warns about every parameter outside a layer (a position embedding), per build
        pruner = tp.pruner.MetaPruner(model, example, importance=make_importance(importance), pruning_ratio=0.0,
                                      pruning_ratio_dict=ratios, ignored_layers=ignored_layers(model, input_shape))
        pruner.step()
    check_runs_pruned(model, input_shape, "the teacher", "or leave pruned out of --space")
    return model.eval()


def fixed_stages(teacher: Any, input_shape: tuple[int, ...],
                 stages: tuple[tuple[str, ...], ...]) -> tuple[tuple[int, ...], str | None]:
    """The stages every layer of which pruning leaves alone (grouped convolutions pin their channels), and
    what pins them in words (``fixed_text``), or ((), None) when nothing does."""
    note = fixed_text(teacher, input_shape)
    if note is None:
        return (), None
    names = {id(m): name for name, m in teacher.named_modules()}
    ignored = {names.get(id(m)) for m in ignored_layers(teacher, input_shape)}
    return tuple(i for i, stage in enumerate(stages) if set(stage) <= ignored), note


def prune_stages(teacher: Any, input_shape: tuple[int, ...]) -> tuple[tuple[str, ...], ...]:
    """Conv module names grouped by output resolution, in execution order (residual couplings stay within
    a stage), then the hidden linear layers on (batch, features) after the last convolution (a head, or a
    whole MLP), the output layer left out. A linear layer between convolutions (a squeeze-excitation gate)
    belongs to its convolutions' channels, and one applied per token (batch, tokens, features) is not a
    stage either: its heads' layout is not the graph's to see."""
    import torch

    from edgekd.distill.taps import evaluating

    if not isinstance(teacher, torch.nn.Module):
        raise ModelError("the 'pruned' space needs the teacher as an nn.Module (a .pt2 program or an ONNX model "
                         "cannot be pruned)",
                         "pass the teacher as file.py:factory with --weights, or choose --space mbv2/resnet")
    order: list[tuple[str, tuple[int, int]]] = []
    dense: list[str] = []
    outputs = {id(m) for m in output_layers(teacher, input_shape)}

    def seen(name: str, module: Any, out: Any) -> None:
        if id(module) in outputs:  # a 1x1-conv classifier is no stage: its channels are the classes
            return
        if isinstance(module, torch.nn.Conv2d):
            order.append((name, tuple(out.shape[-2:])))
            dense.clear()  # linear layers seen so far sit between convolutions
        elif out.dim() == 2 and name not in dense:
            dense.append(name)

    handles = [m.register_forward_hook(lambda module, _i, out, name=name: seen(name, module, out))
               for name, m in teacher.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with evaluating(teacher), torch.no_grad():
            teacher(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    if not order and not dense:
        raise ModelError("the teacher has no Conv2d layer and no hidden Linear layer, so the 'pruned' space has "
                         "nothing to prune", "choose --space mbv2 or resnet")
    resolutions: dict[tuple[int, int], list[str]] = {}
    for name, res in order:
        if name not in resolutions.setdefault(res, []):
            resolutions[res].append(name)
    return tuple(tuple(names) for names in resolutions.values()) + ((tuple(dense),) if dense else ())


SPACES.register("pruned")(PrunedFamily())
