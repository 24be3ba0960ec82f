"""report.md tables and the self-contained report.html: plots, missing pieces, atomic writing."""

import base64
import json
import re
import subprocess
import sys

import pytest

from edgekd.errors import ArtifactError, OutputError
from edgekd.report import render_markdown, summary_table
from edgekd.report_html import render_html, write_html_report


def _entry(name, role, precision, accuracy, size, p50, primary=False, verdicts=None):
    return {"artifact": {"name": name, "role": role, "precision": precision, "path": f"{name}.onnx",
                         "exporter": f"onnx-{precision}", "opset": 18, "sha256": "0" * 64, "size_bytes": size,
                         "details": {}},
            "checker_ok": True, "parity": None, "accuracy": accuracy,
            "latency": {"p50_ms": p50, "p90_ms": p50 * 1.2, "p99_ms": p50 * 1.5, "mean_ms": p50, "cv": 0.01,
                        "runs": 280, "repeats": 7},
            "verdicts": verdicts if verdicts is not None else {}, "passed": True, "primary": primary}


def _config(widths):
    return {"stem": 16, "widths": widths, "depths": [1, 1, 1]}


def _candidate(widths, score, ms, predicted):
    return {"spec": {"space": "mbv2", "config": _config(widths)}, "params": 1000 * widths[0], "size_bytes": 4000,
            "score": score, "latency_ms": ms, "predicted_ms": predicted}


@pytest.fixture
def manifest():
    history = [{"epoch": e, "train_loss": 3.0 / e, "val_accuracy": 0.5 + e / 10, "seconds": 1.0} for e in (1, 2, 3)]
    return {
        "schema": "edgekd.manifest", "schema_version": 1, "created": "2026-01-01T00:00:00+00:00",
        "tools": {"edgekd": "0.1.0"},
        "profile": {"name": "fast-test", "description": "test <profile>", "digest": "x", "runtime": {},
                    "runner": {"kind": "local"},
                    "measure": {"batch_size": 1, "warmup_runs": 3, "repeats": 7, "runs_per_repeat": 40}},
        "budget": {"latency_ms": 0.5, "max_size_kb": 128},
        "primary": "student-int8", "passed": True, "notes": ["int8 student ships: 1.50x faster"],
        "artifacts": [_entry("teacher-fp32", "teacher", "fp32", 0.99, 1_500_000, 2.0),
                      _entry("student-fp32", "student", "fp32", 0.97, 100_000, 0.3, verdicts={"latency": True}),
                      _entry("student-int8", "student", "int8", 0.96, 40_000, 0.2, True, {"latency": True})],
        "data": {"name": "digits", "test": 359},
        "teacher": {"source": "tiny teacher"},
        "student": {"spec": {"space": "mbv2", "config": _config([8, 16, 24])}, "params": 8000,
                    "search_latency_ms": 0.25, "predicted_latency_ms": 0.27,
                    "distill": {"best_epoch": 3, "best_val_accuracy": 0.8, "history": history}},
    }


@pytest.fixture
def search():
    cands = [_candidate([8, 16, 24], -1.0, 0.25, 0.27), _candidate([8, 8, 8], -2.0, 0.1, 0.11),
             _candidate([16, 16, 16], -1.5, 0.4, None), _candidate([4, 4, 4], -3.0, None, 0.05)]
    key = "mbv2:" + json.dumps(_config([8, 8, 8]), sort_keys=True)
    chosen = "mbv2:" + json.dumps(_config([8, 16, 24]), sort_keys=True)
    return {"chosen": cands[0], "candidates": cands, "pareto": [key, chosen], "proxy": "diswot",
            "precision": "fp32", "latency_source": "predicted+measured", "evaluated": 4, "measured": 3, "seconds": 1}


def _images(html):
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_html_has_every_plot_inline_and_the_tables(manifest, search):
    html = render_html(manifest, search)
    images = _images(html)
    assert len(images) == 4 and all(png.startswith(b"\x89PNG") for png in images)
    assert "No plot" not in html
    assert "<tr class=primary><td>student-int8 (primary)</td>" in html
    assert "p50 &lt;= 0.5 ms, size &lt;= 128 KB" in html and "test &lt;profile&gt;" in html  # escaped
    assert "int8 student ships" in html and "diswot" in html and ">chosen<" in html and ">Pareto<" in html
    assert not re.search(r'(src|href)="(http|file|/)', html)  # nothing outside the one file


def test_html_notes_show_code_spans_as_report_md_renders_them(manifest, search):
    """The notes are markdown in report.md: their code spans showed in report.html with the backticks written."""
    manifest["notes"] = ["per-class accuracy (`class_accuracy`) leaves <b> out"]
    html = render_html(manifest, search)
    assert "<li>per-class accuracy (<code>class_accuracy</code>) leaves &lt;b&gt; out</li>" in html


