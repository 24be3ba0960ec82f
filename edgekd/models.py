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
           strides: Sequence[int] = (1, 2, 2), stem_stride: int = 1) -> Classifier:
    blocks: list[nn.Module] = []
    cin = stem
    for width, depth, stride in zip(widths, depths, strides):
        for i in range(depth):
            blocks.append(BasicBlock(cin, width, stride if i == 0 else 1))
            cin = width
    return Classifier(conv_bn(in_ch, stem, 3, stem_stride), nn.Sequential(*blocks), cin, num_classes)


def mobilenet_v2(in_ch: int, num_classes: int, stem: int, widths: Sequence[int], depths: Sequence[int],
                 expands: Sequence[int], kernels: Sequence[int], stem_stride: int = 2,
                 strides: Sequence[int] = (1, 2, 2), se: Sequence[int] | None = None) -> Classifier:
    blocks: list[nn.Module] = []
    cin = stem
    se = se or [0] * len(widths)
    for width, depth, expand, kernel, stride, gated in zip(widths, depths, expands, kernels, strides, se):
        for i in range(depth):
            blocks.append(InvertedResidual(cin, width, stride if i == 0 else 1, expand, kernel, bool(gated)))
            cin = width
    return Classifier(conv_bn(in_ch, stem, 3, stem_stride), nn.Sequential(*blocks), cin, num_classes)
