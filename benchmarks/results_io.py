"""Where every benchmark script leaves its figures: STEM.json (the data) and STEM.md (the table the
README quotes), the table also printed. The recorded files are what README quotes, so a run replaces them
only when asked to (``--force``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def results_paths(stem: str | Path) -> tuple[Path, Path]:
    """STEM.json and STEM.md, appended to the name: a stem such as ``export_matrix_ort1.32`` keeps its dot."""
    stem = Path(stem)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")


def add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="replace the results already at --out")


def refuse_replacing(stem: str | Path, force: bool) -> None:
    """Called before a run starts too, so that a long run is not refused only when it is done."""
    existing = [path for path in results_paths(stem) if path.exists()]
    if existing and not force:
        print(f"error: {existing[0]} holds earlier results; pass --force to replace them, or --out elsewhere",
              file=sys.stderr)
        raise SystemExit(2)


def write_results(stem: str | Path, data: Any, markdown: str, *, force: bool = False,
                  json_default: Callable[[Any], Any] | None = None) -> None:
    refuse_replacing(stem, force)
    json_path, md_path = results_paths(stem)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=2, default=json_default) + "\n")
    md_path.write_text(markdown)
    print(markdown)
