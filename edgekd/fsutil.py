"""Filesystem helpers: hashing and all-or-nothing writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekd.errors import OutputError


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically, creating the parent folder: a reader sees the old file or the new one,
    never half of one, and a failed write leaves no temporary file behind. A symlink is written through (the
    file it points to is replaced and the link kept), as a shell's ``>`` does."""
    write_texts([(path, text)])


def write_texts(files: Sequence[tuple[str | Path, str]], written: list[str | Path] | None = None) -> None:
    """Write several files (path, text) all or nothing, as far as renames allow: each is staged beside its
    target first, and only once every one is staged are they renamed into place, in one short step with
    nothing else between. An interruption or error while staging leaves every target as it was; ``written``
    gets each path as its file is replaced, for an interruption during the renames to say which are new."""
    staged: list[tuple[Path, Path, str | Path]] = []
    try:
        for path, text in files:
            staged.append((*_stage(path, text), path))
        for tmp, target, path in staged:
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise _naming(exc, tmp, path) from exc
            if written is not None:
                written.append(path)
    finally:
        for tmp, _, _ in staged:
            # Only when it is there: a read-only file system refuses unlinking what is not there too (EROFS,
            # not ENOENT), and that error replaced the one above, naming the staging file, not the user's path.
            if os.path.lexists(tmp):
                tmp.unlink()


