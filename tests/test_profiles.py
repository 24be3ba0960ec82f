"""Device profiles: built-ins, the user folder, validation errors, digest, and the `profiles` CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_uninstalled

from edgekd.errors import ProfileError
from edgekd.profiles import load_profile, profile_names

VALID = """
schema = 1
name = "{name}"
description = "{description}"
[runtime]
intra_op_threads = {threads}
[measure]
repeats = 3
"""


def _write(folder: Path, stem: str, text: str) -> Path:
    path = folder / f"{stem}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _valid(name: str = "custom", description: str = "a test profile", threads: int = 2) -> str:
    return VALID.format(name=name, description=description, threads=threads)


@pytest.fixture
def user_folder():
    """The user profile folder set up by the autouse fixture; files written there are removed afterwards."""
    folder = Path(os.environ["EDGEKD_PROFILE_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.iterdir())
    yield folder
    for path in set(folder.iterdir()) - before:
        path.unlink()


# --- built-ins -------------------------------------------------------------------------------------------

def test_builtin_host_cpu_uses_all_cores():
    prof = load_profile("host-cpu")
    assert prof.name == "host-cpu"
    assert prof.threads == 0  # 0 = onnxruntime's default, one per core
    assert prof.runner["kind"] == "local"


def test_builtin_host_cpu_1t_uses_one_thread():
    prof = load_profile("host-cpu-1t")
    assert prof.name == "host-cpu-1t"
    assert prof.threads == 1
    assert prof.runtime["engine"] == "onnxruntime"


def test_profile_names_include_builtins():
    names = profile_names()
    assert "host-cpu" in names and "host-cpu-1t" in names
    assert names == sorted(names)


def test_unknown_profile_lists_known_names():
    with pytest.raises(ProfileError, match=r"unknown profile 'nope'.*host-cpu, host-cpu-1t") as exc:
        load_profile("nope")
    assert "host-cpu-1t" in exc.value.fix


# --- validation ------------------------------------------------------------------------------------------

def test_malformed_toml(tmp_path):
    path = _write(tmp_path, "bad", 'name = "bad"\n[runtime\nintra_op_threads = 1\n')
    with pytest.raises(ProfileError, match="malformed TOML"):
        load_profile(path)


def test_unknown_top_level_key(tmp_path):
    path = _write(tmp_path, "extra", 'colour = "blue"\n' + _valid())
    with pytest.raises(ProfileError, match="unknown key 'colour'"):
        load_profile(path)


def test_a_misspelt_section_is_told_with_the_sections(tmp_path):
    """[mesure] was refused with "valid keys are calibrated_here, description, name, schema": the sections, the
    one it was meant as among them, were not named."""
    path = _write(tmp_path, "typo", 'schema = 1\nname = "typo"\n[mesure]\nrepeats = 3\n')
    with pytest.raises(ProfileError, match=r"unknown key 'mesure'; did you mean 'measure'\? valid top-level keys are "
                                           r"calibrated_here, description, name, schema, and the sections \[measure\], "
                                           r"\[runner\], \[runtime\]$"):
        load_profile(path)
    path = _write(tmp_path, "typo", _valid().replace("[runtime]\n", "[runtime]\nintra_threads = 1\n"))
    with pytest.raises(ProfileError, match=r"unknown key 'runtime\.intra_threads'; did you mean 'intra_op_threads'\? "
                                           "valid keys are allow_spinning, "):
        load_profile(path)


def test_unknown_runtime_key(tmp_path):
    path = _write(tmp_path, "extra", _valid().replace("[runtime]\n", "[runtime]\nturbo = true\n"))
    with pytest.raises(ProfileError, match=r"unknown key 'runtime\.turbo'"):
        load_profile(path)


def test_unknown_runner_key(tmp_path):
    path = _write(tmp_path, "extra", _valid() + '[runner]\nkind = "local"\nhost = "pi"\n')
    with pytest.raises(ProfileError, match="unknown key 'runner.host' for runner kind 'local'"):
        load_profile(path)


def test_wrong_type(tmp_path):
    path = _write(tmp_path, "typed", _valid().replace("intra_op_threads = 2", 'intra_op_threads = "one"'))
    with pytest.raises(ProfileError, match=r"runtime\.intra_op_threads' must be int"):
        load_profile(path)


def test_bool_is_not_an_int(tmp_path):
    path = _write(tmp_path, "typed", _valid().replace("intra_op_threads = 2", "intra_op_threads = true"))
    with pytest.raises(ProfileError, match="must be int, got bool"):
        load_profile(path)


def test_disallowed_value(tmp_path):
    path = _write(tmp_path, "mode", _valid().replace("[runtime]\n", '[runtime]\nexecution_mode = "weird"\n'))
    with pytest.raises(ProfileError, match=r"execution_mode' is 'weird'.*'sequential', 'parallel'"):
        load_profile(path)


def test_out_of_range(tmp_path):
    path = _write(tmp_path, "range", _valid().replace("repeats = 3", "repeats = 0"))
    with pytest.raises(ProfileError, match=r"measure\.repeats' is 0.*at least 2"):
        load_profile(path)


def test_one_repeat_is_refused_as_it_has_no_cv(tmp_path):
    """One repeat's cv read 0%: a cold run passed as stable, max_cv never measured it again, and it was cached."""
    path = _write(tmp_path, "rep1", _valid().replace("repeats = 3", "repeats = 1"))
    with pytest.raises(ProfileError, match=r"key 'measure\.repeats' is 1; use a value of at least 2: the cv that "
                                           r"tells a noisy measurement \(measure\.max_cv\) compares the repeats' "
                                           r"medians; for a quick look lower measure\.runs_per_repeat instead"):
        load_profile(path)


