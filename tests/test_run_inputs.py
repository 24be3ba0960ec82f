"""A run's teacher and data passed in memory through the Python API, and the options refused with them."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import jsonschema
import pytest
import torch
from conftest import QUICK_PROXY

from edgekd.data import recorded_data
from edgekd.errors import ConfigError, ModelError
from edgekd.pipeline import CompressConfig, compress
from edgekd.profiles import load_profile
from edgekd.teacher import from_module


def test_compress_takes_a_module_and_a_dataset(teacher, small_data, fast_profile_path, tmp_path):
    mine = teacher.module
    mine.train()  # the caller's mode, which the run must leave alone
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    try:
        # a pathlib.Path and a loaded profile, as notebooks pass them: the manifest could not hold them, and
        # writing it at the end failed the whole run
        result = compress(CompressConfig(out=tmp_path / "out", teacher=mine, data=small_data,
                                         profile=load_profile(fast_profile_path), budget_ms=50.0, max_size_kb=100.0,
                                         candidates=6, epochs=1, proxy=QUICK_PROXY, progress=False))
        assert mine.training
        assert all(torch.equal(before[k], v) for k, v in mine.state_dict().items())
    finally:
        mine.eval()
    manifest = result.manifest
    assert re.fullmatch(r"in-memory module [\w.]+\.TinyNet \(Python API\)", manifest["teacher"]["source"])
    assert manifest["recipe"]["teacher"] is None and manifest["recipe"]["data"] is None  # no path to record
    assert (manifest["recipe"]["out"], manifest["recipe"]["profile"]) == (str(tmp_path / "out"),
                                                                          str(fast_profile_path))
    assert manifest["data"] == small_data.describe()
    own = recorded_data(manifest)  # what gate and validate --manifest measure accuracy on
    assert (own.source, own.resolution) == ("digits", small_data.input_shape[-1])
    assert (tmp_path / "out" / "student-int8.onnx").is_file()
    schema = json.loads((Path(__file__).parents[1] / "edgekd" / "schemas" / "manifest-v1.schema.json").read_text())
    jsonschema.validate(json.loads((tmp_path / "out" / "manifest.json").read_text()), schema)


def test_in_memory_teacher_runs_like_the_same_model_from_files(teacher, small_data):
    x = torch.from_numpy(small_data.x_val[:4])
    copied = from_module(teacher.module)
    assert copied.module is not teacher.module and not copied.module.training
    with torch.inference_mode():
        assert torch.equal(copied.module(x), teacher.module(x))


def test_a_half_precision_teacher_is_run_as_float32_and_left_as_it_was(teacher, small_data):
    half = from_module(teacher.module).module.half()
    copied = from_module(half)
    assert next(half.parameters()).dtype == torch.float16  # the caller's module, untouched
    assert next(copied.module.parameters()).dtype == torch.float32
    with torch.inference_mode():
        out = copied.module(torch.from_numpy(small_data.x_val[:4]))
    assert out.dtype == torch.float32 and out.shape == (4, 10)


def test_a_module_that_cannot_be_copied_is_refused(teacher):
    class Locked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()

    with pytest.raises(ModelError, match="cannot be copied.*file.py:factory"):
        from_module(Locked())


@pytest.mark.parametrize("kwargs, message", [
    (dict(teacher=3), "teacher is an int, not a torch.nn.Module"),
    (dict(teacher=torch.nn.Linear(2, 2), weights="w.pt"), "weights are given for a teacher that is already"),
    (dict(data=[1, 2]), "data is a list, not a path or an edgekd Dataset"),
])
def test_inputs_of_the_wrong_kind_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CompressConfig(**kwargs)


def test_a_loaded_teacher_is_taken_as_the_files_it_was_loaded_from(teacher_files, tmp_path, monkeypatch):
    """CompressConfig(teacher=load_teacher(...)) was refused, though search() and distill() take it, and its
    module alone was recorded as in memory: a later gate or --distilled run asked for the teacher again."""
    from edgekd.pipeline.config import config_fields
    from edgekd.run_inputs import recipe
    from edgekd.teacher import load_teacher
    from edgekd.teacher_spec import teacher_origin

    module, weights = teacher_files
    monkeypatch.chdir(module.parent)
    loaded = load_teacher(f"{module.name}:build", weights=weights.name)  # relative paths, as typed in a notebook
    monkeypatch.chdir(tmp_path)  # and named from another folder: the files are recorded resolved
    config = CompressConfig(teacher=loaded)
    assert (config.teacher, config.weights) == (f"{module}:build", str(weights))
    assert teacher_origin(config.teacher, config.weights) == loaded.origin
    recorded = recipe(config, config_fields())
    assert (recorded["teacher"], recorded["weights"]) == (f"{module}:build", str(weights))
    with pytest.raises(ConfigError, match=r"^weights are given for a Teacher, which is loaded with its weights"):
        CompressConfig(teacher=loaded, weights=str(weights))


def test_a_teacher_changed_since_it_was_loaded_is_refused_and_one_of_no_files_is_its_module(teacher_files,
                                                                                           small_data):
    from edgekd.teacher import from_module, load_teacher

    module, weights = teacher_files
    loaded = load_teacher(f"{module}:build", weights=str(weights))
    with torch.no_grad():
        next(loaded.module.parameters()).add_(1.0)  # trained further in the notebook: not what the files hold
    with pytest.raises(ConfigError, match=r"^the Teacher's module has changed since load_teacher read it from .*; "
                                          r"pass teacher=T.module"):
        CompressConfig(teacher=loaded)
    held = from_module(loaded.module)
    assert CompressConfig(teacher=held).teacher is held.module  # recorded as a module in memory, as it is


def test_paths_given_as_path_objects_are_taken_as_their_strings(small_data, tmp_path):
    import numpy as np

    np.savez(tmp_path / "d.npz", x=small_data.x_train[:40], y=small_data.y_train[:40])
    (tmp_path / "t.pt2").write_bytes(b"")
    config = CompressConfig(out=tmp_path / "out", data=tmp_path / "d.npz", teacher=tmp_path / "t.pt2")
    assert (config.out, config.data, config.teacher) == tuple(str(tmp_path / n) for n in ("out", "d.npz", "t.pt2"))


def test_a_loaded_profile_is_recorded_by_its_name_or_its_file(fast_profile_path):
    from edgekd.pipeline.config import config_fields
    from edgekd.run_inputs import recipe

    for loaded, recorded in ((load_profile("host-cpu-1t"), "host-cpu-1t"),
                             (load_profile(fast_profile_path), str(fast_profile_path))):
        assert recipe(CompressConfig(profile=loaded), config_fields())["profile"] == recorded


def test_a_setting_a_manifest_cannot_hold_is_refused_before_any_work():
    import numpy as np

    with pytest.raises(ConfigError, match=r"^lr is a float32, which a run's records cannot hold; pass lr=0.25"):
        CompressConfig(lr=np.float32(0.25))


@pytest.mark.parametrize("option", [dict(resolution=8), dict(normalize="none"), dict(channels=3)])
def test_loading_options_with_a_dataset_passed_in_are_refused(small_data, option):
    with pytest.raises(ConfigError, match="apply when edgekd loads the data.*load_data"):
        CompressConfig(data=small_data, **option)


# --- a teacher fed other preprocessing than it was trained with ---------------------------------------------

def _untrained(small_data):
    from edgekd.search.spaces import SPACES

    torch.manual_seed(3)
    return SPACES.get("resnet").build({"stem": 8, "widths": [8, 8, 8], "depths": [1, 1, 1]},
                                      small_data.input_shape, small_data.num_classes)


def test_a_teacher_at_chance_on_the_data_is_refused_before_any_work(small_data, tmp_path):
    from edgekd.errors import DataError
    from edgekd.run_inputs import run_teacher

    config = CompressConfig(out=str(tmp_path / "out"), teacher=_untrained(small_data), data=small_data)
    with pytest.raises(DataError, match=r"the teacher scores \d+\.\d% on 179 validation images of 'digits', about "
                                        r"chance \(10\.0%\); feed it what it was trained on: --normalize"):
        run_teacher(config, small_data, lambda _m: None)
    with pytest.raises(DataError, match="about chance"):
        compress(config)
    assert not (tmp_path / "out").exists()


def test_with_unlabelled_data_a_teacher_at_chance_is_only_reported(small_data):
    from edgekd.run_inputs import run_teacher

    said = []
    run_teacher(CompressConfig(teacher=_untrained(small_data), data=small_data, labels=False), small_data, said.append)
    assert any(line.startswith("warning: the teacher scores") and "if the labels are real" in line for line in said)


def test_a_working_teacher_reports_its_accuracy(teacher, small_data):
    from edgekd.run_inputs import run_teacher

    said = []
    run_teacher(CompressConfig(teacher=teacher.module, data=small_data), small_data, said.append)
    line = next(s for s in said if s.startswith("teacher: "))
    assert re.fullmatch(r"teacher: \d+\.\d% on 179 validation images \(chance: 10\.0%\)", line)
    assert float(line.split()[1].rstrip("%")) > 50


# --- options that cannot apply, and recipes of the wrong types ----------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(weights="teacher.pt"), "--weights is given without --teacher, so the weights have no model to load into; "
                                 "pass --teacher"),
    (dict(data=""), "--data is empty"),
    (dict(teacher=" "), "--teacher is empty; pass file.py:factory, a .pt2 or an .onnx path"),
    (dict(teacher="t.py:build", weights=""), "--weights is empty"),
    (dict(losses="hint:1", hint_student="layer3"), "--hint-student is given without --hint-teacher; pass "
                                                   "--hint-teacher too"),
    (dict(hint_teacher="layer3"), "--hint-teacher is given without --hint-student"),
    (dict(hint_student="a,b", hint_teacher="c"), "--hint-student names 2 modules and --hint-teacher 1"),
    (dict(hint_student=[1], hint_teacher="c"), "hint_student is a list of [1], not of names; pass names as a "
                                               "string, e.g. 'layer3,layer4', or a list of them"),
    (dict(hint_student=3, hint_teacher="c"), "hint_student is an int, not a string"),
    (dict(space=[]), "space is a list of [], not of names; pass names as a string, e.g. 'mbv2,resnet'"),
    (dict(space=3), "space is an int, not a string"),
    # only Python can pass these, and they were taken as given: force="yes" as true
    (dict(profile=1), "profile is an int, not a profile name or .toml path; pass profile as a string"),
    (dict(out=3), "out is an int, not a path"),
    (dict(distilled=3), "distilled is an int, not a path"),
    (dict(force="yes"), "force must be true or false, got 'yes'; pass a boolean"),
    (dict(progress="no"), "progress must be true or false, got 'no'"),
    (dict(ort=1), "ort must be true or false, got 1"),
    # "false" (an env var, a YAML value) is truthy: full-range QAT, which the README warns of, was switched on
    (dict(qat_full_range="false", qat_epochs=1, epochs=2), "qat_full_range must be true or false, got 'false'"),
    (dict(qat_full_range=1, qat_epochs=1, epochs=2), "qat_full_range must be true or false, got 1"),
    (dict(augment="no"), "augment must be true or false, got 'no'"),
    # a .pt2 program took --weights and went on without reading them, even a file that did not exist
    (dict(teacher="teacher.pt2", weights="does-not-exist.pt"), "teacher 'teacher.pt2' is a torch.export program, "
                                                                "which holds its own weights; drop --weights"),
    (dict(teacher="model.ONNX", weights="w.pt"), "teacher 'model.ONNX' is an ONNX model, which holds its own weights"),
    # refused only after the data, the teacher and its export had been loaded
    (dict(search_file="missing.json"), "search file 'missing.json' does not exist; run `edgekd search --out FILE`"),
    (dict(search_file=" "), "--search is empty"),
    (dict(search_file="."), "search file '.' is a folder, not a file"),
    # refused only after the data, the teacher's score and export (README: "refused before any work")
    (dict(teacher="t.onnx", space="mbv2,pruned"), "the 'pruned' space (--space mbv2,pruned) cuts channels from the "
                                                  "teacher's own layers, and teacher 't.onnx' is an ONNX model, which "
                                                  "has none in PyTorch; leave pruned out of --space (mbv2, resnet)"),
    (dict(teacher="t.pt2", losses="kd:1,at:1"), "the feature loss at taps the teacher's layers, and teacher 't.pt2' "
                                                "is a torch.export program, which has none to tap; use kd, dkd"),
    # a lone hint flag was refused in the Python API's words (student_taps) and hid the refusal that applies
    (dict(teacher="t.onnx", losses="kd:1,hint:1", hint_student="stages"),
     "the feature loss hint taps the teacher's layers, and teacher 't.onnx' is an ONNX model, which has none to tap"),
    (dict(teacher="t.onnx", hint_teacher="relu"), "--hint-teacher is given without --hint-student; pass "
                                                  "--hint-student too"),
])
def test_options_that_cannot_apply_are_refused_by_their_flags(kwargs, message):
    from edgekd.errors import EdgeKDError

    with pytest.raises(EdgeKDError, match=re.escape(message)):
        CompressConfig(**kwargs)


def test_a_boolean_of_another_kind_is_refused_by_compress_config_s_own_name():
    """labels="False" was refused by DistillConfig as use_labels, which CompressConfig has no argument of."""
    with pytest.raises(ConfigError, match=r"^labels must be true or false, got 'False'; pass a boolean$"):
        CompressConfig(labels="False")


def test_names_given_from_python_as_a_list_are_taken_as_the_cli_s_comma_separated_string():
    """CompressConfig(space=["mbv2", "resnet"]) was accepted as a list, which the search then split as a
    string; a recipe's TOML list already read as the flag's string."""
    config = CompressConfig(space=["mbv2", "resnet"], losses="kd:1,hint:1", hint_student=("stages.2",),
                            hint_teacher=["layer3"])
    assert (config.space, config.hint_student, config.hint_teacher) == ("mbv2,resnet", "stages.2", "layer3")
    assert config.search_config().spaces() == ["mbv2", "resnet"]


def test_the_pruned_space_is_refused_for_an_onnx_teacher_only_where_a_search_runs():
    CompressConfig(teacher="t.onnx", space="pruned", distilled="d")  # its student is trained already


@pytest.mark.parametrize("command, args, message", [
    ("compress", ["--teacher", "model.py:build", "--weights", "typo.pt"],
     "weights file 'typo.pt' does not exist; check the --weights path"),
    ("compress", ["--teacher", "model.py:build"],
     "teacher 'model.py:build' needs its trained weights; pass --weights path/to/state_dict.pt"),
    ("compress", ["--teacher", "model.py:build", "--weights", "sub"], "weights file 'sub' is a folder, not a file"),
    ("compress", ["--teacher", "nofile.py:build", "--weights", "w.pt"],
     "teacher module file 'nofile.py' does not exist; check the path before ':'"),
    ("compress", ["--teacher", "absent.onnx"], "teacher model 'absent.onnx' does not exist; check the .onnx path"),
    ("compress", ["--teacher", "absent.pt2"], "teacher program 'absent.pt2' does not exist; check the .pt2 path"),
    ("compress", ["--teacher", "w.pt"], "teacher 'w.pt' is a weights file; edgekd needs the code that builds"),
    ("compress", ["--teacher", "model.py:build(1, x)", "--weights", "w.pt"], "are not all literals"),
    ("compress", ["--teacher", "t.onnx", "--space", "pruned"], "the 'pruned' space (--space pruned) cuts channels"),
    ("search", ["--teacher", "model.py:build", "--weights", "typo.pt"], "weights file 'typo.pt' does not exist"),
    ("distill", ["--teacher", "nofile.py:build", "--weights", "w.pt"], "teacher module file 'nofile.py' does not"),
])
def test_a_teacher_s_missing_files_and_spec_are_refused_before_the_data_loads(run_cli, fast_profile_path, tmp_path,
                                                                               monkeypatch, command, args, message):
    """Each was refused only after every image was decoded (minutes for a large folder), and --space pruned
    with an ONNX teacher after the teacher was scored and exported and the search had begun."""
    from edgekd import data
    from edgekd.errors import DataError

    def not_yet(*_a, **_k):
        raise DataError("the data loaded before the teacher's files were checked")

    monkeypatch.setattr(data, "load_data", not_yet)
    monkeypatch.chdir(tmp_path)
    # importing the user's module runs its code: that still happens after the data, not in these checks
    Path("model.py").write_text("open('imported', 'w').close()\ndef build(*a):\n    return None\n")
    Path("w.pt").write_bytes(b"not read here")
    Path("sub").mkdir()
    code, _, err = run_cli(command, *args, "--data", "digits", "--profile", fast_profile_path, "--out", "o", "-q")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not Path("imported").exists() and not Path("o").exists()


def test_the_distill_api_names_its_own_fields_for_unpaired_taps():
    from edgekd.types import DistillConfig

    with pytest.raises(ConfigError, match="give student_taps and teacher_taps together"):
        DistillConfig(student_taps=("a",))


def test_a_pruned_search_with_qat_refuses_a_teacher_qat_cannot_mirror_before_searching(teacher, small_data,
                                                                                      fast_profile_path, tmp_path,
                                                                                      monkeypatch):
    """The pruned family is the teacher's own layers; a LayerNorm in it failed only when QAT began, after
    the search and the fp32 epochs."""
    import edgekd.search

    class Normed(torch.nn.Module):  # a LayerNorm over the logits leaves every prediction as it was
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.norm = inner, torch.nn.LayerNorm(10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.inner(x))

    monkeypatch.setattr(edgekd.search, "search", lambda *a, **k: pytest.fail("searched before the refusal"))
    config = CompressConfig(out=str(tmp_path / "out"), teacher=Normed(teacher.module).eval(), data=small_data,
                            profile=str(fast_profile_path), budget_ms=50.0, space="pruned", epochs=2,
                            qat_epochs=1, progress=False)
    with pytest.raises(ConfigError, match=r"cannot mirror how onnxruntime quantizes: LayerNorm \('norm'\)"):
        compress(config)
    assert not (tmp_path / "out").exists()


def test_a_teacher_layer_to_tap_that_does_not_exist_is_refused_before_searching(teacher, small_data,
                                                                                fast_profile_path, tmp_path,
                                                                                monkeypatch):
    """The teacher's taps were checked only when distillation began, after a search of minutes."""
    import edgekd.search

    monkeypatch.setattr(edgekd.search, "search", lambda *a, **k: pytest.fail("searched before the refusal"))
    config = CompressConfig(out=str(tmp_path / "out"), teacher=teacher.module, data=small_data,
                            profile=str(fast_profile_path), budget_ms=50.0, epochs=2, losses="kd:1,hint:1",
                            hint_student="stages.2", hint_teacher="featurez", progress=False)
    with pytest.raises(ConfigError, match=r"teacher has no module 'featurez'") as err:
        compress(config)
    assert "did you mean features" in err.value.fix
    assert not (tmp_path / "out").exists()


