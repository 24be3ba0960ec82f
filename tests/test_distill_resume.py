"""`edgekd distill --resume` and `--force` as a user meets them: the budget and search a resumed run continues
with, the search it records before its first epoch, what an interruption says it left, and when the earlier
run --force replaces goes."""

import json
import shutil

import pytest
from conftest import QUICK_PROXY
from test_distill_cli import common, err_line, searched  # noqa: F401  (module fixtures shared with that file)

pytestmark = pytest.mark.usefixtures("one_thread")


def _interrupt_epoch(monkeypatch, at: int, seen: list | None = None, where=None):
    """Ctrl-C at the start of training epoch ``at`` (1-based); ``seen`` gets ``where``'s entries just before."""
    import edgekd.distill.trainer as trainer

    calls, train_epoch = [], trainer._train_epoch

    def epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            if seen is not None:
                seen.extend(sorted(p.name for p in where.iterdir()))
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train_epoch", epoch)


def test_a_resume_keeps_the_budget_and_search_settings_its_run_started_with(run_cli, common, tmp_path):  # noqa: F811
    """A resume with the budget flag forgotten recorded no budget and the default search settings in distill.json;
    one with another budget recorded that one, though the student was searched for the first."""
    run = tmp_path / "run"
    search = ["--candidates", "3", "--latency-anchors", "3", "--precision", "fp32", "--proxy", QUICK_PROXY]
    code, _, err = run_cli("distill", *common, *search, "--budget-ms", "50", "--epochs", "1", "--no-augment",
                           "--out", run)
    assert code == 0, err
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (tmp_path / "copy.edgekd-replaced-123").mkdir()  # what a --force run killed by SIGKILL leaves
    args = [*common[:-1], "--epochs", "1", "--no-augment", "--out", copy, "--resume"]  # not quiet: its log is read
    code, _, err = run_cli("distill", *args)
    assert code == 0, err
    recipe = json.loads((copy / "distill.json").read_text())["recipe"]
    assert (recipe["budget_ms"], recipe["candidates"], recipe["latency_anchors"], recipe["precision"],
            recipe["proxy"], recipe["out"]) == (50.0, 3, 3, "fp32", QUICK_PROXY, str(copy))
    assert f"[edgekd] budget: --budget-ms 50, as the run in '{copy}' started with" in err
    assert f"[edgekd] distill: resuming from epoch 1 of 1 ({copy / 'checkpoint.pt'})" in err
    assert (f"[edgekd] warning: '{tmp_path / 'copy.edgekd-replaced-123'}' holds an earlier run of '{copy}' that a "
            "--force run set aside") in err and "delete it to free its space" in err
    assert json.loads((run / "distill.json").read_text())["recipe"]["out"] == str(run)  # not compress's default
    line = err_line(*run_cli("distill", *args, "-q", "--budget-ms", "2")[::2])
    assert line == (f"error: --budget-ms 2 is not the budget the run in '{copy}' started with (--budget-ms 50), which "
                    "its student was searched and trained for; resume without budget flags to keep the run's, or start "
                    "the run over with --force (it replaces the run)")
    assert run_cli("distill", *args, "-q", "--budget-ms", "50")[0] == 0


def test_a_run_from_a_search_file_records_it_before_its_first_epoch(run_cli, common, searched, tmp_path,  # noqa: F811
                                                                    monkeypatch):
    """Resumed without its --search, a run that started from one searched anew: its search.json was written at
    the end only."""
    import edgekd.search

    out = tmp_path / "d"
    args = [*common, "--epochs", "2", "--no-augment", "--out", out]
    with monkeypatch.context() as patch:
        _interrupt_epoch(patch, 2)
        code, _, err = run_cli("distill", *args, "--search", searched)
    assert code == 130 and err.strip() == (f"interrupted: {out / 'checkpoint.pt'} holds the last finished epoch; run "
                                           "the same command with --resume to continue")
    assert json.loads((out / "search.json").read_text())["chosen"] == json.loads(searched.read_text())["chosen"]
    monkeypatch.setattr(edgekd.search, "search", lambda *a, **k: pytest.fail("searched again on --resume"))
    line = err_line(*run_cli("distill", *args, "--resume", "--candidates", "5")[::2])
    assert "--candidates does not apply with --resume" in line
    older = tmp_path / "older"  # as an edgekd that wrote search.json at the end left it
    shutil.copytree(out, older)
    (older / "search.json").unlink()
    line = err_line(*run_cli("distill", *args[:-1], older, "--resume")[::2])
    assert line == (f"error: '{older}' holds a checkpoint but no search.json recording the student it trains (a run "
                    "started with --search by an edgekd that wrote it only at the end); resume with the --search FILE "
                    "the run started with")
    code, _, err = run_cli("distill", *args, "--resume")
    assert code == 0, err
    assert json.loads((out / "distill.json").read_text())["recipe"]["search_file"] == str(searched)


