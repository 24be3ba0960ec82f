"""Per-node kernel times from onnxruntime's profiler, mapped back to the nodes of the model file.

onnxruntime profiles the graph it runs, after its optimisations, so the names in the profile are
not the file's names. What it does here (onnxruntime 1.2x-1.3x, CPU provider, level "all"):

- QDQ fusion turns ``DQ -> Conv -> Q`` into a QLinearConv named ``<conv name>_token_<n>``
  (``node_Conv_156`` -> ``node_Conv_156_token_2``); a fused Add keeps its own name (QLinearAdd
  ``node_add_70``). The quantizer's own Q/DQ nodes are ``<tensor>_QuantizeLinear`` /
  ``<tensor>_DequantizeLinear``.
- The NCHWc layout pass renames every fp32 Conv after its *output tensor*: ``<tensor>_nchwc``. The
  output is that of the activation fused into it (``relu_nchwc`` is ``node_Conv_153`` + ``node_relu``),
  and a residual Add fused in as its sum input leaves no node of its own.
- Layout changes are new nodes with generated names: ``Transpose``/``Transpose_token_<n>`` around
  NHWC int8 kernels, ``ReorderInput``/``ReorderOutput`` around NCHWc fp32 kernels.

So a profiled name is mapped by stripping ``_token_<n>`` and ``_nchwc``, then looking the rest up as a
node name of the file, else as a tensor name whose producer (walking back through fused activations)
is the node. Layout and Q/DQ nodes belong to no node of the file; their time is charged to the
neighbouring node that needs them (see ``_charge``), so a node's cost includes its quantization overhead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import RunnerError
from edgekd.profiles import DeviceProfile

_SUFFIX = re.compile(r"(_token_\d+|_nchwc)$")
_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"}
_ENTRY = {"QuantizeLinear", "ReorderInput", "DynamicQuantizeLinear"}  # charged downstream first
_EXIT = {"DequantizeLinear", "ReorderOutput"}  # charged upstream first
_LAYOUT = {"Transpose"}  # when onnxruntime inserted it (it has no node in the file)


def is_quantized_op(op_type: str) -> bool:
    """Whether an optimised-graph op runs an integer kernel (QLinearConv, QGemm, MatMulInteger, ...)."""
    return op_type.startswith(("QLinear", "QGemm")) or "Integer" in op_type


@dataclass(frozen=True)
class NodeTime:
    """One node of the optimised graph: its kernel time per run, and what it stands for in the file.

    ``ms`` is the interquartile mean of the timed runs: the profiler reports whole microseconds, so on
    small kernels (3-10 us) medians tie and hide differences that the mean of the middle half keeps.

    ``source`` is the file's node it computes (``None`` for layout and Q/DQ nodes); ``charged_to`` the
    file's nodes its time counts towards (its source, or for overhead the neighbours that need it).
    """

    name: str
    op_type: str
    ms: float
    calls: int
    source: str | None
    charged_to: tuple[str, ...]
    in_elements: int = 0  # elements of its first input tensor, as run
    out_elements: int = 0  # elements of its first output tensor, as run


@dataclass(frozen=True)
class SourceCost:
    """A node of the file: its kernels' time plus the overhead charged to it, per run."""

    name: str
    ms: float
    overhead_ms: float
    op_types: tuple[str, ...]  # the optimised-graph ops that compute it, e.g. ("QLinearConv",)
    in_elements: int = 0  # of the first input of the first kernel that computes it
    out_elements: int = 0  # of the first output of that kernel

    @property
    def quantized(self) -> bool:
        return any(is_quantized_op(op) for op in self.op_types)


