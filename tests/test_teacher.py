"""User teachers: file.py:factory + weights, .pt2 programs, and check_fits against the data."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch
from conftest import fixed_batch_net

from edgekd.data import load_data
from edgekd.errors import DataError, ModelError
from edgekd.teacher import check_fits, load_teacher
from edgekd.teacher_spec import parse_factory_ref


def _logits(teacher, x: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        return teacher.module(torch.from_numpy(np.ascontiguousarray(x)))


def _npz_dataset(tmp_path, channels: int, classes: int, n: int = 60, side: int = 16):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, channels, side, side)).astype(np.float32)
    y = np.arange(n) % classes
    path = tmp_path / f"c{channels}k{classes}.npz"
    np.savez(path, x=x, y=y)
    return load_data(str(path))


# --- file.py:factory + weights ---------------------------------------------------------------------------

def test_load_teacher_from_file(teacher_files, small_data):
    module, weights = teacher_files
    teacher = load_teacher(f"{module}:build", str(weights))
    assert not teacher.module.training
    assert str(weights) in teacher.source
    out = _logits(teacher, small_data.x_val[:2])
    assert tuple(out.shape) == (2, 10)
    check_fits(teacher, small_data)  # fits: no error


def test_a_factory_takes_literal_arguments(teacher_files, small_data):
    module, weights = teacher_files
    plain = _logits(load_teacher(f"{module}:build", str(weights)), small_data.x_val[:4])
    for call in ("TinyNet(in_ch=1, num_classes=10)", "TinyNet(1, 10)", " TinyNet( 1 ,\n num_classes=10 ) "):
        teacher = load_teacher(f"{module}:{call.strip()}", str(weights))
        assert torch.equal(_logits(teacher, small_data.x_val[:4]), plain) and "TinyNet(" in teacher.source
    assert parse_factory_ref("C:/models/net.py:build(sizes=[1, 2], name='a:b', cfg={'k': None})") == (
        "C:/models/net.py", "build", (), {"sizes": [1, 2], "name": "a:b", "cfg": {"k": None}})
    assert parse_factory_ref("pkg.mod:build()") == ("pkg.mod", "build", (), {})


@pytest.mark.parametrize("call, message", [
    ("TinyNet(num_classes=int('10'))", "are not all literals"),
    ("TinyNet(num_classes=)", "do not parse"),
    ("TinyNet(**{'num_classes': 10})", r"unpack a mapping \(\*\*\)"),
    ("TinyNet(__import__('os'))", "are not all literals"),
])
def test_factory_arguments_that_are_not_literals_are_refused(teacher_files, call, message):
    module, weights = teacher_files
    with pytest.raises(ModelError, match=message) as exc:
        load_teacher(f"{module}:{call}", str(weights))
    assert "num_classes=10" in exc.value.fix


def test_a_factory_that_needs_arguments_says_how_to_pass_them(tmp_path):
    path = tmp_path / "needs.py"
    path.write_text("def build(num_classes):\n    raise AssertionError('never called without it')\n")
    with pytest.raises(ModelError, match=r"factory .*:build' failed: TypeError: .*num_classes") as exc:
        load_teacher(f"{path}:build", "w.pt")
    assert f"--teacher '{path}:build(num_classes=10)'" in exc.value.fix


def test_missing_factory_lists_callables(teacher_files):
    module, weights = teacher_files
    with pytest.raises(ModelError, match=r"no factory 'nope'.*callables defined there: .*\bbuild\b") as exc:
        load_teacher(f"{module}:nope", str(weights))
    assert "build_wide" in exc.value.fix and "TinyNet" in exc.value.fix


def test_factory_not_callable(teacher_files):
    module, weights = teacher_files
    with pytest.raises(ModelError, match="no factory 'NOT_CALLABLE'"):
        load_teacher(f"{module}:NOT_CALLABLE", str(weights))


def test_module_file_missing(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_teacher(f"{tmp_path / 'absent.py'}:build", "w.pt")


def test_module_not_importable(monkeypatch):
    with pytest.raises(ModelError, match="cannot import teacher module 'edgekd_no_such_module_xyz'") as exc:
        load_teacher("edgekd_no_such_module_xyz:build", "w.pt")
    assert exc.value.fix == "install the package that provides 'edgekd_no_such_module_xyz' in this environment, " \
                           "or pass a .py file path"
    # The --teacher help's own example: a plain `pip install torchvision` can pull a CUDA torch with it.
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)  # absent, wherever the tests run
    monkeypatch.setattr(sys, "path", [])
    with pytest.raises(ModelError) as exc:
        load_teacher("torchvision.models:resnet18(num_classes=10)", None)
    assert exc.value.fix.endswith("pip install torchvision --index-url https://download.pytorch.org/whl/cpu")
    with pytest.raises(ModelError) as exc:  # the package is there, the module in it is not
        load_teacher("edgekd.no_such_submodule:build", None)
    assert exc.value.fix == "pass a .py file path or an importable module name"


def test_module_import_fails(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ModelError, match="importing .* failed: RuntimeError: boom"):
        load_teacher(f"{path}:build", "w.pt")


@pytest.mark.parametrize(("body", "said"), [
    ("raise ValueError('bad config')\n", "ValueError: bad config"),
    ("def build(:\n", "SyntaxError: "),
])
def test_a_module_name_whose_import_raises_is_one_line_like_the_file_form(tmp_path, monkeypatch, run_cli, body,
                                                                          said):
    # Only ImportError was caught for package.module:factory: anything else came out as a traceback, exit 1.
    (tmp_path / "edgekd_test_raising.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "edgekd_test_raising", raising=False)
    with pytest.raises(ModelError, match=f"importing 'edgekd_test_raising' failed: {said}") as exc:
        load_teacher("edgekd_test_raising:build", "w.pt")
    assert "python -c 'import edgekd_test_raising'" in exc.value.fix
    (tmp_path / "w.pt").write_bytes(b"")  # a missing one is refused first, before the data loads
    code, _, err = run_cli("search", "--teacher", "edgekd_test_raising:build", "--weights", tmp_path / "w.pt",
                           "--out", tmp_path / "s.json")
    assert code == 2 and "Traceback" not in err and f"failed: {said}" in err, err


def test_spec_without_colon(teacher_files):
    module, weights = teacher_files
    with pytest.raises(ModelError, match="not of the form module_or_file.py:factory"):
        load_teacher(str(module), str(weights))


def test_a_teacher_file_imports_the_helper_modules_beside_it(tmp_path, monkeypatch):
    # `python my_model.py` finds the modules beside it; the same file passed as --teacher must too, at import
    # time and inside the factory alike
    folder = tmp_path / "user_models"
    folder.mkdir()
    (folder / "edgekd_test_layers.py").write_text(
        "import torch\nclass Head(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__(); self.fc = torch.nn.Linear(4, 3)\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
    (folder / "edgekd_test_late.py").write_text("SCALE = 2.0\n")
    (folder / "net.py").write_text(
        "import torch\nfrom edgekd_test_layers import Head\n"
        "def build():\n    import edgekd_test_late\n    assert edgekd_test_late.SCALE == 2.0\n    return Head()\n")
    weights = tmp_path / "w.pt"
    torch.save({f"fc.{k}": v for k, v in torch.nn.Linear(4, 3).state_dict().items()}, weights)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the test leaves the process's path as it was
    for name in ("edgekd_test_layers", "edgekd_test_late"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    teacher = load_teacher(f"{folder / 'net.py'}:build", str(weights))
    assert tuple(teacher.module(torch.zeros(2, 1, 2, 2)).shape) == (2, 3)


@pytest.mark.parametrize("ref", ["edgekd_test_pkg.net:build", "edgekd_test_pkg/net.py:build"])
def test_a_package_in_the_working_folder_imports_as_with_python_m(tmp_path, monkeypatch, ref):
    # `edgekd` is a console script: unlike `python -m`, it does not put the working folder on the path
    package = tmp_path / "edgekd_test_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text("import torch\nHead = lambda: torch.nn.Sequential(torch.nn.Flatten(), "
                                       "torch.nn.Linear(4, 3))\n")
    (package / "net.py").write_text("from edgekd_test_pkg.layers import Head\ndef build():\n    return Head()\n")
    weights = tmp_path / "w.pt"
    torch.save({f"1.{k}": v for k, v in torch.nn.Linear(4, 3).state_dict().items()}, weights)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for name in ("edgekd_test_pkg", "edgekd_test_pkg.layers", "edgekd_test_pkg.net"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    teacher = load_teacher(ref, str(weights))
    assert tuple(teacher.module(torch.zeros(2, 1, 2, 2)).shape) == (2, 3)


def test_the_teachers_folders_leave_the_path_once_it_is_built(tmp_path, monkeypatch):
    # Left on sys.path (the file's folder first), a file beside the teacher took the place of a module edgekd or
    # its libraries import later: a proj/onnx_model.py broke onnxruntime's quantizer, a proj/statistics.py the
    # standard library's. While the teacher imports, a sibling named like an installed module is still its own.
    proj, installed = tmp_path / "proj", tmp_path / "site"
    proj.mkdir()
    installed.mkdir()
    (installed / "edgekd_test_dup.py").write_text("VALUE = 'installed'\n")
    (proj / "edgekd_test_dup.py").write_text("VALUE = 'sibling'\n")
    (proj / "edgekd_test_unread.py").write_text("raise RuntimeError('imported in place of another module')\n")
    (proj / "model.py").write_text(
        "import torch\nimport edgekd_test_dup\nassert edgekd_test_dup.VALUE == 'sibling'\n"
        "def build():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))\n")
    weights = tmp_path / "w.pt"
    torch.save({f"1.{k}": v for k, v in torch.nn.Linear(4, 3).state_dict().items()}, weights)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(installed)] + [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "edgekd_test_dup", raising=False)
    before = list(sys.path)
    load_teacher("proj/model.py:build", str(weights))
    assert sys.path == before  # neither proj/ nor the working folder stays
    import importlib.util

    assert importlib.util.find_spec("edgekd_test_unread") is None


@pytest.mark.parametrize(("name", "message"), [
    ("model.pt", "is a weights file; edgekd needs the code that builds the model too"),
    ("best.ckpt", "is a weights file"),
    ("model.ptl", "is a TorchScript or mobile model"),
])
def test_a_model_or_weights_file_as_the_teacher_says_what_is_needed(tmp_path, name, message):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(ModelError, match=message) as exc:
        load_teacher(str(path), None)
    assert ".py:build --weights" in exc.value.fix


def test_a_torchscript_file_as_the_teacher_or_its_weights_is_named(teacher_files, tmp_path, capfd):
    module, _ = teacher_files
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))), scripted)
    with pytest.raises(ModelError, match="is a TorchScript or mobile model"):
        load_teacher(str(scripted), None)
    with pytest.raises(ModelError, match="is a TorchScript archive, not a state dict") as exc:
        load_teacher(f"{module}:build", str(scripted))
    assert "torch.jit.load" in exc.value.fix
    assert "Warning" not in capfd.readouterr().err  # torch's own warning about dispatching to torch.jit.load


def test_weights_in_the_safetensors_format_load_like_a_state_dict(teacher_files, tmp_path, small_data):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    module, weights = teacher_files
    saved = tmp_path / "model.safetensors"
    state = {f"module.{k}": v.contiguous() for k, v in torch.load(weights).items()}  # saved from DataParallel
    safetensors_torch.save_file(state, str(saved))
    plain = _logits(load_teacher(f"{module}:build", str(weights)), small_data.x_val[:4])
    assert torch.equal(_logits(load_teacher(f"{module}:build", str(saved)), small_data.x_val[:4]), plain)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(saved.read_bytes()[:100])
    with pytest.raises(ModelError, match="is not a readable safetensors file"):
        load_teacher(f"{module}:build", str(broken))


def test_safetensors_weights_without_the_package_say_how_to_get_it(teacher_files, tmp_path, monkeypatch):
    module, _ = teacher_files
    saved = tmp_path / "model.safetensors"
    saved.write_bytes(b"\0" * 16)
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ModelError, match="in the safetensors format, which needs the safetensors package") as exc:
        load_teacher(f"{module}:build", str(saved))
    assert "pip install safetensors" in exc.value.fix


def test_weights_that_are_a_pickled_whole_model_say_so(teacher_files, tmp_path):
    module, _ = teacher_files
    whole = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(4, 3), whole)
    with pytest.raises(ModelError, match=r"holds a pickled torch\.nn\.modules\.linear\.Linear, which loading "
                                         "would run code from") as exc:
        load_teacher(f"{module}:build", str(whole))
    assert "state_dict()" in exc.value.fix


def test_factory_returning_non_module(tmp_path):
    path = tmp_path / "odd.py"
    path.write_text("def build():\n    return 42\n")
    with pytest.raises(ModelError, match="returned int, not a torch.nn.Module"):
        load_teacher(f"{path}:build", "w.pt")


def test_weights_required(teacher_files):
    module, _ = teacher_files
    with pytest.raises(ModelError, match="--weights"):
        load_teacher(f"{module}:build", None)


def test_weights_missing(teacher_files, tmp_path):
    module, _ = teacher_files
    with pytest.raises(ModelError, match="weights file .* does not exist"):
        load_teacher(f"{module}:build", str(tmp_path / "absent.pt"))


def test_weights_do_not_match(teacher_files):
    module, weights = teacher_files
    with pytest.raises(ModelError, match=r"do not match the model: size mismatch for fc\.weight"):
        load_teacher(f"{module}:build_wide", str(weights))


def test_weights_missing_keys(teacher_files, tmp_path):
    module, weights = teacher_files
    state = torch.load(weights, map_location="cpu", weights_only=True)
    del state["fc.bias"]
    partial = tmp_path / "partial.pt"
    torch.save(state, partial)
    with pytest.raises(ModelError, match=r"do not match the model: 1 missing keys \(e\.g\. fc\.bias\)"):
        load_teacher(f"{module}:build", str(partial))


class _Payload:
    """Something of the user's in a checkpoint: unpickling it could run its code."""