def test_html_candidates_table_marks_the_limits_passed_over_candidates_broke(manifest, search):
    search = {**search, "budget": {"latency_ms": 0.3, "max_size_kb": 3.0}}
    search["candidates"][1] = {**search["candidates"][1], "file_bytes": 3073}  # on the front, 1 byte over
    html = render_html(manifest, search)
    assert ">Pareto, over --max-size-kb<" in html and ">over --budget-ms<" in html  # the third: 0.4 ms measured
    assert html.count("over --") == 2  # the fourth is only predicted: nothing known broken


def test_html_candidates_table_says_a_candidate_was_passed_over_on_its_corrected_prediction(manifest, search):
    """The fourth, predicted 0.05 ms and not measured, sat under --budget-ms 0.051 with an empty cell: its space
    measured 2.8x its predictions, which put it over."""
    search = {**search, "budget": {"latency_ms": 0.051}, "latency_scale": {"mbv2": 2.8}}
    html = render_html(manifest, search)
    assert ">predicted over after correction (x2.80)<" in html
    assert ("<p><code>mbv2</code> candidates measured 2.80x their predicted latency (median of those measured), "
            "so those not measured were judged against the budget by their prediction times that.</p>") in html
    from edgekd.types import SearchResult

    assert SearchResult.from_dict(search).latency_scale == {"mbv2": 2.8}
    assert SearchResult.from_dict({k: v for k, v in search.items() if k != "latency_scale"}).latency_scale == {}


def test_html_degrades_without_search_or_history(manifest):
    del manifest["student"]
    html = render_html(manifest, None)
    assert len(_images(html)) == 1  # the teacher/student comparison only
    assert "No plot: no search result (search.json) was given" in html
    assert "No plot: the manifest records no distillation history" in html
    # every search predicts (from a fit where the profile has no table): the missing table was never the reason
    assert ("No plot: no latency was both predicted and measured (there is no search.json, and the manifest&#x27;s "
            "student records no predicted latency beside a measured one)") in html


def test_html_without_matplotlib_says_why_each_plot_is_missing(manifest, search, monkeypatch):
    """A missing or broken matplotlib was an ImportError traceback from `edgekd report` and compress's last step."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an import of it finds: it fails
    html = render_html(manifest, search)
    assert not _images(html)
    assert html.count("No plot: matplotlib cannot be imported (") == 4
    assert html.count("reinstall it, a dependency of edgekd, to draw the plots.</p>") == 4
    assert "<tr class=primary><td>student-int8 (primary)</td>" in html and ">chosen<" in html  # the tables stay


def test_latency_plot_uses_predicted_when_not_measured(manifest, search):
    from edgekd.plots import latency_pairs, pareto_plot

    pairs = latency_pairs(manifest, search)
    labels = [p[0] for p in pairs]
    assert labels.count("candidate") == 2 and "chosen student" in labels
    assert ("student-fp32 (validation)", 0.27, 0.3) in pairs  # the search's precision, not the one shipped
    assert pareto_plot({**search, "candidates": [search["candidates"][3]]}) is not None  # predicted only
    assert pareto_plot({**search, "candidates": []}) is None


def test_latency_plot_calls_a_validated_student_shipped_only_when_it_is_the_primary(manifest, search):
    """The fp32 student of an fp32 search was plotted as 'shipped student' while the int8 one shipped."""
    from edgekd.plots import latency_pairs

    validated = [p for p in latency_pairs(manifest, search) if p[0].endswith("(validation)")]
    assert validated == [("student-fp32 (validation)", 0.27, 0.3)]
    validated = [p for p in latency_pairs(manifest, {**search, "precision": "int8"}) if p[0].endswith("(validation)")]
    assert validated == [("shipped student-int8 (validation)", 0.27, 0.2)]


def _pruned(manifest, steps=({"step": 1, "params": 2000, "macs": 0.1, "measured_ms": 0.12},), reached=True):
    """``manifest``'s 8,000-parameter student pruned (--target-ms 0.118) to 2,000 parameters."""
    pruning = {"target_ms": 0.118, "measured_ms": 0.115 if reached else 0.2, "reached": reached, "ratio": 0.5,
               "stage_ratios": [], "scale_ms": 0.12, "params": 2000 if steps else 8000, "steps": list(steps)}
    student = {**manifest["student"], "distill": {**manifest["student"]["distill"], "pruning": pruning}}
    return {**manifest, "student": student}


def test_a_board_profiles_report_says_the_accuracy_is_this_hosts(manifest):
    import copy

    said = "accuracy computed on this host with rpi4-arm64's runtime settings, not on its device"
    assert "computed on this host" not in render_markdown(manifest)
    board = copy.deepcopy(manifest)
    board["profile"].update(name="rpi4-arm64", runner={"kind": "ssh", "host": "pi"})
    data_line = next(line for line in render_markdown(board).splitlines() if line.startswith("- Data:"))
    assert data_line.endswith(f"; {said}"), data_line