@dataclass(frozen=True)
class NodeProfile:
    """Per-node times of one model, profiled on a profile's runtime settings."""

    path: str
    run_ms: float  # interquartile mean of the whole runs as the profiler saw them
    nodes: tuple[NodeTime, ...]

    def costs(self) -> dict[str, SourceCost]:
        """Cost per node of the file (nodes fused away or optimised out have no entry)."""
        own: dict[str, float] = {}
        extra: dict[str, float] = {}
        ops: dict[str, list[str]] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for node in self.nodes:
            share = node.ms / len(node.charged_to) if node.charged_to else 0.0
            for name in node.charged_to:
                target = own if node.source == name else extra
                target[name] = target.get(name, 0.0) + share
            if node.source is not None:
                ops.setdefault(node.source, []).append(node.op_type)
                sizes.setdefault(node.source, (node.in_elements, node.out_elements))
        names = sorted(set(own) | set(extra))
        return {n: SourceCost(n, own.get(n, 0.0) + extra.get(n, 0.0), extra.get(n, 0.0), tuple(ops.get(n, ())),
                              *sizes.get(n, (0, 0))) for n in names}

    def scaled(self, total_ms: float) -> NodeProfile:
        """The same profile with every kernel time scaled so they add up to ``total_ms`` (a p50 measured
        without the profiler, which inflates small kernels: 1.5x on an fp32 and 1.9x on an int8 student
        here, the int8 one having more, smaller kernels)."""
        kernels = sum(n.ms for n in self.nodes)
        factor = total_ms / kernels if kernels > 0 else 1.0
        return dataclasses.replace(self, run_ms=self.run_ms * factor,
                                   nodes=tuple(dataclasses.replace(n, ms=n.ms * factor) for n in self.nodes))

    def unmapped_ms(self) -> float:
        """Time of nodes charged to nothing (should be ~0; shown so a gap in the mapping is visible)."""
        return sum(n.ms for n in self.nodes if not n.charged_to)


