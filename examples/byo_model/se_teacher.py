"""Bring your own model, a harder one: a small CNN with squeeze-excitation, hardswish and grouped
convolutions (MobileNetV3 / RegNet-style blocks), written the way a user would, with plain torch.

    edgekd compress --teacher examples/byo_model/se_teacher.py:build --weights se_teacher.pt ...

with ``se_teacher.pt`` weights you trained first, as ``train_my_teacher.py`` trains ``my_teacher``.

``benchmarks/export_matrix.py`` trains it briefly on digits and puts it through every exporter.
"""

from torch import Tensor, nn


class SqueezeExcite(nn.Module):
    """Channel gates from the globally pooled features (hardsigmoid, as in MobileNetV3)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class GroupedBlock(nn.Module):
    """1x1 conv -> 3x3 grouped conv -> squeeze-excite -> 1x1 conv, hardswish between, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int = 4, expand: int = 2) -> None:
        super().__init__()
        mid = cout * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.Hardswish(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(mid), nn.Hardswish(),
            SqueezeExcite(mid),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return out + x if self.residual else out


class SETeacher(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.Hardswish())
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, width in enumerate(widths):
            blocks += [GroupedBlock(cin, width, 1 if i == 0 else 2), GroupedBlock(width, width, 1)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 128), nn.Hardswish(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


def build(num_classes: int = 10) -> nn.Module:
    """The factory edgekd calls (``se_teacher.py:build``); weights come from ``--weights``."""
    return SETeacher(num_classes)
