"""A recipe TOML (--config, edgekd.load_recipe): its keys, the type of each value, and the paths it names."""

from __future__ import annotations

import re

import pytest

from edgekd.errors import ConfigError
from edgekd.pipeline import CompressConfig


def _recipe(tmp_path, text):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, message", [
    ('epochs = "3"', 'epochs = "3" is a string, not a whole number; write e.g. epochs = 40'),
    ("epochs = 1.5", "epochs = 1.5 is a float, not a whole number"),
    ("epochs = true", "epochs = true is a boolean, not a whole number"),
    ('budget_ms = "fast"', 'budget-ms = "fast" is a string, not a number; write e.g. budget-ms = 2.5'),
    ('labels = "no"', 'labels = "no" is a string, not true or false; write e.g. labels = true'),
    ("out = 5", 'out = 5 is an integer, not a quoted string; write e.g. out = "edgekd-out"'),
    ("space = [1, 2]", 'space = [1, 2] is a list, not a quoted string; write e.g. space = "mbv2" or ["a", "b"]'),
    ("resolution = 1.5", "resolution = 1.5 is a float, not one side or [height, width]"),
    ("seed = 2024-01-01", 'seed = "2024-01-01" is a date or time, not a whole number'),
    # the example must be a value the key takes: channels = 8 is refused in turn
    ('channels = "3"', 'channels = "3" is a string, not a whole number; write e.g. channels = 3 (or 1)'),
    ('min_accuracy = "97%"', 'min-accuracy = "97%" is a string, not a number; write e.g. min-accuracy = 0.97'),
])
def test_recipe_values_of_the_wrong_type_name_the_key_the_file_and_the_type(tmp_path, text, message):
    from edgekd.pipeline.recipe import load_recipe

    path = _recipe(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"recipe '{path}': {message}")):
        load_recipe(path)


def test_recipe_lists_read_as_the_flags_comma_separated_ones(tmp_path):
    from edgekd.pipeline.recipe import load_recipe

    path = _recipe(tmp_path, 'space = ["mbv2", "resnet"]\nlosses = {kd = 1, at = 0.5}\nresolution = [24, 32]\n'
                             'lr = 1\nhint-student = ["a"]\nhint-teacher = ["b"]\n')
    values = load_recipe(path)
    assert values == {"space": "mbv2,resnet", "losses": "kd:1,at:0.5", "resolution": [24, 32], "lr": 1,
                      "hint_student": "a", "hint_teacher": "b"}
    config = CompressConfig(**values)
    assert config.search_config().space == "mbv2,resnet" and dict(config.distill_config().losses)["at"] == 0.5


def test_a_recipe_takes_the_flag_s_name_where_it_differs_from_the_setting_s(tmp_path):
    """--search is the flag; its recipe key was only 'search-file', which no user would guess."""
    from edgekd.pipeline.recipe import load_recipe

    assert load_recipe(_recipe(tmp_path, 'search = "runs/search.json"\n')) == {"search_file": "runs/search.json"}
    with pytest.raises(ConfigError, match=r"unknown key 'serach'; did you mean 'search'\?.* search, seed"):
        load_recipe(_recipe(tmp_path, 'serach = "runs/search.json"\n'))


def test_a_recipe_with_keys_outside_its_compress_table_is_refused(tmp_path):
    """Top-level keys beside a [compress] table were dropped without a word (the seed below ran as 0)."""
    from edgekd.pipeline.recipe import load_recipe

    path = _recipe(tmp_path, "seed = 1\n[compress]\nbudget-ms = 0.5\n")
    with pytest.raises(ConfigError, match=r"keys both at the top level \(seed\) and in its \[compress\] table"):
        load_recipe(path)
    assert load_recipe(_recipe(tmp_path, "[compress]\nseed = 1\nbudget-ms = 0.5\n")) == {"seed": 1, "budget_ms": 0.5}


def test_a_recipe_that_is_a_folder_says_so(tmp_path):
    from edgekd.pipeline.recipe import load_recipe

    with pytest.raises(ConfigError, match=f"recipe '{tmp_path}' is a folder, not a file"):
        load_recipe(str(tmp_path))


def test_every_recipe_key_has_a_type_the_recipe_check_knows():
    import dataclasses

    from edgekd.pipeline.recipe import recipe_kind

    fields = [f for f in dataclasses.fields(CompressConfig) if f.init and f.name not in ("force", "progress")]
    assert all(recipe_kind(f.name, str(f.type)) for f in fields)


