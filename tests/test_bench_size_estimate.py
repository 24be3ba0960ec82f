"""benchmarks/size_estimate.py: the summary reads the ratios it is given, per space and resolution."""

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("size_estimate")


def _row(space, res, file, estimate, old):
    return {"space": space, "resolution": res, "config": {}, "params": 1, "file_bytes": file,
            "estimate": estimate, "old_estimate": old}


def test_report_groups_by_space_and_resolution_and_counts_the_share_within_5pct(bench):
    rows = [_row("mbv2", 16, 1000, 1000, 800), _row("mbv2", 16, 1000, 1100, 800),
            _row("resnet", 32, 2000, 1960, 2100), _row("mbv2", 32, 500, 490, 400)]
    out = bench.report(rows)
    assert list(out["groups"]) == ["mbv2 16px", "mbv2 32px", "resnet 32px"]
    mbv2 = out["groups"]["mbv2 16px"]
    assert mbv2["n"] == 2 and mbv2["estimate"]["max"] == pytest.approx(1.1)
    assert mbv2["estimate"]["within_5pct"] == pytest.approx(0.5) and mbv2["old_estimate"]["within_5pct"] == 0
    assert out["overall"]["estimate"]["min"] == pytest.approx(0.98)
    md = bench.markdown({"n": 4, "seed": 0, "seconds": 1.0, **out})
    assert "| mbv2 16px | 2 | 1.000 | 1.050 | 1.100 | 50% | 0.800 | 0.800 | 0.800 | 0% |" in md


def test_fp32_files_get_a_table_of_their_own_and_older_records_have_none(bench):
    rows = [{**_row("mbv2", 16, 1000, 1000, 800), "fp32_file_bytes": 4000, "fp32_estimate": 4400,
             "fp32_old_estimate": 4800},
            {**_row("mbv2", 16, 1000, 1000, 800), "fp32_file_bytes": 4000, "fp32_estimate": 4000,
             "fp32_old_estimate": 4800}]
    out = bench.report(rows)
    assert out["groups"]["mbv2 16px"]["fp32_estimate"]["max"] == pytest.approx(1.1)
    md = bench.markdown({"n": 2, "seed": 0, "seconds": 1.0, **out})
    assert "| mbv2 16px | 2 | 1.000 | 1.050 | 1.100 | 50% | 1.200 | 1.200 | 1.200 | 0% |" in md.split("### fp32")[1]
    older = bench.report([_row("mbv2", 16, 1000, 1000, 800)])
    assert "fp32_estimate" not in older["overall"]
    assert "### fp32" not in bench.markdown({"n": 1, "seed": 0, "seconds": 1.0, **older})


def test_the_old_fp32_estimate_is_what_the_search_used_before(bench):
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert bench.old_fp32_estimate(model) == 4 * (40 + 10) + 200 * 4 + 2048  # the Sequential is a module too


def test_the_old_estimate_is_what_the_search_used_before(bench, small_data):
    """Weights + 9 bytes an output channel + 1.4 KB a layer + 2 KB, for a model with one of each."""
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert bench.parameter_count_estimate(model) == 2048 + (36 + 36 + 1400) + (8 + 18 + 1400)