def test_an_interrupted_force_run_says_what_it_left_and_replaces_the_earlier_run_at_its_first_checkpoint(
        run_cli, common, searched, tmp_path, monkeypatch):  # noqa: F811
    """The interruption pointed at the earlier run's checkpoint, put back, with advice that failed; and the earlier
    run, said to be kept until the first checkpoint, stayed beside --out until the whole run ended."""
    out = tmp_path / "d"
    out.mkdir()
    (out / "checkpoint.pt").write_text("the earlier run's")
    args = [*common, "--search", searched, "--epochs", "2", "--no-augment", "--out", out, "--force"]
    with monkeypatch.context() as patch:
        _interrupt_epoch(patch, 1)
        code, _, err = run_cli("distill", *args)
    assert code == 130 and err.strip() == (f"interrupted: nothing was written; the earlier run in {out}/ is as it was "
                                           "(this one stopped before its first checkpoint)")
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]
    assert (out / "checkpoint.pt").read_text() == "the earlier run's"
    beside: list[str] = []
    with monkeypatch.context() as patch:
        _interrupt_epoch(patch, 2, beside, tmp_path)
        code, _, err = run_cli("distill", *args)
    assert [n for n in beside if not n.endswith(".lock")] == ["d"]  # gone at the first checkpoint, not the end
    assert code == 130 and err.strip() == (f"interrupted: {out / 'checkpoint.pt'} holds the last finished epoch; run "
                                           "the same command with --resume instead of --force to continue")


@pytest.mark.parametrize("when", ["removing", "holding"])
def test_a_second_ctrl_c_while_a_force_run_puts_the_earlier_run_back_neither_loses_nor_strands_it(
        run_cli, common, searched, tmp_path, monkeypatch, when):  # noqa: F811
    """Users press Ctrl-C twice, and torchrun sends its workers a SIGINT of its own: one landing between the
    removal of the new --out and the rename of the earlier run skipped the rename, and the run then deleted the
    earlier run, saying it "is as it was". One landing just before the signals are held is as harmless."""
    import contextlib
    import signal

    import edgekd.distill.checkpoint as checkpoint
    import edgekd.pipeline.stages as stages

    out = tmp_path / "d"
    out.mkdir()
    (out / "checkpoint.pt").write_text("the earlier run's")
    remove_path, interrupts_held, pressed = stages.remove_path, checkpoint.interrupts_held, []

    def removing(path):
        if not pressed:  # the second Ctrl-C, as the terminal delivers it
            pressed.append(1)
            signal.raise_signal(signal.SIGINT)
        remove_path(path)

    @contextlib.contextmanager
    def holding():
        if not pressed:  # the second Ctrl-C, before the signals are held
            pressed.append(1)
            raise KeyboardInterrupt
        with interrupts_held():
            yield

    if when == "removing":
        monkeypatch.setattr(stages, "remove_path", removing)
    else:
        monkeypatch.setattr(checkpoint, "interrupts_held", holding)
    _interrupt_epoch(monkeypatch, 1)
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "2", "--no-augment", "--out", out,
                           "--force")
    assert pressed and code == 130
    assert err.strip() == (f"interrupted: nothing was written; the earlier run in {out}/ is as it was (this one "
                           "stopped before its first checkpoint)")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("d")] == ["d"]
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]
    assert (out / "checkpoint.pt").read_text() == "the earlier run's"


def test_an_earlier_run_left_set_aside_is_said_where_it_is(tmp_path):
    """Should putting the earlier run back fail, the interruption named --out as "as it was" while the run was
    beside it."""
    import os

    from edgekd.cli.stages import _distill_interrupted

    out = tmp_path / "d"
    out.mkdir()
    left = tmp_path / f"d.edgekd-replaced-{os.getpid()}"
    left.mkdir()
    line = _distill_interrupted(str(out), False, True, True, False)
    assert line.startswith(f"interrupted: nothing was written; the earlier run in {out}/ is kept as '{left}' (this "
                           "one stopped before its first checkpoint); put it back with `rm -r ")
    left.rmdir()
    assert "is as it was" in _distill_interrupted(str(out), False, True, True, False)