@pytest.mark.parametrize("text, first, second", [("budget-ms = 1\nbudget_ms = 2\n", "budget-ms", "budget_ms"),
                                                 ('search = "a.json"\nsearch_file = "b.json"\n', "search",
                                                  "search_file")])
def test_a_recipe_key_given_twice_under_two_spellings_is_refused(tmp_path, text, first, second):
    """The last spelling won without a word."""
    from edgekd.pipeline.recipe import load_recipe

    path = _recipe(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"recipe '{path}' sets one key twice, as '{first}' and as "
                                                    f"'{second}'; keep one of")):
        load_recipe(path)


def test_a_recipe_path_written_relative_to_the_recipe_is_named_with_both_fixes(tmp_path, monkeypatch):
    """Paths in a recipe are read from where edgekd runs; one written from the recipe's folder failed as
    'does not exist' with no word of where it was looked for."""
    from edgekd.pipeline.recipe import load_recipe

    configs = tmp_path / "configs"
    (configs / "imgs").mkdir(parents=True)
    (configs / "my_teacher.py").write_text("")
    (tmp_path / "imgs").mkdir()
    monkeypatch.chdir(tmp_path)
    for text, flag, value in (('data = "imgs"', None, None), ('teacher = "my_teacher.py:build(classes=3)"',
                                                              "teacher", "my_teacher.py:build(classes=3)"),
                              ('teacher = "edgekd.models:resnet"', None, None), ('profile = "host-cpu"', None, None)):
        (configs / "r.toml").write_text(text.replace('"', "'") + "\n")
        if flag is None:  # found from here, or no file
            assert load_recipe("configs/r.toml")
            continue
        with pytest.raises(ConfigError) as refused:
            load_recipe("configs/r.toml")
        # the fix keeps the factory and its arguments: the file alone would fail the next run otherwise
        assert refused.value.problem == (f"recipe 'configs/r.toml': {flag} '{value}' is not found from the folder "
                                      "edgekd runs in, though 'configs/my_teacher.py' is (paths in a recipe are read "
                                      f"from where edgekd runs, as flags are)")
        assert refused.value.fix == f'write {flag} = "configs/{value}", or run edgekd from \'configs\''
    (tmp_path / "imgs").rmdir()
    (configs / "r.toml").write_text('data = "imgs"\nsearch = "imgs"\n')
    with pytest.raises(ConfigError, match="data 'imgs' is not found from the folder edgekd runs in"):
        load_recipe("configs/r.toml")


