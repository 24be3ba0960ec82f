"""Choosing the nodes to keep fp32: reading a QDQ file's int8 regions and the minimum-cut plan."""

import onnx
from onnx import TensorProto, helper

from edgekd.fallback_plan import _best_cut, boundary_ms_per_element, plan_exclusions, qdq_edges, quantized_nodes
from edgekd.int8_fallback import FallbackConfig
from edgekd.latency.nodeprofile import NodeProfile, NodeTime, SourceCost


def _qdq_chain(path):
    """x -> Q/DQ -> conv1 -> Q/DQ -> relu -> Q/DQ -> conv2 -> y: conv1 and relu run in int8 and are joined
    through a Q/DQ pair; conv2's output goes straight to the graph output, so it runs in fp32."""
    def qdq(src, dst):
        return [helper.make_node("QuantizeLinear", [src, "s", "z"], [dst + "_q"], name=dst + "_Q"),
                helper.make_node("DequantizeLinear", [dst + "_q", "s", "z"], [dst], name=dst + "_DQ")]

    nodes = [*qdq("x", "x_dq"),
             helper.make_node("Conv", ["x_dq", "w"], ["c1"], name="conv1"), *qdq("c1", "c1_dq"),
             helper.make_node("Relu", ["c1_dq"], ["r"], name="relu"), *qdq("r", "r_dq"),
             helper.make_node("Conv", ["r_dq", "w"], ["y"], name="conv2")]
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.UINT8, [], [0]),
             helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])], inits)
    onnx.save(helper.make_model(graph), path)
    return path


def test_int8_regions_are_read_from_the_qdq_pattern(tmp_path):
    path = _qdq_chain(tmp_path / "chain.onnx")
    assert quantized_nodes(path) == {"conv1": "Conv", "relu": "Relu"}
    assert quantized_nodes(path, excluded=("relu",)) == {"conv1": "Conv"}
    assert qdq_edges(path, {"conv1", "relu"}) == [("conv1", "relu")]
    assert qdq_edges(path, {"conv1"}) == []  # an edge needs both ends in int8


def test_boundary_rate_is_the_qdq_time_over_the_elements_it_moved():
    def node(name, op, ms, source, elements):
        return NodeTime(name, op, ms, 1, source, (), elements, elements)

    prof = NodeProfile("m.onnx", 1.0, (node("q", "QuantizeLinear", 0.02, None, 100),
                                       node("dq", "DequantizeLinear", 0.01, None, 100),
                                       node("t", "Transpose", 0.01, None, 50),
                                       node("conv", "QLinearConv", 0.5, "conv1", 100)))
    assert boundary_ms_per_element(prof) == 0.04 / 200  # the layout change is overhead, its elements are not Q/DQ
    assert boundary_ms_per_element(NodeProfile("m.onnx", 1.0, ())) == 0.0


def test_best_cut_weighs_gains_against_new_boundaries():
    chain = {("a", "b"): 3.0, ("b", "c"): 3.0}
    assert _best_cut({"a": 5.0, "b": -1.0, "c": 5.0}, chain) == {"a", "b", "c"}  # 9 beats {a, c}: 10 - 12
    assert _best_cut({"a": 5.0, "b": -10.0, "c": 5.0}, chain) == {"a", "c"}  # 10 - 6 beats 0
    assert _best_cut({"a": 1.0, "b": -10.0, "c": 1.0}, chain) == set()


def test_plan_records_why_each_node_is_kept_fp32():
    def cost(name, ms, ops, overhead=0.0):
        return SourceCost(name, ms, overhead, ops, 100, 100)

    quantized = {"a": "Conv", "b": "Conv", "c": "Add"}
    fp32 = {"a": cost("a", 0.010, ("Conv",)), "b": cost("b", 0.050, ("Conv",))}
    int8 = {"a": cost("a", 0.030, ("QLinearConv",), 0.008), "b": cost("b", 0.010, ("QLinearConv",)),
            "c": cost("c", 0.009, ("QLinearAdd",))}
    # 100 elements per edge at 1e-4 ms each: a new boundary costs 0.01 ms, more than c's 0.009 ms gain
    plan = plan_exclusions(quantized, [("a", "b"), ("b", "c")], fp32, int8, 1e-4, FallbackConfig())
    assert [e.node for e in plan] == ["a"]
    assert plan[0].reason.startswith("QLinearConv 0.0300 ms (incl. 0.0080 ms quantize/dequantize/layout) vs "
                                     "Conv 0.0100 ms in fp32")
    both = plan_exclusions(quantized, [("a", "b"), ("b", "c")], fp32, int8, 0.0, FallbackConfig())
    assert {e.node for e in both} == {"a", "c"}
    assert "nothing in fp32 (fused into a neighbouring kernel)" in next(e.reason for e in both if e.node == "c")
    assert plan_exclusions(quantized, [], fp32, int8, 0.0, FallbackConfig(node_min_ms=1.0)) == []
