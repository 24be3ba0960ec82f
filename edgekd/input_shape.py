"""An ONNX model input's shape against the images edgekd feeds it: --input-shape checked against the model's
fixed dimensions, examples of one to pass, the shape to measure an open-sized model at, and the layout (NCHW,
channels-last, flat) it takes images in."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekd.errors import ArtifactError


def check_input_shape(path: str | Path, details: dict[str, Any], shape: tuple[int, ...]) -> None:
    """``shape`` (from --input-shape) must have the model input's rank and agree with its fixed dimensions:
    said here in one line, not as the runtime's error from inside the measuring process."""
    from edgekd.errors import ConfigError

    check_feedable(path, details)
    if not details.get("inputs"):
        return
    dims = details["inputs"][0]["shape"]
    if dims is None:  # unknown rank: any shape may be what the model takes
        return
    given = ",".join(map(str, shape))
    wanted = "(" + ", ".join(str(d) if isinstance(d, int) and d > 0 else str(d or "?") for d in dims) + ")"
    example = shape_example(dims, shape[0] if shape else 1, image_sample(shape))  # the sizes given, if an image
    if len(dims) != len(shape):
        raise ConfigError(f"--input-shape {given} has {len(shape)} dimensions, and '{path}' takes {len(dims)} "
                          f"{wanted}", f"pass {len(dims)} numbers, e.g. {example}")
    for i, (d, s) in enumerate(zip(dims, shape)):
        if isinstance(d, int) and d > 0 and d != s:
            raise ConfigError(f"--input-shape {given} sets dimension {i} to {s}, and '{path}' fixes it at {d} "
                              f"{wanted}", f"keep the model's fixed dimensions, e.g. {example}")


def check_feedable(path: str | Path, details: dict[str, Any]) -> None:
    """Refuse a model with no input, or whose input is a scalar (rank 0): edgekd feeds batches of images or
    tensors, and neither takes one, so no --input-shape can help (its advice would ask for 0 numbers)."""
    inputs = details.get("inputs")
    if inputs is None:  # not read: the runtime says what it finds
        return
    if not inputs:
        raise ArtifactError(f"model '{path}' has no inputs, so there is nothing for edgekd to feed it",
                            "pass a model that takes its images (batch, channels, height, width) as an input")
    if inputs[0].get("shape") == []:  # None is an unknown rank, which any shape may fit
        name = inputs[0].get("name")
        raise ArtifactError(f"input {f'{name!r} ' if name else ''}of model '{path}' is a scalar (rank 0), not a "
                            "batch of images or tensors edgekd can feed",
                            "re-export the model taking a batch first, e.g. images of shape (1, 3, 224, 224)")


def fixed_dim(dim: Any) -> bool:
    return isinstance(dim, int) and dim > 0


def shape_example(dims: Sequence[Any], batch: int = 1, sample: Sequence[int] | None = None) -> str:
    """An --input-shape for an input of ``dims``: its fixed dimensions kept, a dynamic batch ``batch`` (the
    profile's, where the caller knows it), open channels and sides the data's ``sample`` (C, H, W) where known,
    else 3 channels and 224 pixels (an example to edit; the worker's own, which runs on devices without edgekd)."""
    from edgekd.latency.worker import shape_example as example

    return example(list(dims), batch, tuple(sample) if sample else None)


def image_sample(shape: Sequence[int]) -> tuple[int, ...] | None:
    """The (channels, height, width) of an NCHW or NHWC image input ``shape``, by where its channel count is
    (NCHW when that does not tell); None for another rank."""
    from edgekd.latency.worker import CHANNEL_COUNTS

    if len(shape) != 4:
        return None
    last = shape[3] in CHANNEL_COUNTS and shape[1] not in CHANNEL_COUNTS
    return (shape[3], shape[1], shape[2]) if last else tuple(shape[1:])


