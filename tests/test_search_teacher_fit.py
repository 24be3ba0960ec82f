import importlib

import pytest
from test_search_ruler import batch_device, batched

from edgekd.search import SearchConfig, search
from edgekd.search.ruler import Ruler
from edgekd.search.teacher_fit import TeacherFit, teacher_fit
from edgekd.types import Budget

CFG = SearchConfig(candidates=6, measure_top=2, rounds=1, probe_batch=16, anchors=3)
WARNING = "warning: search: the teacher as it is (fp32) already meets the budget"


def _measured(teacher, data, profile, budget):
    with Ruler(profile, data.input_shape, data.num_classes) as ruler:
        return teacher_fit(teacher.module, data.input_shape, budget, ruler), ruler


def test_a_teacher_within_both_limits_is_measured_on_the_search_scale(teacher, small_data, fast_profile):
    fit, ruler = _measured(teacher, small_data, fast_profile, Budget(latency_ms=50, max_size_kb=500))
    assert fit is not None and 0 < fit.latency_ms <= 50
    # the tiny teacher's fp32 file: two convolutions and a linear layer, about 20 KB
    assert 10 * 1024 < fit.size_bytes < 40 * 1024
    assert len(ruler.readings) >= 1  # timed beside the reference network
    message = fit.message(Budget(latency_ms=50, max_size_kb=500))
    assert message.startswith(WARNING) and "(--budget-ms 50)" in message and "(--max-size-kb 500)" in message


def test_the_check_leaves_a_teacher_in_the_mode_it_came_in(teacher, small_data, fast_profile):
    module = teacher.module
    module.train()
    try:
        _measured(teacher, small_data, fast_profile, Budget(latency_ms=50))
        assert module.training
    finally:
        module.eval()


def test_a_teacher_over_the_latency_budget_is_not_reported(teacher, small_data, fast_profile):
    fit, _ = _measured(teacher, small_data, fast_profile, Budget(latency_ms=1e-6))
    assert fit is None


def test_a_teacher_whose_weights_break_the_size_limit_is_not_exported(teacher, small_data, fast_profile,
                                                                      monkeypatch):
    quick = importlib.import_module("edgekd.latency.quick_export")
    monkeypatch.setattr(quick, "export_fixed", lambda *a, **k: pytest.fail("exported a teacher over the limit"))
    fit, ruler = _measured(teacher, small_data, fast_profile, Budget(latency_ms=50, max_size_kb=4))
    assert fit is None and ruler.readings == []


def test_the_weight_floor_counts_each_weight_once_and_stays_under_the_file(teacher, small_data, tmp_path):
    import torch

    from edgekd.latency.quick_export import export_fixed
    from edgekd.search.teacher_fit import _weight_bytes

    shared = torch.nn.Linear(4, 4)
    assert _weight_bytes(torch.nn.Sequential(shared, torch.nn.ReLU(), shared)) == 4 * 16
    path = export_fixed(teacher.module, (1, *small_data.input_shape), tmp_path / "t.onnx")
    assert 0 < _weight_bytes(teacher.module) < path.stat().st_size


def test_a_size_limit_alone_needs_no_measurement(teacher, small_data, fast_profile):
    fit, ruler = _measured(teacher, small_data, fast_profile, Budget(max_size_kb=500))
    assert fit == TeacherFit(fit.size_bytes, None) and ruler.readings == []
    assert "ms measured" not in fit.message(Budget(max_size_kb=500))


def test_no_budget_is_no_check(teacher, small_data, fast_profile):
    fit, ruler = _measured(teacher, small_data, fast_profile, Budget())
    assert fit is None and ruler.readings == []


def test_a_teacher_the_quick_exporter_cannot_trace_skips_the_advice(teacher, small_data, fast_profile,
                                                                   monkeypatch):
    def untraceable(*_a, **_k):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(importlib.import_module("edgekd.latency.quick_export"), "export_fixed", untraceable)
    fit, ruler = _measured(teacher, small_data, fast_profile, Budget(latency_ms=50))
    assert fit is None and ruler.readings == []