def test_under_torchrun_a_follower_rank_says_its_error_marked_and_no_interruption(run_cli, tmp_path, monkeypatch):
    """A follower's error may be its own (node 2 lacks --data), and torchrun reports only its exit code: silent,
    it was lost. An interruption reaches every rank, and rank 0 says it for all."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code, out, err = run_cli("distill", "--out", tmp_path / "d", "--resume", "--force")
    assert (code, out) == (2, "") and err.splitlines() == [
        "[rank 1] error: --force and --resume cannot be combined: --resume continues the run in --out, and --force "
        "would replace it; drop --force to continue the run, or --resume to start over"]

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("edgekd.pipeline.run_distill", interrupted)
    code, out, err = run_cli("distill", "--out", tmp_path / "d")
    assert (code, out, err.strip()) == (130, "", "")  # click itself ends the ^C line, on every rank
    monkeypatch.setenv("RANK", "0")  # rank 0 speaks for both
    code, _, err = run_cli("distill", "--out", tmp_path / "d")
    assert code == 130 and err.strip() == f"interrupted: nothing was written to {tmp_path / 'd'}/"


def _search_choosing(search, path, other: bool):
    """A copy of the search file ``search`` that chose another of its candidates (``other``), or the same student
    (measured on another machine)."""
    record = json.loads(search.read_text())
    if other:
        record["chosen"] = next(c for c in record["candidates"] if c["spec"] != record["chosen"]["spec"])
    else:
        record["host"] = "Other CPU (64 CPUs)"
    path.write_text(json.dumps(record))
    return path


def test_a_resume_refuses_a_search_file_choosing_another_student_before_writing_anything(
        run_cli, common, searched, tmp_path):  # noqa: F811
    """Reused as given, it replaced the run's search.json before the checkpoint was refused as another
    student's: the run could then not be resumed at all, with that file or without."""
    from edgekd.search_file import read_search

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(searched, run / "search.json")
    (run / "checkpoint.pt").write_text("the run's")
    other = _search_choosing(searched, tmp_path / "b.json", other=True)
    line = err_line(*run_cli("distill", *common, "--search", other, "--epochs", "2", "--out", run, "--resume")[::2])
    ours, theirs = (read_search(p).chosen.spec.key() for p in (searched, other))
    assert line == (f"error: --search '{other}' chose the student {theirs}, and the run in '{run}' trains {ours} (its "
                    f"'{run / 'search.json'}'); resume without --search to continue the run, or start it over with "
                    "--force (it replaces the run) to train the other student")
    assert (run / "search.json").read_text() == searched.read_text()


def test_a_resume_given_a_search_file_choosing_its_student_continues_from_its_own(searched, tmp_path):  # noqa: F811
    from edgekd.pipeline import CompressConfig
    from edgekd.pipeline.resumed import as_started

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(searched, run / "search.json")
    same = _search_choosing(searched, tmp_path / "b.json", other=False)
    said: list[str] = []
    config = as_started(CompressConfig(search_file=str(same)), run, said.append)
    assert config.search_file is None  # the run's own search.json, kept as it was, is the one reused
    assert said[0] == (f"search: '{same}' chose the student the run in '{run}' trains; continuing from its "
                       f"'{run / 'search.json'}'")


def test_another_budget_on_resume_is_refused_with_advice_that_works(tmp_path):
    """"start the run over without --resume" was refused in turn: its --out is not empty."""
    from edgekd.errors import ConfigError
    from edgekd.pipeline import CompressConfig
    from edgekd.pipeline.resumed import as_started

    (tmp_path / "search.json").write_text(json.dumps({"budget": {"latency_ms": 50}}))
    with pytest.raises(ConfigError) as caught:
        as_started(CompressConfig(budget_ms=2), tmp_path, print)
    assert caught.value.message == (f"--budget-ms 2 is not the budget the run in '{tmp_path}' started with "
                                    "(--budget-ms 50), which its student was searched and trained for; resume without "
                                    "budget flags to keep the run's, or start the run over with --force (it replaces "
                                    "the run)")


def test_a_resume_given_one_of_the_runs_budget_flags_takes_the_other_from_the_run(tmp_path):
    """README: "a budget flag may be left out". Given --budget-ms as the run had it and --max-size-kb left out,
    the resume was refused: "--budget-ms 1 is not the budget ... (--budget-ms 1, --max-size-kb 40)"."""
    from edgekd.errors import ConfigError
    from edgekd.pipeline import CompressConfig
    from edgekd.pipeline.resumed import as_started

    (tmp_path / "search.json").write_text(json.dumps({"budget": {"latency_ms": 1, "max_size_kb": 40}}))
    said = []
    config = as_started(CompressConfig(budget_ms=1), tmp_path, said.append)
    assert (config.budget_ms, config.max_size_kb) == (1, 40)
    assert said == [f"budget: --budget-ms 1, --max-size-kb 40, as the run in '{tmp_path}' started with"]
    with pytest.raises(ConfigError, match=r"--budget-ms 2 is not the budget the run in .* started with "
                                          r"\(--budget-ms 1, --max-size-kb 40\)"):
        as_started(CompressConfig(budget_ms=2), tmp_path, print)


