"""Shared fixtures: tiny data, a tiny user-style teacher with trained weights, a fast profile,
and a CLI runner that behaves like the installed `edgekd` command."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ASSETS = Path(__file__).parent / "assets"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RES = 16  # digits at 16x16 keeps every model in the tests tiny
# Tests of the pipeline's mechanics search with diswot, whose students are small: params, the default,
# picks the largest student the budget allows, which doubled their time. tests/test_search*.py and
# `make demo` run the default.
QUICK_PROXY = "diswot"

FAST_PROFILE = """
schema = 1
name = "fast-test"
description = "host CPU, one thread, few repeats (tests only)"
[runtime]
intra_op_threads = 1
[measure]
warmup_runs = 3
repeats = 3
runs_per_repeat = 10
max_cv = 0.5
"""


def fixed_batch_net(features: int = 16 * 16, classes: int = 10):
    """A model whose forward fixes its batch to one, as a deployment script's does: x.view(1, -1)."""
    import torch

    class FixedBatch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(features, classes)

        def forward(self, x):
            return self.fc(x.view(1, -1))

    return FixedBatch()


def foreign_onnx(path: Path, shape: tuple[int, int, int], classes: int) -> Path:
    """A tiny convolutional classifier taking ``shape`` (C, H, W) inputs, exported as a user's own tooling would:
    no edgekd metadata, batch left free."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(shape[0], 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, classes)).eval()
    torch.onnx.export(model, (torch.zeros(1, *shape),), str(path), dynamo=False, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}})
    return path


def pixel_onnx(path: Path, outputs: tuple[tuple[str, int], ...] = (("y", 0),), classes: int = 4,
               reshape: tuple[int, ...] | None = None, metadata: dict[str, str] | None = None) -> Path:
    """A model exported elsewhere (batch left free, no edgekd metadata unless ``metadata``) taking (N, 1, 4, 4)
    images: each output (name, shift) scores class k by pixel k - shift (mod 4) of the first four, so shift 0
    predicts ``pixel_data``'s label; ``classes`` above 4 adds classes no pixel scores. ``reshape`` flattens
    to that fixed shape instead of the batch's (a reshape to (1, 16) fixes the batch inside)."""
    import onnx
    from onnx import TensorProto, helper

    flat = (helper.make_node("Reshape", ["x", "shape"], ["flat"], name="/Reshape") if reshape else
            helper.make_node("Flatten", ["x"], ["flat"], axis=1))
    inits = [helper.make_tensor("shape", TensorProto.INT64, [len(reshape)], list(reshape))] if reshape else []
    nodes = [flat]
    for name, shift in outputs:
        weight = np.zeros((16, classes), np.float32)
        weight[np.arange(4), (np.arange(4) + shift) % 4] = 1
        inits.append(helper.make_tensor(f"w_{name}", TensorProto.FLOAT, [16, classes], weight.ravel().tolist()))
        nodes.append(helper.make_node("MatMul", ["flat", f"w_{name}"], [name]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", classes]) for n, _ in outputs],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def pixel_data(path: Path, images: int = 40, keys: tuple[str, str] = ("x_test", "y_test")) -> Path:
    """An .npz of (N, 1, 4, 4) float images in [0, 1] labelled by the brightest of their first four pixels
    (classes 0..3), under
    ``keys``: x_test/y_test is a held-out test set, x/y one edgekd splits."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.99, (images, 16)).astype(np.float32)
    x[np.arange(4), np.arange(4)] = 1.0  # every class present, whatever the draw
    y = x[:, :4].argmax(1)
    x = x.reshape(images, 1, 4, 4)
    np.savez(path, **{keys[0]: x, keys[1]: y})
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_dirs(tmp_path_factory):
    """Never read or write the user's real cache or profile folder. Session-scoped and autouse, so it is set
    before any other session or module fixture runs (a function-scoped one came too late for the shared
    compress runs, which wrote their latency fits into ~/.cache/edgekd)."""
    base = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEKD_CACHE_DIR", str(base / "cache"))
        patch.setenv("EDGEKD_PROFILE_DIR", str(base / "user-profiles"))
        yield


@pytest.fixture(scope="session")
def small_data():
    from edgekd.data import load_data

    return load_data("digits", resolution=RES)


@pytest.fixture(scope="session")
def fast_profile_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "fast-test.toml"
    path.write_text(FAST_PROFILE)
    return path


@pytest.fixture(scope="session")
def fast_profile(fast_profile_path):
    from edgekd.profiles import load_profile

    return load_profile(fast_profile_path)


@pytest.fixture(scope="session")
def steady_profile_path(tmp_path_factory) -> Path:
    """The test profile with the default profile's repeats: a tiny model's runs cost next to nothing next to
    exporting and opening it, and 30 runs per measurement let the same architecture read 0.110-0.133 ms
    within a minute here, more than the 10% the target allows."""
    path = tmp_path_factory.mktemp("profiles") / "steady-test.toml"
    path.write_text(FAST_PROFILE.replace("warmup_runs = 3", "warmup_runs = 20")
                    .replace("repeats = 3", "repeats = 7").replace("runs_per_repeat = 10", "runs_per_repeat = 40"))
    return path


@pytest.fixture(scope="session")
def steady_profile(steady_profile_path):
    from edgekd.profiles import load_profile

    return load_profile(steady_profile_path)


@pytest.fixture(scope="session")
def teacher_files(tmp_path_factory, small_data) -> tuple[Path, Path]:
    """(teacher.py, weights.pt): the tiny teacher trained briefly on 16x16 digits."""
    import torch

    from edgekd.distill.trainer import distill
    from edgekd.types import DistillConfig

    folder = tmp_path_factory.mktemp("teacher")
    module = folder / "tiny_teacher.py"
    shutil.copy(ASSETS / "tiny_teacher.py", module)
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_teacher_fixture", module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    model = mod.build()
    distill(model, small_data, DistillConfig(epochs=4, lr=1e-2, augment=False), progress=False)
    weights = folder / "tiny_teacher.pt"
    torch.save(model.state_dict(), weights)
    return module, weights


@pytest.fixture(scope="session")
def teacher(teacher_files):
    from edgekd.teacher import load_teacher

    module, weights = teacher_files
    return load_teacher(f"{module}:build", str(weights))


@pytest.fixture(scope="session")
def compressed(teacher_files, fast_profile_path, tmp_path_factory):
    """One `compress` of the tiny teacher (its CompressResult), shared by the pipeline's and the gate's tests:
    each run costs about 25 s here. Read it, never change it: a test that edits copies the folder first."""
    from edgekd.pipeline import CompressConfig, compress

    module, weights = teacher_files
    out = tmp_path_factory.mktemp("compress") / "out"
    # 4 epochs: the gate's tests hold the student to 50% accuracy on digits. No size budget: the gate's tests
    # need a run that passes its own budget, and an int8 student missing the parity bar ships its fp32 twin,
    # 4x the size (tests/test_pipeline.py's strict_rerun has a size budget).
    return compress(CompressConfig(out=str(out), teacher=f"{module}:build", weights=str(weights), data="digits",
                                   resolution=16, profile=str(fast_profile_path), budget_ms=50.0, candidates=6,
                                   epochs=4, proxy=QUICK_PROXY, progress=False))


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process like the console script; returns (exit_code, stdout, stderr)."""
    from edgekd.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out = capsys.readouterr()
        return int(exc.value.code or 0), out.out, out.err

    return run


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one thread is 10-50x faster than two fighting for cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def load_benchmark():
    """Import a script of benchmarks/ by name (they are scripts, not a package): a fresh module per call,
    registered in sys.modules while the session runs, because a dataclass looks its module up while
    being defined."""
    loaded = []

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_bench", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        loaded.append(spec.name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


def run_uninstalled(code: str, pythonpath: Path, cwd: Path, **env: str) -> list[str]:
    """The stdout lines of Python ``code`` run with ``pythonpath`` first and this venv's editable-install
    finders removed: edgekd as a plain copy finds it (an unpacked wheel, a checkout not installed)."""
    import subprocess
    import sys

    strip = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]\n"
    done = subprocess.run([sys.executable, "-c", strip + code], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin", **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()
