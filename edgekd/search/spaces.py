"""Registered student search spaces. A space samples and mutates JSON-able configs and builds nn.Modules.

A config is a dict of genes: an int, or a list of ints with one entry per stage. Each space lists
its genes with their options (``genes()``), so sampling, mutation and the smallest config are
written once. Spaces that know their blocks (``blocks``/``all_blocks``/``build_block``) can be
calibrated into a latency table; the others are measured.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgekd.registry import Registry
from edgekd.types import StudentSpec

# (gene name, stage index or None for a scalar gene, the options)
Gene = tuple[str, "int | None", tuple]


class SearchSpace(Protocol):
    name: str

    def genes(self) -> list[Gene]: ...

    def build(self, config: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> Any: ...


SPACES: Registry[Any] = Registry("search space")


def sample(space: SearchSpace, rng: np.random.Generator) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name, index, options in space.genes():
        value = options[int(rng.integers(len(options)))]
        _set(config, name, index, value)
    return config


def smallest(space: SearchSpace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name, index, options in space.genes():
        _set(config, name, index, min(options))
    return config


def not_in_space(space: SearchSpace, config: Any) -> str | None:
    """Why ``config`` is no member of ``space`` (a gene missing, off its options, or one too many), or None
    when it is one: a record edited by hand is refused here, not as a layer's error when it is built."""
    if not isinstance(config, dict):
        return "has a config that is not an object"
    genes = space.genes()
    stages: dict[str, int] = {}
    for name, index, options in genes:
        value = config.get(name)
        if name not in config:
            return f"has no '{name}'"
        if index is not None:
            if not isinstance(value, list) or index >= len(value):
                return f"has no stage {index} in '{name}'"
            stages[name] = max(stages.get(name, 0), index + 1)
            value = value[index]
        if isinstance(value, bool) or value not in options:
            where = f"{name}[{index}]" if index is not None else name
            return f"has {where} = {value!r}, not one of {', '.join(map(str, options))}"
    for name, count in stages.items():
        if len(config[name]) != count:
            return f"has {len(config[name])} stages in '{name}', and the space {count}"
    extra = sorted(set(config) - {name for name, _, _ in genes})
    return f"has '{extra[0]}', which the space does not" if extra else None


def mutate(space: SearchSpace, config: dict[str, Any], rng: np.random.Generator, genes: int = 1) -> dict[str, Any]:
    """A copy of ``config`` with ``genes`` genes changed to another of their options."""
    child = {k: (list(v) if isinstance(v, list) else v) for k, v in config.items()}
    choices = [g for g in space.genes() if len(g[2]) > 1]
    for pick in rng.choice(len(choices), size=min(genes, len(choices)), replace=False):
        name, index, options = choices[int(pick)]
        current = child[name] if index is None else child[name][index]
        others = [o for o in options if o != current]
        _set(child, name, index, others[int(rng.integers(len(others)))])
    return child


class GeneSpace:
    """``sample`` and ``smallest`` as methods, for spaces that list their genes."""

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return sample(self, rng)  # type: ignore[arg-type]

    def smallest(self) -> dict[str, Any]:
        return smallest(self)  # type: ignore[arg-type]


def _set(config: dict[str, Any], name: str, index: int | None, value: Any) -> None:
    value = value.item() if hasattr(value, "item") else value
    if index is None:
        config[name] = value
        return
    values = config.setdefault(name, [])
    values.extend([None] * (index + 1 - len(values)))
    values[index] = value


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


@functools.cache  # blocks() runs per prediction, tens of thousands a second
def _stem(h: int, w: int) -> tuple[int, int]:
    """(stem conv stride, max-pools after it): downsample early only when the image is large enough to
    afford it, and pool large images down to ``models.STAGE_INPUT_MAX`` before the stages."""
    from edgekd.models import stem_pools

    stride = 2 if min(h, w) >= 24 else 1
    return stride, stem_pools(min(h, w), stride)


def _after_stem(h: int, w: int, stride: int, pools: int) -> tuple[int, int]:
    h, w = _out(h, stride), _out(w, stride)
    for _ in range(pools):
        h, w = _out(h, 2), _out(w, 2)
    return h, w


STRIDES = (1, 2, 2)