def data_input_shape(details: dict[str, Any], sample: Sequence[int], batch: int) -> tuple[int, ...] | None:
    """The shape to measure a model at whose input has dynamic dimensions besides the batch: the data's
    ``sample`` shape at the model's batch (``batch`` when that is dynamic too); None when nothing beyond the
    batch is dynamic, or the data's images do not fit the model's input (another rank, channel count or size:
    scoring them says which, and how to fix it, where this shape could only be refused as an --input-shape
    nobody gave)."""
    dims = (details.get("inputs") or [{}])[0].get("shape")
    if not dims or all(fixed_dim(d) for d in dims[1:]) or len(dims) != len(sample) + 1:
        return None
    if feeds_channels_last(dims, sample):
        sample = (*sample[1:], sample[0])
    return (dims[0] if fixed_dim(dims[0]) else batch, *sample) if _fits(dims[1:], sample) else None


def check_has_batch(path: str | Path, details: dict[str, Any], images: bool = False) -> None:
    """Refuse a model whose input is one image with no batch dimension before it (channels, height, width):
    edgekd times and scores batches of images, and would read its channels as a batch (and a size mismatch
    into it). ``images``: the model is fed image data (--data), so any rank-3 input is one; without it only
    a first dimension of 3 says so, as [1, T, F] may be a sequence model's batch of one."""
    check_feedable(path, details)
    dims = (details.get("inputs") or [{}])[0].get("shape")
    if not dims or len(dims) != 3 or not (images or dims[0] == 3):
        return
    shown = ", ".join(str(d) if fixed_dim(d) else str(d or "?") for d in dims)
    if not fixed_dim(dims[0]):  # an open first dimension is a batch: a grayscale model without its channels
        sides = ", ".join(str(d) if fixed_dim(d) else "224" for d in dims[1:])
        raise ArtifactError(f"'{path}' takes input of shape ({shown}), a batch of images without a channel "
                            "dimension, and edgekd feeds images as (batch, channels, height, width)",
                            f"re-export the model taking a channel dimension, e.g. an example input of shape "
                            f"(1, 1, {sides})")
    example = ", ".join(str(d) if fixed_dim(d) else "224" for d in dims)
    raise ArtifactError(f"'{path}' takes input of shape ({shown}), one image with no batch dimension, and edgekd "
                        "feeds images in batches (batch, channels, height, width)",
                        f"re-export the model with a batch dimension first, e.g. torch.onnx.export with an example "
                        f"input of shape (1, {example})")


def feeds_channels_last(dims: Sequence[Any], sample: Sequence[int]) -> bool:
    """Whether a model input of ``dims`` (batch first) takes images of the NCHW ``sample`` shape (C, H, W)
    only as channels-last (H, W, C), the layout of models converted from TensorFlow or TFLite; also when
    only their size or channel count differs, its channels being last and not first (so a mismatch is told in
    its layout)."""
    from edgekd.latency.worker import CHANNEL_COUNTS

    if len(dims) != 4 or len(sample) != 3 or _fits(dims[1:], sample):
        return False
    channels = sample[0]
    first = not fixed_dim(dims[1]) or dims[1] == channels
    if _fits(dims[1:], (*sample[1:], channels)) or (dims[3] == channels and not first):
        return True
    # Another channel count than the data's (a colour model fed grayscale): a channel-sized last dimension, and
    # none first, is still channels-last, so the mismatch is told as one of channels (--channels), not of size.
    return dims[3] in CHANNEL_COUNTS and not (fixed_dim(dims[1]) and dims[1] in CHANNEL_COUNTS)


def input_layout(dims: Sequence[Any], sample: Sequence[int]) -> str:
    """How a model input of ``dims`` (batch first) takes images of the NCHW ``sample`` shape: "NCHW" as
    they are, "NHWC" channels-last (``feeds_channels_last``), or "flat", one row of C*H*W values an image (an
    MLP exported without its flatten)."""
    if feeds_channels_last(dims, sample):
        return "NHWC"
    if len(dims) == 2 and len(sample) == 3 and (not fixed_dim(dims[1]) or dims[1] == math.prod(sample)):
        return "flat"
    return "NCHW"


def _fits(dims: Sequence[Any], shape: Sequence[int]) -> bool:
    return all(not fixed_dim(d) or d == s for d, s in zip(dims, shape))
