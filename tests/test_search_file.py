"""search.json records the teacher it was searched for: a pruned student of another teacher is refused, and
a ranking whose proxy scored candidates against another teacher or other images is said, not silently reused."""

import json
import re
from dataclasses import replace

import pytest
import torch

from edgekd.errors import ConfigError
from edgekd.profiles import load_profile
from edgekd.search_file import load_search, search_record, teacher_record
from edgekd.types import Budget, Candidate, SearchResult, StudentSpec


def _write(tmp_path, data, teacher, space="pruned", proxy="params", edit=None):
    from edgekd.search.spaces import SPACES

    config = {"keep": [0.5]} if space == "pruned" else SPACES.get(space).smallest()
    chosen = Candidate(StudentSpec(space, config), 1000, 4000, 1.0, latency_ms=0.1, predicted_ms=0.1)
    result = SearchResult(chosen, (chosen,), proxy, 1, 1, 0.1, precision="int8")
    path = tmp_path / "search.json"
    record = search_record(result, load_profile("host-cpu"), Budget(), data, teacher)
    if edit:
        edit(record)
    path.write_text(json.dumps(record))
    return path


def _chosen(record):
    return record["chosen"]


@pytest.mark.parametrize("edit, message", [
    (lambda r: _chosen(r)["spec"]["config"].pop("widths"), "its chosen student has no 'widths' (space 'mbv2')"),
    (lambda r: _chosen(r)["spec"]["config"].update(stem="16"), "its chosen student has stem = '16', not one of"),
    (lambda r: _chosen(r)["spec"]["config"]["widths"].pop(), "has no stage 2 in 'widths'"),
    (lambda r: _chosen(r).update(latency_ms="0.09"), "has latency_ms '0.09', not a time in ms"),
    (lambda r: _chosen(r).update(latency_ms=None), "its chosen student has no measured latency"),
    (lambda r: r.update(precision="int4"), "its precision is 'int4', not fp32 or int8"),
    (lambda r: _chosen(r)["spec"].update(space="nosuch"), "space 'nosuch', which this edgekd does not have"),
])
def test_a_search_file_edited_into_something_the_search_never_writes_is_refused_in_one_line(tmp_path, small_data,
                                                                                            edit, message):
    """A hand-edited search.json once reached training as a KeyError or TypeError traceback from a layer."""
    path = _write(tmp_path, small_data, None, space="mbv2", edit=edit)
    with pytest.raises(ConfigError, match=f"'{path}' is not a search result .*" + message.replace("(", r"\(")
                       .replace(")", r"\)")) as exc:
        load_search(path, small_data, load_profile("host-cpu"), None)
    assert "pass the JSON file `edgekd search --out` wrote" in exc.value.fix


def test_the_record_holds_the_teachers_architecture_not_its_weights():
    a, b = torch.nn.Conv2d(1, 8, 3), torch.nn.Conv2d(1, 8, 3)
    assert teacher_record(a) == teacher_record(b) and teacher_record(a)["params"] == 80
    assert teacher_record(a)["architecture"] != teacher_record(torch.nn.Conv2d(1, 12, 3))["architecture"]
    assert teacher_record(lambda x: x) == {}  # a plain callable has nothing to compare


def test_a_pruned_student_of_another_teacher_is_refused(tmp_path, small_data):
    path = _write(tmp_path, small_data, torch.nn.Conv2d(1, 8, 3))
    with pytest.raises(ConfigError, match=r"chose a 'pruned' student of another teacher .*80 params.*measured for "
                                          r"that network") as exc:
        load_search(path, small_data, load_profile("host-cpu"), None, torch.nn.Conv2d(1, 12, 3))
    assert "again for this teacher, data, profile and budget" in exc.value.fix
    load_search(path, small_data, load_profile("host-cpu"), None, torch.nn.Conv2d(1, 8, 3))  # the same one


def test_another_teacher_or_other_images_are_said_when_the_proxy_scored_against_them(tmp_path, small_data):
    path = _write(tmp_path, small_data, torch.nn.Conv2d(1, 8, 3), space="mbv2", proxy="diswot")
    lines: list[str] = []
    other = replace(small_data, name="other-folder")
    load_search(path, other, load_profile("host-cpu"), None, torch.nn.Conv2d(1, 12, 3), lines.append)
    assert len(lines) == 2
    assert lines[0].startswith(f"warning: '{path}' ranked its candidates with 'diswot' against another teacher")
    assert f"on data '{small_data.name}'" in lines[1]
    assert "this run's is 'other-folder'" in lines[1] and "run `edgekd search` again" in lines[1]