def test_a_checkpoint_with_numpy_values_and_the_run_s_arguments_loads_as_saved(teacher_files, tmp_path,
                                                                               small_data):
    # {'model': sd, 'best_acc': np.float64(0.9)} was refused as "a pickled numpy._core.multiarray.scalar"
    import argparse

    module, weights = teacher_files
    state = torch.load(weights, map_location="cpu", weights_only=True)
    saved = tmp_path / "ckpt.pt"
    torch.save({"model": state, "best_acc": np.float64(0.9), "epoch": np.int64(30), "mean": np.zeros(3, np.float32),
                "dtype": np.dtype("float32"), "args": argparse.Namespace(lr=0.1, arch="tiny")}, saved)
    x = small_data.x_val[:2]
    assert torch.equal(_logits(load_teacher(f"{module}:build", str(saved)), x),
                       _logits(load_teacher(f"{module}:build", str(weights)), x))
    assert not any("numpy" in str(g) or "Namespace" in str(g) for g in torch.serialization.get_safe_globals())
    torch.save({"model": state, "extra": _Payload()}, saved)  # any other class is still refused
    with pytest.raises(ModelError, match="holds a pickled .*_Payload, which loading would run code from"):
        load_teacher(f"{module}:build", str(saved))


@pytest.mark.parametrize("name", ["t.onnx", "T.PT2", "renamed.pt"])
def test_a_model_file_as_the_weights_says_to_pass_it_as_the_teacher(teacher, teacher_files, small_data, tmp_path,
                                                                     run_cli, name):
    # torch's own words came out: "PytorchStreamReader failed ... internal miniz error", "In PyTorch 2.6, we ..."
    module, _ = teacher_files
    path = tmp_path / name
    if name == "t.onnx":
        torch.onnx.export(teacher.module, (torch.from_numpy(small_data.x_val[:1]),), str(path), dynamo=False)
    else:
        x = torch.from_numpy(np.ascontiguousarray(small_data.x_val[:2]))
        torch.export.save(torch.export.export(teacher.module, (x,), dynamic_shapes=({0: torch.export.Dim("b")},)),
                          str(path))
    kind = "an ONNX model" if name == "t.onnx" else "a torch.export program"
    said = f"'{path}' is {kind}, not weights; pass it as --teacher {path}, without --weights"
    with pytest.raises(ModelError) as exc:
        load_teacher(f"{module}:build", str(path))
    assert exc.value.message == said
    code, _, err = run_cli("search", "--teacher", f"{module}:build", "--weights", path, "--out", tmp_path / "s.json")
    assert code == 2 and err.strip() == f"error: {said}", err


