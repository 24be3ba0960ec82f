"""What `edgekd distill --resume` continues with: the search settings and budget its run started with, which
the run's search.json records, and what a --force run left beside the folder."""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path
from typing import Any

from edgekd.distilled import BUDGET_KEYS
from edgekd.errors import ConfigError
from edgekd.fsutil import settled
from edgekd.pipeline.config import CompressConfig
from edgekd.run_inputs import Log

# Options only the search reads: a resumed run trains the student its search chose and cannot search again.
SEARCH_KEYS = ("space", "proxy", "candidates", "latency_anchors", "precision")
# What a distill run records in its --out's search.json (search_file.RUN_KEY).
RUN_KEYS = (*SEARCH_KEYS, "search_file", *BUDGET_KEYS)


def run_settings(config: CompressConfig, out: Path, resume: bool) -> dict[str, Any]:
    """The settings ``config``'s run records for its --resume. A resumed run given no --search keeps the search
    file its run started with: distill.json records it as the uninterrupted run would have."""
    settings = {k: getattr(config, k) for k in RUN_KEYS}
    if resume and settings["search_file"] is None:
        from edgekd.search_file import run_settings as recorded

        settings["search_file"] = recorded(out / "search.json").get("search_file")
    return settings


def as_started(config: CompressConfig, out: Path, log: Log) -> CompressConfig:
    """``config`` with the search settings and budget the run in ``out`` started with. Taken from the resuming
    command, a forgotten budget flag recorded no budget in distill.json (and `compress --distilled` validated
    against none), and another one a budget the student was never searched for; search flags are refused
    on --resume, and their defaults were recorded as if the run had searched with them."""
    from edgekd.search_file import run_settings as recorded

    started = recorded(out / "search.json")
    was = {k: started.get(k) for k in BUDGET_KEYS}
    given = {k: getattr(config, k) for k in BUDGET_KEYS}
    if any(v is not None for v in given.values()) and given != was:
        raise ConfigError(f"{_budget_text(given)} is not the budget the run in '{out}' started with "
                          f"({_budget_text(was)}), which its student was searched and trained for",
                          "resume without budget flags to keep the run's, or start the run over without --resume")
    if given != was:
        log(f"budget: {_budget_text(was)}, as the run in '{out}' started with")
    return dataclasses.replace(config, **was, **{k: started[k] for k in SEARCH_KEYS if k in started})


def _budget_text(budget: dict[str, Any]) -> str:
    return ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in budget.items() if v is not None) or "no budget"


def note_leftovers(out: Path, log: Log) -> None:
    """Say where a --force run into ``out`` that was killed (SIGKILL, a power cut) left the earlier run it had set
    aside: nothing removes it after that, and it may be as large as the run itself."""
    where = settled(out)
    for left in sorted(where.parent.glob(f"{glob.escape(where.name)}.edgekd-replaced-*")):
        log(f"warning: '{left}' holds an earlier run of '{out}' that a --force run set aside and was stopped "
            f"before removing; the run in '{out}' does not need it: delete it to free its space")