def test_a_pruned_student_is_reported_as_pruned_with_the_parameters_it_ships(manifest, search):
    """The report gave the searched config's 117,158 parameters for a student shipped with 4,236, never said it
    was pruned, and plotted the searched network's prediction against the pruned file's latency."""
    pruned = _pruned(manifest)
    said = "pruned to the 0.118 ms target from the searched 8,000-parameter student, 2,000 parameters shipped"
    assert f"- Student: `mbv2` {_config([8, 16, 24])} ({said})" in render_markdown(pruned).splitlines()
    html = render_html(pruned, search)
    assert f"({said})</li>" in html
    assert ("<p>The student was pruned after the search, toward the 0.118 ms target: the search's prediction is for "
            "the network before pruning, so the shipped files are not plotted here (their measured latencies are "
            "in the table above).</p>") in html
    from edgekd.plots import latency_pairs

    assert [p[0] for p in latency_pairs(pruned, search)] == ["candidate", "candidate", "chosen student"]
    assert "(8,000 parameters)" in render_markdown(manifest) and "was pruned" not in render_html(manifest, search)
    missed = "pruned toward the 0.118 ms target (not reached: 0.200 ms measured while pruning) from the searched"
    assert missed in render_markdown(_pruned(manifest, reached=False))
    elsewhere = _pruned(manifest)  # pruned on one profile; compress --distilled may validate on another
    elsewhere["student"]["distill"]["pruning"].update(profile="host-cpu-1t", profile_digest="0" * 16, batch=1)
    assert "(pruned to the 0.118 ms target on 'host-cpu-1t' at batch 1 from the searched" in render_markdown(elsewhere)
    untouched = _pruned(manifest, steps=())  # already under the target: the searched network ships
    assert "(8,000 parameters; not pruned: under the 0.118 ms target already)" in render_markdown(untouched)
    assert any(p[0].endswith("(validation)") for p in latency_pairs(untouched, search))


def test_write_html_report_is_atomic_and_refuses_to_overwrite(manifest, search, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "search.json").write_text(json.dumps(search))
    path = write_html_report(tmp_path)
    assert path == tmp_path / "report.html" and len(_images(path.read_text())) == 4
    with pytest.raises(OutputError, match=r"already exists; pass --force \(force=True from Python\) to replace it"):
        write_html_report(tmp_path)
    # the manifest itself names its folder: it was read as a folder, "'.../manifest.json/manifest.json' does not exist"
    assert write_html_report(tmp_path / "manifest.json", force=True) == tmp_path / "report.html"
    with pytest.raises(ArtifactError, match=r"'.*search.json' is a file, not a run folder; pass the folder compress "
                                            r"wrote \(its --out\), which holds manifest.json"):
        write_html_report(tmp_path / "search.json", force=True)
    (tmp_path / "search.json").unlink()
    assert "no search result" in write_html_report(tmp_path, force=True).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "report.html"]  # no temp files left


