"""The wheel a user installs (not the editable checkout the tests run from) carries every module and data file."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_wheel_holds_every_module_profile_and_schema(tmp_path: Path) -> None:
    # Build from a copy so the checkout gains no build/ or egg-info from the test.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("edgekd", "exporters", "profiles"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # setuptools warns when a folder with data is importable but not listed: such data may be dropped.
    assert "would be ignored" not in done.stdout + done.stderr

    (wheel,) = (tmp_path / "dist").glob("edgekd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # exporters/ installs as edgekd.exporters (a top-level `exporters` was hidden by any of a user's own)
    modules = {("edgekd/" if d == "exporters" else "") + p.relative_to(ROOT).as_posix()
               for d in ("edgekd", "exporters") for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - names == set()
    assert "edgekd/schemas/manifest-v1.schema.json" in names and "edgekd/py.typed" in names
    assert not any(n.startswith("exporters/") for n in names)
    profiles = {f"edgekd/builtin_profiles/{p.name}" for p in (ROOT / "profiles").glob("*.toml")}
    assert profiles and profiles <= names
    # Apache-2.0 asks that the licence's text travel with every copy.
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_every_module_runs_on_the_oldest_python_requires_python_admits() -> None:
    # The suite runs on one Python; vermin reads the code for what each construct and stdlib module needs, so
    # a 3.11-only import (tomllib, once) fails here rather than at a 3.10 user's first command.
    from edgekd import tomlread

    declared = tomlread.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert declared.startswith(">=")
    oldest = declared[2:].strip()
    paths = [str(ROOT / d) for d in ("edgekd", "exporters", "examples", "benchmarks")]
    vermin = Path(sys.executable).with_name("vermin")  # its console script: vermin has no __main__
    done = subprocess.run([str(vermin), f"-t={oldest}-", "--no-tips", "--violations",
                           "--eval-annotations", *paths],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_oldest_deps_pin_every_lower_bound_pyproject_declares() -> None:
    # `make test-oldest` runs the suite on .ci/oldest-deps.txt; a bound raised or added in pyproject without that
    # file would leave the oldest release a user may hold untested again.
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    from edgekd import tomlread

    project = tomlread.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    required = [Requirement(text) for text in project["dependencies"]]
    pins = {}
    for line in (ROOT / ".ci" / "oldest-deps.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line)
            pins[canonicalize_name(pin.name)] = str(pin.specifier).removeprefix("==")
    for req in required:
        if req.marker is not None and not req.marker.evaluate():
            continue  # tomli: Python 3.10 only
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} has no pin in .ci/oldest-deps.txt"
        assert req.specifier.contains(pins[name]), f"{req.name}=={pins[name]} is outside {req.specifier}"
        floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
        if name != "torch":  # only torch 2.13's CPU build installs here (see the file's header)
            assert floors == [Version(pins[name])], f"{req.name}: {floors} in pyproject, {pins[name]} pinned"
    assert set(pins) == {canonicalize_name(r.name) for r in required if r.marker is None}
