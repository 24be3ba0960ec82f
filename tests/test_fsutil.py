"""All-or-nothing writes and the checks that keep a user's files."""

import pytest

from edgekd.errors import OutputError
from edgekd.fsutil import check_new_file, write_json, write_text


def test_write_text_creates_the_folder_and_replaces_whole(tmp_path):
    target = tmp_path / "a" / "b" / "report.md"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["report.md"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        write_json(target, {"v": object()})  # not serialisable: fails before anything is written
    blocked = tmp_path / "folder"
    (blocked / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        write_text(blocked, "cannot replace a non-empty folder")
    assert target.read_text().strip() == '{\n  "v": 1\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "r.json"]


def test_check_new_file(tmp_path):
    check_new_file(tmp_path / "new.json", force=False, flag="--json")
    existing = tmp_path / "old.json"
    existing.write_text("mine")
    with pytest.raises(OutputError, match="--json '.*old.json' already exists; choose another --json path or pass "
                                          "--force to replace it"):
        check_new_file(existing, force=False, flag="--json")
    check_new_file(existing, force=True, flag="--json")
    with pytest.raises(OutputError, match="is a folder; give --junit a file path"):
        check_new_file(tmp_path, force=True, flag="--junit")


def test_staged_outputs_get_the_permissions_of_a_plain_create(tmp_path):
    """tempfile stages privately (0700 / 0600); a job reading the artifacts under another account would be
    locked out of a folder or checkpoint that kept those bits."""
    import os
    import stat

    from edgekd.distill.checkpoint import save_checkpoint
    from edgekd.fsutil import atomic_dir

    def mode(p):
        return stat.S_IMODE(p.stat().st_mode)

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as staging:
            (staging / "model.onnx").write_bytes(b"x")
        assert mode(tmp_path / "out") == 0o755
        save_checkpoint(tmp_path / "ckpt.pt", {"weights": {}})
        assert mode(tmp_path / "ckpt.pt") == 0o644
        # a replaced folder or file keeps the bits its owner gave it
        (tmp_path / "out").chmod(0o750)
        (tmp_path / "ckpt.pt").chmod(0o640)
        with atomic_dir(tmp_path / "out", force=True) as staging:
            (staging / "model.onnx").write_bytes(b"y")
        save_checkpoint(tmp_path / "ckpt.pt", {"weights": {}})
        assert mode(tmp_path / "out") == 0o750 and mode(tmp_path / "ckpt.pt") == 0o640
    finally:
        os.umask(old)
