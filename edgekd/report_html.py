"""report.html: one self-contained file (plots inlined as base64 PNG) with the tables of report.md,
the search's Pareto front, predicted vs measured latency, training curves and the teacher/student
comparison. Any piece the run did not record is left out with a sentence saying why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from edgekd.data import describe_preprocess
from edgekd.errors import ArtifactError, OutputError, api_log, first_line
from edgekd.fsutil import write_text
from edgekd.report import (
    SUMMARY_HEADER,
    budget_text,
    class_text,
    int8_text,
    latency_method,
    ort_text,
    pruned_from_search,
    student_size_text,
    summary_rows,
    training_text,
)
from edgekd.textfmt import md_code_to_html

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.primary { background: #fff4e0; font-weight: bold; }
.pass { color: #17702a; } .fail { color: #b3261e; }
img { max-width: 100%; } .missing { color: #666; font-style: italic; }
footer { color: #666; font-size: 0.8rem; margin-top: 2rem; }
"""


def render_html(manifest: dict[str, Any], search: dict[str, Any] | None = None,
                changed: list[str] | tuple[str, ...] = ()) -> str:
    """The whole report as one HTML string. ``search`` is search.json's content (``SearchResult.to_dict()``);
    without it the search sections say there was none. ``changed``: the listed files that are not the ones the
    manifest records (``files_not_recorded``), said beside its verdict, which is theirs."""
    from edgekd import plots

    budget_ms = (manifest.get("budget") or {}).get("latency_ms")
    missing = _why_no_plots()
    draw = missing is None
    sections = [
        _header(manifest, changed),
        _section("Teacher and students", plots.comparison_plot(manifest) if draw else None,
                 missing or "no artifacts were recorded",
                 _summary_table(manifest) + f"<p>{escape(latency_method(manifest))}</p>"
                 + "".join(f"<p>{md_code_to_html(text)}</p>" for text in
                           (int8_text(manifest), ort_text(manifest), class_text(manifest)) if text)),
        _section("Search: Pareto front", plots.pareto_plot(search, budget_ms) if draw else None,
                 missing or "no search result (search.json) was given, so there is no Pareto front to show",
                 _candidates_table(search) if search else ""),
        # every search predicts (from the profile's table, else from a fit): only a run without one has no pair
        _section("Latency: predicted vs measured", plots.latency_plot(manifest, search) if draw else None,
                 missing or "no latency was both predicted and measured (there is no search.json, and the "
                            "manifest's student records no predicted latency beside a measured one)",
                 _pruned_text(manifest)),
        _section("Training curves", plots.training_plot(manifest) if draw else None,
                 missing or "the manifest records no distillation history"),
        _notes(manifest),
    ]
    tools = ", ".join(f"{k} {v}" for k, v in (manifest.get("tools") or {}).items())
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>edgekd report</title>"
            f"<style>{_STYLE}</style></head>\n<body>\n" + "\n".join(sections)
            + f"\n<footer>Tools: {escape(tools)}. Created {escape(str(manifest.get('created', '?')))}.</footer>"
            "\n</body></html>\n")


def _why_no_plots() -> str | None:
    """Why no plot can be drawn, or None: without matplotlib, or with a broken one, the report and compress's
    last step died with an ImportError traceback, where the tables alone still say what the run measured."""
    try:
        import matplotlib.pyplot  # noqa: F401  (plots.py picks its backend before drawing, as after this)
    except Exception as exc:  # a broken install raises what its own imports raise, not only ImportError
        return (f"matplotlib cannot be imported ({first_line(exc)}): reinstall it, a dependency of edgekd, to draw "
                "the plots")
    return None