@pytest.mark.parametrize("threads,repeats,key", [(100_000, 3, r"runtime\.intra_op_threads' is 100000"),
                                                  (2, 10**7, r"measure\.repeats' is 10000000")])
def test_a_setting_no_machine_could_run_is_refused(tmp_path, threads, repeats, key):
    path = _write(tmp_path, "huge", _valid(threads=threads).replace("repeats = 3", f"repeats = {repeats}"))
    with pytest.raises(ProfileError, match=key + ".*at most"):
        load_profile(path)


def test_max_cv_out_of_range(tmp_path):
    path = _write(tmp_path, "cv", _valid() + "max_cv = 1.5\n")
    with pytest.raises(ProfileError, match=r"max_cv' is 1\.5"):
        load_profile(path)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_a_timeout_that_is_not_a_finite_number_is_refused(tmp_path, value):
    """TOML reads inf and nan as floats; subprocess.run would fail on them with a traceback."""
    path = _write(tmp_path, "t", _valid() + f"[runner]\ntimeout_s = {value}\n")
    with pytest.raises(ProfileError, match=rf"key 'runner\.timeout_s' is -?{value}; use a positive, finite number"):
        load_profile(path)


@pytest.mark.parametrize("value", ["2592000", "1e12", "1e308"])
def test_a_timeout_past_what_subprocess_takes_is_refused_with_the_largest_allowed(tmp_path, value):
    """30 days, 1e12 or 1e308 s passed the check and every measuring command ended in an OverflowError traceback
    (subprocess and threading take the time-out as a C int of milliseconds)."""
    from edgekd.profile_schema import MAX_TIMEOUT_S

    path = _write(tmp_path, "t", _valid() + f"[runner]\ntimeout_s = {value}\n")
    with pytest.raises(ProfileError, match=rf"t\.toml: key 'runner\.timeout_s' is .*; use a value of at most "
                                           rf"{MAX_TIMEOUT_S}$"):
        load_profile(path)
    assert MAX_TIMEOUT_S * 1000 < 2**31  # fits subprocess's C int of milliseconds