# --- samples drawn from splits in class order ------------------------------------------------------------------

def _class_ordered(count: int = 1200):
    """Two classes, validation and training images in class order as the splits keep them."""
    import numpy as np

    from edgekd.data import Dataset

    x = np.zeros((count, 1, 4, 4), np.float32)
    x[count // 2:] = 1.0
    y = (np.arange(count) >= count // 2).astype(np.int64)
    return Dataset("ordered", x, y, x, y, x[:2], y[:2], ("a", "b"))


def test_the_teacher_is_checked_on_validation_images_of_every_class():
    """The first 512 of 1,200 class-ordered images are class a's alone: a teacher that says "a" to everything
    scored 100% on them, and distilled from."""
    from types import SimpleNamespace

    from edgekd.errors import DataError
    from edgekd.run_inputs import _check_teacher_knows_the_data

    class SaysA(torch.nn.Module):
        def forward(self, x):
            return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], 1)

    config = SimpleNamespace(seed=0, labels=True)
    with pytest.raises(DataError, match=r"the teacher scores \d+\.\d% on 512 validation images of 'ordered'"):
        _check_teacher_knows_the_data(SimpleNamespace(module=SaysA()), _class_ordered(), config, lambda _m: None)


def test_qat_calibration_images_are_drawn_from_every_class_by_the_run_seed(monkeypatch, tmp_path):
    import numpy as np

    import edgekd.export
    import edgekd.pipeline.stages as stages
    from edgekd.pipeline.stages import _distill_into

    data, taken = _class_ordered(), []

    class Stop(Exception):
        pass

    def exporter(_name):
        def export(request):
            taken.append(request.calibration)
            raise Stop
        return export

    trained = type("Trained", (), {"model": torch.nn.Linear(1, 1)})
    monkeypatch.setattr(stages, "run_data", lambda config, log: data)
    # a teacher as run_teacher gives one: distill.json records its weights' fingerprint before training
    teacher = type("Teacher", (), {"module": torch.nn.Linear(1, 1)})
    monkeypatch.setattr(stages, "run_teacher", lambda config, data, log: teacher)
    monkeypatch.setattr(stages, "search_and_distill", lambda *a, **k: (None, trained))
    monkeypatch.setattr(edgekd.export, "get_exporter", exporter)
    for run in range(2):
        with pytest.raises(Stop):
            _distill_into(CompressConfig(qat_epochs=1, seed=5), tmp_path / f"out{run}", False, lambda _m: None)
    assert len(taken[0]) == 256 and 0.3 < float(taken[0].mean()) < 0.7  # both classes, not class a's alone
    assert np.array_equal(taken[0], taken[1])  # the same images for the same seed