def test_write_html_report_bad_inputs(manifest, tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        write_html_report(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(ArtifactError, match="schema version 99, this edgekd reads version 1"):
        write_html_report(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "search.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="search.json' is not valid JSON"):
        write_html_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def _second(edit):
    return lambda search: edit(search["candidates"][1])


@pytest.mark.parametrize("edit, message", [
    (_second(lambda c: c.pop("score")), "'score' is missing"),
    (_second(lambda c: c.update(score=None)), "float() argument must be a string or a real number, not 'NoneType'"),
    (_second(lambda c: c.pop("spec")), "'spec' is missing"),
    (_second(lambda c: c.pop("params")), "'params' is missing"),
    (lambda s: s.update(pareto=None), "'NoneType' object is not iterable"),
    (lambda s: s.update(pareto=[["mbv2"]]), "its 'pareto' is not a list of candidate keys"),
    (_second(lambda c: c.update(latency_ms="0.1")),
     'candidate mbv2:{"depths": [1, 1, 1], "stem": 16, "widths": [8, 8, 8]} has latency_ms \'0.1\', not a time in ms'),
    (lambda s: s["candidates"].__setitem__(1, 5), "'int' object is not subscriptable"),
    (lambda s: s.update(budget={"latency_ms": "fast"}), "its budget's latency_ms is 'fast', not a number"),
    (lambda s: s.update(budget=[0.5]), "its 'budget' is not a JSON object"),
])
def test_an_edited_search_json_is_refused_in_one_line_naming_the_file(manifest, search, tmp_path, run_cli, edit,
                                                                      message):
    """`edgekd report` read search.json checking only that it had a list of candidates: an edited one was a
    KeyError, TypeError or AttributeError traceback from the plot or table that read the edited value."""
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    edit(search)
    (tmp_path / "search.json").write_text(json.dumps(search))
    code, _, err = run_cli("report", tmp_path, "--force")
    assert code == 2 and err.count("\n") == 1, err
    assert err == (f"error: '{tmp_path / 'search.json'}' is not a search result ({message}); restore the search.json "
                   "edgekd wrote, or remove it (the report then has no candidates or Pareto front)\n")
    assert not (tmp_path / "report.html").exists()


def test_a_search_json_s_numbers_are_drawn_as_numbers(manifest, search, tmp_path):
    """A score written as a string passed from_dict's float(), and the plot then compared the string."""
    search["candidates"][1]["score"] = "-2.0"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "search.json").write_text(json.dumps(search))
    assert len(_images(write_html_report(tmp_path).read_text())) == 4


@pytest.mark.parametrize("field, value, message", [
    ("artifacts", None, "artifacts is null, not a list"),
    ("profile", "fast-test", 'profile is "fast-test", not an object'),
    ("budget", {"latency_ms": "fast"}, 'budget.latency_ms is "fast", not a number above zero'),
])
def test_write_html_report_refuses_a_malformed_manifest_naming_the_field(manifest, tmp_path, field, value, message):
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, field: value}))
    with pytest.raises(ArtifactError, match=re.escape(message) + ".*not a manifest edgekd wrote, or it was edited"):
        write_html_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_markdown_table_marks_the_primary(manifest):
    table = summary_table(manifest)
    assert "| **student-int8** (primary) | 96.00% | 39.1 | 0.200 | 0.240 | - | pass |" in table
    assert "| teacher-fp32 | 99.00% |" in table and "reference |" in table
    text = render_markdown(manifest)
    assert "- Budget: p50 <= 0.5 ms, size <= 128 KB" in text and "7 interleaved repeats of 40 runs" in text


def test_matplotlib_is_imported_only_when_plotting():
    code = "import sys, edgekd.report_html, edgekd.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_latency_method_says_how_many_runs_decided(manifest):
    from edgekd.report import latency_method

    assert "from that one run" in latency_method(manifest)  # a manifest written before rounds existed
    manifest.update(latency_rounds=3, int8_speedup={"median": 1.05, "runs": [1.01, 1.05, 1.10]})
    text = latency_method(manifest)
    assert "3 such runs" in text and "median of the 3 runs' ratios: 1.05x (1.01x, 1.05x, 1.10x)" in text
    assert "median of the 3 runs' ratios" in render_markdown(manifest)
    manifest.update(int8_speedup={"median": 1.05, "low": 1.02, "high": 1.08, "pairs": 21, "runs": [1.01, 1.05, 1.10]})
    assert ("median of 21 repeat-by-repeat ratios over the 3 runs: 1.05x (95% interval 1.02-1.08x; per run 1.01x, "
            "1.05x, 1.10x)") in latency_method(manifest)
    batch = manifest["profile"]["measure"]["batch_size"]
    assert f"runs at batch {batch}," in latency_method(manifest)  # no shape recorded: the profile's batch
    for entry, shape in zip(manifest["artifacts"], ([4, 1, 32, 32], [1, 1, 32, 32], [1, 1, 32, 32])):
        entry.setdefault("latency", {})["input_shape"] = shape
    names = [a["artifact"]["name"] for a in manifest["artifacts"]]
    assert f"runs at batch 4 ({names[0]}), 1 ({names[1]}), 1 ({names[2]})," in latency_method(manifest)
    manifest.update(int8_speedup={"median": 1.019, "low": 1.0186, "high": 1.0214, "pairs": 9, "runs": [1.019]})
    assert "1.019x (95% interval 1.019-1.021x;" in latency_method(manifest)  # not 1.02-1.02x beside a NOT


@pytest.mark.parametrize("speedup", [{"median": 1.0198, "runs": [1.0198, 1.03, 1.01]},  # before pairing
                                     {"median": 1.0198, "low": 1.01, "high": 1.03, "pairs": 9, "runs": [1.0198]}])
def test_an_int8_speedup_just_under_the_line_reads_as_the_ship_note_says(manifest, speedup):
    from edgekd.report import latency_method

    manifest.update(latency_rounds=3, int8_speedup=speedup)
    text = latency_method(manifest)
    assert "1.0198x (" in text and "1.02x (" not in text and "1.020x" not in text, text