def test_a_params_ranking_and_an_unrecorded_teacher_are_reused_without_a_word(tmp_path, small_data):
    lines: list[str] = []
    path = _write(tmp_path, small_data, torch.nn.Conv2d(1, 8, 3), space="mbv2")
    load_search(path, replace(small_data, name="other"), load_profile("host-cpu"), None, torch.nn.Conv2d(1, 12, 3),
                lines.append)
    path = _write(tmp_path, small_data, None)  # written before the teacher was recorded
    load_search(path, small_data, load_profile("host-cpu"), None, torch.nn.Conv2d(1, 12, 3), lines.append)
    assert lines == []


@pytest.mark.parametrize("key, value, kind", [("data", [1, 16, 16], "object"), ("teacher", "resnet18", "object"),
                                              ("profile", {"name": "host-cpu"}, "string"), ("budget", 0.5, "object")])
def test_a_record_whose_context_has_the_wrong_type_is_not_a_search_result(tmp_path, small_data, key, value, kind):
    path = _write(tmp_path, small_data, torch.nn.Conv2d(1, 8, 3))
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, key: value}))
    with pytest.raises(ConfigError, match=rf"is not a search result \(its '{key}' is not a JSON {kind}\)"):
        load_search(path, small_data, load_profile("host-cpu"), None, torch.nn.Conv2d(1, 12, 3))


def test_a_recorded_teacher_without_a_parameter_count_is_still_named_in_the_refusal(tmp_path, small_data):
    path = _write(tmp_path, small_data, torch.nn.Conv2d(1, 8, 3))
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "teacher": {"architecture": "abc", "params": "many"}}))
    with pytest.raises(ConfigError, match=r"another teacher \(architecture abc; this one is [0-9a-f]{16}\)"):
        load_search(path, small_data, load_profile("host-cpu"), None, torch.nn.Conv2d(1, 12, 3))


def test_a_chosen_student_over_the_size_budget_is_refused_by_its_written_file_or_else_its_estimate(tmp_path,
                                                                                                 small_data):
    """--budget-ms was checked against the search file and --max-size-kb was not: compress trained, then failed."""
    path = _write(tmp_path, small_data, None, space="mbv2")  # an estimate of 4000 bytes, no file written
    profile = load_profile("host-cpu")
    with pytest.raises(ConfigError, match=r"the student chosen in '.*search.json' is about 3.9 KB \(int8\), over "
                                          r"--max-size-kb 3; run `edgekd search` again"):
        load_search(path, small_data, profile, None, max_size_kb=3)
    load_search(path, small_data, profile, None, max_size_kb=4)  # 4096 bytes
    raw = json.loads(path.read_text())
    raw["chosen"]["file_bytes"] = 5000  # written as it ships: the file decides
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"is 4.9 KB \(int8\), over --max-size-kb 4;"):
        load_search(path, small_data, profile, None, max_size_kb=4)


def test_a_search_under_the_same_profile_name_with_other_settings_is_refused(tmp_path, small_data):
    """A copy of the profile edited to 4 threads kept its name, and a search measured with its default was reused."""
    from edgekd.profiles import load_profile_file

    path = _write(tmp_path, small_data, None, space="mbv2")
    source = load_profile("host-cpu").source
    edited = tmp_path / "host-cpu.toml"
    edited.write_text(open(source).read().replace("intra_op_threads = 0 ", "intra_op_threads = 4 "))
    other = load_profile_file(edited)
    assert other.name == "host-cpu" and other.digest() != load_profile("host-cpu").digest()
    with pytest.raises(ConfigError, match=rf"'{path}' measured its students with other settings of profile "
                                          r"'host-cpu' \(digest [0-9a-f]{16}, this one's is [0-9a-f]{16}"):
        load_search(path, small_data, other, None)
    lines: list[str] = []
    load_search(path, small_data, load_profile("host-cpu"), None, log=lines.append)  # the same settings
    path = _write(tmp_path, small_data, None, space="mbv2", edit=lambda r: r.pop("profile_digest"))
    load_search(path, small_data, other, None, log=lines.append)  # written before the digest was recorded
    assert lines == []


