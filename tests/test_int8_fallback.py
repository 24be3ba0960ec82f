"""Node-level int8 fallback: the per-node profiler, the name mapping, the exclusion plan and the loop."""

import json

import onnx
import pytest
from onnx import TensorProto, helper

from edgekd.errors import ArtifactError, ConfigError, OutputError
from edgekd.export import ExportRequest, get_exporter
from edgekd.fallback_plan import qdq_edges, quantized_nodes
from edgekd.int8_fallback import FallbackConfig, int8_with_fallback
from edgekd.latency.nodeprofile import _SourceIndex, profile_nodes

CONFIG = {"stem": 8, "widths": [8, 16, 16], "depths": [1, 1, 1], "expands": [2, 2, 2], "kernels": [3, 3, 3]}


@pytest.fixture(scope="module")
def fp32(small_data, tmp_path_factory):
    import torch

    from edgekd.search.spaces import SPACES

    torch.manual_seed(0)
    model = SPACES.get("mbv2").build(CONFIG, small_data.input_shape, small_data.num_classes).eval()
    out = tmp_path_factory.mktemp("fallback-fp32")
    return get_exporter("onnx-fp32")(ExportRequest("s", "student", out, model, small_data.x_val[:1]))


@pytest.fixture(scope="module")
def int8(fp32, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fallback-int8")
    return get_exporter("onnx-int8")(ExportRequest("q", "student", out, calibration=small_data.x_train[:32],
                                                   source=fp32))


def _ops(path, op_types=("Conv", "Gemm", "MatMul")):
    return {n.name: n.op_type for n in onnx.load(path).graph.node if n.op_type in op_types}


def test_profile_times_every_compute_node_and_maps_int8_names_to_fp32_names(fp32, int8, fast_profile):
    fp32_prof, int8_prof = profile_nodes([fp32.path, int8.path], fast_profile, runs=10, warmup=2)
    convs = _ops(fp32.path)
    fp32_costs, int8_costs = fp32_prof.costs(), int8_prof.costs()
    assert set(convs) <= set(fp32_costs) and set(convs) <= set(int8_costs)
    assert all(fp32_costs[n].ms > 0 and int8_costs[n].ms > 0 for n in convs)
    kept = set(int8.details["excluded_nodes"])  # first conv and classifier stay fp32
    for name in convs:
        assert int8_costs[name].quantized == (name not in kept), (name, int8_costs[name].op_types)
    # every kernel's time lands on a node of the file, Q/DQ and layout overhead included
    assert fp32_prof.unmapped_ms() == 0 and int8_prof.unmapped_ms() == 0
    assert sum(c.overhead_ms for c in int8_costs.values()) > 0
    assert all(n.calls == 12 for n in int8_prof.nodes)
    half = int8_prof.scaled(sum(n.ms for n in int8_prof.nodes) / 2)
    assert sum(c.ms for c in half.costs().values()) == pytest.approx(sum(c.ms for c in int8_costs.values()) / 2)


def test_optimised_names_map_back_through_suffixes_and_fused_activations():
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="node_Conv_3"),
         helper.make_node("Relu", ["c"], ["relu"], name="node_relu"),
         helper.make_node("QuantizeLinear", ["relu", "s"], ["q"], name="relu_QuantizeLinear")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("q", TensorProto.UINT8, [1, 1, 4, 4])])
    index = _SourceIndex(graph)
    assert index.lookup("node_Conv_3_token_12", "QLinearConv") == "node_Conv_3"  # QDQ fusion
    assert index.lookup("relu_nchwc", "Conv") == "node_Conv_3"  # NCHWc: named after the fused output
    assert index.lookup("c_nchwc", "Conv") == "node_Conv_3"
    assert index.lookup("relu_QuantizeLinear", "QuantizeLinear") is None  # overhead, charged elsewhere
    assert index.lookup("Transpose_token_7", "Transpose") is None


def test_exporter_keeps_requested_nodes_fp32(fp32, small_data, tmp_path):
    target = sorted(quantized_nodes(_int8_path(fp32, small_data, tmp_path / "a")))[0]
    art = get_exporter("onnx-int8")(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:32],
                                                  source=fp32, options={"nodes_to_exclude": {target: "why"}}))
    assert art.details["excluded_nodes"][target] == "why"
    assert target not in quantized_nodes(art.path, ())
    _assert_fp32_node(art.path, target)