def test_class_names_with_backticks_pipes_or_newlines_show_as_they_are(manifest):
    from edgekd.report import class_text

    names = ["dog`s toy", "a|b", "``x", "three\nlines"]
    teacher, _, shipped = manifest["artifacts"]
    teacher["class_accuracy"] = {n: 0.9 for n in names}
    shipped["class_accuracy"] = {n: 0.5 for n in names}
    text = class_text(manifest)
    assert "``dog`s toy`` 90.0%" in text and "`a|b` 90.0%" in text and "``` ``x ``` 90.0%" in text
    assert "`three\\nlines` 90.0%" in text and "\n" not in text  # one line, the name still readable
    html = render_html(manifest, None)
    assert all(f"<code>{n}</code> 90.0%" in html for n in ("dog`s toy", "a|b", "``x", "three\\nlines")), html


def test_reports_say_what_input_the_shipped_models_expect(manifest, search):
    from edgekd.report import render_markdown

    assert "Input:" not in render_markdown(manifest)  # a manifest from before it was recorded
    manifest["data"]["preprocess"] = {"layout": "NCHW", "dtype": "float32", "channels": "rgb", "scale": 1 / 255,
                                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize": 224,
                                      "resize_method": "bicubic"}
    line = ("rgb NCHW float32, resized to 224x224 (bicubic), (pixel / 255 - (0.485, 0.456, 0.406)) / "
            "(0.229, 0.224, 0.225)")
    assert f"- Input: {line} (what the shipped models expect" in render_markdown(manifest)
    assert f"<li>Input: {line} (what the shipped models expect" in render_html(manifest, search)


def test_reports_say_how_much_of_an_int8_file_fell_back_to_fp32(manifest, search):
    assert "quantizable nodes" not in render_markdown(manifest)  # no fallback recorded: nothing to say
    rounds = [{"index": 0, "excluded": [], "quantized": 22}, {"index": 1, "excluded": [{}] * 19, "quantized": 3},
              {"index": 2, "excluded": [{}] * 3, "quantized": 0}]
    manifest["artifacts"][2]["artifact"]["details"]["int8_fallback"] = {"rounds": rounds, "best_round": 1}
    line = "runs 3 of its 22 quantizable nodes in int8; the other 19 stay fp32, where int8 ran slower"
    assert f"`student-int8` {line}" in render_markdown(manifest)
    assert f"<code>student-int8</code> {line}" in render_html(manifest, search)
    manifest["artifacts"][2]["artifact"]["details"]["int8_fallback"]["best_round"] = 0  # every node int8
    assert "quantizable nodes" not in render_markdown(manifest)


def test_the_classes_the_shipped_student_loses_most_on_are_named(manifest):
    from edgekd.report import class_text

    assert class_text(manifest) is None  # no per-class figures recorded (an older manifest)
    teacher, _, shipped = manifest["artifacts"]
    teacher["class_accuracy"] = {"cat": 1.0, "dog": 0.9, "owl": 0.8, "emu": 0.7}
    shipped["class_accuracy"] = {"cat": 0.5, "dog": 0.9, "owl": 0.9, "emu": 0.6}
    text = class_text(manifest)
    assert text.index("`cat` 100.0% -> 50.0%") < text.index("`emu` 70.0% -> 60.0%") and "`owl`" not in text
    assert "`student-int8` loses most against the teacher" in render_markdown(manifest)
    assert "<code>student-int8</code> loses most against the teacher" in render_html(manifest, None)
    assert ", and 1 more class(es) lower" in class_text(manifest, shown=1)
    shipped["class_accuracy"] = dict(teacher["class_accuracy"])
    assert "at least as accurate as the teacher on every class with test images." in class_text(manifest)


def test_the_per_class_line_names_the_classes_no_test_image_measured(manifest):
    """With few images (or a val/ folder lacking a class) some classes have no test image: class_accuracy holds
    the tested ones, and the line said it held every class."""
    from edgekd.report import class_text

    teacher, _, shipped = manifest["artifacts"]
    manifest["data"]["class_names"] = ["cat", "dog", "owl", "emu"]
    teacher["class_accuracy"] = {"cat": 1.0, "dog": 0.9}
    shipped["class_accuracy"] = {"cat": 0.5, "dog": 0.9}
    text = class_text(manifest)
    assert "every class with test images in `manifest.json`" in text
    assert text.endswith(" Not measured, with no test image: `owl`, `emu`.")
    shipped["class_accuracy"] = dict(teacher["class_accuracy"])
    assert class_text(manifest).endswith("on every class with test images. Not measured, with no test image: `owl`, "
                                         "`emu`.")


