"""What a network's latency is fitted on: MACs per conv/linear layer, counted by channel layout as the
runtime's kernels block channels (``LAYOUTS``), plus the terms some devices add (im2col elements, int8
depthwise work, gated activations); the layout a fit uses is chosen by leave-one-out on measured networks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def cost_features(model: Any, input_shape: tuple[int, int, int]) -> list[float]:
    """[MMACs, conv/linear layers, 1], counted with hooks on one forward pass (``conv_records``;
    torch-pruning's counter deep-copies the model first: half the search's time)."""
    records = conv_records(model, input_shape)
    return [layout_features(records, "macs")[0], float(len(records)), 1.0]


# How the runtime's kernels block channels, as MACs features ([MACs that run the blocked kernel,
# MACs that do not, 1]). onnxruntime's x86 CPU kernels convert a convolution to the NCHWc layout (channels
# in blocks of 8 with AVX2, 16 with AVX-512) only when its input has fewer channels than a block or a
# multiple of 4 (checked on its optimised graphs here), and then compute whole blocks of output
# channels from whole blocks of input channels; int8 kernels pack channels in groups of 4. A teacher's
# pruned family has channel counts like 21 and 42, where latency jumps. On three measurements of 200
# networks of the default teacher's family (host-cpu-1t, AVX-512), fits on 16 of them predicted the
# rest within 10% for 79-82% (fp32) from "nchwc16" without input padding and output rule, 93-94% with
# them; the benchmark's plain-MACs fit: about 60%. Which rule holds depends on the device and
# precision, so each fit picks it by leave-one-out on its anchors.
# IM2COL-suffixed layouts also count the unblocked k x k convolutions' im2col elements (layout_features).
IM2COL = "+im2col"
LAYOUTS = ("macs", "nchwc8", "nchwc16", "align4", "align8", f"nchwc8{IM2COL}", f"nchwc16{IM2COL}")


def conv_records(model: Any, input_shape: tuple[int, int, int]) -> list[tuple[int, int, int, int, int]]:
    """(in channels, out channels, groups, kernel area, output pixels) per convolution, and per linear
    layer as a 1x1 convolution on one pixel, from one forward pass."""
    return [(*_channels(module), *_geometry(module, out)) for _name, module, out in _layer_calls(model, input_shape)]


# One layer of a family whose members share their layers and resolutions: its module path (as keys),
# kernel area and output pixels.
LayerGeometry = tuple[tuple[str, ...], int, int]


def layer_pixels(model: Any, input_shape: tuple[int, int, int]) -> tuple[LayerGeometry, ...]:
    """Every convolution and linear layer's path, kernel area and output pixels, from one forward pass;
    empty when a layer runs more than once or not at all (its records then differ from its module's)."""
    calls = _layer_calls(model, input_shape)
    names = [name for name, _module, _out in calls]
    layers = _layers(model)
    if len(set(names)) != len(names) or set(names) != set(layers):
        return ()
    return tuple((tuple(name.split(".")), *_geometry(module, out)) for name, module, out in calls)


def records_from_modules(model: Any,
                         geometry: tuple[LayerGeometry, ...]) -> list[tuple[int, int, int, int, int]] | None:
    """``conv_records`` without a forward pass (search's inner loop reads every candidate), for a network
    of the family ``geometry`` came from (``layer_pixels``); None when a layer is missing. Walks the
    module dicts by path: building every module's name costs more than the prediction."""
    records = []
    for path, area, pixels in geometry:
        module = model
        for key in path:
            module = module._modules.get(key)
            if module is None:
                return None
        channels = _channels(module)
        if channels is None:
            return None
        records.append((*channels, area, pixels))
    return records


def _layers(model: Any) -> dict[str, Any]:
    """The convolutions and linear layers by module path."""
    import torch

    return {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def _layer_calls(model: Any, input_shape: tuple[int, int, int]) -> list[tuple[str, Any, Any]]:
    """(path, module, output) of every convolution and linear layer call, in order, from one forward pass."""
    import torch

    calls: list[tuple[str, Any, Any]] = []
    handles = [m.register_forward_hook(lambda module, _inputs, out, name=n: calls.append((name, module, out)))
               for n, m in _layers(model).items()]
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return calls


def _channels(module: Any) -> tuple[int, int, int] | None:
    """(in channels, out channels, groups) of a convolution; a linear layer's features with 1 group."""
    if hasattr(module, "groups"):
        return module.in_channels, module.out_channels, module.groups
    if hasattr(module, "in_features"):
        return module.in_features, module.out_features, 1
    return None


def _geometry(module: Any, out: Any) -> tuple[int, int]:
    """(kernel area, output pixels) of one call; a linear layer is a 1x1 kernel over its rows."""
    if hasattr(module, "kernel_size"):
        return module.kernel_size[0] * module.kernel_size[1], out.shape[2] * out.shape[3]
    return 1, out.numel() // module.out_features


def layout_features(records: list[tuple[int, int, int, int, int]], layout: str,
                    activations: bool = False) -> list[float]:
    """Millions of MACs per kind under ``layout`` (one of LAYOUTS), with "+im2col" also millions of
    im2col elements, with ``activations`` also millions of layer output elements, and a constant.

    An int8 QDQ network quantizes, requantizes and reorders every layer's output, work that grows with
    the output's elements rather than with MACs. On two measurements of 200 int8 networks of the default
    teacher's pruned family (one and two threads), fits on 16 of them predicted the rest within 10% for
    97.2% and 89.5% with that term, 90.3% and 81.9% without it; for fp32 the term let the layout choice
    overfit (95.0% -> 91.8% on one thread), so only int8 fits use it.

    A k x k convolution that cannot block runs as im2col + GEMM: it first copies k x k x its input
    channels per output pixel, memory traffic that MACs do not count. "+im2col" layouts count those
    elements, and count a convolution that blocks only its output (fewer input channels than a block,
    such as the stem) with the unblocked ones rather than the blocked ones. Whether that form pays is left
    to the leave-one-out choice (``choose_layout``), as the block size is. benchmarks/latency_fit_cv.py
    on two measurements of 200 pruned students, 32 fitted, within 10% without -> with these layouts: one
    thread fp32 88.9% -> 91.5% and 96.1% -> 98.6%, int8 98.1% -> 99.3% and 98.7% -> 100%; two threads
    fp32 75.1% -> 80.6%, int8 unchanged."""
    if activations:
        return layout_features(records, layout)[:-1] + [sum(hw * cout for _cin, cout, _g, _k, hw in records) / 1e6,
                                                       1.0]
    if layout == "macs":
        return [sum(hw * k * cout * cin / g for cin, cout, g, k, hw in records) / 1e6, 1.0]
    layout, im2col = layout.removesuffix(IM2COL), layout.endswith(IM2COL)
    block = int(layout.removeprefix("nchwc").removeprefix("align"))
    blocked = other = copied = 0.0
    for cin, cout, g, k, hw in records:
        if layout.startswith("nchwc"):
            # Output channels not a multiple of 4 feed convolutions that cannot block (their input): such a
            # conv measured as unblocked here (cross-validated on two measurements of 200 pruned students).
            ok = ((cin < block or cin % 4 == 0) if g == 1 else cin % 4 == 0) and cout % 4 == 0
            # A blocked input is padded to whole blocks too; fewer channels than a block stay NCHW.
            padded_in = _round_up(cin, block) if ok and cin >= block else cin
            macs = hw * k * (_round_up(cout, block) if ok else cout) * padded_in / g
        else:
            ok = cin % block == 0
            macs = hw * k * _round_up(cout, block) * _round_up(cin, block) / g
        if ok and (cin >= block or not im2col):
            blocked += macs
        else:
            other += macs
            if not ok and k > 1:
                copied += hw * k * cin
    return [blocked / 1e6, other / 1e6, *([copied / 1e6] if im2col else []), 1.0]


def fit_features(records: list[tuple[int, int, int, int, int]], layout: str,
                 activations: bool = False) -> list[float]:
    """What a table-less fit regresses on: ``layout_features`` plus two kinds of work MACs miss, the
    number of convolution and linear layers (each one a kernel call, and in a block a normalisation,
    an activation or a residual add around it) and the elements of maps gated by squeeze-excitation
    (``gated_elements``: a pooling pass over the map, then a multiply over it). Cross-validated on the
    200 students per space that benchmarks/latency_predictor.py measured, 32 fitted, the rest predicted
    (benchmarks/latency_fit_cv.py), within 10% without -> with these terms, one thread: ``mbv2`` fp32
    38% -> 96%, int8 33% -> 47%; ``resnet`` fp32 95% -> 97%, int8 65% -> 81%; ``pruned``, whose
    members share their layers, unchanged (98.6%, 100%). With ``activations`` (int8 fits) also the
    ``int8_depthwise_terms``."""
    extra = int8_depthwise_terms(records) if activations else []
    return layout_features(records, layout, activations)[:-1] + [float(len(records)),
                                                                 gated_elements(records) / 1e6, *extra, 1.0]


def int8_depthwise_terms(records: list[tuple[int, int, int, int, int]]) -> list[float]:
    """Work of int8 depthwise convolutions that MACs misprice, in millions: the MACs of channels past the
    last whole 16-channel vector and past the last whole 8-channel one (onnxruntime's int8 depthwise
    kernel steps through channels a vector at a time, 16 with AVX2 and 8 with SSE2 or NEON, and finishes
    the rest one channel at a time), and the kernel's input pointers (it reads each output pixel through
    one pointer per kernel tap, whatever the channel count). benchmarks/latency_fit_cv.py, 32 fitted, int8
    within 10%, without -> with them: on the 200 ``mbv2`` students they were chosen on, one thread 47% ->
    79%, two threads 50% -> 65%; on a fresh draw of 200 (``latency_predictor.py --seed 778``), one thread
    63% -> 81%, two threads 64% -> 63% (its repeat measurement of 30 agreed within 10% for 13% of them).
    fp32 depthwise runs in other kernels, and the two tail terms cost fp32 fits (96.0% -> 94.7% on one
    thread): fp32 fits leave them out."""
    tail16 = tail8 = pointers = 0.0
    for cin, cout, g, k, hw in records:
        if g > 1 and g == cin == cout:
            tail16 += hw * k * (cout % 16)
            tail8 += hw * k * (cout % 8)
            pointers += hw * k
    return [tail16 / 1e6, tail8 / 1e6, pointers / 1e6]


def gated_elements(records: list[tuple[int, int, int, int, int]]) -> float:
    """Elements of the maps that squeeze-excitation gates: a run of layers on one pixel (the pooled
    vector) between two multi-pixel layers scales the map of the multi-pixel layer before it. A classifier
    on the pooled vector, with no layer after it, gates nothing."""
    total, previous, gating = 0.0, 0.0, False
    for _cin, cout, _g, _k, hw in records:
        if hw == 1:
            gating = previous > 0
            continue
        if gating:
            total += previous
        previous, gating = float(cout * hw), False
    return total


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def choose_layout(records: list[list[tuple[int, int, int, int, int]]], y: np.ndarray,
                  activations: bool = False, layouts: tuple[str, ...] = LAYOUTS,
                  features: Callable[..., list[float]] | None = None) -> tuple[str, np.ndarray]:
    """The layout (of ``layouts``) whose fit predicts each anchor best from the others (leave-one-out,
    mean squared relative error), and its fit on all anchors (``features``, by default ``fit_features``,
    with ``activations``).
    A layout is tried only with at least three more anchors than its fit has independent terms (plain MACs
    always).
    Fitted on relative error, as the calibrated table is: small networks matter as much as big ones."""
    from edgekd.latency.network_fit import relative_lstsq

    features = features or fit_features
    best, best_err = "macs", np.inf
    for layout in layouts:
        x = np.asarray([features(r, layout, activations) for r in records])
        # terms that never vary among the anchors (a pruned family's layer count) fit nothing: count the rank
        if layout != "macs" and len(y) < np.linalg.matrix_rank(x) + 3:
            continue
        errors = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            errors.append(float(x[i] @ relative_lstsq(x[keep], y[keep])) / y[i] - 1.0)
        err = float(np.mean(np.square(errors)))
        if err < best_err - 1e-12:  # a tie (an exact fit) goes to the earlier layout, which has fewer terms
            best, best_err = layout, err
    return best, relative_lstsq(np.asarray([features(r, best, activations) for r in records]), y)