def test_a_profile_saved_with_a_byte_order_mark_loads(tmp_path):
    """Windows Notepad's UTF-8 BOM read as "malformed TOML at line 1, column 1", a line that looks right."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + _valid(name="bom").encode())
    assert load_profile(path).name == "bom"


def test_an_empty_provider_list_is_refused(tmp_path):
    """onnxruntime runs an empty list on the CPU: a profile meant for another device measured on it, unsaid."""
    path = _write(tmp_path, "p", _valid().replace("[runtime]\n", "[runtime]\nproviders = []\n"))
    with pytest.raises(ProfileError, match=r"p\.toml: key 'runtime\.providers' is an empty list; list the execution "
                                           r'providers to measure with, e\.g\. \["CPUExecutionProvider"\]'):
        load_profile(path)


def test_max_cv_nan_is_refused(tmp_path):
    path = _write(tmp_path, "cv", _valid() + "max_cv = nan\n")
    with pytest.raises(ProfileError, match=r"max_cv' is nan; use a value in \(0, 1\)"):
        load_profile(path)


def test_a_list_holds_strings(tmp_path):
    path = _write(tmp_path, "p", _valid().replace("[runtime]\n", "[runtime]\nproviders = [1]\n"))
    with pytest.raises(ProfileError, match=r"key 'runtime\.providers' must be a list of strings, and it holds int 1; "
                                           r"quote each entry"):
        load_profile(path)


def test_missing_name(tmp_path):
    path = _write(tmp_path, "noname", _valid().replace('name = "custom"\n', ""))
    with pytest.raises(ProfileError, match="missing key 'name'"):
        load_profile(path)


@pytest.mark.parametrize("name", ["../../escaped", "boards/pi", "..", ".hidden", "my board", "a\\\\b"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(tmp_path, name):
    """Latency tables are written to files named after the profile: a name with a path in it would put them
    outside the profile folder."""
    path = _write(tmp_path, "named", _valid(name=name))
    with pytest.raises(ProfileError, match=r"named\.toml: name = .* is not a plain file name; use letters, digits, "
                                           r"'-', '_' and '\.', not starting with '\.'"):
        load_profile(path)


def test_a_manifest_recording_a_profile_named_before_the_rule_still_loads(tmp_path):
    """Gate and recheck of a manifest from before names had to be plain refused its profile, and told the user
    to rename something stored in the manifest."""
    from edgekd.profiles import RECORDED, load_profile_file, load_recorded_profile

    path = _write(tmp_path, "pixel", _valid(name="pixel"))
    recorded = {**load_profile_file(path).to_dict(), "name": "pixel 7+npu", "source": str(path)}
    profile = load_recorded_profile(recorded)
    assert profile.name == "pixel 7+npu" and profile.source == RECORDED


def test_shipped_profiles_have_plain_names_and_load():
    from edgekd.profiles import builtin_dir, load_profile_file

    names = [load_profile_file(path).name for path in sorted(builtin_dir().glob("*.toml"))]
    assert names == ["android-arm64", "host-cpu-1t", "host-cpu", "rpi4-arm64"]


def test_section_must_be_a_table(tmp_path):
    path = _write(tmp_path, "flat", 'name = "flat"\nruntime = 3\n')
    with pytest.raises(ProfileError, match="'runtime' must be a table"):
        load_profile(path)


def test_ssh_runner_needs_host(tmp_path):
    path = _write(tmp_path, "ssh", _valid() + '[runner]\nkind = "ssh"\n')
    with pytest.raises(ProfileError, match="needs key 'runner.host'"):
        load_profile(path)


# --- where profiles come from ----------------------------------------------------------------------------

def test_user_folder_profile_is_listed_and_loadable(user_folder):
    _write(user_folder, "my-board", _valid(name="my-board", threads=3))
    assert "my-board" in profile_names()
    prof = load_profile("my-board")
    assert prof.name == "my-board" and prof.threads == 3
    assert Path(prof.source).parent == user_folder


def test_a_user_profile_whose_name_is_not_its_file_name_is_refused(user_folder):
    """A run records the profile's name and finds it again by that name: a file found as 'host-cpu-1t' that
    calls itself 'x' would be recorded as a profile nobody can load."""
    _write(user_folder, "host-cpu-1t", _valid(name="x"))
    with pytest.raises(ProfileError, match=r"host-cpu-1t.toml: name = 'x', but the file is found as profile "
                                           r"'host-cpu-1t'; make them agree: name = \"host-cpu-1t\", or rename"):
        load_profile("host-cpu-1t")


def test_profiles_list_names_a_file_whose_name_is_not_its_file_name_and_lists_the_rest(user_folder, run_cli):
    """`show` and --profile find a profile by its file's name: a listed name they cannot find misleads."""
    from edgekd.profiles import list_profiles

    misnamed = _write(user_folder, "misnamed", _valid(name="other"))
    _write(user_folder, "my-board", _valid(name="my-board"))
    code, out, err = run_cli("profiles", "list")
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert code == 0 and "my-board" in names and "host-cpu" in names and "other" not in names
    assert err == (f"warning: {misnamed}: name = 'other', but the file is found as profile 'misnamed'; make them "
                   "agree: name = \"misnamed\", or rename the file other.toml\n")
    with pytest.raises(ProfileError, match="found as profile 'misnamed'"):
        list_profiles()