def test_weights_wrapped_in_checkpoint_dict(teacher_files, tmp_path, small_data):
    module, weights = teacher_files
    state = torch.load(weights, map_location="cpu", weights_only=True)
    wrapped = tmp_path / "ckpt.pt"
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    plain = load_teacher(f"{module}:build", str(weights))
    nested = load_teacher(f"{module}:build", str(wrapped))
    x = small_data.x_val[:2]
    assert torch.allclose(_logits(plain, x), _logits(nested, x))


@pytest.mark.parametrize("prefix, extra", [
    ("module.", {}),                                        # DataParallel / DDP
    ("_orig_mod.", {}),                                     # torch.compile
    ("_orig_mod.module.", {}),                              # both
    ("model.", {"criterion.weight": torch.ones(10)}),       # a training wrapper with keys of its own
])
def test_weights_saved_from_a_wrapper(teacher_files, tmp_path, small_data, prefix, extra):
    module, weights = teacher_files
    state = torch.load(weights, map_location="cpu", weights_only=True)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {**{prefix + k: v for k, v in state.items()}, **extra}}, wrapped)
    plain = load_teacher(f"{module}:build", str(weights))
    loaded = load_teacher(f"{module}:build", str(wrapped))
    x = small_data.x_val[:2]
    assert torch.equal(_logits(plain, x), _logits(loaded, x))