def _stage(path: str | Path, text: str) -> tuple[Path, Path]:
    """Write ``text`` to a temporary file beside ``path``'s target; (that file, the target)."""
    target = through_link(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
    except BaseException as exc:  # an interruption mid-write too: the half-written file is ours to remove
        if os.path.lexists(tmp):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise _naming(exc, tmp, path) from exc
        raise
    return tmp, target


def _naming(exc: OSError, tmp: Path, path: str | Path) -> OSError:
    """``exc`` naming the path the user asked for rather than our staging file."""
    if exc.errno is None or exc.filename != str(tmp):
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def through_link(path: str | Path) -> Path:
    """The file or folder an output ``path`` writes: the target of a symlink (a `latest` link to a run's folder,
    a report linked into a shared folder), else ``path`` with the folders above it resolved. Replacing the link
    itself turned it into a copy that whatever reads through the link's target never saw."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else settled(path)


def json_text(data: Any) -> str:
    """``data`` as JSON, a non-finite number (an infinite ratio, a NaN) as null: JSON has none, and the
    ``Infinity`` Python writes made strict parsers (a CI step's JSON.parse) refuse the whole file."""
    return json.dumps(_finite(data), indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (``write_text``, ``json_text``)."""
    write_text(path, json_text(data))


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


@contextmanager
def exclusive(lock: Path, what: str,
              why: str = "two at once would also slow each other's measurements") -> Iterator[None]:
    """Hold ``lock`` (a file beside what it guards) while one process does ``what``; a second process is
    refused at once, naming the first. The system frees the lock when the holder ends, however it ends, so
    a killed run leaves nothing stale; one that ends otherwise removes the file. Where the platform has no
    ``fcntl`` (Windows) nothing is held."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX here
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 (held past this loop, closed below)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise OutputError(f"{what} is already running ({holder}); {why}",
                              "wait for it to finish, or stop it, then run this again") from None
        if _same_file(fh, lock):
            break
        # The holder before removed the file between our opening and locking it: that lock guards nothing
        # any more, and a third process may hold the new file. Lock that one instead.
        fh.close()
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()}")
        fh.flush()
        yield
    finally:
        # Removed while still held: a process that opened it meanwhile finds, once it gets the lock, that the
        # file is no longer the one at ``lock`` (above) and tries again, so two never run at once.
        lock.unlink(missing_ok=True)
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


@contextmanager
def writing(out: str | Path, command: str) -> Iterator[None]:
    """Hold ``out`` (a run's --out, file or folder) for one run of ``command``: a second run into it, a CI
    job started twice say, is refused at once rather than after its work, when one would replace the other's
    results (or, for a training run, its checkpoints as they are written). The lock file lies beside ``out``
    (where it is written anyway), so a link to it and its target share one."""
    target = Path(out).resolve()
    with exclusive(target.parent / f".{target.name}.lock", f"another {command} into '{out}'",
                   "two runs would replace each other's results"):
        yield


def held(lock: Path) -> bool:
    """Whether a process of this machine holds ``lock`` (``exclusive``'s): the file names its holder, which
    removes it when done; one left by a killed holder names a process gone. Read, not locked: taking the lock
    even for a moment would refuse a run starting then."""
    try:
        said = lock.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return False
    if len(said) != 2 or said[0] != "process" or not said[1].isdigit():
        return False
    try:
        os.kill(int(said[1]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process: alive
        return True
    return True


def _same_file(fh: Any, path: Path) -> bool:
    """Whether the open ``fh`` is the file now at ``path``."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fh.fileno())
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def creation_mode(path: Path, folder: bool) -> int:
    """The permission bits a plain create would give ``path`` (those of the file or folder it replaces,
    else the umask's), for files staged by ``tempfile``, which are private to the user (0600 / 0700): a
    deployment job or web server reading the artifacts under another account must not lose access."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def check_new_file(path: str | Path, force: bool, flag: str, inputs: Iterable[Any] = (),
                   api_switch: str | None = "force=True") -> None:
    """Refuse a file output that is a folder, that exists unless ``force``, that cannot be written, or that
    is one of ``inputs``. Called before any work, so a refused path costs nothing and a measurement is never
    lost to it. ``api_switch``: how a Python caller says --force, named beside it; None where only the CLI
    reaches here, whose user has no Python call to change."""
    if not str(path).strip():  # Path("") is the current folder
        raise OutputError(f"{flag} is empty", f"give {flag} a file path")
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} '{path}' is a folder", f"give {flag} a file path")
    check_not_input(path, inputs, flag)
    if path.exists() and not force:
        raise OutputError(f"{flag} '{path}' already exists",
                          f"choose another {flag} path or pass --force"
                          f"{f' ({api_switch} from Python)' if api_switch else ''} to replace it")
    check_writable(through_link(path) if path.is_symlink() else path, flag)  # staged where a link points


def check_new_output(path: str | Path, force: bool, inputs: Iterable[Any] = ()) -> None:
    """Refuse to clobber a user's non-empty folder or any file unless ``force``, a folder that holds one of
    ``inputs``, or one that cannot be written."""
    if not str(path).strip():
        raise OutputError("--out is empty", "give --out a folder path")
    path = Path(path)
    check_own_folder(path, "--out")
    check_not_input(path, inputs, "--out", folder=True)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output '{path}' exists and is a file", "choose another --out path")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise OutputError(f"output folder '{path}' exists and is not empty",
                          "choose another --out or pass --force (force=True from Python) to replace it")
    check_writable(through_link(path) if path.is_symlink() else path, "--out")  # staged where a link points


def check_own_folder(path: str | Path, flag: str) -> None:
    """Refuse an output folder that is not a folder of its own: a filesystem root, the current folder or one
    above it, or a path ending in '..'. An output folder is replaced whole (``--force`` empties it first), so
    any of these would take the user's other files with it."""
    path = Path(path)
    full, here = path.resolve(), Path.cwd().resolve()
    fix = f"give {flag} a folder of its own, e.g. a new folder's name: it is replaced whole"
    if full.parent == full:
        raise OutputError(f"{flag} '{path}' is the filesystem root", fix)
    if full == here or full in here.parents:
        what = "is the current folder" if full == here else f"holds the current folder ('{here}')"
        raise OutputError(f"{flag} '{path}' {what}", fix)
    if path.name in ("", ".."):
        raise OutputError(f"{flag} '{path}' names no folder of its own (a path ending in '..' names the one above)",
                          fix)


def settled(path: str | Path) -> Path:
    """``path`` with the folders above it resolved and its own name kept: what a rename or a removal acts
    on whatever the current folder or the spelling (a symlinked output is itself replaced, not its target)."""
    path = Path(path)
    return path.parent.resolve() / path.name


def check_writable(path: str | Path, flag: str) -> None:
    """Refuse an output whose folder cannot be written (a file in its path, a read-only folder) before any
    work: outputs are staged beside their destination, so the nearest existing folder above it must take
    new files, or a search or training run is lost at its last step."""
    path = Path(path)
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{flag} '{path}' cannot be created: '{parent}' is a file, not a folder",
                          f"choose a {flag} path inside a folder")
    why = _cannot_write(parent)
    if why:
        raise OutputError(f"{flag} '{path}' cannot be written: the folder '{parent}' {why}",
                          f"choose a {flag} path in a writable folder")


def _cannot_write(folder: Path) -> str | None:
    """Why no file can be made in ``folder`` ("is read-only for this user", "has no space left"), or None."""
    import errno

    if not os.access(folder, os.W_OK | os.X_OK):
        return "is read-only for this user"
    # os.access answers yes for root everywhere, /proc and read-only mounts included: only a file created
    # there proves a write will work.
    try:
        handle, probe = tempfile.mkstemp(prefix=".edgekd-probe-", dir=folder)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT):
            return "is read-only for this user"
        return f"takes no new file ({exc.strerror or exc})"
    os.close(handle)
    with contextlib.suppress(OSError):  # made and closed: a probe that cannot be removed is no reason to stop
        os.unlink(probe)
    return None


