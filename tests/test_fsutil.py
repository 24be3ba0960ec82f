"""All-or-nothing writes and the checks that keep a user's files."""

import json
import re

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
                                          r"--force \(force=True from Python\) to replace it"):
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


def test_an_output_in_a_path_that_holds_a_file_is_refused_before_any_work(tmp_path):
    from edgekd.fsutil import check_new_output

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"--out '.*notes.txt/out' cannot be created: '.*notes.txt' is a file, "
                                          "not a folder; choose a --out path inside a folder"):
        check_new_output(tmp_path / "notes.txt" / "out", force=False)
    with pytest.raises(OutputError, match="--json '.*notes.txt/a/b.json' cannot be created"):
        check_new_file(tmp_path / "notes.txt" / "a" / "b.json", force=True, flag="--json")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_output_in_a_read_only_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    import os

    from edgekd import fsutil

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root writes anywhere but a read-only mount: stand one in
        monkeypatch.setattr(fsutil, "_cannot_write", lambda folder: "is read-only for this user" if folder == locked
                            else None)
    try:
        with pytest.raises(OutputError, match=r"--out '.*locked/run' cannot be written: the folder '.*locked' is "
                                              "read-only for this user; choose a --out path in a writable folder"):
            fsutil.check_new_output(locked / "run", force=False)
        with pytest.raises(OutputError, match="--summary '.*locked/x/s.md' cannot be written"):
            check_new_file(locked / "x" / "s.md", force=False, flag="--summary")
        fsutil.check_new_output(tmp_path / "fine" / "run", force=False)
    finally:
        locked.chmod(0o755)


def test_force_never_replaces_an_input_of_the_command(tmp_path):
    from edgekd.fsutil import check_new_output

    weights = tmp_path / "teacher.pt"
    weights.write_bytes(b"weights")
    data = tmp_path / "images"
    (data / "cat").mkdir(parents=True)
    with pytest.raises(OutputError, match=r"--out '.*teacher.pt' is '.*teacher.pt', an input of this command; "
                                          "write --out somewhere else; --force never replaces"):
        check_new_file(weights, force=True, flag="--out", inputs=[None, "digits", weights])
    with pytest.raises(OutputError, match=r"--out '.*' holds '.*images', an input of this command"):
        check_new_output(tmp_path, force=True, inputs=[str(data)])
    check_new_output(tmp_path / "elsewhere", force=True, inputs=[str(data), weights])
    assert weights.read_bytes() == b"weights"


@pytest.mark.parametrize("flag", ["--out", "--json"])
def test_an_empty_output_path_is_refused(flag):
    from edgekd.fsutil import check_new_output

    with pytest.raises(OutputError, match=f"{flag} is empty"):
        (check_new_output("", force=True) if flag == "--out" else check_new_file("", force=True, flag=flag))


@pytest.mark.parametrize("out, said", [
    (".", "--out '.' is the current folder"),
    ("a/..", "--out 'a/..' is the current folder"),
    ("..", "--out '..' holds the current folder"),
    ("/", "--out '/' is the filesystem root"),
    ("a/b/..", "--out 'a/b/..' names no folder of its own"),
])
def test_an_output_folder_that_is_not_one_of_its_own_is_refused_even_with_force(tmp_path, monkeypatch, out, said):
    """--force replaces the output folder whole: '.' once emptied the folder the user ran edgekd from."""
    from edgekd.fsutil import atomic_dir, check_new_output

    here = tmp_path / "work"
    (here / "a" / "b").mkdir(parents=True)
    (here / "notes.txt").write_text("mine")
    monkeypatch.chdir(here)
    with pytest.raises(OutputError, match=re.escape(said) + ".*give --out a folder of its own"):
        check_new_output(out, force=True)
    with pytest.raises(OutputError, match=re.escape(said)):
        with atomic_dir(out, force=True):
            pytest.fail("staged an output that would replace the current folder")
    assert (here / "notes.txt").read_text() == "mine" and (here / "a" / "b").is_dir()


def test_an_output_folder_inside_an_input_folder_is_refused(tmp_path):
    """An image folder that held the run's output afterwards took it for one more class."""
    from edgekd.fsutil import check_new_output

    images = tmp_path / "imgs"
    (images / "cat").mkdir(parents=True)
    with pytest.raises(OutputError, match=r"--out '.*imgs/distilled' is inside '.*imgs', an input folder of this "
                                          r"command.*; write --out outside"):
        check_new_output(images / "distilled", force=False, inputs=["digits", str(images)])
    with pytest.raises(OutputError, match="is inside"):
        check_new_output(images / "cat" / "deeper" / "out", force=True, inputs=[images])
    check_new_output(tmp_path / "imgs-out", force=False, inputs=[str(images)])  # a sibling, whatever its name
    check_new_file(images / "report.json", force=False, flag="--json", inputs=[str(images)])  # a file, no class
    (images / "cat" / "0.png").write_bytes(b"an image")  # but not one of its images, replaced with --force
    with pytest.raises(OutputError, match=r"--json '.*0.png' is inside '.*imgs', an input folder of this command"):
        check_new_file(images / "cat" / "0.png", force=True, flag="--json", inputs=[str(images)])


