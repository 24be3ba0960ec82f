"""The shipped examples run as a user runs them (each in a copy, so the checkout stays clean)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "examples"


def _env() -> dict[str, str]:
    # The example scripts call `python` and `edgekd`: those of the environment running the tests.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.slow  # trains a teacher, then a full compress: a few minutes on 2 cores
def test_byo_model_example_compresses_the_users_own_teacher(tmp_path: Path) -> None:
    work = shutil.copytree(EXAMPLES / "byo_model", tmp_path / "byo_model")
    done = subprocess.run(["bash", "run.sh"], cwd=work, env=_env(), capture_output=True, text=True, timeout=1800)
    assert done.returncode in (0, 1), done.stderr[-2000:]  # 1: a budget missed, which the report says
    # exit 1 without a manifest is an error before the export (seen once, while another test run shared the
    # two cores; it passed alone): its message is the last line of stderr
    assert (work / "byo-out" / "manifest.json").is_file(), done.stderr[-2000:]
    manifest = json.loads((work / "byo-out" / "manifest.json").read_text())
    assert (work / "my_teacher.pt").is_file() and manifest["primary"]
    sizes = {a["artifact"]["name"]: a["artifact"]["size_bytes"] for a in manifest["artifacts"]}
    assert sizes[manifest["primary"]] < sizes["teacher-fp32"] / 2  # the example compresses its teacher


@pytest.mark.slow  # a full compress through the Python API
def test_python_api_example_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / "python_api.py")], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "primary artifact:" in done.stdout and (tmp_path / "api-out" / "manifest.json").is_file()


@pytest.mark.slow  # the README's Python API block, verbatim: a full compress
def test_readme_python_blocks_run(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    for code in blocks:
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True,
                              text=True, timeout=1800)
        assert done.returncode == 0, f"{code}\n{done.stderr[-2000:]}"
