"""What pruning may touch in a model: the layers whose channels are the classes (found on the autograd
graph), the grouped convolutions torch-pruning cannot follow, the importance that ranks channels, and
the check that a pruned copy still runs. Shared by pruning-aware KD and the search's pruned space."""

from __future__ import annotations

from typing import Any

from edgekd.errors import ConfigError, ModelError

IMPORTANCES = ("l2", "l1", "fpgm", "lamp", "taylor")


def importance(name: str) -> Any:
    import torch_pruning as tp

    if name not in IMPORTANCES:
        raise ConfigError(f"unknown pruning importance '{name}'", f"choose one of: {', '.join(IMPORTANCES)}")
    return {"l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
            "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "fpgm": lambda: tp.importance.FPGMImportance(),
            "lamp": lambda: tp.importance.LAMPImportance(),
            "taylor": lambda: tp.importance.GroupTaylorImportance()}[name]()


# Layers torch-pruning removes output channels of (its root layers): the ones that can change the class count.
def _prunable(module: Any) -> bool:
    import torch

    return isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))


def output_layers(model: Any, input_shape: tuple[int, ...]) -> list[Any]:
    """Layers whose output channels reach the model's outputs without passing another prunable layer:
    pruning them would change the class count. Found on the autograd graph of one forward, not by
    declaration order: a 1x1-conv classifier before global pooling, or a classifier declared before a
    squeeze-excitation block's linear layers, is the output layer though it is not the last Linear."""
    import torch

    from edgekd.distill.taps import evaluating

    made: dict[Any, Any] = {}  # the autograd node that made a prunable layer's output -> the layer
    handles = [m.register_forward_hook(lambda module, _i, out: made.__setitem__(out.grad_fn, module)
                                       if isinstance(out, torch.Tensor) and out.grad_fn is not None else None)
               for m in model.modules() if _prunable(m)]
    try:
        # the input requires grad so that the graph exists even when the model's weights are frozen
        with evaluating(model), torch.enable_grad():
            out = model(torch.zeros(1, *input_shape, requires_grad=True))
    finally:
        for h in handles:
            h.remove()
    found = _first_layers_behind(_grad_fns(out), made)
    if not found:
        raise ModelError("no Linear or Conv layer produces the model's output, so pruning cannot tell which "
                         "channels are the classes",
                         "end the model with an nn.Linear or nn.Conv2d classifier (before any pooling)")
    return found


def _grad_fns(out: Any) -> list[Any]:
    """The autograd nodes of every tensor in a model's output (a tensor, or a tuple, list or dict of them)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out.grad_fn] if out.grad_fn is not None else []
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    return [fn for item in items for fn in _grad_fns(item)]


def _first_layers_behind(roots: list[Any], made: dict[Any, Any]) -> list[Any]:
    """The layers in ``made`` first met walking the autograd graph back from ``roots``, in the order met."""
    found: list[Any] = []
    seen: set[Any] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in made:  # the layer's own inputs lie behind it: their channels are not the outputs
            if made[node] not in found:
                found.append(made[node])
            continue
        todo += [fn for fn, _ in node.next_functions]
    return found


def check_prunable(model: Any) -> None:
    """Refuse a depthwise convolution with a channel multiplier (groups == in_channels < out_channels):
    torch-pruning's dependency graph fails on it with a bare IndexError, whether or not it is ignored."""
    import torch

    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd) and 1 < m.groups == m.in_channels != m.out_channels:
            raise ModelError(f"pruning cannot follow the channels of the depthwise convolution '{name}' "
                             f"({m.in_channels} -> {m.out_channels} channels, groups={m.groups}: a channel "
                             "multiplier)", "give it as many output channels as input channels (a 1x1 convolution "
                             "after it can widen), or train without pruning")


def _grouped(module: Any) -> bool:
    import torch

    return (isinstance(module, torch.nn.modules.conv._ConvNd) and module.groups > 1
            and not module.groups == module.in_channels == module.out_channels)


