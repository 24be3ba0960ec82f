"""What `edgekd distill --resume` continues with: the search settings and budget its run started with, which
the run's search.json records, and what a --force run left beside the folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgekd.distilled import BUDGET_KEYS, put_back, set_aside_runs
from edgekd.errors import ConfigError, OutputError
from edgekd.pipeline.config import CompressConfig, budget_flags
from edgekd.run_inputs import Log
from edgekd.search_file import recorded_run

# Options only the search reads: refused with a search file, whose ranking stands, and on --resume, which trains
# the student its run's search chose and cannot search again.
SEARCH_KEYS = ("space", "proxy", "candidates", "latency_anchors", "precision")
# What a distill run records in its --out's search.json (search_file.RUN_KEY).
# The opset too: the search sized its students' files at it, and the run exports them at it.
RUN_KEYS = (*SEARCH_KEYS, "opset", "search_file", *BUDGET_KEYS)


def run_settings(config: CompressConfig, out: Path, resume: bool) -> dict[str, Any]:
    """The settings ``config``'s run records for its --resume. A resumed run given no --search keeps the search
    file its run started with: distill.json records it as the uninterrupted run would have."""
    settings = {k: config.setting(k) for k in RUN_KEYS}
    if resume and settings["search_file"] is None:
        settings["search_file"] = recorded_run(out / "search.json").get("search_file")
    return settings


def as_started(config: CompressConfig, out: Path, log: Log) -> CompressConfig:
    """``config`` with the search settings and budget the run in ``out`` started with. Taken from the resuming
    command, a forgotten budget flag recorded no budget in distill.json (and `compress --distilled` validated
    against none), and another one a budget the student was never searched for; search flags are refused
    on --resume, and their defaults were recorded as if the run had searched with them. A --search is
    checked to choose the run's student, and then continues from the run's own search.json (see _same_search)."""
    started = recorded_run(out / "search.json")
    was = {k: started.get(k) for k in BUDGET_KEYS}
    given = {k: getattr(config, k) for k in BUDGET_KEYS}
    # a flag left out is taken from the run (README: "a budget flag may be left out"), one given must be the run's
    if any(v is not None and v != was[k] for k, v in given.items()):
        raise ConfigError(f"{_budget_text(given)} is not the budget the run in '{out}' started with "
                          f"({_budget_text(was)}), which its student was searched and trained for",
                          "resume without budget flags to keep the run's, or start the run over with --force (it "
                          "replaces the run)")
    opset = _started_opset(config, started, out, log)
    if config.search_file:
        config = _same_search(config, out, log)
    if given != was:
        log(f"budget: {_budget_text(was)}, as the run in '{out}' started with")
    return dataclasses.replace(config, **was, **{k: started[k] for k in SEARCH_KEYS if k in started}, opset=opset)


def _started_opset(config: CompressConfig, started: dict[str, Any], out: Path, log: Log) -> int | None:
    """The opset the run in ``out`` started with (it exports its student at it, and its search sized the
    students' files at it): a resumed run left at the default exported at 18 a student chosen at 17."""
    from edgekd.search_file import is_opset

    was = started.get("opset")
    if not is_opset(was) or was == config.export_opset:
        return config.opset
    if config.opset is not None:  # given (even as 18), and not the run's
        raise ConfigError(f"--opset {config.opset} is not the opset the run in '{out}' started with ({was}), at "
                          "which its search sized the students' files", "resume without --opset to keep the "
                          "run's, or start the run over with --force (it replaces the run)")
    log(f"export: --opset {was}, as the run in '{out}' started with")
    return was


def _same_search(config: CompressConfig, out: Path, log: Log) -> CompressConfig:
    """``config`` without its --search when that file chose the student the run in ``out`` trains, which then
    continues from its own search.json, kept as it was; refused, before anything is written, when it chose
    another. Reused as given, another file replaced the run's search.json before its checkpoint was refused as
    another student's, and the run could then not be resumed at all. A file that cannot be read is left to
    ``load_search``, which refuses it with its reason (it rewrites nothing on resume)."""
    run_file = out / "search.json"
    given, ours = chosen_student(config.search_file), chosen_student(run_file)
    if given is None or ours is None:
        return config
    if given != ours:
        raise ConfigError(f"--search '{config.search_file}' chose the student {given}, and the run in '{out}' "
                          f"trains {ours} (its '{run_file}')", "resume without --search to continue the run, or "
                          "start it over with --force (it replaces the run) to train the other student")
    log(f"search: '{config.search_file}' chose the student the run in '{out}' trains; continuing from its "
        f"'{run_file}'")
    return dataclasses.replace(config, search_file=None)


def chosen_student(path: str | Path) -> str | None:
    """The key of the student the search.json at ``path`` chose; None for a file that is no readable search result."""
    from edgekd.search_file import read_search

    try:
        return str(read_search(path).chosen.spec.key())
    except (OSError, ConfigError):
        return None


def _budget_text(budget: dict[str, Any]) -> str:
    return budget_flags(budget) or "no budget"


def note_leftovers(out: Path, log: Log) -> None:
    """Say where a --force run into ``out`` that was killed (SIGKILL, a power cut) left the earlier run it had set
    aside: nothing removes it after that, and it may be as large as the run itself. Killed before its first
    checkpoint, the --force run left ``out`` nothing to resume, and the leftover is the only copy of the earlier
    run: it is then said how to put it back, never to delete it."""
    ours = (out / "checkpoint.pt").is_file()
    for left in set_aside_runs(out):
        said = f"warning: '{left}' holds an earlier run of '{out}' that a --force run set aside and was stopped "
        if ours:
            log(said + f"before removing; the run in '{out}' does not need it: delete it to free its space")
        else:
            log(said + f"before its first checkpoint: it is the only copy of that run; put it back with "
                f"{put_back(out, left)}")


def nothing_to_resume(out: Path) -> OutputError:
    """The refusal of a --resume whose --out holds no checkpoint.pt, with a way on that is not refused in turn:
    "run without --resume" was, with "pass --resume to continue its run", for a folder that is not empty."""
    problem = f"nothing to resume in '{out}' (no checkpoint.pt)"
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():  # there, and no file: "no checkpoint.pt" was untrue
        what = "a folder" if checkpoint.is_dir() else "no regular file"
        return OutputError(f"nothing to resume in '{out}': its checkpoint.pt is {what}, not a checkpoint file",
                           "start over with --force instead of --resume (it replaces what the folder holds), or "
                           "choose another --out")
    left = set_aside_runs(out)
    if left:
        return OutputError(f"{problem}: a --force run into it was stopped before its first checkpoint, and the "
                           f"earlier run it replaced is in '{left[-1]}'", f"put that run back with "
                           f"{put_back(out, left[-1])}, then resume; or start over with --force instead of --resume")
    if out.is_dir() and any(out.iterdir()):
        return OutputError(problem, "start over with --force instead of --resume (it replaces what the folder holds), "
                                    "or choose another --out")
    return OutputError(problem, "run without --resume to start")