def test_search_warns_before_scoring_when_the_teacher_already_fits(teacher, small_data, fast_profile):
    lines: list[str] = []
    search(teacher.module, small_data, fast_profile, Budget(latency_ms=50, max_size_kb=500), CFG,
           progress=False, log=lines.append)
    warned = [i for i, line in enumerate(lines) if line.startswith(WARNING)]
    scored = [i for i, line in enumerate(lines) if line.startswith("search: scored")]
    assert len(warned) == 1 and warned[0] < scored[0]


def test_a_pt2_teacher_is_checked_through_the_module_its_program_runs(teacher, small_data, fast_profile, tmp_path):
    """A .pt2 teacher comes wrapped (no ``modules()``): the check used to fail with an AttributeError."""
    import numpy as np
    import torch

    from edgekd.teacher import load_teacher

    x = torch.from_numpy(np.ascontiguousarray(small_data.x_val[:2]))
    program = torch.export.export(teacher.module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "teacher.pt2"))
    exported = load_teacher(str(tmp_path / "teacher.pt2"))
    assert not isinstance(exported.module, torch.nn.Module)  # the wrapper, as search receives it
    lines: list[str] = []
    search(exported.module, small_data, fast_profile, Budget(latency_ms=50, max_size_kb=500), CFG,
           progress=False, log=lines.append)
    assert any(line.startswith(WARNING) for line in lines)  # the program's module exports and is timed
    with Ruler(fast_profile, small_data.input_shape, small_data.num_classes) as ruler:
        assert teacher_fit(object(), small_data.input_shape, Budget(latency_ms=50), ruler) is None
    from edgekd.search.teacher_fit import _weight_bytes

    assert _weight_bytes(exported.module) == _weight_bytes(teacher.module) > 0  # the floor holds for programs too


def test_the_teacher_is_timed_at_the_profiles_batch(teacher, small_data, fast_profile, monkeypatch):
    """The candidates are timed at the profile's batch, as validate times them: so is the teacher beside them."""
    device = batch_device(monkeypatch)
    with Ruler(batched(fast_profile), small_data.input_shape, small_data.num_classes) as ruler:
        assert teacher_fit(teacher.module, small_data.input_shape, Budget(latency_ms=50), ruler) is not None
    assert device.fed and set(device.fed) == {2}


def _through_numpy(module):
    """``module`` with its logits passed through numpy: the TorchScript tracer records them as a constant, a
    file with no input, which the device refused to time, and the refusal stopped the run."""
    import numpy as np
    import torch

    class ThroughNumpy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, x):
            return torch.from_numpy(np.asarray(self.inner(x).detach()))

    return ThroughNumpy().eval()


def test_a_teacher_the_quick_exporter_traces_to_a_constant_is_exported_as_its_own_file_is(teacher, small_data,
                                                                                          fast_profile):
    """Was: "model '.../teacher.onnx' has 0 inputs (); ... export the model with one input", the run stopped
    by advice; with a size limit alone, a 0.1 KB constant reported as the teacher's file."""
    with Ruler(fast_profile, small_data.input_shape, small_data.num_classes) as ruler:
        fit = teacher_fit(_through_numpy(teacher.module), small_data.input_shape,
                          Budget(latency_ms=50, max_size_kb=500), ruler)
    assert fit is not None and fit.latency_ms is not None
    assert 10 * 1024 < fit.size_bytes < 40 * 1024  # the teacher's weights, not a constant's few bytes