def test_a_lock_is_removed_after_use_and_still_admits_one_holder_at_a_time(tmp_path, monkeypatch):
    """Each calibration left a .lock beside its table. Removing it opens a race, which the lock must close:
    a process that opened the old file just before its holder removed it gets a lock on a file no longer
    there, while a third one locks the new file."""
    import fcntl

    from edgekd.fsutil import exclusive

    lock = tmp_path / "t.json.lock"
    with exclusive(lock, "a calibration of t.json"):
        assert lock.is_file()
    assert not lock.exists()
    real, third = fcntl.flock, []

    def late(fh, op):  # between this process opening the file and locking it:
        if not third and op & fcntl.LOCK_EX:
            lock.unlink()  # the holder before removes it as it ends ...
            third.append(open(lock, "a+"))  # ... and another process takes the new file
            real(third[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        return real(fh, op)

    monkeypatch.setattr(fcntl, "flock", late)
    try:
        with pytest.raises(OutputError, match="a calibration of t.json is already running"):
            with exclusive(lock, "a calibration of t.json"):
                pass
    finally:
        third[0].close()


def test_a_folder_that_refuses_new_files_is_refused_even_where_os_access_says_yes(tmp_path, monkeypatch):
    """Root passes os.access everywhere, /proc included: the check creates a file there to know."""
    from edgekd import fsutil

    def refuse(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match=r"--json '.*b.json' cannot be written: the folder '.*' is read-only"):
        check_new_file(tmp_path / "b.json", force=False, flag="--json")
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", full)  # not "read-only": the disk is full
    with pytest.raises(OutputError, match=r"cannot be written: the folder '.*' takes no new file \(No space left on "
                                          r"device\); choose a --json path"):
        check_new_file(tmp_path / "b.json", force=False, flag="--json")
    monkeypatch.undo()
    check_new_file(tmp_path / "b.json", force=False, flag="--json")
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind


def test_a_failed_write_names_the_users_path_not_the_staging_file(tmp_path, monkeypatch):
    import errno

    from edgekd import fsutil

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(src), str(dst))

    monkeypatch.setattr(fsutil.os, "replace", full)
    with pytest.raises(OSError) as caught:
        write_text(tmp_path / "report.json", "{}")
    assert caught.value.filename == str(tmp_path / "report.json") and caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_file_system_names_the_users_path_not_the_staging_file(tmp_path, monkeypatch):
    """There even removing the staging file that was never made fails (EROFS, not ENOENT), and that error
    replaced the one naming the user's path."""
    import errno
    from pathlib import Path

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(OSError) as caught:
        write_text(tmp_path / "report.html", "<html>")
    assert caught.value.filename == str(tmp_path / "report.html") and caught.value.errno == errno.EROFS


def test_json_is_written_without_infinity_or_nan(tmp_path):
    """JSON has no Infinity: a ratio over a zero size went into gate's --json as `Infinity`, which JSON.parse and
    other strict readers refuse, whole file and all."""
    target = tmp_path / "r.json"
    write_json(target, {"measured": float("inf"), "runs": [1.5, float("nan"), (float("-inf"),)], "n": 2})
    assert json.loads(target.read_text()) == {"measured": None, "runs": [1.5, None, [None]], "n": 2}
    assert "Infinity" not in target.read_text() and "NaN" not in target.read_text()


def test_a_symlinked_output_folder_is_replaced_where_it_points_and_the_link_kept(tmp_path):
    """`--out latest --force`, latest -> store/run1: the link became a real folder holding the new run, store/run1
    kept the old one (what a deployment reading through the link ships), and a `.latest.old-PID` link was left."""
    from edgekd.fsutil import atomic_dir

    run = tmp_path / "store" / "run1"
    run.mkdir(parents=True)
    (run / "model.onnx").write_text("old")
    link = tmp_path / "latest"
    link.symlink_to(run, target_is_directory=True)
    with atomic_dir(link, force=True) as staging:
        (staging / "model.onnx").write_text("new")
    assert link.is_symlink() and (run / "model.onnx").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "store"]
    assert [p.name for p in run.parent.iterdir()] == ["run1"]  # no staging folder, no old run left beside it


def test_a_symlinked_report_file_is_written_through_and_the_link_kept(tmp_path):
    """`gate --json sl/g.json --force`, sl/g.json -> real/g.json: the link was swapped for a file, real/g.json
    left stale."""
    real, shared = tmp_path / "real", tmp_path / "sl"
    real.mkdir()
    shared.mkdir()
    (real / "g.json").write_text("old")
    link = shared / "g.json"
    link.symlink_to(real / "g.json")
    check_new_file(link, force=True, flag="--json")
    write_text(link, "new")
    assert link.is_symlink() and (real / "g.json").read_text() == "new"
    assert [p.name for p in real.iterdir()] == ["g.json"] and [p.name for p in shared.iterdir()] == ["g.json"]


def test_several_files_are_replaced_only_once_all_are_staged(tmp_path, monkeypatch):
    """An interruption while the third of three reports was written left the first two new, the third old."""
    from pathlib import Path

    from edgekd.fsutil import write_texts

    files = [tmp_path / name for name in ("a.xml", "b.md", "c.json")]
    for path in files:
        path.write_text("old")
    real, calls = Path.write_text, []

    def interrupted_third(self, *args, **kwargs):
        calls.append(self)
        if len(calls) == 3:
            real(self, "half")
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", interrupted_third)
    written: list = []
    with pytest.raises(KeyboardInterrupt):
        write_texts([(path, "new") for path in files], written)
    monkeypatch.undo()
    assert [p.read_text() for p in files] == ["old"] * 3 and written == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.xml", "b.md", "c.json"]  # no staging file left
    write_texts([(path, "new") for path in files], written)
    assert [p.read_text() for p in files] == ["new"] * 3 and written == files
