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
    for name in ("pyproject.toml", "README.md"):
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
    modules = {p.relative_to(ROOT).as_posix() for d in ("edgekd", "exporters") for p in (ROOT / d).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules - names == set()
    assert "edgekd/schemas/manifest-v1.schema.json" in names
    profiles = {f"edgekd/builtin_profiles/{p.name}" for p in (ROOT / "profiles").glob("*.toml")}
    assert profiles and profiles <= names