def test_a_teacher_that_cannot_be_timed_skips_the_advice_and_says_so(teacher, small_data, fast_profile,
                                                                     monkeypatch):
    from edgekd.errors import RunnerError

    def fails(self, paths, sample_shape=None):
        raise RunnerError("model 'teacher.onnx' has 0 inputs ()", "export the model with one input")

    monkeypatch.setattr(Ruler, "measure", fails)
    lines: list[str] = []
    with Ruler(fast_profile, small_data.input_shape, small_data.num_classes) as ruler:
        assert teacher_fit(teacher.module, small_data.input_shape, Budget(latency_ms=50), ruler) is None
        fit = teacher_fit(teacher.module, small_data.input_shape, Budget(latency_ms=50), ruler, lines.append)
    assert fit is None
    assert lines == ["search: the teacher itself is not checked against the budget (advice only: model "
                     "'teacher.onnx' has 0 inputs (); export the model with one input); the search goes on, and "
                     "validation measures it"]


def test_a_teacher_whose_files_both_lose_the_image_skips_the_advice_and_says_so(teacher, small_data, fast_profile,
                                                                                 monkeypatch):
    import edgekd.search.teacher_fit as teacher_fit_module

    monkeypatch.setattr(teacher_fit_module, "_inputs", lambda path: 0)  # both exports: a constant, no input
    lines: list[str] = []
    with Ruler(fast_profile, small_data.input_shape, small_data.num_classes) as ruler:
        fit = teacher_fit(teacher.module, small_data.input_shape, Budget(latency_ms=50), ruler, lines.append)
    assert fit is None
    assert lines == ["search: the teacher itself is not checked against the budget (advice only: the teacher's ONNX "
                     "file takes 0 inputs, not the image); the search goes on, and validation measures it"]


def test_the_size_is_the_teacher_file_the_run_ships_stamped(teacher, small_data, fast_profile, tmp_path):
    """The warning said 6.7 KB of a quick TorchScript export where the run wrote teacher-fp32.onnx of 7.4 KB."""
    from edgekd.export import ExportRequest, get_exporter
    from edgekd.onnx_metadata import stamp_data_metadata

    with Ruler(fast_profile, small_data.input_shape, small_data.num_classes) as ruler:
        fit = teacher_fit(teacher.module, small_data.input_shape, Budget(max_size_kb=500), ruler, data=small_data)
    art = get_exporter("onnx-fp32")(ExportRequest("teacher-fp32", "teacher", tmp_path, teacher.module,
                                                  small_data.x_val[:1]))
    assert fit is not None and fit.size_bytes == stamp_data_metadata(art, small_data).size_bytes


def test_an_onnx_teacher_is_checked_by_its_own_file(teacher, small_data, fast_profile, tmp_path):
    """An .onnx teacher skipped the check without a word: compress said the teacher met the budget only at the
    end of the run."""
    from edgekd.export import ExportRequest, get_exporter
    from edgekd.onnx_metadata import stamp_data_metadata
    from edgekd.teacher import load_teacher

    art = get_exporter("onnx-fp32")(ExportRequest("mine", "teacher", tmp_path, teacher.module, small_data.x_val[:1]))
    onnx_teacher = load_teacher(str(tmp_path / "mine.onnx"))
    onnx_teacher.module.bind(small_data)
    lines: list[str] = []
    search(onnx_teacher.module, small_data, fast_profile, Budget(latency_ms=50, max_size_kb=500), CFG,
           progress=False, log=lines.append)
    (said,) = [line for line in lines if line.startswith(WARNING)]
    shipped = stamp_data_metadata(art, small_data).size_bytes  # as the run copies and stamps it
    assert f"{shipped / 1024:.1f} KB (--max-size-kb 500)" in said and "ms measured (--budget-ms 50)" in said


def test_a_teacher_that_cannot_be_checked_is_said_to_be_unchecked(small_data, fast_profile):
    lines: list[str] = []
    with Ruler(fast_profile, small_data.input_shape, small_data.num_classes) as ruler:
        assert teacher_fit(object(), small_data.input_shape, Budget(latency_ms=50), ruler, lines.append) is None
    assert lines == ["search: the teacher itself is not checked against the budget (advice only: a teacher of type "
                     "object is not exported here); the search goes on, and validation measures it"]