def test_weights_under_a_prefix_still_checked(teacher_files, tmp_path):
    module, weights = teacher_files
    state = torch.load(weights, map_location="cpu", weights_only=True)
    del state["fc.bias"]
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"module." + k: v for k, v in state.items()}, wrapped)
    with pytest.raises(ModelError, match=r"do not match the model: .*missing keys"):
        load_teacher(f"{module}:build", str(wrapped))


def test_two_copies_of_the_model_under_wrapper_prefixes_are_refused_by_name(teacher_files, tmp_path, small_data):
    # {'ema.*': ..., 'model.*': ...} loaded whichever prefix came first, silently; the wrong copy then read as
    # a teacher fed the wrong preprocessing
    module, weights = teacher_files
    state = torch.load(weights, map_location="cpu", weights_only=True)
    other = {k: torch.zeros_like(v) for k, v in state.items()}
    two = tmp_path / "two.pt"
    torch.save({"state_dict": {**{"ema." + k: v for k, v in other.items()},
                               **{"model." + k: v for k, v in state.items()}}}, two)
    with pytest.raises(ModelError, match=r"holds the model's weights under several key prefixes \('ema\.', "
                                         r"'model\.'\), each different") as exc:
        load_teacher(f"{module}:build", str(two))
    assert exc.value.fix.startswith("save the one you want alone") and "k.removeprefix('ema.')" in exc.value.fix
    # the same weights twice (an EMA copy at its first step) are one model: loaded
    torch.save({"state_dict": {**{"ema." + k: v.clone() for k, v in state.items()},
                               **{"model." + k: v for k, v in state.items()}}}, two)
    x = small_data.x_val[:2]
    assert torch.equal(_logits(load_teacher(f"{module}:build", str(two)), x),
                       _logits(load_teacher(f"{module}:build", str(weights)), x))


def test_a_state_dict_under_a_key_of_the_script_s_own_is_found(teacher_files, tmp_path, small_data):
    # {'net': sd, 'acc': ..} (pytorch-cifar) was refused as weights of another architecture, "unexpected keys
    # (e.g. net)"
    module, weights = teacher_files
    state = torch.load(weights, map_location="cpu", weights_only=True)
    saved = tmp_path / "ckpt.pt"
    torch.save({"net": {"module." + k: v for k, v in state.items()}, "acc": 95.0, "epoch": 3}, saved)
    x = small_data.x_val[:2]
    assert torch.equal(_logits(load_teacher(f"{module}:build", str(saved)), x),
                       _logits(load_teacher(f"{module}:build", str(weights)), x))
    torch.save({"net": state, "teacher": {k: torch.zeros_like(v) for k, v in state.items()}}, saved)
    with pytest.raises(ModelError, match=r"holds the model's weights under several keys \('net', 'teacher'\), "
                                         r"each different") as exc:
        load_teacher(f"{module}:build", str(saved))
    assert "['net']" in exc.value.fix


def test_weights_saved_as_numpy_arrays_load_as_tensors(teacher_files, tmp_path, small_data):
    # load_state_dict refused them, and the error kept only torch's header: "Error(s) in loading state_dict
    # for TinyNet:"
    module, weights = teacher_files
    state = torch.load(weights, map_location="cpu", weights_only=True)
    saved = tmp_path / "np.pt"
    torch.save({k: v.numpy() for k, v in state.items()}, saved)
    x = small_data.x_val[:2]
    assert torch.equal(_logits(load_teacher(f"{module}:build", str(saved)), x),
                       _logits(load_teacher(f"{module}:build", str(weights)), x))


def test_weights_load_state_dict_refuses_say_torch_s_reason(teacher_files, tmp_path):
    module, weights = teacher_files
    state = torch.load(weights, map_location="cpu", weights_only=True)
    saved = tmp_path / "lists.pt"
    torch.save({k: v.tolist() for k, v in state.items()}, saved)
    with pytest.raises(ModelError, match=r"do not match the model: While copying the parameter named \"\S+\", "
                                         r"expected torch\.Tensor") as exc:
        load_teacher(f"{module}:build", str(saved))
    assert "Error(s) in loading" not in exc.value.message and exc.value.fix.startswith("save its values as tensors")


def test_weights_garbage(teacher_files, tmp_path):
    module, _ = teacher_files
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"definitely not a torch checkpoint \x00\x01\x02\x03" * 8)
    with pytest.raises(ModelError, match="cannot be loaded safely"):
        load_teacher(f"{module}:build", str(bad))