def fixed_layers(model: Any, input_shape: tuple[int, ...]) -> list[Any]:
    """The layers whose output channels pruning leaves alone so that every grouped convolution (not
    depthwise) keeps its channels: the convolution itself and every layer sharing its input or output
    channels. torch-pruning does not couple a grouped convolution's input channels to its outputs: pruned
    from two sides, 8 inputs per group came to feed 28 outputs in 4 groups, and the next pruning step
    failed with a bare IndexError (as it does once a group is down to one channel and looks depthwise)."""
    import torch
    import torch_pruning as tp

    from edgekd.quiet import quiet

    grouped = [m for m in model.modules() if _grouped(m)]
    if not grouped:
        return []
    with quiet():
        graph = tp.DependencyGraph().build_dependency(model, torch.zeros(1, *input_shape))
        fixed: list[Any] = list(grouped)
        for group in graph.get_all_groups():
            members = [(dep.target.module, dep.handler) for dep, _ in group]
            if any(module in grouped for module, _ in members):
                fixed += [module for module, handler in members
                          if graph.is_out_channel_pruning_fn(handler) and module not in fixed]
    return fixed


def fixed_text(model: Any, input_shape: tuple[int, ...]) -> str | None:
    """In words, which layers the grouped convolutions pin and what pruning can still touch, or None without
    one: a teacher with one grouped convolution had a 'pruned' space whose keep ratios did nothing, unsaid."""
    fixed = fixed_layers(model, input_shape)
    if not fixed:
        return None
    names = {id(m): name for name, m in model.named_modules()}
    outputs = {id(m) for m in output_layers(model, input_shape)}
    grouped = [f"'{names[id(m)]}' (groups={m.groups})" for m in fixed if _grouped(m)]
    pinned = [name for name, m in model.named_modules()
              if _prunable(m) and not _grouped(m) and id(m) not in outputs and any(m is f for f in fixed)]
    free = [name for name, m in model.named_modules()
            if _prunable(m) and id(m) not in outputs and all(m is not f for f in fixed)]
    which = f"grouped convolution{'s' * (len(grouped) > 1)} {', '.join(grouped)}"
    ties = f" and the channels of {', '.join(pinned)}, which share them" if pinned else ""
    left = f"only {', '.join(free)} can be pruned" if free else "no layer can be pruned"
    return (f"the {which} keep{'s' * (len(grouped) == 1)} {'its' if len(grouped) == 1 else 'their'} channels"
            f"{ties} (pruning cannot follow a grouped convolution's channels): {left}")


def ignored_layers(model: Any, input_shape: tuple[int, ...]) -> list[Any]:
    """What pruning must leave alone: the output layers (the classes) and the grouped convolutions' channels."""
    outputs = output_layers(model, input_shape)
    return outputs + [m for m in fixed_layers(model, input_shape) if m not in outputs]


def stage_ratio_dict(model: Any, stages: tuple[tuple[str, ...], ...], ratios: Any) -> dict[Any, float]:
    """torch-pruning's ``pruning_ratio_dict``: ``ratios[i]`` for every layer of ``stages[i]`` (module
    names, as ``prune_stages`` gives them)."""
    modules = dict(model.named_modules())
    return {modules[name]: ratio for names, ratio in zip(stages, ratios) for name in names}


def check_runs_pruned(model: Any, input_shape: tuple[int, ...], whose: str, other_fix: str) -> None:
    """Run a pruned copy once, so that a forward that reshapes to a fixed size (``x.view(-1, 64 * 8 * 8)``)
    is named here rather than as a raw shape error from wherever the copy runs first (a latency fit)."""
    import torch

    from edgekd.distill.taps import evaluating

    try:
        with evaluating(model), torch.no_grad():
            model(torch.zeros(1, *input_shape))
    except Exception as e:  # a user's forward may raise anything on fewer channels (an assert, an IndexError)
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise ModelError(f"{whose} fails once its channels are pruned ({reason}): its forward reshapes to a "
                         "fixed size, or otherwise counts on its channels (a fixed split, slice or width), so its "
                         "channels cannot be pruned",
                         f"flatten with x.flatten(1) or x.view(x.size(0), -1) in its forward, {other_fix}") from e