@dataclass(frozen=True)
class MobileNetV2Space(GeneSpace):
    """Inverted residual stages: per-stage width, depth, expansion, kernel size and squeeze-excitation."""

    name: str = "mbv2"
    stems: tuple[int, ...] = (8, 12, 16)
    widths: tuple[tuple[int, ...], ...] = ((8, 12, 16), (16, 24, 32), (24, 32, 48, 64))
    depths: tuple[int, ...] = (1, 2, 3)
    expands: tuple[int, ...] = (2, 3, 4, 6)
    kernels: tuple[int, ...] = (3, 5)

    def genes(self) -> list[Gene]:
        out: list[Gene] = [("stem", None, self.stems)]
        for i, widths in enumerate(self.widths):
            out += [("widths", i, widths), ("depths", i, self.depths), ("expands", i, self.expands),
                    ("kernels", i, self.kernels), ("se", i, (0, 1))]
        return out

    def build(self, config: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> Any:
        from edgekd.models import mobilenet_v2

        c, h, w = input_shape
        stride, pools = _stem(h, w)
        return mobilenet_v2(c, num_classes, config["stem"], config["widths"], config["depths"],
                            config["expands"], config["kernels"], stem_stride=stride, se=config.get("se"),
                            pools=pools)

    # Latency-table support: a network is the sequence of its blocks, each keyed by everything that
    # changes its cost (kind, channels, stride, expansion, kernel, input resolution). A squeeze-excite
    # gate is its own entry after the block it sits in, so gated blocks do not double the table.
    def blocks(self, config: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> list[tuple]:
        c, h, w = input_shape
        stride, pools = _stem(h, w)
        keys: list[tuple] = [("stem", c, config["stem"], stride, pools, h, w)]
        h, w = _after_stem(h, w, stride, pools)
        cin = config["stem"]
        gates = config.get("se") or [0] * len(config["widths"])
        for i, (width, depth) in enumerate(zip(config["widths"], config["depths"])):
            e = config["expands"][i]
            for j in range(depth):
                s = STRIDES[i] if j == 0 else 1
                keys.append(("ir", cin, width, s, e, config["kernels"][i], h, w))
                h, w = _out(h, s), _out(w, s)
                if gates[i]:
                    keys.append(("se", cin * e, h, w))
                cin = width
        keys.append(("head", cin, num_classes, h, w))
        return keys

    def all_blocks(self, input_shape: tuple[int, int, int], num_classes: int) -> list[tuple]:
        c, h, w = input_shape
        stride, pools = _stem(h, w)
        keys = {("stem", c, stem, stride, pools, h, w) for stem in self.stems}
        h, w = _after_stem(h, w, stride, pools)
        inputs = set(self.stems)
        for i, widths in enumerate(self.widths):
            s = STRIDES[i]
            ho, wo = _out(h, s), _out(w, s)
            for e in self.expands:
                for k in self.kernels:
                    keys |= {("ir", cin, cout, s, e, k, h, w) for cin in inputs for cout in widths}
                    keys |= {("ir", cout, cout, 1, e, k, ho, wo) for cout in widths}
                keys |= {("se", cin * e, ho, wo) for cin in inputs | set(widths)}
            h, w, inputs = ho, wo, set(widths)
        keys |= {("head", cin, num_classes, h, w) for cin in inputs}
        return sorted(keys)

    def build_block(self, key: tuple) -> tuple[Any, tuple[int, ...]]:
        from edgekd.models import InvertedResidual, SqueezeExcite

        if key[0] == "ir":
            _, cin, cout, stride, e, k, h, w = key
            return InvertedResidual(cin, cout, stride, e, k), (1, cin, h, w)
        if key[0] == "se":
            _, channels, h, w = key
            return SqueezeExcite(channels), (1, channels, h, w)
        return _stem_or_head(key)


@dataclass(frozen=True)
class ResNetSpace(GeneSpace):
    """Basic-block (two 3x3 convs) stages: per-stage width and depth."""

    name: str = "resnet"
    stems: tuple[int, ...] = (8, 12, 16)
    widths: tuple[tuple[int, ...], ...] = ((8, 12, 16), (16, 24, 32), (24, 32, 48, 64))
    depths: tuple[int, ...] = (1, 2, 3)

    def genes(self) -> list[Gene]:
        out: list[Gene] = [("stem", None, self.stems)]
        for i, widths in enumerate(self.widths):
            out += [("widths", i, widths), ("depths", i, self.depths)]
        return out

    def build(self, config: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> Any:
        from edgekd.models import resnet

        c, h, w = input_shape
        stride, pools = _stem(h, w)
        return resnet(c, num_classes, config["stem"], config["widths"], config["depths"], STRIDES,
                      stem_stride=stride, pools=pools)

    def blocks(self, config: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> list[tuple]:
        c, h, w = input_shape
        stride, pools = _stem(h, w)
        keys: list[tuple] = [("stem", c, config["stem"], stride, pools, h, w)]
        h, w = _after_stem(h, w, stride, pools)
        cin = config["stem"]
        for i, (width, depth) in enumerate(zip(config["widths"], config["depths"])):
            for j in range(depth):
                s = STRIDES[i] if j == 0 else 1
                keys.append(("basic", cin, width, s, h, w))
                h, w, cin = _out(h, s), _out(w, s), width
        keys.append(("head", cin, num_classes, h, w))
        return keys

    def all_blocks(self, input_shape: tuple[int, int, int], num_classes: int) -> list[tuple]:
        c, h, w = input_shape
        stride, pools = _stem(h, w)
        keys = {("stem", c, stem, stride, pools, h, w) for stem in self.stems}
        h, w = _after_stem(h, w, stride, pools)
        inputs = set(self.stems)
        for i, widths in enumerate(self.widths):
            s = STRIDES[i]
            ho, wo = _out(h, s), _out(w, s)
            keys |= {("basic", cin, cout, s, h, w) for cin in inputs for cout in widths}
            keys |= {("basic", cout, cout, 1, ho, wo) for cout in widths}
            h, w, inputs = ho, wo, set(widths)
        keys |= {("head", cin, num_classes, h, w) for cin in inputs}
        return sorted(keys)

    def build_block(self, key: tuple) -> tuple[Any, tuple[int, ...]]:
        from edgekd.models import BasicBlock

        if key[0] == "basic":
            _, cin, cout, stride, h, w = key
            return BasicBlock(cin, cout, stride), (1, cin, h, w)
        return _stem_or_head(key)


def _stem_or_head(key: tuple) -> tuple[Any, tuple[int, ...]]:
    import torch

    from edgekd.models import stem_layers

    if key[0] == "stem":
        _, c, out, stride, pools, h, w = key
        return stem_layers(c, out, stride, pools), (1, c, h, w)
    _, cin, classes, h, w = key
    head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(cin, classes))
    return head, (1, cin, h, w)


SPACES.register("mbv2")(MobileNetV2Space())
SPACES.register("resnet")(ResNetSpace())
from edgekd.search import pruned as _pruned  # noqa: E402, F401  (registers the teacher-derived 'pruned' space)


def resolve_space(name: str, teacher: Any = None, input_shape: tuple[int, int, int] | None = None) -> Any:
    """The space called ``name``; a teacher-derived family (``pruned``) is bound to ``teacher`` first."""
    space = SPACES.get(name)
    if hasattr(space, "bind"):
        from edgekd.errors import ConfigError

        if teacher is None or input_shape is None:
            raise ConfigError(f"search space '{name}' is derived from the teacher, and no teacher was given",
                              "pass the teacher (the Python API's teacher=..., or --teacher)")
        space = space.bind(teacher, input_shape)
    return space


def build_student(spec: StudentSpec, input_shape: tuple[int, int, int], num_classes: int,
                  teacher: Any = None) -> Any:
    """The nn.Module for ``spec``; unknown spaces list the valid ones, and a config that lacks a gene the
    space builds from is refused naming it. Values off the space's options still build (a config written by
    hand need not be one the search would sample)."""
    from edgekd.api_args import require_input_shape
    from edgekd.errors import ConfigError

    require_input_shape(input_shape)
    space = resolve_space(spec.space, teacher, input_shape)
    try:
        return space.build(spec.config, input_shape, num_classes)
    except KeyError as exc:  # a layer reading a gene that is not there
        raise ConfigError(f"the student spec for space '{spec.space}' has no {exc.args[0]!r}",
                          "use a spec from a search result (search.json), or the space's sample/smallest config") \
            from None
