"""A user-style teacher for tests: a factory in a plain .py file."""

from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_ch: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def build() -> nn.Module:
    return TinyNet()


def build_wide() -> nn.Module:
    return TinyNet(num_classes=12)


NOT_CALLABLE = 3