def write_html_report(out_dir: str | Path, force: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Render ``out_dir``/report.html from the manifest.json (and search.json, if present) there; ``out_dir``
    may be that manifest.json itself. A listed file that is gone or changed since the manifest was written is
    said in the report and as a warning to ``log`` (default: an ``EdgeKDWarning``).

    Writes atomically; an existing report.html is replaced only with ``force``.
    """
    from edgekd.manifest_io import files_not_recorded, load_manifest

    out_dir = Path(out_dir)
    if out_dir.is_file():  # `edgekd report OUT/manifest.json` said OUT/manifest.json/manifest.json was missing
        if out_dir.name != "manifest.json":
            raise ArtifactError(f"'{out_dir}' is a file, not a run folder",
                                "pass the folder compress wrote (its --out), which holds manifest.json")
        out_dir = out_dir.parent
    target = out_dir / "report.html"
    if target.exists() and not force:
        raise OutputError(f"'{target}' already exists", "pass --force (force=True from Python) to replace it")
    if not (out_dir / "manifest.json").exists() and (out_dir / "distill.json").is_file():
        raise ArtifactError(f"'{out_dir}' is an `edgekd distill` folder, which has no report until it is exported",
                            f"run `edgekd compress --distilled {out_dir} --out OUT`: it exports, validates and "
                            "writes OUT/report.html")
    if not (out_dir / "manifest.json").exists() and not (out_dir / "distill.json").exists():
        from edgekd.distilled import unfinished_run

        unfinished = unfinished_run(out_dir)  # an interrupted distill run: `compress --search` trains from epoch 0
        if unfinished:
            raise ArtifactError(*unfinished)
    if not (out_dir / "manifest.json").exists() and (out_dir / "search.json").is_file():
        raise ArtifactError(f"'{out_dir}' holds a search result but no manifest.json: a search has no report until "
                            "it is compressed", f"run `edgekd compress --search {out_dir / 'search.json'} --out OUT`: "
                            "it distills, exports, validates and writes OUT/report.html")
    manifest = load_manifest(out_dir / "manifest.json")
    search = _read_search(out_dir / "search.json")
    _check_same_run(manifest, search, out_dir / "search.json")
    # Still rendered: the recorded run is worth showing, but never as a bare PASS for files not the ones measured.
    changed = files_not_recorded(manifest, out_dir)
    if changed:
        api_log(log)(f"warning: {_changed_text(changed)}")
    write_text(target, render_html(manifest, search, changed))
    return target


def _changed_text(changed: list[str] | tuple[str, ...]) -> str:
    return (f"the figures and verdict are those recorded for files that are not all here now: {'; '.join(changed)}; "
            "restore the files compress wrote, or run compress again (`edgekd gate` checks the files as they are)")


# What render_html does without a search.json: those two pieces say there was no search.
_SEARCH_FIX = "restore the search.json edgekd wrote, or remove it (the report then has no candidates or Pareto front)"


def _check_same_run(manifest: dict[str, Any], search: dict[str, Any] | None, path: Path) -> None:
    """Refuse a search.json whose chosen student is not the manifest's: another run's file, put beside this
    manifest, was rendered as this run's search (its candidate marked chosen while the Student line named
    another)."""
    student = manifest.get("student") or {}
    if search is None or not student.get("spec"):
        return
    chosen, shipped = search["chosen"]["spec"], student["spec"]
    if (chosen["space"], chosen["config"]) != (shipped["space"], shipped["config"]):
        raise ArtifactError(f"'{path}' chose {chosen['space']} {json.dumps(chosen['config'])}, not the student the "
                            f"manifest records ({shipped['space']} {json.dumps(shipped['config'])}): it is another "
                            "run's search", _SEARCH_FIX)


def _read_search(path: Path) -> dict[str, Any] | None:
    """search.json as the run wrote it, read through the checks a reused search passes: an edited or foreign
    file was a traceback from the plot or table that read the edited value."""
    from edgekd.errors import ConfigError
    from edgekd.search_file import read_search

    if not path.is_file():
        return None
    try:
        result = read_search(path)
    except ConfigError as exc:
        raise ArtifactError(exc.problem, _SEARCH_FIX) from None
    return {**result.record, **result.to_dict()}  # the record's own entries (its budget), every value checked


def _header(manifest: dict[str, Any], changed: list[str] | tuple[str, ...] = ()) -> str:
    passed = bool(manifest.get("passed"))
    profile = manifest.get("profile") or {}
    data = manifest.get("data") or {}
    recorded = ", recorded for files that are not all the ones here now (see Files)" if changed else ""
    facts = [
        ("Verdict", f"<strong class=\"{'pass' if passed else 'fail'}\">{'PASS' if passed else 'FAIL'}</strong>"
                    f" (primary artifact <code>{escape(str(manifest.get('primary')))}</code>){recorded}"),
        ("Profile", f"<code>{escape(str(profile.get('name', '?')))}</code>: "
                    f"{escape(str(profile.get('description', '')))}"),
        ("Budget", escape(budget_text(manifest.get("budget") or {}))),
        ("Data", escape(f"{data.get('name', '?')}, test set of {data.get('test', '?')} images")),
        ("Teacher", escape(str((manifest.get("teacher") or {}).get("source", "?")))),
    ]
    if data.get("preprocess"):
        facts.insert(4, ("Input", escape(describe_preprocess(data["preprocess"])) + " (what the shipped models "
                         "expect; <code>data.preprocess</code> in manifest.json)"))
    student = manifest.get("student")
    if student:
        spec = student["spec"]
        facts.append(("Student", f"<code>{escape(spec['space'])}</code> {escape(json.dumps(spec['config']))} "
                                 f"({escape(student_size_text(student))})"))
    if training_text(manifest):
        facts.append(("Training", escape(training_text(manifest))))  # type: ignore[arg-type]
    if changed:
        facts.insert(1, ("Files", f"<strong class=\"fail\">{md_code_to_html(_changed_text(changed))}</strong>"))
    items = "".join(f"<li>{k}: {v}</li>" for k, v in facts)
    return f"<h1>edgekd report</h1>\n<ul>{items}</ul>"


def _section(title: str, png: str | None, missing: str, body: str = "") -> str:
    figure = (f'<img alt="{escape(title)}" src="data:image/png;base64,{png}">' if png
              else f'<p class="missing">No plot: {escape(missing)}.</p>')
    return f"<h2>{escape(title)}</h2>\n{figure}\n{body}"


def _summary_table(manifest: dict[str, Any]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in SUMMARY_HEADER)
    rows = []
    for primary, cells in summary_rows(manifest):
        verdict = cells[-1]
        css = "fail" if verdict.startswith("FAIL") else ("pass" if verdict == "pass" else "")
        name = escape(cells[0]) + (" (primary)" if primary else "")
        tds = "".join(f"<td>{escape(c)}</td>" for c in cells[1:-1])
        rows.append(f'<tr{" class=primary" if primary else ""}><td>{name}</td>{tds}'
                    f'<td class="text {css}">{escape(verdict)}</td></tr>')
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _candidates_table(search: dict[str, Any], top: int = 10) -> str:
    from edgekd.plots import candidate_key
    from edgekd.types.search import broken_limits, score_text, size_kb_text

    front = set(search.get("pareto", ()))
    chosen = candidate_key(search["chosen"]) if search.get("chosen") else None
    budget = search.get("budget") or {}
    scale = search.get("latency_scale") or {}  # absent from files written before it was recorded
    sizes = search.get("size_scale") or {}  # so is this
    rows = []
    for rank, c in enumerate(search["candidates"][:top], 1):
        key = candidate_key(c)
        broken = broken_limits(c.get("latency_ms"), c.get("file_bytes"), budget.get("latency_ms"),
                               budget.get("max_size_kb"), c.get("predicted_ms"), scale.get(c["spec"]["space"], 1.0),
                               c.get("size_bytes"), sizes.get(c["spec"]["space"], 1.0))
        mark = "chosen" if key == chosen else ", ".join(m for m in ("Pareto" if key in front else "", broken) if m)
        cells = [str(rank), f"{c['params']:,}", size_kb_text(c["size_bytes"], c.get("file_bytes")),
                 score_text(c["score"]), _ms(c.get("latency_ms")), _ms(c.get("predicted_ms"))]
        rows.append("<tr>" + "".join(f"<td>{escape(x)}</td>" for x in cells)
                    + f'<td class="text">{mark}</td><td class="text"><code>'
                      f"{escape(json.dumps(c['spec']['config']))}</code></td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("rank", "params", "KB (~ estimated)", "score", "measured ms",
                                              "predicted ms", "", "config"))
    listed, shown = len(search["candidates"]), min(top, len(search["candidates"]))
    evaluated = search.get("evaluated")
    # the search ranks only the candidates predicted within the limits: the log and search.json count them all
    count = (f"{listed} of the {evaluated} candidates evaluated (the others were predicted outside the limits)"
             if isinstance(evaluated, int) and evaluated > listed else f"{listed} candidates")
    return (f"<p>{count} ranked by <code>{escape(str(search.get('proxy', '?')))}"
            f"</code>; the first {shown}:</p><table><tr>{head}</tr>{''.join(rows)}</table>"
            + _correction_text(scale, budget.get("latency_ms")))


def _correction_text(scale: dict[str, float], budget_ms: float | None) -> str:
    """The correction the search judged unmeasured candidates by, where it was one: the table shows their
    predictions as made, and without it a candidate predicted under the budget seems passed over for nothing."""
    from edgekd.types.search import slower_than_predicted

    slow = slower_than_predicted(scale)
    if not slow or budget_ms is None:
        return ""
    said = "; ".join(f"<code>{escape(name)}</code> candidates measured {r:.2f}x their predicted latency"
                     for name, r in slow.items())
    return (f"<p>{said} (median of those measured), so those not measured were judged against the budget by "
            "their prediction times that.</p>")


def _pruned_text(manifest: dict[str, Any]) -> str:
    """Why the shipped student has no point in the predicted-vs-measured plot when it was pruned after the
    search: the prediction is the searched network's, and pairing it with the pruned file's latency would
    read as the latency model's error."""
    pruning = pruned_from_search(manifest.get("student") or {})
    if pruning is None:
        return ""
    return (f"<p>The student was pruned after the search, toward the {pruning['target_ms']:g} ms target: the "
            "search's prediction is for the network before pruning, so the shipped files are not plotted here "
            "(their measured latencies are in the table above).</p>")


def _ms(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


def _notes(manifest: dict[str, Any]) -> str:
    notes = manifest.get("notes") or []
    if not notes:
        return ""
    # written as markdown in report.md (`class_accuracy` a code span): shown as that renders, not with its backticks
    return "<h2>Notes</h2>\n<ul>" + "".join(f"<li>{md_code_to_html(n)}</li>" for n in notes) + "</ul>"