def profile_nodes(paths: Sequence[str | Path], profile: DeviceProfile, runs: int = 100, warmup: int = 10,
                  shape: Sequence[int] | None = None) -> list[NodeProfile]:
    """Profile each model ``runs`` times (after ``warmup`` untimed runs) with the profile's session settings,
    models taking turns in chunks so drift hits them alike. Runs on this machine: for a remote profile
    the node times are this host's, with the device's runtime settings."""
    import numpy as np

    from edgekd.latency.runtime import open_session, session_options

    if runs < 1 or warmup < 0:
        raise RunnerError(f"cannot profile {runs} runs after {warmup} warm-up runs",
                          "pass runs >= 1 and warmup >= 0")
    with tempfile.TemporaryDirectory(prefix="edgekd-prof-") as tmp:
        sessions, feeds = [], []
        for i, path in enumerate(paths):
            opts = session_options(profile)
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / f"m{i}")
            opts.optimized_model_filepath = str(Path(tmp) / f"m{i}.opt.onnx")
            sess = open_session(path, profile, opts)
            x = np.random.default_rng(0).standard_normal(_shape(sess, profile, shape)).astype(np.float32)
            sessions.append(sess)
            feeds.append({sess.get_inputs()[0].name: x})
        chunk = max(1, min(20, runs // 5))
        for start in range(0, warmup + runs, chunk):
            for sess, feed in zip(sessions, feeds):
                for _ in range(min(chunk, warmup + runs - start)):
                    sess.run(None, feed)
        out = []
        for i, (path, sess) in enumerate(zip(paths, sessions)):
            events = json.loads(Path(sess.end_profiling()).read_text(encoding="utf-8"))
            optimised = _load_graph(Path(tmp) / f"m{i}.opt.onnx")
            out.append(_build(str(path), events, optimised, _load_graph(Path(path)), warmup))
    return out


def _shape(sess: Any, profile: DeviceProfile, shape: Sequence[int] | None) -> tuple[int, ...]:
    if shape:
        return tuple(int(d) for d in shape)
    dims = sess.get_inputs()[0].shape
    batch = int(profile.measure["batch_size"])
    if any(not (isinstance(d, int) and d > 0) for d in dims[1:]):
        raise RunnerError(f"model input has dynamic dimensions {dims}", "pass shape, e.g. (1, 3, 224, 224)")
    return (dims[0] if isinstance(dims[0], int) and dims[0] > 0 else batch, *dims[1:])


def _load_graph(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def _build(path: str, events: list[dict], optimised: Any, source: Any, warmup: int) -> NodeProfile:
    durs: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    sizes: dict[str, tuple[int, int]] = {}
    runs: list[float] = []
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            runs.append(e["dur"] / 1e3)
        elif e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            durs.setdefault(name, []).append(e["dur"] / 1e3)
            ops[name] = e.get("args", {}).get("op_name", "")
            sizes.setdefault(name, (_elements(e, "input_type_shape"), _elements(e, "output_type_shape")))
    index = _SourceIndex(source)
    sources = {name: index.lookup(name, ops[name]) for name in durs}
    charged = _charge(optimised, sources, ops)
    nodes = tuple(NodeTime(n, ops[n], _iqm(d[warmup:] or d), len(d), sources[n], charged[n], *sizes[n])
                  for n, d in durs.items())
    return NodeProfile(path, _iqm(runs[warmup:] or runs) if runs else 0.0, nodes)


def _elements(event: dict, key: str) -> int:
    """Element count of the first tensor in a profiler event's ``[{"float": [1, 8, 16, 16]}, ...]``."""
    try:
        dims = next(iter(event["args"][key][0].values()))
        return int(math.prod(int(d) for d in dims))
    except (KeyError, IndexError, TypeError, ValueError, StopIteration):
        return 0


def _iqm(values: list[float]) -> float:
    """Mean of the middle half (the interquartile mean): robust to outliers, finer than whole-us medians."""
    ordered = sorted(values)
    cut = len(ordered) // 4
    return statistics.fmean(ordered[cut:len(ordered) - cut])


class _SourceIndex:
    """The file's nodes by name and its tensors by producer, to map optimised names back."""

    def __init__(self, graph: Any) -> None:
        self.nodes = {n.name: n for n in graph.node if n.name}
        self.producer = {out: n for n in graph.node for out in n.output}

    def lookup(self, name: str, op_type: str) -> str | None:
        if op_type in _ENTRY | _EXIT:
            return None  # Q/DQ and reorders are overhead, even when the file has a node of that name
        base = name
        while _SUFFIX.search(base):
            base = _SUFFIX.sub("", base)
        node = self.nodes.get(base) or self.producer.get(base)
        while node is not None and node.op_type in _ACTIVATIONS and node.input and node.input[0] in self.producer:
            node = self.producer[node.input[0]]  # an activation fused into the op that feeds it
        if node is None or (node.op_type in _ENTRY | _EXIT):
            return None
        return node.name or None


def _charge(graph: Any, sources: dict[str, str | None], ops: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """For each profiled node, the file's nodes its time counts towards. Overhead (Q/DQ, reorders,
    inserted transposes) goes to the nearest mapped nodes it feeds or is fed by: quantized ones first,
    downstream first for entry ops (Q, ReorderInput), upstream first for exit ops (DQ, ReorderOutput)."""
    consumers: dict[str, list[Any]] = {}
    producer: dict[str, Any] = {}
    for node in graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
        for t in node.output:
            producer[t] = node

    def overhead(node: Any) -> bool:
        return node.op_type in _ENTRY | _EXIT or (node.op_type in _LAYOUT and sources.get(node.name) is None)

    def reach(start: Any, down: bool) -> list[Any]:
        found, seen, todo = [], {start.name}, [start]
        while todo:
            node = todo.pop()
            nxt = ([c for t in node.output for c in consumers.get(t, [])] if down
                   else [producer[t] for t in node.input if t in producer])
            for n in nxt:
                if n.name in seen:
                    continue
                seen.add(n.name)
                (todo if overhead(n) else found).append(n)
        return found

    by_name = {n.name: n for n in graph.node}
    out: dict[str, tuple[str, ...]] = {}
    for name, src in sources.items():
        node = by_name.get(name)
        if src is not None or node is None or not overhead(node):
            out[name] = (src,) if src is not None else ()
            continue
        sides = [reach(node, down=False), reach(node, down=True)]
        if node.op_type not in _EXIT:
            sides.reverse()
        picked: list[Any] = []
        for keep in (lambda n: is_quantized_op(n.op_type), lambda n: True):
            picked = next(([n for n in side if keep(n) and sources.get(n.name)] for side in sides
                           if any(keep(n) and sources.get(n.name) for n in side)), [])
            if picked:
                break
        out[name] = tuple(sorted({sources[n.name] for n in picked}))
    return out
