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

    def blocks(self, config: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> list[tuple]: ...

    def all_blocks(self, input_shape: tuple[int, int, int], num_classes: int) -> list[tuple]: ...

    def build_block(self, key: tuple) -> tuple[Any, tuple[int, ...]]: ...


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


    # Latency-table support: a network is the sequence of its blocks, each keyed by everything that
    # changes its cost (kind, channels, stride, expansion, kernel, input resolution).
    def blocks(self, config: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> list[tuple]:
        c, h, w = input_shape
        stride = 2 if min(h, w) >= 24 else 1
        keys: list[tuple] = [("stem", c, config["stem"], stride, h, w)]
        h, w = _out(h, stride), _out(w, stride)
        cin = config["stem"]
        for i, (width, depth) in enumerate(zip(config["widths"], config["depths"])):
            for j in range(depth):
                s = (1, 2, 2)[i] if j == 0 else 1
                keys.append(("ir", cin, width, s, config["expands"][i], config["kernels"][i], h, w))
                h, w, cin = _out(h, s), _out(w, s), width
        keys.append(("head", cin, num_classes, h, w))
        return keys

    def all_blocks(self, input_shape: tuple[int, int, int], num_classes: int) -> list[tuple]:
        c, h, w = input_shape
        stride = 2 if min(h, w) >= 24 else 1
        keys = {("stem", c, stem, stride, h, w) for stem in self.stems}
        h, w = _out(h, stride), _out(w, stride)
        inputs = set(self.stems)
        for i, widths in enumerate(self.widths):
            s = (1, 2, 2)[i]
            for e in self.expands:
                for k in self.kernels:
                    keys |= {("ir", cin, cout, s, e, k, h, w) for cin in inputs for cout in widths}
                    keys |= {("ir", cout, cout, 1, e, k, _out(h, s), _out(w, s)) for cout in widths}
            h, w, inputs = _out(h, s), _out(w, s), set(widths)
        keys |= {("head", cin, num_classes, h, w) for cin in inputs}
        return sorted(keys)

    def build_block(self, key: tuple) -> tuple[Any, tuple[int, ...]]:
        import torch

        from edgekd.models import InvertedResidual, conv_bn

        kind = key[0]
        if kind == "stem":
            _, c, out, stride, h, w = key
            return conv_bn(c, out, 3, stride), (1, c, h, w)
        if kind == "ir":
            _, cin, cout, stride, e, k, h, w = key
            return InvertedResidual(cin, cout, stride, e, k), (1, cin, h, w)
        _, cin, classes, h, w = key
        head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(cin, classes))
        return head, (1, cin, h, w)


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


SPACES.register("mbv2")(MobileNetV2Space())


def build_student(spec: StudentSpec, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """The nn.Module for ``spec``; unknown spaces list the valid ones."""
    return SPACES.get(spec.space).build(spec.config, input_shape, num_classes)