def test_exporter_refuses_unknown_or_malformed_exclusions(fp32, small_data, tmp_path):
    export = get_exporter("onnx-int8")
    with pytest.raises(ConfigError, match="does not have: nope; use node names of the fp32 model"):
        export(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:8], source=fp32,
                             options={"nodes_to_exclude": ["nope"]}))
    with pytest.raises(ConfigError, match="must be a list of node names"):
        export(ExportRequest("q", "student", tmp_path, calibration=small_data.x_train[:8], source=fp32,
                             options={"nodes_to_exclude": "node_Conv_1"}))
    assert not (tmp_path / "q.onnx").exists()


def test_fallback_loop_excludes_requantizes_and_records_reasons(fp32, small_data, fast_profile, tmp_path):
    # margin=1 never counts int8 as faster, node_tolerance=-1 without boundaries makes every quantized node
    # worth excluding, two per round: deterministic whatever this machine's timings are.
    config = FallbackConfig(rounds=2, margin=1.0, node_tolerance=-1.0, node_min_ms=0.0, boundaries=False,
                            max_per_round=2, profile_runs=10, profile_warmup=2)
    result = int8_with_fallback(fp32.path, small_data.x_train[:32], fast_profile, tmp_path, config,
                                name="student-int8")
    assert [len(r.excluded) for r in result.rounds] == [0, 2, 2]
    assert all(b.quantized <= a.quantized - 2 for a, b in zip(result.rounds, result.rounds[1:]))
    repeats = int(fast_profile.measure["repeats"])
    # Each ratio is the median of repeat-by-repeat pairs: those of the round's own run, then of the closing run.
    assert all(r.paired.pairs >= repeats and r.ratio == r.paired.median for r in result.rounds)
    assert all(r.final.pairs >= repeats and r.final_ratio == r.final.median for r in result.rounds)
    assert result.ratio == result.rounds[result.best_round].final.median
    assert f"int8/fp32 latency {result.ratio:.2f} ({result.rounds[result.best_round].final.interval()})" \
        in result.summary()
    assert not result.faster and "still not faster after 2" in result.stopped
    assert result.path == str(tmp_path / "student-int8.onnx")
    onnx.checker.check_model(result.path, full_check=True)
    excluded = result.artifact.details["excluded_nodes"]
    for e in result.excluded:
        assert " ms " in e.reason and excluded[e.node] == e.reason
        # Its weights, not its neighbours, tell: a node kept fp32 between two int8 ones has a DequantizeLinear
        # in front and a QuantizeLinear behind it like an int8 node (quantized_nodes says so), and the rounds'
        # timings decide which nodes those are (a fresh clone failed on one).
        _assert_fp32_node(result.path, e.node)
    summary = result.artifact.details["int8_fallback"]
    assert len(summary["rounds"]) == 3 and summary["faster"] is False
    json.dumps(result.to_dict())


def test_a_round_whose_file_breaks_the_size_budget_is_kept_only_when_none_fits(fp32, small_data, fast_profile,
                                                                              tmp_path):
    def run(rounds, max_bytes, folder):  # deterministic rounds, as above
        config = FallbackConfig(rounds=rounds, margin=1.0, node_tolerance=-1.0, node_min_ms=0.0, boundaries=False,
                                max_per_round=2, profile_runs=10, profile_warmup=2, max_bytes=max_bytes)
        return int8_with_fallback(fp32.path, small_data.x_train[:32], fast_profile, tmp_path / folder, config)

    def fastest(result):
        return min((i for i, r in enumerate(result.rounds) if r.quantized), key=lambda i: result.rounds[i].final_ratio)

    whole = run(0, None, "whole").artifact.size_bytes  # every node int8: the smallest file
    fitted = run(2, whole, "fitted")
    assert fitted.artifact.size_bytes <= whole  # the kept file meets the budget, whichever round ran fastest
    moved = fitted.best_round != fastest(fitted)
    assert moved == any(f"breaks the size budget of {whole / 1024:.1f} KB: round {fitted.best_round}'s file is kept"
                        in n for n in fitted.notes)
    if moved:  # the note says how much faster the round was, and with how much of it left in int8
        quick = fitted.rounds[fastest(fitted)]
        assert any(n.startswith(f"round {fastest(fitted)} ran faster (int8/fp32 latency {quick.final_ratio:.2f}, "
                                f"{quick.quantized} of {fitted.rounds[0].quantized} quantizable node(s) in int8)")
                   for n in fitted.notes)
    nothing_fits = run(2, 0, "none")  # no file can meet it: the fastest round is kept, as without a budget
    assert nothing_fits.best_round == fastest(nothing_fits) and not nothing_fits.notes
    with pytest.raises(ConfigError, match="max_bytes -1 is negative"):
        FallbackConfig(max_bytes=-1)


