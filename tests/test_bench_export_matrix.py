"""benchmarks/export_matrix.py: one cell per path (pass, named failure), the interleaved speed rounds and both
tables, on a tiny model, so the benchmark cannot rot silently."""


import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("export_matrix")


@pytest.fixture(scope="module")
def tiny(small_data):
    import torch

    from edgekd.search.spaces import SPACES

    torch.manual_seed(0)
    space = SPACES.get("mbv2")
    return space.build(space.smallest(), small_data.input_shape, small_data.num_classes).eval()


def test_cells_are_checked_measured_and_tabled(bench, tiny, small_data, fast_profile, tmp_path):
    from edgekd.validate import artifact_from_file

    fp32 = bench.run_cell("onnx-fp32", tiny, small_data, tmp_path, fast_profile, name="tiny")
    assert fp32["status"] == "pass", fp32["reasons"]
    assert fp32["checks"] == {"export": True, "checker": True, "parity": True}
    assert fp32["max_abs_diff"] <= 1e-3 and fp32["top1_agreement"] == 1.0 and fp32["size_bytes"] > 0
    assert 0 <= fp32["accuracy"] <= 1 and fp32["accuracy"] == fp32["torch_accuracy"]
    int8 = bench.run_cell("onnx-int8", tiny, small_data, tmp_path, fast_profile,
                          source=artifact_from_file(fp32["path"]), name="tiny")
    assert int8["precision"] == "int8" and int8["checks"]["checker"] and "parity" in int8["checks"]
    bench.measure_speed([fp32, int8], fast_profile, (1, *small_data.input_shape), rounds=2)
    assert len(int8["speedup_rounds"]) == 2 and int8["speedup"] > 0 and "speed" in int8["checks"]
    assert int8["status"] == ("pass" if all(int8["checks"].values()) else "FAIL")
    inc = {"exporter": "inc", "status": "n/a", "reasons": ["not available: test"], "checks": {}}
    settings = {"profile": "fast-test", "epochs": 0, "qat_epochs": 0, "rounds": 2, "inc_tolerable_loss": 0.01}
    rows = [{"name": "tiny", "description": "d", "parameters": 1}]
    out = bench.assemble(settings, ["onnx-fp32", "onnx-int8", "inc"], rows, {"tiny": [fp32, int8, inc]},
                         bench.machine(), 1.0)
    assert out["int8_vs_inc"][0]["onnx_int8"]["speedup"] == int8["speedup"]
    md = bench.markdown(out)
    assert "| tiny | pass, fp32" in md and "not available: test" in md and "onnx-int8 speed-up" in md


def test_a_failing_export_names_its_reason(bench, tiny, small_data, fast_profile, tmp_path):
    cell = bench.run_cell("onnx-int8", tiny, small_data, tmp_path, fast_profile, name="tiny")  # no fp32 source
    assert cell["status"] == "FAIL" and "export" not in cell["checks"]
    assert cell["reasons"] == [cell["reasons"][0]] and "needs an fp32 ONNX source" in cell["reasons"][0]
