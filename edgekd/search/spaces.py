"""Registered student search spaces. A space samples JSON-able configs and builds nn.Modules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgekd.registry import Registry
from edgekd.types import StudentSpec


class SearchSpace(Protocol):
    name: str

    def sample(self, rng: np.random.Generator) -> dict[str, Any]: ...

    def smallest(self) -> dict[str, Any]: ...

    def build(self, config: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> Any: ...


SPACES: Registry[SearchSpace] = Registry("search space")


@dataclass(frozen=True)
class MobileNetV2Space:
    """Inverted residual stages: per-stage width, depth, expansion and kernel size."""

    name: str = "mbv2"
    stems: tuple[int, ...] = (8, 12, 16)
    widths: tuple[tuple[int, ...], ...] = ((8, 12, 16), (16, 24, 32), (24, 32, 48, 64))
    depths: tuple[int, ...] = (1, 2, 3)
    expands: tuple[int, ...] = (2, 3, 4, 6)
    kernels: tuple[int, ...] = (3, 5)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        def pick(options: tuple[int, ...]) -> int:
            return int(options[rng.integers(len(options))])

        stages = len(self.widths)
        return {
            "stem": pick(self.stems),
            "widths": [pick(w) for w in self.widths],
            "depths": [pick(self.depths) for _ in range(stages)],
            "expands": [pick(self.expands) for _ in range(stages)],
            "kernels": [pick(self.kernels) for _ in range(stages)],
        }

    def smallest(self) -> dict[str, Any]:
        stages = len(self.widths)
        return {
            "stem": min(self.stems),
            "widths": [min(w) for w in self.widths],
            "depths": [min(self.depths)] * stages,
            "expands": [min(self.expands)] * stages,
            "kernels": [min(self.kernels)] * stages,
        }

    def build(self, config: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> Any:
        from edgekd.models import mobilenet_v2

        c, h, w = input_shape
        # Downsample early only when the image is large enough to afford it.
        stem_stride = 2 if min(h, w) >= 24 else 1
        return mobilenet_v2(c, num_classes, config["stem"], config["widths"], config["depths"],
                            config["expands"], config["kernels"], stem_stride=stem_stride)


SPACES.register("mbv2")(MobileNetV2Space())


def build_student(spec: StudentSpec, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """The nn.Module for ``spec``; unknown spaces list the valid ones."""
    return SPACES.get(spec.space).build(spec.config, input_shape, num_classes)