def test_the_recipe_a_manifest_records_loads_back_as_the_same_recipe(teacher_files, fast_profile_path, tmp_path,
                                                                     monkeypatch):
    """The recorded recipe held calibration_samples, which no recipe takes (no flag sets it): written back as a
    recipe, it was refused as an unknown key."""
    from edgekd.pipeline.config import config_fields
    from edgekd.pipeline.recipe import load_recipe
    from edgekd.run_inputs import recipe

    module, weights = teacher_files
    monkeypatch.chdir(tmp_path)
    config = CompressConfig(out="run1", teacher=f"{module}:build", weights=str(weights), data="digits",
                            resolution=[32, 24], channels=1, profile=str(fast_profile_path), budget_ms=5.0,
                            max_size_kb=512.0, space=["mbv2"], candidates=4, latency_anchors=3, epochs=1,
                            losses="kd:1", ort=True, seed=3)
    recorded = json.loads(json.dumps(recipe(config, config_fields())))  # as manifest.json holds it
    assert "calibration_samples" not in recorded
    Path("from-manifest.toml").write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in recorded.items()
                                                  if value is not None))
    loaded = CompressConfig(**load_recipe("from-manifest.toml"))
    assert json.loads(json.dumps(recipe(loaded, config_fields()))) == recorded