def test_a_proxys_lowest_score_is_shown_as_lowest_and_kept_off_the_pareto_plot(monkeypatch):
    """synflow's log of 0 becomes the lowest finite score: printed, it filled a table cell with 314 digits;
    plotted, it stretched the score axis until the other candidates vanished."""
    import matplotlib.axes

    from edgekd.plots import pareto_plot
    from edgekd.types.search import LOWEST_SCORE, score_text

    assert score_text(LOWEST_SCORE) == "lowest" and score_text(2.5) == "2.500" and score_text(float("-inf")) == "-inf"
    plotted: list[float] = []
    real = matplotlib.axes.Axes.scatter

    def scatter(self, x, y, *args, **kwargs):
        plotted.extend(y)
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", scatter)
    cands = [{"spec": {"space": "mbv2", "config": {"i": i}}, "score": s, "latency_ms": 0.1 * i, "params": 1,
              "size_bytes": 1} for i, s in ((1, 500.0), (2, 600.0), (3, LOWEST_SCORE))]
    assert pareto_plot({"candidates": cands, "pareto": []}) is not None
    assert plotted == [500.0, 600.0]


def test_an_ort_copy_compress_rejected_is_marked_failed_with_why(manifest):
    """report.md marked a copy FAILED only when its outputs differed: one compress failed for the size budget (the
    copy is what an app ships) was listed as if it had passed."""
    entry = manifest["artifacts"][2]
    ort = {"path": "student-int8.ort", "sha256": "0" * 64, "size_bytes": 139_000, "platform": "arm",
           "operators": "student-int8.required_operators.config", "top1_agreement": 1.0, "max_abs_diff": 0.0}
    listed = "`student-int8.ort` (135.7 KB, 100.00% top-1 agreement with `student-int8.onnx`"

    def said(record, verdict):
        entry["ort"], entry["verdicts"] = record, {"latency": True, "ort": verdict}
        return render_markdown(manifest)

    assert f"{listed}, FAILED: over the size budget;" in said({**ort, "passed": False, "agrees": True,
                                                               "over_budget": ["size"]}, False)
    assert f"{listed}, FAILED: over the size and latency budget;" in said(
        {**ort, "passed": False, "agrees": True, "over_budget": ["size", "latency"]}, False)
    assert ("`student-int8.ort` (135.7 KB, 80.00% top-1 agreement with `student-int8.onnx`, FAILED: its outputs "
            "differ from `student-int8.onnx`'s;") in said({**ort, "top1_agreement": 0.8, "passed": False,
                                                          "agrees": False, "over_budget": []}, False)
    assert f"{listed};" in said({**ort, "passed": True, "agrees": True, "over_budget": []}, True)
    # a manifest from before the verdict's parts were recorded: "passed" was the agreement, verdicts.ort the whole
    assert f"{listed}, FAILED: over the size budget;" in said({**ort, "passed": True}, False)
    assert f"{listed};" in said({**ort, "passed": True}, True)


def test_the_reports_say_how_the_student_was_trained_quantization_aware_and_pruning_aware_included(manifest, search):
    """A quantization-aware run showed in the manifest alone (its exporter and qat_start): the reports read as
    if the int8 student had been quantized after training."""
    line = "kd from the teacher, 3 epochs; kept epoch 3 (validation accuracy 80.00%)"
    assert f"- Training: {line}" in render_markdown(manifest).splitlines()
    assert f"<li>Training: {line}</li>" in render_html(manifest, search)
    distill = {**manifest["student"]["distill"], "qat_start": 3, "selected_on": "teacher_agreement",
               "keep": "near-best"}
    qat = {**manifest, "student": {**manifest["student"], "distill": distill}, "recipe": {"losses": "kd:1,dkd:0.5"}}
    assert ("- Training: kd:1,dkd:0.5 from the teacher, 3 epochs, quantization-aware (fake-quant) from epoch 3, the "
            "int8 student exported from it; kept epoch 3 (agreement with the teacher 80.00%, rule near-best)"
            ) in render_markdown(qat).splitlines()
    assert "pruning-aware toward 0.118 ms in 1 step; kept epoch 3" in render_markdown(_pruned(manifest))
    for ce in ("ce", "ce:1"):  # "ce:1 from the teacher" was said
        labels = {**manifest, "recipe": {"losses": ce}}
        assert f"- Training: the labels alone ({ce}), 3 epochs; kept" in render_markdown(labels)
    unkept = {**manifest, "student": {**manifest["student"], "distill": {"history": distill["history"]}}}
    assert "- Training: kd from the teacher, 3 epochs" in render_markdown(unkept).splitlines()  # was a KeyError
    # the feature layers the losses tapped, defaults included, which only the checkpoint held
    tapped = {**manifest, "recipe": {"losses": "kd:1,hint:1"}, "student": {**manifest["student"], "distill": {
        **manifest["student"]["distill"], "taps": {"student": ["stages"], "teacher": ["conv2"]}}}}
    assert ("- Training: kd:1,hint:1 from the teacher, 3 epochs, tapping stages -> conv2 (student -> teacher "
            "layers); kept") in render_markdown(tapped)
    untrained = {**manifest, "student": {**manifest["student"], "distill": None}}
    assert "- Training" not in render_markdown(untrained) and "<li>Training" not in render_html(untrained, search)