def test_weights_not_a_state_dict(teacher_files, tmp_path):
    module, _ = teacher_files
    bad = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), bad)
    with pytest.raises(ModelError, match="holds Tensor, not a state dict"):
        load_teacher(f"{module}:build", str(bad))


def test_weights_empty_file(teacher_files, tmp_path):
    module, _ = teacher_files
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="cannot be loaded safely"):
        load_teacher(f"{module}:build", str(empty))


# --- .pt2 programs ---------------------------------------------------------------------------------------

def test_pt2_teacher_matches_module(teacher, small_data, tmp_path):
    x = torch.from_numpy(np.ascontiguousarray(small_data.x_val[:2]))
    path = tmp_path / "teacher.pt2"
    program = torch.export.export(teacher.module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    exported = load_teacher(str(path))
    assert "torch.export program" in exported.source
    assert exported.module.eval() is exported.module
    out = _logits(exported, small_data.x_val[:2])
    assert tuple(out.shape) == (2, 10)
    torch.testing.assert_close(out, _logits(teacher, small_data.x_val[:2]), atol=1e-5, rtol=0)
    check_fits(exported, small_data)


def test_pt2_with_a_fixed_batch_is_refused(teacher, small_data, tmp_path):
    # What torch.export.export(model, (x,)) gives: a program that takes batches of x's size and no other.
    x = torch.from_numpy(np.ascontiguousarray(small_data.x_val[:1]))
    path = tmp_path / "batch1.pt2"
    torch.export.save(torch.export.export(teacher.module, (x,)), str(path))
    with pytest.raises(ModelError, match=r"exported for a fixed batch of 1 .*dynamic_shapes=\(\{0: torch\.export"):
        load_teacher(str(path))


def test_pt2_with_two_inputs_is_refused(tmp_path):
    class TwoInputs(torch.nn.Module):
        def forward(self, x, y):
            return x + y

    x = torch.zeros(2, 3)
    path = tmp_path / "two.pt2"
    torch.export.save(torch.export.export(TwoInputs(), (x, x)), str(path))
    with pytest.raises(ModelError, match="takes 2 inputs; edgekd feeds a teacher one image batch") as exc:
        load_teacher(str(path))
    # the fix was the fixed-batch one ("export it with a dynamic batch"), which keeps both inputs
    assert exc.value.fix.startswith("export a wrapper whose forward(x) takes the image batch alone and supplies any "
                                    "other input itself, with a dynamic batch: torch.export.export(wrapper, (x,), ")


def test_pt2_missing(tmp_path):
    with pytest.raises(ModelError, match="teacher program .* does not exist"):
        load_teacher(str(tmp_path / "absent.pt2"))


def test_pt2_garbage(tmp_path):
    path = tmp_path / "garbage.pt2"
    path.write_bytes(b"not an exported program")
    with pytest.raises(ModelError, match="is not a torch.export program"):
        load_teacher(str(path))


def test_pt2_suffix_is_read_in_any_case(teacher, small_data, tmp_path):
    # .ONNX was recognised and .PT2 not: "is not of the form module_or_file.py:factory or file.pt2"
    from edgekd.teacher_spec import spec_file

    x = torch.from_numpy(np.ascontiguousarray(small_data.x_val[:2]))
    path = tmp_path / "TEACHER.PT2"
    torch.export.save(torch.export.export(teacher.module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      str(path))
    assert "torch.export program" in load_teacher(str(path)).source
    assert spec_file("T.PT2") == "T.PT2"
    with pytest.raises(ModelError, match="teacher 'T.PT2' is a torch.export program, which holds its own weights"):
        load_teacher("T.PT2", "w.pt")


def test_a_home_relative_program_or_weights_path_loads(teacher, teacher_files, small_data, tmp_path, monkeypatch):
    """The early file check read ~/t.pt2 and ~/w.pt as the user's home, and the loader then said they did not
    exist, after the data had loaded."""
    import shutil

    from edgekd.run_inputs import check_teacher_files

    module, weights = teacher_files
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    shutil.copy(weights, home / "w.pt")
    x = torch.from_numpy(np.ascontiguousarray(small_data.x_val[:2]))
    torch.export.save(torch.export.export(teacher.module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      str(home / "t.pt2"))
    for spec, given in (("~/t.pt2", None), (f"{module}:build", "~/w.pt")):
        check_teacher_files(type("Config", (), {"teacher": spec, "weights": given})())
        assert load_teacher(spec, given).module is not None


class _Dropped(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.drop = inner, torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.inner(x))


@pytest.mark.parametrize("decomposed", [False, True])
def test_pt2_exported_in_training_mode_is_refused_and_in_eval_mode_taken(teacher_files, small_data, tmp_path,
                                                                         decomposed):
    # Distilled in silence: its dropout made two calls on one batch differ, and its BatchNorm's statistics
    # drifted with every batch (a program has no eval() to call)
    module, weights = teacher_files
    x = torch.from_numpy(np.ascontiguousarray(small_data.x_val[:2]))

    def saved(model, name):
        program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        path = tmp_path / name
        torch.export.save(program.run_decompositions() if decomposed else program, str(path))
        return str(path)

    model = _Dropped(load_teacher(f"{module}:build", str(weights)).module)
    model.train()  # BatchNorm and dropout
    with pytest.raises(ModelError, match=r"exported in training mode \(its (BatchNorm|forward updates the buffer)"
                                         r".*; call model.eval\(\) before torch.export.export"):
        load_teacher(saved(model, "train.pt2"))
    model.eval()
    model.drop.train()  # dropout alone
    with pytest.raises(ModelError, match=r"exported in training mode \(its dropout draws at random"):
        load_teacher(saved(model, "dropout.pt2"))
    model.eval()
    exported = load_teacher(saved(model, "eval.pt2")).module
    torch.testing.assert_close(exported(x), model(x).detach(), atol=1e-5, rtol=0)


def test_pt2_returning_a_dict_with_logits_is_taken_by_its_logits(teacher, small_data, tmp_path):
    # Refused with the advice to return such a dict: the dict form was taken for an nn.Module alone.
    from edgekd.export import ExportRequest, get_exporter
    from edgekd.teacher import logits_only

    x = torch.from_numpy(np.ascontiguousarray(small_data.x_val[:2]))
    path = tmp_path / "heads.pt2"
    program = torch.export.export(_Heads(teacher.module).eval(), (x,),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    taken = logits_only(load_teacher(str(path)), small_data)
    check_fits(taken, small_data)
    assert taken.source.endswith(", its 'logits' output")
    batch = torch.from_numpy(small_data.x_val[:5])
    torch.testing.assert_close(taken.module(batch), teacher.module(batch).detach(), atol=1e-5, rtol=0)
    art = get_exporter("onnx-fp32")(ExportRequest("teacher-fp32", "teacher", tmp_path, taken.module,
                                                  small_data.x_val[:1]))
    assert [o["shape"][-1] for o in art.details["outputs"]] == [10]  # the logits alone


def test_a_pt2_whose_logits_cannot_be_exported_alone_is_refused_in_one_line(teacher, small_data, tmp_path,
                                                                             monkeypatch):
    from edgekd.teacher import logits_only

    x = torch.from_numpy(np.ascontiguousarray(small_data.x_val[:2]))
    path = tmp_path / "heads.pt2"
    torch.export.save(torch.export.export(_Heads(teacher.module).eval(), (x,),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), str(path))
    loaded = load_teacher(str(path))

    def fails(*args, **kwargs):
        raise RuntimeError("guard on batch failed\nand more")

    monkeypatch.setattr(torch.export, "export", fails)
    with pytest.raises(ModelError, match=r"^the program's 'logits' output cannot be taken alone \(guard on batch "
                                         r"failed\); "):
        logits_only(loaded, small_data)


# --- check_fits ------------------------------------------------------------------------------------------

def test_check_fits_wrong_channels(teacher, tmp_path):
    data = _npz_dataset(tmp_path, channels=3, classes=3)
    assert data.input_shape == (3, 16, 16)
    with pytest.raises(DataError, match=r"shape \(3, 16, 16\) do not fit the teacher"):
        check_fits(teacher, data)


def test_check_fits_wrong_class_count(teacher, tmp_path):
    data = _npz_dataset(tmp_path, channels=1, classes=3)
    with pytest.raises(DataError, match=r"the teacher predicts 10 classes but the data has 3; pass data"):
        check_fits(teacher, data)


def test_check_fits_names_the_labels_past_the_teacher_s_outputs(teacher):
    """One row labelled 10 (or "nan") made an 11th class, and the refusal gave the two counts alone: the user's
    data "has 10 classes"."""
    from edgekd.data import Dataset

    x = np.zeros((23, 1, 16, 16), np.float32)
    y = np.array([*range(10), *range(10), 10, 10, 10])
    data = Dataset("n_oob.npz", x[:20], y[:20], x[20:22], y[20:22], x[22:], y[22:], tuple(str(i) for i in range(11)))
    with pytest.raises(DataError, match=r"the teacher predicts 10 classes but the data has 11; past its 10 outputs: "
                                        r"label 10 \(3 images\); pass data with as many classes as the teacher "
                                        r"predicts \(correct or remove the images of those labels\)"):
        check_fits(teacher, data)
    named = Dataset("c_nan.csv", x[:20], y[:20], x[20:22], y[20:22], x[22:23], y[22:23],
                    (*(str(i) for i in range(10)), "nan"))
    with pytest.raises(DataError, match=r"data has 11; past its 10 outputs: class 'nan' \(3 images\)"):
        check_fits(teacher, named)


def test_check_fits_names_a_teacher_that_fixes_its_batch_size(tmp_path):
    """The images fit, yet the refusal said they did not and to pass data at the teacher's resolution."""
    from edgekd.teacher import Teacher

    data = _npz_dataset(tmp_path, channels=1, classes=10)
    with pytest.raises(ModelError, match=r"^the teacher fixes its batch size: it runs one image but not a batch of "
                                         r"4 \(mat1 and mat2 shapes cannot be multiplied .*\); write its forward for "
                                         r"any batch \(x\.flatten\(1\) or x\.view\(x\.size\(0\), -1\)"):
        check_fits(Teacher(fixed_batch_net(), "test"), data)


class _TwoHeads(torch.nn.Module):
    """Returns (logits, aux), as detection-style or aux-loss models do."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.fc = torch.nn.Linear(16 * 16, classes)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return y, y


@pytest.mark.parametrize("module, what", [(_TwoHeads(), "a tuple"),
                                          (torch.nn.Identity(), "a tensor of shape (4, 1, 16, 16)")])
def test_check_fits_refuses_outputs_that_are_not_logits(module, what, tmp_path):
    from edgekd.teacher import Teacher

    data = _npz_dataset(tmp_path, channels=1, classes=10)
    with pytest.raises(ModelError, match=f"forward returns {re.escape(what)}, not \\(batch, classes\\) logits"):
        check_fits(Teacher(module, "test"), data)


class _Heads(torch.nn.Module):
    """Returns a dict of heads, as Hugging Face models return a ModelOutput: ``logits`` among them, or not."""

    def __init__(self, inner: torch.nn.Module, key: str = "logits"):
        super().__init__()
        self.inner, self.key = inner, key

    def forward(self, x):
        logits = self.inner(x)
        return {self.key: logits, "hidden_states": logits * 2}


def test_a_teacher_returning_a_dict_with_logits_is_taken_by_its_logits(teacher, small_data, tmp_path):
    from edgekd.pipeline import CompressConfig
    from edgekd.run_inputs import run_teacher

    lines: list[str] = []
    taken = run_teacher(CompressConfig(teacher=_Heads(teacher.module), data=small_data, out=str(tmp_path / "o")),
                        small_data, lines.append)
    x = torch.from_numpy(small_data.x_val[:3])
    assert torch.equal(taken.module(x), teacher.module(x)) and taken.source.endswith(", its 'logits' output")
    assert any("its forward returns a mapping of outputs; distilling and exporting its 'logits'" in n for n in lines)
    assert taken.module.get_submodule("model.inner") is not None  # its layers, under model.
    # it exports with the logits as its one output
    from edgekd.export import ExportRequest, get_exporter

    art = get_exporter("onnx-fp32")(ExportRequest("teacher-fp32", "teacher", tmp_path, taken.module,
                                                  small_data.x_val[:1]))
    assert [o["shape"][-1] for o in art.details["outputs"]] == [10]


@pytest.mark.parametrize("module, what", [(lambda t: _Heads(t, key="scores"), "a dict"),
                                          (lambda t: _TwoHeads(), "a tuple")])
def test_other_mappings_and_tuples_are_still_refused_naming_the_dict_form(module, what, teacher, small_data):
    from edgekd.teacher import Teacher, logits_only

    model = module(teacher.module)
    kept = logits_only(Teacher(model, "test"), small_data)
    assert kept.module is model
    with pytest.raises(ModelError, match=f"forward returns {what}, not") as exc:
        check_fits(kept, small_data)
    assert "a dict holding it under 'logits'" in exc.value.fix


def test_a_teacher_returning_probabilities_is_refused_and_log_probabilities_pass(tmp_path):
    from edgekd.teacher import Teacher

    data = _npz_dataset(tmp_path, channels=1, classes=10)
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 10))
    with pytest.raises(ModelError, match=r"returns probabilities \(every row is >= 0 and sums to 1\).*before the "
                                         r"softmax"):
        check_fits(Teacher(torch.nn.Sequential(head, torch.nn.Softmax(dim=1)), "test"), data)
    check_fits(Teacher(torch.nn.Sequential(head, torch.nn.LogSoftmax(dim=1)), "test"), data)
    check_fits(Teacher(head, "test"), data)


def test_a_factory_returning_a_half_precision_model_runs_as_float32(teacher_files, tmp_path, small_data):
    module, weights = teacher_files
    half = tmp_path / "half_teacher.py"
    half.write_text(f"import importlib.util\n"
                    f"spec = importlib.util.spec_from_file_location('base', {str(module)!r})\n"
                    f"base = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(base)\n\n\n"
                    f"def build():\n    return base.build().half()\n")
    loaded = load_teacher(f"{half}:build", str(weights))
    plain = load_teacher(f"{module}:build", str(weights))
    x = small_data.x_val[:3]
    assert next(loaded.module.parameters()).dtype == torch.float32
    assert torch.equal(_logits(loaded, x), _logits(plain, x))


def _tiny_recipe():
    from edgekd.teacher import TeacherRecipe
    from edgekd.types import DistillConfig

    return TeacherRecipe(stem=4, widths=(4, 8), depths=(1, 1), training=DistillConfig(epochs=1, seed=0))


def test_the_default_teacher_is_trained_once_then_loaded_and_a_corrupt_entry_retrained(small_data, tmp_path,
                                                                                        monkeypatch):
    from edgekd.teacher import default_teacher

    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    first = default_teacher(small_data, _tiny_recipe(), progress=False)
    assert first.source.startswith("default resnet teacher (trained, cached ")
    (entry,) = (tmp_path / "cache" / "teachers").glob("resnet-*.pt")
    again = default_teacher(small_data, _tiny_recipe(), progress=False)
    assert again.source == f"default resnet teacher (cached {entry})"
    x = torch.from_numpy(small_data.x_test[:4])
    assert torch.equal(first.module(x), again.module(x))
    entry.write_bytes(b"not a state dict")
    # trained again, and the caller's torch generator handed back as it was (it was re-seeded with the recipe's)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    retrained = default_teacher(small_data, _tiny_recipe(), progress=False)
    assert "trained" in retrained.source and torch.equal(torch.rand(3), expected)
    assert torch.equal(retrained.module(x), first.module(x))  # the same weights, seeded as before


def test_the_default_teacher_claims_the_split_it_was_trained_on_and_no_other(small_data, tmp_path, monkeypatch):
    """Its file recorded no split, so validate said nothing when another seed's test images held its training
    images. Trained here, it claims the run's seed; from the cache, only the seed (and images) it trained on:
    the cache key is the data's record, which two seeds share with --normalize none or MEAN/STD."""
    from edgekd.teacher import default_teacher

    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    assert default_teacher(small_data, _tiny_recipe(), progress=False, seed=3).split_seed == 3
    assert default_teacher(small_data, _tiny_recipe(), progress=False, seed=3).split_seed == 3  # cached
    assert default_teacher(small_data, _tiny_recipe(), progress=False, seed=5).split_seed is None
    assert default_teacher(small_data, _tiny_recipe(), progress=False).split_seed is None  # no seed said
    (kept,) = (tmp_path / "cache" / "teachers").glob("resnet-*.split.json")
    kept.unlink()  # a teacher cached before its split was kept: trained on some seed's, which is unknown
    assert default_teacher(small_data, _tiny_recipe(), progress=False, seed=3).split_seed is None


def test_the_teachers_file_records_the_run_split_only_where_edgekd_trained_it_on_it(small_data, tmp_path):
    """teacher-fp32.onnx of a default-teacher run recorded no split seed; a user's teacher, trained on images
    edgekd cannot know, still claims none."""
    from conftest import foreign_onnx

    from edgekd.onnx_metadata import embedded_split_data, embedded_split_seed
    from edgekd.pipeline.exporting import stamp_teacher
    from edgekd.teacher import Teacher
    from edgekd.validate import artifact_from_file

    module = torch.nn.Flatten()  # the module is not read: the file is stamped
    for name, split_seed, run_seed, claimed in (("default", 2, 2, 2), ("user", None, 2, None),
                                                ("other-seed", 7, 2, None)):
        art = artifact_from_file(foreign_onnx(tmp_path / f"{name}.onnx", small_data.input_shape, 10), "teacher-fp32")
        stamped = stamp_teacher(art, Teacher(module, name, split_seed=split_seed), small_data, run_seed)
        assert embedded_split_seed(stamped.path) == claimed, name
        assert (embedded_split_data(stamped.path) is not None) == (claimed is not None), name


def test_a_default_teacher_that_cannot_be_cached_is_used_with_a_warning(small_data, tmp_path, monkeypatch):
    from edgekd.teacher import default_teacher

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(blocker / "cache"))  # a folder under a file: never creatable
    lines: list[str] = []
    teacher = default_teacher(small_data, _tiny_recipe(), progress=False, log=lines.append)
    assert teacher.source == "default resnet teacher (trained, not cached)"
    assert teacher.module(torch.zeros(1, *small_data.input_shape)).shape == (1, small_data.num_classes)
    (warning,) = [m for m in lines if m.startswith("warning:")]
    assert "could not be cached" in warning and str(blocker) in warning and "trains it again" in warning


def test_a_pt2_that_is_not_a_program_says_so_without_torchs_logged_traceback(tmp_path, capfd):
    import zipfile

    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not an exported program")
    with pytest.raises(ModelError, match=r"'.*garbage.pt2' is not a torch.export program \(not a .pt2 archive\); "
                                         "save one with torch.export.save"):
        load_teacher(str(garbage))
    other_zip = tmp_path / "other.pt2"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "a zip, but not a program")
    with pytest.raises(ModelError, match="is not a torch.export program"):
        load_teacher(str(other_zip))
    assert "Traceback" not in capfd.readouterr().err


def test_a_pt2_or_onnx_teacher_refuses_weights_it_would_not_read(tmp_path):
    for spec in ("teacher.pt2", "model.onnx"):
        with pytest.raises(ModelError, match=f"teacher '{spec}' is .*, which holds its own weights; drop --weights"):
            load_teacher(spec, str(tmp_path / "does-not-exist.pt"))


def test_a_teachers_origin_resolves_its_files_however_they_are_spelled(teacher_files, monkeypatch):
    from edgekd.teacher_spec import teacher_origin

    module, weights = teacher_files
    monkeypatch.chdir(module.parent)
    full = f"{module.resolve()}:build(num_classes=10) with weights {weights.resolve()}"
    assert teacher_origin(f"./{module.name}:build(num_classes=10)", f"./{weights.name}") == full
    assert teacher_origin(f"../{module.parent.name}/{module.name}:build(num_classes=10)", str(weights)) == full
    assert teacher_origin("torchvision.models:resnet18", "w.pt") == (
        f"torchvision.models:resnet18 with weights {module.parent.resolve() / 'w.pt'}")  # a module name stays
    assert teacher_origin("t.pt2", None) == str(module.parent.resolve() / "t.pt2")
    assert teacher_origin(None, None) is None
    assert load_teacher(f"./{module.name}:build", f"./{weights.name}").origin == teacher_origin(
        f"{module}:build", str(weights))


def test_load_teacher_given_a_module_says_what_it_takes():
    """It failed with "'Sequential' object has no attribute 'endswith'"."""
    import torch

    from edgekd.errors import ConfigError
    from edgekd.teacher import load_teacher

    with pytest.raises(ConfigError, match="load_teacher takes a spec or a path, not a Sequential; pass a module you "
                                          r"hold as it is \(CompressConfig\(teacher=model\)"):
        load_teacher(torch.nn.Sequential())


def test_checking_a_train_mode_teacher_leaves_its_batchnorm_statistics_and_mode_as_they_were(small_data):
    """search() and distill() check the teacher on a few images first: in the caller's train mode that forward
    moved its BatchNorm running statistics (inference_mode does not stop them)."""
    from edgekd.teacher import Teacher

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(small_data.input_shape[0], 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_fits(Teacher(model, "in memory"), small_data)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _ChannelsLast(torch.nn.Module):
    """A model ported from a channels-last framework: its forward takes (N, H, W, C)."""

    def __init__(self, channels: int = 3, classes: int = 10):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(self.conv(x.permute(0, 3, 1, 2)).mean((2, 3)))


def test_check_fits_names_a_channels_last_teacher_rather_than_the_datas_resolution(tmp_path):
    """It was told to pass data at the resolution and channel count it was trained on, which the data was."""
    from edgekd.teacher import Teacher

    data = _npz_dataset(tmp_path, channels=3, classes=10)
    with pytest.raises(ModelError, match=r"^the teacher takes channels-last images \(batch, 16, 16, 3\) and edgekd "
                                         r"feeds \(batch, 3, 16, 16\) \(.*\); wrap it in a module whose forward "
                                         r"returns model\(x\.permute\(0, 2, 3, 1\)\)"):
        check_fits(Teacher(_ChannelsLast(), "test"), data)
    # a model that fits neither layout is still told about the data
    with pytest.raises(DataError, match=r"do not fit the teacher"):
        check_fits(Teacher(_ChannelsLast(channels=2), "test"), data)