def test_a_graph_with_nothing_left_in_int8_is_never_the_int8_artifact(fp32, small_data, fast_profile, tmp_path):
    config = FallbackConfig(rounds=3, margin=1.0, node_tolerance=-1.0, node_min_ms=0.0, boundaries=False,
                            profile_runs=10, profile_warmup=2)
    result = int8_with_fallback(fp32.path, small_data.x_train[:32], fast_profile, tmp_path, config)
    assert [r.quantized for r in result.rounds][1:] == [0] and "every quantized node fell back" in result.stopped
    assert result.best_round == 0 and not result.faster and result.excluded == ()
    total = result.rounds[0].quantized
    # the log names the kept file, not the last round's (which has nothing left in int8), and judges it on its
    # own: round 0 may have run faster than fp32 (by less than margin=1), so nothing may say int8 gains nothing
    assert result.summary().startswith(f"int8 file from round 0 of 2, {total} of {total} quantizable node(s) in int8")
    assert f": {result.outcome}; the rounds stopped: every quantized node fell back to fp32 by round 1" \
        in result.summary() and "gains nothing" not in result.summary()


def test_the_kept_rounds_outcome_is_told_apart_from_why_the_rounds_stopped(tmp_path):
    from edgekd.int8_fallback import FallbackResult, FallbackRound
    from edgekd.types import Artifact

    def result(ratio, faster):
        rounds = (FallbackRound(0, (), 5, ratio, 1.0), FallbackRound(1, (), 0, 1.0, 1.0))
        art = Artifact("q", "student", "int8", str(tmp_path / "q.onnx"), "onnx-int8", 18, "", 0)
        return FallbackResult(art, rounds, 0, faster, "every quantized node fell back to fp32 by round 1")

    assert result(0.9, True).summary().endswith("latency 0.90: int8 is faster than fp32; the rounds stopped: "
                                                "every quantized node fell back to fp32 by round 1")
    assert result(0.99, False).outcome == "int8 is faster than fp32, but by less than the margin"
    assert result(1.2, False).outcome == "int8 is not faster than fp32"


def test_a_stop_the_closing_run_undoes_is_said_so_with_the_measurement_that_decides(fp32, small_data,
                                                                                    fast_profile, tmp_path,
                                                                                    monkeypatch):
    """The loop stops on a round's own run saying int8 is faster; the closing run of all rounds decides. The log
    read "int8 is not faster than fp32; the rounds stopped: int8 is faster than fp32 in round 1"."""
    import dataclasses

    import edgekd.int8_fallback as fallback
    from edgekd.types import Ratio

    def run(self):  # round 1 measured faster in its own run...
        self._quantize(0)
        self._quantize(1)
        return [fallback.FallbackRound(0, (), 5, 1.1, 1.0, Ratio(1.1, 1.05, 1.15, 3)),
                fallback.FallbackRound(1, (), 4, 0.9, 1.0, Ratio(0.9, 0.88, 0.92, 3))], \
            "int8 is faster than fp32 in round 1"

    def close(self, rounds):  # ...and not in the closing run
        return [dataclasses.replace(r, final=Ratio(1.0 + r.index / 100, 0.97, 1.17, 12)) for r in rounds]

    monkeypatch.setattr(fallback._Loop, "run", run)
    monkeypatch.setattr(fallback._Loop, "close", close)
    result = int8_with_fallback(fp32.path, small_data.x_train[:8], fast_profile, tmp_path, FallbackConfig(rounds=1))
    assert not result.faster and result.best_round == 0
    assert "int8 is faster than fp32 in round" not in result.summary()
    assert result.summary().endswith("latency 1.00 (95% interval 0.97-1.17x) in the closing run of all 2 rounds: "
                                     "int8 is not faster than fp32; the rounds stopped: round 1's own run measured "
                                     "int8 faster than fp32 (0.90), so no further round was tried, but the closing "
                                     "run of all rounds, which decides, measured 1.01")
    saved = result.artifact.details["int8_fallback"]
    assert saved["stopped"] == result.stopped and saved["decided_by"] == "the closing run of all 2 rounds"