def test_another_runs_search_json_beside_the_manifest_is_refused(manifest, search, tmp_path):
    """Another run's search.json put into a run folder rendered without a word: its candidate marked chosen,
    while the Student line named the manifest's student."""
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    other = {**search, "chosen": search["candidates"][1]}
    (tmp_path / "search.json").write_text(json.dumps(other))
    with pytest.raises(ArtifactError, match=r"'.*search.json' chose mbv2 .*\[8, 8, 8\].*, not the student the "
                                            r"manifest records \(mbv2 .*\[8, 16, 24\].*\): it is another run's "
                                            r"search; restore the search.json edgekd wrote, or remove it"):
        write_html_report(tmp_path)
    assert not (tmp_path / "report.html").exists()
    (tmp_path / "search.json").write_text(json.dumps(search))
    assert write_html_report(tmp_path).is_file()


def test_a_distill_folder_is_told_to_be_exported_first(tmp_path):
    """`edgekd report` on a distill run's folder said only that its manifest.json did not exist."""
    (tmp_path / "distill.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"'.*' is an `edgekd distill` folder, which has no report until it is "
                                            r"exported; run `edgekd compress --distilled .* --out OUT`"):
        write_html_report(tmp_path)


_PREPROCESS = {"layout": "NCHW", "dtype": "float32", "channels": "grayscale", "scale": 1 / 16, "mean": [0.3],
               "std": [0.3], "resize": 32}


def test_a_manifest_the_schema_accepts_without_a_resize_method_is_reported(manifest, search, tmp_path):
    """resize_method is optional in the schema; report read it with [] and died with a KeyError traceback."""
    manifest["data"]["preprocess"] = dict(_PREPROCESS)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "search.json").write_text(json.dumps(search))
    assert "resized to 32x32 (method not recorded)" in write_html_report(tmp_path).read_text()


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["data"]["preprocess"].pop("layout"), "data.preprocess has no 'layout'"),
    (lambda m: m["data"]["preprocess"].update(resize_method=3), "data.preprocess.resize_method is 3, not a string"),
    (lambda m: m["artifacts"][2].update(ort=_ort(p50_ms="fast")), 'artifacts[2].ort.p50_ms is "fast", not a number'),
    (lambda m: m["artifacts"][2].update(ort=_ort(vs_onnx=[1])), "artifacts[2].ort.vs_onnx is a list, not a number"),
    (lambda m: m["artifacts"][2].update(ort=_ort(format_version="6")),
     'artifacts[2].ort.format_version is "6", not an integer'),
])
def test_report_refuses_in_one_line_what_it_reads_as_a_number_or_a_key(manifest, tmp_path, run_cli, edit, message):
    manifest["data"]["preprocess"] = dict(_PREPROCESS, resize_method="bilinear")
    edit(manifest)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli("report", tmp_path, "--force")
    assert code == 2 and err.count("\n") == 1 and message in err, err


def _ort(**fields):
    return {"path": "student-int8.ort", "sha256": "0" * 64, "size_bytes": 1, "platform": "x", "operators": "o.config",
            "top1_agreement": 1.0, "max_abs_diff": 0.0, "passed": True, "p50_ms": 0.1, "vs_onnx": 1.0,
            "format_version": 6, "converted_with": "1.20", **fields}


def test_a_proxy_name_with_tex_in_it_is_drawn_as_text(manifest, search, tmp_path):
    """A '$' in search.json's proxy made matplotlib parse the axis label as TeX, a ValueError traceback."""
    search["proxy"] = "$\\foo{$"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "search.json").write_text(json.dumps(search))
    assert len(_images(write_html_report(tmp_path).read_text())) == 4


def test_latency_method_gives_each_artifact_s_repeats_where_they_differ(manifest):
    """The teacher's count, doubled by a noisy stretch, was stated as if every artifact had been measured on it."""
    from edgekd.report import latency_method

    assert "Latency: 7 interleaved repeats of 40 runs" in latency_method(manifest)
    manifest["artifacts"][0]["latency"]["repeats"] = 14
    assert ("Latency: 14 (teacher-fp32), 7 (student-fp32), 7 (student-int8) interleaved repeats of 40 runs"
            in latency_method(manifest))


def test_the_candidates_table_says_how_many_were_evaluated_when_it_ranks_fewer(manifest, search):
    """The page said "4 candidates ranked" where the log and search.json counted 20 evaluated."""
    assert "<p>4 candidates ranked by <code>diswot</code>" in render_html(manifest, search)
    search["evaluated"] = 20
    assert ("<p>4 of the 20 candidates evaluated (the others were predicted outside the limits) ranked by "
            "<code>diswot</code>; the first 4:") in render_html(manifest, search)