def test_a_profile_asked_for_by_the_name_inside_a_misnamed_file_names_that_file(user_folder, run_cli):
    # "unknown profile 'other'; choose one of: ..., misnamed": the name offered was refused in turn
    misnamed = _write(user_folder, "misnamed", _valid(name="other"))
    code, _, err = run_cli("bench", misnamed, "--profile", "other")
    assert (code, err) == (2, f"error: unknown profile 'other': {misnamed} declares name = 'other', but profiles are "
                              "found by file name, and it is found as 'misnamed'; make them agree: rename the file "
                              "other.toml, or set name = \"misnamed\"\n")


def test_load_by_toml_path(tmp_path):
    path = _write(tmp_path, "by-path", _valid(name="by-path"))
    prof = load_profile(str(path))
    assert prof.name == "by-path"
    assert prof.source == str(path)
    assert prof.measure["repeats"] == 3
    assert prof.measure["warmup_runs"] == 20  # default filled in


def test_missing_path(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(str(tmp_path / "absent.toml"))


# --- digest ----------------------------------------------------------------------------------------------

def test_digest_tracks_measurement_not_description(tmp_path):
    base = load_profile(_write(tmp_path, "a", _valid(description="first")))
    renamed = load_profile(_write(tmp_path, "b", _valid(description="something else entirely")))
    threads = load_profile(_write(tmp_path, "c", _valid(description="first", threads=4)))
    assert base.digest() == renamed.digest()
    assert base.digest() != threads.digest()
    assert base.to_dict()["digest"] == base.digest()


def test_digest_ignores_key_order(tmp_path):
    one = load_profile(_write(tmp_path, "a", 'name = "x"\n[runtime]\nintra_op_threads = 1\ninter_op_threads = 1\n'))
    two = load_profile(_write(tmp_path, "b", 'name = "x"\n[runtime]\ninter_op_threads = 1\nintra_op_threads = 1\n'))
    assert one.runtime == two.runtime
    assert one.digest() == two.digest()


# --- CLI -------------------------------------------------------------------------------------------------

def test_cli_profiles_list(run_cli):
    code, out, err = run_cli("profiles", "list")
    assert code == 0, err
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "host-cpu" in names and "host-cpu-1t" in names


def test_cli_profiles_show(run_cli):
    code, out, err = run_cli("profiles", "show", "host-cpu-1t")
    assert code == 0, err
    data = json.loads(out)
    assert data["name"] == "host-cpu-1t"
    assert data["runtime"]["intra_op_threads"] == 1
    assert data["digest"] == load_profile("host-cpu-1t").digest()


def test_cli_profiles_show_unknown(run_cli):
    code, out, err = run_cli("profiles", "show", "nope")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: unknown profile")
    assert "host-cpu" in lines[0]
    assert "Traceback" not in err and out == ""


def test_profile_path_that_is_a_folder(tmp_path):
    folder = tmp_path / "looks.toml"
    folder.mkdir()
    with pytest.raises(ProfileError, match="is a folder, not a .toml file"):
        load_profile(str(folder))


def test_a_recorded_profile_file_now_holding_other_settings_gives_way_to_the_recorded_ones(tmp_path, monkeypatch):
    """A manifest recorded its profile's path relative to the folder compress ran in: gated from another folder
    holding another project's board.toml (2 threads), it was measured on that file, as "the one the manifest was
    measured on". Manifests now record the resolved path, and a file whose digest differs gives way to the
    recorded settings, in a manifest of either kind."""
    from edgekd.pipeline import measured_on
    from edgekd.profiles import RECORDED, load_profile, load_recorded_profile, recorded_file_changed

    proj = tmp_path / "proj"
    proj.mkdir()
    _write(proj, "board", _valid(name="board", threads=1))
    monkeypatch.chdir(proj)
    recorded = measured_on(load_profile("board.toml"))
    assert recorded["source"] == str(proj / "board.toml")  # resolved, as data.source is
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "board", _valid(name="board", threads=2))  # another project's board, of the same name
    assert load_recorded_profile(recorded).source == str(proj / "board.toml")  # the recorded file, not this one
    older = {**recorded, "source": "board.toml"}  # as manifests recorded it before
    assert recorded_file_changed(older)
    rebuilt = load_recorded_profile(older)
    assert rebuilt.source == RECORDED and rebuilt.threads == 1 and rebuilt.digest() == recorded["digest"]
    (proj / "board.toml").write_text(_valid(name="board", threads=4), encoding="utf-8")  # edited since
    assert load_recorded_profile(recorded).source == RECORDED
    same = {**older, "digest": load_profile("board.toml").digest()}  # the file found is the recorded profile
    assert load_recorded_profile(same).source == "board.toml"