def test_a_search_on_a_profile_given_as_a_path_records_it_and_its_refusal_names_it(tmp_path, small_data,
                                                                                       monkeypatch):
    """search.json held only the profile's name: reused without --profile, it was refused after the teacher had
    loaded (trained, by default), with advice to search again; --profile NAME would not load a file's profile."""
    import shlex

    from edgekd import pipeline
    from edgekd.pipeline import CompressConfig
    from edgekd.search_file import check_search_profile

    folder = tmp_path / "odd dir [x] é"
    folder.mkdir()
    board = folder / "fast-2t.toml"
    board.write_text('schema = 1\nname = "fast"\n[runtime]\nintra_op_threads = 2\n')
    monkeypatch.chdir(folder)
    given = load_profile("fast-2t.toml")
    path = _write(tmp_path, small_data, None, space="mbv2")
    record = json.loads(path.read_text())
    record.update(search_record(SearchResult.from_dict(record), given, Budget(), small_data))
    path.write_text(json.dumps(record))
    assert record["profile"] == "fast" and record["profile_file"] == str(board)  # resolved
    monkeypatch.chdir(tmp_path)
    said = (rf"'{path}' measured its students on profile 'fast', not 'host-cpu-1t'; pass --profile "
            rf"{re.escape(shlex.quote(str(board)))}, the profile it measured on, or run `edgekd search` again")
    with pytest.raises(ConfigError, match=said):
        load_search(path, small_data, load_profile("host-cpu-1t"), None)
    with pytest.raises(ConfigError, match=said):
        check_search_profile(path, load_profile("host-cpu-1t"))
    load_search(path, small_data, load_profile(str(board)), None)  # the profile it names

    def no_data(*_args, **_kwargs):
        raise AssertionError("the data loaded before the search file's profile was checked")

    monkeypatch.setattr(pipeline, "run_data", no_data)
    with pytest.raises(ConfigError, match=said):
        pipeline.compress(CompressConfig(search_file=str(path), out=str(tmp_path / "out")))


def test_a_search_measured_on_another_machine_is_said(tmp_path, small_data):
    path = _write(tmp_path, small_data, None, space="mbv2", edit=lambda r: r.update(host="Other CPU (64 CPUs)"))
    lines: list[str] = []
    load_search(path, small_data, load_profile("host-cpu"), None, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"warning: '{path}' measured its students' latency on another "
                                                   "machine (Other CPU (64 CPUs); this one is ")


def test_the_recorded_budget_keeps_an_accuracy_drop_of_zero(tmp_path):
    """--max-accuracy-drop 0 is a valid budget (no point below the teacher): compress --search dropped it."""
    import json

    from edgekd.search_file import recorded_budget

    path = tmp_path / "s.json"
    path.write_text(json.dumps({"budget": {"latency_ms": 2.0, "max_accuracy_drop": 0, "min_accuracy": 0}}))
    assert recorded_budget(path) == {"budget_ms": 2.0, "max_accuracy_drop": 0.0}


def test_a_reused_search_is_written_on_with_its_own_record_not_this_runs(tmp_path, small_data):
    """compress --search wrote its own budget, host, data and teacher into OUT/search.json: a later
    `distill --search OUT/search.json` said the first reuse's budget was the one searched for, and no longer
    warned that the latencies were measured on another machine."""
    from edgekd.search_file import recorded_budget

    searched_for = Budget(latency_ms=0.5, max_size_kb=128).to_dict()
    path = _write(tmp_path, small_data, torch.nn.Conv2d(1, 8, 3), space="mbv2",
                  edit=lambda r: r.update(host="Other CPU (64 CPUs)", budget=searched_for))
    recorded = json.loads(path.read_text())
    profile, lines = load_profile("host-cpu"), []
    result = load_search(path, small_data, profile, 0.3, torch.nn.Conv2d(1, 8, 3), lines.append)
    reused_with = Budget(latency_ms=0.3, max_size_kb=200)
    copy = search_record(result, profile, reused_with, replace(small_data, name="other"), torch.nn.Conv2d(1, 12, 3))
    assert copy == {**recorded, "reused_with": {"budget": reused_with.to_dict()}}
    again = tmp_path / "again.json"
    again.write_text(json.dumps(copy))
    assert recorded_budget(again) == {"budget_ms": 0.5, "max_size_kb": 128}
    result = load_search(again, small_data, profile, None, log=lines.append)
    assert len(lines) == 2 and lines[1] == lines[0].replace(str(path), str(again))  # on another machine, still
    assert "on another machine (Other CPU (64 CPUs);" in lines[1]
    # reused with the budget it was searched for: nothing to add, and the earlier reuse's is not this run's
    assert search_record(result, profile, Budget(latency_ms=0.5, max_size_kb=128), small_data) == recorded