def test_a_search_folder_or_a_manifest_that_is_a_folder_is_named_as_such(search, tmp_path):
    """Both were told their manifest.json did not exist."""
    (tmp_path / "search.json").write_text(json.dumps(search))
    with pytest.raises(ArtifactError, match=r"'.*' holds a search result but no manifest.json: a search has no "
                                            r"report until it is compressed; run `edgekd compress --search "
                                            r".*search.json --out OUT`"):
        write_html_report(tmp_path)
    (tmp_path / "search.json").unlink()
    (tmp_path / "manifest.json").mkdir()
    with pytest.raises(ArtifactError, match=r"manifest '.*manifest.json' is a folder, not a file"):
        write_html_report(tmp_path)


def test_an_artifact_with_no_latency_shows_dashes_and_no_speedup(manifest):
    """A manifest may record no latency (``latency: null``): the table showed "nan" for p50 and p90 and still the
    speedup over the teacher, a ratio of latencies it said were unknown."""
    from edgekd.report import latency_method, summary_rows

    manifest["artifacts"][2].update(latency=None, speedup_vs_teacher=10.0)
    manifest["artifacts"][1]["speedup_vs_teacher"] = 6.67
    rows = [cells for _, cells in summary_rows(manifest)]
    assert rows[2][3:6] == ("-", "-", "-") and rows[1][3:6] == ("0.300", "0.360", "6.67x")
    manifest["artifacts"][0]["latency"] = None  # the teacher's: no ratio for any of them
    assert [cells[5] for _, cells in summary_rows(manifest)] == ["-", "-", "-"]
    for entry in manifest["artifacts"]:
        entry["latency"] = None
    assert latency_method(manifest) == "Latency: not measured (the manifest records none), so there are no speedups."
    assert "nan" not in render_markdown(manifest) and "<td>nan</td>" not in render_html(manifest)


def test_report_md_says_a_qat_int8_file_gets_no_fallback(manifest):
    """The run's log said a QAT student's int8 file gets no node-level fallback; report.md did not."""
    from edgekd.pipeline.exporting import QAT_NO_FALLBACK
    from edgekd.report import int8_text

    assert int8_text(manifest) is None
    manifest["artifacts"][2]["artifact"].setdefault("details", {})["int8_fallback_skipped"] = QAT_NO_FALLBACK
    said = int8_text(manifest)
    assert said == f"`{manifest['artifacts'][2]['artifact']['name']}` gets {QAT_NO_FALLBACK}."
    assert said in render_markdown(manifest)


def test_the_comparison_plot_labels_a_figure_not_measured_instead_of_a_bar_of_zero(manifest, monkeypatch):
    """With no latency (or accuracy) recorded, the plot drew a bar of 0 ms labelled 0, a model faster than all."""
    import matplotlib.axes

    from edgekd.plots import comparison_plot

    labelled = []
    keep = matplotlib.axes.Axes.bar_label
    monkeypatch.setattr(matplotlib.axes.Axes, "bar_label",
                        lambda self, bars, **kw: labelled.append(kw.get("labels")) or keep(self, bars, **kw))
    manifest["artifacts"][2].update(latency=None, accuracy=None)
    assert comparison_plot(manifest)
    accuracy, size, p50 = labelled
    assert accuracy[2] == p50[2] == "not measured" and p50[1] == "0.3" and "not measured" not in size


def test_report_says_which_files_are_not_the_recorded_ones(manifest, tmp_path, run_cli):
    """`report --force` over a folder whose files were replaced or removed rendered a bare PASS with the recorded
    figures: the page and stderr now name the files, and the page is still written."""
    from edgekd.fsutil import sha256

    for entry in manifest["artifacts"]:
        path = tmp_path / entry["artifact"]["path"]
        path.write_bytes(entry["artifact"]["name"].encode())
        entry["artifact"]["sha256"] = sha256(path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    said = []
    write_html_report(tmp_path, log=said.append)
    assert said == [] and "Files:" not in (tmp_path / "report.html").read_text()
    (tmp_path / "student-int8.onnx").write_bytes(b"another model")
    (tmp_path / "student-fp32.onnx").unlink()
    code, out, err = run_cli("report", tmp_path, "--force")
    changed = ("student-fp32.onnx is gone; student-int8.onnx changed since the manifest was written (sha256 "
               "differs); restore the files compress wrote, or run compress again")
    assert code == 0 and out.startswith("wrote ") and err.count("\n") == 1
    assert err.startswith("warning: the figures and verdict are those recorded for files that are not all here now: "
                          + changed)
    html = (tmp_path / "report.html").read_text()
    assert ("PASS</strong> (primary artifact <code>student-int8</code>), recorded for files that are not all the "
            "ones here now (see Files)</li><li>Files: <strong class=\"fail\">") in html and changed in html
    with pytest.warns(UserWarning, match="student-fp32.onnx is gone"):  # from Python with no log: a warning
        write_html_report(tmp_path, force=True)