def test_a_resume_says_how_to_put_back_an_earlier_run_a_killed_force_run_left_as_its_only_copy(tmp_path):
    """Killed before its first checkpoint, a --force run left only its search.json in --out: the resume said to
    delete the leftover, the only copy of the earlier run, then that there was nothing to resume."""
    from edgekd.errors import OutputError
    from edgekd.pipeline import CompressConfig, run_distill

    out = tmp_path / "my run"
    out.mkdir()
    (out / "search.json").write_text("{}")
    left = tmp_path / "my run.edgekd-replaced-123"
    left.mkdir()
    said: list[str] = []
    with pytest.raises(OutputError, match="nothing to resume"):
        run_distill(CompressConfig(), out, resume=True, log=said.append)
    assert said == [f"warning: '{left}' holds an earlier run of '{out}' that a --force run set aside and was stopped "
                    f"before its first checkpoint: it is the only copy of that run; put it back with "
                    f"`rm -r '{out}' && mv '{left}' '{out}'`"]


def test_target_ms_on_a_resume_is_refused_before_the_data_loads(tmp_path, monkeypatch):
    """Said after the data and teacher loaded, as "--resume continues plain or quantization-aware KD, not
    pruning-aware KD", which read as if the interrupted run had been a pruning one."""
    import edgekd.data
    from edgekd.errors import ConfigError
    from edgekd.pipeline import CompressConfig, run_distill

    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"a plain KD run's checkpoint")
    (out / "search.json").write_text("{}")
    monkeypatch.setattr(edgekd.data, "load_data", lambda *a, **k: pytest.fail("the data was loaded"))
    with pytest.raises(ConfigError) as caught:
        run_distill(CompressConfig(target_ms=1.0), out, resume=True)
    assert caught.value.message == (f"--target-ms does not apply with --resume: the run in '{out}' trains plain or "
                                    "quantization-aware KD (pruning-aware KD writes no checkpoint to resume); resume "
                                    "without --target-ms, or start a pruning run over with --force")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "search.json"]


def test_ctrl_c_just_after_a_checkpoint_is_written_keeps_it(run_cli, common, searched, tmp_path,  # noqa: F811
                                                            monkeypatch):
    """An interruption between a checkpoint's write and the run hearing of it left a complete checkpoint the
    run took for none: it deleted its new --out with it and said nothing was written."""
    import signal

    import edgekd.distill.trainer as trainer

    save = trainer._save

    def saved_then_interrupted(*args, **kwargs):
        save(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # the user's Ctrl-C, the moment the file is in place

    monkeypatch.setattr(trainer, "_save", saved_then_interrupted)
    out = tmp_path / "d"
    code, _, err = run_cli("distill", *common, "--search", searched, "--epochs", "2", "--no-augment", "--out", out)
    assert code == 130 and err.strip() == (f"interrupted: {out / 'checkpoint.pt'} holds the last finished epoch; run "
                                           "the same command with --resume to continue"), err
    assert (out / "checkpoint.pt").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_resume_exports_at_the_opset_its_run_started_with(tmp_path):
    """A run searched (or given a search file) at --opset 17 and resumed without --opset exported its student
    at 18: the run's opset is recorded and kept, and another one refused."""
    from edgekd.errors import ConfigError
    from edgekd.pipeline import CompressConfig
    from edgekd.pipeline.resumed import as_started, run_settings

    assert run_settings(CompressConfig(opset=17), tmp_path, resume=False)["opset"] == 17
    (tmp_path / "search.json").write_text(json.dumps({"distill_run": {"opset": 17}}))
    said: list[str] = []
    assert as_started(CompressConfig(), tmp_path, said.append).opset == 17
    assert said == [f"export: --opset 17, as the run in '{tmp_path}' started with"]
    assert as_started(CompressConfig(opset=17), tmp_path, said.append).opset == 17
    for given in (16, 18):  # 18 typed is given too
        with pytest.raises(ConfigError, match=rf"--opset {given} is not the opset the run in .* started with \(17\)"):
            as_started(CompressConfig(opset=given), tmp_path, said.append)
    # a run recorded before the opset was: the resuming command's
    (tmp_path / "search.json").write_text(json.dumps({"distill_run": {}}))
    assert as_started(CompressConfig(opset=16), tmp_path, said.append).opset == 16
