"""Load a state dict into a model whose channels were pruned since it was built.

A pruned student's ``student.pt`` is a plain state dict (tensors only, so it loads with
``weights_only=True``); its tensor shapes say how many channels each layer kept. Rebuilding it from
its spec gives the unpruned layers, which are resized here to the saved shapes before loading.
"""

from __future__ import annotations

from typing import Any

from edgekd.errors import ModelError


def _resized_types() -> tuple[type, ...]:
    import torch

    # not transposed convolutions: their weight is (in, out / groups, ...), which _resize reads the other way
    return (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.modules.batchnorm._BatchNorm, torch.nn.Linear,
            torch.nn.PReLU, torch.nn.LayerNorm)


def load_resized(model: Any, state: dict[str, Any]) -> Any:
    """``model`` with every layer pruning resizes (convolutions, linear layers, batch and layer norms, PReLU)
    resized to ``state``'s shapes, then loaded."""
    import torch

    for name, module in model.named_modules():
        weight = state.get(f"{name}.weight" if name else "weight")
        if weight is None or not isinstance(module, _resized_types()):
            continue
        if tuple(weight.shape) == tuple(module.weight.shape):
            continue
        _resize(module, weight)
        module.weight = torch.nn.Parameter(torch.empty_like(weight))
        if getattr(module, "bias", None) is not None:  # a LayerNorm over (C, H, W) has a bias of that shape
            bias = state.get(f"{name}.bias" if name else "bias")
            module.bias = torch.nn.Parameter(torch.empty_like(bias) if bias is not None
                                             else torch.empty(weight.shape[0]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise ModelError(f"the saved student does not fit its architecture ({first})",
                         "pass the student.pt written together with this spec (same run folder)") from None
    return model.eval()


def _resize(module: Any, weight: Any) -> None:
    """Set ``module``'s channel counts (and its running statistics) to those of its saved ``weight``."""
    import torch

    if isinstance(module, torch.nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        module.out_channels = int(weight.shape[0])
        module.groups = int(weight.shape[0]) if depthwise else module.groups
        module.in_channels = int(weight.shape[1]) * module.groups
    elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        module.num_features = int(weight.shape[0])
        for buf in ("running_mean", "running_var"):
            if getattr(module, buf, None) is not None:
                setattr(module, buf, torch.zeros(module.num_features))
    elif isinstance(module, torch.nn.PReLU):
        module.num_parameters = int(weight.shape[0])
    elif isinstance(module, torch.nn.LayerNorm):
        module.normalized_shape = tuple(int(d) for d in weight.shape)
    else:
        module.out_features, module.in_features = int(weight.shape[0]), int(weight.shape[1])
