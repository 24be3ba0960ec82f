"""Which quantized nodes of an int8 QDQ file to keep in fp32, chosen from per-node times.

Reads the file's int8 regions (the nodes that run between a DequantizeLinear and a QuantizeLinear, and the
tensors that join them) and picks, exactly, the set whose fp32 kernels plus the int8/fp32 boundaries cutting
it out would add cost less than its int8 kernels: a maximum-weight closure solved as a minimum s-t cut.
``edgekd.int8_fallback`` runs the rounds (quantize, measure, profile, plan) and decides what ships.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekd.int8_fallback import FallbackConfig
    from edgekd.latency.nodeprofile import NodeProfile, SourceCost

_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Exclusion:
    """A node kept in fp32, with the measurement that put it there."""

    node: str  # the node's name in the fp32 file (and in the int8 file)
    op_type: str  # its op in the file, e.g. "Conv"
    int8_ms: float  # its int8 kernels plus the Q/DQ and layout nodes charged to it, per run
    fp32_ms: float  # the same node in fp32 (0 when onnxruntime fused it into a neighbour)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def quantized_nodes(int8_path: str | Path, excluded: Collection[str] = ()) -> dict[str, str]:
    """{name: op type}, in graph order, of the nodes a QDQ file runs in int8 (an input from a
    DequantizeLinear and every used output into a QuantizeLinear), leaving out ``excluded`` (a node kept
    fp32 between two int8 nodes looks the same from outside)."""
    g = _Graph(int8_path)
    return {n.name: n.op_type for n in g.nodes if n.name not in excluded and g.looks_quantized(n)}


def qdq_edges(int8_path: str | Path, quantized: Collection[str]) -> list[tuple[str, str]]:
    """(producer, consumer) pairs of quantized nodes joined by a tensor (through its Q/DQ pair): the
    places where keeping one side fp32 would add a dequantize or quantize and a layout change."""
    g = _Graph(int8_path)
    edges = []
    for node in g.nodes:
        if node.name in quantized:
            for tensor in node.input:
                p = g.behind(tensor)
                if p is not None and p.name in quantized and (p.name, node.name) not in edges:
                    edges.append((p.name, node.name))
    return edges


class _Graph:
    def __init__(self, path: str | Path) -> None:
        import onnx

        self.nodes = list(onnx.load(str(path), load_external_data=False).graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.nodes:
            for t in n.input:
                self.consumers.setdefault(t, []).append(n)

    def looks_quantized(self, node: Any) -> bool:
        if node.op_type in _QDQ:
            return False
        used = [self.consumers[o] for o in node.output if o in self.consumers]
        return (any(i in self.producer and self.producer[i].op_type == "DequantizeLinear" for i in node.input)
                and bool(used) and all(any(c.op_type == "QuantizeLinear" for c in cs) for cs in used))

    def behind(self, tensor: str) -> Any:
        """The node that computes ``tensor`` behind a chain of Q/DQ; None for graph inputs and weights."""
        node = self.producer.get(tensor)
        while node is not None and node.op_type in _QDQ:
            node = self.producer.get(node.input[0])
        return node


def boundary_ms_per_element(int8: NodeProfile) -> float:
    """What crossing between int8 and fp32 costs per tensor element on this runtime, measured on the
    boundaries the int8 file already has: all quantize/dequantize/layout time over the elements that
    went through a QuantizeLinear or DequantizeLinear."""
    overhead = sum(n.ms for n in int8.nodes if n.source is None)
    elements = sum(n.out_elements for n in int8.nodes if n.op_type in _QDQ)
    return overhead / elements if elements else 0.0


def plan_exclusions(quantized: dict[str, str], edges: list[tuple[str, str]], fp32: dict[str, SourceCost],
                    int8: dict[str, SourceCost], rate: float, config: FallbackConfig) -> list[Exclusion]:
    """Which quantized nodes to keep fp32 next: the set S that maximises the estimated saving
    sum over S of (int8 cost - fp32 cost * (1 + tolerance)) - rate * (elements crossing the new int8/fp32
    boundaries S cuts along ``edges``), found exactly as a minimum s-t cut. A node's int8 cost includes the
    quantize/dequantize/layout time charged to it, so boundaries that disappear count as saved. Nothing is
    picked unless the saving exceeds ``node_min_ms``; past ``max_per_round``, the nodes of S that gain most
    on their own are kept."""
    def ms(costs: dict[str, SourceCost], n: str) -> float:
        c = costs.get(n)
        return c.ms if c is not None else 0.0

    def size(n: str) -> int:
        c = fp32.get(n) or int8.get(n)
        return c.out_elements if c is not None else 0

    gain = {n: ms(int8, n) - ms(fp32, n) * (1.0 + config.node_tolerance) for n in quantized}
    cost = {(a, b): rate * size(a) for a, b in edges}
    chosen = _best_cut(gain, cost)
    cut = sum(c for (a, b), c in cost.items() if (a in chosen) != (b in chosen))
    if sum(gain[n] for n in chosen) - cut <= config.node_min_ms:
        return []
    group = tuple(n for n in quantized if n in chosen)  # graph order
    if config.max_per_round is not None and len(group) > config.max_per_round:
        keep = set(sorted(group, key=lambda n: -gain[n])[: config.max_per_round])
        group = tuple(n for n in group if n in keep)
        cut = sum(c for (a, b), c in cost.items() if (a in keep) != (b in keep))
    return [_exclusion(n, quantized[n], group, fp32, int8, cut) for n in group]


def _best_cut(gain: dict[str, float], cost: dict[tuple[str, str], float]) -> set[str]:
    """The set S maximising sum(gain[S]) - sum(cost of edges with one end in S): a minimum s-t cut
    (source side = S) with s->n of capacity gain[n] > 0, n->t of -gain[n] > 0, and each edge both ways."""
    cap: dict[str, dict[str, float]] = {n: {} for n in [*gain, "<s>", "<t>"]}
    for n, g in gain.items():
        if g > 0:
            cap["<s>"][n] = g
        elif g < 0:
            cap[n]["<t>"] = -g
    for (a, b), c in cost.items():
        cap[a][b] = cap[a].get(b, 0.0) + c
        cap[b][a] = cap[b].get(a, 0.0) + c
    while True:  # Edmonds-Karp: augment along shortest residual paths
        parent = {"<s>": "<s>"}
        queue = ["<s>"]
        for u in queue:
            for v, c in cap[u].items():
                if c > 1e-12 and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if "<t>" not in parent:
            return {n for n in parent if n in gain}  # reachable from s in the residual graph
        path, v = [], "<t>"
        while v != "<s>":
            path.append((parent[v], v))
            v = parent[v]
        flow = min(cap[u][v] for u, v in path)
        for u, v in path:
            cap[u][v] -= flow
            cap[v][u] = cap[v].get(u, 0.0) + flow


def _exclusion(node: str, op: str, group: tuple[str, ...], fp32: dict[str, SourceCost],
               int8: dict[str, SourceCost], cut_ms: float) -> Exclusion:
    q, f = int8.get(node), fp32.get(node)
    q_ms, f_ms = (q.ms if q else 0.0), (f.ms if f else 0.0)
    mine = (f"{'+'.join(q.op_types) if q else op} {q_ms:.4f} ms (incl. {q.overhead_ms if q else 0.0:.4f} ms "
            "quantize/dequantize/layout) vs " + (f"{'+'.join(f.op_types)} {f_ms:.4f} ms in fp32" if f else
                                                  "nothing in fp32 (fused into a neighbouring kernel)"))
    if len(group) > 1:
        g_q = sum(int8[n].ms for n in group if n in int8)
        g_f = sum(fp32[n].ms for n in group if n in fp32)
        mine += (f"; kept fp32 together with {len(group) - 1} other node(s): {g_q:.4f} ms int8 vs {g_f:.4f} ms "
                 f"fp32 + ~{cut_ms:.4f} ms new int8/fp32 boundaries")
    elif cut_ms:
        mine += f"; + ~{cut_ms:.4f} ms new int8/fp32 boundaries"
    return Exclusion(node, op, round(q_ms, 5), round(f_ms, 5), mine)