def test_a_run_reusing_a_search_file_takes_the_settings_it_was_searched_with(small_data, tmp_path):
    """compress --search sf.json (searched for fp32, mbv2,resnet, 15 candidates) recorded --precision int8,
    --space mbv2 and 100 candidates, the defaults, and shipped int8; pruning measured int8 too."""
    from edgekd.pipeline import CompressConfig
    from edgekd.search_file import with_search_settings

    def searched_with(settings):
        path = _write(tmp_path, small_data, None, space="mbv2", edit=lambda r: r.update(precision="fp32", evaluated=15))
        record = json.loads(path.read_text())
        if settings is not None:
            record["settings"] = settings
        path.write_text(json.dumps(record))
        return str(path)

    said = []
    path = searched_with({"space": "mbv2,resnet", "proxy": "params", "candidates": 15, "latency_anchors": 4,
                          "precision": "fp32"})
    config = with_search_settings(CompressConfig(search_file=path, target_ms=1.0), said.append)
    assert (config.space, config.candidates, config.latency_anchors, config.precision) == ("mbv2,resnet", 15, 4,
                                                                                           "fp32")
    assert config.prune_config().precision == "fp32"
    assert said == [f"search: --space mbv2,resnet, --candidates 15, --latency-anchors 4, --precision fp32, as "
                    f"'{path}' was searched with"]
    # a file written before the settings were recorded: what its result says
    config = with_search_settings(CompressConfig(search_file=searched_with(None)), said.append)
    assert (config.space, config.candidates, config.precision) == ("mbv2", 15, "fp32")
    int8 = searched_with({"precision": "int8"})
    with pytest.raises(ConfigError, match=r"precision fp32 is not the precision .* was searched for \(int8\)"):
        with_search_settings(CompressConfig(search_file=int8, precision="fp32"), said.append)
    with_search_settings(CompressConfig(search_file=int8, qat_epochs=1), said.append)
    # QAT tunes an int8 file, and the fp32 the file was searched for ships: --precision int8 cannot be the fix
    fp32 = searched_with({"precision": "fp32"})
    with pytest.raises(ConfigError, match=re.escape(f"--qat-epochs tunes the int8 file (quantization-aware training), "
                                                    f"and '{fp32}' was searched for fp32, which ships; drop "
                                                    "--qat-epochs, or search again with --precision int8")):
        with_search_settings(CompressConfig(search_file=fp32, qat_epochs=1), said.append)


def test_a_run_reusing_a_search_file_ships_at_the_opset_its_students_were_sized_at(small_data, tmp_path):
    """`edgekd search` had no --opset and sized every file at 18: `compress --search sf.json --opset 17
    --max-size-kb 128` trained the student chosen by its 127 KB opset-18 file and shipped it at 141 KB."""
    from edgekd.pipeline import CompressConfig
    from edgekd.search_file import recorded_settings, search_settings, with_search_settings

    assert search_settings(CompressConfig(opset=17))["opset"] == 17

    def searched_at(opset):
        path = _write(tmp_path, small_data, None, space="mbv2", edit=lambda r: r.update(settings={"opset": opset}))
        return str(path)

    said = []
    config = with_search_settings(CompressConfig(search_file=searched_at(17)), said.append)
    assert config.opset == 17 and said == [f"search: --opset 17, as '{tmp_path / 'search.json'}' was searched with"]
    assert with_search_settings(CompressConfig(search_file=searched_at(17), opset=17), said.append).opset == 17
    with pytest.raises(ConfigError, match=r"--opset 16 is not the opset .* sized its students at \(17\)"):
        with_search_settings(CompressConfig(search_file=searched_at(17), opset=16), said.append)
    # 18 typed is given too (it was taken for the default, and the file's 17 shipped without a word)
    with pytest.raises(ConfigError, match=r"--opset 18 is not the opset .* sized its students at \(17\)"):
        with_search_settings(CompressConfig(search_file=searched_at(17), opset=18), said.append)
    said.clear()
    assert with_search_settings(CompressConfig(search_file=searched_at(18)), said.append).opset is None
    assert said == []  # the default, said as nothing
    with pytest.raises(ConfigError, match=r"sized its students at opset 17, and --qat-epochs exports at opset 18"):
        with_search_settings(CompressConfig(search_file=searched_at(17), qat_epochs=1), said.append)
    # an opset edited into a string is no opset: the run's own stays
    assert "opset" not in recorded_settings(searched_at("17"))
    assert with_search_settings(CompressConfig(search_file=searched_at("17"), opset=16), said.append).opset == 16


def test_a_run_with_ort_reusing_a_search_that_sized_the_onnx_alone_is_told(tmp_path, small_data):
    """The ORT-format copy, held to --max-size-kb too, is up to 1.5x its .onnx: a search file sized without it can
    choose a student whose copy fails after training."""
    path = _write(tmp_path, small_data, None, space="mbv2")
    profile = load_profile("host-cpu")
    lines: list[str] = []
    load_search(path, small_data, profile, None, log=lines.append, max_size_kb=8, ort=True)
    assert lines == [f"warning: '{path}' sized its students by their .onnx file alone, and with --ort the ORT-format "
                     "copy, up to 1.5x larger, is held to --max-size-kb too, once trained: run `edgekd search --ort` "
                     "and pass the file it writes"]
    lines.clear()
    load_search(path, small_data, profile, None, log=lines.append, max_size_kb=8)  # no --ort
    load_search(path, small_data, profile, None, log=lines.append, ort=True)  # no size limit
    raw = json.loads(path.read_text())
    raw["sized_with_ort"] = True
    path.write_text(json.dumps(raw))
    load_search(path, small_data, profile, None, log=lines.append, max_size_kb=8, ort=True)
    assert lines == []
