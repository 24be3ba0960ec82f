"""Plain nn.Module builders shared by the default teacher and the search spaces.

Everything here exports to ONNX and quantizes in onnxruntime's QDQ flow: ReLU (not ReLU6, whose
Clip does not fuse as reliably), BN after every conv, residual adds as plain ``+``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


# The shorter side, in pixels, the first stage may start at. The stages downsample 4x in all, so larger
# images first go through max-pools after the stem conv, as ResNet's stem does: at 224x224 a student's
# stages would otherwise run at 112, 56 and 28 px, several times the compute of a mobile network's
# and a receptive field too small for the image, at no gain in what a 4-8 px final map holds.
STAGE_INPUT_MAX = 64


def stem_pools(side: int, stride: int) -> int:
    """How many 3x3 stride-2 max-pools follow a stem conv of ``stride`` on an image whose shorter side
    is ``side``: none up to 128 px with a stride-2 stem (so 32x32 digits are untouched), one at 224."""
    side, pools = (side - 1) // stride + 1, 0
    while side > STAGE_INPUT_MAX:
        side, pools = (side - 1) // 2 + 1, pools + 1
    return pools


def stem_layers(in_ch: int, out: int, stride: int, pools: int = 0) -> nn.Sequential:
    """conv-bn-relu, then ``pools`` max-pools (the layers stay ``stem.0``-``stem.2`` without them)."""
    layers = conv_bn(in_ch, out, 3, stride)
    return nn.Sequential(*layers, *[nn.MaxPool2d(3, 2, 1) for _ in range(pools)]) if pools else layers


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1, act=False)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled features (Hu et al.), as in MobileNetV3's blocks."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        squeezed = max(4, channels // reduction)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, squeezed, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(squeezed, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, kxk depthwise, optional squeeze-excitation, 1x1 project,
    residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, kernel: int, se: bool = False) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1))
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(conv_bn(hidden, cout, 1, act=False))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


class Classifier(nn.Module):
    """stem -> stages -> global average pool -> linear. ``features`` is the last 4-D map."""

    def __init__(self, stem: nn.Module, stages: nn.Sequential, width: int, num_classes: int) -> None:
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def resnet(in_ch: int, num_classes: int, stem: int, widths: Sequence[int], depths: Sequence[int],
           strides: Sequence[int] = (1, 2, 2), stem_stride: int = 1, pools: int = 0) -> Classifier:
    blocks: list[nn.Module] = []
    cin = stem
    for width, depth, stride in zip(widths, depths, strides):
        for i in range(depth):
            blocks.append(BasicBlock(cin, width, stride if i == 0 else 1))
            cin = width
    return Classifier(stem_layers(in_ch, stem, stem_stride, pools), nn.Sequential(*blocks), cin, num_classes)


def mobilenet_v2(in_ch: int, num_classes: int, stem: int, widths: Sequence[int], depths: Sequence[int],
                 expands: Sequence[int], kernels: Sequence[int], stem_stride: int = 2,
                 strides: Sequence[int] = (1, 2, 2), se: Sequence[int] | None = None, pools: int = 0) -> Classifier:
    blocks: list[nn.Module] = []
    cin = stem
    se = se or [0] * len(widths)
    for width, depth, expand, kernel, stride, gated in zip(widths, depths, expands, kernels, strides, se):
        for i in range(depth):
            blocks.append(InvertedResidual(cin, width, stride if i == 0 else 1, expand, kernel, bool(gated)))
            cin = width
    return Classifier(stem_layers(in_ch, stem, stem_stride, pools), nn.Sequential(*blocks), cin, num_classes)
