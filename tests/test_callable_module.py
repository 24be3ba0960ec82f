"""`from edgekd import search, distill, validate` call the stage functions whatever was imported before."""

from __future__ import annotations

import inspect
import subprocess
import sys

from test_distill import student, tiny_data

import edgekd
import edgekd.distill.trainer
import edgekd.search.search
import edgekd.validate
from edgekd import DistillConfig


def test_the_stage_names_call_their_functions_after_the_subpackages_are_imported() -> None:
    from edgekd import distill, search, validate

    assert distill is edgekd.distill and search is edgekd.search and validate is edgekd.validate  # still whole
    assert inspect.signature(validate) == inspect.signature(edgekd.validate.validate)  # the module's function
    assert validate.artifact_from_file and "budget" in inspect.signature(validate).parameters
    assert inspect.signature(distill) == inspect.signature(edgekd.distill.trainer.distill)
    assert inspect.signature(search) == inspect.signature(sys.modules["edgekd.search.search"].search)
    model = student()
    result = distill(model, tiny_data(), DistillConfig(epochs=1, batch_size=32, augment=False), progress=False)
    assert result.model is model and len(result.history) == 1


def test_a_fresh_interpreter_imports_them_as_callables() -> None:
    # `from edgekd import distill` used to hand back the subpackage: a module, not callable.
    code = ("from edgekd import DistillConfig, distill, load_data, search, validate\n"
            "import edgekd.distill.trainer as t, edgekd.search.spaces as s\n"
            "assert callable(distill) and callable(search) and callable(validate) and t.distill and s.SPACES\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_no_public_name_hands_back_a_plain_module() -> None:
    # Any future export named like a module of edgekd would otherwise break `from edgekd import NAME`.
    code = ("import types, edgekd\nfrom edgekd import *\n"
            "g = globals()\n"
            "bad = [n for n in edgekd.__all__ if isinstance(g[n], types.ModuleType) and not callable(g[n])]\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_configs_the_public_functions_take_are_public_too():
    """run_gate needs a GateConfig and recheck a RecheckConfig, which only internal modules offered."""
    import edgekd

    for name in ("GateConfig", "GateResult", "RecheckConfig", "DistillResult"):
        assert name in edgekd.__all__ and isinstance(getattr(edgekd, name), type)