def test_the_python_api_reads_a_recipe_as_the_command_line_does(tmp_path, monkeypatch):
    """edgekd.load_recipe checked the keys only: a losses table stayed a dict (recorded so in the manifest), a
    channels = "3" and a path found only beside the recipe were taken, all refused by --config."""
    import edgekd

    assert edgekd.load_recipe(_recipe(tmp_path, "losses = {kd = 1, dkd = 0.5}\n")) == {"losses": "kd:1,dkd:0.5"}
    with pytest.raises(ConfigError, match=re.escape('channels = "3" is a string, not a whole number')):
        edgekd.load_recipe(_recipe(tmp_path, 'channels = "3"\n'))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.npz").write_bytes(b"")
    (tmp_path / "sub" / "r.toml").write_text('data = "x.npz"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="data 'x.npz' is not found from the folder edgekd runs in"):
        edgekd.load_recipe("sub/r.toml")


def test_a_recipe_that_is_not_utf8_says_so_with_its_line(tmp_path):
    """It was told to fix the TOML syntax, with the byte offset of the bad character."""
    from edgekd.pipeline.recipe import load_recipe

    path = tmp_path / "recipe.toml"
    path.write_bytes(b"budget-ms = 0.5\n\xff\xfe = 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"recipe '{path}' is not UTF-8 text (line 2)")) as refused:
        load_recipe(path)
    assert refused.value.fix == "save it as UTF-8"


def test_a_recipe_s_keys_are_compress_s_flags():
    """calibration-samples was a recipe key with no flag, so the command line could never win over it."""
    from edgekd.cli import cli
    from edgekd.pipeline.recipe import recipe_keys

    flags = {p.opts[0][2:] for p in cli.commands["compress"].params if p.opts[0].startswith("--")}
    assert recipe_keys() == sorted(flags - {"config", "force", "quiet"})


def test_calibration_samples_is_no_recipe_key(tmp_path):
    from edgekd.pipeline.recipe import load_recipe

    with pytest.raises(ConfigError, match="unknown key 'calibration-samples'; did you mean 'calibration'"):
        load_recipe(_recipe(tmp_path, "calibration-samples = 64\n"))


# -- fix Q: sections, a byte-order mark, ~ in paths, and a recipe's value refused by the checks written for flags -----


@pytest.mark.parametrize("text, section", [("[search]\ncandidates = 4\n", "search"),
                                           ("[distill]\nepochs = 2\n", "distill"),
                                           ("[compress]\nepochs = 2\n[compress.search]\ncandidates = 4\n",
                                            "compress.search"),
                                           ("seed = 1\n[gate]\nmax_size = 1\n", "gate")])
def test_a_recipe_section_other_than_compress_is_refused_as_not_read(run_cli, tmp_path, text, section):
    """[search] was read as the search-file key ("write e.g. search-file = ..."), [distill] as a mistyped
    'distilled'."""
    path = _recipe(tmp_path, text)
    code, out, err = run_cli("compress", "--config", path, "--out", tmp_path / "out")
    assert code == 2 and out == "" and err.startswith(
        f"error: recipe '{path}' has a [{section}] section, which edgekd does not read (a recipe's keys go at the top "
        f"level or in one [compress] table, losses the only table among them); move the keys of [{section}] to the "
        "top level or into [compress] (valid keys are alpha, augment,"), err
    assert not (tmp_path / "out").exists()


def test_a_losses_table_is_still_read_at_the_top_level_and_in_compress(tmp_path):
    from edgekd.pipeline.recipe import load_recipe

    assert load_recipe(_recipe(tmp_path, "[losses]\nkd = 1\n")) == {"losses": "kd:1"}
    assert load_recipe(_recipe(tmp_path, "[compress]\nseed = 1\n[compress.losses]\nkd = 1\n")) == {
        "seed": 1, "losses": "kd:1"}


def test_a_recipe_with_a_byte_order_mark_is_read(run_cli, tmp_path):
    """Windows editors write one: the recipe read as bad syntax at line 1, though it looks right in any editor."""
    from edgekd.pipeline.recipe import load_recipe

    path = tmp_path / "recipe.toml"
    path.write_bytes(b"\xef\xbb\xbfbudget-ms = 0.5\n")
    assert load_recipe(path) == {"budget_ms": 0.5}
    path.write_bytes(b"\xef\xbb\xbf[compress]\nepochs = 0\n")
    code, _, err = run_cli("compress", "--config", path)
    assert code == 2 and "epochs = 0" in err and "cannot be read" not in err, err


def test_a_home_path_in_a_recipe_is_not_taken_as_beside_the_recipe(tmp_path, monkeypatch):
    """"~/data.npz" is the home folder's: found under configs/~/ it was refused as written relative to the recipe."""
    from edgekd.pipeline.recipe import load_recipe

    home, configs = tmp_path / "home", tmp_path / "configs"
    (configs / "~").mkdir(parents=True)
    home.mkdir()
    (configs / "~" / "data.npz").write_bytes(b"")
    (home / "data.npz").write_bytes(b"")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (configs / "r.toml").write_text('data = "~/data.npz"\n')
    assert load_recipe("configs/r.toml") == {"data": "~/data.npz"}


@pytest.mark.parametrize("text, message", [
    ("epochs = 0\n", "epochs = 0: epochs must be at least 1, got 0; fix it in '{path}': set epochs = 1 or more"),
    ("[compress]\nprune-steps = 4\n", "prune-steps = 4: prune-steps only applies to pruning, and nothing is pruned "
     "without --target-ms; fix it in '{path}': pass --target-ms MS to prune toward a latency, or leave the pruning "
     "settings out"),
    ("latency_anchors = 2\n", "latency-anchors = 2: latency-anchors must be at least 3, got 2; fix it in '{path}': "
     "pass 32 (the default"),
])
def test_a_recipe_s_bad_value_is_named_with_the_recipe_and_its_key(run_cli, tmp_path, text, message):
    """Refused in the checks written for flags, a recipe's epochs = 0 read "pass --epochs 1 or more" in a log
    where no flag was typed."""
    path = _recipe(tmp_path, text)
    for command in ("compress", "search", "distill"):
        code, out, err = run_cli(command, "--config", path, "--out", tmp_path / "out")
        said = message.format(path=path)
        assert code == 2 and err.startswith(f"error: recipe '{path}': {said}") and err.count("\n") == 1, err
    # a flag's own value is still named as the flag
    code, _, err = run_cli("compress", "--config", _recipe(tmp_path, "epochs = 3\n"), "--epochs", "0")
    assert code == 2 and err == "error: epochs must be at least 1, got 0; pass --epochs 1 or more\n", err