class ListedFolder(str):
    """An input folder whose files a CSV names one by one: an output may be written inside it, as nothing there
    is read unless listed, though it may not replace or hold the folder, nor replace a file in it."""


def check_not_input(path: str | Path, inputs: Iterable[Any], flag: str, folder: bool = False) -> None:
    """Refuse an output that is, or (a folder) holds, one of the command's own inputs: --force would
    replace what the command reads, the user's model or data, with its results. An output ``folder`` inside
    an input folder is refused too (the input would hold it afterwards: an image folder, as one more class),
    and a file there that exists already (one of its images, replaced); a new file the loader skips (a
    report.json among the class folders) is not."""
    out = Path(path).resolve()
    for item in inputs:
        if item is None or not isinstance(item, (str, Path)) or not str(item) or not Path(item).exists():
            continue
        source = Path(item).resolve()
        if source == out or out in source.parents:
            what = "is" if source == out else "holds"
            raise OutputError(f"{flag} '{path}' {what} '{item}', an input of this command",
                              f"write {flag} somewhere else; --force never replaces a command's inputs")
        replaced = out.is_file() if isinstance(item, ListedFolder) else folder or out.exists()
        if source in out.parents and source.is_dir() and replaced:
            raise OutputError(f"{flag} '{path}' is inside '{item}', an input folder of this command, which would "
                              "hold the results afterwards", f"write {flag} outside '{item}'")


@contextmanager
def atomic_dir(path: Path, force: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside ``path``; on success it replaces ``path`` whole (a symlink's target, the
    link kept: ``through_link``).

    On any error the staging folder is removed and ``path`` is left as it was.
    """
    check_new_output(path, force)
    path = through_link(path)  # a symlinked folder is replaced where it points, the link kept
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
    try:
        staging.chmod(creation_mode(path, folder=True))
        yield staging
        check_new_output(path, force)  # something may have appeared while we worked
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(staging, path)
            remove_path(old)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def set_aside(path: str | Path, flag: str) -> Path:
    """Move the folder ``path`` beside itself, under a name that says what it is, to be removed or put back."""
    path = settled(path)
    aside, n = path.with_name(f"{path.name}.edgekd-replaced-{os.getpid()}"), 1
    while aside.exists() or aside.is_symlink():  # one a killed run left: the user's to look at, never removed here
        aside, n = path.with_name(f"{path.name}.edgekd-replaced-{os.getpid()}-{n}"), n + 1
    try:
        path.rename(aside)
    except OSError as exc:
        raise OutputError(f"{flag} '{path}' cannot be moved aside to be replaced ({exc.strerror})",
                          f"choose another {flag}, or remove the folder yourself") from None
    return aside


def remove_path(path: str | Path) -> None:
    """Remove a file or folder (a symlink itself, not its target) if it is there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def refuse_overwriting_source(out: str | Path, source: str | Path, writer: str, kind: str = "source") -> None:
    """Writing an output over the file being read (its ``kind`` model) would replace the user's model, or, when
    the writing failed, leave them neither."""
    out, source = Path(out), Path(source)
    if out.exists() and source.exists() and os.path.samefile(out, source):
        raise OutputError(f"{writer} would write its output over its {kind} model '{source}'",
                          "pick another name or output folder")
