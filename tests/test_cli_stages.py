"""The stage commands' own output (edgekd/cli/stages.py)."""

import shlex


def test_search_s_follow_up_command_quotes_an_out_path_with_spaces(run_cli, teacher_files, fast_profile_path,
                                                                    tmp_path):
    """`--search sp ace/rank.json`, printed as it was, gave compress `--search sp` and two stray arguments."""
    module, weights = teacher_files
    found = tmp_path / "sp ace ü" / "rank ü.json"
    found.parent.mkdir()
    code, out, err = run_cli("search", "--teacher", f"{module}:build", "--weights", weights, "--resolution", "16",
                             "--profile", fast_profile_path, "-q", "--candidates", "3", "--latency-anchors", "4",
                             "--out", found)
    assert code == 0, err
    said = out.strip().splitlines()[-1]
    assert said.endswith(f"(compress with --search {shlex.quote(str(found))})"), said
    assert shlex.split(said.rsplit("--search ", 1)[1].rstrip(")")) == [str(found)]