def test_load_recorded_profile_prefers_the_recorded_file_while_it_is_that_profile(tmp_path):
    from edgekd.profiles import load_recorded_profile

    board = tmp_path / "board.toml"
    board.write_text('schema = 1\nname = "host-cpu-1t"\ndescription = "my copy"\n[runtime]\nintra_op_threads = 1\n')
    assert load_recorded_profile({"name": "host-cpu-1t", "source": str(board)}).description == "my copy"
    builtin = load_recorded_profile({"name": "host-cpu-1t", "source": str(tmp_path / "gone.toml")})
    assert builtin.description != "my copy" and builtin.name == "host-cpu-1t"
    assert load_recorded_profile({"name": "host-cpu", "source": str(board)}).name == "host-cpu"  # file renamed since
    with pytest.raises(ProfileError, match="unknown profile 'lab-board'"):
        load_recorded_profile({"name": "lab-board", "source": str(tmp_path / "gone.toml")})


def test_an_installed_edgekd_reads_its_shipped_profiles_not_a_profiles_folder_beside_it(tmp_path):
    """Installed with --target into a project that keeps its boards in profiles/, edgekd took that folder for
    its own shipped profiles: host-cpu-1t and the rest were gone."""
    import shutil

    import edgekd

    source = Path(edgekd.__file__).resolve().parent
    app = tmp_path / "app"
    shutil.copytree(source, app / "edgekd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(source.parent / "profiles", app / "edgekd" / "builtin_profiles")  # as the wheel lays it out
    (app / "profiles").mkdir()
    (app / "profiles" / "my-board.toml").write_text('name = "my-board"\n')
    where, names = run_uninstalled("from edgekd.profiles import builtin_dir, profile_names; print(builtin_dir()); "
                                   "print(profile_names())", app, tmp_path, EDGEKD_PROFILE_DIR=str(tmp_path / "none"))
    assert where == str(app / "edgekd" / "builtin_profiles") and "host-cpu-1t" in names and "my-board" not in names


def test_a_profile_folder_setting_that_names_a_file_is_said_not_ignored(tmp_path, monkeypatch, run_cli):
    """Read as no folder, `list` told the user to add profiles to a file and calibrate failed with "File exists;
    check free space"."""
    from edgekd.profiles import user_dir

    afile = tmp_path / "README.md"
    afile.write_text("not a folder")
    monkeypatch.setenv("EDGEKD_PROFILE_DIR", str(afile))
    said = rf"EDGEKD_PROFILE_DIR '{afile}' is a file, not a folder; point EDGEKD_PROFILE_DIR at a folder"
    with pytest.raises(ProfileError, match=said):
        user_dir()
    with pytest.raises(ProfileError, match=said):
        load_profile("host-cpu-1t")
    code, out, err = run_cli("profiles", "list")
    assert code == 0 and err.startswith(f"warning: EDGEKD_PROFILE_DIR '{afile}' is a file, not a folder;"), err
    assert "host-cpu-1t" in out and str(afile) not in out
    code, out, err = run_cli("profiles", "calibrate", "host-cpu-1t", "--space", "resnet", "--input-shape", "1,2,2")
    assert (code, out) == (2, "") and err.startswith(f"error: EDGEKD_PROFILE_DIR '{afile}' is a file, not a folder;")