def test_a_profile_is_taken_by_name_or_path_as_validate_takes_it(fp32, small_data, fast_profile_path, tmp_path):
    """A name reached only the note after every round had run, as AttributeError: 'str' has no 'is_local'."""
    result = int8_with_fallback(fp32.path, small_data.x_train[:8], str(fast_profile_path), tmp_path,
                                FallbackConfig(rounds=0))
    assert result.rounds[0].quantized and result.notes == ()
    from edgekd.errors import ProfileError

    with pytest.raises(ProfileError, match="no-such-device"):
        int8_with_fallback(fp32.path, small_data.x_train[:8], "no-such-device", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_the_size_budget_is_held_against_the_file_as_it_ships(fp32, small_data, fast_profile, tmp_path,
                                                              monkeypatch):
    # ``stamp`` adds what the pipeline stamps afterwards; here 64 KB to round 0's file only, which the ratios
    # (patched: round 0 "fastest") would otherwise pick, so only counting the stamp keeps round 1's file.
    import edgekd.int8_fallback as fallback
    from edgekd.onnx_metadata import embedded_metadata, stamp_metadata

    monkeypatch.setattr(fallback, "_ratio", lambda r: 0.5 + r.index / 10)
    stamped = []

    def stamp(art):
        stamped.append(art.path)
        return stamp_metadata(art, {"padding": "x" * 65536 if len(stamped) == 1 else ""})

    config = FallbackConfig(rounds=1, margin=1.0, node_tolerance=-1.0, node_min_ms=0.0, boundaries=False,
                            max_per_round=2, profile_runs=10, profile_warmup=2, max_bytes=60 * 1024)
    result = int8_with_fallback(fp32.path, small_data.x_train[:32], fast_profile, tmp_path, config, stamp=stamp)
    assert len(stamped) == 2 and result.best_round == 1
    assert result.artifact.size_bytes == (tmp_path / "student-int8.onnx").stat().st_size <= 60 * 1024
    assert embedded_metadata(result.path)["padding"] == ""  # the file written is the stamped one
    assert result.notes[0].startswith("round 0 ran faster")


def test_the_fallback_never_writes_over_its_fp32_file(fp32, small_data, fast_profile, tmp_path):
    import shutil

    from edgekd.fsutil import sha256

    mine = tmp_path / "model.onnx"
    shutil.copy(fp32.path, mine)
    with pytest.raises(OutputError, match="over its fp32 model '.*model.onnx'; pick another name or output folder"):
        int8_with_fallback(mine, small_data.x_train[:8], fast_profile, tmp_path, FallbackConfig(rounds=0),
                           name="model")
    assert sha256(mine) == fp32.sha256


def test_an_existing_int8_file_is_replaced_only_with_force(fp32, small_data, fast_profile, tmp_path, monkeypatch):
    """A run's shipped student-int8.onnx, which its manifest records by sha256, was replaced without a word."""
    import importlib

    measuring = importlib.import_module("edgekd.latency.measure")  # the module: edgekd.latency.measure is its function
    shipped = tmp_path / "student-int8.onnx"
    shipped.write_bytes(b"the shipped int8 file")
    with monkeypatch.context() as patch:
        patch.setattr(measuring, "measure", lambda *a, **k: pytest.fail("measured before refusing"))
        with pytest.raises(OutputError, match=f"^'{shipped}' already exists; choose another name or output folder, "
                                              "or pass force=True to replace it$"):
            int8_with_fallback(fp32.path, small_data.x_train[:32], fast_profile, tmp_path, FallbackConfig(rounds=0))
    assert shipped.read_bytes() == b"the shipped int8 file"
    result = int8_with_fallback(fp32.path, small_data.x_train[:32], fast_profile, tmp_path, FallbackConfig(rounds=0),
                                force=True)
    assert result.path == str(shipped) and shipped.read_bytes() != b"the shipped int8 file"


def test_no_fallback_rounds_measures_once(fp32, small_data, fast_profile, tmp_path):
    result = int8_with_fallback(fp32.path, small_data.x_train[:32], fast_profile, tmp_path,
                                FallbackConfig(rounds=0, margin=1.0))
    only = result.rounds[0]
    assert len(result.rounds) == 1 and result.best_round == 0 and only.final_ratio is None and only.final is None
    assert result.ratio == only.paired.median
    saved = result.to_dict()["rounds"][0]
    assert saved["ratio"] == only.paired.median and saved["paired"]["pairs"] == only.paired.pairs


def test_a_round_without_repeat_medians_falls_back_to_the_p50s():
    from edgekd.int8_fallback import FallbackRound
    from edgekd.types import Ratio

    plain = FallbackRound(0, (), 5, int8_p50_ms=0.9, fp32_p50_ms=1.0)
    assert plain.ratio == pytest.approx(0.9) and plain.final_ratio is None
    paired = FallbackRound(0, (), 5, 1.1, 1.0, paired=Ratio(0.95, 0.9, 1.0, 12))
    assert paired.ratio == 0.95  # the whole-run p50s said int8 was slower; the paired repeats say otherwise


def test_missing_or_foreign_fp32_file_is_a_clear_error(small_data, fast_profile, tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        int8_with_fallback(tmp_path / "nope.onnx", small_data.x_train[:8], fast_profile, tmp_path)
    text = tmp_path / "model.onnx"
    text.write_text("not a model")
    with pytest.raises(ArtifactError, match="is not a readable ONNX model"):
        int8_with_fallback(text, small_data.x_train[:8], fast_profile, tmp_path)


def test_config_is_validated():
    with pytest.raises(ConfigError, match="margin 1.5 is not a fraction"):
        FallbackConfig(margin=1.5)
    with pytest.raises(ConfigError, match="max_per_round must be >= 1"):
        FallbackConfig(max_per_round=0)


def test_qdq_edges_join_quantized_neighbours(int8):
    quantized = quantized_nodes(int8.path, int8.details["excluded_nodes"])
    edges = qdq_edges(int8.path, quantized)
    assert edges and all(a in quantized and b in quantized for a, b in edges)
    assert not set(int8.details["excluded_nodes"]) & set(quantized)


def _int8_path(fp32, small_data, folder):
    folder.mkdir()
    return get_exporter("onnx-int8")(ExportRequest("q", "student", folder, calibration=small_data.x_train[:32],
                                                   source=fp32)).path


def _assert_fp32_node(path, name):
    """The node is still there, with its weights as plain fp32 initializers, not dequantized int8."""
    graph = onnx.load(path).graph
    node = next(n for n in graph.node if n.name == name)
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    for tensor in node.input:
        if tensor in inits:
            assert inits[tensor].data_type == TensorProto.FLOAT
        elif tensor in producer and producer[tensor].op_type == "DequantizeLinear":
            assert producer[tensor].input[0] not in inits, f"{name} reads int8 weights {tensor}"
    assert any(inits[t].data_type == TensorProto.FLOAT for t in node.input if t in inits) or node.op_type == "Add"


def test_constant_calibration_inputs_are_refused_before_any_round(fp32, small_data, fast_profile, tmp_path,
                                                                   monkeypatch):
    import sys

    import numpy as np

    from edgekd.errors import DataError

    monkeypatch.setattr(sys.modules["edgekd.latency.measure"], "measure",
                        lambda *a, **k: pytest.fail("measured before refusing"))
    with pytest.raises(DataError, match="the calibration inputs are constant"):
        int8_with_fallback(fp32.path, np.zeros_like(small_data.x_train[:8]), fast_profile, tmp_path)
