"""Where every benchmark script leaves its figures: STEM.json (the data) and STEM.md (the table the
README quotes), the table also printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(stem: str | Path, data: Any, markdown: str) -> None:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_name(stem.name + ".json").write_text(json.dumps(data, indent=2) + "\n")
    stem.with_name(stem.name + ".md").write_text(markdown)
    print(markdown)
